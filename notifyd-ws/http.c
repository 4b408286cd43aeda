/*
 * A strict, allocation-free reader of HTTP/1.1 request heads, enough for
 * the WebSocket opening handshake (RFC 6455 4.2.1) and a few GETs, and
 * the handshake's own checks; see http.h.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "http.h"
#include "nt_config.h"

int
ntws_str_eq(struct ntws_str s, const char *c)
{
	return s.p != NULL && strlen(c) == s.len &&
	    strncasecmp(s.p, c, s.len) == 0;
}

static int
is_tchar(unsigned char ch)
{
	/* ch != 0: strchr() finds the terminating NUL too. */
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9') ||
	    (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static struct ntws_str
trim(const char *p, size_t len)
{
	struct ntws_str s;

	while (len > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		len--;
	}
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	s.p = p;
	s.len = len;
	return s;
}

/* "GET /path?query HTTP/1.1" */
static int
parse_request_line(const char *p, size_t len, struct ntws_http_req *req)
{
	const char *sp1, *sp2, *q, *end = p + len;

	sp1 = memchr(p, ' ', len);
	if (sp1 == NULL || sp1 == p)
		return NTWS_HTTP_BAD;
	for (q = p; q < sp1; q++)
		if (!is_tchar((unsigned char)*q))
			return NTWS_HTTP_BAD;
	req->method.p = p;
	req->method.len = (size_t)(sp1 - p);
	sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
	if (sp2 == NULL || sp2 == sp1 + 1 || sp1[1] != '/')
		return NTWS_HTTP_BAD;
	for (q = sp1 + 1; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
			return NTWS_HTTP_BAD;
	req->path.p = sp1 + 1;
	q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
	if (q != NULL) {
		req->path.len = (size_t)(q - sp1 - 1);
		req->query.p = q + 1;
		req->query.len = (size_t)(sp2 - q - 1);
	} else {
		req->path.len = (size_t)(sp2 - sp1 - 1);
		req->query.p = sp2;
		req->query.len = 0;
	}
	if (end - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    sp2[8] < '0' || sp2[8] > '9')
		return NTWS_HTTP_BAD;
	req->minor = sp2[8] - '0';
	return 1;
}

static void
set_header(struct ntws_http_req *req, struct ntws_str name,
    struct ntws_str value)
{
	static const struct {
		const char *name;
		size_t      off;
	} known[] = {
		{ "host", offsetof(struct ntws_http_req, host) },
		{ "upgrade", offsetof(struct ntws_http_req, upgrade) },
		{ "connection", offsetof(struct ntws_http_req, connection) },
		{ "sec-websocket-key", offsetof(struct ntws_http_req, ws_key) },
		{ "sec-websocket-version",
		    offsetof(struct ntws_http_req, ws_version) },
		{ "sec-websocket-protocol",
		    offsetof(struct ntws_http_req, ws_protocol) },
		{ "origin", offsetof(struct ntws_http_req, origin) },
	};
	size_t i;
	struct ntws_str *slot;

	/*
	 * A list header that proxies may repeat (HAProxy adds a line of its
	 * own): the last one is what the nearest proxy wrote.
	 */
	if (ntws_str_eq(name, "x-forwarded-for")) {
		req->xff = value;
		return;
	}
	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (!ntws_str_eq(name, known[i].name))
			continue;
		slot = (struct ntws_str *)((char *)req + known[i].off);
		/* A repeated header is ambiguous for the handshake: refuse. */
		if (slot->p != NULL) {
			slot->p = NULL;
			slot->len = (size_t)-1;
			return;
		}
		*slot = value;
		return;
	}
}

static int
header_repeated(const struct ntws_http_req *req)
{
	const struct ntws_str *h[] = { &req->host, &req->upgrade,
	    &req->connection, &req->ws_key, &req->ws_version,
	    &req->ws_protocol, &req->origin };
	size_t i;

	for (i = 0; i < sizeof(h) / sizeof(h[0]); i++)
		if (h[i]->p == NULL && h[i]->len == (size_t)-1)
			return 1;
	return 0;
}

int
ntws_http_parse(const char *buf, size_t len, struct ntws_http_req *req)
{
	const char *p, *eol, *colon, *end;
	struct ntws_str name;
	size_t scan = len < NTWS_HTTP_MAX_HEAD ? len : NTWS_HTTP_MAX_HEAD;
	int nheaders = 0, r;

	memset(req, 0, sizeof(*req));
	end = NULL;
	for (p = buf; p + 3 < buf + scan; p++) {
		if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
			end = p;
			break;
		}
	}
	if (end == NULL)
		return len >= NTWS_HTTP_MAX_HEAD ? NTWS_HTTP_TOO_BIG :
		    NTWS_HTTP_PARTIAL;
	req->head_len = (size_t)(end - buf) + 4;

	eol = memchr(buf, '\r', (size_t)(end - buf) + 1);
	if ((r = parse_request_line(buf, (size_t)(eol - buf), req)) != 1)
		return r;
	for (p = eol + 2; p < end + 2; p = eol + 2) {
		eol = memchr(p, '\r', (size_t)(end + 2 - p));
		if (eol == NULL || eol[1] != '\n')
			return NTWS_HTTP_BAD;
		if (++nheaders > NTWS_HTTP_MAX_HEADERS)
			return NTWS_HTTP_TOO_BIG;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (colon == NULL || colon == p)
			return NTWS_HTTP_BAD;
		name.p = p;
		name.len = (size_t)(colon - p);
		for (; p < colon; p++)
			if (!is_tchar((unsigned char)*p))
				return NTWS_HTTP_BAD;
		for (p = colon + 1; p < eol; p++)
			if ((unsigned char)*p < 0x20 && *p != '\t')
				return NTWS_HTTP_BAD;
		set_header(req, name, trim(colon + 1, (size_t)(eol - colon - 1)));
	}
	if (header_repeated(req))
		return NTWS_HTTP_BAD;
	return 1;
}

