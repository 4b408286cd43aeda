/* Key names are the Redis contract of notifyd(7): pin them down. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "nt_redis.h"
#include "nt_userlog.h"

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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_names),
		cmocka_unit_test(key_too_long),
		cmocka_unit_test(redis_opts_defaults_flags_and_environment),
		cmocka_unit_test(redis_opts_bad_values_are_config_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
