/*
 * notify-tail: print the notifications going through Redis as they
 * arrive, one line each; list a user's log; or, with --since, print a
 * user's log from a point and then follow that user's live messages
 * without a gap or a repeat. A debugging tool: it must keep going across
 * Redis restarts, and stop quietly when its reader (head, grep -m) goes
 * away.
 */
#include <ctype.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "nt_config.h"
#include "nt_msg.h"
#include "nt_opt.h"
#include "nt_redis.h"
#include "nt_userlog.h"
#include "nt_uuid.h"

#define PROG "notify-tail"
#define REDIS_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000
/* A log is read in pages of at most this many entries and bytes. */
#define PAGE_COUNT       100
#define PAGE_BYTES       (1024 * 1024)
/* Positions whose ids --since remembers, to tell a live message it has
 * already printed from the log (a repeat) from one of a new log. */
#define RECENT           1024

/* Every setting, as the option table below fills it in. */
static struct {
	int                 json;
	const char         *user;
	const char         *channel;
	const char         *type;
	long long           count;       /* 0: no limit */
	const char         *offline;
	const char         *since;
	uint64_t            ping_ms;
	int                 ready_fd;    /* -1: not asked */
	struct nt_redis_url redis;
	const char         *redis_prefix;
} cfg = { .ready_fd = -1 };

static const struct nt_opt opts[] = {
	{ "json", 0, NULL, NULL, NULL, nt_opt_switch, &cfg.json, 0, 0,
	  "print each message as its raw JSON" },
	{ "user", 'u', "USER", NULL, NULL, nt_opt_string, &cfg.user, 0, 0,
	  "only messages sent to this user" },
	{ "channel", 'c', "CHANNEL", NULL, NULL, nt_opt_string, &cfg.channel,
	  0, 0, "only messages of this channel" },
	{ "type", 't', "TYPE", NULL, NULL, nt_opt_string, &cfg.type, 0, 0,
	  "only messages of this type" },
	{ "count", 'n', "COUNT", NULL, NULL, nt_opt_int, &cfg.count, 1,
	  LLONG_MAX, "exit after printing COUNT messages" },
	{ "offline", 0, "USER", NULL, NULL, nt_opt_string, &cfg.offline, 0, 0,
	  "list USER's log in position order, without changing it, then "
	  "exit" },
	{ "since", 0, "ID|DURATION", NULL, NULL, nt_opt_string, &cfg.since,
	  0, 0, "with -u: print the user's log after message ID, or its "
	  "entries of the last DURATION (e.g. 10m), then follow the user's "
	  "live messages without a gap or a repeat" },
	{ "ping-interval", 0, "DURATION", NULL, "15s", nt_opt_duration,
	  &cfg.ping_ms, 10, 3600 * 1000,
	  "PING an idle connection this often and reconnect when no reply "
	  "comes; from 10ms to 1h" },
	{ "ready-fd", 0, "FD", NULL, NULL, nt_opt_fd, &cfg.ready_fd, 0, 0,
	  "write a newline to FD once subscribed" },
	NT_REDIS_OPT_URL(&cfg.redis),
	NT_REDIS_OPT_PREFIX(&cfg.redis_prefix),
};

static const struct nt_opt_spec spec = {
	.prog = PROG,
	.synopsis =
	    "[--json] [-u USER] [-c CHANNEL] [-t TYPE] [-n COUNT] [OPTION ...]\n"
	    "-u USER --since ID|DURATION [--json] [-c CHANNEL] [-t TYPE] "
	    "[-n COUNT] [OPTION ...]\n"
	    "--offline USER [--json] [-c CHANNEL] [-t TYPE] [-n COUNT] "
	    "[OPTION ...]",
	.footer =
	    "A flag wins over its variable.\n"
	    "Exit status: 0 done (count reached, SIGINT, SIGTERM, closed output\n"
	    "pipe), 64 usage, 65 bad user id or --since, 69 Redis unavailable,\n"
	    "70 internal"
	    " error, 74 output error, 78 bad configuration.\n",
	.opts = opts,
	.nopts = NT_OPT_COUNT(opts),
};

/* --since: where the reader stands in the user's log. */
struct follow {
	redisContext *rc;          /* for reads: a subscribed one cannot */
	const char   *mode;        /* the first read: "since" or "time" */
	char          arg[64];     /* its argument: an id or ms since 1970 */
	int           started;     /* the first read is done */
	char          epoch[32];   /* of the log read; "0": there was none */
	long long     pos;         /* last position printed or passed over */
	struct {
		long long seq;
		char      id[NT_UUID_STRLEN + 1];
	} recent[RECENT];          /* printed ids, by position % RECENT */
};

