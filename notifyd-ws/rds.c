/*
 * The Redis side of notifyd-ws: two hiredis async connections on the
 * libev loop (the stock adapter), one SUBSCRIBEd to the notifications
 * channel and one for commands (HGETALL, HDEL, presence).
 *
 * hiredis 0.14 has no async timeouts, so liveness is ours: every tick
 * the command connection gets a PING and publishes a heartbeat on a
 * channel of this instance that the subscriber connection also listens
 * to. A PING or a heartbeat not answered within --redis-timeout drops
 * that connection; both reconnect with backoff, forever: the daemon
 * never exits because Redis is away, /healthz says 503 meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/adapters/libev.h>

#include "nt_log.h"
#include "ws.h"

#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 2.0

enum { SUB, CMD };

static void rds_connect(struct ntws_server *s, int which);

static void
set_error(struct ntws_server *s, const char *what, const char *errstr)
{
	snprintf(s->r.last_error, sizeof(s->r.last_error), "%s: %s", what,
	    errstr != NULL && errstr[0] != '\0' ? errstr : "lost");
}

static void
schedule_retry(struct ntws_server *s, int which)
{
	struct ntws_redis *r = &s->r;
	ev_timer *t = which == SUB ? &r->sub_retry : &r->cmd_retry;
	double *b = which == SUB ? &r->sub_backoff : &r->cmd_backoff;

	if (s->shutting_down)
		return;
	*b = *b < BACKOFF_MIN ? BACKOFF_MIN : *b * 2;
	if (*b > BACKOFF_MAX)
		*b = BACKOFF_MAX;
	ev_timer_stop(s->loop, t);
	ev_timer_set(t, *b, 0.);
	ev_timer_start(s->loop, t);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ntws_server *s = w->data;

	rds_connect(s, w == &s->r.sub_retry ? SUB : CMD);
}

/* ---- presence ---- */

static void
presence_touch(struct ntws_server *s)
{
	struct ntws_redis *r = &s->r;

	redisAsyncCommand(r->cmd, NULL, NULL, "EXPIRE %s %d", r->presence_key,
	    NT_PRESENCE_TTL_S);
	redisAsyncCommand(r->cmd, NULL, NULL, "SADD %s %s", r->instances_key,
	    s->cfg->instance_id);
}

/* Write the whole set again: after a reconnect, or when it expired. */
static void
presence_rewrite(struct ntws_server *s)
{
	struct ntws_redis *r = &s->r;
	const char **argv;
	size_t i, n = 0, cap = 514;
	struct ntws_user *u;

	r->presence_at = ev_now(s->loop);
	redisAsyncCommand(r->cmd, NULL, NULL, "MULTI");
	redisAsyncCommand(r->cmd, NULL, NULL, "DEL %s", r->presence_key);
	if ((argv = malloc(cap * sizeof(*argv))) != NULL) {
		for (i = 0; i < s->nbuckets; i++)
			for (u = s->users[i]; u != NULL; u = u->hnext) {
				if (n == 0) {
					argv[n++] = "SADD";
					argv[n++] = r->presence_key;
				}
				argv[n++] = u->name;
				if (n == cap) {
					redisAsyncCommandArgv(r->cmd, NULL, NULL, (int)n,
					    argv, NULL);
					n = 0;
				}
			}
		if (n > 0)
			redisAsyncCommandArgv(r->cmd, NULL, NULL, (int)n, argv,
			    NULL);
		free(argv);
	}
	redisAsyncCommand(r->cmd, NULL, NULL, "EXPIRE %s %d", r->presence_key,
	    NT_PRESENCE_TTL_S);
	redisAsyncCommand(r->cmd, NULL, NULL, "EXEC");
	if (s->nusers > 0)
		redisAsyncCommand(r->cmd, NULL, NULL, "SADD %s %s",
		    r->instances_key, s->cfg->instance_id);
}

