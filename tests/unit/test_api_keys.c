/*
 * notifyd-api's pure parsers (notifyd-api/keys.c): the API keys file and
 * the --rate-limit spec.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "keys.h"

#define KEY1 "0123456789abcdef"          /* API_KEY_MIN bytes */
#define KEY2 "fedcba9876543210fedcba"

/* Parse text (copied: the parser cuts it); the result code. */
static int
parse(const char *text, struct api_keypair **keys, size_t *n, char *err,
    size_t errlen)
{
	char *copy = strdup(text);
	int rc;

	assert_non_null(copy);
	*keys = NULL;
	*n = 0;
	rc = api_keys_parse(copy, "keys", keys, n, err, errlen);
	free(copy);
	return rc;
}

static void
keys_pairs_comments_and_blank_lines(void **state)
{
	struct api_keypair *k;
	size_t n;
	char err[256];

	assert_int_equal(parse("# name key\n\n  crm " KEY1 "  # the CRM\r\n"
	    "\tbilling.v2@eu:x-1\t" KEY2 "\n   \n", &k, &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(k[0].name, "crm");
	assert_string_equal(k[0].key, KEY1);
	assert_int_equal(k[0].keylen, strlen(KEY1));
	assert_string_equal(k[1].name, "billing.v2@eu:x-1");
	assert_string_equal(k[1].key, KEY2);
	api_keypairs_free(k, n);
}

static void
keys_errors_name_the_line(void **state)
{
	static const struct { const char *text, *want; } cases[] = {
		{ "a " KEY1 "\nb\n", "keys:2: expected NAME KEY" },
		{ "a 0123456789abcde\n", "keys:1:" },          /* key too short */
		{ "a " KEY1 " extra\n", "keys:1:" },
		{ "bad/name " KEY1 "\n", "keys:1:" },
		{ "a " KEY1 "\n\n\na " KEY2 "\n", "keys:4: duplicate" },
		{ "a " KEY1 "\nb " KEY1 "\n", "keys:2: duplicate" },
		{ "# only a comment\n\n", "keys: no keys" },
		{ "", "keys: no keys" },
	};
	struct api_keypair *k;
	size_t n;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse(cases[i].text, &k, &n, err, sizeof(err)),
		    -1);
		assert_null(k);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err,
			    cases[i].want);
	}
}

static void
keys_length_bounds(void **state)
{
	char name[API_NAME_MAX + 2], key[API_KEY_MAX + 2], text[600];
	struct api_keypair *k;
	size_t n;
	char err[256];

	memset(name, 'n', API_NAME_MAX);
	name[API_NAME_MAX] = '\0';
	memset(key, 'k', API_KEY_MAX);
	key[API_KEY_MAX] = '\0';
	snprintf(text, sizeof(text), "%s %s\n", name, key);
	assert_int_equal(parse(text, &k, &n, err, sizeof(err)), 0);
	assert_int_equal(k[0].keylen, API_KEY_MAX);
	api_keypairs_free(k, n);
	snprintf(text, sizeof(text), "%sn %s\n", name, KEY1);
	assert_int_equal(parse(text, &k, &n, err, sizeof(err)), -1);
	snprintf(text, sizeof(text), "a %sk\n", key);
	assert_int_equal(parse(text, &k, &n, err, sizeof(err)), -1);
}

static void
keys_many_lines_grow(void **state)
{
	char *text = malloc(100 * 64);
	size_t off = 0, n;
	struct api_keypair *k;
	char err[256];

	assert_non_null(text);
	for (int i = 0; i < 100; i++)
		off += (size_t)sprintf(text + off, "k%d key-%016d\n", i, i);
	assert_int_equal(api_keys_parse(text, "keys", &k, &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 100);
	assert_string_equal(k[99].name, "k99");
	api_keypairs_free(k, n);
	free(text);
}

static void
keys_load_reads_the_file(void **state)
{
	char path[] = "/tmp/test_api_keys.XXXXXX", err[256];
	char nul_path[] = "/tmp/test_api_keys.XXXXXX";
	struct api_keypair *k;
	size_t n;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "svc " KEY1 "\n", 21), 21);
	close(fd);
	assert_int_equal(api_keys_load(path, &k, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_string_equal(k[0].name, "svc");
	api_keypairs_free(k, n);
	unlink(path);
	assert_int_equal(api_keys_load(path, &k, &n, err, sizeof(err)), -1);

	/* A NUL byte would hide every line after it from the parser. */
	fd = mkstemp(nul_path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "svc " KEY1 "\n\0ops " KEY1 "\n", 42), 42);
	close(fd);
	assert_int_equal(api_keys_load(nul_path, &k, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "a NUL byte at offset 21"));
	unlink(nul_path);
}

static void
rate_specs(void **state)
{
	double r = -1;

	assert_int_equal(api_rate_parse("0", &r), 0);
	assert_true(r == 0);
	assert_int_equal(api_rate_parse("100", &r), 0);
	assert_true(r == 100);
	assert_int_equal(api_rate_parse("2.5/s", &r), 0);
	assert_true(r == 2.5);
	assert_int_equal(api_rate_parse("120/m", &r), 0);
	assert_true(r == 2);
	assert_int_equal(api_rate_parse("1000000000", &r), 0);
}

static void
rate_specs_refused(void **state)
{
	static const char *bad[] = {
		"", "x", "-1", "+1", " 5", "5 ", "5/h", "5/", "5/sec", "0x10",
		"1e3", "1.2.3", "inf", "nan", "1000000001", "5/s/s",
	};
	double r = 42;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (api_rate_parse(bad[i], &r) != -1)
			fail_msg("\"%s\" was taken", bad[i]);
		assert_true(r == 42);
	}
	assert_int_equal(api_rate_parse(NULL, &r), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(keys_pairs_comments_and_blank_lines),
		cmocka_unit_test(keys_errors_name_the_line),
		cmocka_unit_test(keys_length_bounds),
		cmocka_unit_test(keys_many_lines_grow),
		cmocka_unit_test(keys_load_reads_the_file),
		cmocka_unit_test(rate_specs),
		cmocka_unit_test(rate_specs_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
