/*
 * notify-send: send one notification, or a batch of them, through Redis
 * as notifyd(7) describes: a targeted message is stored in the user's
 * offline hash and published, a broadcast is only published, in one
 * atomic step either way.
 */
#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "nt_config.h"
#include "nt_msg.h"
#include "nt_redis.h"

#define PROG "notify-send"
#define REDIS_TIMEOUT_MS 5000
/* Requests in flight on the pipelined connection in --batch mode. */
#define BATCH_WINDOW 1000

struct opts {
	const char *user;
	int         broadcast;
	const char *type;
	const char *channel;
	const char *data;
	const char *ttl;
	const char *max_content;
	const char *max_message;
	const char *redis_url;
	const char *prefix;
	int         json;
	int         batch;
	int         verbose;     /* -1 quiet, 0 normal, 1 verbose */
	char      **words;       /* MESSAGE arguments */
	int         nwords;
};

/* Settings resolved from flags and environment, ready to use. */
struct setup {
	struct nt_redis_url url;
	struct nt_store     store;
	struct nt_limits    lim;
};

static void
usage(FILE *f)
{
	fprintf(f,
"usage: " PROG " -u USER | -b [-t TYPE] [-c CHANNEL] [-d JSON] [--ttl DURATION]\n"
"                   [--json] [-q | -v] [--redis URL] [--redis-prefix PREFIX]\n"
"                   [--max-content SIZE] [--max-message SIZE] [MESSAGE ...]\n"
"       " PROG " --batch [--json] [-q | -v] [--ttl DURATION] [--redis URL]\n"
"                   [--redis-prefix PREFIX] [--max-content SIZE] [--max-message SIZE]\n"
"       " PROG " -h | --help | --version\n"
"\n"
"  -u, --user USER          send to this user (stored offline and published)\n"
"  -b, --broadcast          send to everyone (published only)\n"
"  -t, --type TYPE          notification type (default: info)\n"
"  -c, --channel CHANNEL    channel name\n"
"  -d, --data JSON          extra data, a JSON object (default: {})\n"
"      --ttl DURATION       offline expiry, e.g. 7d, 12h (default: 7d)\n"
"      --json               print each message sent as JSON on stdout\n"
"      --batch              read one JSON request per line from stdin\n"
"      --max-content SIZE   content limit in bytes, e.g. 64k (default: 64k)\n"
"      --max-message SIZE   encoded message limit (default: 128k)\n"
"  -q, --quiet              in --batch mode, do not report each bad line\n"
"  -v, --verbose            report each message sent and a batch summary\n"
"      --redis URL          redis://[[user]:password@]host[:port][/db] or\n"
"                           unix:///path (default: " NT_DEFAULT_REDIS_URL ")\n"
"      --redis-prefix PREFIX  key prefix (default: none)\n"
"  -h, --help               show this help\n"
"      --version            show the version\n"
"\n"
"MESSAGE words are joined by spaces; with none, the content is read from\n"
"standard input. Environment: NOTIFYD_REDIS_URL, NOTIFYD_REDIS_PREFIX,\n"
"NOTIFYD_OFFLINE_TTL, NOTIFYD_MAX_CONTENT, NOTIFYD_MAX_MESSAGE.\n"
"Exit status: 0 sent, 64 usage, 65 bad data, 69 Redis unavailable or\n"
"refused, 70 out of memory, 74 output error, 78 bad configuration.\n");
}

enum {
	OPT_TTL = 256, OPT_JSON, OPT_BATCH, OPT_MAX_CONTENT, OPT_MAX_MESSAGE,
	OPT_REDIS, OPT_PREFIX, OPT_VERSION,
};

