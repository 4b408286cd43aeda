/*
 * notify-tail: print the notifications going through Redis as they
 * arrive, one line each, or list what waits in a user's offline hash.
 * A debugging tool: it must keep going across Redis restarts, and stop
 * quietly when its reader (head, grep -m) goes away.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "nt_config.h"
#include "nt_msg.h"
#include "nt_redis.h"

#define PROG "notify-tail"
#define REDIS_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000
#define DEFAULT_PING     "15s"

struct opts {
	const char *user;
	const char *channel;
	const char *type;
	const char *offline;
	const char *count;
	const char *ready_fd;
	const char *ping;
	const char *redis_url;
	const char *prefix;
	int         json;
};

struct tail {
	struct opts         o;
	struct nt_redis_url url;
	const char         *prefix;
	char                chan[NT_KEY_MAX];
	uint64_t            max_count;   /* 0: no limit */
	uint64_t            printed;
	int                 ping_ms;
	int                 ready_fd;    /* -1 once used or when not asked */
	int                 stdout_pipe; /* stdout is a pipe or FIFO */
};

/* Written by the signal handler, read by the loop (self-pipe). */
static int sig_pipe[2] = { -1, -1 };

static void
usage(FILE *f)
{
	fprintf(f,
"usage: " PROG " [--json] [-u USER] [-c CHANNEL] [-t TYPE] [-n COUNT]\n"
"                   [--ping-interval DURATION] [--ready-fd FD] [--redis URL]\n"
"                   [--redis-prefix PREFIX]\n"
"       " PROG " --offline USER [--json] [-c CHANNEL] [-t TYPE] [-n COUNT]\n"
"                   [--redis URL] [--redis-prefix PREFIX]\n"
"       " PROG " -h | --help | --version\n"
"\n"
"      --json               print each message as its raw JSON\n"
"  -u, --user USER          only messages sent to this user\n"
"  -c, --channel CHANNEL    only messages of this channel\n"
"  -t, --type TYPE          only messages of this type\n"
"  -n, --count COUNT        exit after printing COUNT messages\n"
"      --offline USER       list USER's offline messages, oldest first,\n"
"                           without removing them, then exit\n"
"      --ping-interval DURATION  PING an idle connection this often and\n"
"                           reconnect when no reply comes (default: " DEFAULT_PING ")\n"
"      --ready-fd FD        write a newline to FD once subscribed\n"
"      --redis URL          redis://[[user]:password@]host[:port][/db] or\n"
"                           unix:///path (default: " NT_DEFAULT_REDIS_URL ")\n"
"      --redis-prefix PREFIX  key prefix (default: none)\n"
"  -h, --help               show this help\n"
"      --version            show the version\n"
"\n"
"Environment: NOTIFYD_REDIS_URL, NOTIFYD_REDIS_PREFIX.\n"
"Exit status: 0 done (count reached, SIGINT, SIGTERM, closed output pipe),\n"
"64 usage, 65 bad user id, 69 Redis unavailable, 70 internal error,\n"
"74 output error, 78 bad configuration.\n");
}

enum {
	OPT_JSON = 256, OPT_OFFLINE, OPT_READY_FD, OPT_PING, OPT_REDIS,
	OPT_PREFIX, OPT_VERSION,
};

