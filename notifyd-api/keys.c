/*
 * The API keys file and the rate spec, parsed without side effects so
 * that the unit tests reach every rule; auth.c owns what is done with
 * them (constant-time matching, buckets, reloads).
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "nt_config.h"

static int
name_valid(const char *s, size_t n)
{
	if (n == 0 || n > API_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) &&
		    (s[i] == '\0' || !strchr("_.:@-", s[i])))
			return 0;
	return 1;
}

static int
key_valid(const char *s, size_t n)
{
	if (n < API_KEY_MIN || n > API_KEY_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isgraph((unsigned char)s[i]))
			return 0;
	return 1;
}

/* Parse one line into k; 0 ok, 1 blank/comment, -1 bad. */
static int
parse_line(char *line, struct api_keypair *k)
{
	char *p = line, *name, *key;
	size_t nlen, klen;

	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	if (*p == '\0' || *p == '#')
		return 1;
	name = p;
	nlen = strcspn(p, " \t");
	p += nlen;
	while (*p == ' ' || *p == '\t')
		p++;
	key = p;
	klen = strcspn(p, " \t\r");
	p += klen;
	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	if (*p != '\0' && *p != '#')
		return -1;
	if (!name_valid(name, nlen) || !key_valid(key, klen))
		return -1;
	memset(k, 0, sizeof(*k));
	memcpy(k->name, name, nlen);
	memcpy(k->key, key, klen);
	k->keylen = klen;
	return 0;
}

static int
clashes(const struct api_keypair *keys, size_t n,
    const struct api_keypair *k)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].name, k->name) == 0 ||
		    (keys[i].keylen == k->keylen &&
		    memcmp(keys[i].key, k->key, k->keylen) == 0))
			return 1;
	return 0;
}

int
api_keys_parse(char *text, const char *path, struct api_keypair **out,
    size_t *nout, char *err, size_t errlen)
{
	struct api_keypair *keys = NULL, k;
	size_t n = 0, cap = 0, lineno = 0;
	char *line, *next;
	int r;

	/* strtok_r would merge empty lines and so miscount: split by hand. */
	for (line = text; line != NULL; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		lineno++;
		if ((r = parse_line(line, &k)) == 1)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "%s:%zu: expected NAME KEY "
			    "(name [A-Za-z0-9_.:@-]{1,%d}, key %d..%d printable "
			    "bytes)", path, lineno, API_NAME_MAX, API_KEY_MIN,
			    API_KEY_MAX);
			goto fail;
		}
		if (clashes(keys, n, &k)) {
			snprintf(err, errlen, "%s:%zu: duplicate name or key",
			    path, lineno);
			goto fail;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct api_keypair *nk = calloc(ncap, sizeof(*nk));
			if (nk == NULL) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			/* Not realloc: the old copy is wiped, not left behind. */
			if (n > 0)
				memcpy(nk, keys, n * sizeof(*nk));
			api_keypairs_free(keys, cap);
			keys = nk;
			cap = ncap;
		}
		keys[n++] = k;
	}
	explicit_bzero(&k, sizeof(k));
	if (n == 0) {
		snprintf(err, errlen, "%s: no keys", path);
		goto fail;
	}
	*out = keys;
	*nout = n;
	return 0;
fail:
	explicit_bzero(&k, sizeof(k));
	api_keypairs_free(keys, cap);
	return -1;
}

int
api_keys_load(const char *path, struct api_keypair **out, size_t *n,
    char *err, size_t errlen)
{
	char ferr[256];
	size_t len;
	char *buf = nt_file_read(path, API_KEYS_FILE_MAX, &len, ferr,
	    sizeof(ferr));
	int rc;

	if (buf == NULL) {
		snprintf(err, errlen, "%s", ferr);
		return -1;
	}
	/* The parser reads a C string: what follows a NUL would be lost. */
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen, "%s: a NUL byte at offset %zu: not a "
		    "text file", path, (size_t)((char *)memchr(buf, '\0',
		    len) - buf));
		rc = -1;
	} else
		rc = api_keys_parse(buf, path, out, n, err, errlen);
	explicit_bzero(buf, len);
	free(buf);
	return rc;
}

void
api_keypairs_free(struct api_keypair *pairs, size_t n)
{
	if (pairs != NULL)
		explicit_bzero(pairs, n * sizeof(*pairs));
	free(pairs);
}

int
api_rate_parse(const char *s, double *per_s)
{
	char *end;
	double v;

	/* Plain decimals only: strtod alone would also take "0x10", "1e3"
	 * and " 5", which no one means as a rate. */
	if (s == NULL || !isdigit((unsigned char)s[0]))
		return -1;
	v = strtod(s, &end);
	if (end != s + strspn(s, "0123456789.") || !isfinite(v) || v > 1e9)
		return -1;
	if (*end == '\0' || strcmp(end, "/s") == 0)
		*per_s = v;
	else if (strcmp(end, "/m") == 0)
		*per_s = v / 60.0;
	else
		return -1;
	return 0;
}
