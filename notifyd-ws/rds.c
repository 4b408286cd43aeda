/*
 * The Redis side of notifyd-ws; see rds.h. Two hiredis async connections
 * on the libev loop (the stock adapter).
 *
 * hiredis 0.14 has no async timeouts, so liveness is ours, and it is on
 * progress, not on one command: while the command connection has
 * commands unanswered, any reply within --redis-timeout keeps it alive
 * (a PING queued behind large page replies would starve otherwise);
 * when it has none, it gets a PING every tick. The subscriber is proved
 * live by a heartbeat that the command connection publishes on a channel
 * of this instance and that comes back on the subscription: a PING on a
 * subscribed connection would not say that messages still flow. A
 * connection that misses its deadline is dropped; both reconnect with
 * backoff, forever: the daemon never exits because Redis is away.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/adapters/libev.h>
#include <openssl/sha.h>

#include "metrics.h"
#include "nt_log.h"
#include "nt_redis.h"
#include "nt_userlog.h"
#include "rds.h"
#include "users.h"

#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 2.0

enum { SUB, CMD };

static struct {
	struct ev_loop              *loop;
	const struct ntws_config    *cfg;
	const struct ntws_rds_hooks *hooks;
	redisAsyncContext *sub, *cmd;
	int                sub_ready;     /* SUBSCRIBE confirmed */
	int                cmd_ready;     /* AUTH/SELECT done */
	int                stopping;
	ev_timer           sub_retry, cmd_retry, tick;
	double             sub_backoff, cmd_backoff;
	ev_tstamp          tick_at;       /* when the tick last ran */
	uint32_t           pending;       /* commands unanswered on cmd */
	ev_tstamp          progress_at;   /* last reply, or first wait */
	ev_tstamp          hb_pub_at;     /* PUBLISH answered, awaiting echo */
	uint64_t           hb_next, hb_seen, hb_waiting;
	uint64_t           feed_gen;
	ev_tstamp          renew_at;      /* presence lease last renewed */
	ev_tstamp          rewrite_at;    /* presence set last rewritten */
	int                presence_stale; /* a write was refused: rewrite */
	double             presence_retry_s;
	uint32_t           rewrites;      /* presence rewrites unanswered */
	char               rewrite_why[160];
	ev_tstamp          presence_warned_at;
	uint64_t           refused_unreported; /* since the last warn line */
	ev_tstamp          sub_started, cmd_started;
	char               channel[NT_KEY_MAX];
	char               hb_channel[NT_KEY_MAX];
	char               presence_key[NT_KEY_MAX];
	char               instances_key[NT_KEY_MAX];
} r;

static void rds_connect(int which);

static void
schedule_retry(int which)
{
	ev_timer *t = which == SUB ? &r.sub_retry : &r.cmd_retry;
	double *b = which == SUB ? &r.sub_backoff : &r.cmd_backoff;

	if (r.stopping)
		return;
	*b = *b < BACKOFF_MIN ? BACKOFF_MIN : *b * 2;
	if (*b > BACKOFF_MAX)
		*b = BACKOFF_MAX;
	ev_timer_stop(r.loop, t);
	ev_timer_set(t, *b, 0.);
	ev_timer_start(r.loop, t);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	rds_connect(w == &r.sub_retry ? SUB : CMD);
}

static void
publish_state(void)
{
	ntws_m.redis_sub_up = (uint8_t)r.sub_ready;
	ntws_m.redis_cmd_up = (uint8_t)r.cmd_ready;
}

int
ntws_rds_sub_up(void)
{
	return r.sub_ready;
}

int
ntws_rds_cmd_up(void)
{
	return r.cmd_ready;
}

int
ntws_rds_ready(void)
{
	return r.sub_ready && r.cmd_ready;
}

uint64_t
ntws_rds_feed_gen(void)
{
	return r.feed_gen;
}

/* ---- commands on the command connection, counted for liveness ---- */

