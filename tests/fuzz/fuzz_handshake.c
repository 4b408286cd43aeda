/*
 * fuzz_handshake: the request-head parser of notifyd-ws and the pure
 * checks of the opening handshake beside it (http.c: Sec-WebSocket-Key,
 * the bearer token in Sec-WebSocket-Protocol, the origin list, the
 * query parameters), on arbitrary bytes.
 *
 * The head is fed as a connection would see it: prefixes of growing,
 * input-chosen lengths. Once the parser has a verdict for a prefix, no
 * longer prefix may change it, and every slice it returns must lie
 * inside the head. Every verdict of the handshake checks is checked
 * against what it claims (a token found is in the value, an origin
 * allowed is in the list, a key accepted has the shape of one), and the
 * accept value against an independent computation (EVP_Digest and a
 * base64 encoder of our own, not the SHA1() and EVP_EncodeBlock that
 * http.c uses). Any violation aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>

#include "http.h"

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

#define TCHARS "!#$%&'*+-.^_`|~0123456789" \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

static int
all_in(struct ntws_str s, const char *set)
{
	size_t i;

	for (i = 0; i < s.len; i++)
		if (s.p[i] == '\0' || strchr(set, s.p[i]) == NULL)
			return 0;
	return 1;
}

/* Visible ASCII only: what a request target may hold. */
static int
printable(struct ntws_str s)
{
	size_t i;

	for (i = 0; i < s.len; i++)
		if ((unsigned char)s.p[i] <= 0x20 || (unsigned char)s.p[i] >= 0x7f)
			return 0;
	return 1;
}

