/*
 * One client connection: its life, the request head in, WebSocket frames
 * in (wslay) and out (our own queue of shared frames), timers, and the
 * close. See conn.h; what the bytes mean is decided by the owner's hooks.
 *
 * A connection is never freed inside one of its callbacks: kill closes
 * the socket and puts it on the dead list; reap, after the loop
 * iteration, tells the owner (on_gone) and frees it. Closes that happen
 * inside wslay_event_recv() leave the wslay context to be freed once
 * wslay has returned (in_wslay).
 *
 * wslay is used only to parse what clients send and to produce its
 * control replies (pong, close). Its context costs about 9 KiB, so it
 * exists only while it holds state: it is made when bytes arrive and
 * freed as soon as every byte it was given is a finished frame. An idle
 * connection is then just struct ntws_conn.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <wslay/wslay.h>

#include "conn.h"
#include "http.h"
#include "metrics.h"
#include "nt_log.h"

#define READ_BUDGET    (256 * 1024) /* bytes read per wakeup per conn */
#define IOV_MAX_BATCH  64

enum conn_state {
	CS_HTTP = 0,   /* reading the request head */
	CS_OPEN,       /* WebSocket frames */
	CS_CLOSING,    /* flushing, then waiting for the peer's EOF */
	CS_DEAD,       /* fd closed, waiting to be reaped */
};

struct ntws_conn {
	ev_io               io;
	ev_timer            timer;
	/* Small fields together and flags in bits: no holes, as there is
	 * one of these per client. */
	int                 fd;
	uint8_t             state;
	uint8_t             peer_family;    /* of peer_addr: AF_INET(6) or 0 */
	uint16_t            close_code;
	uint16_t            peer_port;      /* 0: not known (behind a proxy) */
	unsigned            ping_out : 1;   /* a ping waits for its pong */
	unsigned            frame_open : 1; /* wslay holds part of a frame */
	unsigned            msg_open : 1;   /* a fragmented message is open */
	unsigned            close_sent : 1;
	unsigned            was_open : 1;   /* a WebSocket (for close counts) */
	unsigned            wr_shut : 1;    /* shutdown(SHUT_WR) done */
	unsigned            eof : 1;        /* the peer closed or failed */
	unsigned            flush_queued : 1; /* in g.flushq */
	unsigned            in_wslay : 1;   /* inside wslay_event_recv */
	unsigned            held : 1;       /* input held by the owner */
	unsigned            input_waiting : 1; /* bytes to parse once released */
	unsigned            drain_armed : 1; /* drain_at is wanted */
	uint32_t            drain_at;       /* on_drain at or below it */
	uint64_t            serial;
	ev_tstamp           last_rx;
	ev_tstamp           ping_sent;
	ev_tstamp           opened_at;
	ev_tstamp           write_since;    /* last write progress */
	/* The client for logs: the TCP peer, or the client that a trusted
	 * proxy names. Binary: text would cost 30 bytes more per connection. */
	uint8_t             peer_addr[16];

	/* The request head, then its tail not yet given to wslay. */
	char               *inbuf;
	uint32_t            inlen, inoff;

	/* wslay context, only while it holds state. */
	wslay_event_context_ptr ws;
	uint64_t            ws_fed, ws_done, frame_bytes;

	/* Outbound queue of shared buffers; qv is NULL while empty. */
	struct ntws_buf   **qv;
	uint32_t            qhead, qn, qcap, qoff;
	size_t              qbytes;

	const struct ntws_conn_hooks *hooks;
	void               *owner;
	struct ntws_conn   *next, *prev;    /* all connections */
	struct ntws_conn   *dead_next;
	struct ntws_conn   *flush_next;
};

static struct {
	struct ev_loop               *loop;
	const struct ntws_config     *cfg;
	const struct ntws_conn_hooks *front;
	struct ntws_conn             *all, *dead, *flushq;
	size_t                        n;
	uint64_t                      next_serial;
	size_t                        read_budget;  /* of the ws_read() running */
	char                          rbuf[64 * 1024];  /* discarded input */
} g;

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_flush(struct ntws_conn *c);
static void conn_update_io(struct ntws_conn *c);
static void ws_read(struct ntws_conn *c);

