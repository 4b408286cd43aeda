/*
 * Delivery: live messages from Redis to connections, the offline replay
 * of a connecting user, and the messages clients send.
 *
 * Exactly once per connection, in order: a connection is registered for
 * live delivery before its HGETALL is sent (the SUBSCRIBE is already
 * live), live messages are held while the replay is in flight, the
 * offline messages go out sorted by id, then the held live ones that
 * the hash did not already hold. Ids replayed are remembered until a
 * heartbeat published after the HGETALL comes back on the subscriber
 * connection: by then every message published before the HGETALL ran
 * has arrived, so a later live copy of a replayed id is impossible.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "nt_log.h"
#include "ws.h"

int64_t
ntws_now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
seen_has(const struct ntws_conn *c, const char *id)
{
	return c->seen != NULL &&
	    bsearch(&id, c->seen, c->nseen, sizeof(char *), cmp_str) != NULL;
}

void
ntws_seen_free(struct ntws_conn *c)
{
	uint32_t i;

	for (i = 0; i < c->nseen; i++)
		free(c->seen[i]);
	free(c->seen);
	c->seen = NULL;
	c->nseen = 0;
}

void
ntws_seen_add(struct ntws_conn *c, const char *id)
{
	char **nv, *dup;
	uint32_t i;

	if (seen_has(c, id) || (dup = strdup(id)) == NULL)
		return;
	if ((nv = realloc(c->seen, (c->nseen + 1) * sizeof(*nv))) == NULL) {
		free(dup);
		return;
	}
	c->seen = nv;
	/* Ids grow with time: this is nearly always an append. */
	for (i = c->nseen; i > 0 && strcmp(c->seen[i - 1], id) > 0; i--)
		c->seen[i] = c->seen[i - 1];
	c->seen[i] = dup;
	c->nseen++;
}

static void
backlog_free(struct ntws_replay *rp)
{
	uint32_t i;

	for (i = 0; i < rp->nbacklog; i++)
		ntws_buf_unref(rp->backlog[i]);
	free(rp->backlog);
	rp->backlog = NULL;
	rp->nbacklog = rp->bpos = 0;
	rp->loaded = 0;
}

void
ntws_replay_free(struct ntws_conn *c)
{
	uint32_t i;

	if (c->rp == NULL)
		return;
	for (i = c->rp->ppos; i < c->rp->npending; i++)
		ntws_buf_unref(c->rp->pending[i]);
	free(c->rp->pending);
	backlog_free(c->rp);
	free(c->rp);
	c->rp = NULL;
}

void
ntws_channels_free(struct ntws_conn *c)
{
	uint16_t i;

	for (i = 0; i < c->nchannels; i++)
		free(c->channels[i]);
	free(c->channels);
	c->channels = NULL;
	c->nchannels = 0;
}

static int
subscribed(const struct ntws_conn *c, const char *channel)
{
	uint16_t i;

	for (i = 0; i < c->nchannels; i++)
		if (strcmp(c->channels[i], channel) == 0)
			return 1;
	return 0;
}

/* Hold a live message while the replay is in flight. */
static void
hold(struct ntws_conn *c, struct ntws_buf *b)
{
	struct ntws_replay *rp = c->rp;
	struct ntws_buf **nv;
	uint32_t ncap;

	if (rp->pending_bytes + b->len > c->srv->cfg->send_queue_max) {
		c->srv->m.slow_consumers++;
		ntws_conn_close(c, 1013, "slow consumer");
		return;
	}
	if (rp->npending == rp->cap) {
		ncap = rp->cap ? rp->cap * 2 : 8;
		if ((nv = realloc(rp->pending, ncap * sizeof(*nv))) == NULL) {
			ntws_conn_kill(c);
			return;
		}
		rp->pending = nv;
		rp->cap = ncap;
	}
	rp->pending[rp->npending++] = ntws_buf_ref(b);
	rp->pending_bytes += b->len;
}

