/*
 * The Redis contract of notifyd(7) in code: key names, and what the
 * scripts and commands of nt_redis and nt_userlog do, run against a real
 * redis-server that this test starts on a private unix socket (no
 * network; redis-server comes with make deps).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "nt_redis.h"
#include "nt_userlog.h"
#include "nt_uuid.h"

static void
key_names(void **state)
{
	char k[NT_KEY_MAX];

	assert_int_equal(nt_key_channel(k, sizeof(k), ""), 13);
	assert_string_equal(k, "notifications");
	nt_key_channel(k, sizeof(k), "app:");
	assert_string_equal(k, "app:notifications");
	nt_key_userlog(k, sizeof(k), "", "alice");
	assert_string_equal(k, "offline:{alice}");
	nt_key_userlog(k, sizeof(k), "app:", "alice");
	assert_string_equal(k, "app:offline:{alice}");
	nt_key_presence_instances(k, sizeof(k), "");
	assert_string_equal(k, "presence:instances");
	nt_key_presence(k, sizeof(k), "p:", "host-1");
	assert_string_equal(k, "p:presence:host-1");
}

static void
key_too_long(void **state)
{
	char k[16];

	assert_int_equal(nt_key_userlog(k, sizeof(k), "", "a-rather-long-user"), -1);
}

/* The shared --redis/--redis-prefix table entries, through nt_opt_parse. */
static struct nt_redis_url opt_url;
static const char *opt_prefix;
static const struct nt_opt redis_opts[] = {
	NT_REDIS_OPT_URL(&opt_url),
	NT_REDIS_OPT_PREFIX(&opt_prefix),
};
static const struct nt_opt_spec redis_spec = {
	.prog = "test", .synopsis = "", .opts = redis_opts,
	.nopts = NT_OPT_COUNT(redis_opts),
};

static int
parse_args(int argc, char **argv, char *err, size_t errlen)
{
	int first;

	return nt_opt_parse(&redis_spec, argc, argv, &first, err, errlen);
}

static void
redis_opts_defaults_flags_and_environment(void **state)
{
	char err[512];
	char *none[] = { "test", NULL };
	char *flags[] = { "test", "--redis", "unix:///run/r.sock?db=2",
	    "--redis-prefix", "app:", NULL };

	unsetenv("NOTIFYD_REDIS_URL");
	unsetenv("NOTIFYD_REDIS_PREFIX");
	assert_int_equal(parse_args(1, none, err, sizeof(err)), 0);
	assert_string_equal(opt_url.host, "127.0.0.1");
	assert_int_equal(opt_url.port, 6379);
	assert_string_equal(opt_prefix, "");

	setenv("NOTIFYD_REDIS_URL", "redis://envhost:7000", 1);
	setenv("NOTIFYD_REDIS_PREFIX", "env:", 1);
	assert_int_equal(parse_args(1, none, err, sizeof(err)), 0);
	assert_string_equal(opt_url.host, "envhost");
	assert_string_equal(opt_prefix, "env:");
	assert_int_equal(parse_args(5, flags, err, sizeof(err)), 0);
	assert_int_equal(opt_url.is_unix, 1);
	assert_int_equal(opt_url.db, 2);
	assert_string_equal(opt_prefix, "app:");
	unsetenv("NOTIFYD_REDIS_URL");
	unsetenv("NOTIFYD_REDIS_PREFIX");
}

static void
redis_opts_bad_values_are_config_errors(void **state)
{
	char err[512];
	char *none[] = { "test", NULL };
	char *bad_url[] = { "test", "--redis", "http://x", NULL };

	unsetenv("NOTIFYD_REDIS_URL");
	unsetenv("NOTIFYD_REDIS_PREFIX");
	assert_int_equal(parse_args(3, bad_url, err, sizeof(err)), 78);
	assert_true(strncmp(err, "--redis 'http://x': bad redis URL", 33) == 0);
	setenv("NOTIFYD_REDIS_PREFIX", "a b", 1);
	assert_int_equal(parse_args(1, none, err, sizeof(err)), 78);
	assert_true(strncmp(err, "NOTIFYD_REDIS_PREFIX='a b': redis prefix", 40)
	    == 0);
	unsetenv("NOTIFYD_REDIS_PREFIX");
}

/* ---- against a real redis-server ---- */

static struct {
	char          dir[64];
	char          sock[128];
	pid_t         pid;
	redisContext *c;
} srv;

static redisContext *
connect_srv(char *err, size_t errlen)
{
	struct nt_redis_url url;
	char u[160];

	snprintf(u, sizeof(u), "unix://%s", srv.sock);
	if (nt_redis_url_parse(u, &url, err, errlen) != 0)
		return NULL;
	return nt_redis_connect(&url, 2000, err, errlen);
}

