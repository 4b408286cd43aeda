/*
 * Delivery: each connection's position in its user's log, live messages,
 * catch-up reads, read marks, channels and client requests; see
 * deliver.h and notifyd(7).
 *
 * The rule that makes it exactly once and in order: a session has a
 * cursor, the last position of its user's log it queued. A live
 * targeted message at cursor + 1 is queued and moves the cursor; at or
 * below it, it is a copy of what the session has (dropped); above
 * cursor + 1 some position did not arrive live (the subscription lost
 * it, or the session skipped it): the session goes to CATCH-UP, takes
 * no live messages, and reads the log after its cursor, a page at a
 * time, until it reaches the page's end of the log and every position
 * that came live while the page was read; then it takes live messages
 * again. A session starts in catch-up (registered before its first
 * read, so that nothing falls between), and every session goes back to
 * it when the live feed cannot be trusted.
 *
 * Memory stays bounded: a page is at most PAGE_COUNT messages and
 * page_budget bytes, a session asks for its next page only once its
 * send queue fell under low_water, at most READS_MAX reads are in
 * flight (the others wait in a FIFO), and past --max-queued-bytes live
 * messages are not queued: the session catches up from the log later.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "deliver.h"
#include "grants.h"
#include "metrics.h"
#include "nt_log.h"
#include "nt_msg.h"
#include "nt_userlog.h"
#include "nt_uuid.h"
#include "proto.h"
#include "users.h"

#define PAGE_COUNT     100            /* messages per page read */
#define PAGE_BYTES_MAX (256 * 1024)   /* reply bytes per page read */
#define READS_MAX      16             /* page reads in flight */
#define ACKS_MAX       64             /* acked ids waiting, per user */
#define EXPIRY_SWEEP_S 1.0            /* at most one expiry sweep a second */

enum { S_CATCHUP = 0, S_LIVE };

/*
 * One per connection, so kept small: what a page read needs lives in its
 * struct read_call, the FIFO of reads waiting is an array in d, and
 * broadcasts find sessions through the user table. The flags are bits
 * so that the token's expiry fits beside them: 64 bytes in all.
 */
struct ntws_sess {
	struct ntws_conn *conn;          /* NULL once gone */
	struct ntws_user *user;          /* NULL once gone */
	struct ntws_sess *unext;         /* the user's sessions */
	int64_t           cursor;        /* last position queued */
	struct sess_chans *chans;        /* NULL: no channels, no grants */
	char             *since;         /* resume after, until the first page */
	uint8_t           state : 1;
	uint8_t           reading : 1;   /* a page read in flight */
	uint8_t           waiting : 1;   /* in the FIFO */
	uint8_t           started : 1;   /* its first page is in */
	uint8_t           ack_mode : 1;
	uint8_t           gone : 1;      /* its connection is gone */
	/* Close with 4002 then (seconds since the epoch, to 2106); 0: never. */
	uint32_t          close_at;
};

/* 56 bytes is a 64-byte malloc chunk; one byte more takes 80. */
_Static_assert(sizeof(struct ntws_sess) <= 56,
    "a session is one per connection: keep it small");

/*
 * What a session has to do with channels, apart because few sessions
 * have any: the channels it subscribed to, and the private ones its
 * token opens (grants.h).
 */
struct sess_chans {
	char             *grants;        /* NULL: none */
	uint16_t          n;
	char             *names[];       /* n subscribed channel names */
};

/* A page read in flight: at most READS_MAX, so taken from d.reads. */
struct read_call {
	struct ntws_sess *s;
	struct read_call *free_next;
	uint32_t          feed;          /* feed generation when sent... */
	uint32_t          live;          /* ...the user's live_gen... */
	uint32_t          suspect;       /* ...and suspect_gen */
};

/* What a user has read and Redis has not been told yet (see marks). */
struct ntws_marks {
	int64_t           mark_pos;       /* highest position read */
	int64_t           mark_sent;      /* highest one Redis has taken */
	char            **acks;           /* ring of acknowledged ids */
	struct ntws_user *dirty_next, *dirty_prev;
	uint16_t          ack_head, nacks;
	uint16_t          marks_inflight; /* mark commands unanswered */
	uint8_t           dirty;          /* has marks to write */
	uint8_t           parked;         /* dirty, but off the list while
	                                     its marks are in flight */
	uint8_t           probing;        /* reading the epoch for a mark */
};

static struct {
	struct ev_loop           *loop;
	const struct ntws_config *cfg;
	struct ntws_sess        **wq;           /* ring: waiting for a read */
	size_t                    wq_head, wq_n, wq_cap;
	struct read_call          reads[READS_MAX];
	struct read_call         *reads_free;
	struct ntws_user         *dirty;        /* users with marks to write */
	uint32_t                  parked;       /* dirty users off that list */
	uint32_t                  inflight;     /* page reads */
	uint32_t                  marks_inflight;
	size_t                    page_budget, low_water;
	ev_tstamp                 refused_logged;
	ev_timer                  expiry;       /* the next token expiry sweep */
	uint32_t                  next_close;   /* its time; 0: none waits */
	ev_tstamp                 last_sweep;
} d;

static void read_next(struct ntws_sess *s);

/* ---- sessions ---- */

static void
sess_free(struct ntws_sess *s)
{
	uint16_t i;

	if (s->chans != NULL) {
		for (i = 0; i < s->chans->n; i++)
			free(s->chans->names[i]);
		free(s->chans->grants);
		free(s->chans);
	}
	free(s->since);
	free(s);
}

