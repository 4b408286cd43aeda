/*
 * nt_userlog: each user's ordered log of notifications in Redis, as
 * notifyd(7) defines it. One hash per user, offline:{USER}, whose dense
 * positions 1, 2, 3... Redis assigns in the one atomic send step; every
 * connection reads it at its own position, so nothing one device or
 * instance does changes what another gets.
 *
 * The scripts are the contract in code. Reply parsers are pure and work
 * on any hiredis reply, so the asynchronous code of notifyd-ws shares
 * them; their results borrow from the reply (valid while it lives: in
 * async code, only inside the callback).
 */
#ifndef NT_USERLOG_H
#define NT_USERLOG_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

#define NT_DEFAULT_OFFLINE_MAX 1000   /* entries kept per user */
#define NT_USERLOG_MAX_TARGETS 1000   /* users in one atomic send */

/* The log of user: prefix + "offline:{" + user + "}" (a Cluster hash tag). */
int nt_key_userlog(char *buf, size_t len, const char *prefix,
    const char *user);

/*
 * Append (KEYS: the logs of n users, then the channel; ARGV: ttl seconds,
 * max entries, then id and message JSON for each log). All or nothing:
 * every log is checked before the first write, and under maxmemory the
 * first write fails before anything is stored or published. A message
 * whose id is already in its log is not stored or published again
 * (a retried send is harmless). Returns one {seq, receivers, duplicate}
 * triple per log, in KEYS order.
 */
extern const char nt_lua_userlog_append[];

/*
 * Read one page (KEYS: the log; ARGV: mode, argument, max count, max
 * bytes, epoch). Modes: "unread" (after the read mark), "after" (after
 * position argument of log epoch; another epoch reads the new log from
 * its start), "since" (after the message whose id is argument), "time"
 * (ids minted at or after argument ms since the epoch), "all". Never
 * writes: reads work while Redis is out of memory.
 * Reply: epoch, first, last, read mark, position the page ends at,
 * found (0: the "since" id or "after" epoch is not in this log), then
 * the messages in order.
 */
extern const char nt_lua_userlog_read[];

/*
 * Mark read (KEYS: the log; ARGV: epoch, position or "i:" + id): raise
 * the read mark to that position when the log is still of that epoch.
 * Returns the new mark, or 0 when nothing changed.
 */
extern const char nt_lua_userlog_mark[];

/* Where and how a send stores. */
struct nt_userlog_cfg {
	const char *prefix;       /* key prefix, "" for none */
	long long   ttl_s;        /* how long an entry lives */
	long long   max_entries;  /* entries kept per user */
};

/* What one append gave a message. */
struct nt_userlog_sent {
	long long seq;        /* its position in the user's log; 0: broadcast */
	long long receivers;  /* subscribers of the channel that got it live */
	int       duplicate;  /* its id was already in the log: not sent again */
};

/*
 * Queue (pipelining) the atomic send of n messages to n users (user[i]
 * gets id[i], json[i] of len[i] bytes), or with n == 1 and user[0] NULL,
 * one broadcast (PUBLISH only). 0, or -1 when a key does not fit or n is
 * out of range. Read the reply with nt_userlog_send_read.
 */
int nt_userlog_send_append(redisContext *c, const struct nt_userlog_cfg *cfg,
    size_t n, const char *const *user, const char *const *id,
    const char *const *json, const size_t *len);

/*
 * Read the reply of one nt_userlog_send_append into out[0..n-1]. 0, or
 * -1 with err set (Redis's own words for a refusal, e.g. OOM); after an
 * I/O error c->err is set and c must be freed.
 */
int nt_userlog_send_read(redisContext *c, size_t n,
    struct nt_userlog_sent *out, char *err, size_t errlen);

/* The parsed reply of one append (pure; for async callers). */
int nt_userlog_sent_parse(const redisReply *r, size_t n,
    struct nt_userlog_sent *out, char *err, size_t errlen);

/* One page of a log, borrowed from its reply. */
struct nt_userlog_page {
	const char         *epoch;   /* "0" when the user has no log */
	long long           first, last, read;
	long long           end;     /* position this page reaches */
	int                 found;
	size_t              n;
	redisReply *const  *msgs;    /* n string replies */
};

/* Parse a read reply. 0, or -1 with err set. */
int nt_userlog_page_parse(const redisReply *r, struct nt_userlog_page *page,
    char *err, size_t errlen);

/*
 * Synchronous page read for the CLIs: mode and arg as the read script
 * takes them. *reply gets the reply the page borrows from; the caller
 * frees it with freeReplyObject. 0, or -1 with err set.
 */
int nt_userlog_read(redisContext *c, const char *prefix, const char *user,
    const char *mode, const char *arg, const char *epoch, long long count,
    long long max_bytes, redisReply **reply, struct nt_userlog_page *page,
    char *err, size_t errlen);

#endif