void
ntws_conn_init(struct ev_loop *loop, const struct ntws_config *cfg,
    const struct ntws_conn_hooks *hooks)
{
	g.loop = loop;
	g.cfg = cfg;
	g.front = hooks;
}

/* Wall clock in microseconds: latency is measured against the message's
 * own (wall clock) timestamp. */
static int64_t
wall_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void
timer_in(struct ntws_conn *c, double after)
{
	ev_timer_stop(g.loop, &c->timer);
	ev_timer_set(&c->timer, after > 0 ? after : 0.001, 0.);
	ev_timer_start(g.loop, &c->timer);
}

/* ---- about a connection ---- */

uint64_t
ntws_conn_serial(const struct ntws_conn *c)
{
	return c->serial;
}

uint16_t
ntws_conn_close_code(const struct ntws_conn *c)
{
	return c->close_sent ? c->close_code : 1006;
}

ev_tstamp
ntws_conn_opened_at(const struct ntws_conn *c)
{
	return c->opened_at;
}

const char *
ntws_conn_addr(const struct ntws_conn *c, char *buf, size_t len)
{
	if (c->peer_family == 0 || inet_ntop(c->peer_family, c->peer_addr, buf,
	    (socklen_t)len) == NULL)
		snprintf(buf, len, "?");
	return buf;
}

const char *
ntws_conn_peer(const struct ntws_conn *c, char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN];

	ntws_conn_addr(c, addr, sizeof(addr));
	if (c->peer_port == 0)
		snprintf(buf, len, "%s", addr);
	else if (c->peer_family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", addr, c->peer_port);
	else
		snprintf(buf, len, "%s:%u", addr, c->peer_port);
	return buf;
}

void
ntws_conn_set_client(struct ntws_conn *c, const char *addr)
{
	if (inet_pton(AF_INET, addr, c->peer_addr) == 1)
		c->peer_family = AF_INET;
	else if (inet_pton(AF_INET6, addr, c->peer_addr) == 1)
		c->peer_family = AF_INET6;
	else
		return;
	c->peer_port = 0;
}

/* The TCP peer, kept from accept(): getpeername() fails once it is gone. */
static void
peer_from(struct ntws_conn *c, const struct sockaddr *sa)
{
	const struct sockaddr_in *a4 = (const void *)sa;
	const struct sockaddr_in6 *a6 = (const void *)sa;

	if (sa->sa_family == AF_INET) {
		memcpy(c->peer_addr, &a4->sin_addr, 4);
		c->peer_port = ntohs(a4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(c->peer_addr, &a6->sin6_addr, 16);
		c->peer_port = ntohs(a6->sin6_port);
	} else
		return;
	c->peer_family = (uint8_t)sa->sa_family;
}

void
ntws_conn_accept(int fd, const struct sockaddr *peer)
{
	struct ntws_conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return;
	}
	c->fd = fd;
	peer_from(c, peer);
	c->serial = ++g.next_serial;
	c->state = CS_HTTP;
	c->hooks = g.front;
	ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
	c->io.data = c;
	ev_io_start(g.loop, &c->io);
	ev_init(&c->timer, conn_timer_cb);
	c->timer.data = c;
	timer_in(c, g.cfg->handshake_timeout);
	c->next = g.all;
	if (g.all != NULL)
		g.all->prev = c;
	g.all = c;
	g.n++;
	ntws_m.sockets++;
	ntws_m.accepted++;
}

size_t
ntws_conn_count(void)
{
	return g.n;
}


void *
ntws_conn_owner(const struct ntws_conn *c)
{
	return c->owner;
}

void
ntws_conn_adopt(struct ntws_conn *c, const struct ntws_conn_hooks *hooks,
    void *owner)
{
	c->hooks = hooks;
	c->owner = owner;
}

int
ntws_conn_open(const struct ntws_conn *c)
{
	return c->state == CS_OPEN && !c->close_sent;
}

size_t
ntws_conn_queued(const struct ntws_conn *c)
{
	return c->qbytes;
}

/* ---- outbound queue ---- */