static int
sess_open(const struct ntws_sess *s)
{
	return s->conn != NULL && ntws_conn_open(s->conn);
}

/* Leave live delivery: read the log from the cursor on. */
static void
start_catchup(struct ntws_sess *s)
{
	if (s->state == S_LIVE) {
		s->state = S_CATCHUP;
		ntws_m.catchups++;
	}
	read_next(s);
}

/* ---- the log's epoch ---- */

#define EPOCH_TEXT_MAX 24   /* 20 digits at most, NUL */

/*
 * The epoch text[] as a number: "0" (no log), or digits without a
 * leading zero that fit (the text a number prints back to). 0, or -1.
 */
static int
epoch_parse(const char *text, uint64_t *e)
{
	size_t i, n = strlen(text);
	uint64_t v = 0;

	if (strcmp(text, "0") == 0) {
		*e = NTWS_EPOCH_NONE;
		return 0;
	}
	if (n == 0 || n > 19 || text[0] == '0')
		return -1;
	for (i = 0; i < n; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(text[i] - '0');
	}
	*e = v;
	return 0;
}

/* e as the text Redis knows: "" when unknown, "0" for no log. */
static const char *
epoch_text(uint64_t e, char buf[EPOCH_TEXT_MAX])
{
	if (e == NTWS_EPOCH_UNKNOWN)
		return "";
	if (e == NTWS_EPOCH_NONE)
		return "0";
	snprintf(buf, EPOCH_TEXT_MAX, "%llu", (unsigned long long)e);
	return buf;
}

/*
 * A read says the log is of epoch e. From "unknown" or "no log" this is
 * just learning it (positions taken live since "no log" are of the log
 * that then appeared). Any other change means the log was replaced
 * (expired, lost, deleted): positions of the old one mean nothing in
 * the new one, so every session starts again from the new one's start.
 * reader is the session whose page said so, or NULL.
 */
static void
epoch_seen(struct ntws_user *u, const char *text, struct ntws_sess *reader)
{
	struct ntws_sess *t, *next;
	char was[EPOCH_TEXT_MAX];
	uint64_t e;

	if (epoch_parse(text, &e) != 0 || e == u->epoch)
		return;
	if (u->epoch == NTWS_EPOCH_UNKNOWN || u->epoch == NTWS_EPOCH_NONE) {
		u->epoch = e;
		return;
	}
	nt_log_info("user %s: log replaced (epoch %s, now %s): reading it "
	    "again from its start", u->name, epoch_text(u->epoch, was), text);
	u->epoch = e;
	u->epoch_gen++;
	u->top_seq = u->top_ms = 0;
	if (u->marks != NULL)
		u->marks->mark_pos = u->marks->mark_sent = 0;
	for (t = u->sessions; t != NULL; t = next) {
		next = t->unext;
		t->cursor = 0;
		/* The reader goes on with the page it holds, of the new log. */
		if (t->started && t != reader)
			start_catchup(t);
	}
}

/* When the message id[0..len) was made (its UUIDv7 time), or 0. */
static uint64_t
id_ms(const char *id, size_t len)
{
	char text[NT_UUID_STRLEN + 1];
	uint64_t ms;

	if (id == NULL || len != NT_UUID_STRLEN)
		return 0;
	memcpy(text, id, len);
	text[len] = '\0';
	return nt_uuid7_time_ms(text, &ms) == 0 ? ms : 0;
}

/* Remember seq, made at ms, as the highest position known of the log. */
static void
top_seen(struct ntws_user *u, int64_t seq, uint64_t ms)
{
	if (seq > u->top_seq) {
		u->top_seq = seq;
		u->top_ms = ms;
	}
}

/* ---- page reads ---- */

/*
 * Put s at the end of the FIFO of reads waiting for a slot: a ring that
 * doubles when full and is freed when empty, so that idle sessions cost
 * nothing here. 0, or -1 when out of memory.
 */
static int
wait_push(struct ntws_sess *s)
{
	struct ntws_sess **nv;
	size_t ncap, i;

	if (d.wq_n == d.wq_cap) {
		ncap = d.wq_cap > 0 ? d.wq_cap * 2 : 64;
		if ((nv = malloc(ncap * sizeof(*nv))) == NULL)
			return -1;
		for (i = 0; i < d.wq_n; i++)
			nv[i] = d.wq[(d.wq_head + i) % d.wq_cap];
		free(d.wq);
		d.wq = nv;
		d.wq_cap = ncap;
		d.wq_head = 0;
	}
	d.wq[(d.wq_head + d.wq_n) % d.wq_cap] = s;
	d.wq_n++;
	s->waiting = 1;
	ntws_m.page_reads_waiting++;
	return 0;
}

static struct ntws_sess *
wait_pop(void)
{
	struct ntws_sess *s;

	if (d.wq_n == 0)
		return NULL;
	s = d.wq[d.wq_head];
	d.wq_head = (d.wq_head + 1) % d.wq_cap;
	if (--d.wq_n == 0) {
		free(d.wq);
		d.wq = NULL;
		d.wq_head = d.wq_cap = 0;
	}
	s->waiting = 0;
	ntws_m.page_reads_waiting--;
	return s;
}

/* Bytes held for sockets plus the replies reserved: --max-queued-bytes. */
static size_t
held_bytes(void)
{
	return ntws_buf_bytes() + (size_t)ntws_m.page_bytes;
}

static int
slot_free(void)
{
	if (d.inflight >= READS_MAX)
		return 0;
	/* One read always goes: with nothing in flight it is the way on. */
	return d.inflight == 0 ||
	    held_bytes() + d.page_budget <= d.cfg->max_queued_bytes;
}

