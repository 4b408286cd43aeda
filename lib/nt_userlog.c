/*
 * nt_userlog: the per-user ordered log; see nt_userlog.h and notifyd(7).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nt_redis.h"
#include "nt_userlog.h"

#define SET_ERR(...) do { if (err) snprintf(err, errlen, __VA_ARGS__); } while (0)

/*
 * Shared Lua helpers. A message id is a UUIDv7: its first 48 bits are
 * the millisecond it was minted, which is how an entry's age is known
 * without storing a time beside it. The id is the first field of every
 * message notifyd writes; anything else is decoded.
 */
#define LUA_HELPERS \
	"local function id_of(m)\n" \
	"  return string.match(m, '^{\"id\":\"([^\"]*)\"') or cjson.decode(m).id\n" \
	"end\n" \
	"local function id_ms(id)\n" \
	"  return tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16) or 0\n" \
	"end\n" \
	"local function now_ms()\n" \
	"  local t = redis.call('TIME')\n" \
	"  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t\n" \
	"end\n"

/*
 * The one atomic send step. Positions are dense: the log's head moves up
 * as entries age out (older than ttl) or as the log passes max entries,
 * and "first" says where it is, so a reader can tell a trimmed position
 * from one that never existed. Every log is checked before the first
 * write, so a refusal leaves nothing half sent; under maxmemory Redis
 * refuses the first write, before anything is stored or published.
 */
const char nt_lua_userlog_append[] =
    LUA_HELPERS
    "local n = #KEYS - 1\n"
    "local ttl, maxn = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "for i = 1, n do\n"
    "  local t = redis.call('TYPE', KEYS[i]).ok\n"
    "  if t ~= 'hash' and t ~= 'none' then\n"
    "    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. t)\n"
    "  end\n"
    "  local j = ARGV[2 + 2 * i]\n"
    "  if string.sub(j, 1, 1) ~= '{' or string.sub(j, -1) ~= '}' then\n"
    "    return redis.error_reply('ERR message ' .. i .. ' is not a JSON object')\n"
    "  end\n"
    "end\n"
    "local now, t = now_ms()\n"
    "local epoch = t[1] .. string.format('%06d', tonumber(t[2]))\n"
    "local cutoff = now - ttl * 1000\n"
    "local out, pub = {}, {}\n"
    "for i = 1, n do\n"
    "  local key, id, json = KEYS[i], ARGV[1 + 2 * i], ARGV[2 + 2 * i]\n"
    "  local seq = tonumber(redis.call('HGET', key, 'i:' .. id))\n"
    "  if seq then\n"
    "    out[#out + 1] = {seq, 0, 1}\n"
    "  else\n"
    "    if redis.call('HSETNX', key, 'epoch', epoch) == 1 then\n"
    "      redis.call('HSET', key, 'first', 1, 'read', 0)\n"
    "    end\n"
    "    seq = redis.call('HINCRBY', key, 'seq', 1)\n"
    "    local sep = #json > 2 and ',' or ''\n"
    "    local msg = string.sub(json, 1, -2) .. sep .. '\"seq\":' .. seq .. '}'\n"
    "    redis.call('HSET', key, 'm:' .. seq, msg, 'i:' .. id, seq, 'ttl', ttl)\n"
    /* Trim the head; never the entry just written (its clock may lag). */
    "    local first = tonumber(redis.call('HGET', key, 'first'))\n"
    "    while first < seq do\n"
    "      local m = redis.call('HGET', key, 'm:' .. first)\n"
    "      local mid = m and id_of(m)\n"
    "      if m and seq - first < maxn and id_ms(mid) >= cutoff then break end\n"
    "      if m then redis.call('HDEL', key, 'm:' .. first, 'i:' .. mid) end\n"
    "      first = first + 1\n"
    "    end\n"
    "    redis.call('HSET', key, 'first', first)\n"
    "    redis.call('EXPIRE', key, ttl)\n"
    "    out[#out + 1] = {seq, 0, 0}\n"
    "    pub[#out] = msg\n"
    "  end\n"
    "end\n"
    /* Published only once all are stored: a reader of any log sees them. */
    "for i = 1, n do\n"
    "  if pub[i] then out[i][2] = redis.call('PUBLISH', KEYS[n + 1], pub[i]) end\n"
    "end\n"
    "return out\n";

/*
 * One page of a log. Entries past their age are skipped here (they are
 * trimmed by the next send): a reader never sees an expired entry even
 * when no send came since.
 */
