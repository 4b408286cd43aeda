#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "nt_opt.h"

/* The destination of every flag of the test table. */
static struct {
	const char          *user;
	int                  json;
	long long            count;
	size_t               max;
	uint64_t             ttl_ms;
	double               ping_s;
	struct nt_opt_listen listen;
} v;

static const struct nt_opt opts[] = {
	{ "user", 'u', "USER", NULL, NULL, nt_opt_string, &v.user, 0, 0,
	  "send to this user" },
	{ "json", 0, NULL, "NT_TEST_JSON", NULL, nt_opt_switch, &v.json, 0, 0,
	  "print JSON" },
	{ "count", 'n', "N", NULL, "10", nt_opt_int, &v.count, 1, 100,
	  "how many" },
	{ "max", 0, "SIZE", "NT_TEST_MAX", "64k", nt_opt_size, &v.max, 1024, 0,
	  "largest message" },
	{ "ttl", 0, "DURATION", "NT_TEST_TTL", "7d", nt_opt_duration, &v.ttl_ms,
	  1000, 0, "offline expiry" },
	{ "ping", 0, "DURATION", NULL, "25s", nt_opt_seconds, &v.ping_s, 1, 0,
	  "ping interval" },
	{ "listen", 0, "ADDR:PORT", "NT_TEST_LISTEN", "127.0.0.1:8080",
	  nt_opt_listen, &v.listen, 0, 0, "where to listen" },
};

static const char *origin[NT_OPT_COUNT(opts)];

static const struct nt_opt_spec spec = {
	"prog", "[-u USER] [--json] [MESSAGE ...]", "Footer text.\n",
	opts, NT_OPT_COUNT(opts), origin,
};

static int
run(char *err, size_t errlen, int *first, ...)
{
	char *argv[16];
	va_list ap;
	int argc = 0;

	argv[argc++] = "prog";
	va_start(ap, first);
	while ((argv[argc] = va_arg(ap, char *)) != NULL)
		argc++;
	va_end(ap);
	memset(&v, 0, sizeof(v));
	return nt_opt_parse(&spec, argc, argv, first, err, errlen);
}

static int
setup(void **state)
{
	unsetenv("NT_TEST_JSON");
	unsetenv("NT_TEST_MAX");
	unsetenv("NT_TEST_TTL");
	unsetenv("NT_TEST_LISTEN");
	return 0;
}

static void
defaults_apply(void **state)
{
	char err[256];
	int first;

	assert_int_equal(run(err, sizeof(err), &first, NULL), 0);
	assert_null(v.user);
	assert_int_equal(v.json, 0);
	assert_int_equal(v.count, 10);
	assert_int_equal(v.max, 65536);
	assert_int_equal(v.ttl_ms, 7ULL * 86400 * 1000);
	assert_true(v.ping_s == 25.0);
	assert_string_equal(v.listen.host, "127.0.0.1");
	assert_int_equal(v.listen.port, 8080);
	assert_null(origin[3]);
}

static void
flags_beat_environment(void **state)
{
	char err[256];
	int first;

	setenv("NT_TEST_TTL", "2h", 1);
	setenv("NT_TEST_MAX", "2k", 1);
	assert_int_equal(run(err, sizeof(err), &first, "--ttl", "30s", "-u",
	    "alice", "--json", "-n", "5", "hello", "world", NULL), 0);
	assert_string_equal(v.user, "alice");
	assert_int_equal(v.json, 1);
	assert_int_equal(v.count, 5);
	assert_int_equal(v.ttl_ms, 30000);
	assert_int_equal(v.max, 2048);
	assert_string_equal(origin[4], "ttl");
	assert_string_equal(origin[3], "NT_TEST_MAX");
	assert_int_equal(first, 8);
}

static void
empty_environment_means_default(void **state)
{
	char err[256];
	int first;

	setenv("NT_TEST_TTL", "", 1);
	assert_int_equal(run(err, sizeof(err), &first, NULL), 0);
	assert_int_equal(v.ttl_ms, 7ULL * 86400 * 1000);
}

static void
switch_from_environment(void **state)
{
	char err[256];
	int first;

	setenv("NT_TEST_JSON", "yes", 1);
	assert_int_equal(run(err, sizeof(err), &first, NULL), 0);
	assert_int_equal(v.json, 1);
	setenv("NT_TEST_JSON", "maybe", 1);
	assert_int_equal(run(err, sizeof(err), &first, NULL), 78);
	assert_non_null(strstr(err, "NT_TEST_JSON='maybe'"));
}