static int
server_up(void **state)
{
	char err[256];
	int i, devnull;

	snprintf(srv.dir, sizeof(srv.dir), "/tmp/test_nt_redis.XXXXXX");
	if (mkdtemp(srv.dir) == NULL)
		return -1;
	snprintf(srv.sock, sizeof(srv.sock), "%s/redis.sock", srv.dir);
	if ((srv.pid = fork()) < 0)
		return -1;
	if (srv.pid == 0) {
		/* A test that crashes leaves no redis-server behind. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if ((devnull = open("/dev/null", O_WRONLY)) >= 0)
			dup2(devnull, STDOUT_FILENO);
		execlp("redis-server", "redis-server", "--port", "0",
		    "--unixsocket", srv.sock, "--dir", srv.dir, "--save", "",
		    "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
		fprintf(stderr, "test_nt_redis: cannot run redis-server "
		    "(make deps installs it)\n");
		_exit(127);
	}
	/* Up to 10 s for the socket to answer. */
	for (i = 0; i < 500; i++) {
		if ((srv.c = connect_srv(err, sizeof(err))) != NULL)
			return 0;
		if (waitpid(srv.pid, NULL, WNOHANG) == srv.pid) {
			srv.pid = 0;
			break;
		}
		usleep(20000);
	}
	fprintf(stderr, "test_nt_redis: redis-server did not start: %s\n", err);
	return -1;
}

static int
server_down(void **state)
{
	if (srv.c != NULL)
		redisFree(srv.c);
	if (srv.pid > 0) {
		kill(srv.pid, SIGTERM);
		waitpid(srv.pid, NULL, 0);
	}
	unlink(srv.sock);
	rmdir(srv.dir);
	return 0;
}

/* One command whose reply the test does not need beyond its success. */
static void
ok(const char *fmt, ...)
{
	redisReply *r;
	va_list ap;

	va_start(ap, fmt);
	r = redisvCommand(srv.c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", fmt, r->str);
	freeReplyObject(r);
}

static long long
integer(const char *fmt, ...)
{
	redisReply *r;
	va_list ap;
	long long v;

	va_start(ap, fmt);
	r = redisvCommand(srv.c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

static int
each_test(void **state)
{
	ok("FLUSHALL");
	ok("CONFIG SET maxmemory 0");
	return 0;
}

/* Online: the union of the sets of live instances, under the prefix. */
static void
online_count_and_user_online(void **state)
{
	char reg[NT_KEY_MAX], i1[NT_KEY_MAX], i2[NT_KEY_MAX], err[256];
	long long n;
	int on;

	nt_key_presence_instances(reg, sizeof(reg), "p:");
	nt_key_presence(i1, sizeof(i1), "p:", "i1");
	nt_key_presence(i2, sizeof(i2), "p:", "i2");
	ok("SADD %s i1 i2 gone", reg);
	ok("SADD %s alice bob", i1);
	ok("SADD %s bob carol", i2);
	/* Another deployment's keys (no prefix) are not ours. */
	ok("SADD presence:instances i1");
	ok("SADD presence:i1 mallory");

	assert_int_equal(nt_redis_online_count(srv.c, "p:", &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 3);   /* bob counts once */
	/* The reader dropped the entry whose set is gone (expired). */
	assert_int_equal(integer("SISMEMBER %s gone", reg), 0);
	assert_int_equal(integer("SISMEMBER %s i1", reg), 1);

	assert_int_equal(nt_redis_user_online(srv.c, "p:", "carol", &on, err,
	    sizeof(err)), 0);
	assert_int_equal(on, 1);
	assert_int_equal(nt_redis_user_online(srv.c, "p:", "alice", &on, err,
	    sizeof(err)), 0);
	assert_int_equal(on, 1);
	assert_int_equal(nt_redis_user_online(srv.c, "p:", "mallory", &on, err,
	    sizeof(err)), 0);
	assert_int_equal(on, 0);
	assert_int_equal(nt_redis_user_online(srv.c, "", "mallory", &on, err,
	    sizeof(err)), 0);
	assert_int_equal(on, 1);

	/* One live instance left: its set alone. */
	ok("DEL %s", i2);
	assert_int_equal(nt_redis_online_count(srv.c, "p:", &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(nt_redis_online_count(srv.c, "q:", &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 0);
}

static const struct nt_userlog_cfg log_cfg = { "t:", 3600, 1000 };

/* A message as notifyd writes one: its id first. */
static void
make_msg(char id[NT_UUID_STRLEN + 1], char *json, size_t len,
    const char *content)
{
	nt_uuid7(id);
	snprintf(json, len, "{\"id\":\"%s\",\"content\":\"%s\"}", id, content);
}

/* Send one message to n users through nt_userlog, into out[0..n-1]. */
static int
send_to(size_t n, const char *const *users, const char *id,
    const char *json, struct nt_userlog_sent *out, char *err, size_t errlen)
{
	const char *ids[4], *jsons[4];
	size_t lens[4], i;

	for (i = 0; i < n; i++) {
		ids[i] = id;
		jsons[i] = json;
		lens[i] = strlen(json);
	}
	assert_int_equal(nt_userlog_send_append(srv.c, &log_cfg, n, users, ids,
	    jsons, lens), 0);
	return nt_userlog_send_read(srv.c, n, out, err, errlen);
}

static void
send_stores_publishes_and_refuses_a_duplicate(void **state)
{
	const char *both[] = { "alice", "bob" }, *alice[] = { "alice" };
	char id[NT_UUID_STRLEN + 1], id2[NT_UUID_STRLEN + 1], json[256],
	    json2[256], err[256], want[300];
	struct nt_userlog_sent out[2];
	struct nt_userlog_page page;
	redisContext *sub;
	redisReply *r;

	/* A subscriber of the prefixed channel sees what is published. */
	assert_non_null(sub = connect_srv(err, sizeof(err)));
	r = redisCommand(sub, "SUBSCRIBE t:notifications");
	assert_non_null(r);
	freeReplyObject(r);

	make_msg(id, json, sizeof(json), "hello");
	assert_int_equal(send_to(2, both, id, json, out, err, sizeof(err)), 0);
	assert_int_equal(out[0].seq, 1);
	assert_int_equal(out[1].seq, 1);
	assert_int_equal(out[0].receivers, 1);
	assert_int_equal(out[0].duplicate, 0);
	/* Published with its position, once per user. */
	snprintf(want, sizeof(want), "{\"id\":\"%s\",\"content\":\"hello\","
	    "\"seq\":1}", id);
	assert_int_equal(redisGetReply(sub, (void **)&r), REDIS_OK);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_string_equal(r->element[2]->str, want);
	freeReplyObject(r);
	assert_int_equal(redisGetReply(sub, (void **)&r), REDIS_OK);
	assert_string_equal(r->element[2]->str, want);
	freeReplyObject(r);

	/* The same id again: a retry, neither stored nor published. */
	assert_int_equal(send_to(1, alice, id, json, out, err, sizeof(err)), 0);
	assert_int_equal(out[0].seq, 1);
	assert_int_equal(out[0].duplicate, 1);
	assert_int_equal(out[0].receivers, 0);
	make_msg(id2, json2, sizeof(json2), "second");
	assert_int_equal(send_to(1, alice, id2, json2, out, err, sizeof(err)),
	    0);
	assert_int_equal(out[0].seq, 2);
	/* The next thing the subscriber gets is the second message. */
	assert_int_equal(redisGetReply(sub, (void **)&r), REDIS_OK);
	assert_non_null(strstr(r->element[2]->str, id2));
	freeReplyObject(r);
	redisFree(sub);

	/* Stored in order under the prefixed log key, dense positions. */
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "all", NULL, NULL,
	    10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.first, 1);
	assert_int_equal(page.last, 2);
	assert_int_equal(page.n, 2);
	assert_string_equal(page.msgs[0]->str, want);
	assert_non_null(strstr(page.msgs[1]->str, id2));
	freeReplyObject(r);
	assert_int_equal(integer("HLEN t:offline:{bob}") > 0, 1);
	assert_int_equal(integer("EXISTS offline:{alice}"), 0);
	/* A broadcast is published only. */
	assert_int_equal(nt_userlog_send_append(srv.c, &log_cfg, 1,
	    (const char *const[]){ NULL }, (const char *const[]){ id },
	    (const char *const[]){ json }, (const size_t[]){ strlen(json) }), 0);
	assert_int_equal(nt_userlog_send_read(srv.c, 1, out, err, sizeof(err)),
	    0);
	assert_int_equal(out[0].seq, 0);
	assert_int_equal(integer("HLEN t:offline:{alice}"), 2 * 2 + 5);
}

static void
read_modes_and_read_marks(void **state)
{
	const char *alice[] = { "alice" };
	char ids[3][NT_UUID_STRLEN + 1], json[256], err[256], epoch[64],
	    idpos[NT_UUID_STRLEN + 3];
	struct nt_userlog_sent out[1];
	struct nt_userlog_page page;
	redisReply *r;
	int i;

	for (i = 0; i < 3; i++) {
		make_msg(ids[i], json, sizeof(json), "m");
		assert_int_equal(send_to(1, alice, ids[i], json, out, err,
		    sizeof(err)), 0);
		assert_int_equal(out[0].seq, i + 1);
	}
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "unread", NULL,
	    NULL, 10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.n, 3);
	assert_int_equal(page.read, 0);
	snprintf(epoch, sizeof(epoch), "%s", page.epoch);
	freeReplyObject(r);

	/* Marks: only up, only in the same epoch, by position or id. */
	assert_int_equal(integer("EVAL %s 1 t:offline:{alice} %s 2",
	    nt_lua_userlog_mark, epoch), 2);
	assert_int_equal(integer("EVAL %s 1 t:offline:{alice} %s 1",
	    nt_lua_userlog_mark, epoch), 0);
	assert_int_equal(integer("EVAL %s 1 t:offline:{alice} 123 3",
	    nt_lua_userlog_mark), 0);
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "unread", NULL,
	    NULL, 10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.read, 2);
	assert_int_equal(page.n, 1);
	assert_non_null(strstr(page.msgs[0]->str, ids[2]));
	freeReplyObject(r);
	snprintf(idpos, sizeof(idpos), "i:%s", ids[2]);
	assert_int_equal(integer("EVAL %s 1 t:offline:{alice} %s %s",
	    nt_lua_userlog_mark, epoch, idpos), 3);

	/*
	 * since: after that id; an id not in the log is not found, and the
	 * page starts at the log's head (the reader loses nothing kept).
	 */
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "since", ids[0],
	    NULL, 10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.found, 1);
	assert_int_equal(page.n, 2);
	assert_non_null(strstr(page.msgs[0]->str, ids[1]));
	freeReplyObject(r);
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "since",
	    "00000000-0000-7000-8000-000000000000", NULL, 10, 1 << 20, &r, &page,
	    err, sizeof(err)), 0);
	assert_int_equal(page.found, 0);
	assert_int_equal(page.n, 3);
	freeReplyObject(r);
	/* after: a position of this epoch; another epoch is another log. */
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "after", "1",
	    epoch, 10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.n, 2);
	freeReplyObject(r);
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "after", "1",
	    "1", 10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.found, 0);
	freeReplyObject(r);
	/* Pages stop at the count and say where they end. */
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "all", NULL,
	    NULL, 2, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.n, 2);
	assert_int_equal(page.end, 2);
	freeReplyObject(r);
	/* A user with no log. */
	assert_int_equal(nt_userlog_read(srv.c, "t:", "nobody", "unread", NULL,
	    NULL, 10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_string_equal(page.epoch, "0");
	assert_int_equal(page.n, 0);
	freeReplyObject(r);
}

/* Out of memory: a send leaves nothing behind; reads still work. */
static void
send_refused_out_of_memory_reads_still_work(void **state)
{
	const char *alice[] = { "alice" }, *bob[] = { "bob" };
	char id[NT_UUID_STRLEN + 1], json[256], err[256];
	struct nt_userlog_sent out[1];
	struct nt_userlog_page page;
	redisReply *r;

	make_msg(id, json, sizeof(json), "before");
	assert_int_equal(send_to(1, alice, id, json, out, err, sizeof(err)), 0);
	ok("CONFIG SET maxmemory-policy noeviction");
	ok("CONFIG SET maxmemory 1");
	make_msg(id, json, sizeof(json), "refused");
	assert_int_equal(send_to(1, bob, id, json, out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "OOM"));
	assert_int_equal(integer("EXISTS t:offline:{bob}"), 0);
	assert_int_equal(nt_userlog_read(srv.c, "t:", "alice", "all", NULL,
	    NULL, 10, 1 << 20, &r, &page, err, sizeof(err)), 0);
	assert_int_equal(page.n, 1);
	freeReplyObject(r);
	ok("CONFIG SET maxmemory 0");
	assert_int_equal(send_to(1, bob, id, json, out, err, sizeof(err)), 0);
	assert_int_equal(out[0].seq, 1);
}

int
main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(key_names),
		cmocka_unit_test(key_too_long),
		cmocka_unit_test(redis_opts_defaults_flags_and_environment),
		cmocka_unit_test(redis_opts_bad_values_are_config_errors),
	};
	const struct CMUnitTest live[] = {
		cmocka_unit_test_setup(online_count_and_user_online, each_test),
		cmocka_unit_test_setup(send_stores_publishes_and_refuses_a_duplicate,
		    each_test),
		cmocka_unit_test_setup(read_modes_and_read_marks, each_test),
		cmocka_unit_test_setup(send_refused_out_of_memory_reads_still_work,
		    each_test),
	};
	int failed;

	failed = cmocka_run_group_tests_name("keys and flags", pure, NULL, NULL);
	failed += cmocka_run_group_tests_name("against redis-server", live,
	    server_up, server_down);
	return failed;
}
