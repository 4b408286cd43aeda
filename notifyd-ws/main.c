/*
 * notifyd-ws: the WebSocket daemon of notifyd. See notifyd-ws(8).
 *
 * Every flag is declared once, in opts[] below (nt_opt.h): its variable,
 * default, parser and help. main() reads the table, then either mints a
 * token (--issue-token) or runs the daemon.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "nt_jwt.h"
#include "nt_log.h"
#include "nt_opt.h"
#include "server.h"

#define PROG "notifyd-ws"

/* What the daemon itself does not keep: JWT settings, logging, the mode. */
static struct {
	const char        *jwt_alg;
	const char        *jwt_secret_file;
	const char        *jwt_public_key;
	const char        *jwt_issuer;
	const char        *jwt_audience;
	uint64_t           jwt_leeway_ms;
	int                jwt_require_exp;
	uint64_t           jwt_max_age_ms;
	enum nt_log_level  log_level;
	const char        *issue_user;   /* --issue-token: mint, do not serve */
	uint64_t           token_ttl_ms;
} opt;

static struct ntws_config cfg;

/* A user id (notifyd(7)): the token subject and the instance id. */
static int
opt_user_id(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	if (nt_user_valid(value, err, errlen) != 0)
		return -1;
	*(const char **)o->dst = value;
	return 0;
}

/* The start of a channel name (nt_msg.h), or "". */
static int
opt_channel_prefix(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	if (value[0] != '\0' && nt_channel_valid(value, err, errlen) != 0)
		return -1;
	*(const char **)o->dst = value;
	return 0;
}

#define DAY_MS (24LL * 3600 * 1000)

