#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "nt_procstat.h"

static void
reads_this_process(void **state)
{
	struct nt_procstat a, b;
	int fds[8], i;
	char *volatile mem;

	assert_int_equal(nt_procstat_read(&a), 0);
	assert_true(a.resident_bytes > 0);
	assert_true(a.virtual_bytes >= a.resident_bytes);
	assert_true(a.open_fds >= 3);
	assert_true(a.max_fds >= a.open_fds);
	/* Started within the last minute, give or take clock rounding. */
	assert_true(a.start_time_s <= (double)time(NULL) + 2);
	assert_true(a.start_time_s > (double)time(NULL) - 60);

	for (i = 0; i < 8; i++)
		fds[i] = open("/dev/null", O_RDONLY);
	mem = malloc(32 << 20);
	assert_non_null(mem);
	/* Touch every page (volatile: the compiler may not drop the stores). */
	for (i = 0; i < (32 << 20); i += 4096)
		mem[i] = 1;
	assert_int_equal(nt_procstat_read(&b), 0);
	assert_int_equal(b.open_fds, a.open_fds + 8);
	assert_true(b.resident_bytes >= a.resident_bytes + (30 << 20));
	for (i = 0; i < 8; i++)
		close(fds[i]);
	free(mem);
}

static void
formats_prometheus_text(void **state)
{
	struct nt_procstat ps = { 1.5, 1700000000.0, 4096, 8192, 7, 1024 };
	char buf[4096];
	int n;

	n = nt_procstat_format(&ps, "notifyd-ws", buf, sizeof(buf));
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	assert_non_null(strstr(buf, "\nprocess_cpu_seconds_total 1.50\n"));
	assert_non_null(strstr(buf, "\nprocess_start_time_seconds 1700000000.00\n"));
	assert_non_null(strstr(buf, "\nprocess_resident_memory_bytes 4096\n"));
	assert_non_null(strstr(buf, "\nprocess_open_fds 7\n"));
	assert_non_null(strstr(buf, "\nprocess_max_fds 1024\n"));
	assert_non_null(strstr(buf, "# TYPE process_cpu_seconds_total counter\n"));
	assert_non_null(strstr(buf,
	    "notifyd_build_info{program=\"notifyd-ws\",version=\"" NT_VERSION "\"} 1\n"));
	/* Too small a buffer: the length it needs, as snprintf. */
	assert_int_equal(nt_procstat_format(&ps, "notifyd-ws", buf, 10), n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reads_this_process),
		cmocka_unit_test(formats_prometheus_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
