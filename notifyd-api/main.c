/*
 * notifyd-api: the REST daemon through which backend services send
 * notifications. It speaks HTTP on one side and Redis on the other,
 * following notifyd(7); see notifyd-api(8).
 */
#include <err.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "nt_config.h"
#include "nt_log.h"
#include "nt_opt.h"
#include "nt_proxy.h"
#include "nt_redis.h"
#include "nt_sdnotify.h"
#include "nt_userlog.h"

#define DRAIN_DEADLINE_MS 10000
#define STR(x)  #x
#define XSTR(x) STR(x)

/*
 * What the table stores that api_config holds in another form (seconds,
 * unsigned) or that only main() needs. Read once, after nt_opt_parse.
 */
static struct {
	uint64_t          offline_ttl_ms, jwt_leeway_ms, jwt_max_age_ms;
	uint64_t          connection_timeout_ms, redis_timeout_ms;
	uint64_t          request_timeout_ms;
	long long         max_targets;
	long long         threads, max_connections, rate_burst;
	const char       *jwt_secret_file, *jwt_public_key;
	int               ready_fd;
	enum nt_log_level log_level;
} flags = { .ready_fd = -1 };

static struct api_config cfg;

/* ---- parsers of this program's own kinds of value ---------------------- */

/*
 * A file read at start and again on SIGHUP. Checked here so that a wrong
 * path is reported with its flag; what is in it is checked when read.
 */
