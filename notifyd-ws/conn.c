/*
 * One client connection: its life, the WebSocket frames in (wslay) and
 * out (our own queue of shared frames), timers, and the close; the HTTP
 * request and the upgrade are in handshake.c. A connection is never freed inside one of its
 * callbacks: ntws_conn_kill() closes it and ntws_conn_reap() frees it
 * after the loop iteration.
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
#include <sys/socket.h>
#include <sys/uio.h>

#include "nt_log.h"
#include "ws.h"

#define READ_BUDGET    (256 * 1024) /* bytes read per wakeup per conn */
#define IOV_MAX_BATCH  64

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_flush(struct ntws_conn *c);
static void conn_update_io(struct ntws_conn *c);
static void flush_later(struct ntws_conn *c);

void
ntws_conn_timer_in(struct ntws_conn *c, double after)
{
	ev_timer_stop(c->srv->loop, &c->timer);
	ev_timer_set(&c->timer, after > 0 ? after : 0.001, 0.);
	ev_timer_start(c->srv->loop, &c->timer);
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
ntws_conn_accept(struct ntws_server *s, int fd, const struct sockaddr *peer)
{
	struct ntws_conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	peer_from(c, peer);
	c->serial = ++s->next_serial;
	c->state = NTWS_CS_HTTP;
	ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
	c->io.data = c;
	ev_io_start(s->loop, &c->io);
	ev_init(&c->timer, conn_timer_cb);
	c->timer.data = c;
	ntws_conn_timer_in(c, s->cfg->handshake_timeout);
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	c->in_all = 1;
	s->nconns_total++;
	s->m.accepted++;
}

/* ---- users ---- */

void
ntws_conn_attach_user(struct ntws_conn *c, const char *name)
{
	struct ntws_server *s = c->srv;
	struct ntws_user *u = ntws_user_find(s, name);
	size_t h, i, n;

	if (u == NULL) {
		n = strlen(name);
		if ((u = calloc(1, sizeof(*u) + n + 1)) == NULL)
			return;
		memcpy(u->name, name, n + 1);
		if (s->nusers + 1 > s->nbuckets) {
			/* Grow the table: rehash every user into twice the buckets. */
			size_t nb = s->nbuckets ? s->nbuckets * 2 : 1024;
			struct ntws_user **nt = calloc(nb, sizeof(*nt)), *x, *nx;
			if (nt != NULL) {
				for (i = 0; i < s->nbuckets; i++)
					for (x = s->users[i]; x != NULL; x = nx) {
						nx = x->hnext;
						h = ntws_user_hash(x->name) & (nb - 1);
						x->hnext = nt[h];
						nt[h] = x;
					}
				free(s->users);
				s->users = nt;
				s->nbuckets = nb;
			}
		}
		if (s->nbuckets == 0) {
			free(u);
			return;
		}
		h = ntws_user_hash(u->name) & (s->nbuckets - 1);
		u->hnext = s->users[h];
		s->users[h] = u;
		s->nusers++;
		ntws_redis_presence(s, u->name, 1);
	}
	c->user = u;
	c->user_next = u->conns;
	c->user_prev = NULL;
	if (u->conns != NULL)
		u->conns->user_prev = c;
	u->conns = c;
	u->nconns++;
}

static void
user_detach(struct ntws_conn *c)
{
	struct ntws_server *s = c->srv;
	struct ntws_user *u = c->user, **pp;

	if (u == NULL)
		return;
	if (c->user_prev != NULL)
		c->user_prev->user_next = c->user_next;
	else
		u->conns = c->user_next;
	if (c->user_next != NULL)
		c->user_next->user_prev = c->user_prev;
	c->user = NULL;
	if (--u->nconns > 0)
		return;
	ntws_redis_presence(s, u->name, 0);
	pp = &s->users[ntws_user_hash(u->name) & (s->nbuckets - 1)];
	for (; *pp != NULL; pp = &(*pp)->hnext)
		if (*pp == u) {
			*pp = u->hnext;
			break;
		}
	s->nusers--;
	free(u);
}

/* ---- outbound queue ---- */

static void
queue_drop_all(struct ntws_conn *c, int keep_partial_head)
{
	struct ntws_server *s = c->srv;
	uint32_t keep = keep_partial_head && c->qn > 0 && c->qoff > 0 ? 1 : 0;
	struct ntws_buf *b;

	while (c->qn > keep) {
		/* Drop from the tail: undelivered messages stay in Redis. */
		b = c->qv[(c->qhead + c->qn - 1) % c->qcap];
		c->qbytes -= b->len;
		s->queued_bytes -= b->len;
		ntws_buf_unref(b);
		c->qn--;
	}
	if (c->qn == 0) {
		if (c->qbytes != 0) {
			s->queued_bytes -= c->qbytes;
			c->qbytes = 0;
		}
		free(c->qv);
		c->qv = NULL;
		c->qcap = c->qhead = c->qoff = 0;
	}
}

int
ntws_conn_push(struct ntws_conn *c, struct ntws_buf *b)
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
	c->qv[(c->qhead + c->qn) % c->qcap] = b;
	c->qn++;
	c->qbytes += b->len;
	c->srv->queued_bytes += b->len;
	return 0;
}