void
ntws_deliver_to(struct ntws_conn *c, struct ntws_buf *b)
{
	if (c->close_sent)
		return;
	if (c->state == NTWS_CS_REPLAY && c->rp != NULL) {
		hold(c, b);
		return;
	}
	if (c->state != NTWS_CS_OPEN)
		return;
	if (c->seen != NULL && c->srv->r.hb_seen >= c->fence)
		ntws_seen_free(c);
	if (b->targeted && b->id != NULL && seen_has(c, b->id)) {
		c->srv->m.duplicates_dropped++;
		return;
	}
	ntws_conn_enqueue(c, ntws_buf_ref(b));
}

/* A message published on the notifications channel. */
void
ntws_deliver_payload(struct ntws_server *s, const char *json, size_t len)
{
	char err[128];
	json_t *msg, *ts;
	const char *id, *user, *channel;
	struct ntws_buf *b;
	struct ntws_user *u;
	struct ntws_conn *c, *next;
	int64_t ts_us = 0;

	s->m.messages_in++;
	if ((msg = nt_msg_decode(json, len, err, sizeof(err))) == NULL) {
		nt_log_warn("ignoring a malformed message from Redis: %s", err);
		return;
	}
	id = nt_msg_id(msg);
	user = nt_msg_target_user(msg);
	channel = nt_msg_channel(msg);
	ts = json_object_get(msg, "timestamp");
	if (json_is_string(ts) &&
	    nt_timestamp_parse_us(json_string_value(ts), &ts_us) != 0)
		ts_us = 0;
	b = ntws_buf_frame(WSLAY_TEXT_FRAME, json, len, user ? id : NULL);
	if (b == NULL) {
		json_decref(msg);
		return;
	}
	b->notification = 1;
	b->targeted = user != NULL;
	b->ts_us = ts_us;
	if (user != NULL) {
		if ((u = ntws_user_find(s, user)) != NULL)
			for (c = u->conns; c != NULL; c = next) {
				next = c->user_next;
				ntws_deliver_to(c, b);
			}
	} else {
		for (c = s->conns; c != NULL; c = c->next)
			if (c->authed && (channel == NULL || subscribed(c, channel)))
				ntws_deliver_to(c, b);
	}
	ntws_buf_unref(b);
	json_decref(msg);
}

/* ---- offline replay ---- */

/*
 * Remember the ids of backlog[0..n) (all sent) until the fence: a live
 * copy of one of them may still be on its way from Redis.
 */
static void
remember(struct ntws_conn *c, struct ntws_buf **backlog, uint32_t n)
{
	char **seen;
	uint32_t i, k = 0;

	if (n == 0)
		return;
	if ((seen = malloc((c->nseen + n) * sizeof(*seen))) == NULL)
		return;
	for (i = 0; i < c->nseen; i++)
		seen[k++] = c->seen[i];
	for (i = 0; i < n; i++)
		if ((seen[k] = strdup(backlog[i]->id)) != NULL)
			k++;
	free(c->seen);
	c->seen = seen;
	c->nseen = k;
	qsort(c->seen, c->nseen, sizeof(char *), cmp_str);
}

void
ntws_replay_begin(struct ntws_conn *c)
{
	struct ntws_replay *rp;

	if (c->close_sent || c->state == NTWS_CS_DEAD)
		return;
	if (c->rp == NULL && (c->rp = calloc(1, sizeof(*c->rp))) == NULL) {
		ntws_conn_kill(c);
		return;
	}
	rp = c->rp;
	if (rp->loaded) {
		/* Restarted mid-replay: what went out is remembered, the rest
		 * comes again from the new read. */
		remember(c, rp->backlog, rp->bpos);
		backlog_free(rp);
	}
	c->state = NTWS_CS_REPLAY;
	c->replay_gen++;
	rp->inflight = 0;
	/* The ids remembered (and those written until the read is in) must
	 * outlive the read: the fence is set again once its reply is in. */
	c->fence = UINT64_MAX;
	if (ntws_redis_can_replay(c->srv))
		ntws_redis_hgetall(c->srv, c);
}

