/*
 * notifyd-api: the REST daemon through which backend services send
 * notifications. It speaks HTTP on one side and Redis on the other,
 * following notifyd(7); see notifyd-api(8).
 */
#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "nt_config.h"
#include "nt_log.h"
#include "nt_msg.h"
#include "nt_redis.h"

#define PROG "notifyd-api"
#define DEFAULT_LISTEN "127.0.0.1:8081"
#define DRAIN_DEADLINE_MS 10000

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: " PROG " [--listen ADDR:PORT] [--redis URL] "
	    "[--redis-prefix PREFIX]\n"
	    "           [--api-keys-file FILE] [--insecure-no-auth] "
	    "[--offline-ttl DURATION]\n"
	    "           [--jwt-secret-file FILE | --jwt-public-key FILE] "
	    "[--jwt-alg ALG]\n"
	    "           [--jwt-scope SCOPE] [--jwt-issuer ISS] "
	    "[--jwt-audience AUD]\n"
	    "           [--jwt-leeway DURATION]\n"
	    "           [--max-body BYTES] [--max-content BYTES] "
	    "[--max-message BYTES]\n"
	    "           [--rate-limit N/s] [--rate-burst N] [--threads N]\n"
	    "           [--max-connections N] [--connection-timeout DURATION]\n"
	    "           [--redis-timeout DURATION] [--ready-fd N] "
	    "[--log-level LEVEL]\n"
	    "       " PROG " --help | --version\n");
}

enum opt_id {
	OPT_LISTEN = 256, OPT_REDIS, OPT_PREFIX, OPT_TTL, OPT_KEYS,
	OPT_INSECURE, OPT_MAX_BODY, OPT_MAX_CONTENT, OPT_MAX_MESSAGE,
	OPT_RATE, OPT_BURST, OPT_THREADS, OPT_MAX_CONN, OPT_CONN_TIMEOUT,
	OPT_REDIS_TIMEOUT, OPT_READY_FD, OPT_LOG_LEVEL, OPT_HELP, OPT_VERSION,
	OPT_JWT_SECRET, OPT_JWT_PUBKEY, OPT_JWT_ALG, OPT_JWT_SCOPE,
	OPT_JWT_ISSUER, OPT_JWT_AUDIENCE, OPT_JWT_LEEWAY
};

