/*
 * The HTTP front: the routes (/livez, /readyz, /metrics, the client
 * assets) and the WebSocket opening handshake (RFC 6455 4.2) with its
 * JWT authentication; see handshake.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "deliver.h"
#include "grants.h"
#include "handshake.h"
#include "http.h"
#include "metrics.h"
#include "nt_log.h"
#include "nt_msg.h"
#include "nt_uuid.h"
#include "rds.h"
#include "web_assets.h"

static struct {
	const struct ntws_config *cfg;
	struct nt_jwt_verifier   *jwt;
	int                       shutting_down;
} h;

void
ntws_handshake_init(const struct ntws_config *cfg,
    struct nt_jwt_verifier *jwt)
{
	h.cfg = cfg;
	h.jwt = jwt;
}

void
ntws_handshake_shutdown(void)
{
	h.shutting_down = 1;
}

/* An HTTP reply ends the exchange: no keep-alive. */
static void
http_reply(struct ntws_conn *c, int status, const char *reason,
    const char *ctype, const char *extra, const void *body, size_t blen)
{
	char head[1024];
	int n;

	n = snprintf(head, sizeof(head),
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
	    status, reason, ctype, blen, extra != NULL ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(head)) {
		ntws_conn_kill(c);
		return;
	}
	ntws_conn_reply(c, head, (size_t)n, body, blen);
}

static void
http_error(struct ntws_conn *c, int status, const char *reason,
    const char *why, const char *extra)
{
	char body[256];
	int n;

	n = snprintf(body, sizeof(body), "{\"status\":\"error\",\"error\":\"%s\"}",
	    why);
	http_reply(c, status, reason, "application/json", extra, body,
	    (size_t)n);
}

/* ---- the HTTP request ---- */

/* The loop answers: the process is alive, whatever Redis does. */
static void
serve_live(struct ntws_conn *c)
{
	http_reply(c, 200, "OK", "application/json", NULL,
	    "{\"status\":\"ok\"}", 15);
}

/*
 * Ready to deliver: both Redis connections are up (the subscriber brings
 * live messages, the command one reads the logs and writes read marks).
 * Else 503, saying which is down, so that a load balancer sends clients
 * elsewhere.
 */
static void
serve_ready(struct ntws_conn *c)
{
	int sub = ntws_rds_sub_up(), cmd = ntws_rds_cmd_up();
	char body[256];
	int n;

	if (sub && cmd) {
		serve_live(c);
		return;
	}
	n = snprintf(body, sizeof(body),
	    "{\"status\":\"error\",\"error\":\"redis unavailable\","
	    "\"redis_subscriber\":\"%s\",\"redis_commands\":\"%s\"}",
	    sub ? "up" : "down", cmd ? "up" : "down");
	http_reply(c, 503, "Service Unavailable", "application/json", NULL,
	    body, (size_t)n);
}

static void
serve_metrics(struct ntws_conn *c)
{
	size_t len;
	char *text = ntws_metrics_render(&len);

	if (text == NULL) {
		ntws_conn_kill(c);
		return;
	}
	http_reply(c, 200, "OK", "text/plain; version=0.0.4", NULL, text, len);
	free(text);
}

/*
 * CORS for the client module, so that a page may import() or fetch() it
 * from another origin: any origin while --allowed-origin is unset, else
 * only the listed ones, by echoing the request's Origin. The answer then
 * depends on Origin: say so to caches.
 */
static void
cors_headers(const struct ntws_config *cfg, struct ntws_str origin,
    char *out, size_t outlen)
{
	if (cfg->allowed_origins == NULL)
		snprintf(out, outlen, "Access-Control-Allow-Origin: *\r\n");
	else if (origin.p != NULL && origin.len + 64 < outlen &&
	    ntws_http_origin_allowed(cfg->allowed_origins, origin))
		snprintf(out, outlen, "Access-Control-Allow-Origin: %.*s\r\n"
		    "Vary: Origin\r\n", (int)origin.len, origin.p);
	else
		snprintf(out, outlen, "Vary: Origin\r\n");
}

static int
serve_asset(struct ntws_conn *c, const struct ntws_http_req *req)
{
	const struct nt_web_asset *a;
	struct ntws_str path = req->path;
	char cors[512];
	size_t plen;
	int is_html;

	for (a = nt_web_assets; a->path != NULL; a++) {
		plen = strlen(a->path);
		is_html = plen > 5 && strcmp(a->path + plen - 5, ".html") == 0;
		if (is_html && !h.cfg->demo)
			continue;
		if ((plen == path.len && memcmp(a->path, path.p, plen) == 0) ||
		    (is_html && path.len == 1 &&
		    (strcmp(a->path, "/index.html") == 0 ||
		    strcmp(a->path, "/demo.html") == 0))) {
			/* The demo page is a page, not a module to share. */
			if (is_html)
				cors[0] = '\0';
			else
				cors_headers(h.cfg, req->origin, cors,
				    sizeof(cors));
			http_reply(c, 200, "OK", a->content_type, cors, a->data,
			    a->len);
			return 1;
		}
	}
	return 0;
}