static void
parse_flags(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "json",          no_argument,       NULL, OPT_JSON },
		{ "user",          required_argument, NULL, 'u' },
		{ "channel",       required_argument, NULL, 'c' },
		{ "type",          required_argument, NULL, 't' },
		{ "count",         required_argument, NULL, 'n' },
		{ "offline",       required_argument, NULL, OPT_OFFLINE },
		{ "ping-interval", required_argument, NULL, OPT_PING },
		{ "ready-fd",      required_argument, NULL, OPT_READY_FD },
		{ "redis",         required_argument, NULL, OPT_REDIS },
		{ "redis-prefix",  required_argument, NULL, OPT_PREFIX },
		{ "help",          no_argument,       NULL, 'h' },
		{ "version",       no_argument,       NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	memset(o, 0, sizeof(*o));
	opterr = 0;  /* one line of our own instead of getopt's */
	while ((ch = getopt_long(argc, argv, "u:c:t:n:h", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'u': o->user = optarg; break;
		case 'c': o->channel = optarg; break;
		case 't': o->type = optarg; break;
		case 'n': o->count = optarg; break;
		case OPT_JSON: o->json = 1; break;
		case OPT_OFFLINE: o->offline = optarg; break;
		case OPT_PING: o->ping = optarg; break;
		case OPT_READY_FD: o->ready_fd = optarg; break;
		case OPT_REDIS: o->redis_url = optarg; break;
		case OPT_PREFIX: o->prefix = optarg; break;
		case 'h':
			usage(stdout);
			exit(NT_EXIT_OK);
		case OPT_VERSION:
			printf(PROG " " NT_VERSION "\n");
			exit(NT_EXIT_OK);
		default:
			errx(NT_EXIT_USAGE, "unknown flag or missing value: "
			    "'%s' (see --help)", argv[optind - 1]);
		}
	}
	if (optind < argc)
		errx(NT_EXIT_USAGE, "unexpected argument '%s' (see --help)",
		    argv[optind]);
}

static void
resolve(struct tail *t)
{
	char err[256];
	const char *v;
	uint64_t n, ms;
	struct stat sb;

	if (nt_redis_settings(t->o.redis_url, t->o.prefix, &t->url, &t->prefix,
	    err, sizeof(err)) != 0)
		errx(NT_EXIT_CONFIG, "%s", err);
	if (nt_key_channel(t->chan, sizeof(t->chan), t->prefix) < 0)
		errx(NT_EXIT_CONFIG, "redis prefix too long");

	t->max_count = 0;
	if (t->o.count && nt_u64_parse(t->o.count, 1, UINT64_MAX,
	    &t->max_count) != 0)
		errx(NT_EXIT_USAGE, "bad -n '%s': want a count of at least 1",
		    t->o.count);
	v = t->o.ping ? t->o.ping : DEFAULT_PING;
	if (nt_duration_ms_parse(v, &ms) != 0 || ms < 10 || ms > 3600000)
		errx(NT_EXIT_USAGE, "bad --ping-interval '%s': want a duration "
		    "from 10ms to 1h, e.g. 15s", v);
	t->ping_ms = (int)ms;
	t->ready_fd = -1;
	if (t->o.ready_fd) {
		if (nt_u64_parse(t->o.ready_fd, 0, 65535, &n) != 0 ||
		    fcntl((int)n, F_GETFD) == -1)
			errx(NT_EXIT_USAGE, "bad --ready-fd '%s': not an open "
			    "file descriptor", t->o.ready_fd);
		t->ready_fd = (int)n;
	}
	t->stdout_pipe = fstat(STDOUT_FILENO, &sb) == 0 && S_ISFIFO(sb.st_mode);
	if (t->o.offline && nt_user_valid(t->o.offline, err, sizeof(err)) != 0)
		errx(NT_EXIT_DATAERR, "--offline: %s", err);
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
matches(const struct tail *t, const json_t *msg)
{
	const char *user = nt_msg_target_user(msg);
	const char *channel = nt_msg_channel(msg);
	const char *type = json_string_value(json_object_get(msg, "type"));

	if (t->o.user && (!user || strcmp(user, t->o.user) != 0))
		return 0;
	if (t->o.channel && (!channel || strcmp(channel, t->o.channel) != 0))
		return 0;
	if (t->o.type && (!type || strcmp(type, t->o.type) != 0))
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
	if (!matches(t, msg)) {
		json_decref(msg);
		return 0;
	}
	if (t->o.json) {
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
	return t->max_count > 0 && t->printed >= t->max_count;
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
	char err[256], key[NT_KEY_MAX];
	redisContext *c;
	redisReply *r;
	struct field *f;
	size_t i, n;

	if (nt_key_offline(key, sizeof(key), t->prefix, t->o.offline) < 0)
		errx(NT_EXIT_DATAERR, "--offline: user id too long for a key");
	c = nt_redis_connect(&t->url, REDIS_TIMEOUT_MS, err, sizeof(err));
	if (c == NULL)
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

	c = nt_redis_connect(&t->url, REDIS_TIMEOUT_MS, err, errlen);
	if (c == NULL)
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
	long long deadline = now_ms() + t->ping_ms;

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
				    "within %d ms", t->ping_ms);
				return 0;
			}
			if (command(c, "PING", NULL) != 0) {
				snprintf(err, errlen, "redis: %s", c->errstr);
				return 0;
			}
			st = WANT_PONG;
			deadline = now_ms() + t->ping_ms;
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
			deadline = now_ms() + t->ping_ms;
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
	char err[256];
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
			warnx("cannot reconnect yet (%s); retrying with backoff "
			    "up to %d ms", err, BACKOFF_MAX_MS);
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
	parse_flags(argc, argv, &t.o);
	resolve(&t);
	setup_signals();
	if (t.o.offline)
		return list_offline(&t);
	return run_tail(&t);
}
