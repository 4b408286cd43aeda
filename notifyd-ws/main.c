/*
 * notifyd-ws: the WebSocket daemon of notifyd. See notifyd-ws(8).
 */
#include <getopt.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "nt_log.h"
#include "ws.h"

static void
usage(FILE *f)
{
	fprintf(f,
"usage: notifyd-ws [--demo] [--reuseport] [--listen addr:port] [--redis url]\n"
"                  [--redis-prefix prefix] [--jwt-alg alg]\n"
"                  [--jwt-secret-file file | --jwt-public-key file]\n"
"                  [--jwt-issuer iss] [--jwt-audience aud] [--jwt-leeway duration]\n"
"                  [--allowed-origin list] [--instance-id id] [--ready-fd fd]\n"
"                  [--log-level level] [--max-message bytes]\n"
"                  [--send-queue-max bytes] [--max-channels n]\n"
"                  [--ping-interval duration] [--ping-timeout duration]\n"
"                  [--handshake-timeout duration] [--shutdown-timeout duration]\n"
"                  [--redis-timeout duration]\n"
"       notifyd-ws --help | --version\n");
}

enum {
	O_LISTEN = 256, O_REDIS, O_PREFIX, O_ALG, O_SECRET, O_PUBKEY, O_ISS,
	O_AUD, O_LEEWAY, O_ORIGIN, O_REUSEPORT, O_READY, O_LOGLEVEL, O_INSTANCE,
	O_MAXMSG, O_SENDQ, O_MAXCHAN, O_PINGI, O_PINGT, O_HSTMO, O_SHUTTMO,
	O_REDISTMO, O_DEMO, O_HELP, O_VERSION, O_LAST
};

static const struct option longopts[] = {
	{ "listen", required_argument, NULL, O_LISTEN },
	{ "redis", required_argument, NULL, O_REDIS },
	{ "redis-prefix", required_argument, NULL, O_PREFIX },
	{ "jwt-alg", required_argument, NULL, O_ALG },
	{ "jwt-secret-file", required_argument, NULL, O_SECRET },
	{ "jwt-public-key", required_argument, NULL, O_PUBKEY },
	{ "jwt-issuer", required_argument, NULL, O_ISS },
	{ "jwt-audience", required_argument, NULL, O_AUD },
	{ "jwt-leeway", required_argument, NULL, O_LEEWAY },
	{ "allowed-origin", required_argument, NULL, O_ORIGIN },
	{ "reuseport", no_argument, NULL, O_REUSEPORT },
	{ "ready-fd", required_argument, NULL, O_READY },
	{ "log-level", required_argument, NULL, O_LOGLEVEL },
	{ "instance-id", required_argument, NULL, O_INSTANCE },
	{ "max-message", required_argument, NULL, O_MAXMSG },
	{ "send-queue-max", required_argument, NULL, O_SENDQ },
	{ "max-channels", required_argument, NULL, O_MAXCHAN },
	{ "ping-interval", required_argument, NULL, O_PINGI },
	{ "ping-timeout", required_argument, NULL, O_PINGT },
	{ "handshake-timeout", required_argument, NULL, O_HSTMO },
	{ "shutdown-timeout", required_argument, NULL, O_SHUTTMO },
	{ "redis-timeout", required_argument, NULL, O_REDISTMO },
	{ "demo", no_argument, NULL, O_DEMO },
	{ "help", no_argument, NULL, O_HELP },
	{ "version", no_argument, NULL, O_VERSION },
	{ NULL, 0, NULL, 0 },
};

/* Environment fallback of each option, in the order of the enum. */
static const char *const envnames[O_LAST - O_LISTEN] = {
	"NOTIFYD_WS_LISTEN", "NOTIFYD_REDIS_URL", "NOTIFYD_REDIS_PREFIX",
	"NOTIFYD_JWT_ALG", "NOTIFYD_JWT_SECRET_FILE", "NOTIFYD_JWT_PUBLIC_KEY",
	"NOTIFYD_JWT_ISSUER", "NOTIFYD_JWT_AUDIENCE", "NOTIFYD_JWT_LEEWAY",
	"NOTIFYD_WS_ALLOWED_ORIGIN", "NOTIFYD_WS_REUSEPORT", NULL,
	"NOTIFYD_LOG_LEVEL", "NOTIFYD_WS_INSTANCE_ID", "NOTIFYD_WS_MAX_MESSAGE",
	"NOTIFYD_WS_SEND_QUEUE_MAX", "NOTIFYD_WS_MAX_CHANNELS",
	"NOTIFYD_WS_PING_INTERVAL", "NOTIFYD_WS_PING_TIMEOUT",
	"NOTIFYD_WS_HANDSHAKE_TIMEOUT", "NOTIFYD_WS_SHUTDOWN_TIMEOUT",
	"NOTIFYD_REDIS_TIMEOUT", "NOTIFYD_WS_DEMO", NULL, NULL,
};