static void page_cb(const redisReply *r, void *arg);

static void
send_read(struct ntws_sess *s)
{
	struct ntws_user *u = s->user;
	struct read_call *q = d.reads_free;   /* never NULL: slot_free() */
	const char *mode = "after", *arg, *epoch;
	char pos[24], ebuf[EPOCH_TEXT_MAX];

	epoch = epoch_text(u->epoch, ebuf);
	if (!s->started) {
		mode = s->since != NULL ? "since" : "unread";
		arg = s->since;
		epoch = "";
	} else {
		snprintf(pos, sizeof(pos), "%lld", (long long)s->cursor);
		arg = pos;
	}
	if (ntws_rds_read_page(u->name, mode, arg, PAGE_COUNT,
	    (long long)d.page_budget, epoch, page_cb, q) != 0)
		return;   /* Redis away: on_ready asks again */
	d.reads_free = q->free_next;
	q->s = s;
	q->feed = (uint32_t)ntws_rds_feed_gen();
	q->live = u->live_gen;
	q->suspect = u->suspect_gen;
	s->reading = 1;
	d.inflight++;
	ntws_m.page_reads_inflight++;
	ntws_m.page_bytes += d.page_budget;
}

/* Whether s should read a page now. */
static int
wants_read(const struct ntws_sess *s)
{
	return s->state == S_CATCHUP && !s->reading && !s->waiting &&
	    !s->gone && sess_open(s) && ntws_rds_ready();
}

/* Read the next page of s's log when it is time, or wait for it. */
static void
read_next(struct ntws_sess *s)
{
	if (!wants_read(s))
		return;
	if (ntws_conn_queued(s->conn) > d.low_water) {
		ntws_conn_watch_drain(s->conn, d.low_water);
		return;
	}
	if (d.wq_n == 0 && slot_free())
		send_read(s);
	else if (wait_push(s) != 0)
		ntws_conn_close(s->conn, 1011, "out of memory");
}

/*
 * The position of a message of the log: the append script adds "seq" as
 * its last member, so it is read from the end; anything else is parsed.
 */
static int64_t
msg_seq(const char *m, size_t len)
{
	json_t *obj, *v;
	int64_t seq = 0;
	size_t end = len - 1, i;

	if (len > 8 && m[end] == '}') {
		for (i = end; i > 0 && m[i - 1] >= '0' && m[i - 1] <= '9'; i--)
			;
		if (i < end && end - i <= 18 && i >= 6 &&
		    memcmp(m + i - 6, "\"seq\":", 6) == 0) {
			for (; i < end; i++)
				seq = seq * 10 + (m[i] - '0');
			return seq;
		}
	}
	obj = json_loadb(m, len, 0, NULL);
	v = json_object_get(obj, "seq");
	seq = json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
	json_decref(obj);
	return seq;
}

/* The id of a message of the log: its first member, as notifyd writes. */
static const char *
msg_id(const char *m, size_t len, size_t *idlen)
{
	const char *end;

	if (len < 8 || memcmp(m, "{\"id\":\"", 7) != 0 ||
	    (end = memchr(m + 7, '"', len - 7)) == NULL)
		return NULL;
	*idlen = (size_t)(end - m - 7);
	return m + 7;
}

/* Queue the messages of a page after s's cursor, in order. */
static void
queue_page(struct ntws_sess *s, const struct nt_userlog_page *page)
{
	struct ntws_user *u = s->user;
	const redisReply *m;
	struct ntws_buf *b;
	const char *id;
	size_t i, idlen = 0;
	int64_t seq;

	for (i = 0; i < page->n && sess_open(s); i++) {
		m = page->msgs[i];
		if ((seq = msg_seq(m->str, m->len)) <= s->cursor)
			continue;
		if ((b = ntws_buf_frame(WSLAY_TEXT_FRAME, m->str, m->len)) == NULL)
			break;
		b->kind = NTWS_BUF_NOTE;
		b->seq = seq;
		b->epoch_gen = u->epoch_gen;
		/* Bounded by the page budget, not by --send-queue-max. */
		if (ntws_conn_send(s->conn, b, 1) != NTWS_SEND_QUEUED)
			break;
		s->cursor = seq;
		ntws_m.replayed++;
	}
	if (page->n > 0) {
		m = page->msgs[page->n - 1];
		id = msg_id(m->str, m->len, &idlen);
		top_seen(u, msg_seq(m->str, m->len), id_ms(id, idlen));
	}
}

static void
send_resume(struct ntws_sess *s, int recovered)
{
	size_t len;
	char *text = ntws_proto_resume(s->since, recovered, &len);

	if (recovered)
		ntws_m.resumes_recovered++;
	else
		ntws_m.resumes_lost++;
	if (text != NULL) {
		ntws_conn_send_reply(s->conn, text, len);
		free(text);
	}
}

/*
 * After a page: live from here? Only when the session reached the end
 * of the log as it was read, the feed stayed whole since the read was
 * sent (what was published after it will come live), and whatever came
 * live while it was read is already in the queue. A user's messages
 * come live in position order, so the last one is the highest; one that
 * looked like a replaced log needs a read that sees the new log.
 */
static int
caught_up(const struct ntws_sess *s, const struct read_call *q,
    const struct nt_userlog_page *page)
{
	const struct ntws_user *u = s->user;

	return s->cursor >= page->last &&
	    q->feed == (uint32_t)ntws_rds_feed_gen() && ntws_rds_ready() &&
	    (q->live == u->live_gen || s->cursor >= u->live_last) &&
	    q->suspect == u->suspect_gen;
}

