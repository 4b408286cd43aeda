#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "nt_redis.h"

#define SET_ERR(...) do { if (err) snprintf(err, errlen, __VA_ARGS__); } while (0)

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

/* How far a connection got, for the wording of its error. */
enum connect_failure {
	FAILED_TO_CONNECT,  /* no socket, or no usable answer on it */
	FAILED_NOT_REDIS,   /* something answered, but not in RESP */
	FAILED_REFUSED,     /* Redis answered a handshake command with an error */
};

/* The most of a foreign answer worth quoting in a one-line message. */
#define ANSWER_QUOTE_MAX 60

/*
 * The first line of an answer, quoted: printable ASCII as is, '"' and
 * '\' escaped, other bytes as \xNN, cut at ANSWER_QUOTE_MAX bytes.
 */
static void
quote_answer(const unsigned char *b, size_t n, char *out, size_t outlen)
{
	size_t i, o = 0;

	for (i = 0; i < n && i < ANSWER_QUOTE_MAX && o + 5 < outlen; i++) {
		if ((b[i] == '\r' || b[i] == '\n') && i > 0)
			break;
		if (b[i] == '"' || b[i] == '\\')
			o += (size_t)snprintf(out + o, outlen - o, "\\%c", b[i]);
		else if (b[i] >= 0x20 && b[i] < 0x7f)
			out[o++] = (char)b[i];
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", b[i]);
	}
	if (i == ANSWER_QUOTE_MAX && i < n && o + 4 < outlen)
		o += (size_t)snprintf(out + o, outlen - o, "...");
	out[o] = '\0';
}

/*
 * Look at the start of the first answer without taking it from hiredis.
 * A server that is not Redis (an HTTP port) answers with a byte no Redis
 * reply starts with, and hiredis would only say 'Protocol error, got "H"
 * as reply type byte'. 0 when a reply is there for hiredis to read;
 * -1 with why set, and *not_redis when the answer is not RESP.
 */
static int
peek_first_answer(redisContext *c, int timeout_ms, int *not_redis,
    char *why, size_t whylen)
{
	/* RESP2 and RESP3 reply type bytes. */
	static const char resp_types[] = "+-:$*_,#=(!%~>|";
	unsigned char b[ANSWER_QUOTE_MAX + 4];
	ssize_t n;

	do
		n = recv(c->fd, b, sizeof(b), MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n > 0 && b[0] != '\0' && strchr(resp_types, b[0]) != NULL)
		return 0;
	if (n > 0) {
		*not_redis = 1;
		quote_answer(b, (size_t)n, why, whylen);
	} else if (n == 0)
		snprintf(why, whylen, "the server closed the connection without "
		    "answering");
	else if (errno == EAGAIN || errno == EWOULDBLOCK)
		snprintf(why, whylen, "no answer within %d ms", timeout_ms);
	else
		snprintf(why, whylen, "%s", strerror(errno));
	return -1;
}

/* One handshake command: AUTH, SELECT or PING. */
struct hs_command {
	const char *argv[3];
	int         argc;
};

/*
 * AUTH and SELECT as the URL says, or a PING when it says neither, sent
 * together; then their replies. Each connection's first answer is
 * checked to be Redis before hiredis parses it. 0, or -1 with *how and
 * why set.
 */
static int
handshake(redisContext *c, const struct nt_redis_url *url, int timeout_ms,
    enum connect_failure *how, char *why, size_t whylen)
{
	struct hs_command cmd[2];
	redisReply *r;
	char db[16];
	int n = 0, i, done = 0, not_redis = 0;

	*how = FAILED_TO_CONNECT;
	if (url->password[0] != '\0') {
		cmd[n] = url->username[0] != '\0' ?
		    (struct hs_command){ { "AUTH", url->username, url->password }, 3 } :
		    (struct hs_command){ { "AUTH", url->password, NULL }, 2 };
		n++;
	}
	if (url->db > 0) {
		snprintf(db, sizeof(db), "%d", url->db);
		cmd[n++] = (struct hs_command){ { "SELECT", db, NULL }, 2 };
	}
	if (n == 0)
		cmd[n++] = (struct hs_command){ { "PING", NULL, NULL }, 1 };

	for (i = 0; i < n; i++)
		if (redisAppendCommandArgv(c, cmd[i].argc, cmd[i].argv,
		    NULL) != REDIS_OK)
			goto io_error;
	while (!done)
		if (redisBufferWrite(c, &done) != REDIS_OK)
			goto io_error;
	if (peek_first_answer(c, timeout_ms, &not_redis, why, whylen) < 0) {
		if (not_redis)
			*how = FAILED_NOT_REDIS;
		return -1;
	}
	for (i = 0; i < n; i++) {
		r = NULL;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL)
			goto io_error;
		if (r->type == REDIS_REPLY_ERROR) {
			snprintf(why, whylen, "%s: %s", cmd[i].argv[0], r->str);
			freeReplyObject(r);
			*how = FAILED_REFUSED;
			return -1;
		}
		freeReplyObject(r);
	}
	return 0;
io_error:
	snprintf(why, whylen, "%s", c->errstr[0] ? c->errstr : "I/O error");
	return -1;
}

redisContext *
nt_redis_connect_where(const struct nt_redis_url *url, const char *where,
    int timeout_ms, char *err, size_t errlen)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	enum connect_failure how = FAILED_TO_CONNECT;
	char at[600], set_with[200] = "", why[300];
	redisContext *c;

	if (url->is_unix)
		c = redisConnectUnixWithTimeout(url->path, tv);
	else
		c = redisConnectWithTimeout(url->host, url->port, tv);
	if (c == NULL) {
		snprintf(why, sizeof(why), "out of memory");
	} else if (c->err) {
		snprintf(why, sizeof(why), "%s", c->errstr);
	} else {
		redisSetTimeout(c, tv);
		if (!url->is_unix)
			redisEnableKeepAlive(c);
		if (handshake(c, url, timeout_ms, &how, why, sizeof(why)) == 0)
			return c;
	}
	redisFree(c);

	nt_redis_url_format(url, at, sizeof(at));
	if (where != NULL)
		snprintf(set_with, sizeof(set_with), " (set with %s)", where);
	switch (how) {
	case FAILED_NOT_REDIS:
		SET_ERR("%s%s is not a Redis server (it answered \"%s\")", at,
		    set_with, why);
		break;
	case FAILED_REFUSED:
		SET_ERR("Redis at %s%s refused %s", at, set_with, why);
		break;
	case FAILED_TO_CONNECT:
		SET_ERR("cannot connect to Redis at %s%s: %s", at, set_with, why);
		break;
	}
	return NULL;
}

redisContext *
nt_redis_connect(const struct nt_redis_url *url, int timeout_ms, char *err,
    size_t errlen)
{
	return nt_redis_connect_where(url, NULL, timeout_ms, err, errlen);
}

int
nt_redis_opt_url(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	return nt_redis_url_parse(value, o->dst, err, errlen);
}

int
nt_redis_opt_prefix(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	if (nt_prefix_valid(value, err, errlen) < 0)
		return -1;
	*(const char **)o->dst = value;
	return 0;
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