int
ntws_conn_queue_has(const struct ntws_conn *c, const char *id)
{
	uint32_t i;
	const struct ntws_buf *b;

	for (i = 0; i < c->qn; i++) {
		b = c->qv[(c->qhead + i) % c->qcap];
		if (b->id != NULL && strcmp(b->id, id) == 0)
			return 1;
	}
	return 0;
}

static void
slow_consumer(struct ntws_conn *c)
{
	char peer[80];

	c->srv->m.slow_consumers++;
	nt_log_info("conn %llu (%s): send queue over %zu bytes, closing",
	    (unsigned long long)c->serial, ntws_conn_peer(c, peer, sizeof(peer)),
	    c->srv->cfg->send_queue_max);
	queue_drop_all(c, 1);
	ntws_conn_close(c, 1013, "slow consumer");
}

/*
 * Queue b (the caller's reference moves to the queue) and try to write
 * at once. Notifications beyond --send-queue-max close the connection,
 * which frees c->rp: callers that hold it check it afterwards.
 */
void
ntws_conn_enqueue(struct ntws_conn *c, struct ntws_buf *b)
{
	if (c->state == NTWS_CS_DEAD || c->close_sent) {
		ntws_buf_unref(b);
		return;
	}
	/* One message alone over the limit still goes into an empty queue:
	 * refusing it would close its user on every connect. */
	if (b->notification && c->qbytes > 0 &&
	    c->qbytes + b->len > c->srv->cfg->send_queue_max) {
		ntws_buf_unref(b);
		slow_consumer(c);
		return;
	}
	if (ntws_conn_push(c, b) != 0) {
		ntws_buf_unref(b);
		ntws_conn_kill(c);
		return;
	}
	flush_later(c);
}

/*
 * Write at the end of the loop iteration rather than at once: the
 * messages of one Redis read (a pipelined burst) then leave in one
 * writev per connection instead of one per message.
 */
static void
flush_later(struct ntws_conn *c)
{
	struct ntws_server *s = c->srv;

	if (c->flush_queued || c->state == NTWS_CS_DEAD)
		return;
	c->flush_queued = 1;
	c->flush_next = s->flushq;
	s->flushq = c;
}

void
ntws_conn_flush_all(struct ntws_server *s)
{
	struct ntws_conn *c;

	while ((c = s->flushq) != NULL) {
		s->flushq = c->flush_next;
		c->flush_queued = 0;
		if (c->state != NTWS_CS_DEAD) {
			conn_flush(c);
			conn_update_io(c);
		}
	}
}

void
ntws_conn_send_text(struct ntws_conn *c, const char *json, size_t len)
{
	struct ntws_buf *b = ntws_buf_frame(WSLAY_TEXT_FRAME, json, len, NULL);

	if (b != NULL) {
		b->text = 1;
		ntws_conn_enqueue(c, b);
	}
}

