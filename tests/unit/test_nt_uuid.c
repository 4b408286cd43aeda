#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "nt_uuid.h"

static void
format_and_version(void **state)
{
	char id[NT_UUID_STRLEN + 1];

	nt_uuid7(id);
	assert_int_equal(strlen(id), 36);
	assert_int_equal(nt_uuid_valid(id), 0);
	assert_int_equal(id[14], '7');                 /* version 7 */
	assert_non_null(strchr("89ab", id[19]));       /* RFC variant */
}

static void
time_is_now(void **state)
{
	char id[NT_UUID_STRLEN + 1];
	uint64_t ms, now = (uint64_t)time(NULL) * 1000;

	nt_uuid7(id);
	assert_int_equal(nt_uuid7_time_ms(id, &ms), 0);
	assert_true(ms + 2000 >= now && ms <= now + 2000);
}

/* Many ids in one millisecond still sort in creation order. */
static void
monotonic_in_one_thread(void **state)
{
	char prev[NT_UUID_STRLEN + 1], id[NT_UUID_STRLEN + 1];

	nt_uuid7(prev);
	for (int i = 0; i < 200000; i++) {
		nt_uuid7(id);
		assert_true(strcmp(prev, id) < 0);
		memcpy(prev, id, sizeof(id));
	}
}

#define THREADS 4
#define PER_THREAD 20000

static char thread_ids[THREADS][PER_THREAD][NT_UUID_STRLEN + 1];

static void *
make_ids(void *arg)
{
	char (*ids)[NT_UUID_STRLEN + 1] = arg;

	for (int i = 0; i < PER_THREAD; i++)
		nt_uuid7(ids[i]);
	return NULL;
}

static int
cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Across threads: each thread's ids increase and no id repeats. */
static void
unique_across_threads(void **state)
{
	pthread_t t[THREADS];
	char (*all)[NT_UUID_STRLEN + 1];

	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, make_ids, thread_ids[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	all = malloc(sizeof(thread_ids));
	assert_non_null(all);
	memcpy(all, thread_ids, sizeof(thread_ids));
	for (int i = 0; i < THREADS; i++)
		for (int k = 1; k < PER_THREAD; k++)
			assert_true(strcmp(thread_ids[i][k - 1], thread_ids[i][k]) < 0);
	qsort(all, THREADS * PER_THREAD, sizeof(all[0]), cmp_id);
	for (int i = 1; i < THREADS * PER_THREAD; i++)
		assert_true(strcmp(all[i - 1], all[i]) < 0);
	free(all);
}

static void
rejects_non_uuids(void **state)
{
	uint64_t ms;

	assert_int_equal(nt_uuid_valid("not-a-uuid"), -1);
	assert_int_equal(nt_uuid_valid("0193A4B2-0000-7000-8000-000000000000"), -1);
	assert_int_equal(nt_uuid_valid("0193a4b2-0000-7000-8000-0000000000000"), -1);
	/* A v4 UUID has no time to read. */
	assert_int_equal(nt_uuid7_time_ms("0193a4b2-0000-4000-8000-000000000000", &ms), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(format_and_version),
		cmocka_unit_test(time_is_now),
		cmocka_unit_test(monotonic_in_one_thread),
		cmocka_unit_test(unique_across_threads),
		cmocka_unit_test(rejects_non_uuids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