static void
bad_values_are_config_errors_naming_their_source(void **state)
{
	char err[256];
	int first;

	assert_int_equal(run(err, sizeof(err), &first, "--ttl", "soon", NULL), 78);
	assert_non_null(strstr(err, "--ttl 'soon'"));
	assert_non_null(strstr(err, "duration"));

	setenv("NT_TEST_TTL", "soon", 1);
	assert_int_equal(run(err, sizeof(err), &first, NULL), 78);
	assert_non_null(strstr(err, "NT_TEST_TTL='soon'"));

	assert_int_equal(run(err, sizeof(err), &first, "-n", "0", NULL), 78);
	assert_non_null(strstr(err, "from 1 to 100"));
	assert_int_equal(run(err, sizeof(err), &first, "-n", "5x", NULL), 78);
	assert_int_equal(run(err, sizeof(err), &first, "--max", "10", NULL), 78);
	assert_non_null(strstr(err, "at least 1024"));
	assert_int_equal(run(err, sizeof(err), &first, "--ttl", "10ms", NULL), 78);
	/* A value is echoed with any URL password masked. */
	assert_int_equal(run(err, sizeof(err), &first, "--listen",
	    "redis://:hunter2@host", NULL), 78);
	assert_null(strstr(err, "hunter2"));
}

static void
unreadable_command_lines_are_usage_errors(void **state)
{
	char err[256];
	int first;

	assert_int_equal(run(err, sizeof(err), &first, "--bogus", NULL), 64);
	assert_non_null(strstr(err, "--bogus"));
	assert_int_equal(run(err, sizeof(err), &first, "-x", NULL), 64);
	assert_non_null(strstr(err, "-x"));
	assert_int_equal(run(err, sizeof(err), &first, "--ttl", NULL), 64);
	assert_non_null(strstr(err, "--ttl needs a value"));
	assert_int_equal(run(err, sizeof(err), &first, "-u", NULL), 64);
}

static void
listen_forms(void **state)
{
	char err[256];
	int first;

	assert_int_equal(run(err, sizeof(err), &first, "--listen", ":18080",
	    NULL), 0);
	assert_string_equal(v.listen.host, "0.0.0.0");
	assert_int_equal(v.listen.port, 18080);
	assert_int_equal(run(err, sizeof(err), &first, "--listen", "[::1]:9",
	    NULL), 0);
	assert_string_equal(v.listen.host, "::1");
	assert_int_equal(run(err, sizeof(err), &first, "--listen", ":0", NULL),
	    78);
	assert_int_equal(run(err, sizeof(err), &first, "--listen", "8080", NULL),
	    78);
}

/* Run nt_opt_help into a buffer. */
static void
help_text(char *buf, size_t len)
{
	FILE *f = fmemopen(buf, len, "w");

	assert_non_null(f);
	nt_opt_help(&spec, f);
	fclose(f);
}

static void
help_lists_every_flag_with_default_and_variable(void **state)
{
	char buf[8192];
	size_t i;

	help_text(buf, sizeof(buf));
	assert_true(strncmp(buf, "usage: prog [-u USER]", 21) == 0);
	assert_non_null(strstr(buf, "       prog --help | --version\n"));
	for (i = 0; i < NT_OPT_COUNT(opts); i++) {
		char flag[64];
		snprintf(flag, sizeof(flag), "--%s", opts[i].name);
		assert_non_null(strstr(buf, flag));
		if (opts[i].env)
			assert_non_null(strstr(buf, opts[i].env));
	}
	assert_non_null(strstr(buf, "-u, --user USER"));
	assert_non_null(strstr(buf, "(default: 7d) [env: NT_TEST_TTL]"));
	assert_non_null(strstr(buf, "-h, --help"));
	assert_non_null(strstr(buf, "Footer text.\n"));
	/* No line is wider than 79 columns. */
	for (char *line = buf, *nl; (nl = strchr(line, '\n')); line = nl + 1)
		assert_true(nl - line <= 79);
}

static void
where_names_flag_and_variable(void **state)
{
	assert_string_equal(nt_opt_where(&spec, &v.ttl_ms), "--ttl (NT_TEST_TTL)");
	assert_string_equal(nt_opt_where(&spec, &v.user), "--user");
	assert_string_equal(nt_opt_where(&spec, &v), "--user");
	assert_string_equal(nt_opt_where(&spec, origin), "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(defaults_apply, setup),
		cmocka_unit_test_setup(flags_beat_environment, setup),
		cmocka_unit_test_setup(empty_environment_means_default, setup),
		cmocka_unit_test_setup(switch_from_environment, setup),
		cmocka_unit_test_setup(bad_values_are_config_errors_naming_their_source, setup),
		cmocka_unit_test_setup(unreadable_command_lines_are_usage_errors, setup),
		cmocka_unit_test_setup(listen_forms, setup),
		cmocka_unit_test_setup(help_lists_every_flag_with_default_and_variable, setup),
		cmocka_unit_test_setup(where_names_flag_and_variable, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