static const struct option long_opts[] = {
	{ "listen",             required_argument, NULL, OPT_LISTEN },
	{ "redis",              required_argument, NULL, OPT_REDIS },
	{ "redis-prefix",       required_argument, NULL, OPT_PREFIX },
	{ "offline-ttl",        required_argument, NULL, OPT_TTL },
	{ "api-keys-file",      required_argument, NULL, OPT_KEYS },
	{ "insecure-no-auth",   no_argument,       NULL, OPT_INSECURE },
	{ "max-body",           required_argument, NULL, OPT_MAX_BODY },
	{ "max-content",        required_argument, NULL, OPT_MAX_CONTENT },
	{ "max-message",        required_argument, NULL, OPT_MAX_MESSAGE },
	{ "rate-limit",         required_argument, NULL, OPT_RATE },
	{ "rate-burst",         required_argument, NULL, OPT_BURST },
	{ "threads",            required_argument, NULL, OPT_THREADS },
	{ "max-connections",    required_argument, NULL, OPT_MAX_CONN },
	{ "connection-timeout", required_argument, NULL, OPT_CONN_TIMEOUT },
	{ "redis-timeout",      required_argument, NULL, OPT_REDIS_TIMEOUT },
	{ "ready-fd",           required_argument, NULL, OPT_READY_FD },
	{ "log-level",          required_argument, NULL, OPT_LOG_LEVEL },
	{ "jwt-secret-file",    required_argument, NULL, OPT_JWT_SECRET },
	{ "jwt-public-key",     required_argument, NULL, OPT_JWT_PUBKEY },
	{ "jwt-alg",            required_argument, NULL, OPT_JWT_ALG },
	{ "jwt-scope",          required_argument, NULL, OPT_JWT_SCOPE },
	{ "jwt-issuer",         required_argument, NULL, OPT_JWT_ISSUER },
	{ "jwt-audience",       required_argument, NULL, OPT_JWT_AUDIENCE },
	{ "jwt-leeway",         required_argument, NULL, OPT_JWT_LEEWAY },
	{ "help",               no_argument,       NULL, OPT_HELP },
	{ "version",            no_argument,       NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

/* Raw option strings, before env fallbacks and parsing. */
struct raw_opts {
	const char *listen, *redis, *prefix, *ttl, *keys, *max_body;
	const char *max_content, *max_message, *rate, *burst, *threads;
	const char *max_conn, *conn_timeout, *redis_timeout, *ready_fd;
	const char *log_level;
	const char *jwt_secret, *jwt_pubkey, *jwt_alg, *jwt_scope, *jwt_issuer;
	const char *jwt_audience, *jwt_leeway;
	int insecure;
};

static void
parse_args(int argc, char **argv, struct raw_opts *o)
{
	int c;

	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_LISTEN:        o->listen = optarg; break;
		case OPT_REDIS:         o->redis = optarg; break;
		case OPT_PREFIX:        o->prefix = optarg; break;
		case OPT_TTL:           o->ttl = optarg; break;
		case OPT_KEYS:          o->keys = optarg; break;
		case OPT_INSECURE:      o->insecure = 1; break;
		case OPT_MAX_BODY:      o->max_body = optarg; break;
		case OPT_MAX_CONTENT:   o->max_content = optarg; break;
		case OPT_MAX_MESSAGE:   o->max_message = optarg; break;
		case OPT_RATE:          o->rate = optarg; break;
		case OPT_BURST:         o->burst = optarg; break;
		case OPT_THREADS:       o->threads = optarg; break;
		case OPT_MAX_CONN:      o->max_conn = optarg; break;
		case OPT_CONN_TIMEOUT:  o->conn_timeout = optarg; break;
		case OPT_REDIS_TIMEOUT: o->redis_timeout = optarg; break;
		case OPT_READY_FD:      o->ready_fd = optarg; break;
		case OPT_LOG_LEVEL:     o->log_level = optarg; break;
		case OPT_JWT_SECRET:    o->jwt_secret = optarg; break;
		case OPT_JWT_PUBKEY:    o->jwt_pubkey = optarg; break;
		case OPT_JWT_ALG:       o->jwt_alg = optarg; break;
		case OPT_JWT_SCOPE:     o->jwt_scope = optarg; break;
		case OPT_JWT_ISSUER:    o->jwt_issuer = optarg; break;
		case OPT_JWT_AUDIENCE:  o->jwt_audience = optarg; break;
		case OPT_JWT_LEEWAY:    o->jwt_leeway = optarg; break;
		case OPT_HELP:          usage(stdout); exit(NT_EXIT_OK);
		case OPT_VERSION:       printf(PROG " " NT_VERSION "\n");
			exit(NT_EXIT_OK);
		default:                usage(stderr); exit(NT_EXIT_USAGE);
		}
	}
	if (optind != argc) {
		usage(stderr);
		exit(NT_EXIT_USAGE);
	}
}

static uint64_t
need_u64(const char *name, const char *v, uint64_t min, uint64_t max)
{
	uint64_t out;

	if (nt_u64_parse(v, min, max, &out) < 0)
		errx(NT_EXIT_CONFIG, "%s: expected an integer in %llu..%llu, got "
		    "\"%s\"", name, (unsigned long long)min,
		    (unsigned long long)max, v);
	return out;
}

static uint64_t
need_ms(const char *name, const char *v, uint64_t min_ms, uint64_t max_ms)
{
	uint64_t ms;

	if (nt_duration_ms_parse(v, &ms) < 0 || ms < min_ms || ms > max_ms)
		errx(NT_EXIT_CONFIG, "%s: expected a duration from %llums to "
		    "%llums (e.g. 500ms, 30s, 7d), got \"%s\"", name,
		    (unsigned long long)min_ms, (unsigned long long)max_ms, v);
	return ms;
}

static size_t
need_size(const char *name, const char *v, size_t min)
{
	size_t n;

	if (nt_size_parse(v, &n) < 0 || n < min)
		errx(NT_EXIT_CONFIG, "%s: expected a size of at least %zu bytes "
		    "(e.g. 64k, 1M), got \"%s\"", name, min, v);
	return n;
}