void
ntws_redis_presence(struct ntws_server *s, const char *user, int add)
{
	struct ntws_redis *r = &s->r;

	if (!r->cmd_ready || s->shutting_down)
		return;   /* the rewrite after reconnecting covers it */
	if (add) {
		redisAsyncCommand(r->cmd, NULL, NULL, "SADD %s %s",
		    r->presence_key, user);
		presence_touch(s);
	} else
		redisAsyncCommand(r->cmd, NULL, NULL, "SREM %s %s",
		    r->presence_key, user);
}

static void
clear_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;

	if (s->r.clear_pending > 0)
		s->r.clear_pending--;
}

void
ntws_redis_presence_clear(struct ntws_server *s)
{
	struct ntws_redis *r = &s->r;

	if (!r->cmd_ready)
		return;
	r->clear_pending = 2;
	redisAsyncCommand(r->cmd, clear_cb, NULL, "DEL %s", r->presence_key);
	redisAsyncCommand(r->cmd, clear_cb, NULL, "SREM %s %s",
	    r->instances_key, s->cfg->instance_id);
}

static void
renew_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;
	redisReply *rep = reply;

	/* EXPIRE of a missing key: the set expired; write it again. */
	if (rep != NULL && rep->type == REDIS_REPLY_INTEGER &&
	    rep->integer == 0 && s->nusers > 0 && s->r.cmd_ready &&
	    !s->shutting_down)
		presence_rewrite(s);
}

/* ---- HDEL of delivered messages, kept until Redis answers ---- */

static void
hdel_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;
	struct ntws_redis *r = &s->r;
	struct ntws_hdel *h;

	if (reply == NULL || r->hdel_head == NULL || r->hdel_sent == 0)
		return;   /* connection lost: it will be sent again */
	h = r->hdel_head;
	r->hdel_head = h->next;
	if (r->hdel_head == NULL)
		r->hdel_tail = NULL;
	r->hdel_n--;
	r->hdel_sent--;
	free(h);
}

static void
hdel_send(struct ntws_server *s, struct ntws_hdel *h)
{
	char key[NT_KEY_MAX];

	if (nt_key_offline(key, sizeof(key), s->cfg->prefix, h->user) < 0)
		return;
	redisAsyncCommand(s->r.cmd, hdel_cb, NULL, "HDEL %s %s", key, h->id);
	s->r.hdel_sent++;
}

void
ntws_redis_hdel(struct ntws_server *s, const char *user, const char *id)
{
	struct ntws_redis *r = &s->r;
	size_t ulen = strlen(user), ilen = strlen(id);
	struct ntws_hdel *h = malloc(sizeof(*h) + ulen + ilen + 2);

	if (h == NULL)
		return;
	memcpy(h->user, user, ulen + 1);
	h->id = h->user + ulen + 1;
	memcpy(h->id, id, ilen + 1);
	h->next = NULL;
	if (r->hdel_tail != NULL)
		r->hdel_tail->next = h;
	else
		r->hdel_head = h;
	r->hdel_tail = h;
	r->hdel_n++;
	if (r->cmd_ready)
		hdel_send(s, h);
}

int
ntws_redis_idle(const struct ntws_server *s)
{
	return !s->r.cmd_ready || (s->r.hdel_n == 0 && s->r.clear_pending == 0);
}

/* ---- replay reads ---- */

struct hgetall_req {
	struct ntws_conn *c;
	uint32_t          gen;
};

static void
hgetall_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct hgetall_req *q = priv;
	struct ntws_conn *c = q->c;
	redisReply *rep = reply;

	c->redis_pending--;
	if (c->state == NTWS_CS_REPLAY && c->rp != NULL &&
	    q->gen == c->replay_gen) {
		if (rep == NULL)
			c->rp->inflight = 0;   /* again once Redis is back */
		else {
			if (rep->type == REDIS_REPLY_ERROR)
				nt_log_warn("HGETALL of user %s: %s",
				    c->user ? c->user->name : "?", rep->str);
			ntws_replay_done(c, rep->type == REDIS_REPLY_ARRAY ? rep :
			    NULL);
		}
	}
	free(q);
}