static void
check_value(struct ntws_str v)
{
	size_t i;

	if (v.p == NULL)
		return;
	for (i = 0; i < v.len; i++)
		if (v.p[i] == '\r' || v.p[i] == '\n')
			abort();
	if (v.len > 0 && (v.p[0] == ' ' || v.p[0] == '\t' ||
	    v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
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
	/* The request line as the parser promises it. */
	if (req->method.len == 0 || req->path.len == 0 ||
	    req->path.p[0] != '/' || !all_in(req->method, TCHARS) ||
	    !printable(req->path) || !printable(req->query) ||
	    (req->query.len > 0 && req->query.p != req->path.p +
	    req->path.len + 1))
		abort();
	/* No header value holds a line break or starts or ends blank. */
	check_value(req->host);
	check_value(req->upgrade);
	check_value(req->connection);
	check_value(req->ws_key);
	check_value(req->ws_version);
	check_value(req->ws_protocol);
	check_value(req->origin);
	check_value(req->xff);
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

static int
is_space(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Whether tok is one of the comma-separated items of v (spaces around
 * items ignored, any case): the claim ntws_http_has_token() makes.
 */
static int
in_list(const char *v, size_t vlen, const char *tok, size_t toklen)
{
	size_t i = 0, s, e;

	while (i <= vlen) {
		for (e = i; e < vlen && v[e] != ','; e++)
			;
		s = i;
		while (s < e && is_space(v[s]))
			s++;
		while (e > s && is_space(v[e - 1]))
			e--;
		if (e - s == toklen && strncasecmp(v + s, tok, toklen) == 0)
			return 1;
		for (i = e; i < vlen && v[i] != ','; i++)
			;
		i++;
	}
	return 0;
}

static void
check_has_token(struct ntws_str v, const char *tok)
{
	int got = ntws_http_has_token(v, tok);

	if (got != (v.p != NULL && in_list(v.p, v.len, tok, strlen(tok))))
		abort();
}

/* base64 (RFC 4648, padded), written here so it is not the one tested. */
static void
b64(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, o = 0;
	unsigned long v;

	for (i = 0; i < len; i += 3) {
		v = (unsigned long)in[i] << 16;
		if (i + 1 < len)
			v |= (unsigned long)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? tab[v & 63] : '=';
	}
	out[o] = '\0';
}

static void
check_accept(struct ntws_str key)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	char accept[NTWS_WS_ACCEPT_LEN + 1], want[NTWS_WS_ACCEPT_LEN + 1];
	unsigned char in[64], md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t i;

	/* A valid key: 22 base64 characters and "==". */
	if (key.len != 24 || key.p[22] != '=' || key.p[23] != '=')
		abort();
	for (i = 0; i < 22; i++)
		if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		    "0123456789+/", key.p[i]) == NULL || key.p[i] == '\0')
			abort();
	if (ntws_ws_accept(key.p, key.len, accept) != 0 ||
	    strlen(accept) != NTWS_WS_ACCEPT_LEN)
		abort();
	memcpy(in, key.p, key.len);
	memcpy(in + key.len, guid, sizeof(guid) - 1);
	if (EVP_Digest(in, key.len + sizeof(guid) - 1, md, &mdlen, EVP_sha1(),
	    NULL) != 1 || mdlen != 20)
		abort();
	b64(md, mdlen, want);
	if (strcmp(accept, want) != 0)
		abort();
}

static void
check_origin(const struct ntws_http_req *req)
{
	static const char *const list =
	    " http://a.example , https://b.example:8443,,";
	int got;

	if (!ntws_http_origin_allowed(NULL, req->origin))
		abort();   /* no list: any origin */
	got = ntws_http_origin_allowed(list, req->origin);
	if (got != (req->origin.p == NULL ||
	    in_list(list, strlen(list), req->origin.p, req->origin.len)))
		abort();
}

static void
check_bearer(struct ntws_str v)
{
	char token[NTWS_HTTP_MAX_HEAD], small[4];
	size_t n;
	int bearer;

	bearer = ntws_http_bearer_token(v, token, sizeof(token));
	if (bearer != (v.p != NULL && in_list(v.p, v.len, "bearer", 6)))
		abort();
	n = strlen(token);
	if (n >= sizeof(token) || (!bearer && n != 0))
		abort();
	/* The token is one item of the value, trimmed, and not "bearer". */
	if (n > 0 && (!in_list(v.p, v.len, token, n) ||
	    strcasecmp(token, "bearer") == 0 || is_space(token[0]) ||
	    is_space(token[n - 1]) || strchr(token, ',') != NULL))
		abort();
	(void)ntws_http_bearer_token(v, small, sizeof(small));
	if (strlen(small) >= sizeof(small) ||
	    (small[0] != '\0' && strcmp(small, token) != 0))
		abort();
}

/* A value found fits its buffer with its NUL; absent and bad are -1, -2. */
static void
check_param(struct ntws_str q, const char *name, size_t outlen)
{
	char out[NTWS_HTTP_MAX_HEAD];
	int n;

	n = ntws_http_query_param(q, name, out, outlen);
	if (n < -2 || (n >= 0 && ((size_t)n >= outlen || out[n] != '\0')))
		abort();
	/* Present means "name=" is in the query. */
	if (n != -1 && (q.p == NULL || q.len <= strlen(name) ||
	    memmem(q.p, q.len, name, strlen(name)) == NULL))
		abort();
}

/* What upgrade() does with a parsed head, minus the connection. */
static void
handshake_checks(const struct ntws_http_req *req)
{
	check_has_token(req->upgrade, "websocket");
	check_has_token(req->connection, "upgrade");
	if (ntws_str_eq(req->ws_version, "13") != (req->ws_version.p != NULL &&
	    req->ws_version.len == 2 && memcmp(req->ws_version.p, "13", 2) == 0))
		abort();
	check_origin(req);
	if (ntws_http_key_valid(req->ws_key))
		check_accept(req->ws_key);
	check_bearer(req->ws_protocol);
	check_param(req->query, "token", NTWS_HTTP_MAX_HEAD);
	check_param(req->query, "ack", 8);
	check_param(req->query, "since", 4);
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
