/*
 * notify-send: send one notification, or a batch of them, through Redis
 * as notifyd(7) describes: a targeted message is appended to its user's
 * log and published, a broadcast is only published, in one atomic step
 * either way.
 */
#include <err.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "nt_config.h"
#include "nt_msg.h"
#include "nt_opt.h"
#include "nt_redis.h"
#include "nt_userlog.h"

#define PROG "notify-send"
/*
 * --batch keeps up to two windows of requests in flight on its one
 * connection: Redis runs one while the next is read and encoded.
 */
#define BATCH_WINDOW 1000
/* Offline expiry bounds, the same as notifyd-api's for the same variable. */
#define TTL_MIN_MS 1000LL
#define TTL_MAX_MS (366LL * 24 * 3600 * 1000)
#define STR(x)  #x
#define XSTR(x) STR(x)

/* Every setting, as the option table below fills it in. */
static struct {
	const char         *user;
	int                 broadcast;
	const char         *type;
	const char         *channel;
	const char         *data;
	uint64_t            offline_ttl_ms;
	long long           offline_max;
	int                 json;
	int                 batch;
	size_t              max_content;
	size_t              max_message;
	int                 quiet;
	int                 verbose;
	struct nt_redis_url redis;
	const char         *redis_prefix;
	uint64_t            redis_timeout_ms;
} cfg;

static const struct nt_opt opts[] = {
	{ "user", 'u', "USER", NULL, NULL, nt_opt_string, &cfg.user, 0, 0,
	  "send to this user: appended to the user's log and published" },
	{ "broadcast", 'b', NULL, NULL, NULL, nt_opt_switch, &cfg.broadcast,
	  0, 0, "send to everyone: published only, not stored" },
	{ "type", 't', "TYPE", NULL, "info", nt_opt_string, &cfg.type, 0, 0,
	  "notification type" },
	{ "channel", 'c', "CHANNEL", NULL, NULL, nt_opt_string, &cfg.channel,
	  0, 0, "channel name" },
	{ "data", 'd', "JSON", NULL, "{}", nt_opt_string, &cfg.data, 0, 0,
	  "extra data, a JSON object" },
	{ "ttl", 0, "DURATION", "NOTIFYD_OFFLINE_TTL", "7d", nt_opt_duration,
	  &cfg.offline_ttl_ms, TTL_MIN_MS, TTL_MAX_MS,
	  "how long a targeted message stays in its user's log, e.g. 12h; "
	  "from 1s to 366d" },
	{ "offline-max", 0, "N", "NOTIFYD_OFFLINE_MAX",
	  XSTR(NT_DEFAULT_OFFLINE_MAX), nt_opt_int, &cfg.offline_max, 1,
	  1000000, "entries kept in a user's log: a send trims the oldest "
	  "past this; from 1 to 1000000" },
	{ "json", 0, NULL, NULL, NULL, nt_opt_switch, &cfg.json, 0, 0,
	  "print each message sent as JSON on standard output" },
	{ "batch", 0, NULL, NULL, NULL, nt_opt_switch, &cfg.batch, 0, 0,
	  "read one JSON request per line from standard input" },
	{ "max-content", 0, "SIZE", "NOTIFYD_MAX_CONTENT", "64k", nt_opt_size,
	  &cfg.max_content, 1, 0, "largest content accepted, in bytes" },
	{ "max-message", 0, "SIZE", "NOTIFYD_MAX_MESSAGE", "128k", nt_opt_size,
	  &cfg.max_message, 1, 0, "largest encoded message accepted, in bytes" },
	{ "quiet", 'q', NULL, NULL, NULL, nt_opt_switch, &cfg.quiet, 0, 0,
	  "with --batch, report bad lines only by their number" },
	{ "verbose", 'v', NULL, NULL, NULL, nt_opt_switch, &cfg.verbose, 0, 0,
	  "report the message sent, its position in the user's log and how "
	  "many subscribed instances got it live, or with --batch how many "
	  "were sent" },
	NT_REDIS_OPT_URL(&cfg.redis),
	NT_REDIS_OPT_PREFIX(&cfg.redis_prefix),
	{ "redis-timeout", 0, "DURATION", "NOTIFYD_REDIS_TIMEOUT", "5s",
	  nt_opt_duration, &cfg.redis_timeout_ms, 10, 60000,
	  "bound on connecting to Redis and on each reply; from 10ms to 60s" },
};