const char nt_lua_userlog_read[] =
    LUA_HELPERS
    "local key, mode, arg = KEYS[1], ARGV[1], ARGV[2]\n"
    "local count, maxb = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local h = redis.call('HMGET', key, 'epoch', 'first', 'seq', 'read', 'ttl')\n"
    "if not h[1] then\n"
    "  local found = 0\n"
    "  if mode == 'all' or mode == 'unread' or mode == 'time' then found = 1 end\n"
    "  return {'0', 0, 0, 0, 0, found}\n"
    "end\n"
    "local epoch, first, last = h[1], tonumber(h[2]), tonumber(h[3])\n"
    "local read, ttl = tonumber(h[4]), tonumber(h[5])\n"
    "local cutoff = now_ms() - ttl * 1000\n"
    "local start, found = first, 1\n"
    "if mode == 'unread' then start = math.max(read + 1, first)\n"
    "elseif mode == 'after' then\n"
    "  if ARGV[5] == epoch then start = math.max(tonumber(arg) + 1, first)\n"
    "  else found = 0 end\n"
    "elseif mode == 'since' then\n"
    "  local p = tonumber(redis.call('HGET', key, 'i:' .. arg))\n"
    "  if p then start = p + 1 else found = 0 end\n"
    "elseif mode == 'time' then\n"
    "  local want = tonumber(arg)\n"
    "  while start <= last do\n"
    "    local m = redis.call('HGET', key, 'm:' .. start)\n"
    "    if m and id_ms(id_of(m)) >= want then break end\n"
    "    start = start + 1\n"
    "  end\n"
    "elseif mode ~= 'all' then\n"
    "  return redis.error_reply('ERR unknown read mode ' .. mode)\n"
    "end\n"
    "local out = {epoch, first, last, read, 0, found}\n"
    "local p, bytes = start, 0\n"
    "while p <= last and #out - 6 < count do\n"
    "  local m = redis.call('HGET', key, 'm:' .. p)\n"
    "  if m and id_ms(id_of(m)) >= cutoff then\n"
    "    if #out > 6 and bytes + #m > maxb then break end\n"
    "    out[#out + 1] = m\n"
    "    bytes = bytes + #m\n"
    "  end\n"
    "  p = p + 1\n"
    "end\n"
    "out[5] = p - 1\n"
    "return out\n";

const char nt_lua_userlog_mark[] =
    "local h = redis.call('HMGET', KEYS[1], 'epoch', 'read')\n"
    "if h[1] ~= ARGV[1] then return 0 end\n"
    "local p = tonumber(ARGV[2])\n"
    "if not p and string.sub(ARGV[2], 1, 2) == 'i:' then\n"
    "  p = tonumber(redis.call('HGET', KEYS[1], ARGV[2]))\n"
    "end\n"
    "if p and p > (tonumber(h[2]) or 0) then\n"
    "  redis.call('HSET', KEYS[1], 'read', p)\n"
    "  return p\n"
    "end\n"
    "return 0\n";

int
nt_key_userlog(char *buf, size_t len, const char *prefix, const char *user)
{
	int n = snprintf(buf, len, "%soffline:{%s}", prefix, user);

	return (n < 0 || (size_t)n >= len) ? -1 : n;
}

int
nt_userlog_send_append(redisContext *c, const struct nt_userlog_cfg *cfg,
    size_t n, const char *const *user, const char *const *id,
    const char *const *json, const size_t *len)
{
	char chan[NT_KEY_MAX], ttl[24], maxn[24], numkeys[24];
	const char **argv;
	size_t *argl, i, k = 0;
	char (*keys)[NT_KEY_MAX];
	int rc = -1;

	if (nt_key_channel(chan, sizeof(chan), cfg->prefix) < 0 || n == 0 ||
	    n > NT_USERLOG_MAX_TARGETS)
		return -1;
	if (n == 1 && user[0] == NULL)
		return redisAppendCommand(c, "PUBLISH %s %b", chan, json[0],
		    len[0]) == REDIS_OK ? 0 : -1;

	/* EVAL script numkeys key... channel ttl max (id json)... */
	argv = calloc(6 + 3 * n, sizeof(*argv));
	argl = calloc(6 + 3 * n, sizeof(*argl));
	keys = calloc(n, sizeof(*keys));
	if (argv == NULL || argl == NULL || keys == NULL)
		goto out;
	snprintf(ttl, sizeof(ttl), "%lld", cfg->ttl_s);
	snprintf(maxn, sizeof(maxn), "%lld", cfg->max_entries);
	argv[k++] = "EVAL";
	argv[k++] = nt_lua_userlog_append;
	argv[k++] = NULL;  /* numkeys, below */
	for (i = 0; i < n; i++) {
		if (user[i] == NULL || nt_key_userlog(keys[i], sizeof(keys[i]),
		    cfg->prefix, user[i]) < 0)
			goto out;
		argv[k++] = keys[i];
	}
	argv[k++] = chan;
	argv[k++] = ttl;
	argv[k++] = maxn;
	for (i = 0; i < n; i++) {
		argv[k] = id[i];
		argl[k++] = strlen(id[i]);
		argv[k] = json[i];
		argl[k++] = len[i];
	}
	snprintf(numkeys, sizeof(numkeys), "%zu", n + 1);
	argv[2] = numkeys;
	for (i = 0; i < k; i++)
		if (argl[i] == 0)
			argl[i] = strlen(argv[i]);
	rc = redisAppendCommandArgv(c, (int)k, argv, argl) == REDIS_OK ? 0 : -1;
out:
	free(argv);
	free(argl);
	free(keys);
	return rc;
}