static void
answered(redisAsyncContext *ac)
{
	if (ac != r.cmd)
		return;   /* a replaced context's last NULL replies */
	if (r.pending > 0)
		r.pending--;
	r.progress_at = ev_now(r.loop);
}

static int
sent(int rc)
{
	if (rc != REDIS_OK)
		return -1;
	if (r.pending++ == 0)
		r.progress_at = ev_now(r.loop);
	return 0;
}

static void
count_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	answered(ac);
}

/* A command whose answer only proves progress. */
static int
cmd(redisCallbackFn *fn, void *priv, const char *fmt, ...)
{
	va_list ap;
	int rc;

	if (r.cmd == NULL)
		return -1;
	va_start(ap, fmt);
	rc = redisvAsyncCommand(r.cmd, fn != NULL ? fn : count_cb, priv, fmt, ap);
	va_end(ap);
	return sent(rc);
}

static int
cmd_argv(redisCallbackFn *fn, void *priv, int argc, const char **argv,
    const size_t *argvlen)
{
	if (r.cmd == NULL)
		return -1;
	return sent(redisAsyncCommandArgv(r.cmd, fn != NULL ? fn : count_cb,
	    priv, argc, argv, argvlen));
}

/* ---- log reads and read marks ---- */

/*
 * Scripts run by their SHA1 (EVALSHA), so that the text (1.8 KB for a
 * page read) is not sent, and hashed by Redis, with every call. Each new
 * command connection loads them first (SCRIPT LOAD, answered before any
 * later command); a NOSCRIPT all the same (SCRIPT FLUSH, a failover to a
 * replica that never saw them) re-sends that one call as EVAL, which
 * loads the script again.
 */
struct script {
	const char *text;
	char        sha[2 * SHA_DIGEST_LENGTH + 1];
};

static struct script script_read = { nt_lua_userlog_read, "" };
static struct script script_mark = { nt_lua_userlog_mark, "" };

static const char *
script_sha(struct script *s)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA_DIGEST_LENGTH];
	size_t i;

	if (s->sha[0] == '\0') {
		SHA1((const unsigned char *)s->text, strlen(s->text), md);
		for (i = 0; i < sizeof(md); i++) {
			s->sha[2 * i] = hex[md[i] >> 4];
			s->sha[2 * i + 1] = hex[md[i] & 15];
		}
		s->sha[2 * sizeof(md)] = '\0';
	}
	return s->sha;
}

static void
scripts_load(void)
{
	cmd(NULL, NULL, "SCRIPT LOAD %s", script_read.text);
	cmd(NULL, NULL, "SCRIPT LOAD %s", script_mark.text);
}

/*
 * One script call, with its key and arguments kept (packed, since calls
 * in flight are many while connections open) for a NOSCRIPT re-send.
 */
struct call {
	ntws_rds_reply_fn fn;
	void             *arg;
	struct script    *script;
	uint8_t           nargs;
	uint8_t           resent;
	char              buf[];     /* key\0 arg\0 ... */
};

static void call_cb(redisAsyncContext *ac, void *reply, void *priv);

/* Send q as EVALSHA, or after a NOSCRIPT as EVAL (which loads it). */
static int
call_send(struct call *q)
{
	const char *argv[4 + 8];
	const char *p = q->buf;
	int i;

	argv[0] = q->resent ? "EVAL" : "EVALSHA";
	argv[1] = q->resent ? q->script->text : script_sha(q->script);
	argv[2] = "1";
	for (i = 0; i < 1 + q->nargs; i++) {
		argv[3 + i] = p;
		p += strlen(p) + 1;
	}
	return cmd_argv(call_cb, q, 4 + q->nargs, argv, NULL);
}

static void
call_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;
	struct call *q = priv;

	answered(ac);
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR && !q->resent &&
	    ac == r.cmd && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
		q->resent = 1;
		if (call_send(q) == 0)
			return;
	}
	q->fn(reply, q->arg);
	free(q);
}