/* Who may call: API keys, JWTs with a scope, or (explicitly) anyone. */
static void
build_auth_config(const struct raw_opts *o, struct api_config *cfg)
{
	const char *secret, *pubkey, *v;

	cfg->insecure_no_auth = o->insecure;
	cfg->keys_file = nt_env_or(o->keys, "NOTIFYD_API_KEYS_FILE", NULL);
	secret = nt_env_or(o->jwt_secret, "NOTIFYD_API_JWT_SECRET_FILE", NULL);
	pubkey = nt_env_or(o->jwt_pubkey, "NOTIFYD_API_JWT_PUBLIC_KEY", NULL);
	if (secret != NULL && pubkey != NULL)
		errx(NT_EXIT_USAGE, "--jwt-secret-file and --jwt-public-key "
		    "exclude each other");
	if (cfg->insecure_no_auth && (o->keys != NULL || o->jwt_secret ||
	    o->jwt_pubkey))
		errx(NT_EXIT_USAGE, "--insecure-no-auth excludes --api-keys-file "
		    "and --jwt-*");
	if (cfg->insecure_no_auth) {
		cfg->keys_file = NULL;
		return;
	}
	cfg->jwt_enabled = secret != NULL || pubkey != NULL;
	if (cfg->keys_file == NULL && !cfg->jwt_enabled)
		errx(NT_EXIT_CONFIG, "no credentials: give --api-keys-file FILE "
		    "and/or --jwt-secret-file/--jwt-public-key (or "
		    "--insecure-no-auth for local development only)");
	if (!cfg->jwt_enabled)
		return;
	cfg->jwt.key_file = secret != NULL ? secret : pubkey;
	cfg->jwt.alg = nt_env_or(o->jwt_alg, "NOTIFYD_API_JWT_ALG",
	    secret != NULL ? "HS256" : "RS256");
	cfg->jwt.issuer = nt_env_or(o->jwt_issuer, "NOTIFYD_API_JWT_ISSUER",
	    NULL);
	cfg->jwt.audience = nt_env_or(o->jwt_audience,
	    "NOTIFYD_API_JWT_AUDIENCE", NULL);
	v = nt_env_or(o->jwt_leeway, "NOTIFYD_API_JWT_LEEWAY", "30s");
	cfg->jwt.leeway_s = (long)(need_ms("--jwt-leeway", v, 0,
	    86400 * 1000) / 1000);
	cfg->jwt_scope = nt_env_or(o->jwt_scope, "NOTIFYD_API_JWT_SCOPE",
	    "notifications:send");
	if (cfg->jwt_scope[0] == '\0' || strchr(cfg->jwt_scope, ' '))
		errx(NT_EXIT_CONFIG, "--jwt-scope: one scope, no spaces");
}

