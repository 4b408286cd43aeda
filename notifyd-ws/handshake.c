/*
 * The HTTP side of a connection: reading the request head, the routes
 * (/livez, /readyz, /metrics, the client assets), and the WebSocket opening
 * handshake (RFC 6455 4.2) with its JWT authentication. Plain HTTP
 * replies close the connection: there is no keep-alive.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "http.h"
#include "nt_log.h"
#include "sha1.h"
#include "web_assets.h"
#include "ws.h"

/* An HTTP reply ends the exchange: no keep-alive. */
static void
http_reply(struct ntws_conn *c, int status, const char *reason,
    const char *ctype, const char *extra, const void *body, size_t blen)
{
	char head[1024];
	int n;
	struct ntws_buf *b;

	n = snprintf(head, sizeof(head),
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
	    status, reason, ctype, blen, extra != NULL ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(head) ||
	    (b = ntws_buf_raw(head, (size_t)n)) == NULL) {
		ntws_conn_kill(c);
		return;
	}
	ntws_conn_push(c, b);
	if (blen > 0 && (b = ntws_buf_raw(body, blen)) != NULL)
		ntws_conn_push(c, b);
	c->http_only = 1;
	c->close_sent = 1;
	c->state = NTWS_CS_CLOSING;
	ntws_conn_timer_in(c, NTWS_CLOSE_LINGER_S);
	ntws_conn_flush_now(c);
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
 * live messages, the command one replays and deletes). Else 503, saying
 * which is down, so that a load balancer sends clients elsewhere.
 */
static void
serve_ready(struct ntws_conn *c)
{
	int sub = ntws_redis_sub_up(c->srv), cmd = ntws_redis_cmd_up(c->srv);
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
	char *text = ntws_metrics_render(c->srv, &len);

	if (text == NULL) {
		ntws_conn_kill(c);
		return;
	}
	http_reply(c, 200, "OK", "text/plain; version=0.0.4", NULL, text, len);
	free(text);
}

static int
origin_allowed(const struct ntws_config *cfg, struct ntws_str origin)
{
	const char *p, *comma, *end;
	size_t n;

	if (cfg->allowed_origins == NULL || origin.p == NULL)
		return 1;
	p = cfg->allowed_origins;
	end = p + strlen(p);
	while (p < end) {
		comma = strchr(p, ',');
		if (comma == NULL)
			comma = end;
		while (p < comma && *p == ' ')
			p++;
		n = (size_t)(comma - p);
		while (n > 0 && p[n - 1] == ' ')
			n--;
		if (n == origin.len && strncasecmp(p, origin.p, n) == 0)
			return 1;
		p = comma + 1;
	}
	return 0;
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
	    origin_allowed(cfg, origin))
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
		if (is_html && !c->srv->cfg->demo)
			continue;
		if ((plen == path.len && memcmp(a->path, path.p, plen) == 0) ||
		    (is_html && path.len == 1 &&
		    (strcmp(a->path, "/index.html") == 0 ||
		    strcmp(a->path, "/demo.html") == 0))) {
			/* The demo page is a page, not a module to share. */
			if (is_html)
				cors[0] = '\0';
			else
				cors_headers(c->srv->cfg, req->origin, cors,
				    sizeof(cors));
			http_reply(c, 200, "OK", a->content_type, cors, a->data,
			    a->len);
			return 1;
		}
	}
	return 0;
}

static int
key_valid(struct ntws_str k)
{
	size_t i;

	/* base64 of 16 bytes: 22 characters and "==". */
	if (k.p == NULL || k.len != 24 || k.p[22] != '=' || k.p[23] != '=')
		return 0;
	for (i = 0; i < 22; i++)
		if (!(isalnum((unsigned char)k.p[i]) || k.p[i] == '+' ||
		    k.p[i] == '/'))
			return 0;
	return 1;
}

/* The token from "bearer, TOKEN" in Sec-WebSocket-Protocol. */
static int
protocol_token(struct ntws_str v, char *out, size_t outlen)
{
	const char *p = v.p, *end, *comma;
	size_t n;
	int bearer = 0;

	out[0] = '\0';
	if (v.p == NULL)
		return 0;
	end = v.p + v.len;
	while (p < end) {
		comma = memchr(p, ',', (size_t)(end - p));
		if (comma == NULL)
			comma = end;
		while (p < comma && (*p == ' ' || *p == '\t'))
			p++;
		n = (size_t)(comma - p);
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == 6 && strncasecmp(p, "bearer", 6) == 0)
			bearer = 1;
		else if (n > 0 && out[0] == '\0' && n < outlen) {
			memcpy(out, p, n);
			out[n] = '\0';
		}
		p = comma + 1;
	}
	if (!bearer)
		out[0] = '\0';
	return bearer;
}