static void
written(struct ntws_conn *c, struct ntws_buf *b)
{
	struct ntws_server *s = c->srv;

	if (b->text) {
		s->m.messages_out++;
		s->m.replies++;
	}
	if (b->notification) {
		s->m.deliveries++;
		s->m.messages_out++;
		if (b->ts_us > 0)
			ntws_metrics_latency(&s->m,
			    (double)(ntws_now_us() - b->ts_us) / 1e6);
		if (b->targeted && b->id != NULL && !c->ack_mode &&
		    c->user != NULL)
			ntws_redis_hdel(s, c->user->name, b->id);
		/*
		 * A read of the store is pending (a replay restarted after a
		 * lost subscription): it may have run before this HDEL and
		 * still list the id, which is no longer in the queue.
		 */
		if (b->targeted && b->id != NULL && c->rp != NULL &&
		    !c->rp->loaded)
			ntws_seen_add(c, b->id);
	}
}

static void
conn_after_flush(struct ntws_conn *c)
{
	if (c->qn == 0 && c->close_sent && c->state == NTWS_CS_CLOSING &&
	    !c->wr_shut) {
		/* Our last byte is out: half-close, wait for the peer's EOF. */
		shutdown(c->fd, SHUT_WR);
		c->wr_shut = 1;
	}
}

static void
conn_flush(struct ntws_conn *c)
{
	struct ntws_server *s = c->srv;
	struct iovec iov[IOV_MAX_BATCH];
	struct ntws_buf *b;
	uint32_t i, n;
	ssize_t w;
	size_t left, total;

	while (c->qn > 0 && c->state != NTWS_CS_DEAD) {
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
		left = (size_t)w;
		while (left > 0 && c->qn > 0) {
			b = c->qv[c->qhead];
			if (left < b->len - c->qoff) {
				c->qoff += (uint32_t)left;
				c->qbytes -= left;
				s->queued_bytes -= left;
				break;
			}
			left -= b->len - c->qoff;
			c->qbytes -= b->len - c->qoff;
			s->queued_bytes -= b->len - c->qoff;
			c->qoff = 0;
			c->qhead = (c->qhead + 1) % c->qcap;
			c->qn--;
			written(c, b);
			ntws_buf_unref(b);
		}
		if ((size_t)w < total)
			break;   /* the socket buffer is full */
	}
	if (c->qn == 0 && c->qv != NULL) {
		free(c->qv);
		c->qv = NULL;
		c->qcap = c->qhead = c->qoff = 0;
	}
	conn_after_flush(c);
	/* Room again: the offline replay goes on (queued for this round). */
	if (c->rp != NULL && c->rp->loaded && c->state == NTWS_CS_REPLAY)
		ntws_replay_pump(c);
}

void
ntws_conn_flush_now(struct ntws_conn *c)
{
	conn_flush(c);
	conn_update_io(c);
}

static void
conn_update_io(struct ntws_conn *c)
{
	int ev;

	if (c->state == NTWS_CS_DEAD)
		return;
	ev = EV_READ | (c->qn > 0 ? EV_WRITE : 0);
	if ((c->io.events & (EV_READ | EV_WRITE)) != ev) {
		ev_io_stop(c->srv->loop, &c->io);
		ev_io_set(&c->io, c->fd, ev);
		ev_io_start(c->srv->loop, &c->io);
	}
}

/* ---- closing ---- */

static void
begin_closing(struct ntws_conn *c, uint16_t code)
{
	c->close_sent = 1;
	c->close_code = code;
	ntws_metrics_close(&c->srv->m, code);
	if (c->state == NTWS_CS_REPLAY || c->state == NTWS_CS_OPEN ||
	    c->state == NTWS_CS_HTTP)
		c->state = NTWS_CS_CLOSING;
	ntws_replay_free(c);
	ntws_conn_timer_in(c, NTWS_CLOSE_LINGER_S);
	conn_after_flush(c);
}

