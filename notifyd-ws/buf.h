/*
 * buf: outbound bytes shared by reference. A notification is framed once
 * and the same buffer sits in the send queue of every connection it goes
 * to; the last unref frees it. Single-threaded: no atomics.
 */
#ifndef NTWS_BUF_H
#define NTWS_BUF_H

#include <stddef.h>
#include <stdint.h>

enum ntws_buf_kind {
	NTWS_BUF_RAW = 0,     /* HTTP bytes, wslay's control frames, our pings */
	NTWS_BUF_REPLY,       /* a text message answering a client */
	NTWS_BUF_NOTE,        /* a notification */
};

struct ntws_buf {
	uint32_t refs;
	uint32_t len;         /* bytes of data[] */
	int64_t  ts_us;       /* message timestamp; 0: no latency sample */
	int64_t  seq;         /* position in its user's log; 0: none */
	uint32_t epoch_gen;   /* of the user's log it came from (deliver.c) */
	uint8_t  kind;        /* enum ntws_buf_kind */
	uint8_t  data[];
};

/*
 * A new buffer holding one server frame (FIN, unmasked: RFC 6455 5.2) of
 * opcode with a copy of payload[0..len); refs 1, kind RAW, owned by the
 * caller. NULL when out of memory or len does not fit.
 */
struct ntws_buf *ntws_buf_frame(int opcode, const void *payload, size_t len);

/* A new buffer holding a copy of data[0..len); as ntws_buf_frame. */
struct ntws_buf *ntws_buf_raw(const void *data, size_t len);

/* Take one more reference; returns b. */
static inline struct ntws_buf *
ntws_buf_ref(struct ntws_buf *b)
{
	b->refs++;
	return b;
}

/* Drop one reference (NULL is ignored); the last one frees b. */
void ntws_buf_unref(struct ntws_buf *b);

/* Bytes of every buffer alive: what the process holds for sockets. */
size_t ntws_buf_bytes(void);

#endif