/* Where each value came from: the flag, the variable, NULL the default. */
static const char *origin[NT_OPT_COUNT(opts)];

static const struct nt_opt_spec spec = {
	.prog = PROG,
	.synopsis =
	    "-u USER | -b [-t TYPE] [-c CHANNEL] [-d JSON] [OPTION ...] "
	    "[MESSAGE ...]\n"
	    "--batch [OPTION ...]",
	.footer =
	    "MESSAGE words are joined by spaces; with none, the content is read\n"
	    "from standard input. A flag wins over its variable.\n"
	    "Exit status: 0 sent, 64 usage, 65 bad data, 69 Redis unavailable or\n"
	    "refused, 70 internal error, 74 output error, 78 bad configuration.\n",
	.opts = opts,
	.nopts = NT_OPT_COUNT(opts),
	.origin = origin,
};

/* Was the flag whose value lands in dst given on the command line? */
static int
given(const void *dst)
{
	size_t i;

	for (i = 0; i < spec.nopts; i++)
		if (opts[i].dst == dst)
			return origin[i] != NULL &&
			    strcmp(origin[i], opts[i].name) == 0;
	return 0;
}

/*
 * Every setting from the table; then the combinations the table cannot
 * check (usage errors, 64). Returns the MESSAGE words' index in argv.
 */
static int
read_settings(int argc, char **argv)
{
	char err[512];
	int first, rc;

	rc = nt_opt_parse(&spec, argc, argv, &first, err, sizeof(err));
	if (rc == NT_OPT_DONE)
		exit(NT_EXIT_OK);
	if (rc != 0)
		errx(rc, "%s", err);
	if (cfg.quiet && cfg.verbose)
		errx(NT_EXIT_USAGE, "-q and -v exclude each other");
	if (cfg.batch) {
		if (given(&cfg.user) || given(&cfg.broadcast) ||
		    given(&cfg.type) || given(&cfg.channel) ||
		    given(&cfg.data) || first < argc)
			errx(NT_EXIT_USAGE, "--batch takes its requests from "
			    "standard input only (no -u, -b, -t, -c, -d or MESSAGE)");
	} else if (cfg.user && cfg.broadcast) {
		errx(NT_EXIT_USAGE, "-u and -b exclude each other");
	} else if (!cfg.user && !cfg.broadcast) {
		errx(NT_EXIT_USAGE, "give -u USER or -b (see --help)");
	}
	return first;
}

/* What a send needs besides the message: where, how long, how big. */
struct setup {
	struct nt_userlog_cfg log;
	struct nt_limits      lim;
};