static int
eval(struct script *script, const char *user, const char *const *args,
    int nargs, ntws_rds_reply_fn fn, void *arg_fn)
{
	char key[NT_KEY_MAX];
	size_t len[9], total, off;
	struct call *q;
	int i, klen;

	if (!r.cmd_ready || nargs > 8 ||
	    (klen = nt_key_userlog(key, sizeof(key), r.cfg->prefix,
	    user)) < 0)
		return -1;
	len[0] = (size_t)klen + 1;
	total = len[0];
	for (i = 0; i < nargs; i++)
		total += (len[i + 1] = strlen(args[i]) + 1);
	if ((q = malloc(sizeof(*q) + total)) == NULL)
		return -1;
	q->fn = fn;
	q->arg = arg_fn;
	q->script = script;
	q->nargs = (uint8_t)nargs;
	q->resent = 0;
	memcpy(q->buf, key, len[0]);
	off = len[0];
	for (i = 0; i < nargs; i++) {
		memcpy(q->buf + off, args[i], len[i + 1]);
		off += len[i + 1];
	}
	if (call_send(q) != 0) {
		free(q);
		return -1;
	}
	return 0;
}

int
ntws_rds_read_page(const char *user, const char *mode, const char *arg,
    long long count, long long max_bytes, const char *epoch,
    ntws_rds_reply_fn fn, void *arg_fn)
{
	char cnt[24], maxb[24];
	const char *args[5];

	snprintf(cnt, sizeof(cnt), "%lld", count);
	snprintf(maxb, sizeof(maxb), "%lld", max_bytes);
	args[0] = mode;
	args[1] = arg != NULL ? arg : "";
	args[2] = cnt;
	args[3] = maxb;
	args[4] = epoch != NULL ? epoch : "";
	return eval(&script_read, user, args, 5, fn, arg_fn);
}

int
ntws_rds_mark(const char *user, const char *epoch, const char *pos,
    ntws_rds_reply_fn fn, void *arg_fn)
{
	const char *args[2] = { epoch, pos };

	return eval(&script_mark, user, args, 2, fn, arg_fn);
}

/* ---- presence ---- */

/*
 * Every presence write is checked. A refused one (out of memory under
 * maxmemory noeviction, a wrong type...) leaves the set in Redis short
 * of users who are still connected, and nothing else would add them
 * back: the lease renewal only extends what is there. So a refusal marks
 * the set stale, and the tick rewrites it whole, retrying sooner than
 * the renewal period (backing off to it) until Redis takes it. The lease
 * (an EXPIRE, which Redis runs even when out of memory) is renewed apart
 * from the rewrite, so the users already in the set stay online
 * meanwhile. Refusals log one line per PRESENCE_WARN_S, not one per
 * connection: under OOM every connect would otherwise log.
 */
#define PRESENCE_RETRY_MIN_S 1.0
#define PRESENCE_WARN_S      30.0

static void
presence_set_stale(int stale)
{
	r.presence_stale = stale;
	ntws_m.presence_stale = (uint8_t)stale;
}

static void
presence_refused(const char *why)
{
	ev_tstamp now = ev_now(r.loop);

	ntws_m.presence_errors++;
	r.refused_unreported++;
	if (r.presence_warned_at == 0 ||
	    now - r.presence_warned_at >= PRESENCE_WARN_S) {
		char since[64] = "";

		if (r.refused_unreported > 1)
			snprintf(since, sizeof(since), " (%llu since the last "
			    "report)", (unsigned long long)r.refused_unreported);
		nt_log_warn("redis: presence write refused%s, users connected "
		    "here may show offline until the set is rewritten: %s",
		    since, why);
		r.presence_warned_at = now;
		r.refused_unreported = 0;
	}
	if (!r.presence_stale)
		r.presence_retry_s = PRESENCE_RETRY_MIN_S;
	presence_set_stale(1);
}

/* The answer to a presence write: only a refusal matters. */
static void
presence_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;

	answered(ac);
	if (ac != r.cmd || rep == NULL || r.stopping)
		return;   /* a lost connection rewrites the set when back */
	if (rep->type == REDIS_REPLY_ERROR)
		presence_refused(rep->str);
}

