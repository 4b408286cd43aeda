/*
 * conn: one client socket and its life. It knows bytes, WebSocket frames
 * (wslay parses what clients send; our frames are shared buffers in a
 * send queue), timers and the close; nothing of users, Redis or JSON.
 * What arrives goes up through the hooks of the layer that owns the
 * connection for the moment: the HTTP front while the request head is
 * read, then the delivery layer once it took the connection.
 *
 * Lifetime: a connection is never freed inside one of its callbacks.
 * ntws_conn_kill() closes the socket and marks it dead; it is freed by
 * ntws_conn_reap() after the loop iteration, once the on_gone hook ran.
 * Pointers to a connection stay valid until on_gone returns.
 */
#ifndef NTWS_CONN_H
#define NTWS_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <ev.h>

#include "buf.h"
#include "config.h"

#define NTWS_CLOSE_LINGER_S 2.0   /* wait for the peer's EOF after a close */

struct ntws_conn;

/*
 * What a connection tells its owner. Each hook may be NULL. They run
 * from the event loop's callbacks and from ntws_conn_flush_all() and
 * ntws_conn_reap(), never from inside another ntws_conn_* call, and may
 * call any ntws_conn_* function on c, close and kill included.
 */
struct ntws_conn_hooks {
	/*
	 * HTTP phase: new bytes of the request head arrived; head[0..len) is
	 * everything read so far, at most NTWS_HTTP_MAX_HEAD + 1 bytes, and
	 * is borrowed for the call. Called once the head may be complete
	 * (CRLF CRLF seen) or too long. The hook answers (ntws_conn_reply),
	 * upgrades (ntws_conn_upgrade) or returns to wait for more bytes.
	 */
	void (*on_head)(struct ntws_conn *c, const char *head, size_t len);
	/* One whole text message from the client, borrowed for the call. */
	void (*on_text)(struct ntws_conn *c, const uint8_t *msg, size_t len);
	/* b (a NOTE or a REPLY) is written whole to the socket. */
	void (*on_written)(struct ntws_conn *c, const struct ntws_buf *b);
	/* The send queue fell to the mark asked by ntws_conn_watch_drain. */
	void (*on_drain)(struct ntws_conn *c);
	/* The connection is dead; the last hook: forget c on return. */
	void (*on_gone)(struct ntws_conn *c);
};

/*
 * Start the module on loop with cfg (borrowed for the process's life);
 * new connections get hooks (the HTTP front's).
 */
void ntws_conn_init(struct ev_loop *loop, const struct ntws_config *cfg,
    const struct ntws_conn_hooks *hooks);

/* Kill and free every connection (at exit). */
void ntws_conn_free_all(void);

/* A new socket fd (non-blocking) from peer (copied). Takes fd. */
void ntws_conn_accept(int fd, const struct sockaddr *peer);

/* ---- the HTTP phase ---- */

/*
 * Queue head[0..hlen) then body[0..blen) (copied; body may be NULL) and
 * close the connection once they are written: an HTTP answer.
 */
void ntws_conn_reply(struct ntws_conn *c, const char *head, size_t hlen,
    const void *body, size_t blen);

/*
 * Queue resp[0..len) (the 101 answer, copied) and switch c to WebSocket
 * frames; the bytes of the head buffer after head_len (frames that came
 * with the request) are the first the frame parser reads. 0, or -1 when
 * out of memory (c is then killed).
 */
int ntws_conn_upgrade(struct ntws_conn *c, const char *resp, size_t len,
    size_t head_len);

/* ---- WebSocket phase ---- */

/*
 * Hand c to a new owner: its hooks (borrowed, static) and owner data.
 * The owner's on_gone is the last call it gets.
 */
void ntws_conn_adopt(struct ntws_conn *c, const struct ntws_conn_hooks *hooks,
    void *owner);

/* The owner data given to ntws_conn_adopt, or NULL. */
void *ntws_conn_owner(const struct ntws_conn *c);

enum {
	NTWS_SEND_QUEUED = 0,
	NTWS_SEND_CLOSED = -1,  /* closing or dead: b was dropped */
};

/*
 * Queue b (the caller's reference moves to the queue), written at the
 * end of the loop iteration with whatever else was queued. A NOTE or a
 * REPLY that would take a non-empty queue over --send-queue-max closes
 * the connection with 1013 "slow consumer" instead; with force, a NOTE
 * is queued whatever the size (the caller bounds it). Returns
 * NTWS_SEND_QUEUED or NTWS_SEND_CLOSED.
 */
int ntws_conn_send(struct ntws_conn *c, struct ntws_buf *b, int force);

/* Queue json[0..len) (copied) as a text message answering the client. */
void ntws_conn_send_reply(struct ntws_conn *c, const char *json, size_t len);

/* Bytes in the send queue not yet written. */
size_t ntws_conn_queued(const struct ntws_conn *c);

/* Call on_drain once, when the send queue falls to at most bytes. */
void ntws_conn_watch_drain(struct ntws_conn *c, size_t bytes);

/*
 * Stop (on) or resume (off) reading what the client sends: the bytes
 * wait in the socket, and the connection is not pinged meanwhile.
 */
void ntws_conn_hold_input(struct ntws_conn *c, int on);

/* Whether c still takes messages: not closing, not dead. */
int ntws_conn_open(const struct ntws_conn *c);

/*
 * Send a close frame (code, reason) after what is queued, stop taking
 * messages and wait for the peer's EOF (at most NTWS_CLOSE_LINGER_S).
 */
void ntws_conn_close(struct ntws_conn *c, uint16_t code, const char *reason);

/* Close the socket now; freed after the loop iteration. */
void ntws_conn_kill(struct ntws_conn *c);

/* Close every connection (WebSocket ones with code, reason): shutdown. */
void ntws_conn_close_all(uint16_t code, const char *reason);

/* ---- about a connection, for logs ---- */

uint64_t ntws_conn_serial(const struct ntws_conn *c);
/* The close code sent or received, 1006 when none was. */
uint16_t ntws_conn_close_code(const struct ntws_conn *c);
/* When the WebSocket opened (ev_now), or 0. */
ev_tstamp ntws_conn_opened_at(const struct ntws_conn *c);
/*
 * "addr:port" of the peer (or "addr" of the client behind a trusted
 * proxy) into buf; returns buf.
 */
const char *ntws_conn_peer(const struct ntws_conn *c, char *buf, size_t len);
/* The address alone, as text ("?" when unknown); returns buf. */
const char *ntws_conn_addr(const struct ntws_conn *c, char *buf, size_t len);
/* The client is the textual address addr, as a trusted proxy said; no
 * port. Ignored when addr does not parse. */
void ntws_conn_set_client(struct ntws_conn *c, const char *addr);

/* ---- the loop ---- */

/* Write what was queued during this iteration (from an ev_prepare). */
void ntws_conn_flush_all(void);
/* Free the connections killed during this iteration (ev_prepare). */
void ntws_conn_reap(void);
/* Connections alive (any state). */
size_t ntws_conn_count(void);

#endif
