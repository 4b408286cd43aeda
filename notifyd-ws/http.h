/*
 * http: the small HTTP/1.1 request parser of notifyd-ws and the pure
 * checks of the WebSocket opening handshake (RFC 6455 4.2). It reads one
 * request head (request line and headers) from a buffer, in place, and
 * knows nothing about sockets or connections. Everything returned points
 * into the caller's buffer and is valid while the buffer is.
 */
#ifndef NTWS_HTTP_H
#define NTWS_HTTP_H

#include <stddef.h>

#define NTWS_HTTP_MAX_HEAD    8192  /* bytes of request line + headers */
#define NTWS_HTTP_MAX_HEADERS 64

/* A string slice into the request buffer; p == NULL when absent. */
struct ntws_str {
	const char *p;
	size_t      len;
};

struct ntws_http_req {
	struct ntws_str method;
	struct ntws_str path;     /* without the query */
	struct ntws_str query;    /* after '?', may be empty */
	int             minor;    /* HTTP/1.minor */
	struct ntws_str host;
	struct ntws_str upgrade;
	struct ntws_str connection;
	struct ntws_str ws_key;
	struct ntws_str ws_version;
	struct ntws_str ws_protocol;
	struct ntws_str origin;
	struct ntws_str xff;      /* X-Forwarded-For: the last one, if repeated */
	size_t          head_len; /* bytes of the head, CRLFCRLF included */
};

enum {
	NTWS_HTTP_PARTIAL = 0,    /* need more bytes */
	NTWS_HTTP_BAD = -1,       /* malformed: 400 */
	NTWS_HTTP_TOO_BIG = -2,   /* head or header count over the caps: 431 */
};

/*
 * Parse the head at buf[0..len). Returns 1 with req filled, or one of
 * the codes above. Never reads past len.
 */
int ntws_http_parse(const char *buf, size_t len, struct ntws_http_req *req);

/* Whether a comma-separated header value has token tok (any case). */
int ntws_http_has_token(struct ntws_str v, const char *tok);

/*
 * Find query parameter name in q and percent-decode its value into out
 * (outlen bytes with the NUL). Returns the value length, -1 when absent,
 * -2 when malformed or too long.
 */
int ntws_http_query_param(struct ntws_str q, const char *name,
    char *out, size_t outlen);

/* Case-insensitive comparison of a slice with a C string. */
int ntws_str_eq(struct ntws_str s, const char *c);

/* ---- the opening handshake ---- */

/*
 * Whether k is a Sec-WebSocket-Key: base64 of 16 bytes (24 characters).
 * Its Sec-WebSocket-Accept is ntws_ws_accept().
 */
int ntws_http_key_valid(struct ntws_str k);

#define NTWS_WS_ACCEPT_LEN 28   /* base64 of a SHA-1 digest */
#define NTWS_WS_KEY_MAX    64   /* longest key ntws_ws_accept() takes */

/*
 * The Sec-WebSocket-Accept of a client key (RFC 6455 4.2.2: base64 of
 * SHA-1(key + GUID), both from libcrypto) into out: 28 characters and a
 * NUL. key[0..keylen) is borrowed; a valid key (ntws_http_key_valid) is
 * 24 bytes. Returns 0, or -1 with out "" when keylen is over
 * NTWS_WS_KEY_MAX or libcrypto fails.
 */
int ntws_ws_accept(const char *key, size_t keylen,
    char out[NTWS_WS_ACCEPT_LEN + 1]);

/*
 * The token of a Sec-WebSocket-Protocol value "bearer, TOKEN" (in either
 * order, any case for "bearer"). Returns 1 when "bearer" is offered, with
 * the first other protocol copied into out (NUL-terminated; "" when there
 * is none or it does not fit in outlen), else 0 with out "".
 */
int ntws_http_bearer_token(struct ntws_str v, char *out, size_t outlen);

/*
 * Whether an Origin header value is allowed by list, a comma-separated
 * list of origins (spaces around items ignored, any case). A NULL list
 * or an absent origin (non-browser clients) is allowed.
 */
int ntws_http_origin_allowed(const char *list, struct ntws_str origin);

#endif