static void
queue_drop_all(struct ntws_conn *c, int keep_partial_head)
{
	uint32_t keep = keep_partial_head && c->qn > 0 && c->qoff > 0 ? 1 : 0;
	struct ntws_buf *b;

	while (c->qn > keep) {
		/* From the tail: what is dropped was never partly written. */
		b = c->qv[(c->qhead + c->qn - 1) % c->qcap];
		c->qbytes -= b->len;
		ntws_m.send_queue_bytes -= b->len;
		ntws_buf_unref(b);
		c->qn--;
	}
	if (c->qn == 0) {
		ntws_m.send_queue_bytes -= c->qbytes;
		c->qbytes = 0;
		free(c->qv);
		c->qv = NULL;
		c->qcap = c->qhead = c->qoff = 0;
	}
}

/* Append b to the queue (takes the reference); -1 when out of memory. */
static int
push(struct ntws_conn *c, struct ntws_buf *b)
{
	uint32_t i, ncap;
	struct ntws_buf **nv;

	if (c->qn == c->qcap) {
		ncap = c->qcap ? c->qcap * 2 : 4;
		if ((nv = malloc(ncap * sizeof(*nv))) == NULL)
			return -1;
		for (i = 0; i < c->qn; i++)
			nv[i] = c->qv[(c->qhead + i) % c->qcap];
		free(c->qv);
		c->qv = nv;
		c->qcap = ncap;
		c->qhead = 0;
	}
	if (c->qn == 0 && c->state == CS_OPEN) {
		/* The write deadline runs from now; arm it if it is the next. */
		c->write_since = ev_now(g.loop);
		if (ev_timer_remaining(g.loop, &c->timer) > g.cfg->write_timeout)
			timer_in(c, g.cfg->write_timeout);
	}
	c->qv[(c->qhead + c->qn) % c->qcap] = b;
	c->qn++;
	c->qbytes += b->len;
	ntws_m.send_queue_bytes += b->len;
	return 0;
}

/*
 * Write at the end of the loop iteration rather than at once: the
 * messages of one Redis read (a pipelined burst) then leave in one
 * writev per connection instead of one per message.
 */
static void
flush_later(struct ntws_conn *c)
{
	if (c->flush_queued || c->state == CS_DEAD)
		return;
	c->flush_queued = 1;
	c->flush_next = g.flushq;
	g.flushq = c;
}

static void
slow_consumer(struct ntws_conn *c)
{
	char peer[80];

	ntws_m.slow_consumers++;
	nt_log_info("conn %llu (%s): send queue over %zu bytes, closing",
	    (unsigned long long)c->serial, ntws_conn_peer(c, peer, sizeof(peer)),
	    g.cfg->send_queue_max);
	queue_drop_all(c, 1);
	ntws_conn_close(c, 1013, "slow consumer");
}

int
ntws_conn_send(struct ntws_conn *c, struct ntws_buf *b, int force)
{
	if (c->state == CS_DEAD || c->close_sent) {
		ntws_buf_unref(b);
		return NTWS_SEND_CLOSED;
	}
	/* One message alone over the limit still goes into an empty queue:
	 * refusing it would close its user on every connect. */
	if (b->kind != NTWS_BUF_RAW && !(force && b->kind == NTWS_BUF_NOTE) &&
	    c->qbytes > 0 && c->qbytes + b->len > g.cfg->send_queue_max) {
		ntws_buf_unref(b);
		slow_consumer(c);
		return NTWS_SEND_CLOSED;
	}
	if (push(c, b) != 0) {
		ntws_buf_unref(b);
		ntws_conn_kill(c);
		return NTWS_SEND_CLOSED;
	}
	flush_later(c);
	return NTWS_SEND_QUEUED;
}

void
ntws_conn_send_reply(struct ntws_conn *c, const char *json, size_t len)
{
	struct ntws_buf *b = ntws_buf_frame(WSLAY_TEXT_FRAME, json, len);

	if (b != NULL) {
		b->kind = NTWS_BUF_REPLY;
		ntws_conn_send(c, b, 0);
	}
}

void
ntws_conn_watch_drain(struct ntws_conn *c, size_t bytes)
{
	c->drain_at = bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)bytes;
	c->drain_armed = 1;
}