/* The subscriber connection was lost: every connection replays again. */
void
ntws_replay_restart_all(struct ntws_server *s)
{
	struct ntws_conn *c;

	for (c = s->conns; c != NULL; c = c->next)
		if (c->state == NTWS_CS_OPEN || c->state == NTWS_CS_REPLAY)
			ntws_replay_begin(c);
}

void
ntws_replay_kick_all(struct ntws_server *s)
{
	struct ntws_conn *c;

	for (c = s->conns; c != NULL; c = c->next)
		if (c->state == NTWS_CS_REPLAY && c->rp != NULL &&
		    !c->rp->inflight && !c->rp->loaded)
			ntws_redis_hgetall(s, c);
}

static int
cmp_buf_id(const void *a, const void *b)
{
	return strcmp((*(struct ntws_buf *const *)a)->id,
	    (*(struct ntws_buf *const *)b)->id);
}

static int
room_for(const struct ntws_conn *c, const struct ntws_buf *b)
{
	/* Keep half the queue free for control frames and replies. */
	return c->qbytes == 0 ||
	    c->qbytes + b->len <= c->srv->cfg->send_queue_max / 2;
}

/*
 * Feed the queue: offline messages in id order, then the live ones held
 * meanwhile (minus those the backlog already had). Called when the
 * HGETALL reply is in and whenever the queue drains.
 */
void
ntws_replay_pump(struct ntws_conn *c)
{
	struct ntws_replay *rp = c->rp;
	struct ntws_buf *b;

	if (rp == NULL || !rp->loaded)
		return;
	while (rp->bpos < rp->nbacklog && !c->close_sent &&
	    c->state == NTWS_CS_REPLAY) {
		b = rp->backlog[rp->bpos];
		if (!room_for(c, b))
			return;
		rp->bpos++;
		c->srv->m.replayed++;
		ntws_conn_enqueue(c, ntws_buf_ref(b));
		if (c->rp != rp)
			return;   /* closed or killed: the replay is gone */
	}
	if (c->close_sent || c->state != NTWS_CS_REPLAY)
		return;
	if (rp->nbacklog > 0) {
		remember(c, rp->backlog, rp->nbacklog);
		backlog_free(rp);
		rp->loaded = 1;
	}
	if (c->seen != NULL)
		c->fence = rp->fence;
	while (rp->ppos < rp->npending && !c->close_sent &&
	    c->state == NTWS_CS_REPLAY) {
		b = rp->pending[rp->ppos];
		if (b->targeted && b->id != NULL && seen_has(c, b->id)) {
			c->srv->m.duplicates_dropped++;
		} else {
			if (!room_for(c, b))
				return;
			ntws_conn_enqueue(c, ntws_buf_ref(b));
			if (c->rp != rp)
				return;
		}
		rp->ppos++;
		rp->pending_bytes -= b->len;
		ntws_buf_unref(b);
	}
	if (c->close_sent || c->state != NTWS_CS_REPLAY)
		return;
	/* Through: live delivery from now on. */
	c->state = NTWS_CS_OPEN;
	ntws_replay_free(c);
}

/*
 * The HGETALL reply (NULL: treat as empty): frame the offline messages,
 * sort them by id, and start feeding the queue.
 */
void
ntws_replay_done(struct ntws_conn *c, redisReply *reply)
{
	struct ntws_replay *rp = c->rp;
	struct ntws_buf *b;
	redisReply *k, *v;
	size_t i, n = 0;

	rp->inflight = 0;
	rp->loaded = 1;
	/* Live copies of these may arrive until a later heartbeat does. */
	rp->fence = c->srv->r.hb_next;
	if (reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
	    reply->elements >= 2 &&
	    (rp->backlog = calloc(reply->elements / 2, sizeof(*rp->backlog)))) {
		for (i = 0; i + 1 < reply->elements; i += 2) {
			k = reply->element[i];
			v = reply->element[i + 1];
			if (k->type != REDIS_REPLY_STRING ||
			    v->type != REDIS_REPLY_STRING)
				continue;
			/* After a Redis reconnect: already sent, or queued. */
			if (seen_has(c, k->str) || ntws_conn_queue_has(c, k->str))
				continue;
			b = ntws_buf_frame(WSLAY_TEXT_FRAME, v->str, v->len, k->str);
			if (b == NULL)
				break;
			b->notification = 1;
			b->targeted = 1;
			rp->backlog[n++] = b;
		}
		rp->nbacklog = (uint32_t)n;
		qsort(rp->backlog, n, sizeof(*rp->backlog), cmp_buf_id);
	}
	ntws_replay_pump(c);
}