int
ntws_http_has_token(struct ntws_str v, const char *tok)
{
	const char *p = v.p, *end, *comma;
	struct ntws_str t;

	if (v.p == NULL)
		return 0;
	end = v.p + v.len;  /* not before the check: NULL + 0 is undefined */
	while (p < end) {
		comma = memchr(p, ',', (size_t)(end - p));
		if (comma == NULL)
			comma = end;
		t = trim(p, (size_t)(comma - p));
		if (ntws_str_eq(t, tok))
			return 1;
		p = comma + 1;
	}
	return 0;
}

int
ntws_http_query_param(struct ntws_str q, const char *name, char *out,
    size_t outlen)
{
	const char *p = q.p, *end, *amp, *eq;
	size_t nlen = strlen(name);
	int n;

	if (q.p == NULL)
		return -1;
	end = q.p + q.len;
	while (p < end) {
		amp = memchr(p, '&', (size_t)(end - p));
		if (amp == NULL)
			amp = end;
		eq = memchr(p, '=', (size_t)(amp - p));
		if (eq != NULL && (size_t)(eq - p) == nlen &&
		    memcmp(p, name, nlen) == 0) {
			n = nt_percent_decode(eq + 1, (size_t)(amp - eq - 1), 1,
			    out, outlen);
			return n < 0 ? -2 : n;
		}
		p = amp + 1;
	}
	return -1;
}

/* ---- the opening handshake ---- */

int
ntws_http_key_valid(struct ntws_str k)
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

int
ntws_ws_accept(const char *key, size_t keylen,
    char out[NTWS_WS_ACCEPT_LEN + 1])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char in[NTWS_WS_KEY_MAX + sizeof(guid)];
	unsigned char digest[SHA_DIGEST_LENGTH];

	out[0] = '\0';
	if (keylen > NTWS_WS_KEY_MAX)
		return -1;
	/* SHA-1 only because the protocol says so: it proves nothing secret. */
	if (keylen > 0)
		memcpy(in, key, keylen);
	memcpy(in + keylen, guid, sizeof(guid) - 1);
	if (SHA1(in, keylen + sizeof(guid) - 1, digest) == NULL)
		return -1;
	/* EVP_EncodeBlock writes padded base64 and a NUL: 4 * 21 / 3 = 28. */
	if (EVP_EncodeBlock((unsigned char *)out, digest, sizeof(digest)) !=
	    NTWS_WS_ACCEPT_LEN) {
		out[0] = '\0';
		return -1;
	}
	return 0;
}

int
ntws_http_bearer_token(struct ntws_str v, char *out, size_t outlen)
{
	const char *p = v.p, *end, *comma;
	struct ntws_str t;
	int bearer = 0, other = 0;

	out[0] = '\0';
	if (v.p == NULL)
		return 0;
	end = v.p + v.len;
	while (p < end) {
		comma = memchr(p, ',', (size_t)(end - p));
		if (comma == NULL)
			comma = end;
		t = trim(p, (size_t)(comma - p));
		if (ntws_str_eq(t, "bearer"))
			bearer = 1;
		else if (t.len > 0 && !other++ && t.len < outlen) {
			/* The first other item only: one too long for out
			 * is no token, never a later item instead. */
			memcpy(out, t.p, t.len);
			out[t.len] = '\0';
		}
		p = comma + 1;
	}
	if (!bearer)
		out[0] = '\0';
	return bearer;
}

int
ntws_http_origin_allowed(const char *list, struct ntws_str origin)
{
	const char *p, *comma, *end;
	struct ntws_str item;

	if (list == NULL || origin.p == NULL)
		return 1;
	p = list;
	end = p + strlen(p);
	while (p < end) {
		comma = strchr(p, ',');
		if (comma == NULL)
			comma = end;
		item = trim(p, (size_t)(comma - p));
		if (item.len == origin.len &&
		    strncasecmp(item.p, origin.p, item.len) == 0)
			return 1;
		p = comma + 1;
	}
	return 0;
}
