/*
 * nt_sdnotify: tell systemd about the daemon's state (sd_notify(3)'s
 * protocol, without libsystemd), so that units can be Type=notify.
 */
#ifndef NT_SDNOTIFY_H
#define NT_SDNOTIFY_H

#include <stddef.h>

/*
 * Send state, e.g. "READY=1\n", "RELOADING=1\n" or "STOPPING=1\n", as one
 * datagram to the socket named by $NOTIFY_SOCKET: a path, or an abstract
 * socket written "@name". state is borrowed and sent as it is.
 *
 * Returns 0 when it was sent, and also when $NOTIFY_SOCKET is unset or
 * empty (not started by systemd: there is nobody to tell). Returns -1,
 * with the reason in err (at most errlen bytes, NUL-terminated), when the
 * variable names no usable socket or the datagram cannot be sent.
 */
int nt_sdnotify(const char *state, char *err, size_t errlen);

#endif