static const char *const defaults[O_LAST - O_LISTEN] = {
	"127.0.0.1:8080", NT_DEFAULT_REDIS_URL, "", "HS256", NULL, NULL, NULL,
	NULL, "30s", NULL, NULL, NULL, "info", NULL, "64k", "1M", "64", "25s",
	"20s", "10s", "5s", "5s", NULL, NULL, NULL,
};

#define OPT(o) (val[(o) - O_LISTEN])

static int
die(int code, const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "notifyd-ws: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	return code;
}

static int
seconds(const char *s, double *out)
{
	uint64_t ms;

	if (nt_duration_ms_parse(s, &ms) != 0 || ms == 0)
		return -1;
	*out = (double)ms / 1000.0;
	return 0;
}

static int
flag_true(const char *v)
{
	return v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 ||
	    strcmp(v, "yes") == 0);
}

static int
configure(const char **val, struct ntws_config *cfg, struct nt_jwt_config *jc,
    enum nt_log_level *lvl, char *instance, size_t instlen)
{
	char err[256], host[200];
	uint64_t n;
	int i;
	static const struct { int opt; size_t off; } durations[] = {
		{ O_PINGI, offsetof(struct ntws_config, ping_interval) },
		{ O_PINGT, offsetof(struct ntws_config, ping_timeout) },
		{ O_HSTMO, offsetof(struct ntws_config, handshake_timeout) },
		{ O_SHUTTMO, offsetof(struct ntws_config, shutdown_timeout) },
		{ O_REDISTMO, offsetof(struct ntws_config, redis_timeout) },
	};

	for (i = 0; i < O_LAST - O_LISTEN; i++)
		val[i] = nt_env_or(val[i], envnames[i], defaults[i]);
	if (nt_log_level_parse(OPT(O_LOGLEVEL), lvl) != 0)
		return die(NT_EXIT_USAGE, "--log-level %s: unknown level%s",
		    OPT(O_LOGLEVEL), "");
	if (nt_hostport_parse(OPT(O_LISTEN), cfg->listen_host,
	    sizeof(cfg->listen_host), &cfg->listen_port, err, sizeof(err)) != 0)
		return die(NT_EXIT_USAGE, "--listen: %s%s", err, "");
	if (nt_redis_url_parse(OPT(O_REDIS), &cfg->redis, err, sizeof(err)) != 0)
		return die(NT_EXIT_USAGE, "--redis: %s%s", err, "");
	if (nt_prefix_valid(OPT(O_PREFIX), err, sizeof(err)) != 0)
		return die(NT_EXIT_USAGE, "--redis-prefix: %s%s", err, "");
	cfg->prefix = OPT(O_PREFIX);
	if (nt_size_parse(OPT(O_MAXMSG), &cfg->max_message) != 0 ||
	    cfg->max_message < 125)
		return die(NT_EXIT_USAGE, "--max-message %s: not a size >= 125%s",
		    OPT(O_MAXMSG), "");
	if (nt_size_parse(OPT(O_SENDQ), &cfg->send_queue_max) != 0 ||
	    cfg->send_queue_max < 1024)
		return die(NT_EXIT_USAGE, "--send-queue-max %s: not a size >= 1k%s",
		    OPT(O_SENDQ), "");
	if (nt_u64_parse(OPT(O_MAXCHAN), 0, 65535, &n) != 0)
		return die(NT_EXIT_USAGE, "--max-channels %s: not 0..65535%s",
		    OPT(O_MAXCHAN), "");
	cfg->max_channels = (unsigned)n;
	for (i = 0; i < (int)(sizeof(durations) / sizeof(durations[0])); i++)
		if (seconds(OPT(durations[i].opt),
		    (double *)((char *)cfg + durations[i].off)) != 0)
			return die(NT_EXIT_USAGE, "--%s %s: not a duration",
			    longopts[durations[i].opt - O_LISTEN].name,
			    OPT(durations[i].opt));
	cfg->allowed_origins = OPT(O_ORIGIN);
	cfg->reuseport = flag_true(OPT(O_REUSEPORT));
	cfg->demo = OPT(O_DEMO) != NULL && flag_true(OPT(O_DEMO));
	if (OPT(O_READY) != NULL) {
		if (nt_u64_parse(OPT(O_READY), 0, 65535, &n) != 0)
			return die(NT_EXIT_USAGE, "--ready-fd %s: not a descriptor%s",
			    OPT(O_READY), "");
		cfg->ready_fd = (int)n;
	}
	if (OPT(O_INSTANCE) != NULL) {
		if (nt_user_valid(OPT(O_INSTANCE), err, sizeof(err)) != 0)
			return die(NT_EXIT_USAGE, "--instance-id: %s%s", err, "");
		snprintf(instance, instlen, "%s", OPT(O_INSTANCE));
	} else {
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		srandom((unsigned)time(NULL) ^ (unsigned)getpid());
		snprintf(instance, instlen, "%s-%ld-%04lx", host, (long)getpid(),
		    random() & 0xffff);
	}
	cfg->instance_id = instance;