/*
 * A command queued in the rewrite's MULTI: out of memory, Redis refuses
 * each one, and EXEC then only says EXECABORT. Keep the first reason for
 * the one refusal the rewrite counts.
 */
static void
rewrite_queued_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;

	answered(ac);
	if (ac == r.cmd && rep != NULL && rep->type == REDIS_REPLY_ERROR &&
	    r.rewrite_why[0] == '\0')
		snprintf(r.rewrite_why, sizeof(r.rewrite_why), "%s", rep->str);
}

static void
rewrite_exec_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;
	const char *why = NULL;
	size_t i;

	answered(ac);
	if (ac != r.cmd)
		return;
	r.rewrites = 0;
	if (rep == NULL || r.stopping) {
		r.rewrite_why[0] = '\0';
		return;
	}
	if (rep->type == REDIS_REPLY_ERROR)
		why = r.rewrite_why[0] != '\0' ? r.rewrite_why : rep->str;
	else if (rep->type == REDIS_REPLY_ARRAY) {
		for (i = 0; i < rep->elements && why == NULL; i++)
			if (rep->element[i]->type == REDIS_REPLY_ERROR)
				why = rep->element[i]->str;
	} else
		why = "unexpected reply to EXEC";
	if (why != NULL) {
		if (r.presence_stale) {
			r.presence_retry_s *= 2;
			if (r.presence_retry_s > NT_PRESENCE_RENEW_S)
				r.presence_retry_s = NT_PRESENCE_RENEW_S;
		}
		presence_refused(why);
	} else if (r.presence_stale) {
		/*
		 * Replies come in order: every refusal of a write sent before
		 * this rewrite has been seen, and the rewrite covers it.
		 */
		nt_log_info("redis: presence set written again (%zu users)",
		    ntws_users_count());
		presence_set_stale(0);
	}
	r.rewrite_why[0] = '\0';
}

struct rewrite {
	const char **argv;
	size_t       n, cap;
};

static void
rewrite_add(struct ntws_user *u, void *arg)
{
	struct rewrite *w = arg;

	if (u->nsess == 0)
		return;
	if (w->n == 0) {
		w->argv[w->n++] = "SADD";
		w->argv[w->n++] = r.presence_key;
	}
	w->argv[w->n++] = u->name;
	if (w->n == w->cap) {
		cmd_argv(rewrite_queued_cb, NULL, (int)w->n, w->argv, NULL);
		w->n = 0;
	}
}

/*
 * Write the whole set again, atomically: after a reconnect, when it
 * expired, or when a write was refused. Out of memory, Redis refuses the
 * whole transaction and the set stays as it was.
 */
static void
presence_rewrite(void)
{
	struct rewrite w = { NULL, 0, 514 };

	if (r.rewrites > 0)
		return;   /* the one in flight was sent later: it covers this */
	r.rewrite_at = ev_now(r.loop);
	if ((w.argv = malloc(w.cap * sizeof(*w.argv))) == NULL) {
		/* A DEL without the SADDs would empty it: try again later. */
		presence_set_stale(1);
		return;
	}
	r.rewrite_why[0] = '\0';
	cmd(rewrite_queued_cb, NULL, "MULTI");
	cmd(rewrite_queued_cb, NULL, "DEL %s", r.presence_key);
	ntws_users_each(rewrite_add, &w);
	if (w.n > 0)
		cmd_argv(rewrite_queued_cb, NULL, (int)w.n, w.argv, NULL);
	free(w.argv);
	cmd(rewrite_queued_cb, NULL, "EXPIRE %s %d", r.presence_key,
	    NT_PRESENCE_TTL_S);
	if (ntws_users_count() > 0)
		cmd(rewrite_queued_cb, NULL, "SADD %s %s", r.instances_key,
		    r.cfg->instance_id);
	if (cmd(rewrite_exec_cb, NULL, "EXEC") == 0)
		r.rewrites = 1;
}