void
ntws_conn_hold_input(struct ntws_conn *c, int on)
{
	if (c->state == CS_DEAD || c->held == !!on)
		return;
	c->held = !!on;
	if (!on) {
		c->last_rx = ev_now(g.loop);   /* the ping clock starts again */
		if (c->state == CS_OPEN)
			timer_in(c, 0);        /* open_timer() sets the next */
		/* Bytes that came with the request: parsed in the flush pass. */
		if (c->inbuf != NULL)
			c->input_waiting = 1;
		flush_later(c);
	}
	conn_update_io(c);
}

/* Counted and told to the owner once written whole. */
static void
written(struct ntws_conn *c, struct ntws_buf *b)
{
	if (b->kind == NTWS_BUF_REPLY) {
		ntws_m.messages_out++;
		ntws_m.replies++;
	} else if (b->kind == NTWS_BUF_NOTE) {
		ntws_m.deliveries++;
		ntws_m.messages_out++;
		if (b->ts_us > 0)
			ntws_metrics_latency((double)(wall_us() - b->ts_us) / 1e6);
	} else
		return;
	if (c->hooks != NULL && c->hooks->on_written != NULL)
		c->hooks->on_written(c, b);
}

static void
conn_after_flush(struct ntws_conn *c)
{
	if (c->qn == 0 && c->close_sent && c->state == CS_CLOSING &&
	    !c->wr_shut) {
		/* Our last byte is out: half-close, wait for the peer's EOF. */
		shutdown(c->fd, SHUT_WR);
		c->wr_shut = 1;
	}
}

/* Take w written bytes off the head of the queue. */
static void
dequeue(struct ntws_conn *c, size_t w)
{
	struct ntws_buf *b;

	while (w > 0 && c->qn > 0 && c->state != CS_DEAD) {
		b = c->qv[c->qhead];
		if (w < b->len - c->qoff) {
			c->qoff += (uint32_t)w;
			c->qbytes -= w;
			ntws_m.send_queue_bytes -= w;
			break;
		}
		w -= b->len - c->qoff;
		c->qbytes -= b->len - c->qoff;
		ntws_m.send_queue_bytes -= b->len - c->qoff;
		c->qoff = 0;
		c->qhead = (c->qhead + 1) % c->qcap;
		c->qn--;
		written(c, b);
		ntws_buf_unref(b);
	}
}

static void
conn_flush(struct ntws_conn *c)
{
	struct iovec iov[IOV_MAX_BATCH];
	struct ntws_buf *b;
	uint32_t i, n;
	ssize_t w;
	size_t total;

	while (c->qn > 0 && c->state != CS_DEAD) {
		n = c->qn < IOV_MAX_BATCH ? c->qn : IOV_MAX_BATCH;
		total = 0;
		for (i = 0; i < n; i++) {
			b = c->qv[(c->qhead + i) % c->qcap];
			iov[i].iov_base = b->data + (i == 0 ? c->qoff : 0);
			iov[i].iov_len = b->len - (i == 0 ? c->qoff : 0);
			total += iov[i].iov_len;
		}
		w = writev(c->fd, iov, (int)n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			ntws_conn_kill(c);
			return;
		}
		if (w > 0)
			c->write_since = ev_now(g.loop);
		dequeue(c, (size_t)w);
		if ((size_t)w < total)
			break;   /* the socket buffer is full */
	}
	if (c->state == CS_DEAD)
		return;
	if (c->qn == 0 && c->qv != NULL) {
		free(c->qv);
		c->qv = NULL;
		c->qcap = c->qhead = c->qoff = 0;
	}
	conn_after_flush(c);
	if (c->drain_armed && c->qbytes <= c->drain_at && ntws_conn_open(c)) {
		c->drain_armed = 0;
		if (c->hooks != NULL && c->hooks->on_drain != NULL)
			c->hooks->on_drain(c);
	}
}

static void
conn_update_io(struct ntws_conn *c)
{
	int ev;

	if (c->state == CS_DEAD)
		return;
	ev = (c->held && c->state == CS_OPEN ? 0 : EV_READ) |
	    (c->qn > 0 ? EV_WRITE : 0);
	if ((c->io.events & (EV_READ | EV_WRITE)) != ev) {
		ev_io_stop(g.loop, &c->io);
		ev_io_set(&c->io, c->fd, ev);
		if (ev != 0)
			ev_io_start(g.loop, &c->io);
	}
}