int
nt_userlog_sent_parse(const redisReply *r, size_t n,
    struct nt_userlog_sent *out, char *err, size_t errlen)
{
	size_t i;

	if (r->type == REDIS_REPLY_ERROR) {
		/* Lua wraps a refusal: keep Redis's own words (e.g. OOM). */
		SET_ERR("redis refused the message: %s", r->str);
		return -1;
	}
	if (n == 1 && r->type == REDIS_REPLY_INTEGER) {  /* a broadcast */
		out[0].seq = 0;
		out[0].receivers = r->integer;
		out[0].duplicate = 0;
		return 0;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
		SET_ERR("redis: unexpected reply to a send");
		return -1;
	}
	for (i = 0; i < n; i++) {
		const redisReply *e = r->element[i];

		if (e->type != REDIS_REPLY_ARRAY || e->elements != 3 ||
		    e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER ||
		    e->element[2]->type != REDIS_REPLY_INTEGER) {
			SET_ERR("redis: unexpected reply to a send");
			return -1;
		}
		out[i].seq = e->element[0]->integer;
		out[i].receivers = e->element[1]->integer;
		out[i].duplicate = e->element[2]->integer != 0;
	}
	return 0;
}

int
nt_userlog_send_read(redisContext *c, size_t n, struct nt_userlog_sent *out,
    char *err, size_t errlen)
{
	redisReply *r = NULL;
	int rc;

	if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL) {
		SET_ERR("redis: %s", c->err ? c->errstr : "no reply");
		return -1;
	}
	rc = nt_userlog_sent_parse(r, n, out, err, errlen);
	freeReplyObject(r);
	return rc;
}

static int
int_elem(const redisReply *e, long long *out)
{
	if (e->type != REDIS_REPLY_INTEGER)
		return -1;
	*out = e->integer;
	return 0;
}

int
nt_userlog_page_parse(const redisReply *r, struct nt_userlog_page *page,
    char *err, size_t errlen)
{
	long long found;
	size_t i;

	memset(page, 0, sizeof(*page));
	if (r->type == REDIS_REPLY_ERROR) {
		SET_ERR("redis: %s", r->str);
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 6 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    int_elem(r->element[1], &page->first) ||
	    int_elem(r->element[2], &page->last) ||
	    int_elem(r->element[3], &page->read) ||
	    int_elem(r->element[4], &page->end) ||
	    int_elem(r->element[5], &found)) {
		SET_ERR("redis: unexpected reply to a log read");
		return -1;
	}
	for (i = 6; i < r->elements; i++)
		if (r->element[i]->type != REDIS_REPLY_STRING) {
			SET_ERR("redis: unexpected entry in a log read");
			return -1;
		}
	page->epoch = r->element[0]->str;
	page->found = found != 0;
	page->n = r->elements - 6;
	page->msgs = (redisReply *const *)r->element + 6;
	return 0;
}

int
nt_userlog_read(redisContext *c, const char *prefix, const char *user,
    const char *mode, const char *arg, const char *epoch, long long count,
    long long max_bytes, redisReply **reply, struct nt_userlog_page *page,
    char *err, size_t errlen)
{
	char key[NT_KEY_MAX], cnt[24], maxb[24];
	redisReply *r;

	*reply = NULL;
	if (nt_key_userlog(key, sizeof(key), prefix, user) < 0) {
		SET_ERR("user id too long for a key");
		return -1;
	}
	snprintf(cnt, sizeof(cnt), "%lld", count);
	snprintf(maxb, sizeof(maxb), "%lld", max_bytes);
	r = redisCommand(c, "EVAL %s 1 %s %s %s %s %s %s", nt_lua_userlog_read,
	    key, mode, arg ? arg : "", cnt, maxb, epoch ? epoch : "");
	if (r == NULL) {
		SET_ERR("redis: %s", c->errstr);
		return -1;
	}
	if (nt_userlog_page_parse(r, page, err, errlen) != 0) {
		freeReplyObject(r);
		return -1;
	}
	*reply = r;
	return 0;
}