void
ntws_rds_presence(const char *user, int add)
{
	if (!r.cmd_ready || r.stopping)
		return;   /* the rewrite after reconnecting covers it */
	if (add) {
		cmd(presence_cb, NULL, "SADD %s %s", r.presence_key, user);
		cmd(presence_cb, NULL, "EXPIRE %s %d", r.presence_key,
		    NT_PRESENCE_TTL_S);
		cmd(presence_cb, NULL, "SADD %s %s", r.instances_key,
		    r.cfg->instance_id);
	} else
		cmd(presence_cb, NULL, "SREM %s %s", r.presence_key, user);
}

void
ntws_rds_presence_clear(void)
{
	r.stopping = 1;
	if (!r.cmd_ready)
		return;
	cmd(NULL, NULL, "DEL %s", r.presence_key);
	cmd(NULL, NULL, "SREM %s %s", r.instances_key, r.cfg->instance_id);
}

int
ntws_rds_idle(void)
{
	return !r.cmd_ready || r.pending == 0;
}

static void
renew_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;

	answered(ac);
	if (ac != r.cmd || rep == NULL || r.stopping || !r.cmd_ready)
		return;
	if (rep->type == REDIS_REPLY_ERROR)
		presence_refused(rep->str);
	/* EXPIRE of a missing key: the set expired; write it again. */
	else if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0 &&
	    ntws_users_count() > 0) {
		presence_set_stale(1);
		presence_rewrite();
	}
}

/*
 * From the tick: renew the lease every NT_PRESENCE_RENEW_S, and rewrite
 * a stale set once its retry delay has passed.
 */
static void
presence_tick(ev_tstamp now)
{
	if (r.stopping)
		return;
	if (ntws_users_count() > 0 && now - r.renew_at >= NT_PRESENCE_RENEW_S) {
		r.renew_at = now;
		cmd(renew_cb, NULL, "EXPIRE %s %d", r.presence_key,
		    NT_PRESENCE_TTL_S);
		cmd(presence_cb, NULL, "SADD %s %s", r.instances_key,
		    r.cfg->instance_id);
	}
	if (r.presence_stale && r.rewrites == 0 &&
	    now - r.rewrite_at >= r.presence_retry_s)
		presence_rewrite();
}

/* ---- connection state ---- */

static void
both_ready_check(void)
{
	if (!ntws_rds_ready())
		return;
	nt_log_info("redis: connected and subscribed to %s", r.channel);
	if (r.hooks->on_ready != NULL)
		r.hooks->on_ready();
}

static void
set_cmd_down(void)
{
	r.cmd = NULL;
	r.cmd_ready = 0;
	r.pending = 0;
	r.hb_pub_at = 0;
	r.rewrites = 0;
	publish_state();
}

static void
set_sub_down(void)
{
	int was = r.sub_ready;

	r.sub = NULL;
	r.sub_ready = 0;
	r.hb_pub_at = 0;
	publish_state();
	if (was) {
		/* Messages may be missed from now on: nobody trusts the feed. */
		r.feed_gen++;
		if (r.hooks->on_feed_lost != NULL)
			r.hooks->on_feed_lost();
	}
}

static void
cmd_ready_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;

	answered(ac);
	if (rep == NULL)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		nt_log_err("redis: %s", rep->str);
		redisAsyncDisconnect(ac);
		return;
	}
	scripts_load();
	r.cmd_ready = 1;
	r.cmd_backoff = 0;
	publish_state();
	/* Users may have left while we could not tell Redis: start over. */
	presence_rewrite();
	both_ready_check();
}