void
ntws_conn_flush_all(void)
{
	struct ntws_conn *c;

	while ((c = g.flushq) != NULL) {
		g.flushq = c->flush_next;
		c->flush_queued = 0;
		if (c->state == CS_OPEN && c->input_waiting && !c->held) {
			c->input_waiting = 0;
			ws_read(c);
		}
		if (c->state != CS_DEAD) {
			conn_flush(c);
			conn_update_io(c);
		}
	}
}

/* ---- closing ---- */

static void
begin_closing(struct ntws_conn *c, uint16_t code)
{
	c->close_sent = 1;
	c->close_code = code;
	ntws_metrics_close(code);
	c->state = CS_CLOSING;
	timer_in(c, NTWS_CLOSE_LINGER_S);
	conn_after_flush(c);
}

void
ntws_conn_close(struct ntws_conn *c, uint16_t code, const char *reason)
{
	uint8_t payload[125];
	size_t rlen = reason != NULL ? strlen(reason) : 0;
	struct ntws_buf *b;

	if (c->state == CS_DEAD || c->close_sent)
		return;
	if (rlen > sizeof(payload) - 2)
		rlen = sizeof(payload) - 2;
	payload[0] = (uint8_t)(code >> 8);
	payload[1] = (uint8_t)code;
	if (rlen > 0)
		memcpy(payload + 2, reason, rlen);
	b = ntws_buf_frame(WSLAY_CONNECTION_CLOSE, payload, rlen + 2);
	if (b == NULL || push(c, b) != 0) {
		ntws_buf_unref(b);
		ntws_conn_kill(c);
		return;
	}
	if (c->ws != NULL)
		wslay_event_shutdown_read(c->ws);
	begin_closing(c, code);
	if (c->qn == 1)
		conn_flush(c);
	conn_update_io(c);
}

void
ntws_conn_kill(struct ntws_conn *c)
{
	if (c->state == CS_DEAD)
		return;
	if (!c->close_sent && c->was_open)
		ntws_metrics_close(1006);
	c->state = CS_DEAD;
	ev_io_stop(g.loop, &c->io);
	ev_timer_stop(g.loop, &c->timer);
	close(c->fd);
	c->fd = -1;
	queue_drop_all(c, 0);
	/* Killed from a wslay callback: wslay still runs on its context,
	 * ws_read() frees it once wslay_event_recv() returns. */
	if (c->ws != NULL && !c->in_wslay) {
		wslay_event_context_free(c->ws);
		c->ws = NULL;
	}
	free(c->inbuf);
	c->inbuf = NULL;
	c->dead_next = g.dead;
	g.dead = c;
}

/*
 * A connection killed after it was queued for a flush is still linked
 * in the flush queue: unlink every dead one before any is freed, or the
 * next ntws_conn_flush_all() walks freed memory.
 */
static void
flushq_drop_dead(void)
{
	struct ntws_conn **pp = &g.flushq;

	while (*pp != NULL) {
		if ((*pp)->state == CS_DEAD) {
			(*pp)->flush_queued = 0;
			*pp = (*pp)->flush_next;
		} else
			pp = &(*pp)->flush_next;
	}
}

void
ntws_conn_reap(void)
{
	struct ntws_conn *c;

	if (g.dead != NULL)
		flushq_drop_dead();
	while ((c = g.dead) != NULL) {
		g.dead = c->dead_next;
		if (c->hooks != NULL && c->hooks->on_gone != NULL)
			c->hooks->on_gone(c);
		if (c->prev != NULL)
			c->prev->next = c->next;
		else
			g.all = c->next;
		if (c->next != NULL)
			c->next->prev = c->prev;
		g.n--;
		ntws_m.sockets--;
		free(c);
	}
}

void
ntws_conn_close_all(uint16_t code, const char *reason)
{
	struct ntws_conn *c, *next;

	for (c = g.all; c != NULL; c = next) {
		next = c->next;
		if (c->state == CS_HTTP)
			ntws_conn_kill(c);
		else if (c->state == CS_OPEN)
			ntws_conn_close(c, code, reason);
	}
}

