/*
 * Counters of notifyd-ws and their Prometheus text form (/metrics).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nt_procstat.h"
#include "buf.h"
#include "metrics.h"

/* Upper bounds (seconds) of the delivery latency histogram. */
static const double lat_bounds[NTWS_LAT_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

/*
 * The close codes notifyd-ws can see and documents: those of RFC 6455
 * (and the IANA registry) a peer may send or a closed socket implies,
 * and the daemon's own 4001 (authentication failed) and 4002 (token
 * expired). A fixed list: the codes clients choose are theirs to pick,
 * and a table filled first come, first served would let them push the
 * daemon's own codes out of /metrics.
 */
static const uint16_t close_codes[NTWS_CLOSE_CODES] = {
	1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008,
	1009, 1010, 1011, 1012, 1013, 1014, 4001, 4002,
};

struct ntws_metrics ntws_m;

void
ntws_metrics_close(uint16_t code)
{
	struct ntws_metrics *m = &ntws_m;
	int i;

	for (i = 0; i < NTWS_CLOSE_CODES; i++) {
		if (close_codes[i] == code) {
			m->closes[i]++;
			return;
		}
	}
	m->closes_other++;
}

void
ntws_metrics_latency(double seconds)
{
	struct ntws_metrics *m = &ntws_m;
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

/* One family with a label of two values. */
static void
metric2(struct out *o, const char *name, const char *help,
    const char *label, const char *v1, double n1, const char *v2, double n2)
{
	out_printf(o, "# HELP notifyd_ws_%s %s\n# TYPE notifyd_ws_%s counter\n"
	    "notifyd_ws_%s{%s=\"%s\"} %.17g\nnotifyd_ws_%s{%s=\"%s\"} %.17g\n",
	    name, help, name, name, label, v1, n1, name, label, v2, n2);
}

static void
render_connections(struct out *o, const struct ntws_metrics *m)
{
	metric(o, "connections", "gauge",
	    "Authenticated WebSocket connections.", (double)m->connections);
	metric(o, "sockets", "gauge", "Open client sockets of any state.",
	    (double)m->sockets);
	metric(o, "users", "gauge", "Distinct users connected here.",
	    (double)m->users);
	metric(o, "connections_accepted_total", "counter",
	    "Client sockets accepted.", (double)m->accepted);
	metric(o, "auth_failures_total", "counter",
	    "Handshakes whose token was refused.", (double)m->auth_failures);
	metric(o, "refused_user_limit_total", "counter",
	    "Connections closed 1013 over --max-conns-per-user.",
	    (double)m->refused_user_limit);
	metric(o, "slow_consumers_total", "counter",
	    "Connections closed for exceeding --send-queue-max.",
	    (double)m->slow_consumers);
	metric(o, "write_timeouts_total", "counter",
	    "Connections closed for writing nothing for --write-timeout.",
	    (double)m->write_timeouts);
}

static void
render_messages(struct out *o, const struct ntws_metrics *m)
{
	metric(o, "messages_in_total", "counter",
	    "Notifications received from the Redis channel.",
	    (double)m->messages_in);
	metric(o, "client_messages_total", "counter",
	    "Messages received from clients.", (double)m->client_messages);
	metric(o, "messages_out_total", "counter",
	    "Text messages written to clients (notifications and replies).",
	    (double)m->messages_out);
	metric(o, "replies_total", "counter",
	    "Replies to client messages written (pong, subscribed, error...).",
	    (double)m->replies);
	metric(o, "deliveries_total", "counter",
	    "Notifications written to client sockets (live and from the log).",
	    (double)m->deliveries);
	metric(o, "offline_replayed_total", "counter",
	    "Notifications queued from pages of the users' logs.",
	    (double)m->replayed);
	metric(o, "duplicates_dropped_total", "counter",
	    "Live copies of positions a connection already had, dropped.",
	    (double)m->duplicates_dropped);
}

static void
render_log(struct out *o, const struct ntws_metrics *m)
{
	metric(o, "catchups_total", "counter",
	    "Times a connection left live delivery to read its user's log.",
	    (double)m->catchups);
	metric(o, "catchup_gaps_total", "counter",
	    "Catch-ups started by a live position that was not the next one.",
	    (double)m->gaps);
	metric(o, "catchup_deferred_total", "counter",
	    "Catch-ups started because --max-queued-bytes was reached.",
	    (double)m->deferred);
	metric(o, "pages_read_total", "counter",
	    "Pages of users' logs read from Redis.", (double)m->pages_read);
	metric(o, "page_reads_inflight", "gauge",
	    "Page reads sent to Redis and not yet answered.",
	    (double)m->page_reads_inflight);
	metric(o, "page_reads_waiting", "gauge",
	    "Connections waiting for a page read slot or for memory.",
	    (double)m->page_reads_waiting);
	metric(o, "page_bytes", "gauge",
	    "Reply bytes reserved by the page reads in flight.",
	    (double)m->page_bytes);
	metric2(o, "resumes_total",
	    "Connections that asked to resume (since=), by whether the id was "
	    "still in the log.", "recovered", "true",
	    (double)m->resumes_recovered, "false", (double)m->resumes_lost);
	metric(o, "read_marks_pending", "gauge",
	    "Users whose read mark waits to be written to Redis.",
	    (double)m->marks_pending);
	metric(o, "read_marks_written_total", "counter",
	    "Read mark commands answered by Redis.", (double)m->marks_written);
	metric(o, "acks_dropped_total", "counter",
	    "Acknowledged ids dropped over the per-user bound of pending ones.",
	    (double)m->acks_dropped);
}

static void
render_memory(struct out *o, const struct ntws_metrics *m, size_t held)
{
	metric(o, "send_queue_bytes", "gauge",
	    "Bytes queued for clients, not yet written (a shared frame "
	    "counts once per queue).", (double)m->send_queue_bytes);
	metric(o, "queued_bytes", "gauge",
	    "Bytes of frames held for sockets (each counted once) plus page "
	    "replies reserved: what --max-queued-bytes bounds.", (double)held);
}

static void
render_redis(struct out *o, const struct ntws_metrics *m)
{
	metric(o, "redis_up", "gauge",
	    "1 while both Redis connections are up and the subscription is "
	    "live.", m->redis_sub_up && m->redis_cmd_up ? 1 : 0);
	metric2(o, "redis_reconnects_total",
	    "Times a Redis connection that was up was lost.", "connection",
	    "subscriber", (double)m->redis_sub_reconnects, "commands",
	    (double)m->redis_cmd_reconnects);
	metric(o, "presence_errors_total", "counter",
	    "Presence writes (this instance's set of online users) that Redis "
	    "refused, e.g. out of memory.", (double)m->presence_errors);
	metric(o, "presence_stale", "gauge",
	    "1 while this instance's presence set in Redis may miss users: "
	    "a write was refused and the whole set awaits a rewrite.",
	    m->presence_stale ? 1 : 0);
}

static void
render_latency(struct out *o, const struct ntws_metrics *m)
{
	uint64_t cum = 0;
	int i;

	out_printf(o, "# HELP notifyd_ws_closes_total Connections closed, by "
	    "WebSocket close code (1006: no close frame; other: any code not "
	    "listed in notifyd-ws(8)).\n"
	    "# TYPE notifyd_ws_closes_total counter\n");
	for (i = 0; i < NTWS_CLOSE_CODES; i++)
		out_printf(o, "notifyd_ws_closes_total{code=\"%u\"} %llu\n",
		    close_codes[i], (unsigned long long)m->closes[i]);
	out_printf(o, "notifyd_ws_closes_total{code=\"other\"} %llu\n",
	    (unsigned long long)m->closes_other);
	out_printf(o, "# HELP notifyd_ws_delivery_latency_seconds From the "
	    "message timestamp to the socket write (live messages).\n"
	    "# TYPE notifyd_ws_delivery_latency_seconds histogram\n");
	for (i = 0; i < NTWS_LAT_BUCKETS; i++) {
		cum += m->lat_counts[i];
		out_printf(o, "notifyd_ws_delivery_latency_seconds_bucket"
		    "{le=\"%g\"} %llu\n", lat_bounds[i], (unsigned long long)cum);
	}
	cum += m->lat_counts[NTWS_LAT_BUCKETS];
	out_printf(o, "notifyd_ws_delivery_latency_seconds_bucket{le=\"+Inf\"}"
	    " %llu\nnotifyd_ws_delivery_latency_seconds_sum %.9g\n"
	    "notifyd_ws_delivery_latency_seconds_count %llu\n",
	    (unsigned long long)cum, m->lat_sum, (unsigned long long)m->lat_n);
}

char *
ntws_metrics_render(size_t *len)
{
	const struct ntws_metrics *m = &ntws_m;
	struct out o = { malloc(8192), 0, 8192, 0 };

	if (o.buf == NULL)
		return NULL;
	render_connections(&o, m);
	render_messages(&o, m);
	render_log(&o, m);
	render_memory(&o, m, ntws_buf_bytes() + (size_t)m->page_bytes);
	render_redis(&o, m);
	render_latency(&o, m);
	out_procstat(&o);
	if (o.failed) {
		free(o.buf);
		return NULL;
	}
	*len = o.len;
	return o.buf;
}
