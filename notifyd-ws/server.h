/*
 * server: the top of notifyd-ws. It listens and accepts, wires the
 * modules together (the HTTP front's hooks for new connections, the
 * delivery layer's for Redis), runs the per-iteration work (flush, reap,
 * page read slots, read marks), says when it is ready, and handles the
 * signals: SIGTERM/SIGINT for a graceful shutdown, SIGHUP to reload the
 * JWT key.
 */
#ifndef NTWS_SERVER_H
#define NTWS_SERVER_H

#include <stddef.h>
#include <ev.h>

#include "config.h"
#include "nt_jwt.h"

/*
 * Listen and start every module on loop; cfg and jwt are borrowed until
 * ntws_server_free(). 0, or -1 with a reason in err (the caller then
 * still calls ntws_server_free()).
 */
int ntws_server_init(struct ev_loop *loop, struct ntws_config *cfg,
    struct nt_jwt_verifier *jwt, char *err, size_t errlen);

/* After ev_run returned: close and free everything. */
void ntws_server_free(void);

#endif