static const struct nt_opt opts[] = {
	{ "listen", 0, "host:port", "NOTIFYD_WS_LISTEN", "127.0.0.1:8080",
	  nt_opt_listen, &cfg.listen, 0, 0,
	  "where to listen; :port means every IPv4 interface" },
	NT_REDIS_OPT_URL(&cfg.redis),
	NT_REDIS_OPT_PREFIX(&cfg.prefix),
	{ "redis-timeout", 0, "duration", "NOTIFYD_REDIS_TIMEOUT", "5s",
	  nt_opt_seconds, &cfg.redis_timeout, 1, 0,
	  "deadline to connect to Redis and of the checks of each connection" },
	{ "jwt-alg", 0, "alg", "NOTIFYD_JWT_ALG", "HS256",
	  nt_jwt_opt_alg, &opt.jwt_alg, 0, 0,
	  "the one accepted token algorithm: HS256/384/512, RS256/384/512 or "
	  "ES256/384/512" },
	{ "jwt-secret-file", 0, "file", "NOTIFYD_JWT_SECRET_FILE", NULL,
	  nt_opt_string, &opt.jwt_secret_file, 0, 0,
	  "shared secret of HS* tokens; one trailing newline is ignored" },
	{ "jwt-public-key", 0, "file", "NOTIFYD_JWT_PUBLIC_KEY", NULL,
	  nt_opt_string, &opt.jwt_public_key, 0, 0,
	  "PEM public key of RS* and ES* tokens" },
	{ "jwt-issuer", 0, "iss", "NOTIFYD_JWT_ISSUER", NULL,
	  nt_opt_string, &opt.jwt_issuer, 0, 0,
	  "required iss claim (not checked when unset)" },
	{ "jwt-audience", 0, "aud", "NOTIFYD_JWT_AUDIENCE", NULL,
	  nt_opt_string, &opt.jwt_audience, 0, 0,
	  "required aud claim (not checked when unset)" },
	{ "jwt-leeway", 0, "duration", "NOTIFYD_JWT_LEEWAY", "30s",
	  nt_opt_duration, &opt.jwt_leeway_ms, 0, DAY_MS,
	  "clock skew allowed for exp and nbf" },
	{ "require-exp", 0, "yes|no", "NOTIFYD_JWT_REQUIRE_EXP", "yes",
	  nt_opt_switch, &opt.jwt_require_exp, 0, 0,
	  "refuse tokens without an exp claim" },
	{ "max-token-age", 0, "duration", "NOTIFYD_JWT_MAX_TOKEN_AGE", "0",
	  nt_opt_duration, &opt.jwt_max_age_ms, 0, 3660 * DAY_MS,
	  "refuse tokens without iat, issued longer ago than this, or "
	  "minted to live longer (0: off)" },
	{ "allowed-origin", 0, "list", "NOTIFYD_WS_ALLOWED_ORIGIN", NULL,
	  nt_opt_string, &cfg.allowed_origins, 0, 0,
	  "comma-separated origins allowed to open a WebSocket and to load "
	  "the client with CORS (any when unset)" },
	{ "trusted-proxy", 0, "list", "NOTIFYD_TRUSTED_PROXY", NULL,
	  nt_proxy_opt_list, &cfg.trusted_proxies, 0, 0,
	  "comma-separated addresses or CIDRs of reverse proxies whose "
	  "X-Forwarded-For names the client (none when unset)" },
	{ "reuseport", 0, NULL, "NOTIFYD_WS_REUSEPORT", NULL,
	  nt_opt_switch, &cfg.reuseport, 0, 0,
	  "set SO_REUSEPORT so that several processes share the port" },
	{ "demo", 0, NULL, "NOTIFYD_WS_DEMO", NULL,
	  nt_opt_switch, &cfg.demo, 0, 0,
	  "serve the demo page at /" },
	{ "instance-id", 0, "id", "NOTIFYD_WS_INSTANCE_ID", NULL,
	  opt_user_id, &cfg.instance_id, 0, 0,
	  "name of this instance in the presence keys (default "
	  "hostname-pid-random)" },
	{ "ready-fd", 0, "fd", NULL, NULL,
	  nt_opt_fd, &cfg.ready_fd, 0, 0,
	  "write a newline to fd and close it once listening and subscribed" },
	{ "log-level", 0, "level", "NOTIFYD_LOG_LEVEL", "info",
	  nt_log_opt_level, &opt.log_level, 0, 0,
	  "error, warn, info or debug" },
	{ "max-message", 0, "bytes", "NOTIFYD_WS_MAX_MESSAGE", "64k",
	  nt_opt_size, &cfg.max_message, 125, 0,
	  "largest message a client may send" },
	{ "send-queue-max", 0, "bytes", "NOTIFYD_WS_SEND_QUEUE_MAX", "1M",
	  nt_opt_size, &cfg.send_queue_max, 1024, 0,
	  "unsent bytes per connection beyond which it is closed with 1013" },
	{ "max-queued-bytes", 0, "bytes", "NOTIFYD_WS_MAX_QUEUED_BYTES", "256M",
	  nt_opt_size, &cfg.max_queued_bytes, 64 * 1024, 0,
	  "bytes held for all sockets, pages being read included, beyond "
	  "which live messages wait in the log" },
	{ "write-timeout", 0, "duration", "NOTIFYD_WS_WRITE_TIMEOUT", "30s",
	  nt_opt_seconds, &cfg.write_timeout, 100, 0,
	  "time a connection with data queued may write nothing before it is "
	  "closed with 1013" },
	{ "max-conns-per-user", 0, "n", "NOTIFYD_WS_MAX_CONNS_PER_USER", "32",
	  nt_opt_int, &cfg.max_conns_per_user, 1, 1000000,
	  "connections one user may have to this instance; more are closed "
	  "with 1013" },
	{ "max-channels", 0, "n", "NOTIFYD_WS_MAX_CHANNELS", "64",
	  nt_opt_int, &cfg.max_channels, 0, 65535,
	  "channels one connection may subscribe to" },
	{ "private-prefix", 0, "prefix", "NOTIFYD_WS_PRIVATE_PREFIX", "private-",
	  opt_channel_prefix, &cfg.private_prefix, 0, 0,
	  "channels whose name starts with prefix need the token's channels "
	  "claim (empty: every channel)" },
	{ "ping-interval", 0, "duration", "NOTIFYD_WS_PING_INTERVAL", "25s",
	  nt_opt_seconds, &cfg.ping_interval, 1, 0,
	  "silence after which a connection is pinged" },
	{ "ping-timeout", 0, "duration", "NOTIFYD_WS_PING_TIMEOUT", "20s",
	  nt_opt_seconds, &cfg.ping_timeout, 1, 0,
	  "time to answer a ping before the connection is dropped" },
	{ "handshake-timeout", 0, "duration", "NOTIFYD_WS_HANDSHAKE_TIMEOUT",
	  "10s", nt_opt_seconds, &cfg.handshake_timeout, 1, 0,
	  "time to send a complete request head" },
	{ "shutdown-timeout", 0, "duration", "NOTIFYD_WS_SHUTDOWN_TIMEOUT",
	  "5s", nt_opt_seconds, &cfg.shutdown_timeout, 1, 0,
	  "time to flush and close connections on SIGTERM" },
	{ "issue-token", 0, "user", NULL, NULL,
	  opt_user_id, &opt.issue_user, 0, 0,
	  "print an HS* token for user, signed with the key settings above, "
	  "and exit without serving" },
	{ "ttl", 0, "duration", "NOTIFYD_WS_TOKEN_TTL", "1h",
	  nt_opt_duration, &opt.token_ttl_ms, 1000, 366 * DAY_MS,
	  "lifetime, in whole seconds, of the token --issue-token prints" },
};

