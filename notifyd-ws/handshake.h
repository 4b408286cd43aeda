/*
 * handshake: the HTTP front of notifyd-ws. It reads each new
 * connection's request head (http.h) and answers it: the probes
 * (/livez, /readyz, /healthz), /metrics, the client assets, or the
 * WebSocket upgrade of /ws/notifications with its JWT, whose connection
 * it then hands to the delivery layer (deliver.h). Plain HTTP answers
 * close their connection: there is no keep-alive.
 */
#ifndef NTWS_HANDSHAKE_H
#define NTWS_HANDSHAKE_H

#include "config.h"
#include "conn.h"
#include "nt_jwt.h"

/* The hooks of a connection still reading its request head. */
extern const struct ntws_conn_hooks ntws_handshake_hooks;

/* Set up with cfg and jwt (both borrowed for the process's life). */
void ntws_handshake_init(const struct ntws_config *cfg,
    struct nt_jwt_verifier *jwt);

/* From now on requests get 503 "shutting down". */
void ntws_handshake_shutdown(void);

#endif