static void
sub_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply, **e;
	uint64_t seq;

	if (rep == NULL)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
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
		if (strcmp(e[1]->str, r.hb_channel) == 0) {
			seq = strtoull(e[2]->str, NULL, 10);
			if (seq > r.hb_seen)
				r.hb_seen = seq;
			if (seq >= r.hb_waiting)
				r.hb_pub_at = 0;
		} else if (r.hooks->on_message != NULL)
			r.hooks->on_message(e[2]->str, e[2]->len);
	} else if (strcmp(e[0]->str, "subscribe") == 0 &&
	    strcmp(e[1]->str, r.channel) == 0) {
		r.sub_ready = 1;
		r.sub_backoff = 0;
		publish_state();
		both_ready_check();
	}
}

static void
auth_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;

	answered(ac);
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
		nt_log_err("redis: AUTH/SELECT refused: %s", rep->str);
		redisAsyncDisconnect(ac);
	}
}

static void
connect_cb(const redisAsyncContext *ac, int status)
{
	int which = ac == r.sub ? SUB : CMD;

	if (status == REDIS_OK)
		return;
	if (which == SUB) {
		r.sub = NULL;
		nt_log(r.sub_backoff >= BACKOFF_MAX ? NT_LOG_DEBUG : NT_LOG_WARN,
		    "redis: cannot connect: %s", ac->errstr);
	} else
		r.cmd = NULL;
	schedule_retry(which);
}

static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
	const char *why = ac->errstr[0] ? ac->errstr : "closed";

	if (ac == r.sub) {
		if (r.sub_ready && !r.stopping) {
			nt_log_warn("redis: subscriber connection lost: %s", why);
			ntws_m.redis_sub_reconnects++;
		}
		set_sub_down();
		schedule_retry(SUB);
	} else if (ac == r.cmd) {
		if (r.cmd_ready && !r.stopping) {
			nt_log_warn("redis: command connection lost: %s", why);
			ntws_m.redis_cmd_reconnects++;
		}
		set_cmd_down();
		schedule_retry(CMD);
	}
}

static void
rds_connect(int which)
{
	const struct nt_redis_url *u = &r.cfg->redis;
	redisAsyncContext *ac;

	if (r.stopping)
		return;
	ac = u->is_unix ? redisAsyncConnectUnix(u->path) :
	    redisAsyncConnect(u->host, u->port);
	if (ac == NULL || ac->err) {
		if (ac != NULL)
			redisAsyncFree(ac);
		schedule_retry(which);
		return;
	}
	redisLibevAttach(r.loop, ac);
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
	if (which == SUB) {
		r.sub = ac;
		r.sub_started = ev_now(r.loop);
	} else {
		r.cmd = ac;
		r.pending = 0;
		r.cmd_started = ev_now(r.loop);
	}
	if (u->password[0] != '\0') {
		if (u->username[0] != '\0')
			redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s %s",
			    u->username, u->password);
		else
			redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s", u->password);
	}
	/* Named, so that CLIENT LIST tells which instance and role it is. */
	redisAsyncCommand(ac, which == SUB ? NULL : count_cb, NULL,
	    "CLIENT SETNAME notifyd-ws:%s:%s", which == SUB ? "sub" : "cmd",
	    r.cfg->instance_id);
	if (which == SUB) {
		redisAsyncCommand(ac, sub_cb, NULL, "SUBSCRIBE %s %s", r.channel,
		    r.hb_channel);
	} else {
		if (u->db > 0)
			redisAsyncCommand(ac, auth_cb, NULL, "SELECT %d", u->db);
		redisAsyncCommand(ac, cmd_ready_cb, NULL, "PING");
	}
}

/* ---- liveness ---- */

static void
hb_pub_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	uint64_t seq = (uint64_t)(uintptr_t)priv;

	answered(ac);
	if (reply == NULL || !r.sub_ready || seq <= r.hb_seen)
		return;
	if (r.hb_pub_at == 0) {
		r.hb_pub_at = ev_now(r.loop);
		r.hb_waiting = seq;
	}
}