static void
setup_from_settings(struct setup *s)
{
	s->log.prefix = cfg.redis_prefix;
	/* EXPIRE takes whole seconds: round up, never to 0. */
	s->log.ttl_s = (long long)((cfg.offline_ttl_ms + 999) / 1000);
	s->log.max_entries = cfg.offline_max;
	nt_limits_default(&s->lim);
	s->lim.max_content = cfg.max_content;
	s->lim.max_message = cfg.max_message;
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

/* A connection, or NULL with the reason (which names the URL) in err. */
static redisContext *
try_connect(char *err, size_t errlen)
{
	return nt_redis_connect_where(&cfg.redis, NT_REDIS_URL_WHERE,
	    (int)cfg.redis_timeout_ms, err, errlen);
}

static redisContext *
connect_redis(void)
{
	char err[1024];
	redisContext *c;

	if ((c = try_connect(err, sizeof(err))) == NULL)
		errx(NT_EXIT_UNAVAILABLE, "%s", err);
	return c;
}

/*
 * The message as the log stores and publishes it: a targeted one gets
 * its position as a last "seq" field, the way the append script adds it.
 */
static void
print_stored(const char *json, size_t len, const struct nt_userlog_sent *sent)
{
	int rc;

	if (sent->seq > 0)
		rc = printf("%.*s,\"seq\":%lld}\n", (int)(len - 1), json,
		    sent->seq);
	else
		rc = printf("%.*s\n", (int)len, json);
	if (rc < 0)
		errx(EX_IOERR, "writing standard output: %s", strerror(errno));
}

/*
 * -v: what was sent, where it is in the user's log, and how many
 * subscribers of the channel got it live. Those are notifyd-ws instances
 * (and notify-tail processes), not users: one instance holds every
 * connection of its users.
 */
static void
report_sent(const char *id, const struct nt_userlog_sent *sent, int resent)
{
	long long n = sent->receivers;
	const char *plural = n == 1 ? "" : "s";

	if (cfg.user && sent->duplicate && resent)
		fprintf(stderr, PROG ": sent %s to %s (seq %lld; stored and "
		    "published by the first attempt, whose answer was lost)\n",
		    id, cfg.user, sent->seq);
	else if (cfg.user && sent->duplicate)
		fprintf(stderr, PROG ": %s: already in %s's log at seq %lld: "
		    "not sent again\n", id, cfg.user, sent->seq);
	else if (cfg.user)
		fprintf(stderr, PROG ": sent %s to %s (seq %lld; live on %lld "
		    "subscribed instance%s)\n", id, cfg.user, sent->seq, n,
		    plural);
	else if (cfg.channel)
		fprintf(stderr, PROG ": sent %s to channel %s (broadcast, not "
		    "stored; live on %lld subscribed instance%s)\n", id,
		    cfg.channel, n, plural);
	else
		fprintf(stderr, PROG ": sent %s to everyone (broadcast, not "
		    "stored; live on %lld subscribed instance%s)\n", id, n,
		    plural);
}

/* One attempt: 0 answered, -1 refused by Redis, -2 connection broken. */
static int
send_attempt(redisContext *c, const struct setup *s, const char *id,
    const char *json, size_t len, struct nt_userlog_sent *sent, char *err,
    size_t errlen)
{
	const char *user = cfg.user;

	if (nt_userlog_send_append(c, &s->log, 1, &user, &id, &json,
	    &len) != 0)
		errx(NT_EXIT_SOFTWARE, "cannot queue the command (out of "
		    "memory?)");
	if (nt_userlog_send_read(c, 1, sent, err, errlen) == 0)
		return 0;
	/* A receive timeout reads as EAGAIN: say what it means. */
	if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
		snprintf(err, errlen, "redis: no answer within %d ms",
		    (int)cfg.redis_timeout_ms);
	return c->err ? -2 : -1;
}

/*
 * Send one message, certain of the outcome. When the connection breaks
 * after the command went out (a timeout, a reset) the message may or may
 * not be stored and published. A targeted one is then sent once more,
 * with the same id, on a new connection: its log stores and publishes an
 * id at most once and answers with its position either way. A broadcast
 * cannot be retried like that (every subscriber would get it twice), so
 * its failure says that the outcome is unknown. Exits 69 on failure.
 */
static void
send_certain(const struct setup *s, const char *id, const char *json,
    size_t len, struct nt_userlog_sent *sent, int *resent)
{
	char err[1024];
	redisContext *c = connect_redis();
	int rc;

	*resent = 0;
	rc = send_attempt(c, s, id, json, len, sent, err, sizeof(err));
	redisFree(c);
	if (rc == -2 && cfg.user == NULL)
		errx(NT_EXIT_UNAVAILABLE, "%s (the broadcast may or may not "
		    "have gone out)", err);
	if (rc == -2) {
		warnx("%s; sending %s again on a new connection", err, id);
		*resent = 1;
		if ((c = try_connect(err, sizeof(err))) == NULL)
			errx(NT_EXIT_UNAVAILABLE, "%s (%s may or may not be "
			    "stored and published)", err, id);
		rc = send_attempt(c, s, id, json, len, sent, err, sizeof(err));
		redisFree(c);
		if (rc == -2)
			errx(NT_EXIT_UNAVAILABLE, "%s (%s may or may not be "
			    "stored and published)", err, id);
	}
	if (rc != 0)
		errx(NT_EXIT_UNAVAILABLE, "%s", err);
}

/* What each key of a request is called on the command line. */
static const struct {
	const char *key, *flag;
} key_flags[] = {
	{ "target_user", "-u" },
	{ "notification_type", "-t" },
	{ "channel", "-c" },
	{ "data", "-d" },
	{ "content", "MESSAGE" },
};

static const char *
flag_of(const char *key)
{
	size_t i;

	for (i = 0; i < sizeof(key_flags) / sizeof(key_flags[0]); i++)
		if (strcmp(key_flags[i].key, key) == 0)
			return key_flags[i].flag;
	return "request";
}

/* Set key to v (a new reference; NULL: the text was not UTF-8). */
static int
set_key(json_t *obj, const char *key, json_t *v, char *err, size_t errlen)
{
	if (v == NULL) {
		snprintf(err, errlen, "%s: not valid UTF-8", flag_of(key));
		return -1;
	}
	if (json_object_set_new(obj, key, v) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/*
 * The request the flags make, written as the --batch line that says the
 * same, so that both are checked by the one validator and cannot drift
 * apart. A new reference, or NULL with the reason in err (-d that is not
 * JSON, text that is not UTF-8).
 */
static json_t *
flags_request(const char *content, char *err, size_t errlen)
{
	json_t *obj, *data = NULL;
	json_error_t jerr;
	int rc;

	if (cfg.data) {
		data = json_loads(cfg.data, JSON_DECODE_ANY |
		    JSON_REJECT_DUPLICATES, &jerr);
		if (data == NULL) {
			snprintf(err, errlen, "-d is not JSON: %s", jerr.text);
			return NULL;
		}
	}
	if ((obj = json_object()) == NULL) {
		json_decref(data);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (cfg.user)
		rc = set_key(obj, "target_user", json_string(cfg.user), err,
		    errlen);
	else
		rc = set_key(obj, "broadcast", json_true(), err, errlen);
	if (rc == 0)
		rc = set_key(obj, "notification_type", json_string(cfg.type),
		    err, errlen);
	if (rc == 0)
		rc = set_key(obj, "content", json_string(content), err, errlen);
	if (rc == 0 && cfg.channel)
		rc = set_key(obj, "channel", json_string(cfg.channel), err,
		    errlen);
	if (rc == 0 && data) {
		rc = set_key(obj, "data", data, err, errlen);
		data = NULL;
	}
	json_decref(data);
	if (rc != 0) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

/*
 * The message the flags and MESSAGE words make, checked, built and
 * encoded: 0, or -1 with the reason in err. Everything it allocates
 * on the way is freed before it returns.
 */
static int
message_from_flags(char **words, int nwords, const struct setup *s,
    json_t **msg, char **json, size_t *len, char *err, size_t errlen)
{
	struct nt_msg_req req;
	char field[64], why[256], *content;
	json_t *obj;

	if (nwords > 0)
		content = join_words(words, nwords);
	else
		content = read_content(s->lim.max_content);
	obj = flags_request(content, err, errlen);
	free(content);  /* the request holds its own copy */
	if (obj == NULL)
		return -1;
	*msg = NULL;
	*json = NULL;
	if (nt_msg_req_parse(obj, NT_REQ_LINE, &req, NULL, field,
	    sizeof(field), why, sizeof(why)) != 0)
		snprintf(err, errlen, "%s: %s", flag_of(field), why);
	else if ((*msg = nt_msg_build(&req, &s->lim, err, errlen)) != NULL &&
	    (*json = nt_msg_encode(*msg, &s->lim, len, err, errlen)) == NULL) {
		json_decref(*msg);
		*msg = NULL;
	}
	json_decref(obj);
	return *json != NULL ? 0 : -1;
}

/* One message from the flags and the MESSAGE words: 0 sent. */
static int
send_one(char **words, int nwords, const struct setup *s)
{
	struct nt_userlog_sent sent;
	json_t *msg;
	char err[384], *json;
	size_t len;
	int resent;

	if (message_from_flags(words, nwords, s, &msg, &json, &len, err,
	    sizeof(err)) != 0)
		errx(NT_EXIT_DATAERR, "%s", err);

	send_certain(s, nt_msg_id(msg), json, len, &sent, &resent);

	if (cfg.json) {
		print_stored(json, len, &sent);
		if (fflush(stdout) != 0)
			errx(EX_IOERR, "writing standard output: %s",
			    strerror(errno));
	}
	if (cfg.verbose)
		report_sent(nt_msg_id(msg), &sent, resent);
	free(json);
	json_decref(msg);
	return NT_EXIT_OK;
}

/* --batch: a window of requests queued on the connection, not yet read. */
struct pending {
	long   line;
	char  *json;
	size_t len;
};

struct batch {
	const struct setup *s;
	redisContext       *c;
	struct pending      win[2 * BATCH_WINDOW];  /* a ring, oldest first */
	int                 head, nwin;
	long                sent, bad;
	int                 redis_failed;
};

static void
bad_line(struct batch *b, long line, const char *reason)
{
	b->bad++;
	if (!cfg.quiet)
		fprintf(stderr, PROG ": line %ld: %s\n", line, reason);
}

/* Write out what is queued, without waiting for the replies. */
static void
batch_push(struct batch *b)
{
	int done = 0;

	while (!done && b->c->err == 0)
		if (redisBufferWrite(b->c, &done) != REDIS_OK)
			break;
}

/*
 * Read replies, oldest first, until keep requests are left in flight.
 * After the first refusal the rest are still read (the replies are on
 * the wire) but no longer reported one by one.
 */
static void
batch_flush(struct batch *b, int keep)
{
	struct nt_userlog_sent sent;
	char err[256];

	for (; b->nwin > keep; b->nwin--) {
		struct pending *p = &b->win[b->head];

		b->head = (b->head + 1) % (2 * BATCH_WINDOW);
		if (b->c->err) {
			/* The connection is gone: nothing more will come. */
		} else if (nt_userlog_send_read(b->c, 1, &sent, err,
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
			if (cfg.json && !b->redis_failed)
				print_stored(p->json, p->len, &sent);
		}
		free(p->json);
	}
	if (cfg.json && fflush(stdout) != 0)
		errx(EX_IOERR, "writing standard output: %s", strerror(errno));
}

/* Queue one send on the pipelined connection (its reply is read later). */
static void
queue_send(struct batch *b, const char *user, const char *id,
    const char *json, size_t len)
{
	if (nt_userlog_send_append(b->c, &b->s->log, 1, &user, &id, &json,
	    &len) != 0)
		errx(NT_EXIT_SOFTWARE, "cannot queue the command (out of "
		    "memory?)");
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

	/* A key given twice would otherwise be read as its last value. */
	obj = json_loadb(text, textlen, JSON_REJECT_DUPLICATES, &jerr);
	if (obj == NULL) {
		if (json_error_code(&jerr) == json_error_duplicate_key)
			snprintf(err, sizeof(err), "%s (a key may appear once)",
			    jerr.text);
		else
			snprintf(err, sizeof(err), "not JSON: %s", jerr.text);
		bad_line(b, line, err);
		return -1;
	}
	msg = NULL;
	json = NULL;
	if (nt_msg_req_parse(obj, NT_REQ_LINE, &req, NULL, NULL, 0, err,
	    sizeof(err)) != 0 ||
	    (msg = nt_msg_build(&req, &b->s->lim, err, sizeof(err))) == NULL ||
	    (json = nt_msg_encode(msg, &b->s->lim, &len, err,
	    sizeof(err))) == NULL) {
		bad_line(b, line, err);
	} else {
		struct pending *p = &b->win[(b->head + b->nwin) %
		    (2 * BATCH_WINDOW)];

		queue_send(b, req.target_user, nt_msg_id(msg), json, len);
		p->line = line;
		p->json = json;
		p->len = len;
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
 * one atomic send per line, up to two windows in flight. Blank lines are
 * skipped.
 */
static int
send_batch(const struct setup *s)
{
	static struct batch b;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long lineno = 0;

	b.s = s;
	b.c = connect_redis();
	while (!b.redis_failed && (n = getline(&line, &cap, stdin)) != -1) {
		lineno++;
		if (blank(line, (size_t)n))
			continue;
		if (batch_queue(&b, lineno, line, (size_t)n) != 0)
			continue;
		if (b.nwin == BATCH_WINDOW) {
			batch_push(&b);
		} else if (b.nwin == 2 * BATCH_WINDOW) {
			batch_push(&b);
			batch_flush(&b, BATCH_WINDOW);
		}
	}
	free(line);
	batch_flush(&b, 0);
	redisFree(b.c);

	if (cfg.verbose || (cfg.quiet && b.bad > 0))
		fprintf(stderr, PROG ": %ld sent, %ld bad lines\n", b.sent,
		    b.bad);
	if (b.redis_failed)
		return NT_EXIT_UNAVAILABLE;
	return b.bad > 0 ? NT_EXIT_DATAERR : NT_EXIT_OK;
}

int
main(int argc, char **argv)
{
	struct setup s;
	int first;

	signal(SIGPIPE, SIG_IGN);
	first = read_settings(argc, argv);
	setup_from_settings(&s);
	if (cfg.batch)
		return send_batch(&s);
	return send_one(argv + first, argc - first, &s);
}