/* Run-time state; the settings themselves stay in cfg. */
struct tail {
	char                chan[NT_KEY_MAX];
	uint64_t            printed;
	int                 ready_fd;    /* -1 once used or when not asked */
	int                 stdout_pipe; /* stdout is a pipe or FIFO */
	struct follow      *follow;      /* NULL without --since */
};

/* Written by the signal handler, read by the loop (self-pipe). */
static int sig_pipe[2] = { -1, -1 };

static long long
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * --since: a message id (any case) starts after that message; a
 * duration starts at the entries minted that long ago (ids are UUIDv7,
 * whose first 48 bits are the millisecond they were made). Bad: 65.
 */
static struct follow *
follow_new(const char *since)
{
	struct follow *f = calloc(1, sizeof(*f));
	char id[NT_UUID_STRLEN + 1];
	uint64_t ms;
	size_t i;

	if (f == NULL)
		errx(NT_EXIT_SOFTWARE, "out of memory");
	for (i = 0; i < NT_UUID_STRLEN && since[i]; i++)
		id[i] = (char)tolower((unsigned char)since[i]);
	id[i] = '\0';
	if (strlen(since) == NT_UUID_STRLEN && nt_uuid_valid(id) == 0) {
		f->mode = "since";
		snprintf(f->arg, sizeof(f->arg), "%s", id);
	} else if (nt_duration_ms_parse(since, &ms) == 0) {
		f->mode = "time";
		snprintf(f->arg, sizeof(f->arg), "%lld",
		    wall_ms() - (long long)ms);
	} else {
		errx(NT_EXIT_DATAERR, "--since '%s': neither a message id (a "
		    "UUID) nor a duration (e.g. 10m)", since);
	}
	snprintf(f->epoch, sizeof(f->epoch), "0");
	return f;
}

/* Every setting from the table, then what it cannot check. */
static void
read_settings(int argc, char **argv, struct tail *t)
{
	char err[512];
	struct stat sb;
	int first, rc;

	rc = nt_opt_parse(&spec, argc, argv, &first, err, sizeof(err));
	if (rc == NT_OPT_DONE)
		exit(NT_EXIT_OK);
	if (rc != 0)
		errx(rc, "%s", err);
	if (first < argc)
		errx(NT_EXIT_USAGE, "unexpected argument '%s' (see --help)",
		    argv[first]);
	if (nt_key_channel(t->chan, sizeof(t->chan), cfg.redis_prefix) < 0)
		errx(NT_EXIT_CONFIG, "redis prefix too long");
	/* Names are data, checked as every program checks them. */
	if (cfg.user && nt_user_valid(cfg.user, err, sizeof(err)) != 0)
		errx(NT_EXIT_DATAERR, "-u: %s", err);
	if (cfg.offline && nt_user_valid(cfg.offline, err, sizeof(err)) != 0)
		errx(NT_EXIT_DATAERR, "--offline: %s", err);
	if (cfg.channel && nt_channel_valid(cfg.channel, err,
	    sizeof(err)) != 0)
		errx(NT_EXIT_DATAERR, "-c: %s", err);
	if (cfg.type && nt_type_valid(cfg.type, err, sizeof(err)) != 0)
		errx(NT_EXIT_DATAERR, "-t: %s", err);
	if (cfg.since && cfg.offline)
		errx(NT_EXIT_USAGE, "--since and --offline exclude each other");
	if (cfg.since && !cfg.user)
		errx(NT_EXIT_USAGE, "--since needs -u USER: it follows one "
		    "user's log");
	if (cfg.since)
		t->follow = follow_new(cfg.since);
	t->ready_fd = cfg.ready_fd;
	t->stdout_pipe = fstat(STDOUT_FILENO, &sb) == 0 && S_ISFIFO(sb.st_mode);
}

/* A connection to Redis, or NULL with a reason that names the URL. */
static redisContext *
connect_redis(char *err, size_t errlen)
{
	return nt_redis_connect_where(&cfg.redis, NT_REDIS_URL_WHERE,
	    REDIS_TIMEOUT_MS, err, errlen);
}

/* ---- output ---------------------------------------------------------- */

