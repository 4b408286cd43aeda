#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "nt_config.h"

static void
redis_url_tcp_defaults(void **state)
{
	struct nt_redis_url u;
	char err[256];

	assert_int_equal(nt_redis_url_parse("redis://localhost", &u, err, sizeof(err)), 0);
	assert_int_equal(u.is_unix, 0);
	assert_string_equal(u.host, "localhost");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_string_equal(u.password, "");
}

static void
redis_url_full(void **state)
{
	struct nt_redis_url u;
	char err[256];

	assert_int_equal(nt_redis_url_parse("redis://:s%40cret@10.1.2.3:6380/4", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "10.1.2.3");
	assert_int_equal(u.port, 6380);
	assert_int_equal(u.db, 4);
	assert_string_equal(u.username, "");
	assert_string_equal(u.password, "s@cret");

	assert_int_equal(nt_redis_url_parse("redis://bob:pw@[::1]:7000", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 7000);
	assert_string_equal(u.username, "bob");
	assert_string_equal(u.password, "pw");

	assert_int_equal(nt_redis_url_parse("redis://pw@h", &u, err, sizeof(err)), 0);
	assert_string_equal(u.password, "pw");

	assert_int_equal(nt_redis_url_parse("redis://[::1]/3", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 3);
}

static void
redis_url_unix(void **state)
{
	struct nt_redis_url u;
	char err[256];

	assert_int_equal(nt_redis_url_parse("unix:///run/redis.sock", &u, err, sizeof(err)), 0);
	assert_int_equal(u.is_unix, 1);
	assert_string_equal(u.path, "/run/redis.sock");
	assert_int_equal(nt_redis_url_parse("unix:///run/redis.sock?db=2", &u, err, sizeof(err)), 0);
	assert_int_equal(u.db, 2);
}

static void
redis_url_rejects(void **state)
{
	static const char *bad[] = {
		"", "http://x", "redis://", "redis://h:0", "redis://h:70000",
		"redis://h:12ab", "redis://h/notanumber", "unix://relative",
		"unix:///s?db=x", "redis://[::1", "redis://[]",
		/* %XX is exactly two hex digits, and %00 would cut the password. */
		"redis://:%2@h", "redis://:% 41@h", "redis://:a%00b@h", NULL,
	};
	struct nt_redis_url u;
	char err[256];

	for (int i = 0; bad[i]; i++) {
		err[0] = '\0';
		assert_int_equal(nt_redis_url_parse(bad[i], &u, err, sizeof(err)), -1);
		assert_true(strlen(err) > 0);
		assert_null(strchr(err, '\n'));
		/* Every reason names what was wrong: the redis URL. */
		assert_non_null(strstr(err, "redis URL"));
	}
}

static void
percent_decode(void **state)
{
	char out[16], inplace[] = "a%41b";

	assert_int_equal(nt_percent_decode("a%2Fb+c", 7, 1, out, sizeof(out)), 5);
	assert_string_equal(out, "a/b c");
	assert_int_equal(nt_percent_decode("a+b", 3, 0, out, sizeof(out)), 3);
	assert_string_equal(out, "a+b");
	/* Bad escapes: short, blank, non-hex, and %00. */
	assert_int_equal(nt_percent_decode("%4", 2, 0, out, sizeof(out)), -1);
	assert_int_equal(nt_percent_decode("% 41", 4, 0, out, sizeof(out)), -1);
	assert_int_equal(nt_percent_decode("%g1", 3, 0, out, sizeof(out)), -1);
	assert_int_equal(nt_percent_decode("a%00", 4, 0, out, sizeof(out)), -1);
	/* Too small for the value and its NUL. */
	assert_int_equal(nt_percent_decode("abcd", 4, 0, out, 4), -1);
	assert_int_equal(nt_percent_decode("abc", 3, 0, out, 4), 3);
	/* In place. */
	assert_int_equal(nt_percent_decode(inplace, 5, 0, inplace, 6), 3);
	assert_string_equal(inplace, "aAb");
}

static void
hostport(void **state)
{
	char host[64], err[128];
	int port;

	assert_int_equal(nt_hostport_parse("127.0.0.1:8080", host, sizeof(host), &port, err, sizeof(err)), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8080);
	assert_int_equal(nt_hostport_parse("[::1]:9", host, sizeof(host), &port, err, sizeof(err)), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(nt_hostport_parse("nohost", host, sizeof(host), &port, err, sizeof(err)), -1);
	assert_int_equal(nt_hostport_parse(":80", host, sizeof(host), &port, err, sizeof(err)), -1);
	assert_int_equal(nt_hostport_parse("h:99999", host, sizeof(host), &port, err, sizeof(err)), -1);
}

static void
sizes_and_durations(void **state)
{
	size_t sz;
	uint64_t ms, v;

	assert_int_equal(nt_size_parse("64k", &sz), 0);
	assert_int_equal(sz, 65536);
	assert_int_equal(nt_size_parse("1M", &sz), 0);
	assert_int_equal(sz, 1048576);
	assert_int_equal(nt_size_parse("12", &sz), 0);
	assert_int_equal(sz, 12);
	assert_int_equal(nt_size_parse("-1", &sz), -1);
	assert_int_equal(nt_size_parse("1x", &sz), -1);
	assert_int_equal(nt_size_parse("99999999999999999999G", &sz), -1);

	assert_int_equal(nt_duration_ms_parse("500ms", &ms), 0);
	assert_int_equal(ms, 500);
	assert_int_equal(nt_duration_ms_parse("10", &ms), 0);
	assert_int_equal(ms, 10000);
	assert_int_equal(nt_duration_ms_parse("2m", &ms), 0);
	assert_int_equal(ms, 120000);
	assert_int_equal(nt_duration_ms_parse("7d", &ms), 0);
	assert_int_equal(ms, 7ULL * 86400 * 1000);
	assert_int_equal(nt_duration_ms_parse("1w", &ms), -1);
	assert_int_equal(nt_duration_ms_parse("", &ms), -1);

	assert_int_equal(nt_u64_parse("42", 1, 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(nt_u64_parse("0", 1, 100, &v), -1);
	assert_int_equal(nt_u64_parse("+5", 0, 100, &v), -1);
	assert_int_equal(nt_u64_parse(" 5", 0, 100, &v), -1);
}

static void
url_format_masks_the_password(void **state)
{
	struct nt_redis_url u;
	char err[256], buf[600];

	assert_int_equal(nt_redis_url_parse("redis://localhost", &u, err, sizeof(err)), 0);
	assert_string_equal(nt_redis_url_format(&u, buf, sizeof(buf)),
	    "redis://localhost:6379");
	assert_int_equal(nt_redis_url_parse("redis://:s3cret@h:7000/2", &u, err, sizeof(err)), 0);
	assert_string_equal(nt_redis_url_format(&u, buf, sizeof(buf)),
	    "redis://:***@h:7000/2");
	assert_int_equal(nt_redis_url_parse("redis://s3cret@h", &u, err, sizeof(err)), 0);
	assert_string_equal(nt_redis_url_format(&u, buf, sizeof(buf)),
	    "redis://:***@h:6379");
	assert_int_equal(nt_redis_url_parse("redis://bob:p%40ss@[::1]:6380", &u, err, sizeof(err)), 0);
	assert_string_equal(nt_redis_url_format(&u, buf, sizeof(buf)),
	    "redis://bob:***@[::1]:6380");
	/* A user name without a password sends no AUTH: not shown. */
	assert_int_equal(nt_redis_url_parse("redis://bob:@h", &u, err, sizeof(err)), 0);
	assert_string_equal(nt_redis_url_format(&u, buf, sizeof(buf)),
	    "redis://h:6379");
	assert_int_equal(nt_redis_url_parse("unix:///run/r.sock?db=3", &u, err, sizeof(err)), 0);
	assert_string_equal(nt_redis_url_format(&u, buf, sizeof(buf)),
	    "unix:///run/r.sock?db=3");
	assert_int_equal(nt_redis_url_parse("unix:///run/r.sock", &u, err, sizeof(err)), 0);
	assert_string_equal(nt_redis_url_format(&u, buf, sizeof(buf)),
	    "unix:///run/r.sock");
	/* Cut, never overrun. */
	assert_string_equal(nt_redis_url_format(&u, buf, 8), "unix://");
}

static void
url_mask_password_in_any_text(void **state)
{
	char buf[128];

	assert_string_equal(nt_url_mask_password("redis://u:pw@h:1/0", buf,
	    sizeof(buf)), "redis://u:***@h:1/0");
	assert_string_equal(nt_url_mask_password("redis://:pw@h", buf,
	    sizeof(buf)), "redis://:***@h");
	assert_string_equal(nt_url_mask_password("redis://pw@h", buf,
	    sizeof(buf)), "redis://***@h");
	/* '@' and '/' in an unescaped password: the last '@' ends it. */
	assert_string_equal(nt_url_mask_password("redis://:p@s/s@h:99999", buf,
	    sizeof(buf)), "redis://:***@h:99999");
	assert_string_equal(nt_url_mask_password("redis://h:6379", buf,
	    sizeof(buf)), "redis://h:6379");
	assert_string_equal(nt_url_mask_password("7d", buf, sizeof(buf)), "7d");
	assert_string_equal(nt_url_mask_password("a@b", buf, sizeof(buf)), "a@b");
	assert_string_equal(nt_url_mask_password("redis://:pw@h", buf, 6),
	    "redis");
}

static void
prefix_rules(void **state)
{
	char err[128];

	assert_int_equal(nt_prefix_valid("", err, sizeof(err)), 0);
	assert_int_equal(nt_prefix_valid("app1:", err, sizeof(err)), 0);
	assert_int_equal(nt_prefix_valid("a b", err, sizeof(err)), -1);
	assert_int_equal(nt_prefix_valid("x*", err, sizeof(err)), -1);
}

static void
file_read(void **state)
{
	char path[] = "/tmp/nt_test_XXXXXX", err[256];
	size_t len;
	char *s;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "secret\n", 7), 7);
	close(fd);
	s = nt_file_read(path, 100, &len, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(len, 7);
	assert_string_equal(s, "secret\n");
	free(s);
	assert_null(nt_file_read(path, 3, &len, err, sizeof(err)));
	unlink(path);
	assert_null(nt_file_read(path, 100, &len, err, sizeof(err)));
	assert_non_null(strstr(err, path));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(redis_url_tcp_defaults),
		cmocka_unit_test(redis_url_full),
		cmocka_unit_test(redis_url_unix),
		cmocka_unit_test(redis_url_rejects),
		cmocka_unit_test(percent_decode),
		cmocka_unit_test(hostport),
		cmocka_unit_test(sizes_and_durations),
		cmocka_unit_test(url_format_masks_the_password),
		cmocka_unit_test(url_mask_password_in_any_text),
		cmocka_unit_test(prefix_rules),
		cmocka_unit_test(file_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
