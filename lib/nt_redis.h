/*
 * nt_redis: the Redis contract of notifyd(7) in code: key names,
 * connections and presence queries (each user's log is nt_userlog).
 * Synchronous helpers use a blocking hiredis context; the key builders
 * are shared with the asynchronous code of notifyd-ws.
 */
#ifndef NT_REDIS_H
#define NT_REDIS_H

#include <stddef.h>
#include <hiredis/hiredis.h>
#include "nt_config.h"
#include "nt_opt.h"

#define NT_KEY_MAX 512

#define NT_DEFAULT_OFFLINE_TTL_S (7 * 24 * 3600)
#define NT_PRESENCE_TTL_S   30  /* lease of an instance's presence set */
#define NT_PRESENCE_RENEW_S 10  /* how often an instance renews it */

/*
 * Key builders: write prefix + name into buf (NUL-terminated).
 * Return the length, or -1 when it does not fit.
 */
int nt_key_channel(char *buf, size_t len, const char *prefix);
int nt_key_presence_instances(char *buf, size_t len, const char *prefix);
int nt_key_presence(char *buf, size_t len, const char *prefix,
    const char *instance_id);

/*
 * Connect with a timeout (also used for every later command), then AUTH
 * and SELECT as the URL says, or PING when it says neither: the first
 * answer proves that the server speaks Redis. Returns a context or NULL
 * with err set. The caller frees it with redisFree().
 *
 * err is one line that names the URL, its password masked, and says
 * where the user sets it when where is not NULL (where is e.g.
 * NT_REDIS_URL_WHERE):
 *   cannot connect to Redis at URL (set with WHERE): Connection refused
 *   cannot connect to Redis at URL (set with WHERE): no answer within N ms
 *   URL (set with WHERE) is not a Redis server (it answered "HTTP/1.1 400")
 *   Redis at URL (set with WHERE) refused AUTH: WRONGPASS ...
 * nt_redis_connect is nt_redis_connect_where without where.
 */
redisContext *nt_redis_connect_where(const struct nt_redis_url *url,
    const char *where, int timeout_ms, char *err, size_t errlen);
redisContext *nt_redis_connect(const struct nt_redis_url *url,
    int timeout_ms, char *err, size_t errlen);

/*
 * nt_opt parsers of the two settings every program has. nt_redis_opt_url:
 * dst is a struct nt_redis_url *, filled by nt_redis_url_parse.
 * nt_redis_opt_prefix: dst is a const char **, checked by nt_prefix_valid;
 * the value is borrowed.
 */
int nt_redis_opt_url(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);
int nt_redis_opt_prefix(const struct nt_opt *o, const char *value,
    char *err, size_t errlen);

/*
 * The --redis and --redis-prefix entries of a program's nt_opt table, so
 * that every program spells the flags, variables, defaults and help the
 * same way; NT_REDIS_URL_WHERE names them for nt_redis_connect_where.
 */
#define NT_REDIS_OPT_URL(dst) \
	{ "redis", 0, "URL", "NOTIFYD_REDIS_URL", NT_DEFAULT_REDIS_URL, \
	  nt_redis_opt_url, (dst), 0, 0, \
	  "the Redis server: redis://[[user]:password@]host[:port][/db] " \
	  "or unix:///path[?db=N]" }
#define NT_REDIS_OPT_PREFIX(dst) \
	{ "redis-prefix", 0, "PREFIX", "NOTIFYD_REDIS_PREFIX", "", \
	  nt_redis_opt_prefix, (dst), 0, 0, \
	  "put before every Redis key and the channel name, so that " \
	  "deployments can share one Redis (default: none)" }
#define NT_REDIS_URL_WHERE "--redis or NOTIFYD_REDIS_URL"

/*
 * Presence (see notifyd(7)): distinct users connected to any live
 * notifyd-ws instance, and whether one user is. 0 or -1 with err set.
 */
int nt_redis_online_count(redisContext *c, const char *prefix,
    long long *count, char *err, size_t errlen);
int nt_redis_user_online(redisContext *c, const char *prefix,
    const char *user, int *online, char *err, size_t errlen);

/* The Lua sources, for code that runs them asynchronously. */
extern const char nt_lua_online_count[];
extern const char nt_lua_user_online[];

#endif