/* A write to stdout failed: a reader that went away is no error. */
static void
output_failed(void)
{
	if (errno == EPIPE)
		exit(NT_EXIT_OK);
	errx(EX_IOERR, "writing standard output: %s", strerror(errno));
}

static const char *
str_field(const json_t *msg, const char *key)
{
	const char *s = json_string_value(json_object_get(msg, key));

	return s ? s : "?";
}

/* Content on one line: control bytes and backslashes escaped C-style. */
static void
put_escaped(const char *s, FILE *f)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		switch (ch) {
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		case '\\': fputs("\\\\", f); break;
		default:
			if (ch < 0x20 || ch == 0x7f)
				fprintf(f, "\\x%02x", ch);
			else
				fputc(ch, f);
		}
	}
}

/* TIME TYPE -> user:alice|channel:x|broadcast [#SEQ] CONTENT */
static void
put_readable(const json_t *msg, FILE *f)
{
	const char *user = nt_msg_target_user(msg);
	const char *channel = nt_msg_channel(msg);
	const json_t *seq = json_object_get(msg, "seq");

	fprintf(f, "%s %s -> ", str_field(msg, "timestamp"),
	    str_field(msg, "type"));
	if (user && channel)
		fprintf(f, "user:%s,channel:%s ", user, channel);
	else if (user)
		fprintf(f, "user:%s ", user);
	else if (channel)
		fprintf(f, "channel:%s ", channel);
	else
		fputs("broadcast ", f);
	if (json_is_integer(seq))
		fprintf(f, "#%lld ", (long long)json_integer_value(seq));
	put_escaped(str_field(msg, "content"), f);
	fputc('\n', f);
}

static int
matches(const json_t *msg)
{
	const char *user = nt_msg_target_user(msg);
	const char *channel = nt_msg_channel(msg);
	const char *type = json_string_value(json_object_get(msg, "type"));

	if (cfg.user && (!user || strcmp(user, cfg.user) != 0))
		return 0;
	if (cfg.channel && (!channel || strcmp(channel, cfg.channel) != 0))
		return 0;
	if (cfg.type && (!type || strcmp(type, cfg.type) != 0))
		return 0;
	return 1;
}

/* A message, or NULL (said on stderr) when it is not a notification. */
static json_t *
decode(const char *buf, size_t len)
{
	char err[256];
	json_t *msg;

	if ((msg = nt_msg_decode(buf, len, err, sizeof(err))) == NULL)
		warnx("skipping a message that is not a notification: %s", err);
	return msg;
}

/*
 * Print one decoded message (buf: its raw JSON, as published or stored)
 * when it passes the filters. Returns 1 when -n COUNT has been reached.
 */
static int
emit_msg(struct tail *t, const json_t *msg, const char *buf, size_t len)
{
	if (!matches(msg))
		return 0;
	if (cfg.json) {
		if (fwrite(buf, 1, len, stdout) != len)
			output_failed();
		putchar('\n');
	} else {
		put_readable(msg, stdout);
	}
	if (fflush(stdout) != 0 || ferror(stdout))
		output_failed();
	t->printed++;
	return cfg.count > 0 && t->printed >= (uint64_t)cfg.count;
}

static int
emit(struct tail *t, const char *buf, size_t len)
{
	json_t *msg = decode(buf, len);
	int rc;

	if (msg == NULL)
		return 0;
	rc = emit_msg(t, msg, buf, len);
	json_decref(msg);
	return rc;
}

/* A message's position in its user's log; 0 when it has none. */
static long long
seq_of(const json_t *msg)
{
	const json_t *seq = json_object_get(msg, "seq");

	return json_is_integer(seq) ? (long long)json_integer_value(seq) : 0;
}

/* ---- reading a log -------------------------------------------------- */

/* What read_log does with what it reads. */
struct reader {
	/* Each page, before its entries (may be NULL). */
	void (*on_page)(struct tail *, const struct nt_userlog_page *);
	/* Each entry: 1 to stop (-n COUNT reached). */
	int  (*take)(struct tail *, const json_t *, const char *, size_t);
};

/*
 * Read the user's log page by page, from the read that mode and arg say
 * (as nt_userlog_read takes them) to its last entry. epoch (32 bytes)
 * and *pos follow the pages: after each whole page they say where the
 * next read starts. Returns 0 at the end, 1 when take said stop, -1 when
 * Redis failed (err set; c->err set after an I/O error).
 */
