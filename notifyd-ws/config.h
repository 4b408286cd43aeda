/*
 * The settings of notifyd-ws, as main.c reads them from its flag table
 * (flags, then NOTIFYD_* variables, then defaults). Filled once before
 * the loop starts and read-only afterwards: every module keeps a pointer.
 */
#ifndef NTWS_CONFIG_H
#define NTWS_CONFIG_H

#include <stddef.h>

#include "nt_opt.h"
#include "nt_proxy.h"
#include "nt_redis.h"

struct ntws_config {
	struct nt_opt_listen listen;
	struct nt_redis_url  redis;
	const char          *prefix;
	const char          *instance_id;
	const char          *allowed_origins;  /* NULL: any */
	struct nt_proxy_list trusted_proxies;  /* may set X-Forwarded-For */
	int                  reuseport;
	int                  demo;
	size_t               max_message;
	size_t               send_queue_max;    /* per connection */
	size_t               max_queued_bytes;  /* process: frames + pages */
	long long            max_channels;
	long long            max_conns_per_user;
	const char          *private_prefix;    /* "": every channel */
	double               jwt_leeway;        /* seconds: token ends at exp + it */
	double               jwt_max_age;       /* seconds, 0: off; a token ends at iat + it */
	double               ping_interval;     /* seconds */
	double               ping_timeout;
	double               write_timeout;
	double               handshake_timeout;
	double               shutdown_timeout;
	double               redis_timeout;
	int                  ready_fd;
};

#endif