void
ntws_redis_hgetall(struct ntws_server *s, struct ntws_conn *c)
{
	char key[NT_KEY_MAX];
	struct hgetall_req *q;

	if (c->user == NULL || c->rp == NULL || c->rp->loaded ||
	    nt_key_offline(key, sizeof(key), s->cfg->prefix, c->user->name) < 0)
		return;
	if ((q = malloc(sizeof(*q))) == NULL)
		return;
	q->c = c;
	q->gen = c->replay_gen;
	if (redisAsyncCommand(s->r.cmd, hgetall_cb, q, "HGETALL %s", key) !=
	    REDIS_OK) {
		free(q);
		return;
	}
	c->redis_pending++;
	c->rp->inflight = 1;
}

int
ntws_redis_can_replay(const struct ntws_server *s)
{
	return s->r.cmd_ready && s->r.sub_ready;
}

int
ntws_redis_healthy(const struct ntws_server *s)
{
	return s->r.cmd_ready && s->r.sub_ready;
}

int
ntws_redis_sub_up(const struct ntws_server *s)
{
	return s->r.sub_ready;
}

int
ntws_redis_cmd_up(const struct ntws_server *s)
{
	return s->r.cmd_ready;
}

/* ---- connection state ---- */

static void
both_ready_check(struct ntws_server *s)
{
	if (!ntws_redis_can_replay(s))
		return;
	nt_log_info("redis: connected and subscribed to %s", s->r.channel);
	ntws_replay_kick_all(s);
	ntws_server_maybe_ready(s);
}

static void
cmd_ready_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;
	struct ntws_redis *r = &s->r;
	redisReply *rep = reply;
	struct ntws_hdel *h;

	if (rep == NULL)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		set_error(s, "redis", rep->str);
		nt_log_err("redis: %s", rep->str);
		redisAsyncDisconnect(ac);
		return;
	}
	r->cmd_ready = 1;
	r->cmd_backoff = 0;
	/* Deliveries written while away: delete them before any replay reads. */
	r->hdel_sent = 0;
	for (h = r->hdel_head; h != NULL; h = h->next)
		hdel_send(s, h);
	/* Users may have left while we could not tell Redis: start over. */
	presence_rewrite(s);
	both_ready_check(s);
}

static void
sub_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;
	struct ntws_redis *r = &s->r;
	redisReply *rep = reply, **e;
	uint64_t seq;

	if (rep == NULL)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		set_error(s, "redis", rep->str);
		nt_log_err("redis: SUBSCRIBE: %s", rep->str);
		redisAsyncDisconnect(ac);
		return;
	}
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3)
		return;
	e = rep->element;
	if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(e[0]->str, "message") == 0 &&
	    e[2]->type == REDIS_REPLY_STRING) {
		if (strcmp(e[1]->str, r->hb_channel) == 0) {
			seq = strtoull(e[2]->str, NULL, 10);
			if (seq > r->hb_seen)
				r->hb_seen = seq;
			if (seq >= r->hb_waiting)
				r->hb_pub_at = 0;
		} else
			ntws_deliver_payload(s, e[2]->str, e[2]->len);
	} else if (strcmp(e[0]->str, "subscribe") == 0 &&
	    strcmp(e[1]->str, r->channel) == 0) {
		r->sub_ready = 1;
		r->sub_backoff = 0;
		both_ready_check(s);
	}
}

static void
auth_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;
	redisReply *rep = reply;

	if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
		set_error(s, "redis AUTH/SELECT", rep->str);
		nt_log_err("redis: AUTH/SELECT refused: %s", rep->str);
		redisAsyncDisconnect(ac);
	}
}

static void
connect_cb(const redisAsyncContext *ac, int status)
{
	struct ntws_server *s = ac->data;
	int which = ac == s->r.sub ? SUB : CMD;

	if (status == REDIS_OK)
		return;
	set_error(s, "redis connect", ac->errstr);
	if (which == SUB) {
		s->r.sub = NULL;
		nt_log(s->r.sub_backoff >= BACKOFF_MAX ? NT_LOG_DEBUG :
		    NT_LOG_WARN, "redis: cannot connect: %s", ac->errstr);
	} else
		s->r.cmd = NULL;
	schedule_retry(s, which);
}

