/*
 * notifyd-api internals: the pieces main.c wires together. Each module
 * is one .c file in this folder; nothing here is shared with the other
 * programs (that is what lib/ is for).
 */
#ifndef NOTIFYD_API_H
#define NOTIFYD_API_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>
#include "nt_config.h"
#include "nt_jwt.h"
#include "nt_msg.h"
#include "nt_opt.h"
#include "nt_proxy.h"
#include "keys.h"

#define API_PROG            "notifyd-api"  /* logs, errors, build_info */
#define API_MAX_RECIPIENTS  1000 /* target_users entries per request:
                                    one atomic send (NT_USERLOG_MAX_TARGETS) */

/* Everything main() parsed; read-only once the daemon starts. */
struct api_config {
	struct nt_opt_listen listen;
	struct nt_redis_url redis;
	const char     *redis_prefix;
	long long       offline_ttl_s;
	long long       offline_max;    /* entries kept in a user's log */
	const char     *keys_file;      /* NULL: no API keys */
	int             insecure_no_auth;
	int             jwt_enabled;
	struct nt_jwt_config jwt;
	const char     *jwt_scope;
	size_t          max_body;
	unsigned        max_targets;    /* target_users entries */
	size_t          max_fanout;     /* encoded bytes of one send, all
	                                   recipients together */
	struct nt_limits limits;
	double          rate_per_s;     /* 0: no rate limit */
	double          rate_burst;
	unsigned        threads;
	unsigned        max_connections;
	unsigned        connection_timeout_s;
	uint64_t        request_timeout_us;   /* first byte to whole request */
	int             redis_timeout_ms;
	struct nt_proxy_list trusted_proxies;  /* empty: trust no one */
};

/* Monotonic clock in microseconds. */
uint64_t api_now_us(void);

/* ---- auth.c: API keys and per-key token buckets ---------------------- */

enum api_auth_result {
	API_AUTH_OK = 0,
	API_AUTH_MISSING,   /* no or malformed Authorization header */
	API_AUTH_INVALID,   /* a bearer token that matches no key, bad JWT */
	API_AUTH_FORBIDDEN, /* a valid JWT without the required scope */
	API_AUTH_LIMITED,   /* over the caller's rate: *retry_after_s set */
};

struct api_auth_config {
	const char *keys_file;          /* NULL: no API keys */
	const struct nt_jwt_config *jwt;  /* NULL: no JWTs */
	const char *jwt_scope;          /* required in "scope" or "scp" */
	int         open;               /* --insecure-no-auth */
	double      rate_per_s;         /* 0: no rate limit */
	double      burst;              /* 0: the rate, at least 1 */
};

struct api_auth;

/* Whose bucket a request's tokens come from, as api_auth_check found it;
 * a copy, so it stays valid across key reloads. */
struct api_caller {
	enum { API_CALLER_NONE, API_CALLER_ANON, API_CALLER_KEY,
	    API_CALLER_JWT } kind;
	char id[NT_USER_MAX + 1];   /* the key's name or the JWT subject */
};

/*
 * Read the keys file and/or the JWT key. With open, every request is let
 * in and the rate limit, if any, is one bucket shared by all callers.
 * The config's strings are copied. 0 or -1 with err.
 */
int api_auth_new(const struct api_auth_config *cfg, struct api_auth **out,
    char *err, size_t errlen);

/* Re-read the key file and the JWT key; on failure the old ones stay.
 * Buckets of names that remain keep their state. 0 or -1 with err. */
int api_auth_reload(struct api_auth *a, size_t *nkeys, char *err,
    size_t errlen);

size_t api_auth_count(const struct api_auth *a);

/*
 * Check an Authorization header value (may be NULL) and take a token
 * from the caller's bucket. Thread-safe. name (API_NAME_MAX + 1 bytes)
 * gets the key's name ("jwt:SUBJECT" for a JWT) when known, and who
 * the bucket it was charged to (kind NONE when none was).
 */
enum api_auth_result api_auth_check(struct api_auth *a, const char *header,
    unsigned *retry_after_s, char *name, struct api_caller *who);

/*
 * Take n more tokens from who's bucket, all or none: a request that
 * turns out to cost more than the one token api_auth_check took (one
 * per recipient). API_AUTH_OK; API_AUTH_LIMITED with *retry_after_s the
 * wait until n are there; API_AUTH_INVALID when the key went away in a
 * reload since. Always OK without a rate limit. Thread-safe.
 */
enum api_auth_result api_auth_charge(struct api_auth *a,
    const struct api_caller *who, double n, unsigned *retry_after_s);

/* Tokens a bucket holds when full; 0 without a rate limit. */
double api_auth_burst(const struct api_auth *a);

void api_auth_free(struct api_auth *a);

/* ---- store.c: one lazily connected Redis context per worker thread --- */

/* Before the worker threads start / after they stopped. */
int api_store_init(const struct api_config *cfg);
void api_store_fini(void);

/*
 * This thread's context, connecting when needed. NULL (with err) when
 * Redis is unreachable; after a failure further attempts are skipped for
 * a short back-off so that callers get their 503 at once. err is fit for
 * an HTTP answer: the reason, which names the server, is logged instead.
 */
redisContext *api_store_get(char *err, size_t errlen);

/* Drop this thread's context after an I/O error (c->err set). */
void api_store_drop(void);

/* ---- metrics.c: Prometheus text exposition ---------------------------- */

enum api_route {
	API_ROUTE_SEND = 0,
	API_ROUTE_BROADCAST,
	API_ROUTE_ONLINE_COUNT,
	API_ROUTE_USER_ONLINE,
	API_ROUTE_LIVEZ,
	API_ROUTE_READYZ,
	API_ROUTE_HEALTHZ,     /* the old name of /readyz, same answer */
	API_ROUTE_METRICS,
	API_ROUTE_UNKNOWN,
	API_ROUTE_COUNT
};

const char *api_route_name(enum api_route r);

/* Count one finished request; status 0: the client went away first. */
void api_metrics_request(enum api_route r, unsigned status,
    uint64_t elapsed_us);
void api_metrics_redis_error(void);
/* A connection cut off for not sending its request within
 * --request-timeout. */
void api_metrics_request_timeout(void);

/* A malloc'd text/plain body (caller frees) or NULL. */
char *api_metrics_render(size_t *len);

/* ---- http.c: the libmicrohttpd daemon ---------------------------------- */

struct api_server;

/* Bind and start the worker threads. 0 or -1 with err. */
int api_server_start(const struct api_config *cfg, struct api_auth *auth,
    struct api_server **out, char *err, size_t errlen);

/* Stop accepting; answer "Connection: close" from now on. */
void api_server_quiesce(struct api_server *s);

/* Requests between their headers and their completion. */
unsigned api_server_in_flight(const struct api_server *s);

/* Close every connection and join the threads. */
void api_server_stop(struct api_server *s);

#endif