static int
read_log(struct tail *t, redisContext *c, const struct reader *rd,
    const char *user, const char *mode, const char *arg, char *epoch,
    long long *pos, char *err, size_t errlen)
{
	struct nt_userlog_page page;
	redisReply *reply;
	char after[24];
	int stop = 0;

	for (;;) {
		if (nt_userlog_read(c, cfg.redis_prefix, user, mode, arg, epoch,
		    PAGE_COUNT, PAGE_BYTES, &reply, &page, err, errlen) != 0)
			return -1;
		if (rd->on_page)
			rd->on_page(t, &page);
		snprintf(epoch, 32, "%s", page.epoch);
		for (size_t i = 0; !stop && i < page.n; i++) {
			const redisReply *m = page.msgs[i];
			json_t *msg = decode(m->str, m->len);

			if (msg == NULL)
				continue;
			stop = rd->take(t, msg, m->str, m->len);
			json_decref(msg);
		}
		/* Entries past their age were passed over: end counts them. */
		if (!stop)
			*pos = page.end;
		freeReplyObject(reply);
		/* Each page holds an entry or reaches last: this ends. */
		if (stop || page.end >= page.last)
			return stop;
		snprintf(after, sizeof(after), "%lld", *pos);
		mode = "after";
		arg = after;
	}
}

/* ---- --offline ------------------------------------------------------- */

static int
offline_take(struct tail *t, const json_t *msg, const char *buf, size_t len)
{
	return emit_msg(t, msg, buf, len);
}

/* The user's log in position order; nothing is changed. */
static int
list_offline(struct tail *t)
{
	static const struct reader rd = { NULL, offline_take };
	char err[1024], epoch[32] = "";
	long long pos = 0;
	redisContext *c;

	if ((c = connect_redis(err, sizeof(err))) == NULL)
		errx(NT_EXIT_UNAVAILABLE, "%s", err);
	if (read_log(t, c, &rd, cfg.offline, "all", "", epoch, &pos, err,
	    sizeof(err)) < 0)
		errx(NT_EXIT_UNAVAILABLE, "%s", err);
	redisFree(c);
	return NT_EXIT_OK;
}

/* ---- --since: the log, then live messages in position order ---------- */

static void
remember(struct follow *f, long long seq, const char *id)
{
	f->recent[seq % RECENT].seq = seq;
	snprintf(f->recent[seq % RECENT].id, sizeof(f->recent[0].id), "%s",
	    id ? id : "");
}

/* Was the message at position seq, with this id, printed already? */
static int
printed_before(const struct follow *f, long long seq, const char *id)
{
	return f->recent[seq % RECENT].seq == seq && id != NULL &&
	    strcmp(f->recent[seq % RECENT].id, id) == 0;
}

/* A log entry: printed (if it passes the filters) and remembered. */
static int
follow_take(struct tail *t, const json_t *msg, const char *buf, size_t len)
{
	struct follow *f = t->follow;
	long long seq = seq_of(msg);

	if (seq <= 0)
		return 0;
	remember(f, seq, nt_msg_id(msg));
	f->pos = seq;
	return emit_msg(t, msg, buf, len);
}

/* What each page says about the reader's place: told on stderr. */
static void
follow_page(struct tail *t, const struct nt_userlog_page *page)
{
	struct follow *f = t->follow;

	if (!f->started && strcmp(f->mode, "since") == 0 && !page->found)
		warnx("%s is not in %s's log (trimmed, expired or unknown): "
		    "starting from its first entry", f->arg, cfg.user);
	else if (f->started && !page->found && strcmp(f->epoch, "0") != 0)
		warnx("%s's log was started anew (it expired or Redis lost "
		    "it): reading it from its first entry", cfg.user);
	else if (f->started && page->found && page->first > f->pos + 1)
		warnx("positions %lld to %lld of %s's log were trimmed before "
		    "they could be printed", f->pos + 1, page->first - 1,
		    cfg.user);
	f->started = 1;
}

/*
 * Read the log after the reader's place (the first time: where --since
 * says) to its end. A read connection that broke is made again, once.
 * 0 done, 1 count reached, -1 Redis is away (err set).
 */
