#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nt_redis.h"

#define SET_ERR(...) do { if (err) snprintf(err, errlen, __VA_ARGS__); } while (0)

/*
 * Store and publish in one step, so that a message is never published
 * without being stored (a subscriber that misses it finds it offline),
 * nor stored after its publish could have been seen. If HSET fails (OOM)
 * the script stops there and nothing is published.
 * KEYS: offline key, channel. ARGV: id, json, ttl seconds.
 */
const char nt_lua_send_targeted[] =
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "return redis.call('PUBLISH', KEYS[2], ARGV[2])\n";

/*
 * Distinct users over the instances whose lease is alive. An instance
 * whose set has expired is dropped from the registry on the way.
 * KEYS: registry. ARGV: key prefix.
 */
const char nt_lua_online_count[] =
    "local live = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local k = ARGV[1] .. 'presence:' .. id\n"
    "  if redis.call('EXISTS', k) == 1 then live[#live + 1] = k\n"
    "  else redis.call('SREM', KEYS[1], id) end\n"
    "end\n"
    "if #live == 0 then return 0 end\n"
    "if #live == 1 then return redis.call('SCARD', live[1]) end\n"
    "return #redis.call('SUNION', unpack(live))\n";

/* KEYS: registry. ARGV: key prefix, user. */
const char nt_lua_user_online[] =
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if redis.call('SISMEMBER', ARGV[1] .. 'presence:' .. id, ARGV[2]) == 1 then\n"
    "    return 1\n"
    "  end\n"
    "end\n"
    "return 0\n";

static int
key_fmt(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return (n < 0 || (size_t)n >= len) ? -1 : n;
}

int
nt_key_channel(char *buf, size_t len, const char *prefix)
{
	return key_fmt(buf, len, "%snotifications", prefix);
}

int
nt_key_offline(char *buf, size_t len, const char *prefix, const char *user)
{
	return key_fmt(buf, len, "%soffline:%s", prefix, user);
}

int
nt_key_presence_instances(char *buf, size_t len, const char *prefix)
{
	return key_fmt(buf, len, "%spresence:instances", prefix);
}

int
nt_key_presence(char *buf, size_t len, const char *prefix,
    const char *instance_id)
{
	return key_fmt(buf, len, "%spresence:%s", prefix, instance_id);
}

/* Run one command and require a status/any non-error reply. */
static int
simple_command(redisContext *c, char *err, size_t errlen, const char *what,
    int argc, const char **argv)
{
	redisReply *r = redisCommandArgv(c, argc, argv, NULL);

	if (r == NULL) {
		SET_ERR("redis %s: %s", what, c->errstr);
		return -1;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		SET_ERR("redis %s: %s", what, r->str);
		freeReplyObject(r);
		return -1;
	}
	freeReplyObject(r);
	return 0;
}

redisContext *
nt_redis_connect(const struct nt_redis_url *url, int timeout_ms, char *err,
    size_t errlen)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	redisContext *c;
	char db[16];

	if (url->is_unix)
		c = redisConnectUnixWithTimeout(url->path, tv);
	else
		c = redisConnectWithTimeout(url->host, url->port, tv);
	if (c == NULL) {
		SET_ERR("redis: out of memory");
		return NULL;
	}
	if (c->err) {
		if (url->is_unix)
			SET_ERR("redis at %s: %s", url->path, c->errstr);
		else
			SET_ERR("redis at %s:%d: %s", url->host, url->port, c->errstr);
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (!url->is_unix)
		redisEnableKeepAlive(c);
	if (url->password[0] != '\0') {
		const char *argv[3] = { "AUTH", url->username, url->password };
		int rc = url->username[0] ?
		    simple_command(c, err, errlen, "AUTH", 3, argv) :
		    simple_command(c, err, errlen, "AUTH", 2,
		        (const char *[]){ "AUTH", url->password });
		if (rc < 0)
			goto fail;
	}
	if (url->db > 0) {
		snprintf(db, sizeof(db), "%d", url->db);
		if (simple_command(c, err, errlen, "SELECT", 2,
		    (const char *[]){ "SELECT", db }) < 0)
			goto fail;
	}
	return c;
fail:
	redisFree(c);
	return NULL;
}

int
nt_redis_send_append(redisContext *c, const struct nt_store *st,
    const char *user, const char *id, const char *json, size_t len)
{
	char chan[NT_KEY_MAX], off[NT_KEY_MAX], ttl[24];

	if (nt_key_channel(chan, sizeof(chan), st->prefix) < 0)
		return -1;
	if (user == NULL)
		return redisAppendCommand(c, "PUBLISH %s %b", chan, json, len) ==
		    REDIS_OK ? 0 : -1;
	if (nt_key_offline(off, sizeof(off), st->prefix, user) < 0)
		return -1;
	snprintf(ttl, sizeof(ttl), "%lld", st->offline_ttl_s);
	return redisAppendCommand(c, "EVAL %s 2 %s %s %s %b %s",
	    nt_lua_send_targeted, off, chan, id, json, len, ttl) == REDIS_OK ?
	    0 : -1;
}

int
nt_redis_send_read(redisContext *c, long long *receivers, char *err,
    size_t errlen)
{
	redisReply *r = NULL;

	if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL) {
		SET_ERR("redis: %s", c->err ? c->errstr : "no reply");
		return -1;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		/* Lua wraps the refusal: keep Redis's own words (e.g. OOM). */
		SET_ERR("redis refused the message: %s", r->str);
		freeReplyObject(r);
		return -1;
	}
	if (receivers)
		*receivers = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	freeReplyObject(r);
	return 0;
}

int
nt_redis_send(redisContext *c, const struct nt_store *st, const char *user,
    const char *id, const char *json, size_t len, long long *receivers,
    char *err, size_t errlen)
{
	if (nt_redis_send_append(c, st, user, id, json, len) < 0) {
		SET_ERR("redis: cannot queue the command (key too long?)");
		return -1;
	}
	return nt_redis_send_read(c, receivers, err, errlen);
}

static int
integer_script(redisContext *c, const char *script, const char *prefix,
    const char *user, long long *out, char *err, size_t errlen)
{
	char reg[NT_KEY_MAX];
	redisReply *r;

	if (nt_key_presence_instances(reg, sizeof(reg), prefix) < 0) {
		SET_ERR("redis: prefix too long");
		return -1;
	}
	if (user)
		r = redisCommand(c, "EVAL %s 1 %s %s %s", script, reg, prefix, user);
	else
		r = redisCommand(c, "EVAL %s 1 %s %s", script, reg, prefix);
	if (r == NULL) {
		SET_ERR("redis: %s", c->errstr);
		return -1;
	}
	if (r->type != REDIS_REPLY_INTEGER) {
		SET_ERR("redis: %s", r->type == REDIS_REPLY_ERROR ? r->str :
		    "unexpected reply");
		freeReplyObject(r);
		return -1;
	}
	*out = r->integer;
	freeReplyObject(r);
	return 0;
}

int
nt_redis_online_count(redisContext *c, const char *prefix, long long *count,
    char *err, size_t errlen)
{
	return integer_script(c, nt_lua_online_count, prefix, NULL, count, err,
	    errlen);
}

int
nt_redis_user_online(redisContext *c, const char *prefix, const char *user,
    int *online, char *err, size_t errlen)
{
	long long v;

	if (integer_script(c, nt_lua_user_online, prefix, user, &v, err,
	    errlen) < 0)
		return -1;
	*online = v != 0;
	return 0;
}