static int
parse_readable(const struct nt_opt *o, const char *v, char *err,
    size_t errlen)
{
	if (access(v, R_OK) != 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	*(const char **)o->dst = v;
	return 0;
}

static int
parse_scope(const struct nt_opt *o, const char *v, char *err, size_t errlen)
{
	if (v[0] == '\0' || strchr(v, ' ') != NULL) {
		snprintf(err, errlen, "want one scope, without spaces");
		return -1;
	}
	*(const char **)o->dst = v;
	return 0;
}

static int
parse_rate(const struct nt_opt *o, const char *v, char *err, size_t errlen)
{
	if (api_rate_parse(v, o->dst) < 0) {
		snprintf(err, errlen, "want N, N/s or N/m");
		return -1;
	}
	return 0;
}

/* ---- the flags --------------------------------------------------------- */

#define DAY_MS (86400ull * 1000)

static const struct nt_opt opts[] = {
	{ "listen", 0, "ADDR:PORT", "NOTIFYD_API_LISTEN", "127.0.0.1:8081",
	    nt_opt_listen, &cfg.listen, 0, 0,
	    "address to listen on; IPv6 in brackets, :PORT for every IPv4 "
	    "interface" },
	NT_REDIS_OPT_URL(&cfg.redis),
	NT_REDIS_OPT_PREFIX(&cfg.redis_prefix),
	{ "api-keys-file", 0, "FILE", "NOTIFYD_API_KEYS_FILE", NULL,
	    parse_readable, &cfg.keys_file, 0, 0,
	    "API keys, one 'NAME KEY' pair per line (default: none)" },
	{ "insecure-no-auth", 0, NULL, NULL, NULL,
	    nt_opt_switch, &cfg.insecure_no_auth, 0, 0,
	    "let every request in without credentials (local development "
	    "only)" },
	{ "offline-ttl", 0, "DURATION", "NOTIFYD_OFFLINE_TTL", "7d",
	    nt_opt_duration, &flags.offline_ttl_ms, 1000, 366 * DAY_MS,
	    "how long a message stays in its user's log" },
	{ "offline-max", 0, "N", "NOTIFYD_OFFLINE_MAX",
	    XSTR(NT_DEFAULT_OFFLINE_MAX), nt_opt_int, &cfg.offline_max, 1,
	    1000000, "entries kept in a user's log: a send trims the oldest "
	    "past this; from 1 to 1000000" },
	{ "jwt-secret-file", 0, "FILE", "NOTIFYD_API_JWT_SECRET_FILE", NULL,
	    parse_readable, &flags.jwt_secret_file, 0, 0,
	    "accept JWTs signed with this shared secret (HS*) (default: "
	    "none)" },
	{ "jwt-public-key", 0, "FILE", "NOTIFYD_API_JWT_PUBLIC_KEY", NULL,
	    parse_readable, &flags.jwt_public_key, 0, 0,
	    "accept JWTs signed with the private half of this PEM public key "
	    "(RS*, ES*) (default: none)" },
	{ "jwt-alg", 0, "ALG", "NOTIFYD_API_JWT_ALG", NULL,
	    nt_jwt_opt_alg, &cfg.jwt.alg, 0, 0,
	    "the one JWT algorithm accepted (default: HS256 with "
	    "--jwt-secret-file, RS256 with --jwt-public-key)" },
	{ "jwt-scope", 0, "SCOPE", "NOTIFYD_API_JWT_SCOPE",
	    "notifications:send", parse_scope, &cfg.jwt_scope, 0, 0,
	    "the scope a JWT must grant" },
	{ "jwt-issuer", 0, "ISS", "NOTIFYD_API_JWT_ISSUER", NULL,
	    nt_opt_string, &cfg.jwt.issuer, 0, 0,
	    "required JWT iss (default: not checked)" },
	{ "jwt-audience", 0, "AUD", "NOTIFYD_API_JWT_AUDIENCE", NULL,
	    nt_opt_string, &cfg.jwt.audience, 0, 0,
	    "required JWT aud (default: not checked)" },
	{ "jwt-leeway", 0, "DURATION", "NOTIFYD_API_JWT_LEEWAY", "30s",
	    nt_opt_duration, &flags.jwt_leeway_ms, 0, DAY_MS,
	    "allowed clock skew for JWT exp and nbf" },
	{ "require-exp", 0, "yes|no", "NOTIFYD_API_JWT_REQUIRE_EXP", "yes",
	    nt_opt_switch, &cfg.jwt.require_exp, 0, 0,
	    "refuse JWTs without an exp claim" },
	{ "max-token-age", 0, "DURATION", "NOTIFYD_API_JWT_MAX_TOKEN_AGE", "0",
	    nt_opt_duration, &flags.jwt_max_age_ms, 0, 3660 * DAY_MS,
	    "refuse JWTs without iat, issued longer ago than this, or minted "
	    "to live longer (0: off)" },
	{ "max-body", 0, "BYTES", "NOTIFYD_API_MAX_BODY", "1M",
	    nt_opt_size, &cfg.max_body, 64, 0,
	    "largest request body" },
	{ "max-targets", 0, "N", "NOTIFYD_API_MAX_TARGETS",
	    XSTR(API_MAX_RECIPIENTS), nt_opt_int, &flags.max_targets, 1,
	    API_MAX_RECIPIENTS, "most target_users in one request; from 1 "
	    "to " XSTR(API_MAX_RECIPIENTS) },
	{ "max-fanout", 0, "BYTES", "NOTIFYD_API_MAX_FANOUT", "16M",
	    nt_opt_size, &cfg.max_fanout, 256, 0,
	    "largest send: the encoded messages of all its recipients "
	    "together" },
	{ "max-content", 0, "BYTES", "NOTIFYD_MAX_CONTENT", "64k",
	    nt_opt_size, &cfg.limits.max_content, 1, 0,
	    "largest notification content" },
	{ "max-message", 0, "BYTES", "NOTIFYD_MAX_MESSAGE", "128k",
	    nt_opt_size, &cfg.limits.max_message, 256, 0,
	    "largest encoded message" },
	{ "rate-limit", 0, "N/s", "NOTIFYD_API_RATE_LIMIT", "0",
	    parse_rate, &cfg.rate_per_s, 0, 0,
	    "requests per second (N/m: per minute) per API key or JWT "
	    "subject; 0: no limit" },
	{ "rate-burst", 0, "N", "NOTIFYD_API_RATE_BURST", NULL,
	    nt_opt_int, &flags.rate_burst, 1, 1000000000,
	    "requests a caller may make at once (default: the rate, at "
	    "least 1)" },
	{ "threads", 0, "N", "NOTIFYD_API_THREADS", "2",
	    nt_opt_int, &flags.threads, 1, 256,
	    "worker threads, each with its own Redis connection" },
	{ "max-connections", 0, "N", "NOTIFYD_API_MAX_CONNECTIONS", "512",
	    nt_opt_int, &flags.max_connections, 1, 100000,
	    "connections served at once, at least --threads" },
	{ "connection-timeout", 0, "DURATION",
	    "NOTIFYD_API_CONNECTION_TIMEOUT", "30s",
	    nt_opt_duration, &flags.connection_timeout_ms, 1000, 3600 * 1000,
	    "close connections idle this long" },
	{ "request-timeout", 0, "DURATION", "NOTIFYD_API_REQUEST_TIMEOUT",
	    "10s", nt_opt_duration, &flags.request_timeout_ms, 100,
	    3600 * 1000, "close a connection whose request (head and body) "
	    "is not all in this long after its first byte" },
	{ "redis-timeout", 0, "DURATION", "NOTIFYD_REDIS_TIMEOUT", "2s",
	    nt_opt_duration, &flags.redis_timeout_ms, 10, 60000,
	    "bound on connecting to Redis and on each reply" },
	{ "trusted-proxy", 0, "LIST", "NOTIFYD_TRUSTED_PROXY", NULL,
	    nt_proxy_opt_list, &cfg.trusted_proxies, 0, 0,
	    "comma-separated addresses or CIDRs of reverse proxies whose "
	    "X-Forwarded-For names the client (default: none)" },
	{ "ready-fd", 0, "FD", NULL, NULL,
	    nt_opt_fd, &flags.ready_fd, 0, 0,
	    "write a newline to FD and close it once listening" },
	{ "log-level", 0, "LEVEL", "NOTIFYD_LOG_LEVEL", "info",
	    nt_log_opt_level, &flags.log_level, 0, 0,
	    "error, warn, info (one line per request) or debug" },
};

static const char *origin[NT_OPT_COUNT(opts)];

static const struct nt_opt_spec spec = {
	.prog = API_PROG,
	.synopsis = "[--listen ADDR:PORT] [--redis URL] [--api-keys-file FILE]\n"
	    "[--jwt-secret-file FILE | --jwt-public-key FILE] [option ...]\n"
	    "--insecure-no-auth [option ...]",
	.footer = "Durations take ms, s, m, h, d; sizes k, M, G. "
	    "See notifyd-api(8).\n",
	.opts = opts,
	.nopts = NT_OPT_COUNT(opts),
	.origin = origin,
};

/*
 * Where the value stored at dst came from: "--flag" when given on the
 * command line, the variable's name when from the environment, NULL for
 * the default (or when not set at all).
 */
static const char *
given_as(const void *dst, char *buf, size_t len, int *on_cmdline)
{
	for (size_t i = 0; i < NT_OPT_COUNT(opts); i++) {
		if (opts[i].dst != dst || origin[i] == NULL)
			continue;
		*on_cmdline = strcmp(origin[i], opts[i].name) == 0;
		snprintf(buf, len, "%s%s", *on_cmdline ? "--" : "", origin[i]);
		return buf;
	}
	*on_cmdline = 0;
	return NULL;
}

static void
read_flags(int argc, char **argv)
{
	char err[512];
	int first, rc;

	rc = nt_opt_parse(&spec, argc, argv, &first, err, sizeof(err));
	if (rc == NT_OPT_DONE)
		exit(NT_EXIT_OK);
	if (rc != 0)
		errx(rc, "%s", err);
	if (first < argc)
		errx(NT_EXIT_USAGE, "unexpected argument '%s' (see --help)",
		    argv[first]);
}

/*
 * Who may call: API keys, JWTs with a scope, or (explicitly) anyone.
 * Two flags that exclude each other on one command line are a usage
 * error (64); a clash that involves the environment is a configuration
 * that cannot work (78).
 */
static void
check_auth_config(void)
{
	char sec_buf[64], pub_buf[64], keys_buf[64];
	int sec_cmd, pub_cmd, keys_cmd;
	const char *sec = given_as(&flags.jwt_secret_file, sec_buf,
	    sizeof(sec_buf), &sec_cmd);
	const char *pub = given_as(&flags.jwt_public_key, pub_buf,
	    sizeof(pub_buf), &pub_cmd);
	const char *keys = given_as(&cfg.keys_file, keys_buf, sizeof(keys_buf),
	    &keys_cmd);

	if (sec != NULL && pub != NULL)
		errx(sec_cmd && pub_cmd ? NT_EXIT_USAGE : NT_EXIT_CONFIG,
		    "%s and %s exclude each other", sec, pub);
	if (cfg.insecure_no_auth) {
		if (keys_cmd || sec_cmd || pub_cmd)
			errx(NT_EXIT_USAGE, "--insecure-no-auth excludes %s",
			    keys_cmd ? keys : sec_cmd ? sec : pub);
		/* The flag is explicit; credentials in the environment wait. */
		cfg.keys_file = NULL;
		return;
	}
	cfg.jwt_enabled = sec != NULL || pub != NULL;
	if (cfg.keys_file == NULL && !cfg.jwt_enabled)
		errx(NT_EXIT_CONFIG, "no credentials: give --api-keys-file FILE "
		    "and/or --jwt-secret-file/--jwt-public-key (or "
		    "--insecure-no-auth for local development only)");
	if (!cfg.jwt_enabled)
		return;
	cfg.jwt.key_file = sec != NULL ? flags.jwt_secret_file :
	    flags.jwt_public_key;
	if (cfg.jwt.alg == NULL)
		cfg.jwt.alg = sec != NULL ? "HS256" : "RS256";
	cfg.jwt.leeway_s = (long)(flags.jwt_leeway_ms / 1000);
	/* Whole seconds, rounded up so that 500ms does not mean off. */
	cfg.jwt.max_age_s = (long)((flags.jwt_max_age_ms + 999) / 1000);
}

/* The rest of api_config, from what the table stored. */
static void
build_config(void)
{
	nt_log_init(API_PROG, flags.log_level);
	cfg.offline_ttl_s = (long long)(flags.offline_ttl_ms / 1000);
	cfg.rate_burst = (double)flags.rate_burst;
	cfg.threads = (unsigned)flags.threads;
	cfg.max_connections = (unsigned)flags.max_connections;
	cfg.connection_timeout_s = (unsigned)(flags.connection_timeout_ms /
	    1000);
	cfg.request_timeout_us = flags.request_timeout_ms * 1000;
	cfg.max_targets = (unsigned)flags.max_targets;
	cfg.redis_timeout_ms = (int)flags.redis_timeout_ms;
	/* libmicrohttpd splits the limit among the worker threads. */
	if (cfg.max_connections < cfg.threads)
		errx(NT_EXIT_CONFIG, "--max-connections (%u) must be at least "
		    "--threads (%u)", cfg.max_connections, cfg.threads);
	check_auth_config();
}

static int
make_auth(struct api_auth **auth, char *err, size_t errlen)
{
	struct api_auth_config ac = {
		.keys_file = cfg.keys_file,
		.jwt = cfg.jwt_enabled ? &cfg.jwt : NULL,
		.jwt_scope = cfg.jwt_scope,
		.open = cfg.insecure_no_auth,
		.rate_per_s = cfg.rate_per_s,
		.burst = cfg.rate_burst,
	};

	return api_auth_new(&ac, auth, err, errlen);
}

static void
signal_ready(int fd)
{
	ssize_t n;

	if (fd < 0)
		return;
	do
		n = write(fd, "\n", 1);
	while (n < 0 && errno == EINTR);
	close(fd);
}

/* Is Redis there? Only a log line: the daemon serves 503 until it is. */
static void
probe_redis(void)
{
	char err[256];
	redisContext *c = nt_redis_connect_where(&cfg.redis,
	    NT_REDIS_URL_WHERE, cfg.redis_timeout_ms, err, sizeof(err));

	if (c == NULL)
		nt_log_warn("%s; answering 503 until it is reachable", err);
	else
		redisFree(c);
}

static void
reload_keys(struct api_auth *auth)
{
	char err[512];
	size_t n;

	if (api_auth_reload(auth, &n, err, sizeof(err)) < 0)
		nt_log_err("key reload failed, keeping the old keys: %s", err);
	else
		nt_log_info("reloaded the credentials (%zu API keys)", n);
}

/*
 * Stop accepting, let the requests in progress finish (bounded), then
 * close everything. A second SIGTERM/SIGINT cuts the wait short.
 */
static void
drain(struct api_server *srv, const sigset_t *set)
{
	struct timespec step = { 0, 20 * 1000 * 1000 };
	uint64_t deadline = api_now_us() + DRAIN_DEADLINE_MS * 1000ull;
	int sig;

	api_server_quiesce(srv);
	while (api_server_in_flight(srv) > 0 && api_now_us() < deadline) {
		sig = sigtimedwait(set, NULL, &step);
		if (sig == SIGTERM || sig == SIGINT) {
			nt_log_warn("second signal: stopping at once");
			break;
		}
	}
	if (api_server_in_flight(srv) > 0)
		nt_log_warn("%u requests cut off", api_server_in_flight(srv));
}

static void
serve(struct api_server *srv, struct api_auth *auth, const sigset_t *set)
{
	int sig;

	for (;;) {
		sig = sigwaitinfo(set, NULL);
		if (sig == SIGHUP) {
			reload_keys(auth);
		} else if (sig == SIGTERM || sig == SIGINT) {
			nt_log_info("signal %d: draining", sig);
			drain(srv, set);
			return;
		}
	}
}

int
main(int argc, char **argv)
{
	struct api_auth *auth = NULL;
	struct api_server *srv = NULL;
	char err[512];
	sigset_t set;
	int v6;

	read_flags(argc, argv);
	build_config();
	if (make_auth(&auth, err, sizeof(err)) < 0)
		errx(NT_EXIT_CONFIG, "%s", err);
	if (cfg.insecure_no_auth)
		nt_log_warn("--insecure-no-auth: anyone who can connect may send "
		    "notifications; for local development only");

	/* Block the signals before any thread starts so that all inherit
	 * the mask and only sigwaitinfo() below ever sees them. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	json_object_seed(0);
	if (api_store_init(&cfg) < 0)
		errx(NT_EXIT_SOFTWARE, "cannot create thread-local storage");
	probe_redis();
	if (api_server_start(&cfg, auth, &srv, err, sizeof(err)) < 0)
		errx(NT_EXIT_CONFIG, "%s", err);
	v6 = strchr(cfg.listen.host, ':') != NULL;
	nt_log_info("listening on %s%s%s:%d (%u threads, %zu API keys%s%s%s)",
	    v6 ? "[" : "", cfg.listen.host, v6 ? "]" : "", cfg.listen.port,
	    cfg.threads, api_auth_count(auth), cfg.jwt_enabled ? ", JWTs" : "",
	    cfg.insecure_no_auth ? ", NO AUTH" : "",
	    cfg.trusted_proxies.n > 0 ? ", behind trusted proxies" : "");
	signal_ready(flags.ready_fd);
	if (nt_sdnotify("READY=1\n", err, sizeof(err)) != 0)
		nt_log_warn("%s", err);

	serve(srv, auth, &set);

	api_server_stop(srv);
	api_store_fini();
	api_auth_free(auth);
	nt_log_info("stopped");
	return NT_EXIT_OK;
}