static int
catch_up(struct tail *t, char *err, size_t errlen)
{
	static const struct reader rd = { follow_page, follow_take };
	struct follow *f = t->follow;
	char after[24];
	int tries, rc = -1;

	for (tries = 0; tries < 2 && rc < 0; tries++) {
		if (f->rc == NULL &&
		    (f->rc = connect_redis(err, errlen)) == NULL)
			return -1;
		snprintf(after, sizeof(after), "%lld", f->pos);
		rc = read_log(t, f->rc, &rd, cfg.user,
		    f->started ? "after" : f->mode,
		    f->started ? after : f->arg, f->epoch, &f->pos, err, errlen);
		if (rc < 0 && f->rc->err == 0)
			/* Redis refused the read (a key of another type). */
			errx(NT_EXIT_UNAVAILABLE, "%s", err);
		if (rc < 0) {
			redisFree(f->rc);
			f->rc = NULL;
		}
	}
	return rc;
}

/*
 * A live message, while following: printed when it is the next position;
 * a position already printed is a repeat of the log's; anything else (a
 * gap, a log started anew, a log not yet seen) is settled by reading the
 * log after the reader's place. Returns as emit does, or -1 (err set).
 */
static int
follow_live(struct tail *t, const char *buf, size_t len, char *err,
    size_t errlen)
{
	struct follow *f = t->follow;
	const char *user, *id;
	json_t *msg = decode(buf, len);
	long long seq;
	int rc;

	if (msg == NULL)
		return 0;
	user = nt_msg_target_user(msg);
	id = nt_msg_id(msg);
	seq = seq_of(msg);
	if (user == NULL || strcmp(user, cfg.user) != 0)
		rc = 0;
	else if (seq <= 0)              /* not from a log: as it comes */
		rc = emit_msg(t, msg, buf, len);
	else if (strcmp(f->epoch, "0") != 0 && seq == f->pos + 1) {
		remember(f, seq, id);
		f->pos = seq;
		rc = emit_msg(t, msg, buf, len);
	} else if (seq <= f->pos && printed_before(f, seq, id))
		rc = 0;
	else
		rc = catch_up(t, err, errlen);
	json_decref(msg);
	return rc;
}

/* ---- subscription ---------------------------------------------------- */

static void
on_signal(int sig)
{
	unsigned char b = (unsigned char)sig;
	int saved = errno;

	(void)!write(sig_pipe[1], &b, 1);
	errno = saved;
}

static void
setup_signals(void)
{
	struct sigaction sa;

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		errx(NT_EXIT_SOFTWARE, "pipe: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait up to ms for a signal: 1 when one came (time to exit). */
static int
wait_signal(int ms)
{
	struct pollfd p = { .fd = sig_pipe[0], .events = POLLIN };

	return poll(&p, 1, ms) > 0;
}

/* Queue a command and write it out (the socket has a send timeout). */
static int
command(redisContext *c, const char *cmd, const char *arg)
{
	int done = 0;

	if ((arg ? redisAppendCommand(c, "%s %s", cmd, arg) :
	    redisAppendCommand(c, "%s", cmd)) != REDIS_OK)
		return -1;
	while (!done)
		if (redisBufferWrite(c, &done) != REDIS_OK)
			return -1;
	return 0;
}

static redisContext *
subscribe(struct tail *t, char *err, size_t errlen)
{
	redisContext *c;

	if ((c = connect_redis(err, errlen)) == NULL)
		return NULL;
	if (command(c, "SUBSCRIBE", t->chan) != 0) {
		snprintf(err, errlen, "redis: %s", c->errstr);
		redisFree(c);
		return NULL;
	}
	return c;
}

enum conn_state { WANT_SUBSCRIBED, IDLE, WANT_PONG };

/*
 * What one reply means: 0 go on, 1 count reached, -1 connection no
 * longer usable (err set).
 */
static int
handle_reply(struct tail *t, const redisReply *r, enum conn_state *st,
    int *subscriptions, char *err, size_t errlen)
{
	const char *kind;

	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "redis: %s", r->str);
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING)
		return 0;
	kind = r->element[0]->str;
	if (strcmp(kind, "subscribe") == 0) {
		*st = IDLE;
		if ((*subscriptions)++ == 0)
			warnx("subscribed to %s", t->chan);
		else
			warnx("reconnected: subscribed to %s again", t->chan);
		if (t->ready_fd >= 0) {
			(void)!write(t->ready_fd, "\n", 1);
			close(t->ready_fd);
			t->ready_fd = -1;
		}
		/* Subscribed first, then read: nothing falls in between. */
		if (t->follow)
			return catch_up(t, err, errlen);
	} else if (t->follow && strcmp(kind, "message") == 0 &&
	    r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING) {
		return follow_live(t, r->element[2]->str,
		    (size_t)r->element[2]->len, err, errlen);
	} else if (strcmp(kind, "pong") == 0) {
		if (*st == WANT_PONG)
			*st = IDLE;
	} else if (strcmp(kind, "message") == 0 && r->elements == 3 &&
	    r->element[2]->type == REDIS_REPLY_STRING) {
		return emit(t, r->element[2]->str, (size_t)r->element[2]->len);
	}
	return 0;
}

