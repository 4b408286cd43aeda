/*
 * watchdog: a deadline on receiving each whole request (head and body),
 * counted from its first byte (a connection's first request: from the
 * accept), which libmicrohttpd does not have: its
 * --connection-timeout is an idle timer that every byte resets, so a
 * client dripping one byte at a time holds a connection slot for ever.
 *
 * http.c registers each TCP connection (MHD_CONNECTION_NOTIFY_STARTED)
 * and reports where its current request stands; a thread checks the
 * table every WATCHDOG_TICK_MS and shuts down (shutdown(2), never
 * close(2): the descriptor stays libmicrohttpd's) the socket of a
 * request that is still arriving past the deadline. libmicrohttpd then
 * sees the connection end and closes it as it would any other.
 *
 * Between requests on a keep-alive connection nothing is armed (the
 * idle timeout covers that); the next request's first byte is noticed
 * from the socket's byte count (TCP_INFO), to within one tick.
 */
#ifndef NOTIFYD_API_WATCHDOG_H
#define NOTIFYD_API_WATCHDOG_H

#include <stdint.h>
#include <stddef.h>

#define WATCHDOG_TICK_MS 100

struct api_watchdog;
struct api_watch;    /* one connection's entry */

/* Start the thread; limit_us is --request-timeout. 0 or -1 with err. */
int api_watchdog_start(uint64_t limit_us, struct api_watchdog **out,
    char *err, size_t errlen);

/* Join the thread and free the table; NULL is fine. Call only after
 * libmicrohttpd has stopped (every entry removed). */
void api_watchdog_stop(struct api_watchdog *w);

/*
 * A new connection on fd, from peer (copied, for the log line). Its
 * first request's deadline runs from now. NULL when out of memory: the
 * connection then goes
 * unwatched, which only loses the deadline.
 */
struct api_watch *api_watch_add(struct api_watchdog *w, int fd,
    const char *peer);

/*
 * The connection is closing, before libmicrohttpd closes fd: from here
 * on the watchdog never touches fd (which may be reused). Frees e;
 * NULL is fine.
 */
void api_watch_remove(struct api_watchdog *w, struct api_watch *e);

/* A request's headers are in: arm the deadline if no byte of it was
 * seen yet (a pipelined request read along with the one before). */
void api_watch_request(struct api_watchdog *w, struct api_watch *e);

/* The whole request is in and is being answered: disarm. */
void api_watch_received(struct api_watchdog *w, struct api_watch *e);

/* The request is over: wait for the next one's first byte. */
void api_watch_idle(struct api_watchdog *w, struct api_watch *e);

#endif