static void
page_cb(const redisReply *r, void *arg)
{
	struct read_call *q = arg, sent = *q;
	struct ntws_sess *s = q->s;
	struct nt_userlog_page page;
	struct ntws_user *u;
	char err[160];

	q->s = NULL;
	q->free_next = d.reads_free;
	d.reads_free = q;
	s->reading = 0;
	d.inflight--;
	ntws_m.page_reads_inflight--;
	ntws_m.page_bytes -= d.page_budget;
	if (s->gone) {
		if (!s->waiting)
			sess_free(s);
		return;
	}
	if (r == NULL || !sess_open(s))
		return;   /* the command connection was lost: on_ready again */
	u = s->user;
	if (nt_userlog_page_parse(r, &page, err, sizeof(err)) != 0) {
		nt_log_warn("user %s: log read failed: %s", u->name, err);
		ntws_conn_close(s->conn, 1011, "log read failed");
		return;
	}
	ntws_m.pages_read++;
	epoch_seen(u, page.epoch, s);
	if (!s->started) {
		s->started = 1;
		s->cursor = 0;   /* the page starts where the client asked */
		if (s->since != NULL) {
			send_resume(s, page.found);
			free(s->since);
			s->since = NULL;
		}
		ntws_conn_hold_input(s->conn, 0);
	}
	queue_page(s, &page);
	if (page.end > s->cursor)
		s->cursor = page.end;
	if (!sess_open(s))
		return;
	if (caught_up(s, &sent, &page))
		s->state = S_LIVE;
	else
		read_next(s);
}

/* ---- live messages ---- */

struct live {
	const char      *json;
	size_t           len;
	int64_t          ts_us, seq;
	struct ntws_buf *b;       /* framed on first use */
};

static struct ntws_buf *
live_buf(struct live *l, uint32_t epoch_gen)
{
	if (l->b == NULL &&
	    (l->b = ntws_buf_frame(WSLAY_TEXT_FRAME, l->json, l->len)) != NULL) {
		l->b->kind = NTWS_BUF_NOTE;
		l->b->ts_us = l->ts_us;
		l->b->seq = l->seq;
		l->b->epoch_gen = epoch_gen;
	}
	return l->b;
}

static int
subscribed(const struct ntws_sess *s, const char *channel)
{
	uint16_t i;

	if (s->chans != NULL)
		for (i = 0; i < s->chans->n; i++)
			if (strcmp(s->chans->names[i], channel) == 0)
				return 1;
	return 0;
}

struct bcast {
	struct live *l;
	const char  *channel;
};

/* Every session is in its user's list: the table walk finds them all. */
static void
user_broadcast(struct ntws_user *u, void *arg)
{
	struct bcast *bc = arg;
	struct ntws_sess *t;
	struct ntws_buf *b;

	for (t = u->sessions; t != NULL; t = t->unext) {
		/* A resuming client gets its resume frame first. */
		if (!sess_open(t) || t->since != NULL || (bc->channel != NULL &&
		    !subscribed(t, bc->channel)))
			continue;
		if ((b = live_buf(bc->l, 0)) == NULL)
			return;
		ntws_conn_send(t->conn, ntws_buf_ref(b), 0);
	}
}

static void
live_broadcast(struct live *l, const char *channel)
{
	struct bcast bc = { l, channel };

	ntws_users_each(user_broadcast, &bc);
}

/* A targeted message from a sender that predates the log: live only. */
static void
live_unordered(struct ntws_user *u, struct live *l)
{
	struct ntws_sess *t;
	struct ntws_buf *b;

	for (t = u->sessions; t != NULL; t = t->unext) {
		if (!sess_open(t) || !t->started)
			continue;
		if ((b = live_buf(l, 0)) == NULL)
			return;
		ntws_conn_send(t->conn, ntws_buf_ref(b), 0);
	}
}

static void
live_targeted(struct ntws_user *u, struct live *l, const char *id)
{
	struct ntws_sess *t, *next;
	struct ntws_buf *b;
	uint64_t ms = id_ms(id, id != NULL ? strlen(id) : 0);

	u->live_gen++;
	u->live_last = l->seq;
	/*
	 * On one subscription a user's positions arrive in order; one at or
	 * below the highest known, made later than the message there, is
	 * from a log that replaced it: everyone reads to find out.
	 */
	if (l->seq <= u->top_seq && u->top_ms != 0 && ms > u->top_ms) {
		nt_log_debug("user %s: position %lld arrived again with a newer "
		    "id: reading the log", u->name, (long long)l->seq);
		u->suspect_gen++;
		for (t = u->sessions; t != NULL; t = next) {
			next = t->unext;
			start_catchup(t);
		}
		return;
	}
	top_seen(u, l->seq, ms);
	for (t = u->sessions; t != NULL; t = next) {
		next = t->unext;
		if (t->state != S_LIVE || !sess_open(t))
			continue;
		if (l->seq <= t->cursor) {
			ntws_m.duplicates_dropped++;
		} else if (l->seq != t->cursor + 1) {
			ntws_m.gaps++;
			start_catchup(t);
		} else if (held_bytes() > d.cfg->max_queued_bytes) {
			ntws_m.deferred++;
			start_catchup(t);
		} else if ((b = live_buf(l, u->epoch_gen)) != NULL &&
		    ntws_conn_send(t->conn, ntws_buf_ref(b), 0) ==
		    NTWS_SEND_QUEUED)
			t->cursor = l->seq;
	}
}

