/*
 * fuzz_handshake: the request-head parser of notifyd-ws and the pure
 * checks of the opening handshake beside it (http.c: Sec-WebSocket-Key,
 * the bearer token in Sec-WebSocket-Protocol, the origin list, the
 * query parameters), on arbitrary bytes.
 *
 * The head is fed as a connection would see it: prefixes of growing,
 * input-chosen lengths. Once the parser has a verdict for a prefix, no
 * longer prefix may change it, and every slice it returns must lie
 * inside the head.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "sha1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_slice(const char *buf, const struct ntws_http_req *req,
    struct ntws_str s)
{
	if (s.p == NULL)
		return;
	if (s.p < buf || s.len > req->head_len ||
	    (size_t)(s.p - buf) > req->head_len - s.len)
		abort();
}

static void
check_req(const char *buf, size_t len, const struct ntws_http_req *req)
{
	if (req->head_len < 4 || req->head_len > len ||
	    req->head_len > NTWS_HTTP_MAX_HEAD ||
	    memcmp(buf + req->head_len - 4, "\r\n\r\n", 4) != 0)
		abort();
	if (req->method.p == NULL || req->path.p == NULL ||
	    req->query.p == NULL || req->minor < 0 || req->minor > 9)
		abort();
	check_slice(buf, req, req->method);
	check_slice(buf, req, req->path);
	check_slice(buf, req, req->query);
	check_slice(buf, req, req->host);
	check_slice(buf, req, req->upgrade);
	check_slice(buf, req, req->connection);
	check_slice(buf, req, req->ws_key);
	check_slice(buf, req, req->ws_version);
	check_slice(buf, req, req->ws_protocol);
	check_slice(buf, req, req->origin);
	check_slice(buf, req, req->xff);
}

/* What upgrade() does with a parsed head, minus the connection. */
static void
handshake_checks(const struct ntws_http_req *req)
{
	static const char *const list =
	    " http://a.example , https://b.example:8443,,";
	char token[NTWS_HTTP_MAX_HEAD], ack[8], accept[29], small[4];
	int bearer, n;

	(void)ntws_http_has_token(req->upgrade, "websocket");
	(void)ntws_http_has_token(req->connection, "upgrade");
	(void)ntws_str_eq(req->ws_version, "13");
	if (!ntws_http_origin_allowed(NULL, req->origin))
		abort();   /* no list: any origin */
	(void)ntws_http_origin_allowed(list, req->origin);
	if (ntws_http_key_valid(req->ws_key)) {
		ntws_ws_accept(req->ws_key.p, req->ws_key.len, accept);
		if (strlen(accept) != 28)
			abort();
	}
	bearer = ntws_http_bearer_token(req->ws_protocol, token, sizeof(token));
	if (strlen(token) >= sizeof(token) || (!bearer && token[0] != '\0'))
		abort();
	(void)ntws_http_bearer_token(req->ws_protocol, small, sizeof(small));
	if (strlen(small) >= sizeof(small))
		abort();
	n = ntws_http_query_param(req->query, "token", token, sizeof(token));
	if (n >= 0 && (size_t)n != strlen(token) && memchr(token, '\0',
	    (size_t)n) == NULL)
		abort();
	n = ntws_http_query_param(req->query, "ack", ack, sizeof(ack));
	if (n >= (int)sizeof(ack) || n < -2)
		abort();
	n = ntws_http_query_param(req->query, "since", small, sizeof(small));
	if (n >= (int)sizeof(small) || n < -2)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ntws_http_req req, first;
	size_t cut, len, step;
	int r, verdict = NTWS_HTTP_PARTIAL;
	char *buf;

	/* The first byte seeds the piece sizes; the rest is the stream. */
	if (size < 1)
		return 0;
	step = data[0];
	data++;
	size--;
	/* An exact-size copy: ASan catches any read past len. */
	buf = malloc(size > 0 ? size : 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	memset(&first, 0, sizeof(first));
	for (len = 0, cut = 0; ; cut++) {
		r = ntws_http_parse(buf, len, &req);
		if (r != NTWS_HTTP_PARTIAL && r != NTWS_HTTP_BAD &&
		    r != NTWS_HTTP_TOO_BIG && r != 1)
			abort();
		if (verdict != NTWS_HTTP_PARTIAL && r != verdict)
			abort();  /* more bytes changed a settled verdict */
		if (r == 1) {
			check_req(buf, len, &req);
			if (verdict == 1 && (req.head_len != first.head_len ||
			    req.method.p != first.method.p ||
			    req.path.len != first.path.len))
				abort();
			if (verdict != 1)
				first = req;
		}
		if (verdict == NTWS_HTTP_PARTIAL)
			verdict = r;
		if (len == size)
			break;
		/* Piece sizes 1..256, varied by the seed and the cut number. */
		len += 1 + ((step * 31 + cut * 17) & (step | 1) & 0xff);
		if (len > size)
			len = size;
	}
	if (verdict == 1)
		handshake_checks(&first);
	free(buf);
	return 0;
}
