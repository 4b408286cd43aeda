/*
 * sha1: the two digests the WebSocket handshake needs (RFC 6455 4.2.2:
 * base64(SHA-1(key + GUID))). Not for anything security-relevant: SHA-1
 * is only used here because the protocol says so.
 */
#ifndef NTWS_SHA1_H
#define NTWS_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define NTWS_SHA1_LEN 20

struct ntws_sha1 {
	uint32_t h[5];
	uint64_t total;        /* bytes hashed so far */
	uint8_t  block[64];
	size_t   used;         /* bytes waiting in block */
};

void ntws_sha1_init(struct ntws_sha1 *s);
void ntws_sha1_update(struct ntws_sha1 *s, const void *data, size_t len);
void ntws_sha1_final(struct ntws_sha1 *s, uint8_t out[NTWS_SHA1_LEN]);

/*
 * Standard base64 with padding of len bytes into out, which must hold
 * 4 * ((len + 2) / 3) + 1 bytes. Returns the length written (no NUL).
 */
size_t ntws_base64(const uint8_t *in, size_t len, char *out);

/* Sec-WebSocket-Accept for a client key: out holds 28 chars + NUL. */
void ntws_ws_accept(const char *key, size_t keylen, char out[29]);

#endif