static void
on_message(const char *json, size_t len)
{
	struct live l = { json, len, 0, 0, NULL };
	struct ntws_user *u = NULL;
	const char *user, *ts;
	json_t *msg, *seq;
	char err[128];

	ntws_m.messages_in++;
	if ((msg = nt_msg_decode(json, len, err, sizeof(err))) == NULL) {
		nt_log_warn("ignoring a malformed message from Redis: %s", err);
		return;
	}
	user = nt_msg_target_user(msg);
	if (user != NULL &&
	    ((u = ntws_users_find(user)) == NULL || u->nsess == 0)) {
		json_decref(msg);
		return;
	}
	ts = json_string_value(json_object_get(msg, "timestamp"));
	if (ts == NULL || nt_timestamp_parse_us(ts, &l.ts_us) != 0)
		l.ts_us = 0;
	seq = json_object_get(msg, "seq");
	l.seq = json_is_integer(seq) ? (int64_t)json_integer_value(seq) : 0;
	if (user == NULL)
		live_broadcast(&l, nt_msg_channel(msg));
	else if (l.seq <= 0)
		live_unordered(u, &l);
	else
		live_targeted(u, &l, nt_msg_id(msg));
	ntws_buf_unref(l.b);
	json_decref(msg);
}

static void
user_feed_lost(struct ntws_user *u, void *arg)
{
	struct ntws_sess *t;

	for (t = u->sessions; t != NULL; t = t->unext)
		if (t->state == S_LIVE) {
			t->state = S_CATCHUP;
			ntws_m.catchups++;
		}
}

/* The subscription is gone: no session can trust what comes live. */
static void
on_feed_lost(void)
{
	ntws_users_each(user_feed_lost, NULL);
}

static void
user_ready(struct ntws_user *u, void *arg)
{
	struct ntws_sess *t;

	for (t = u->sessions; t != NULL; t = t->unext)
		read_next(t);
}

/* Subscribed with a working command connection: catch up. */
static void
on_ready(void)
{
	ntws_users_each(user_ready, NULL);
}

const struct ntws_rds_hooks ntws_deliver_redis_hooks = {
	on_message, on_feed_lost, on_ready,
};

/* ---- read marks ---- */

/*
 * A read mark only decides what a new device is offered (notifyd(7)):
 * one that is lost or late means a message is offered again, never that
 * one is missed. So what waits for Redis is kept small and bounded by
 * the users connected: per user the highest position read and at most
 * ACKS_MAX acknowledged ids (the oldest dropped past it), and at most
 * one round of mark commands in flight.
 */

/* u's marks, made on first use; NULL when out of memory. */
static struct ntws_marks *
marks_of(struct ntws_user *u)
{
	if (u->marks == NULL)
		u->marks = calloc(1, sizeof(*u->marks));
	return u->marks;
}

static void
dirty_link(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	k->dirty_prev = NULL;
	k->dirty_next = d.dirty;
	if (d.dirty != NULL)
		d.dirty->marks->dirty_prev = u;
	d.dirty = u;
}

static void
dirty_unlink(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (k->dirty_prev != NULL)
		k->dirty_prev->marks->dirty_next = k->dirty_next;
	else
		d.dirty = k->dirty_next;
	if (k->dirty_next != NULL)
		k->dirty_next->marks->dirty_prev = k->dirty_prev;
	k->dirty_next = k->dirty_prev = NULL;
}

static void
mark_dirty(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (k->dirty)
		return;
	k->dirty = 1;
	dirty_link(u);
	ntws_m.marks_pending++;
}

static void
mark_clean(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (k == NULL || !k->dirty)
		return;
	if (k->parked) {
		k->parked = 0;
		d.parked--;
	} else
		dirty_unlink(u);
	k->dirty = 0;
	ntws_m.marks_pending--;
}

/*
 * A dirty user whose marks are in flight leaves the list until they are
 * answered (mark_cb, probe_cb put it back): each loop pass walks only
 * the users it can write for, not every user waiting on Redis.
 */
static void
mark_park(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (!k->dirty || k->parked)
		return;
	dirty_unlink(u);
	k->parked = 1;
	d.parked++;
}

static void
mark_unpark(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (!k->parked || k->marks_inflight > 0 || k->probing)
		return;
	k->parked = 0;
	d.parked--;
	dirty_link(u);
}

static void
acks_clear(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (k == NULL)
		return;
	while (k->nacks > 0) {
		free(k->acks[k->ack_head]);
		k->ack_head = (k->ack_head + 1) % ACKS_MAX;
		k->nacks--;
	}
	free(k->acks);
	k->acks = NULL;
	k->ack_head = 0;
}

static void
mark_read(struct ntws_user *u, int64_t pos)
{
	struct ntws_marks *k;

	if (u->marks == NULL && pos <= 0)
		return;
	if ((k = marks_of(u)) == NULL || pos <= k->mark_pos)
		return;   /* out of memory: only a mark lost (see above) */
	k->mark_pos = pos;
	if (pos > k->mark_sent)
		mark_dirty(u);
}

/* Keep an acknowledged id (taken) until it is written; 0, or -1. */
static void
mark_ack(struct ntws_user *u, char *id)
{
	struct ntws_marks *k = marks_of(u);

	if (k == NULL || (k->acks == NULL && (k->acks = calloc(ACKS_MAX,
	    sizeof(*k->acks))) == NULL)) {
		free(id);
		return;
	}
	if (k->nacks == ACKS_MAX) {
		/* The oldest goes: it only means a new device sees it again. */
		free(k->acks[k->ack_head]);
		k->ack_head = (k->ack_head + 1) % ACKS_MAX;
		k->nacks--;
		ntws_m.acks_dropped++;
	}
	k->acks[(k->ack_head + k->nacks) % ACKS_MAX] = id;
	k->nacks++;
	mark_dirty(u);
}

