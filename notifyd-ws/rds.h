/*
 * rds: the Redis side of notifyd-ws. Two hiredis async connections on
 * the libev loop: the subscriber, which brings the notifications channel
 * (the live feed), and the command connection, which reads pages of the
 * users' logs, writes read marks and keeps this instance's presence.
 * Both reconnect with backoff, forever; liveness is checked here (see
 * rds.c). What arrives goes up through the hooks given to
 * ntws_rds_start(); nothing here knows users' connections.
 */
#ifndef NTWS_RDS_H
#define NTWS_RDS_H

#include <stddef.h>
#include <stdint.h>
#include <ev.h>
#include <hiredis/hiredis.h>

#include "config.h"

struct ntws_rds_hooks {
	/* One message of the notifications channel, borrowed for the call. */
	void (*on_message)(const char *json, size_t len);
	/*
	 * The subscription was lost (or is no longer trusted): messages
	 * published from now on until the next on_ready may never arrive.
	 */
	void (*on_feed_lost)(void);
	/*
	 * Both connections are up and the subscription is live (again):
	 * what is read from the logs from now on misses nothing that the
	 * feed will not bring.
	 */
	void (*on_ready)(void);
};

/*
 * A command's answer: r is the reply, borrowed for the call, or NULL
 * when the command connection was lost before it came (or at stop).
 * Called exactly once per command that was sent.
 */
typedef void (*ntws_rds_reply_fn)(const redisReply *r, void *arg);

/* Connect both and keep them up; hooks and cfg borrowed for good. */
void ntws_rds_start(struct ev_loop *loop, const struct ntws_config *cfg,
    const struct ntws_rds_hooks *hooks);

/* Close both now; replies still awaited get NULL. */
void ntws_rds_stop(void);

/* The subscriber is subscribed; the command connection is ready; both. */
int ntws_rds_sub_up(void);
int ntws_rds_cmd_up(void);
int ntws_rds_ready(void);

/*
 * Counts the losses of the subscription: a log read sent while it had
 * one value and answered while it still has it was read while the live
 * feed was whole.
 */
uint64_t ntws_rds_feed_gen(void);

/*
 * Read one page of user's log (nt_userlog.h: mode, arg, count,
 * max_bytes, epoch; every string copied). 0 when sent (fn is then called
 * once), -1 when the command connection is down or out of memory (fn is
 * never called).
 */
int ntws_rds_read_page(const char *user, const char *mode, const char *arg,
    long long count, long long max_bytes, const char *epoch,
    ntws_rds_reply_fn fn, void *arg_fn);

/*
 * Raise user's read mark (nt_userlog.h: the log's epoch, and a position
 * or "i:" + id). 0 when sent, -1 as above.
 */
int ntws_rds_mark(const char *user, const char *epoch, const char *pos,
    ntws_rds_reply_fn fn, void *arg_fn);

/*
 * A user is now connected here (add) or no longer (!add). While the
 * command connection is down this is dropped: the set is written whole
 * from the user table when it is back. A write Redis refuses (e.g. out
 * of memory) is counted in ntws_m.presence_errors, logged (rate-limited)
 * and makes the set stale: it is written whole again, retried from the
 * tick until Redis takes it. user is copied.
 */
void ntws_rds_presence(const char *user, int add);

/* At shutdown: take this instance's presence out of Redis. */
void ntws_rds_presence_clear(void);

/* Nothing is waiting for Redis (or Redis is away): shutdown may end. */
int ntws_rds_idle(void);

#endif