void
ntws_conn_free_all(void)
{
	struct ntws_conn *c;

	for (c = g.all; c != NULL; c = c->next)
		ntws_conn_kill(c);
	g.flushq = NULL;
	ntws_conn_reap();
}

/* ---- the HTTP phase ---- */

void
ntws_conn_reply(struct ntws_conn *c, const char *head, size_t hlen,
    const void *body, size_t blen)
{
	struct ntws_buf *b;

	if (c->state != CS_HTTP)
		return;
	if ((b = ntws_buf_raw(head, hlen)) == NULL || push(c, b) != 0) {
		ntws_buf_unref(b);
		ntws_conn_kill(c);
		return;
	}
	if (blen > 0 && ((b = ntws_buf_raw(body, blen)) == NULL ||
	    push(c, b) != 0)) {
		ntws_buf_unref(b);
		ntws_conn_kill(c);
		return;
	}
	c->close_sent = 1;
	c->state = CS_CLOSING;
	timer_in(c, NTWS_CLOSE_LINGER_S);
	conn_flush(c);
	conn_update_io(c);
}

int
ntws_conn_upgrade(struct ntws_conn *c, const char *resp, size_t len,
    size_t head_len)
{
	struct ntws_buf *b;

	if (c->state != CS_HTTP)
		return -1;
	if ((b = ntws_buf_raw(resp, len)) == NULL || push(c, b) != 0) {
		ntws_buf_unref(b);
		ntws_conn_kill(c);
		return -1;
	}
	c->state = CS_OPEN;
	c->was_open = 1;
	c->opened_at = c->last_rx = c->write_since = ev_now(g.loop);
	timer_in(c, g.cfg->ping_interval);
	/* What follows the head belongs to the WebSocket (wslay). */
	c->inoff = (uint32_t)head_len;
	if (c->inoff >= c->inlen) {
		free(c->inbuf);
		c->inbuf = NULL;
		c->inlen = c->inoff = 0;
	}
	return 0;
}

static void
head_read(struct ntws_conn *c)
{
	ssize_t n;
	size_t want, from;
	char *nb;

	/*
	 * Never hold more than a head's worth: what follows the head stays
	 * in the socket for the WebSocket parser, or is a head too large.
	 */
	want = NTWS_HTTP_MAX_HEAD + 1 - c->inlen;
	if (want > sizeof(g.rbuf))
		want = sizeof(g.rbuf);
	n = recv(c->fd, g.rbuf, want, 0);
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
	memcpy(c->inbuf + c->inlen, g.rbuf, (size_t)n);
	from = c->inlen > 3 ? c->inlen - 3 : 0;
	c->inlen += (uint32_t)n;
	/*
	 * Only the new bytes can end the head: look there before parsing it
	 * all again, or a client sending a byte at a time costs quadratic time.
	 */
	if (memmem(c->inbuf + from, c->inlen - from, "\r\n\r\n", 4) == NULL &&
	    c->inlen < NTWS_HTTP_MAX_HEAD)
		return;
	if (c->hooks != NULL && c->hooks->on_head != NULL)
		c->hooks->on_head(c, c->inbuf, c->inlen);
	if (c->state == CS_HTTP || c->state == CS_DEAD)
		return;   /* more to read, or gone */
	if (c->state == CS_CLOSING) {
		free(c->inbuf);
		c->inbuf = NULL;
		c->inlen = c->inoff = 0;
	} else if (c->inbuf != NULL && !c->held)
		ws_read(c);   /* frames that came with the request */
	if (c->state != CS_DEAD) {
		conn_flush(c);
		conn_update_io(c);
	}
}

/* ---- WebSocket frames in (wslay) ---- */