static const char *origin[NT_OPT_COUNT(opts)];

static const struct nt_opt_spec spec = {
	PROG,
	"[--jwt-secret-file file | --jwt-public-key file] [option ...]\n"
	"--issue-token user [--ttl duration] [--jwt-secret-file file]",
	"Durations take ms, s, m, h or d (default seconds); sizes k, M or G.\n"
	"See notifyd-ws(8).\n",
	opts, NT_OPT_COUNT(opts), origin,
};

static int
fail(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Where a value came from, by its destination: the flag, or NULL. */
static const char *
given_as(const void *dst)
{
	size_t i;

	for (i = 0; i < NT_OPT_COUNT(opts); i++)
		if (opts[i].dst == dst)
			return origin[i];
	return NULL;
}

static int
is_hmac(const char *alg)
{
	return strncasecmp(alg, "HS", 2) == 0;
}

/* The JWT settings of the table; 78 when no key is named. */
static int
jwt_config(struct nt_jwt_config *jc)
{
	memset(jc, 0, sizeof(*jc));
	jc->alg = opt.jwt_alg;
	jc->key_file = is_hmac(opt.jwt_alg) ? opt.jwt_secret_file :
	    opt.jwt_public_key;
	jc->issuer = opt.jwt_issuer;
	jc->audience = opt.jwt_audience;
	jc->leeway_s = (long)(opt.jwt_leeway_ms / 1000);
	jc->require_exp = opt.jwt_require_exp;
	/* Whole seconds, rounded up so that 500ms does not mean off. */
	jc->max_age_s = (long)((opt.jwt_max_age_ms + 999) / 1000);
	if (jc->key_file == NULL)
		return fail(NT_EXIT_CONFIG, "no JWT key: %s is required for %s",
		    nt_opt_where(&spec, is_hmac(opt.jwt_alg) ?
		    (const void *)&opt.jwt_secret_file :
		    (const void *)&opt.jwt_public_key), opt.jwt_alg);
	return 0;
}

/*
 * --issue-token: the key is loaded by the verifier, exactly as the
 * daemon loads it, and the token is signed with that key, so a daemon
 * started with the same settings accepts it. No Redis, no socket.
 */
static int
issue_token(void)
{
	struct nt_jwt_config jc;
	struct nt_jwt_verifier *v = NULL;
	char err[512], *token = NULL;
	int rc;

	if (!is_hmac(opt.jwt_alg))
		return fail(NT_EXIT_CONFIG, "--issue-token: %s tokens are signed "
		    "with the private key, and notifyd-ws holds only the public "
		    "one; sign them where the private key is", opt.jwt_alg);
	if ((rc = jwt_config(&jc)) != 0)
		return rc;
	if (nt_jwt_verifier_new(&jc, &v, err, sizeof(err)) != 0)
		return fail(NT_EXIT_CONFIG, "JWT key: %s", err);
	rc = nt_jwt_issue_hs(v, opt.issue_user, time(NULL),
	    (long)(opt.token_ttl_ms / 1000), &token, err, sizeof(err));
	nt_jwt_verifier_free(v);
	if (rc != 0)
		return fail(NT_EXIT_CONFIG, "--issue-token: %s", err);
	printf("%s\n", token);
	free(token);
	if (fflush(stdout) != 0 || ferror(stdout))
		return fail(NT_EXIT_SOFTWARE, "cannot write the token");
	return NT_EXIT_OK;
}

/* hostname-pid-random: unique enough among the instances of one Redis. */
static void
default_instance_id(char *buf, size_t len)
{
	char host[200];

	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	snprintf(buf, len, "%s-%ld-%04lx", host, (long)getpid(),
	    random() & 0xffff);
}

static int
serve(struct nt_jwt_verifier *jwt)
{
	struct ev_loop *loop;
	char err[256];
	int rc = NT_EXIT_OK;

	signal(SIGPIPE, SIG_IGN);
	if ((loop = ev_default_loop(EVFLAG_AUTO)) == NULL)
		return fail(NT_EXIT_SOFTWARE, "cannot start the event loop");
	if (ntws_server_init(loop, &cfg, jwt, err, sizeof(err)) != 0)
		rc = fail(NT_EXIT_CONFIG, "%s", err);
	else
		ev_run(loop, 0);
	ntws_server_free();
	ev_loop_destroy(loop);
	if (rc == NT_EXIT_OK)
		nt_log_info("stopped");
	return rc;
}

int
main(int argc, char **argv)
{
	struct nt_jwt_config jc;
	struct nt_jwt_verifier *jwt = NULL;
	char err[512], instance[256];
	int rc, first_operand;

	cfg.ready_fd = -1;
	rc = nt_opt_parse(&spec, argc, argv, &first_operand, err, sizeof(err));
	if (rc == NT_OPT_DONE)
		return NT_EXIT_OK;
	if (rc != 0)
		return fail(rc, "%s", err);
	if (first_operand < argc)
		return fail(NT_EXIT_USAGE, "unexpected operand '%s' (see --help)",
		    argv[first_operand]);
	/* The variable may be set for everyone; the flag alone is a mistake. */
	if (opt.issue_user == NULL && given_as(&opt.token_ttl_ms) != NULL &&
	    strcmp(given_as(&opt.token_ttl_ms), "ttl") == 0)
		return fail(NT_EXIT_USAGE, "--ttl goes with --issue-token "
		    "(see --help)");
	if (opt.issue_user != NULL)
		return issue_token();

	if (cfg.instance_id == NULL) {
		default_instance_id(instance, sizeof(instance));
		cfg.instance_id = instance;
	}
	if ((rc = jwt_config(&jc)) != 0)
		return rc;
	cfg.jwt_leeway = (double)(opt.jwt_leeway_ms / 1000);
	cfg.jwt_max_age = (double)((opt.jwt_max_age_ms + 999) / 1000);
	nt_log_init(PROG, opt.log_level);
	if (nt_jwt_verifier_new(&jc, &jwt, err, sizeof(err)) != 0)
		return fail(NT_EXIT_CONFIG, "JWT key: %s", err);
	rc = serve(jwt);
	nt_jwt_verifier_free(jwt);
	return rc;
}