/*
 * One connection's life: read until it breaks or goes silent. Returns 1
 * when it is time to exit (signal, count reached), 0 when the
 * connection was lost (reason in err).
 */
static int
serve(struct tail *t, redisContext *c, int *subscriptions, char *err,
    size_t errlen)
{
	enum conn_state st = WANT_SUBSCRIBED;
	long long deadline = now_ms() + (long long)cfg.ping_ms;

	for (;;) {
		/* A pipe whose reader left polls POLLERR: exit then, not
		 * at the next message. */
		struct pollfd p[3] = {
			{ .fd = sig_pipe[0], .events = POLLIN },
			{ .fd = c->fd, .events = POLLIN },
			{ .fd = t->stdout_pipe ? STDOUT_FILENO : -1, .events = 0 },
		};
		long long left = deadline - now_ms();
		redisReply *r;
		int n, rc;

		n = poll(p, 3, left > 0 ? (int)left : 0);
		if (n < 0 && errno != EINTR) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			return 0;
		}
		if (n > 0 && (p[0].revents || p[2].revents))
			return 1;
		if (n == 0) {
			if (st != IDLE) {
				snprintf(err, errlen, "no reply from redis "
				    "within %d ms", (int)cfg.ping_ms);
				return 0;
			}
			if (command(c, "PING", NULL) != 0) {
				snprintf(err, errlen, "redis: %s", c->errstr);
				return 0;
			}
			st = WANT_PONG;
			deadline = now_ms() + (long long)cfg.ping_ms;
			continue;
		}
		if (n <= 0 || !p[1].revents)
			continue;
		if (redisBufferRead(c) != REDIS_OK) {
			snprintf(err, errlen, "redis: %s", c->errstr);
			return 0;
		}
		for (;;) {
			r = NULL;
			if (redisGetReplyFromReader(c, (void **)&r) != REDIS_OK) {
				snprintf(err, errlen, "redis: %s", c->errstr);
				return 0;
			}
			if (r == NULL)
				break;
			rc = handle_reply(t, r, &st, subscriptions, err,
			    errlen);
			freeReplyObject(r);
			if (rc != 0)
				return rc > 0;
		}
		if (st == IDLE)
			deadline = now_ms() + (long long)cfg.ping_ms;
	}
}

/*
 * Subscribe and print until told to stop. The first connection must
 * work (else exit 69); after that a lost connection is retried with
 * exponential backoff, forever.
 */
static int
run_tail(struct tail *t)
{
	char err[1024];
	redisContext *c;
	int subscriptions = 0, backoff = BACKOFF_MIN_MS, failures = 0;

	for (;;) {
		int before = subscriptions;

		if ((c = subscribe(t, err, sizeof(err))) != NULL) {
			int stop = serve(t, c, &subscriptions, err,
			    sizeof(err));

			redisFree(c);
			if (stop)
				return NT_EXIT_OK;
		}
		if (subscriptions == 0)
			errx(NT_EXIT_UNAVAILABLE, "%s", err);
		if (subscriptions > before) {
			warnx("lost the redis connection (%s); reconnecting",
			    err);
			backoff = BACKOFF_MIN_MS;
			failures = 0;
		} else if (++failures == 1) {
			/* Once: the same line as a failed start, then quiet. */
			warnx("%s; retrying with backoff up to %d ms", err,
			    BACKOFF_MAX_MS);
		}
		if (wait_signal(backoff))
			return NT_EXIT_OK;
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS :
		    backoff * 2;
	}
}

int
main(int argc, char **argv)
{
	struct tail t;
	int rc;

	memset(&t, 0, sizeof(t));
	read_settings(argc, argv, &t);
	setup_signals();
	if (cfg.offline)
		return list_offline(&t);
	rc = run_tail(&t);
	if (t.follow) {
		if (t.follow->rc)
			redisFree(t.follow->rc);
		free(t.follow);
	}
	return rc;
}
