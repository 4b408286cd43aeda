/*
 * Counters of notifyd-ws and their Prometheus text form (/metrics).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nt_procstat.h"
#include "ws.h"

/* Upper bounds (seconds) of the delivery latency histogram. */
static const double lat_bounds[NTWS_LAT_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

void
ntws_metrics_close(struct ntws_metrics *m, uint16_t code)
{
	int i;

	for (i = 0; i < NTWS_CLOSE_CODES; i++) {
		if (m->closes[i].code == code || m->closes[i].code == 0) {
			m->closes[i].code = code;
			m->closes[i].n++;
			return;
		}
	}
}

void
ntws_metrics_latency(struct ntws_metrics *m, double seconds)
{
	int i;

	if (seconds < 0)
		seconds = 0;
	for (i = 0; i < NTWS_LAT_BUCKETS && seconds > lat_bounds[i]; i++)
		;
	m->lat_counts[i]++;
	m->lat_sum += seconds;
	m->lat_n++;
}

struct out {
	char   *buf;
	size_t  len, cap;
	int     failed;
};

static void
out_printf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *nb;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = 1;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		if ((nb = realloc(o->buf, o->cap * 2 + (size_t)n)) == NULL) {
			o->failed = 1;
			return;
		}
		o->buf = nb;
		o->cap = o->cap * 2 + (size_t)n;
	}
}

/*
 * The standard process_* series and notifyd_build_info. Left out, not
 * made up, when /proc cannot be read.
 */
static void
out_procstat(struct out *o)
{
	struct nt_procstat ps;
	size_t room;
	char *nb;
	int n;

	if (o->failed || nt_procstat_read(&ps) != 0)
		return;
	room = o->cap - o->len;
	n = nt_procstat_format(&ps, "notifyd-ws", o->buf + o->len, room);
	if (n >= 0 && (size_t)n >= room) {
		if ((nb = realloc(o->buf, o->len + (size_t)n + 1)) == NULL) {
			o->failed = 1;
			return;
		}
		o->buf = nb;
		o->cap = o->len + (size_t)n + 1;
		n = nt_procstat_format(&ps, "notifyd-ws", o->buf + o->len,
		    o->cap - o->len);
	}
	if (n < 0) {
		o->failed = 1;
		return;
	}
	o->len += (size_t)n;
}

static void
metric(struct out *o, const char *name, const char *type, const char *help,
    double v)
{
	out_printf(o, "# HELP notifyd_ws_%s %s\n# TYPE notifyd_ws_%s %s\n"
	    "notifyd_ws_%s %.17g\n", name, help, name, type, name, v);
}

char *
ntws_metrics_render(const struct ntws_server *s, size_t *len)
{
	const struct ntws_metrics *m = &s->m;
	struct out o = { malloc(4096), 0, 4096, 0 };
	uint64_t cum = 0;
	int i;

	if (o.buf == NULL)
		return NULL;
	metric(&o, "connections", "gauge",
	    "Authenticated WebSocket connections.", (double)s->nconns_ws);
	metric(&o, "sockets", "gauge", "Open client sockets of any state.",
	    (double)s->nconns_total);
	metric(&o, "users", "gauge", "Distinct users connected here.",
	    (double)s->nusers);
	metric(&o, "connections_accepted_total", "counter",
	    "Client sockets accepted.", (double)m->accepted);
	metric(&o, "auth_failures_total", "counter",
	    "Handshakes whose token was refused.", (double)m->auth_failures);
	metric(&o, "messages_in_total", "counter",
	    "Notifications received from Redis.", (double)m->messages_in);
	metric(&o, "client_messages_total", "counter",
	    "Messages received from clients.", (double)m->client_messages);
	metric(&o, "messages_out_total", "counter",
	    "Text messages written to clients (notifications and replies).",
	    (double)m->messages_out);
	metric(&o, "replies_total", "counter",
	    "Replies to client messages written (pong, subscribed, error...).",
	    (double)m->replies);
	metric(&o, "deliveries_total", "counter",
	    "Notifications written to client sockets (live and offline).",
	    (double)m->deliveries);
	metric(&o, "offline_replayed_total", "counter",
	    "Offline notifications replayed on connect.", (double)m->replayed);
	metric(&o, "duplicates_dropped_total", "counter",
	    "Live copies of already replayed notifications dropped.",
	    (double)m->duplicates_dropped);
	metric(&o, "slow_consumers_total", "counter",
	    "Connections closed for exceeding --send-queue-max.",
	    (double)m->slow_consumers);
	metric(&o, "send_queue_bytes", "gauge",
	    "Bytes queued for clients, not yet written.",
	    (double)s->queued_bytes);
	metric(&o, "redis_pending_hdels", "gauge",
	    "HDELs of delivered or acknowledged messages not yet answered.",
	    (double)s->r.hdel_n);
	metric(&o, "redis_up", "gauge",
	    "1 while Redis is connected and the subscription is live.",
	    ntws_redis_healthy(s) ? 1 : 0);
	metric(&o, "redis_reconnects_total", "counter",
	    "Times the subscriber connection to Redis was lost.",
	    (double)m->redis_reconnects);
	out_printf(&o, "# HELP notifyd_ws_closes_total Connections closed, by "
	    "WebSocket close code (1006: no close frame).\n"
	    "# TYPE notifyd_ws_closes_total counter\n");
	for (i = 0; i < NTWS_CLOSE_CODES && m->closes[i].code != 0; i++)
		out_printf(&o, "notifyd_ws_closes_total{code=\"%u\"} %llu\n",
		    m->closes[i].code, (unsigned long long)m->closes[i].n);
	out_printf(&o, "# HELP notifyd_ws_delivery_latency_seconds From the "
	    "message timestamp to the socket write (live messages).\n"
	    "# TYPE notifyd_ws_delivery_latency_seconds histogram\n");
	for (i = 0; i < NTWS_LAT_BUCKETS; i++) {
		cum += m->lat_counts[i];
		out_printf(&o, "notifyd_ws_delivery_latency_seconds_bucket"
		    "{le=\"%g\"} %llu\n", lat_bounds[i], (unsigned long long)cum);
	}
	cum += m->lat_counts[NTWS_LAT_BUCKETS];
	out_printf(&o, "notifyd_ws_delivery_latency_seconds_bucket{le=\"+Inf\"}"
	    " %llu\nnotifyd_ws_delivery_latency_seconds_sum %.9g\n"
	    "notifyd_ws_delivery_latency_seconds_count %llu\n",
	    (unsigned long long)cum, m->lat_sum, (unsigned long long)m->lat_n);
	out_procstat(&o);
	if (o.failed) {
		free(o.buf);
		return NULL;
	}
	*len = o.len;
	return o.buf;
}