/* ---- client messages ---- */

static void
reply_json(struct ntws_conn *c, json_t *obj)
{
	char *text;

	if (obj == NULL)
		return;
	text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (text != NULL) {
		ntws_conn_send_text(c, text, strlen(text));
		free(text);
	}
}

static void
reply_error(struct ntws_conn *c, const char *reason)
{
	reply_json(c, json_pack("{s:s, s:s}", "type", "error", "error", reason));
}

static void
channel_subscribe(struct ntws_conn *c, const char *channel)
{
	char **nv;
	char *dup;

	if (!subscribed(c, channel)) {
		if (c->nchannels >= c->srv->cfg->max_channels) {
			reply_error(c, "too many channels");
			return;
		}
		nv = realloc(c->channels, (c->nchannels + 1) * sizeof(*nv));
		if (nv == NULL)
			return;
		c->channels = nv;
		if ((dup = strdup(channel)) == NULL)
			return;
		c->channels[c->nchannels++] = dup;
	}
	reply_json(c, json_pack("{s:s, s:s}", "type", "subscribed", "channel",
	    channel));
}

static void
channel_unsubscribe(struct ntws_conn *c, const char *channel)
{
	uint16_t i;

	for (i = 0; i < c->nchannels; i++) {
		if (strcmp(c->channels[i], channel) != 0)
			continue;
		free(c->channels[i]);
		c->channels[i] = c->channels[--c->nchannels];
		if (c->nchannels == 0) {
			free(c->channels);
			c->channels = NULL;
		}
		break;
	}
	reply_json(c, json_pack("{s:s, s:s}", "type", "unsubscribed",
	    "channel", channel));
}

void
ntws_client_message(struct ntws_conn *c, const uint8_t *msg, size_t len)
{
	json_t *obj, *jt, *jc;
	const char *type, *channel;
	char err[128], ts[NT_TIMESTAMP_LEN + 1];

	obj = json_loadb((const char *)msg, len, 0, NULL);
	if (!json_is_object(obj)) {
		json_decref(obj);
		reply_error(c, "invalid JSON: expected an object");
		return;
	}
	jt = json_object_get(obj, "type");
	type = json_is_string(jt) ? json_string_value(jt) : NULL;
	jc = json_object_get(obj, "channel");
	channel = json_is_string(jc) ? json_string_value(jc) : NULL;
	if (type == NULL) {
		reply_error(c, "missing type");
	} else if (strcmp(type, "ping") == 0) {
		nt_timestamp_now(ts);
		reply_json(c, json_pack("{s:s, s:s}", "type", "pong",
		    "timestamp", ts));
	} else if (strcmp(type, "subscribe") == 0 ||
	    strcmp(type, "unsubscribe") == 0) {
		if (channel == NULL ||
		    nt_channel_valid(channel, err, sizeof(err)) != 0)
			reply_error(c, "invalid channel");
		else if (type[0] == 's')
			channel_subscribe(c, channel);
		else
			channel_unsubscribe(c, channel);
	} else if (strcmp(type, "ack") == 0) {
		jt = json_object_get(obj, "id");
		if (!c->ack_mode)
			reply_error(c, "ack without ack mode");
		else if (!json_is_string(jt) || json_string_length(jt) == 0 ||
		    json_string_length(jt) > 64)
			reply_error(c, "invalid id");
		else if (c->srv->r.hdel_n >= NTWS_HDEL_ACK_MAX)
			reply_error(c, "ack not recorded: too many pending");
		else if (c->user != NULL)
			ntws_redis_hdel(c->srv, c->user->name,
			    json_string_value(jt));
	} else
		reply_error(c, "unknown type");
	json_decref(obj);
}
