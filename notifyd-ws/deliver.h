/*
 * deliver: what each connection of a user gets, and when. Every
 * authenticated connection is a session with a cursor, its position in
 * its user's log (notifyd(7)): it takes live targeted messages while
 * they come in order, and reads the log after its cursor, in pages, to
 * catch up whenever it cannot trust them (connecting, a position
 * skipped, the subscription lost, memory short). It also keeps the read
 * marks, the channels each connection listens to and answers what
 * clients send (proto.h). Redis comes in through ntws_deliver_redis_hooks,
 * connections through the hooks it gives each one it adopts.
 */
#ifndef NTWS_DELIVER_H
#define NTWS_DELIVER_H

#include <time.h>
#include <ev.h>

#include "config.h"
#include "conn.h"
#include "rds.h"

/* The hooks to give ntws_rds_start(). */
extern const struct ntws_rds_hooks ntws_deliver_redis_hooks;

/* Set up with cfg (borrowed for the process's life). 0, or -1. */
int ntws_deliver_init(struct ev_loop *loop, const struct ntws_config *cfg);

/* Free what is left (after ntws_conn_free_all and ntws_rds_stop). */
void ntws_deliver_free(void);

/*
 * Take c, just upgraded and authenticated as user (copied), for
 * delivery: since is the id to resume after (copied; the caller checked
 * it is an id) or NULL for the user's unread messages; ack selects
 * acknowledgement mode; grants are the private channels its token opens
 * (a block of grants.h, taken: freed with the session or at once; NULL:
 * none); at close_at (seconds since the epoch; 0: never) c is closed
 * with 4002 "token expired", within a second or so. Over
 * --max-conns-per-user, c is closed with 1013 instead. From here on c's
 * hooks are this module's.
 */
void ntws_deliver_attach(struct ntws_conn *c, const char *user,
    const char *since, int ack, char *grants, time_t close_at);

/*
 * Between loop iterations: give page read slots to the connections
 * waiting for one, and write the read marks that wait.
 */
void ntws_deliver_tick(void);

/* Nothing is left to write to Redis (or it is away): shutdown may end. */
int ntws_deliver_idle(void);

#endif
