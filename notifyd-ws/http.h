/*
 * http: the small HTTP/1.1 request parser of notifyd-ws. It reads one
 * request head (request line and headers) from a buffer, in place, and
 * knows nothing about sockets. Everything returned points into the
 * caller's buffer and is valid while the buffer is.
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

#endif