/* Free u's marks, whatever they hold (u goes, or the process). */
static void
marks_free(struct ntws_user *u)
{
	mark_clean(u);
	acks_clear(u);
	free(u->marks);
	u->marks = NULL;
}

/* A user without sessions goes once nothing of it waits for Redis. */
static void
user_release(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (u->nsess > 0)
		return;
	if (k != NULL && (k->marks_inflight > 0 || k->probing))
		return;
	if (k != NULL && k->dirty && ntws_rds_cmd_up())
		return;   /* written at the next tick, then released */
	marks_free(u);
	ntws_users_remove(u);
}

struct mark_call {
	struct ntws_user *u;
	int64_t           pos;        /* 0: an ack */
	uint32_t          epoch_gen;
	char             *id;
};

static void
mark_cb(const redisReply *r, void *arg)
{
	struct mark_call *q = arg;
	struct ntws_user *u = q->u;
	struct ntws_marks *k = u->marks;   /* kept while marks are in flight */

	k->marks_inflight--;
	d.marks_inflight--;
	if (r != NULL && r->type != REDIS_REPLY_ERROR) {
		ntws_m.marks_written++;
		if (q->pos > k->mark_sent && q->epoch_gen == u->epoch_gen)
			k->mark_sent = q->pos;
		free(q->id);
	} else if (r == NULL) {
		/* Lost with the connection: it waits for the next one. */
		if (q->id != NULL)
			mark_ack(u, q->id);
		else if (q->epoch_gen == u->epoch_gen &&
		    k->mark_pos > k->mark_sent)
			mark_dirty(u);
	} else {
		/* E.g. OOM under maxmemory: not retried (notifyd(7)); said once
		 * a second at most, not once per user. */
		if (ev_now(d.loop) - d.refused_logged >= 1.0) {
			d.refused_logged = ev_now(d.loop);
			nt_log_warn("user %s: read mark refused: %s", u->name,
			    r->str);
		}
		free(q->id);
	}
	free(q);
	mark_unpark(u);
	user_release(u);
}

static void
mark_send(struct ntws_user *u, int64_t pos, char *id)
{
	struct mark_call *q = malloc(sizeof(*q));
	char arg[NTWS_ACK_ID_MAX + 3], ebuf[EPOCH_TEXT_MAX];

	if (q == NULL) {
		free(id);
		return;
	}
	q->u = u;
	q->pos = pos;
	q->epoch_gen = u->epoch_gen;
	q->id = id;
	if (id != NULL)
		snprintf(arg, sizeof(arg), "i:%s", id);
	else
		snprintf(arg, sizeof(arg), "%lld", (long long)pos);
	if (ntws_rds_mark(u->name, epoch_text(u->epoch, ebuf), arg, mark_cb,
	    q) != 0) {
		free(id);
		free(q);
		return;
	}
	u->marks->marks_inflight++;
	d.marks_inflight++;
}

static void probe_cb(const redisReply *r, void *arg);

/* Write what u has read (u has marks), or learn its log's epoch first. */
static void
mark_flush(struct ntws_user *u)
{
	struct ntws_marks *k = u->marks;

	if (u->epoch == NTWS_EPOCH_UNKNOWN || u->epoch == NTWS_EPOCH_NONE) {
		/* Read live since "no log": which log is it? (count 0) */
		if (ntws_rds_read_page(u->name, "all", "", 0, 0, "", probe_cb,
		    u) == 0)
			k->probing = 1;
		return;
	}
	mark_clean(u);
	if (k->mark_pos > k->mark_sent)
		mark_send(u, k->mark_pos, NULL);
	while (k->nacks > 0) {
		char *id = k->acks[k->ack_head];

		k->ack_head = (k->ack_head + 1) % ACKS_MAX;
		k->nacks--;
		mark_send(u, 0, id);
	}
	free(k->acks);
	k->acks = NULL;
	k->ack_head = 0;
}

static void
probe_cb(const redisReply *r, void *arg)
{
	struct ntws_user *u = arg;
	struct ntws_marks *k = u->marks;   /* kept while probing */
	struct nt_userlog_page page;

	k->probing = 0;
	if (r != NULL && nt_userlog_page_parse(r, &page, NULL, 0) == 0) {
		epoch_seen(u, page.epoch, NULL);
		if (u->epoch == NTWS_EPOCH_NONE) {
			/* Still no log: nothing to mark. */
			k->mark_pos = k->mark_sent = 0;
			acks_clear(u);
			mark_clean(u);
		}
	}
	mark_unpark(u);
	user_release(u);
}

static void
marks_flush_all(void)
{
	struct ntws_user *u, *next;

	for (u = d.dirty; u != NULL; u = next) {
		next = u->marks->dirty_next;
		if (u->marks->marks_inflight == 0 && !u->marks->probing) {
			mark_flush(u);
			if (u->marks->probing)
				mark_park(u);   /* still dirty: asking the epoch */
			user_release(u);
		} else
			mark_park(u);
	}
}

/* ---- what clients send ---- */

/* Send a control frame from proto.h (text taken, NULL ignored). */
static void
reply_text(struct ntws_sess *s, char *text, const size_t *len)
{
	if (text != NULL) {
		ntws_conn_send_reply(s->conn, text, *len);
		free(text);
	}
}

