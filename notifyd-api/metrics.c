/*
 * Request counters and a latency histogram, kept with relaxed atomics:
 * the workers only add, and a scrape may see a request counted in one
 * series a moment before the other, which Prometheus tolerates.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "nt_procstat.h"

/* Statuses the daemon answers with; anything else lands in "other". */
static const unsigned statuses[] = {
	0, 200, 400, 401, 403, 404, 405, 413, 415, 429, 500, 503
};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))
#define STATUS_OTHER NSTATUS

/* Upper bounds in microseconds (the exposition uses seconds). */
static const uint64_t bucket_us[] = {
	250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
	500000, 1000000, 2500000, 5000000
};
#define NBUCKET (sizeof(bucket_us) / sizeof(bucket_us[0]))

static uint64_t requests[API_ROUTE_COUNT][NSTATUS + 1];
static uint64_t hist[API_ROUTE_COUNT][NBUCKET + 1];   /* last: +Inf */
static uint64_t hist_sum_us[API_ROUTE_COUNT];
static uint64_t redis_errors;
static uint64_t request_timeouts;

static const char *route_names[API_ROUTE_COUNT] = {
	"send", "broadcast", "online_count", "user_online", "livez", "readyz",
	"healthz", "metrics", "unknown"
};

const char *
api_route_name(enum api_route r)
{
	return r < API_ROUTE_COUNT ? route_names[r] : "unknown";
}

static void
add(uint64_t *p, uint64_t v)
{
	__atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static uint64_t
get(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void
api_metrics_request(enum api_route r, unsigned status, uint64_t elapsed_us)
{
	size_t s = STATUS_OTHER, b;

	if (r >= API_ROUTE_COUNT)
		r = API_ROUTE_UNKNOWN;
	for (size_t i = 0; i < NSTATUS; i++)
		if (statuses[i] == status)
			s = i;
	add(&requests[r][s], 1);
	for (b = 0; b < NBUCKET && elapsed_us > bucket_us[b]; b++)
		;
	add(&hist[r][b], 1);
	add(&hist_sum_us[r], elapsed_us);
}

void
api_metrics_redis_error(void)
{
	add(&redis_errors, 1);
}

void
api_metrics_request_timeout(void)
{
	add(&request_timeouts, 1);
}

struct sbuf {
	char  *p;
	size_t len, cap;
	int    failed;
};

__attribute__((format(printf, 2, 3)))
static void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap * 2 + (size_t)n;
		char *np = realloc(b->p, ncap);
		if (np == NULL) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

static void
render_requests(struct sbuf *b)
{
	sb_printf(b, "# HELP notifyd_api_requests_total HTTP requests by "
	    "route and status (0: client went away).\n"
	    "# TYPE notifyd_api_requests_total counter\n");
	for (int r = 0; r < API_ROUTE_COUNT; r++) {
		for (size_t s = 0; s <= NSTATUS; s++) {
			uint64_t v = get(&requests[r][s]);
			if (v == 0)
				continue;
			if (s == STATUS_OTHER)
				sb_printf(b, "notifyd_api_requests_total{route=\"%s\","
				    "status=\"other\"} %llu\n", route_names[r],
				    (unsigned long long)v);
			else
				sb_printf(b, "notifyd_api_requests_total{route=\"%s\","
				    "status=\"%u\"} %llu\n", route_names[r],
				    statuses[s], (unsigned long long)v);
		}
	}
}

static void
render_histogram(struct sbuf *b)
{
	sb_printf(b, "# HELP notifyd_api_request_duration_seconds Time from "
	    "request headers to completion.\n"
	    "# TYPE notifyd_api_request_duration_seconds histogram\n");
	for (int r = 0; r < API_ROUTE_COUNT; r++) {
		uint64_t cum = 0;
		for (size_t i = 0; i <= NBUCKET; i++) {
			cum += get(&hist[r][i]);
			if (i < NBUCKET)
				sb_printf(b, "notifyd_api_request_duration_seconds_"
				    "bucket{route=\"%s\",le=\"%g\"} %llu\n",
				    route_names[r], (double)bucket_us[i] / 1e6,
				    (unsigned long long)cum);
			else
				sb_printf(b, "notifyd_api_request_duration_seconds_"
				    "bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
				    route_names[r], (unsigned long long)cum);
		}
		sb_printf(b, "notifyd_api_request_duration_seconds_sum"
		    "{route=\"%s\"} %.6f\n", route_names[r],
		    (double)get(&hist_sum_us[r]) / 1e6);
		sb_printf(b, "notifyd_api_request_duration_seconds_count"
		    "{route=\"%s\"} %llu\n", route_names[r],
		    (unsigned long long)cum);
	}
}

/*
 * The process_* series and notifyd_build_info. When /proc cannot be read
 * they are left out rather than shown as zeros that look like values.
 */
static void
render_process(struct sbuf *b)
{
	struct nt_procstat ps;
	char text[2048];
	int n;

	if (nt_procstat_read(&ps) < 0)
		return;
	n = nt_procstat_format(&ps, API_PROG, text, sizeof(text));
	if (n < 0 || (size_t)n >= sizeof(text)) {
		b->failed = 1;
		return;
	}
	sb_printf(b, "%s", text);
}

char *
api_metrics_render(size_t *len)
{
	struct sbuf b = { malloc(4096), 0, 4096, 0 };

	if (b.p == NULL)
		return NULL;
	render_requests(&b);
	render_histogram(&b);
	sb_printf(&b, "# HELP notifyd_api_redis_errors_total Failed Redis "
	    "connects, I/O errors and refused commands.\n"
	    "# TYPE notifyd_api_redis_errors_total counter\n"
	    "notifyd_api_redis_errors_total %llu\n",
	    (unsigned long long)get(&redis_errors));
	sb_printf(&b, "# HELP notifyd_api_request_timeouts_total Connections "
	    "closed for not sending a whole request within "
	    "--request-timeout.\n"
	    "# TYPE notifyd_api_request_timeouts_total counter\n"
	    "notifyd_api_request_timeouts_total %llu\n",
	    (unsigned long long)get(&request_timeouts));
	render_process(&b);
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}