/*
 * Send a close frame after what is queued and stop taking messages.
 * The connection stays in its user's list (for the HDEL of what is
 * still being flushed) but receives nothing new.
 */
void
ntws_conn_close(struct ntws_conn *c, uint16_t code, const char *reason)
{
	uint8_t payload[125];
	size_t rlen = reason != NULL ? strlen(reason) : 0;
	struct ntws_buf *b;

	if (c->state == NTWS_CS_DEAD || c->close_sent)
		return;
	if (rlen > sizeof(payload) - 2)
		rlen = sizeof(payload) - 2;
	payload[0] = (uint8_t)(code >> 8);
	payload[1] = (uint8_t)code;
	memcpy(payload + 2, reason, rlen);
	b = ntws_buf_frame(WSLAY_CONNECTION_CLOSE, payload, rlen + 2, NULL);
	if (b == NULL || ntws_conn_push(c, b) != 0) {
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

/* The counterpart of the connect line of handshake.c, at the very end. */
static void
log_disconnect(const struct ntws_conn *c)
{
	char peer[80];

	nt_log_info("conn %llu (%s): user %s disconnected: code %u, %.1fs",
	    (unsigned long long)c->serial, ntws_conn_peer(c, peer, sizeof(peer)),
	    c->user->name, c->close_sent ? c->close_code : 1006,
	    ev_now(c->srv->loop) - c->authed_at);
}

void
ntws_conn_kill(struct ntws_conn *c)
{
	struct ntws_server *s = c->srv;

	if (c->state == NTWS_CS_DEAD)
		return;
	if (!c->close_sent && (c->state == NTWS_CS_OPEN ||
	    c->state == NTWS_CS_REPLAY))
		ntws_metrics_close(&s->m, 1006);
	if (c->user != NULL)
		log_disconnect(c);
	if (c->authed) {
		s->nconns_ws--;
		c->authed = 0;
	}
	c->state = NTWS_CS_DEAD;
	ev_io_stop(s->loop, &c->io);
	ev_timer_stop(s->loop, &c->timer);
	close(c->fd);
	c->fd = -1;
	queue_drop_all(c, 0);
	user_detach(c);
	/* Killed from a wslay callback: wslay still runs on its context,
	 * ntws_conn_ws_read() frees it once wslay_event_recv() returns. */
	if (c->ws != NULL && !c->in_wslay) {
		wslay_event_context_free(c->ws);
		c->ws = NULL;
	}
	free(c->inbuf);
	c->inbuf = NULL;
	ntws_replay_free(c);
	ntws_seen_free(c);
	ntws_channels_free(c);
	c->dead_next = s->dead;
	s->dead = c;
}

/* Free the connections killed during this iteration (ev_prepare). */
void
ntws_conn_reap(struct ntws_server *s)
{
	struct ntws_conn **pp = &s->dead, *c;

	while ((c = *pp) != NULL) {
		if (c->redis_pending > 0) {
			/* A Redis reply still names it: free after the reply. */
			pp = &c->dead_next;
			continue;
		}
		*pp = c->dead_next;
		if (c->in_all) {
			if (c->prev != NULL)
				c->prev->next = c->next;
			else
				s->conns = c->next;
			if (c->next != NULL)
				c->next->prev = c->prev;
			s->nconns_total--;
		}
		free(c);
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
	if (c->read_budget == 0) {
		/* Let other connections run; level-triggered io brings us back. */
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (len > c->read_budget)
		len = c->read_budget;
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
	c->read_budget -= (size_t)r;
	c->ws_fed += (uint64_t)r;
	c->last_rx = ev_now(c->srv->loop);
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
	if ((b = ntws_buf_raw(data, len)) == NULL || ntws_conn_push(c, b) != 0) {
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
		c->srv->m.client_messages++;
		ntws_client_message(c, arg->msg, arg->msg_length);
		break;
	case WSLAY_BINARY_FRAME:
		c->srv->m.client_messages++;
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

void
ntws_conn_ws_read(struct ntws_conn *c)
{
	struct ntws_server *s = c->srv;
	int r;

	if (c->ws == NULL) {
		if (wslay_event_context_server_init(&c->ws, &ws_callbacks, c) != 0) {
			ntws_conn_kill(c);
			return;
		}
		wslay_event_config_set_max_recv_msg_length(c->ws,
		    s->cfg->max_message);
		c->ws_fed = c->ws_done = 0;
		c->frame_open = c->msg_open = 0;
	}
	c->read_budget = READ_BUDGET;
	c->in_wslay = 1;
	r = wslay_event_recv(c->ws);
	c->in_wslay = 0;
	if (c->state == NTWS_CS_DEAD) {
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
	if (!c->close_sent && c->qbytes > s->cfg->send_queue_max)
		slow_consumer(c);
	if (!c->close_sent && wslay_event_get_close_sent(c->ws)) {
		uint16_t code = wslay_event_get_status_code_sent(c->ws);
		begin_closing(c, code);
	}
	if (!c->close_sent && !c->frame_open && !c->msg_open &&
	    c->ws_fed == c->ws_done && c->inbuf == NULL &&
	    !wslay_event_want_write(c->ws)) {
		wslay_event_context_free(c->ws);
		c->ws = NULL;
	}
	conn_flush(c);
	conn_update_io(c);
}

/* After our close: throw away what the peer sends until its EOF. */
static void
closing_read(struct ntws_conn *c)
{
	struct ntws_server *s = c->srv;
	ssize_t n;

	n = recv(c->fd, s->rbuf, s->rbuf_len, 0);
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
	if (c->state == NTWS_CS_DEAD || !(revents & EV_READ))
		return;
	switch (c->state) {
	case NTWS_CS_HTTP:
		ntws_http_read(c);
		break;
	case NTWS_CS_REPLAY:
	case NTWS_CS_OPEN:
		ntws_conn_ws_read(c);
		break;
	case NTWS_CS_CLOSING:
		closing_read(c);
		break;
	}
}

static void
send_ping(struct ntws_conn *c)
{
	struct ntws_buf *b = ntws_buf_frame(WSLAY_PING, NULL, 0, NULL);

	if (b == NULL)
		return;
	c->ping_out = 1;
	c->ping_sent = ev_now(c->srv->loop);
	ntws_conn_enqueue(c, b);
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ntws_conn *c = w->data;
	const struct ntws_config *cfg = c->srv->cfg;
	ev_tstamp now = ev_now(loop), idle;

	switch (c->state) {
	case NTWS_CS_HTTP:
		nt_log_debug("conn %llu: handshake timeout",
		    (unsigned long long)c->serial);
		ntws_conn_kill(c);
		return;
	case NTWS_CS_CLOSING:
		ntws_conn_kill(c);
		return;
	case NTWS_CS_REPLAY:
	case NTWS_CS_OPEN:
		break;
	default:
		return;
	}
	if (c->seen != NULL && c->srv->r.hb_seen >= c->fence)
		ntws_seen_free(c);
	if (c->ping_out) {
		if (now - c->ping_sent >= cfg->ping_timeout) {
			nt_log_info("conn %llu: no pong within %.3gs, closing",
			    (unsigned long long)c->serial, cfg->ping_timeout);
			ntws_metrics_close(&c->srv->m, 1006);
			c->close_sent = 1;   /* counted: kill must not count again */
			c->close_code = 1006;
			ntws_conn_kill(c);
			return;
		}
		ntws_conn_timer_in(c, c->ping_sent + cfg->ping_timeout - now);
		return;
	}
	idle = now - c->last_rx;
	if (idle >= cfg->ping_interval) {
		send_ping(c);
		ntws_conn_timer_in(c, cfg->ping_timeout);
		return;
	}
	ntws_conn_timer_in(c, cfg->ping_interval - idle);
}