static void
authenticate(struct ntws_conn *c, const char *token)
{
	struct ntws_server *s = c->srv;
	char user[NT_USER_MAX + 1], err[256], peer[80];

	if (token[0] == '\0' || s->jwt == NULL)
		snprintf(err, sizeof(err), "no token");
	else if (nt_jwt_verify(s->jwt, token, time(NULL), user, err,
	    sizeof(err)) == 0) {
		s->m.auth_ok++;
		c->authed = 1;
		s->nconns_ws++;
		ntws_conn_attach_user(c, user);
		c->last_rx = c->authed_at = ev_now(s->loop);
		ntws_conn_timer_in(c, s->cfg->ping_interval);
		nt_log_info("conn %llu (%s): user %s connected%s",
		    (unsigned long long)c->serial,
		    ntws_conn_peer(c, peer, sizeof(peer)), user,
		    c->ack_mode ? " (ack mode)" : "");
		ntws_replay_begin(c);
		return;
	}
	s->m.auth_failures++;
	nt_log_info("conn %llu (%s): authentication failed: %s",
	    (unsigned long long)c->serial, ntws_conn_peer(c, peer, sizeof(peer)),
	    err);
	ntws_conn_close(c, 4001, "authentication failed");
}

static void
upgrade(struct ntws_conn *c, const struct ntws_http_req *req)
{
	char accept[29], head[256], token[NTWS_HTTP_MAX_HEAD], ack[8];
	int n, bearer;
	struct ntws_buf *b;

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
	if (!key_valid(req->ws_key)) {
		http_error(c, 400, "Bad Request", "bad Sec-WebSocket-Key", NULL);
		return;
	}
	if (!origin_allowed(c->srv->cfg, req->origin)) {
		http_error(c, 403, "Forbidden", "origin not allowed", NULL);
		return;
	}
	bearer = protocol_token(req->ws_protocol, token, sizeof(token));
	if (!bearer && ntws_http_query_param(req->query, "token", token,
	    sizeof(token)) < 0)
		token[0] = '\0';
	if (ntws_http_query_param(req->query, "ack", ack, sizeof(ack)) > 0 &&
	    (strcmp(ack, "1") == 0 || strcmp(ack, "true") == 0))
		c->ack_mode = 1;

	ntws_ws_accept(req->ws_key.p, req->ws_key.len, accept);
	n = snprintf(head, sizeof(head),
	    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
	    accept, bearer ? "Sec-WebSocket-Protocol: bearer\r\n" : "");
	if ((b = ntws_buf_raw(head, (size_t)n)) == NULL ||
	    ntws_conn_push(c, b) != 0) {
		ntws_buf_unref(b);
		ntws_conn_kill(c);
		return;
	}
	c->state = NTWS_CS_REPLAY;
	authenticate(c, token);
	explicit_bzero(token, sizeof(token));
	ntws_conn_flush_now(c);
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
	const struct nt_proxy_list *proxies = &c->srv->cfg->trusted_proxies;
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
	if (c->srv->shutting_down) {
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

void
ntws_http_read(struct ntws_conn *c)
{
	struct ntws_server *s = c->srv;
	struct ntws_http_req req;
	ssize_t n;
	size_t want, from;
	char *nb;
	int r;

	/*
	 * Never hold more than a head's worth: what follows the head stays
	 * in the socket for the WebSocket parser, or is a head too large.
	 */
	want = NTWS_HTTP_MAX_HEAD + 1 - c->inlen;
	if (want > s->rbuf_len)
		want = s->rbuf_len;
	n = recv(c->fd, s->rbuf, want, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR)) {
		ntws_conn_kill(c);
		return;
	}
	if (n < 0)
		return;
	if ((nb = realloc(c->inbuf, c->inlen + (size_t)n + 1)) == NULL) {
		ntws_conn_kill(c);
		return;
	}
	c->inbuf = nb;
	memcpy(c->inbuf + c->inlen, s->rbuf, (size_t)n);
	from = c->inlen > 3 ? c->inlen - 3 : 0;
	c->inlen += (uint32_t)n;
	/*
	 * Only the new bytes can end the head: look there before parsing it
	 * all again, or a client sending a byte at a time costs quadratic time.
	 */
	if (memmem(c->inbuf + from, c->inlen - from, "\r\n\r\n", 4) == NULL &&
	    c->inlen < NTWS_HTTP_MAX_HEAD)
		return;
	r = ntws_http_parse(c->inbuf, c->inlen, &req);
	if (r == NTWS_HTTP_PARTIAL)
		return;
	if (r == NTWS_HTTP_BAD) {
		http_error(c, 400, "Bad Request", "malformed request", NULL);
		return;
	}
	if (r == NTWS_HTTP_TOO_BIG) {
		http_error(c, 431, "Request Header Fields Too Large",
		    "request head too large", NULL);
		return;
	}
	/* What follows the head belongs to the WebSocket (wslay). */
	c->inoff = (uint32_t)req.head_len;
	handle_request(c, &req);
	if (c->state == NTWS_CS_DEAD)
		return;
	if (c->state != NTWS_CS_REPLAY && c->state != NTWS_CS_OPEN) {
		free(c->inbuf);
		c->inbuf = NULL;
		c->inlen = c->inoff = 0;
		return;
	}
	if (c->inoff >= c->inlen) {
		free(c->inbuf);
		c->inbuf = NULL;
		c->inlen = c->inoff = 0;
	} else
		ntws_conn_ws_read(c);
}

