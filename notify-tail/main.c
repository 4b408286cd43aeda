/*
 * notify-tail: print the notifications going through Redis as they
 * arrive, one line each, or list what waits in a user's offline hash.
 * A debugging tool: it must keep going across Redis restarts, and stop
 * quietly when its reader (head, grep -m) goes away.
 */
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

#define PROG "notify-tail"
#define REDIS_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000

/* Every setting, as the option table below fills it in. */
static struct {
	int                 json;
	const char         *user;
	const char         *channel;
	const char         *type;
	long long           count;       /* 0: no limit */
	const char         *offline;
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
	  "list USER's offline messages, oldest first, without removing "
	  "them, then exit" },
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
	    "--offline USER [--json] [-c CHANNEL] [-t TYPE] [-n COUNT] "
	    "[OPTION ...]",
	.footer =
	    "A flag wins over its variable.\n"
	    "Exit status: 0 done (count reached, SIGINT, SIGTERM, closed output\n"
	    "pipe), 64 usage, 65 bad user id, 69 Redis unavailable, 70 internal\n"
	    "error, 74 output error, 78 bad configuration.\n",
	.opts = opts,
	.nopts = NT_OPT_COUNT(opts),
};

/* Run-time state; the settings themselves stay in cfg. */
struct tail {
	char                chan[NT_KEY_MAX];
	uint64_t            printed;
	int                 ready_fd;    /* -1 once used or when not asked */
	int                 stdout_pipe; /* stdout is a pipe or FIFO */
};

/* Written by the signal handler, read by the loop (self-pipe). */
static int sig_pipe[2] = { -1, -1 };

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
	if (cfg.offline && nt_user_valid(cfg.offline, err, sizeof(err)) != 0)
		errx(NT_EXIT_DATAERR, "--offline: %s", err);
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

/* TIME TYPE -> user:alice|channel:x|broadcast CONTENT */
static void
put_readable(const json_t *msg, FILE *f)
{
	const char *user = nt_msg_target_user(msg);
	const char *channel = nt_msg_channel(msg);

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

/*
 * Print one message (raw JSON as published, or readable) when it passes
 * the filters. Returns 1 when -n COUNT has been reached.
 */
static int
emit(struct tail *t, const char *buf, size_t len)
{
	char err[256];
	json_t *msg;

	if ((msg = nt_msg_decode(buf, len, err, sizeof(err))) == NULL) {
		warnx("skipping a message that is not a notification: %s", err);
		return 0;
	}
	if (!matches(msg)) {
		json_decref(msg);
		return 0;
	}
	if (cfg.json) {
		if (fwrite(buf, 1, len, stdout) != len)
			output_failed();
		putchar('\n');
	} else {
		put_readable(msg, stdout);
	}
	json_decref(msg);
	if (fflush(stdout) != 0 || ferror(stdout))
		output_failed();
	t->printed++;
	return cfg.count > 0 && t->printed >= (uint64_t)cfg.count;
}

/* ---- --offline ------------------------------------------------------- */

struct field {
	const redisReply *id;
	const redisReply *json;
};

static int
field_cmp(const void *a, const void *b)
{
	const struct field *fa = a, *fb = b;

	return strcmp(fa->id->str, fb->id->str);
}

/* The user's offline hash in id (= sending) order; nothing is removed. */
static int
list_offline(struct tail *t)
{
	char err[1024], key[NT_KEY_MAX];
	redisContext *c;
	redisReply *r;
	struct field *f;
	size_t i, n;

	if (nt_key_offline(key, sizeof(key), cfg.redis_prefix, cfg.offline) < 0)
		errx(NT_EXIT_DATAERR, "--offline: user id too long for a key");
	if ((c = connect_redis(err, sizeof(err))) == NULL)
		errx(NT_EXIT_UNAVAILABLE, "%s", err);
	r = redisCommand(c, "HGETALL %s", key);
	if (r == NULL)
		errx(NT_EXIT_UNAVAILABLE, "redis: %s", c->errstr);
	if (r->type == REDIS_REPLY_ERROR)
		errx(NT_EXIT_UNAVAILABLE, "redis: %s", r->str);
	if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
		errx(NT_EXIT_UNAVAILABLE, "redis: unexpected reply to HGETALL");

	n = r->elements / 2;
	if ((f = calloc(n ? n : 1, sizeof(*f))) == NULL)
		errx(NT_EXIT_SOFTWARE, "out of memory");
	for (i = 0; i < n; i++) {
		f[i].id = r->element[2 * i];
		f[i].json = r->element[2 * i + 1];
	}
	qsort(f, n, sizeof(*f), field_cmp);
	for (i = 0; i < n; i++)
		if (emit(t, f[i].json->str, f[i].json->len))
			break;
	free(f);
	freeReplyObject(r);
	redisFree(c);
	return NT_EXIT_OK;
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

/* What one reply means: 0 go on, 1 count reached, -1 protocol error. */
static int
handle_reply(struct tail *t, const redisReply *r, enum conn_state *st,
    int *subscriptions)
{
	const char *kind;

	if (r->type == REDIS_REPLY_ERROR)
		return -1;
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
			rc = handle_reply(t, r, &st, subscriptions);
			if (rc < 0)
				snprintf(err, errlen, "redis: %s", r->str);
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

	memset(&t, 0, sizeof(t));
	read_settings(argc, argv, &t);
	setup_signals();
	if (cfg.offline)
		return list_offline(&t);
	return run_tail(&t);
}