static void
reply_error(struct ntws_sess *s, const char *reason)
{
	size_t len;

	reply_text(s, ntws_proto_error(reason, &len), &len);
}

static void
channel_subscribe(struct ntws_sess *s, const char *channel)
{
	struct sess_chans *nc;
	uint16_t n = s->chans != NULL ? s->chans->n : 0;
	char *dup;
	size_t len;

	if (ntws_channel_private(d.cfg->private_prefix, channel) &&
	    !ntws_grants_allow(s->chans != NULL ? s->chans->grants : NULL,
	    channel)) {
		reply_text(s, ntws_proto_error_channel("channel not allowed",
		    channel, &len), &len);
		return;
	}
	if (!subscribed(s, channel)) {
		if (n >= d.cfg->max_channels) {
			reply_error(s, "too many channels");
			return;
		}
		if ((dup = strdup(channel)) == NULL)
			return;
		nc = realloc(s->chans, sizeof(*nc) + (n + 1) * sizeof(char *));
		if (nc == NULL) {
			free(dup);
			return;
		}
		if (s->chans == NULL)
			nc->grants = NULL;
		s->chans = nc;
		nc->names[n] = dup;
		nc->n = n + 1;
	}
	reply_text(s, ntws_proto_channel(1, channel, &len), &len);
}

static void
channel_unsubscribe(struct ntws_sess *s, const char *channel)
{
	uint16_t i;
	size_t len;

	struct sess_chans *c = s->chans;

	for (i = 0; c != NULL && i < c->n; i++) {
		if (strcmp(c->names[i], channel) != 0)
			continue;
		free(c->names[i]);
		c->names[i] = c->names[--c->n];
		if (c->n == 0 && c->grants == NULL) {
			free(c);
			s->chans = NULL;
		}
		break;
	}
	reply_text(s, ntws_proto_channel(0, channel, &len), &len);
}

static void
on_text(struct ntws_conn *c, const uint8_t *msg, size_t len)
{
	struct ntws_sess *s = ntws_conn_owner(c);
	struct ntws_req req;
	size_t rlen;
	char *id;

	ntws_proto_parse(msg, len, &req);
	switch (req.type) {
	case NTWS_REQ_INVALID:
		reply_error(s, req.error);
		break;
	case NTWS_REQ_PING:
		reply_text(s, ntws_proto_pong(&rlen), &rlen);
		break;
	case NTWS_REQ_SUBSCRIBE:
		channel_subscribe(s, req.channel);
		break;
	case NTWS_REQ_UNSUBSCRIBE:
		channel_unsubscribe(s, req.channel);
		break;
	case NTWS_REQ_ACK:
		if (!s->ack_mode)
			reply_error(s, "ack without ack mode");
		else if ((id = strdup(req.id)) != NULL)
			mark_ack(s->user, id);
		break;
	}
}

/* ---- token expiry ---- */

/*
 * A connection is closed with 4002 when its token's time is up (the
 * handshake decides when: a little before exp). One timer serves them
 * all instead of one per connection: it fires when the earliest close is
 * due, and the sweep walks every session, closes those due and finds the
 * next. A walk costs nanoseconds a session and runs at most once a
 * second; the session keeps 4 bytes, where a timer would take 32 and a
 * heap 16 more.
 */
static void
expiry_arm(void)
{
	ev_tstamp now = ev_now(d.loop), at;

	ev_timer_stop(d.loop, &d.expiry);
	if (d.next_close == 0)
		return;
	at = (ev_tstamp)d.next_close;
	if (at < d.last_sweep + EXPIRY_SWEEP_S)
		at = d.last_sweep + EXPIRY_SWEEP_S;
	ev_timer_set(&d.expiry, at > now ? at - now : 0., 0.);
	ev_timer_start(d.loop, &d.expiry);
}

struct sweep {
	ev_tstamp now;
	uint32_t  next;       /* the earliest close not yet due; 0: none */
};

static void
user_expire(struct ntws_user *u, void *arg)
{
	struct sweep *w = arg;
	struct ntws_sess *t;
	char peer[80];

	for (t = u->sessions; t != NULL; t = t->unext) {
		if (t->close_at == 0)
			continue;
		if ((ev_tstamp)t->close_at > w->now) {
			if (w->next == 0 || t->close_at < w->next)
				w->next = t->close_at;
			continue;
		}
		t->close_at = 0;
		if (!sess_open(t))
			continue;
		nt_log_info("conn %llu (%s): user %s: token expires, closing",
		    (unsigned long long)ntws_conn_serial(t->conn),
		    ntws_conn_peer(t->conn, peer, sizeof(peer)), u->name);
		/* After what is queued: nothing sent so far is lost. */
		ntws_conn_close(t->conn, 4002, "token expired");
	}
}

static void
expiry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sweep sw = { ev_now(loop), 0 };

	d.last_sweep = sw.now;
	/* Closing only marks connections: no record goes during the walk. */
	ntws_users_each(user_expire, &sw);
	d.next_close = sw.next;
	expiry_arm();
}

/* Close s at close_at: the sweep comes by then at the latest. */
static void
expiry_watch(struct ntws_sess *s, time_t close_at)
{
	if (close_at <= 0 || (uint64_t)close_at > UINT32_MAX)
		return;   /* beyond 2106: never, in practice */
	s->close_at = (uint32_t)close_at;
	if (d.next_close == 0 || s->close_at < d.next_close) {
		d.next_close = s->close_at;
		expiry_arm();
	}
}