/* What the query and headers ask of the WebSocket. */
struct ws_ask {
	char token[NTWS_HTTP_MAX_HEAD];
	char since[NT_UUID_STRLEN + 2];  /* longer: not an id */
	int  has_since;       /* 1: valid, -1: given but not an id */
	int  ack;
	int  bearer;
};

static void
read_ask(const struct ntws_http_req *req, struct ws_ask *a)
{
	char ack[8];
	int n;

	a->bearer = ntws_http_bearer_token(req->ws_protocol, a->token,
	    sizeof(a->token));
	if (!a->bearer && ntws_http_query_param(req->query, "token", a->token,
	    sizeof(a->token)) < 0)
		a->token[0] = '\0';
	a->ack = ntws_http_query_param(req->query, "ack", ack, sizeof(ack)) > 0 &&
	    (strcmp(ack, "1") == 0 || strcmp(ack, "true") == 0);
	n = ntws_http_query_param(req->query, "since", a->since,
	    sizeof(a->since));
	if (n == -1)
		a->has_since = 0;
	else
		a->has_since = n > 0 && nt_uuid_valid(a->since) == 0 ? 1 : -1;
}

#define EXPIRY_NOTICE_MAX_S 30.0   /* the most a 4002 comes before exp */

/*
 * When to close a connection whose token has claims (0: never: the
 * token has no exp, and --max-token-age is off). Its client is told
 * with 4002 a little before exp, so that it fetches a new token and
 * resumes while this one is still good: a tenth of the token's lifetime
 * ahead (exp - iat; without iat, what is left of it at connect), at most
 * 30 s, on a whole second. A connection opened after that point (its
 * client came back with the same token) is closed when the token stops
 * being accepted, at exp + --jwt-leeway: one token never makes a
 * reconnect loop.
 */
static time_t
close_time(const json_t *claims, time_t now)
{
	const json_t *iat = json_object_get(claims, "iat");
	double life, notice, at;
	time_t exp;

	if (nt_jwt_claims_exp(claims, &exp) != 0)
		exp = 0;
	/* --max-token-age ends a token too, at iat + it (iat is then
	 * required, and exp, when given, comes no later): this is what ends
	 * a token without exp under --require-exp no. */
	if (h.cfg->jwt_max_age > 0 && json_is_number(iat)) {
		double end = floor(json_number_value(iat) + h.cfg->jwt_max_age);

		if (exp == 0 || end < (double)exp)
			exp = (time_t)end;
	}
	if (exp == 0)
		return 0;
	if (json_is_number(iat) && json_number_value(iat) < (double)exp)
		life = (double)exp - json_number_value(iat);
	else
		life = (double)exp - (double)now;
	notice = fmin(fmax(life / 10, 0.), EXPIRY_NOTICE_MAX_S);
	at = floor((double)exp - notice);
	if (at <= (double)now)
		at = (double)exp + h.cfg->jwt_leeway;
	return (time_t)at;
}

/* The token decides who it is; the delivery layer takes it from there. */
static void
authenticate(struct ntws_conn *c, const struct ws_ask *a)
{
	char user[NT_USER_MAX + 1], err[256], peer[80], *grants = NULL;
	json_t *claims = NULL;
	/* Not time(): its coarse clock lags the loop's, which closes at
	 * close_at by ev_now(), and a client back at once would look early. */
	time_t now = (time_t)ev_time(), close_at;

	if (a->token[0] == '\0' || h.jwt == NULL)
		snprintf(err, sizeof(err), "no token");
	else if (nt_jwt_verify_claims(h.jwt, a->token, now, user, &claims,
	    err, sizeof(err)) == 0 &&
	    ntws_grants_from_claims(claims, &grants, err, sizeof(err)) == 0) {
		close_at = close_time(claims, now);
		json_decref(claims);
		ntws_m.auth_ok++;
		nt_log_info("conn %llu (%s): user %s connected%s%s",
		    (unsigned long long)ntws_conn_serial(c),
		    ntws_conn_peer(c, peer, sizeof(peer)), user,
		    a->ack ? " (ack mode)" : "",
		    a->has_since == 1 ? " (resuming)" : "");
		if (a->has_since < 0) {
			free(grants);
			ntws_conn_close(c, 1008, "invalid since: not a message id");
			return;
		}
		ntws_deliver_attach(c, user, a->has_since ? a->since : NULL,
		    a->ack, grants, close_at);
		return;
	}
	json_decref(claims);
	ntws_m.auth_failures++;
	nt_log_info("conn %llu (%s): authentication failed: %s",
	    (unsigned long long)ntws_conn_serial(c),
	    ntws_conn_peer(c, peer, sizeof(peer)), err);
	ntws_conn_close(c, 4001, "authentication failed");
}