static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct ntws_server *s = ac->data;
	struct ntws_redis *r = &s->r;

	if (ac == r->sub) {
		r->sub = NULL;
		if (r->sub_ready && !s->shutting_down)
			nt_log_warn("redis: subscriber connection lost: %s",
			    ac->errstr[0] ? ac->errstr : "closed");
		r->sub_ready = 0;
		r->hb_pub_at = 0;
		s->m.redis_reconnects++;
		/* Messages may be missed while away: everyone replays again. */
		if (!s->shutting_down)
			ntws_replay_restart_all(s);
		schedule_retry(s, SUB);
	} else if (ac == r->cmd) {
		r->cmd = NULL;
		if (r->cmd_ready && !s->shutting_down)
			nt_log_warn("redis: command connection lost: %s",
			    ac->errstr[0] ? ac->errstr : "closed");
		r->cmd_ready = 0;
		r->cmd_ping_at = 0;
		r->hb_pub_at = 0;
		r->hdel_sent = 0;
		schedule_retry(s, CMD);
	}
	if (ac->errstr[0])
		set_error(s, "redis", ac->errstr);
	else
		set_error(s, "redis", "connection closed");
}

static void
rds_connect(struct ntws_server *s, int which)
{
	const struct nt_redis_url *u = &s->cfg->redis;
	struct ntws_redis *r = &s->r;
	redisAsyncContext *ac;

	if (s->shutting_down)
		return;
	ac = u->is_unix ? redisAsyncConnectUnix(u->path) :
	    redisAsyncConnect(u->host, u->port);
	if (ac == NULL || ac->err) {
		set_error(s, "redis connect", ac ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		schedule_retry(s, which);
		return;
	}
	ac->data = s;
	redisLibevAttach(s->loop, ac);
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
	if (which == SUB)
		r->sub = ac;
	else
		r->cmd = ac;
	if (u->password[0] != '\0') {
		if (u->username[0] != '\0')
			redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s %s",
			    u->username, u->password);
		else
			redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s", u->password);
	}
	/* Named, so that CLIENT LIST tells which instance and role it is. */
	redisAsyncCommand(ac, NULL, NULL, "CLIENT SETNAME notifyd-ws:%s:%s",
	    which == SUB ? "sub" : "cmd", s->cfg->instance_id);
	if (which == SUB) {
		redisAsyncCommand(ac, sub_cb, NULL, "SUBSCRIBE %s %s", r->channel,
		    r->hb_channel);
	} else {
		if (u->db > 0)
			redisAsyncCommand(ac, auth_cb, NULL, "SELECT %d", u->db);
		redisAsyncCommand(ac, cmd_ready_cb, NULL, "PING");
	}
	if (which == SUB)
		r->sub_started = ev_now(s->loop);
	else
		r->cmd_started = ev_now(s->loop);
}

/* ---- liveness ---- */

static void
ping_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;

	if (reply != NULL)
		s->r.cmd_ping_at = 0;
}

static void
hb_pub_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ntws_server *s = ac->data;
	struct ntws_redis *r = &s->r;
	uint64_t seq = (uint64_t)(uintptr_t)priv;

	if (reply == NULL || !r->sub_ready || seq <= r->hb_seen)
		return;
	if (r->hb_pub_at == 0) {
		r->hb_pub_at = ev_now(s->loop);
		r->hb_waiting = seq;
	}
}

