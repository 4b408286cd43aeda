/*
 * The request deadline of watchdog.h: a list of connections under one
 * mutex, and a thread that walks it every tick. The mutex also orders
 * removal against shutdown(): libmicrohttpd calls the CLOSED
 * notification before it closes the descriptor, so a descriptor is only
 * ever shut down while its connection is registered, never after the
 * number was handed to a new connection.
 */
#include <linux/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api.h"
#include "nt_log.h"
#include "watchdog.h"

enum watch_state {
	WATCH_IDLE,       /* between requests: waiting for a first byte */
	WATCH_RECEIVING,  /* a request is arriving: the deadline is armed */
	WATCH_ANSWERING,  /* the request is in; being handled or answered */
	WATCH_DROPPED,    /* shut down; waiting for libmicrohttpd to close */
};

struct api_watch {
	struct api_watch *prev, *next;
	int      fd;
	enum watch_state state;
	uint64_t start_us;       /* RECEIVING: when the request began */
	uint64_t idle_us;        /* IDLE: since when */
	uint64_t bytes_mark;     /* IDLE: bytes received when it went idle */
	char     peer[64];
};

struct api_watchdog {
	pthread_mutex_t   lock;     /* the list and every entry's state */
	pthread_cond_t    wake;     /* stop */
	pthread_t         thread;
	struct api_watch *head;
	uint64_t          limit_us;
	uint64_t          last_tick_us;
	int               stopping;
};

/* Bytes the kernel has received on fd; 0 when it cannot tell. */
static uint64_t
bytes_received(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return 0;
	return ti.tcpi_bytes_received;
}

/* A first byte since the connection went idle? Then a request began,
 * at the earliest just after the previous tick. Lock held. */
static void
check_idle(struct api_watchdog *w, struct api_watch *e)
{
	if (bytes_received(e->fd) <= e->bytes_mark)
		return;
	e->state = WATCH_RECEIVING;
	e->start_us = e->idle_us > w->last_tick_us ? e->idle_us :
	    w->last_tick_us;
}

/* Lock held. */
static void
check_deadline(struct api_watchdog *w, struct api_watch *e, uint64_t now)
{
	if (now - e->start_us <= w->limit_us)
		return;
	/* Wakes the worker that owns the connection: its next read ends. */
	shutdown(e->fd, SHUT_RDWR);
	e->state = WATCH_DROPPED;
	api_metrics_request_timeout();
	nt_log_warn("closed a connection from %s: no whole request within "
	    "--request-timeout (%.1fs)", e->peer, (double)w->limit_us / 1e6);
}

static void
tick(struct api_watchdog *w)
{
	uint64_t now = api_now_us();

	for (struct api_watch *e = w->head; e != NULL; e = e->next) {
		if (e->state == WATCH_IDLE)
			check_idle(w, e);
		if (e->state == WATCH_RECEIVING)
			check_deadline(w, e, now);
	}
	w->last_tick_us = now;
}

static void *
watchdog_main(void *arg)
{
	struct api_watchdog *w = arg;
	struct timespec until;

	pthread_mutex_lock(&w->lock);
	while (!w->stopping) {
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += WATCHDOG_TICK_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->wake, &w->lock, &until);
		if (!w->stopping)
			tick(w);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int
api_watchdog_start(uint64_t limit_us, struct api_watchdog **out, char *err,
    size_t errlen)
{
	struct api_watchdog *w = calloc(1, sizeof(*w));
	pthread_condattr_t ca;
	int rc;

	if (w == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	w->limit_us = limit_us;
	w->last_tick_us = api_now_us();
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->wake, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = pthread_create(&w->thread, NULL, watchdog_main, w)) != 0) {
		snprintf(err, errlen, "cannot start the watchdog thread: %s",
		    strerror(rc));
		pthread_cond_destroy(&w->wake);
		pthread_mutex_destroy(&w->lock);
		free(w);
		return -1;
	}
	*out = w;
	return 0;
}

void
api_watchdog_stop(struct api_watchdog *w)
{
	struct api_watch *e, *next;

	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = 1;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	for (e = w->head; e != NULL; e = next) {
		next = e->next;
		free(e);
	}
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

struct api_watch *
api_watch_add(struct api_watchdog *w, int fd, const char *peer)
{
	struct api_watch *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	e->fd = fd;
	/* A new connection's first request is timed from the accept, as
	 * nginx's client_header_timeout is: a socket that sends nothing at
	 * all holds its slot no longer than one that drips. */
	e->state = WATCH_RECEIVING;
	e->start_us = api_now_us();
	snprintf(e->peer, sizeof(e->peer), "%s", peer);
	pthread_mutex_lock(&w->lock);
	e->next = w->head;
	if (w->head != NULL)
		w->head->prev = e;
	w->head = e;
	pthread_mutex_unlock(&w->lock);
	return e;
}

void
api_watch_remove(struct api_watchdog *w, struct api_watch *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		w->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	pthread_mutex_unlock(&w->lock);
	free(e);
}

void
api_watch_request(struct api_watchdog *w, struct api_watch *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	if (e->state == WATCH_IDLE || e->state == WATCH_ANSWERING) {
		e->state = WATCH_RECEIVING;
		e->start_us = api_now_us();
	}
	pthread_mutex_unlock(&w->lock);
}

void
api_watch_received(struct api_watchdog *w, struct api_watch *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	if (e->state != WATCH_DROPPED)
		e->state = WATCH_ANSWERING;
	pthread_mutex_unlock(&w->lock);
}

void
api_watch_idle(struct api_watchdog *w, struct api_watch *e)
{
	uint64_t mark;

	if (e == NULL)
		return;
	/* Read outside the lock: a syscall, and only this thread closes fd. */
	mark = bytes_received(e->fd);
	pthread_mutex_lock(&w->lock);
	if (e->state != WATCH_DROPPED) {
		e->state = WATCH_IDLE;
		e->idle_us = api_now_us();
		e->bytes_mark = mark;
	}
	pthread_mutex_unlock(&w->lock);
}