static void
build_config(const struct raw_opts *o, struct api_config *cfg, int *ready_fd)
{
	char err[256];
	const char *v;
	enum nt_log_level level;

	v = nt_env_or(o->log_level, "NOTIFYD_LOG_LEVEL", "info");
	if (nt_log_level_parse(v, &level) < 0)
		errx(NT_EXIT_CONFIG, "--log-level: unknown level \"%s\"", v);
	nt_log_init(PROG, level);

	v = nt_env_or(o->listen, "NOTIFYD_API_LISTEN", DEFAULT_LISTEN);
	if (nt_hostport_parse(v, cfg->listen_host, sizeof(cfg->listen_host),
	    &cfg->listen_port, err, sizeof(err)) < 0)
		errx(NT_EXIT_CONFIG, "--listen: %s", err);
	if (nt_redis_settings(o->redis, o->prefix, &cfg->redis,
	    &cfg->redis_prefix, err, sizeof(err)) < 0)
		errx(NT_EXIT_CONFIG, "%s", err);
	v = nt_env_or(o->ttl, "NOTIFYD_OFFLINE_TTL", "7d");
	cfg->offline_ttl_s = (long long)(need_ms("--offline-ttl", v, 1000,
	    366ull * 86400 * 1000) / 1000);

	build_auth_config(o, cfg);

	v = nt_env_or(o->max_body, "NOTIFYD_API_MAX_BODY", "1M");
	cfg->max_body = need_size("--max-body", v, 64);
	nt_limits_default(&cfg->limits);
	v = nt_env_or(o->max_content, "NOTIFYD_MAX_CONTENT", NULL);
	if (v != NULL)
		cfg->limits.max_content = need_size("--max-content", v, 1);
	v = nt_env_or(o->max_message, "NOTIFYD_MAX_MESSAGE", NULL);
	if (v != NULL)
		cfg->limits.max_message = need_size("--max-message", v, 256);

	v = nt_env_or(o->rate, "NOTIFYD_API_RATE_LIMIT", "0");
	if (api_rate_parse(v, &cfg->rate_per_s) < 0)
		errx(NT_EXIT_CONFIG, "--rate-limit: expected N, N/s or N/m, got "
		    "\"%s\"", v);
	v = nt_env_or(o->burst, "NOTIFYD_API_RATE_BURST", NULL);
	cfg->rate_burst = v ? (double)need_u64("--rate-burst", v, 1,
	    1000000000) : 0;

	v = nt_env_or(o->threads, "NOTIFYD_API_THREADS", "2");
	cfg->threads = (unsigned)need_u64("--threads", v, 1, 256);
	v = nt_env_or(o->max_conn, "NOTIFYD_API_MAX_CONNECTIONS", "512");
	cfg->max_connections = (unsigned)need_u64("--max-connections", v, 1,
	    100000);
	/* libmicrohttpd splits the limit among the worker threads. */
	if (cfg->max_connections < cfg->threads)
		errx(NT_EXIT_CONFIG, "--max-connections (%u) must be at least "
		    "--threads (%u)", cfg->max_connections, cfg->threads);
	v = nt_env_or(o->conn_timeout, "NOTIFYD_API_CONNECTION_TIMEOUT", "30s");
	cfg->connection_timeout_s = (unsigned)(need_ms("--connection-timeout",
	    v, 1000, 3600 * 1000) / 1000);
	v = nt_env_or(o->redis_timeout, "NOTIFYD_REDIS_TIMEOUT", "2s");
	cfg->redis_timeout_ms = (int)need_ms("--redis-timeout", v, 10, 60000);

	*ready_fd = -1;
	if (o->ready_fd != NULL)
		*ready_fd = (int)need_u64("--ready-fd", o->ready_fd, 0, 65535);
}

static int
make_auth(const struct api_config *cfg, struct api_auth **auth, char *err,
    size_t errlen)
{
	struct api_auth_config ac = {
		.keys_file = cfg->keys_file,
		.jwt = cfg->jwt_enabled ? &cfg->jwt : NULL,
		.jwt_scope = cfg->jwt_scope,
		.open = cfg->insecure_no_auth,
		.rate_per_s = cfg->rate_per_s,
		.burst = cfg->rate_burst,
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
probe_redis(const struct api_config *cfg)
{
	char err[256];
	redisContext *c = nt_redis_connect(&cfg->redis, cfg->redis_timeout_ms,
	    err, sizeof(err));

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
	struct raw_opts opts = { 0 };
	struct api_config cfg = { 0 };
	struct api_auth *auth = NULL;
	struct api_server *srv = NULL;
	char err[512];
	sigset_t set;
	int ready_fd;

	parse_args(argc, argv, &opts);
	build_config(&opts, &cfg, &ready_fd);
	if (make_auth(&cfg, &auth, err, sizeof(err)) < 0)
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
	probe_redis(&cfg);
	if (api_server_start(&cfg, auth, &srv, err, sizeof(err)) < 0)
		errx(NT_EXIT_CONFIG, "%s", err);
	nt_log_info("listening on %s:%d (%u threads, %zu API keys%s%s)",
	    cfg.listen_host, cfg.listen_port, cfg.threads,
	    api_auth_count(auth), cfg.jwt_enabled ? ", JWTs" : "",
	    cfg.insecure_no_auth ? ", NO AUTH" : "");
	signal_ready(ready_fd);

	serve(srv, auth, &set);

	api_server_stop(srv);
	api_store_fini();
	api_auth_free(auth);
	nt_log_info("stopped");
	return NT_EXIT_OK;
}