static ssize_t
ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
    void *user_data)
{
	struct ntws_conn *c = user_data;
	size_t n;
	ssize_t r;

	if (c->inbuf != NULL) {
		n = c->inlen - c->inoff;
		if (n > len)
			n = len;
		memcpy(buf, c->inbuf + c->inoff, n);
		c->inoff += (uint32_t)n;
		if (c->inoff >= c->inlen) {
			free(c->inbuf);
			c->inbuf = NULL;
			c->inlen = c->inoff = 0;
		}
		c->ws_fed += n;
		return (ssize_t)n;
	}
	if (g.read_budget == 0 || c->held) {
		/* Let other connections run; level-triggered io brings us back. */
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (len > g.read_budget)
		len = g.read_budget;
	do
		r = recv(c->fd, buf, len, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		else {
			c->eof = 1;
			wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		}
		return -1;
	}
	if (r == 0) {
		c->eof = 1;
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	g.read_budget -= (size_t)r;
	c->ws_fed += (uint64_t)r;
	c->last_rx = ev_now(g.loop);
	return r;
}

/* wslay's own frames (pong, close replies) join our queue whole. */
static ssize_t
ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
    int flags, void *user_data)
{
	struct ntws_conn *c = user_data;
	struct ntws_buf *b;

	if (c->close_sent)
		return (ssize_t)len;   /* our close went first: drop theirs */
	if ((b = ntws_buf_raw(data, len)) == NULL || push(c, b) != 0) {
		ntws_buf_unref(b);
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

static void
ws_frame_start_cb(wslay_event_context_ptr ctx,
    const struct wslay_event_on_frame_recv_start_arg *arg, void *user_data)
{
	struct ntws_conn *c = user_data;
	uint64_t len = arg->payload_length;

	c->frame_open = 1;
	c->frame_bytes = 2 + 4 + len + (len < 126 ? 0 : len <= 0xffff ? 2 : 8);
	if (arg->opcode < 8)   /* data and continuation frames */
		c->msg_open = !arg->fin;
}

static void
ws_frame_end_cb(wslay_event_context_ptr ctx, void *user_data)
{
	struct ntws_conn *c = user_data;

	c->frame_open = 0;
	c->ws_done += c->frame_bytes;
	c->frame_bytes = 0;
}

static void
ws_msg_cb(wslay_event_context_ptr ctx,
    const struct wslay_event_on_msg_recv_arg *arg, void *user_data)
{
	struct ntws_conn *c = user_data;

	if (c->close_sent)
		return;
	switch (arg->opcode) {
	case WSLAY_TEXT_FRAME:
		ntws_m.client_messages++;
		if (c->hooks != NULL && c->hooks->on_text != NULL)
			c->hooks->on_text(c, arg->msg, arg->msg_length);
		break;
	case WSLAY_BINARY_FRAME:
		ntws_m.client_messages++;
		ntws_conn_close(c, 1003, "binary messages are not accepted");
		break;
	case WSLAY_PONG:
		c->ping_out = 0;
		break;
	case WSLAY_CONNECTION_CLOSE:
		/* A one-byte close payload cannot hold a code (RFC 6455 5.5.1). */
		if (arg->msg_length == 1)
			ntws_conn_close(c, 1002, "protocol error");
		break;
	default:
		break;
	}
}

static const struct wslay_event_callbacks ws_callbacks = {
	ws_recv_cb, ws_send_cb, NULL, ws_frame_start_cb, NULL,
	ws_frame_end_cb, ws_msg_cb,
};

/* Give the bytes that arrived (and arrive) to the WebSocket parser. */
static void
ws_read(struct ntws_conn *c)
{
	int r;

	if (c->ws == NULL) {
		if (wslay_event_context_server_init(&c->ws, &ws_callbacks, c) != 0) {
			ntws_conn_kill(c);
			return;
		}
		wslay_event_config_set_max_recv_msg_length(c->ws,
		    g.cfg->max_message);
		c->ws_fed = c->ws_done = 0;
		c->frame_open = c->msg_open = 0;
	}
	g.read_budget = READ_BUDGET;
	c->in_wslay = 1;
	r = wslay_event_recv(c->ws);
	c->in_wslay = 0;
	if (c->state == CS_DEAD) {
		wslay_event_context_free(c->ws);
		c->ws = NULL;
		return;
	}
	if (c->eof) {
		ntws_conn_kill(c);
		return;
	}
	/*
	 * A frame the parser itself refused (oversized or fragmented control
	 * frame, bad length): wslay queued a close without a code; ours,
	 * with the RFC's 1002, goes instead.
	 */
	if (r != 0 && !c->close_sent)
		ntws_conn_close(c, 1002, "protocol error");
	/* Move wslay's control replies (pong, close) into our queue. */
	if (!c->close_sent && wslay_event_want_write(c->ws))
		wslay_event_send(c->ws);
	/* Replies count against the limit too: a client that sends and never
	 * reads must not grow our queue without bound. */
	if (!c->close_sent && c->qbytes > g.cfg->send_queue_max)
		slow_consumer(c);
	if (!c->close_sent && wslay_event_get_close_sent(c->ws))
		begin_closing(c, wslay_event_get_status_code_sent(c->ws));
	if (c->state == CS_DEAD)
		return;
	if (!c->close_sent && !c->frame_open && !c->msg_open &&
	    c->ws_fed == c->ws_done && c->inbuf == NULL &&
	    !wslay_event_want_write(c->ws)) {
		wslay_event_context_free(c->ws);
		c->ws = NULL;
	}
}

/* After our close: throw away what the peer sends until its EOF. */
static void
closing_read(struct ntws_conn *c)
{
	ssize_t n;

	n = recv(c->fd, g.rbuf, sizeof(g.rbuf), 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR))
		ntws_conn_kill(c);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ntws_conn *c = w->data;

	if (revents & EV_WRITE) {
		conn_flush(c);
		conn_update_io(c);
	}
	if (c->state == CS_DEAD || !(revents & EV_READ))
		return;
	switch (c->state) {
	case CS_HTTP:
		head_read(c);
		break;
	case CS_OPEN:
		if (c->held)
			break;
		ws_read(c);
		if (c->state != CS_DEAD) {
			conn_flush(c);
			conn_update_io(c);
		}
		break;
	case CS_CLOSING:
		closing_read(c);
		break;
	}
}

/* ---- timers: handshake, pings, the write deadline, the linger ---- */

static void
send_ping(struct ntws_conn *c)
{
	struct ntws_buf *b = ntws_buf_frame(WSLAY_PING, NULL, 0);

	if (b == NULL)
		return;
	c->ping_out = 1;
	c->ping_sent = ev_now(g.loop);
	ntws_conn_send(c, b, 0);
}

static void
write_timeout(struct ntws_conn *c)
{
	char peer[80];

	ntws_m.write_timeouts++;
	nt_log_info("conn %llu (%s): nothing written for %.3gs with %zu bytes "
	    "queued, closing", (unsigned long long)c->serial,
	    ntws_conn_peer(c, peer, sizeof(peer)), g.cfg->write_timeout,
	    c->qbytes);
	queue_drop_all(c, 1);
	ntws_conn_close(c, 1013, "write timeout");
}

/* An open connection's timer: the next of its deadlines. */
static void
open_timer(struct ntws_conn *c, ev_tstamp now)
{
	const struct ntws_config *cfg = g.cfg;
	double next = cfg->ping_interval;

	if (c->qn > 0 && now - c->write_since >= cfg->write_timeout) {
		write_timeout(c);
		return;
	}
	if (!c->held && c->ping_out) {
		if (now - c->ping_sent >= cfg->ping_timeout) {
			nt_log_info("conn %llu: no pong within %.3gs, closing",
			    (unsigned long long)c->serial, cfg->ping_timeout);
			ntws_metrics_close(1006);
			c->close_sent = 1;   /* counted: kill must not count again */
			c->close_code = 1006;
			ntws_conn_kill(c);
			return;
		}
		next = c->ping_sent + cfg->ping_timeout - now;
	} else if (!c->held) {
		if (now - c->last_rx >= cfg->ping_interval) {
			send_ping(c);
			if (c->state == CS_DEAD || c->close_sent)
				return;
			next = cfg->ping_timeout;
		} else
			next = cfg->ping_interval - (now - c->last_rx);
	}
	if (c->qn > 0 && c->write_since + cfg->write_timeout - now < next)
		next = c->write_since + cfg->write_timeout - now;
	timer_in(c, next);
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ntws_conn *c = w->data;

	switch (c->state) {
	case CS_HTTP:
		nt_log_debug("conn %llu: handshake timeout",
		    (unsigned long long)c->serial);
		ntws_conn_kill(c);
		break;
	case CS_CLOSING:
		ntws_conn_kill(c);
		break;
	case CS_OPEN:
		open_timer(c, ev_now(loop));
		break;
	}
}