static void
drop(struct ntws_server *s, int which, const char *why)
{
	struct ntws_redis *r = &s->r;
	redisAsyncContext *ac = which == SUB ? r->sub : r->cmd;

	nt_log_warn("redis: %s, reconnecting", why);
	/*
	 * Calls every pending callback with NULL, then disconnect_cb when
	 * the connection was up; a connection still connecting gets no
	 * disconnect_cb, so its state is reset here.
	 */
	redisAsyncFree(ac);
	if (which == SUB && r->sub == ac) {
		r->sub = NULL;
		r->sub_ready = 0;
		schedule_retry(s, SUB);
	} else if (which == CMD && r->cmd == ac) {
		r->cmd = NULL;
		r->cmd_ready = 0;
		r->cmd_ping_at = 0;
		r->hdel_sent = 0;
		schedule_retry(s, CMD);
	}
	set_error(s, "redis", why);
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ntws_server *s = w->data;
	struct ntws_redis *r = &s->r;
	ev_tstamp now = ev_now(loop);
	double tmo = s->cfg->redis_timeout;

	if (r->cmd != NULL && !r->cmd_ready && now - r->cmd_started > tmo)
		drop(s, CMD, "command connection: connect timeout");
	if (r->sub != NULL && !r->sub_ready && now - r->sub_started > tmo)
		drop(s, SUB, "subscriber connection: connect timeout");
	if (r->cmd != NULL && r->cmd_ready && r->cmd_ping_at > 0 &&
	    now - r->cmd_ping_at > tmo)
		drop(s, CMD, "command connection: no PING reply");
	if (r->sub != NULL && r->sub_ready && r->hb_pub_at > 0 &&
	    now - r->hb_pub_at > tmo)
		drop(s, SUB, "subscriber connection: heartbeat lost");
	if (!r->cmd_ready)
		return;
	if (r->cmd_ping_at == 0) {
		r->cmd_ping_at = now;
		redisAsyncCommand(r->cmd, ping_cb, NULL, "PING");
	}
	if (r->sub_ready && r->hb_pub_at == 0) {
		uint64_t seq = r->hb_next++;
		redisAsyncCommand(r->cmd, hb_pub_cb, (void *)(uintptr_t)seq,
		    "PUBLISH %s %llu", r->hb_channel, (unsigned long long)seq);
	}
	if (s->nusers > 0 && !s->shutting_down &&
	    now - r->presence_at >= NT_PRESENCE_RENEW_S) {
		r->presence_at = now;
		redisAsyncCommand(r->cmd, renew_cb, NULL, "EXPIRE %s %d",
		    r->presence_key, NT_PRESENCE_TTL_S);
		redisAsyncCommand(r->cmd, NULL, NULL, "SADD %s %s",
		    r->instances_key, s->cfg->instance_id);
	}
}

void
ntws_redis_start(struct ntws_server *s)
{
	struct ntws_redis *r = &s->r;
	double tick = s->cfg->redis_timeout / 3;
	char hb[NT_KEY_MAX];

	nt_key_channel(r->channel, sizeof(r->channel), s->cfg->prefix);
	snprintf(hb, sizeof(hb), "notifyd-ws:heartbeat:%s", s->cfg->instance_id);
	snprintf(r->hb_channel, sizeof(r->hb_channel), "%s%s", s->cfg->prefix,
	    hb);
	nt_key_presence(r->presence_key, sizeof(r->presence_key),
	    s->cfg->prefix, s->cfg->instance_id);
	nt_key_presence_instances(r->instances_key, sizeof(r->instances_key),
	    s->cfg->prefix);
	r->hb_next = 1;
	snprintf(r->last_error, sizeof(r->last_error), "connecting");
	ev_init(&r->sub_retry, retry_cb);
	r->sub_retry.data = s;
	ev_init(&r->cmd_retry, retry_cb);
	r->cmd_retry.data = s;
	if (tick > 1.0)
		tick = 1.0;
	if (tick < 0.05)
		tick = 0.05;
	ev_timer_init(&r->tick, tick_cb, tick, tick);
	r->tick.data = s;
	ev_timer_start(s->loop, &r->tick);
	rds_connect(s, SUB);
	rds_connect(s, CMD);
}

/* Close both connections now (end of shutdown). */
void
ntws_redis_stop(struct ntws_server *s)
{
	struct ntws_redis *r = &s->r;
	struct ntws_hdel *h;

	ev_timer_stop(s->loop, &r->tick);
	ev_timer_stop(s->loop, &r->sub_retry);
	ev_timer_stop(s->loop, &r->cmd_retry);
	if (r->sub != NULL)
		redisAsyncFree(r->sub);
	if (r->cmd != NULL)
		redisAsyncFree(r->cmd);
	r->sub = r->cmd = NULL;
	while ((h = r->hdel_head) != NULL) {
		r->hdel_head = h->next;
		free(h);
	}
	r->hdel_tail = NULL;
	r->hdel_n = r->hdel_sent = 0;
}