static void
parse_flags(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "user",         required_argument, NULL, 'u' },
		{ "broadcast",    no_argument,       NULL, 'b' },
		{ "type",         required_argument, NULL, 't' },
		{ "channel",      required_argument, NULL, 'c' },
		{ "data",         required_argument, NULL, 'd' },
		{ "ttl",          required_argument, NULL, OPT_TTL },
		{ "json",         no_argument,       NULL, OPT_JSON },
		{ "batch",        no_argument,       NULL, OPT_BATCH },
		{ "max-content",  required_argument, NULL, OPT_MAX_CONTENT },
		{ "max-message",  required_argument, NULL, OPT_MAX_MESSAGE },
		{ "quiet",        no_argument,       NULL, 'q' },
		{ "verbose",      no_argument,       NULL, 'v' },
		{ "redis",        required_argument, NULL, OPT_REDIS },
		{ "redis-prefix", required_argument, NULL, OPT_PREFIX },
		{ "help",         no_argument,       NULL, 'h' },
		{ "version",      no_argument,       NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	memset(o, 0, sizeof(*o));
	opterr = 0;  /* one line of our own instead of getopt's */
	while ((ch = getopt_long(argc, argv, "u:bt:c:d:qvh", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'u': o->user = optarg; break;
		case 'b': o->broadcast = 1; break;
		case 't': o->type = optarg; break;
		case 'c': o->channel = optarg; break;
		case 'd': o->data = optarg; break;
		case 'q': o->verbose = -1; break;
		case 'v': o->verbose = 1; break;
		case OPT_TTL: o->ttl = optarg; break;
		case OPT_JSON: o->json = 1; break;
		case OPT_BATCH: o->batch = 1; break;
		case OPT_MAX_CONTENT: o->max_content = optarg; break;
		case OPT_MAX_MESSAGE: o->max_message = optarg; break;
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
	o->words = argv + optind;
	o->nwords = argc - optind;

	if (o->batch) {
		if (o->user || o->broadcast || o->type || o->channel ||
		    o->data || o->nwords > 0)
			errx(NT_EXIT_USAGE, "--batch takes its requests from "
			    "standard input only (no -u, -b, -t, -c, -d or MESSAGE)");
	} else if (o->user && o->broadcast) {
		errx(NT_EXIT_USAGE, "-u and -b exclude each other");
	} else if (!o->user && !o->broadcast) {
		errx(NT_EXIT_USAGE, "give -u USER or -b (see --help)");
	}
}

/*
 * A size or duration flag: a bad flag is a usage error (64), a bad
 * NOTIFYD_* variable a configuration error (78).
 */
static const char *
setting(const char *flag, const char *env, const char *fallback, int *code)
{
	*code = flag ? NT_EXIT_USAGE : NT_EXIT_CONFIG;
	return nt_env_or(flag, env, fallback);
}

static void
resolve(const struct opts *o, struct setup *s)
{
	char err[256];
	const char *v;
	uint64_t ttl_ms;
	int code;

	if (nt_redis_settings(o->redis_url, o->prefix, &s->url,
	    &s->store.prefix, err, sizeof(err)) != 0)
		errx(NT_EXIT_CONFIG, "%s", err);

	v = setting(o->ttl, "NOTIFYD_OFFLINE_TTL", "7d", &code);
	if (nt_duration_ms_parse(v, &ttl_ms) != 0 || ttl_ms < 1000)
		errx(code, "bad offline TTL '%s': want a duration of at least "
		    "1s, e.g. 7d, 12h, 30m", v);
	s->store.offline_ttl_s = (long long)((ttl_ms + 999) / 1000);

	nt_limits_default(&s->lim);
	v = setting(o->max_content, "NOTIFYD_MAX_CONTENT", NULL, &code);
	if (v && (nt_size_parse(v, &s->lim.max_content) != 0 ||
	    s->lim.max_content == 0))
		errx(code, "bad content limit '%s': want a size, e.g. 64k", v);
	v = setting(o->max_message, "NOTIFYD_MAX_MESSAGE", NULL, &code);
	if (v && (nt_size_parse(v, &s->lim.max_message) != 0 ||
	    s->lim.max_message == 0))
		errx(code, "bad message limit '%s': want a size, e.g. 128k", v);
}

/* The MESSAGE words joined by single spaces. Caller frees. */
static char *
join_words(char **words, int n)
{
	size_t len = 1, off = 0;
	char *buf;
	int i;

	for (i = 0; i < n; i++)
		len += strlen(words[i]) + 1;
	if ((buf = malloc(len)) == NULL)
		errx(NT_EXIT_SOFTWARE, "out of memory");
	for (i = 0; i < n; i++) {
		size_t wl = strlen(words[i]);

		if (i > 0)
			buf[off++] = ' ';
		memcpy(buf + off, words[i], wl);
		off += wl;
	}
	buf[off] = '\0';
	return buf;
}

/*
 * All of standard input, at most max bytes, trailing newlines removed
 * (as the shell's $(...) does). Caller frees.
 */
static char *
read_content(size_t max)
{
	size_t cap = 4096, len = 0, n;
	char *buf;

	if (isatty(STDIN_FILENO))
		errx(NT_EXIT_USAGE, "no MESSAGE given and standard input is a "
		    "terminal (give MESSAGE words or pipe the content in)");
	if ((buf = malloc(cap)) == NULL)
		errx(NT_EXIT_SOFTWARE, "out of memory");
	while ((n = fread(buf + len, 1, cap - len - 1, stdin)) > 0) {
		len += n;
		if (len > max + 1)
			errx(NT_EXIT_DATAERR, "content is over %zu bytes", max);
		if (cap - len - 1 == 0) {
			char *nb;

			cap *= 2;
			if ((nb = realloc(buf, cap)) == NULL)
				errx(NT_EXIT_SOFTWARE, "out of memory");
			buf = nb;
		}
	}
	if (ferror(stdin))
		errx(NT_EXIT_DATAERR, "reading standard input: %s",
		    strerror(errno));
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	if (memchr(buf, '\0', len) != NULL)
		errx(NT_EXIT_DATAERR, "content contains a NUL byte");
	return buf;
}

static redisContext *
connect_redis(const struct setup *s)
{
	char err[256];
	redisContext *c;

	c = nt_redis_connect(&s->url, REDIS_TIMEOUT_MS, err, sizeof(err));
	if (c == NULL)
		errx(NT_EXIT_UNAVAILABLE, "%s", err);
	return c;
}

/* One message from the flags and arguments: 0 sent, else an exit code. */
static int
send_one(const struct opts *o, const struct setup *s)
{
	struct nt_msg_req req;
	json_t *data = NULL, *msg;
	json_error_t jerr;
	redisContext *c;
	char err[256], *content, *json;
	long long receivers = 0;
	size_t len;

	if (o->data) {
		data = json_loads(o->data, JSON_DECODE_ANY, &jerr);
		if (data == NULL)
			errx(NT_EXIT_DATAERR, "-d is not JSON: %s", jerr.text);
		if (!json_is_object(data))
			errx(NT_EXIT_DATAERR, "-d must be a JSON object");
	}
	if (o->nwords > 0)
		content = join_words(o->words, o->nwords);
	else
		content = read_content(s->lim.max_content);

	memset(&req, 0, sizeof(req));
	req.target_user = o->user;
	req.type = o->type;
	req.content = content;
	req.channel = o->channel;
	req.data = data;
	if ((msg = nt_msg_build(&req, &s->lim, err, sizeof(err))) == NULL)
		errx(NT_EXIT_DATAERR, "%s", err);
	if ((json = nt_msg_encode(msg, &s->lim, &len, err, sizeof(err))) == NULL)
		errx(NT_EXIT_DATAERR, "%s", err);

	c = connect_redis(s);
	if (nt_redis_send(c, &s->store, o->user, nt_msg_id(msg), json, len,
	    &receivers, err, sizeof(err)) != 0)
		errx(NT_EXIT_UNAVAILABLE, "%s", err);
	redisFree(c);

	if (o->json && (puts(json) == EOF || fflush(stdout) != 0))
		errx(EX_IOERR, "writing standard output: %s",
		    strerror(errno));
	if (o->verbose > 0)
		fprintf(stderr, PROG ": sent %s to %s%s (%lld receivers)\n",
		    nt_msg_id(msg), o->user ? "user " : "everyone (broadcast)",
		    o->user ? o->user : "", receivers);
	free(json);
	json_decref(msg);
	json_decref(data);
	free(content);
	return NT_EXIT_OK;
}

/* --batch: a window of requests queued on the connection, not yet read. */
struct pending {
	long  line;
	char *json;
};

struct batch {
	const struct opts  *o;
	const struct setup *s;
	redisContext       *c;
	struct pending      win[BATCH_WINDOW];
	int                 nwin;
	long                sent, bad;
	int                 redis_failed;
};

static void
bad_line(struct batch *b, long line, const char *reason)
{
	b->bad++;
	if (b->o->verbose >= 0)
		fprintf(stderr, PROG ": line %ld: %s\n", line, reason);
}

/*
 * Read the replies of the whole window. After the first refusal the
 * rest of the window is still read (the replies are on the wire) but
 * no longer reported one by one.
 */
static void
batch_flush(struct batch *b)
{
	char err[256];
	int i;

	for (i = 0; i < b->nwin; i++) {
		struct pending *p = &b->win[i];

		if (b->c->err) {
			/* The connection is gone: nothing more will come. */
		} else if (nt_redis_send_read(b->c, NULL, err,
		    sizeof(err)) != 0) {
			if (b->c->err)
				fprintf(stderr, PROG ": connection lost: "
				    "%s\n", err);
			else if (!b->redis_failed)
				fprintf(stderr, PROG ": line %ld: %s\n",
				    p->line, err);
			b->redis_failed = 1;
		} else {
			b->sent++;
			if (b->o->json && !b->redis_failed &&
			    (puts(p->json) == EOF))
				errx(EX_IOERR, "writing standard "
				    "output: %s", strerror(errno));
		}
		free(p->json);
	}
	b->nwin = 0;
	if (b->o->json && fflush(stdout) != 0)
		errx(EX_IOERR, "writing standard output: %s", strerror(errno));
}

/* Check one line and queue it: 0 queued, -1 bad (reported). */
static int
batch_queue(struct batch *b, long line, const char *text, size_t textlen)
{
	struct nt_msg_req req;
	json_error_t jerr;
	json_t *obj, *msg;
	char err[256], *json;
	size_t len;
	int rc = -1;

	obj = json_loadb(text, textlen, 0, &jerr);
	if (obj == NULL) {
		snprintf(err, sizeof(err), "not JSON: %s", jerr.text);
		bad_line(b, line, err);
		return -1;
	}
	msg = NULL;
	json = NULL;
	if (nt_msg_req_from_json(obj, &req, NULL, err, sizeof(err)) != 0 ||
	    (msg = nt_msg_build(&req, &b->s->lim, err, sizeof(err))) == NULL ||
	    (json = nt_msg_encode(msg, &b->s->lim, &len, err,
	    sizeof(err))) == NULL) {
		bad_line(b, line, err);
	} else if (nt_redis_send_append(b->c, &b->s->store, req.target_user,
	    nt_msg_id(msg), json, len) != 0) {
		errx(NT_EXIT_SOFTWARE, "out of memory");
	} else {
		b->win[b->nwin].line = line;
		b->win[b->nwin].json = json;
		b->nwin++;
		json = NULL;
		rc = 0;
	}
	free(json);
	json_decref(msg);
	json_decref(obj);
	return rc;
}

static int
blank(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return 0;
	return 1;
}

/*
 * --batch: every line of standard input over ONE pipelined connection,
 * BATCH_WINDOW requests in flight at a time. Blank lines are skipped.
 */
static int
send_batch(const struct opts *o, const struct setup *s)
{
	static struct batch b;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long lineno = 0;

	b.o = o;
	b.s = s;
	b.c = connect_redis(s);
	while (!b.redis_failed && (n = getline(&line, &cap, stdin)) != -1) {
		lineno++;
		if (blank(line, (size_t)n))
			continue;
		batch_queue(&b, lineno, line, (size_t)n);
		if (b.nwin == BATCH_WINDOW)
			batch_flush(&b);
	}
	free(line);
	batch_flush(&b);
	redisFree(b.c);

	if (o->verbose > 0 || (o->verbose < 0 && b.bad > 0))
		fprintf(stderr, PROG ": %ld sent, %ld bad lines\n", b.sent,
		    b.bad);
	if (b.redis_failed)
		return NT_EXIT_UNAVAILABLE;
	return b.bad > 0 ? NT_EXIT_DATAERR : NT_EXIT_OK;
}

int
main(int argc, char **argv)
{
	struct opts o;
	struct setup s;

	signal(SIGPIPE, SIG_IGN);
	parse_flags(argc, argv, &o);
	resolve(&o, &s);
	if (o.batch)
		return send_batch(&o, &s);
	return send_one(&o, &s);
}