/* ---- connections ---- */

static void
on_written(struct ntws_conn *c, const struct ntws_buf *b)
{
	struct ntws_sess *s = ntws_conn_owner(c);
	struct ntws_user *u = s->user;

	/* Without acks, a message written whole is read (notifyd(7)). */
	if (b->kind == NTWS_BUF_NOTE && b->seq > 0 && !s->ack_mode &&
	    u != NULL && b->epoch_gen == u->epoch_gen)
		mark_read(u, b->seq);
}

static void
on_drain(struct ntws_conn *c)
{
	read_next(ntws_conn_owner(c));
}

static void
on_gone(struct ntws_conn *c)
{
	struct ntws_sess *s = ntws_conn_owner(c), **pp;
	struct ntws_user *u = s->user;
	char peer[80];

	nt_log_info("conn %llu (%s): user %s disconnected: code %u, %.1fs",
	    (unsigned long long)ntws_conn_serial(c),
	    ntws_conn_peer(c, peer, sizeof(peer)), u->name,
	    ntws_conn_close_code(c), ev_now(d.loop) - ntws_conn_opened_at(c));
	/* Short: at most --max-conns-per-user. */
	for (pp = &u->sessions; *pp != s; pp = &(*pp)->unext)
		;
	*pp = s->unext;
	ntws_m.connections--;
	s->gone = 1;
	s->conn = NULL;
	s->user = NULL;
	if (--u->nsess == 0) {
		ntws_m.users--;
		ntws_rds_presence(u->name, 0);
		user_release(u);
	}
	/* A read in flight or a place in the FIFO frees it later. */
	if (!s->reading && !s->waiting)
		sess_free(s);
}

static const struct ntws_conn_hooks sess_hooks = {
	NULL, on_text, on_written, on_drain, on_gone,
};

void
ntws_deliver_attach(struct ntws_conn *c, const char *name,
    const char *since, int ack, char *grants, time_t close_at)
{
	struct ntws_user *u;
	struct ntws_sess *s;
	char peer[80];
	int made;

	if ((u = ntws_users_get(name, &made)) == NULL) {
		free(grants);
		ntws_conn_kill(c);
		return;
	}
	if ((long long)u->nsess >= d.cfg->max_conns_per_user) {
		ntws_m.refused_user_limit++;
		nt_log_info("conn %llu (%s): user %s has %u connections here "
		    "already, closing", (unsigned long long)ntws_conn_serial(c),
		    ntws_conn_peer(c, peer, sizeof(peer)), name, u->nsess);
		free(grants);
		ntws_conn_close(c, 1013, "too many connections for this user");
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    (since != NULL && (s->since = strdup(since)) == NULL) ||
	    (grants != NULL && (s->chans = calloc(1,
	    sizeof(*s->chans))) == NULL)) {
		if (s != NULL)
			free(s->since);
		free(s);
		free(grants);
		if (made)
			user_release(u);
		ntws_conn_kill(c);
		return;
	}
	if (grants != NULL)
		s->chans->grants = grants;
	expiry_watch(s, close_at);
	if (u->nsess++ == 0) {
		ntws_m.users++;
		ntws_rds_presence(u->name, 1);
	}
	s->conn = c;
	s->user = u;
	s->ack_mode = (uint8_t)!!ack;
	s->state = S_CATCHUP;
	s->unext = u->sessions;
	u->sessions = s;
	ntws_m.connections++;
	ntws_conn_adopt(c, &sess_hooks, s);
	/* A resuming client's first frame is the resume frame: what it
	 * sends is answered after that. */
	if (since != NULL)
		ntws_conn_hold_input(c, 1);
	read_next(s);
}

/* ---- the loop ---- */

void
ntws_deliver_tick(void)
{
	struct ntws_sess *s;

	while (d.wq_n > 0 && slot_free()) {
		s = wait_pop();
		if (s->gone) {
			if (!s->reading)
				sess_free(s);
			continue;
		}
		if (!wants_read(s))
			continue;   /* on_ready or a later need brings it back */
		if (ntws_conn_queued(s->conn) > d.low_water)
			ntws_conn_watch_drain(s->conn, d.low_water);
		else
			send_read(s);
	}
	if (d.dirty != NULL && ntws_rds_cmd_up())
		marks_flush_all();
}

int
ntws_deliver_idle(void)
{
	return !ntws_rds_cmd_up() || (d.dirty == NULL && d.parked == 0 &&
	    d.marks_inflight == 0);
}

int
ntws_deliver_init(struct ev_loop *loop, const struct ntws_config *cfg)
{
	size_t i;

	memset(&d, 0, sizeof(d));
	d.loop = loop;
	d.cfg = cfg;
	d.page_budget = cfg->send_queue_max / 2;
	if (d.page_budget > PAGE_BYTES_MAX)
		d.page_budget = PAGE_BYTES_MAX;
	d.low_water = d.page_budget / 2;
	ev_init(&d.expiry, expiry_cb);
	for (i = 0; i < READS_MAX; i++) {
		d.reads[i].free_next = d.reads_free;
		d.reads_free = &d.reads[i];
	}
	return ntws_users_init();
}

static void
user_drop(struct ntws_user *u, void *arg)
{
	marks_free(u);
}

void
ntws_deliver_free(void)
{
	struct ntws_sess *s;

	ev_timer_stop(d.loop, &d.expiry);
	while ((s = wait_pop()) != NULL)
		if (s->gone && !s->reading)
			sess_free(s);
	ntws_users_each(user_drop, NULL);
	ntws_users_free();
}
