/*
 * fuzz_config: the parsers of flag and environment values (lib/nt_config.c)
 * and of ISO 8601 timestamps (lib/nt_msg.c), each on a NUL-terminated
 * copy of the input, with the invariants their callers rely on.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nt_config.h"
#include "nt_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL within n bytes, and the string non-empty when required. */
static void
check_cstr(const char *s, size_t n, int nonempty)
{
	const char *nul = memchr(s, '\0', n);

	if (nul == NULL || (nonempty && nul == s))
		abort();
}

static int
hexdigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Reference percent-decoding of n bytes at s: exactly two hex digits
 * after each '%', and no %00 (a C string cannot carry it to AUTH).
 * Returns the decoded length or -1.
 */
static long
ref_unescape(const char *s, size_t n, char *out)
{
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		if (n - i < 3 || (hi = hexdigit(s[i + 1])) < 0 ||
		    (lo = hexdigit(s[i + 2])) < 0 || (hi | lo) == 0)
			return -1;
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	return (long)o;
}

/* The user and password of a parsed redis:// URL are its userinfo, decoded. */
static void
check_userinfo(const char *s, const struct nt_redis_url *u)
{
	const char *rest = s + 8, *end, *at = NULL, *colon, *p;
	char user[512], pass[512];
	size_t n;

	end = strchr(rest, '/');
	if (end == NULL)
		end = rest + strlen(rest);
	for (p = rest; p < end; p++)
		if (*p == '@')
			at = p;
	if (at == NULL) {
		if (u->username[0] != '\0' || u->password[0] != '\0')
			abort();
		return;
	}
	n = (size_t)(at - rest);
	if (n >= sizeof(user))
		return;
	colon = memchr(rest, ':', n);
	user[0] = '\0';
	if (colon == NULL) {
		if (ref_unescape(rest, n, pass) < 0)
			abort();
	} else if (ref_unescape(rest, (size_t)(colon - rest), user) < 0 ||
	    ref_unescape(colon + 1, n - (size_t)(colon - rest) - 1, pass) < 0)
		abort();  /* the parser took what the reference refuses */
	if (strcmp(user, u->username) != 0 || strcmp(pass, u->password) != 0)
		abort();
}

static void
check_redis_url(const char *s)
{
	struct nt_redis_url u;
	char err[256] = "";

	if (nt_redis_url_parse(s, &u, err, sizeof(err)) < 0) {
		if (err[0] == '\0')
			abort();
		return;
	}
	check_cstr(u.username, sizeof(u.username), 0);
	check_cstr(u.password, sizeof(u.password), 0);
	if (u.db < 0 || u.db > 1000000)
		abort();
	if (u.is_unix) {
		check_cstr(u.path, sizeof(u.path), 1);
		if (u.path[0] != '/')
			abort();
	} else {
		check_cstr(u.host, sizeof(u.host), 1);
		if (u.port < 1 || u.port > 65535)
			abort();
		check_userinfo(s, &u);
	}
}

static void
check_hostport(const char *s)
{
	char host[256], tiny[4], err[256] = "";
	int port = 0;

	if (nt_hostport_parse(s, host, sizeof(host), &port, err,
	    sizeof(err)) == 0) {
		check_cstr(host, sizeof(host), 1);
		if (port < 1 || port > 65535)
			abort();
	} else if (err[0] == '\0')
		abort();
	/* A small host buffer must refuse, never overflow. */
	if (nt_hostport_parse(s, tiny, sizeof(tiny), &port, NULL, 0) == 0)
		check_cstr(tiny, sizeof(tiny), 1);
}

static void
check_numbers(const char *s)
{
	size_t sz;
	uint64_t ms, v;
	int64_t us;

	if (nt_size_parse(s, &sz) == 0 && (s[0] < '0' || s[0] > '9'))
		abort();
	if (nt_duration_ms_parse(s, &ms) == 0 && (s[0] < '0' || s[0] > '9'))
		abort();
	if (nt_u64_parse(s, 1, 65535, &v) == 0 && (v < 1 || v > 65535))
		abort();
	if (nt_timestamp_parse_us(s, &us) == 0 && strlen(s) < 19)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	check_redis_url(s);
	check_hostport(s);
	check_numbers(s);
	(void)nt_prefix_valid(s, NULL, 0);
	free(s);
	return 0;
}
