#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "nt_log.h"

/* Run fn with stderr sent to a pipe; return what it wrote. */
static void
capture(void (*fn)(void), char *out, size_t outlen)
{
	int p[2], saved;
	ssize_t n;

	assert_int_equal(pipe(p), 0);
	saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	close(p[1]);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = read(p[0], out, outlen - 1);
	out[n < 0 ? 0 : n] = '\0';
	close(p[0]);
}

static void
log_two(void)
{
	nt_log_init("prog", NT_LOG_INFO);
	nt_log_info("hello %d", 42);
	nt_log_debug("not shown");
	nt_log_err("multi\nline");
}

static void
format_and_level(void **state)
{
	char buf[1024], *second;

	capture(log_two, buf, sizeof(buf));
	/* 2026-11-26T22:43:46.123Z prog[pid] info: hello 42 */
	assert_int_equal(buf[4], '-');
	assert_int_equal(buf[10], 'T');
	assert_int_equal(buf[23], 'Z');
	assert_non_null(strstr(buf, " prog["));
	assert_non_null(strstr(buf, "] info: hello 42\n"));
	assert_null(strstr(buf, "not shown"));
	/* A message never spans two lines. */
	second = strchr(buf, '\n') + 1;
	assert_non_null(strstr(second, "error: multi line\n"));
	assert_string_equal(strchr(second, '\n'), "\n");
}

static void
parse_levels(void **state)
{
	enum nt_log_level l;

	assert_int_equal(nt_log_level_parse("debug", &l), 0);
	assert_int_equal(l, NT_LOG_DEBUG);
	assert_int_equal(nt_log_level_parse("warn", &l), 0);
	assert_int_equal(l, NT_LOG_WARN);
	assert_int_equal(nt_log_level_parse("loud", &l), -1);
	nt_log_init("t", NT_LOG_WARN);
	assert_true(nt_log_enabled(NT_LOG_ERR));
	assert_false(nt_log_enabled(NT_LOG_INFO));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(format_and_level),
		cmocka_unit_test(parse_levels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