	jc->alg = OPT(O_ALG);
	if (strlen(jc->alg) != 5 || strchr("HhRrEe", jc->alg[0]) == NULL ||
	    strchr("Ss", jc->alg[1]) == NULL || (strcmp(jc->alg + 2, "256") &&
	    strcmp(jc->alg + 2, "384") && strcmp(jc->alg + 2, "512")))
		return die(NT_EXIT_CONFIG, "--jwt-alg %s: unsupported (use "
		    "HS256/384/512, RS256/384/512 or ES256/384/512)%s",
		    jc->alg, "");
	jc->key_file = strncasecmp(jc->alg, "HS", 2) == 0 ? OPT(O_SECRET) :
	    OPT(O_PUBKEY);
	jc->issuer = OPT(O_ISS);
	jc->audience = OPT(O_AUD);
	{
		double leeway;
		uint64_t ms;
		if (nt_duration_ms_parse(OPT(O_LEEWAY), &ms) != 0)
			return die(NT_EXIT_USAGE, "--jwt-leeway %s: not a duration%s",
			    OPT(O_LEEWAY), "");
		leeway = (double)ms / 1000.0;
		jc->leeway_s = (long)leeway;
	}
	if (jc->key_file == NULL)
		return die(NT_EXIT_CONFIG, "no JWT key: %s",
		    strncasecmp(jc->alg, "HS", 2) == 0 ?
		    "--jwt-secret-file is required for HS* algorithms" :
		    "--jwt-public-key is required for RS*/ES* algorithms", "");
	return 0;
}

int
main(int argc, char **argv)
{
	const char *val[O_LAST - O_LISTEN] = { 0 };
	static struct ntws_config cfg;
	static struct ntws_server srv;
	struct nt_jwt_config jc;
	struct nt_jwt_verifier *jwt = NULL;
	enum nt_log_level lvl = NT_LOG_INFO;
	struct ev_loop *loop;
	char err[256], instance[256];
	int ch, rc;

	cfg.ready_fd = -1;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch == O_HELP) {
			usage(stdout);
			return NT_EXIT_OK;
		} else if (ch == O_VERSION) {
			printf("notifyd-ws %s\n", NT_VERSION);
			return NT_EXIT_OK;
		} else if (ch == O_REUSEPORT || ch == O_DEMO)
			val[ch - O_LISTEN] = "1";
		else if (ch >= O_LISTEN && ch < O_LAST)
			val[ch - O_LISTEN] = optarg;
		else {
			usage(stderr);
			return NT_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return NT_EXIT_USAGE;
	}
	memset(&jc, 0, sizeof(jc));
	if ((rc = configure(val, &cfg, &jc, &lvl, instance,
	    sizeof(instance))) != 0)
		return rc;
	nt_log_init("notifyd-ws", lvl);
	if (nt_jwt_verifier_new(&jc, &jwt, err, sizeof(err)) != 0)
		return die(NT_EXIT_CONFIG, "JWT key: %s%s", err, "");

	signal(SIGPIPE, SIG_IGN);
	if ((loop = ev_default_loop(EVFLAG_AUTO)) == NULL) {
		nt_jwt_verifier_free(jwt);
		return die(NT_EXIT_SOFTWARE, "cannot start the event loop%s%s",
		    "", "");
	}
	if (ntws_server_init(&srv, loop, &cfg, jwt, err, sizeof(err)) != 0) {
		ntws_server_free(&srv);
		nt_jwt_verifier_free(jwt);
		return die(NT_EXIT_CONFIG, "%s%s", err, "");
	}
	ev_run(loop, 0);
	ntws_server_free(&srv);
	nt_jwt_verifier_free(jwt);
	ev_loop_destroy(loop);
	nt_log_info("stopped");
	return NT_EXIT_OK;
}