static void
upgrade(struct ntws_conn *c, const struct ntws_http_req *req)
{
	char accept[29], head[256];
	struct ws_ask *a;
	int n;

	if (req->minor < 1 || req->host.p == NULL ||
	    !ntws_http_has_token(req->upgrade, "websocket") ||
	    !ntws_http_has_token(req->connection, "upgrade")) {
		http_error(c, 400, "Bad Request", "not a WebSocket upgrade", NULL);
		return;
	}
	if (!ntws_str_eq(req->ws_version, "13")) {
		http_error(c, 426, "Upgrade Required",
		    "unsupported WebSocket version",
		    "Sec-WebSocket-Version: 13\r\n");
		return;
	}
	if (!ntws_http_key_valid(req->ws_key)) {
		http_error(c, 400, "Bad Request", "bad Sec-WebSocket-Key", NULL);
		return;
	}
	if (!ntws_http_origin_allowed(h.cfg->allowed_origins, req->origin)) {
		http_error(c, 403, "Forbidden", "origin not allowed", NULL);
		return;
	}
	if ((a = malloc(sizeof(*a))) == NULL) {
		ntws_conn_kill(c);
		return;
	}
	read_ask(req, a);
	ntws_ws_accept(req->ws_key.p, req->ws_key.len, accept);
	n = snprintf(head, sizeof(head),
	    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
	    accept, a->bearer ? "Sec-WebSocket-Protocol: bearer\r\n" : "");
	if (ntws_conn_upgrade(c, head, (size_t)n, req->head_len) == 0)
		authenticate(c, a);
	explicit_bzero(a->token, sizeof(a->token));
	free(a);
}

/* Paths compare exactly: case matters. */
static int
path_is(struct ntws_str path, const char *want)
{
	return path.len == strlen(want) && memcmp(path.p, want, path.len) == 0;
}

/* Behind a trusted proxy, the client is who X-Forwarded-For says. */
static void
forwarded_client(struct ntws_conn *c, const struct ntws_http_req *req)
{
	const struct nt_proxy_list *proxies = &h.cfg->trusted_proxies;
	char peer[64], client[64];

	if (proxies->n == 0 || req->xff.p == NULL)
		return;
	ntws_conn_addr(c, peer, sizeof(peer));
	nt_proxy_client(proxies, peer, req->xff.p, req->xff.len, client,
	    sizeof(client));
	if (strcmp(client, peer) != 0)
		ntws_conn_set_client(c, client);
}

static void
handle_request(struct ntws_conn *c, const struct ntws_http_req *req)
{
	forwarded_client(c, req);
	if (!ntws_str_eq(req->method, "GET")) {
		http_error(c, 405, "Method Not Allowed", "method not allowed",
		    "Allow: GET\r\n");
		return;
	}
	if (h.shutting_down) {
		http_error(c, 503, "Service Unavailable", "shutting down", NULL);
		return;
	}
	if (path_is(req->path, "/ws/notifications")) {
		upgrade(c, req);
		return;
	}
	if (path_is(req->path, "/livez"))
		serve_live(c);
	else if (path_is(req->path, "/readyz") || path_is(req->path, "/healthz"))
		serve_ready(c);
	else if (path_is(req->path, "/metrics"))
		serve_metrics(c);
	else if (!serve_asset(c, req))
		http_error(c, 404, "Not Found", "not found", NULL);
}

/* The conn hook: the head may be complete (or is too long). */
static void
on_head(struct ntws_conn *c, const char *head, size_t len)
{
	struct ntws_http_req req;
	int r;

	r = ntws_http_parse(head, len, &req);
	if (r == NTWS_HTTP_PARTIAL)
		return;
	if (r == NTWS_HTTP_BAD)
		http_error(c, 400, "Bad Request", "malformed request", NULL);
	else if (r == NTWS_HTTP_TOO_BIG)
		http_error(c, 431, "Request Header Fields Too Large",
		    "request head too large", NULL);
	else
		handle_request(c, &req);
}

const struct ntws_conn_hooks ntws_handshake_hooks = {
	on_head, NULL, NULL, NULL, NULL,
};