static void
drop(int which, const char *why)
{
	redisAsyncContext *ac = which == SUB ? r.sub : r.cmd;

	nt_log_warn("redis: %s, reconnecting", why);
	/*
	 * Calls every pending callback with NULL, then disconnect_cb when
	 * the connection was up; a connection still connecting gets no
	 * disconnect_cb, so its state is reset here.
	 */
	redisAsyncFree(ac);
	if (which == SUB && r.sub == ac) {
		set_sub_down();
		schedule_retry(SUB);
	} else if (which == CMD && r.cmd == ac) {
		set_cmd_down();
		schedule_retry(CMD);
	}
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_tstamp now = ev_now(loop);
	double tmo = r.cfg->redis_timeout;

	/*
	 * A late tick means the process did not run (stopped, starved): the
	 * replies may be waiting in the sockets, unread. The deadlines run
	 * from now, once they have had their chance to be read.
	 */
	if (r.tick_at > 0 && now - r.tick_at > 2 * w->repeat) {
		r.progress_at = now;
		if (r.hb_pub_at > 0)
			r.hb_pub_at = now;
	}
	r.tick_at = now;

	if (r.cmd != NULL && !r.cmd_ready && now - r.cmd_started > tmo)
		drop(CMD, "command connection: connect timeout");
	if (r.sub != NULL && !r.sub_ready && now - r.sub_started > tmo)
		drop(SUB, "subscriber connection: connect timeout");
	if (r.cmd != NULL && r.cmd_ready && r.pending > 0 &&
	    now - r.progress_at > tmo)
		drop(CMD, "command connection: no reply within --redis-timeout");
	if (r.sub != NULL && r.sub_ready && r.hb_pub_at > 0 &&
	    now - r.hb_pub_at > tmo)
		drop(SUB, "subscriber connection: heartbeat lost");
	if (!r.cmd_ready)
		return;
	if (r.pending == 0)
		cmd(NULL, NULL, "PING");
	if (r.sub_ready && r.hb_pub_at == 0) {
		uint64_t seq = r.hb_next++;
		cmd(hb_pub_cb, (void *)(uintptr_t)seq, "PUBLISH %s %llu",
		    r.hb_channel, (unsigned long long)seq);
	}
	presence_tick(now);
}

void
ntws_rds_start(struct ev_loop *loop, const struct ntws_config *cfg,
    const struct ntws_rds_hooks *hooks)
{
	double tick = cfg->redis_timeout / 3;
	char hb[NT_KEY_MAX];

	memset(&r, 0, sizeof(r));
	r.loop = loop;
	r.cfg = cfg;
	r.hooks = hooks;
	nt_key_channel(r.channel, sizeof(r.channel), cfg->prefix);
	snprintf(hb, sizeof(hb), "notifyd-ws:heartbeat:%s", cfg->instance_id);
	snprintf(r.hb_channel, sizeof(r.hb_channel), "%s%s", cfg->prefix, hb);
	nt_key_presence(r.presence_key, sizeof(r.presence_key), cfg->prefix,
	    cfg->instance_id);
	nt_key_presence_instances(r.instances_key, sizeof(r.instances_key),
	    cfg->prefix);
	r.hb_next = 1;
	ev_init(&r.sub_retry, retry_cb);
	ev_init(&r.cmd_retry, retry_cb);
	if (tick > 1.0)
		tick = 1.0;
	if (tick < 0.05)
		tick = 0.05;
	ev_timer_init(&r.tick, tick_cb, tick, tick);
	ev_timer_start(loop, &r.tick);
	rds_connect(SUB);
	rds_connect(CMD);
}

void
ntws_rds_stop(void)
{
	redisAsyncContext *sub = r.sub, *cmdc = r.cmd;

	r.stopping = 1;
	ev_timer_stop(r.loop, &r.tick);
	ev_timer_stop(r.loop, &r.sub_retry);
	ev_timer_stop(r.loop, &r.cmd_retry);
	if (sub != NULL)
		redisAsyncFree(sub);
	if (cmdc != NULL)
		redisAsyncFree(cmdc);
	r.sub = r.cmd = NULL;
	r.sub_ready = r.cmd_ready = 0;
	publish_state();
}
