/*
 * One Redis connection per libmicrohttpd worker thread, made on first
 * use and remade after an error. A pthread key (not __thread) so that
 * each worker's context is freed by the key's destructor when
 * MHD_stop_daemon joins the thread.
 *
 * Blocking hiredis calls are fine here: a worker only ever waits for its
 * own connection, with the --redis-timeout bound, while the other
 * workers go on serving.
 */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "api.h"
#include "nt_log.h"
#include "nt_redis.h"

/* After a failed connect, answer 503 at once for this long. */
#define RETRY_BACKOFF_US 200000

struct store_slot {
	redisContext *c;
	uint64_t      retry_at_us;
	int           failing;   /* the last connect failed (logged once) */
};

static pthread_key_t slot_key;
static const struct api_config *store_cfg;
/* When a worker last connected: a sign for the others that Redis is
 * back, so they skip the rest of their back-off. */
static uint64_t last_connect_us;

uint64_t
api_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
slot_free(void *p)
{
	struct store_slot *s = p;

	if (s->c != NULL)
		redisFree(s->c);
	free(s);
}

int
api_store_init(const struct api_config *cfg)
{
	store_cfg = cfg;
	return pthread_key_create(&slot_key, slot_free) == 0 ? 0 : -1;
}

void
api_store_fini(void)
{
	struct store_slot *s = pthread_getspecific(slot_key);

	if (s != NULL) {
		slot_free(s);
		pthread_setspecific(slot_key, NULL);
	}
	pthread_key_delete(slot_key);
}

static struct store_slot *
slot_get(void)
{
	struct store_slot *s = pthread_getspecific(slot_key);

	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL || pthread_setspecific(slot_key, s) != 0) {
			free(s);
			return NULL;
		}
	}
	return s;
}

/*
 * No reply is pending between requests, so anything readable on the
 * socket means the server closed it (restart, idle timeout). Checking
 * costs one poll() and spares the request a certain failure: a send on
 * a dead connection could not be retried safely.
 */
static int
still_open(const redisContext *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 0;
}

redisContext *
api_store_get(char *err, size_t errlen)
{
	struct store_slot *s = slot_get();
	char detail[512];
	uint64_t now;

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (s->c != NULL && s->c->err == 0 && still_open(s->c))
		return s->c;
	if (s->c != NULL) {
		redisFree(s->c);
		s->c = NULL;
	}
	now = api_now_us();
	if (now < s->retry_at_us && __atomic_load_n(&last_connect_us,
	    __ATOMIC_RELAXED) < s->retry_at_us - RETRY_BACKOFF_US) {
		snprintf(err, errlen, "redis unavailable (retrying)");
		return NULL;
	}
	s->c = nt_redis_connect_where(&store_cfg->redis, NT_REDIS_URL_WHERE,
	    store_cfg->redis_timeout_ms, detail, sizeof(detail));
	if (s->c == NULL) {
		/*
		 * The reason names the Redis server: it is for the operator's
		 * log, once per outage and worker, not for callers, who may
		 * not even have credentials (/readyz).
		 */
		if (!s->failing)
			nt_log_warn("%s", detail);
		s->failing = 1;
		s->retry_at_us = now + RETRY_BACKOFF_US;
		api_metrics_redis_error();
		snprintf(err, errlen, "redis unavailable");
	} else {
		if (s->failing)
			nt_log_info("connected to Redis again");
		s->failing = 0;
		__atomic_store_n(&last_connect_us, api_now_us(), __ATOMIC_RELAXED);
	}
	return s->c;
}

void
api_store_drop(void)
{
	struct store_slot *s = pthread_getspecific(slot_key);

	if (s != NULL && s->c != NULL) {
		redisFree(s->c);
		s->c = NULL;
	}
}
