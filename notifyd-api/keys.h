/*
 * keys: the pure parsers behind notifyd-api's credentials and rate
 * limit, the API keys file ("NAME KEY" lines) and the --rate-limit
 * spec. No HTTP, no Redis, no logging: what they read is checked here
 * and tests/unit/test_api_keys.c drives them directly.
 */
#ifndef NOTIFYD_API_KEYS_H
#define NOTIFYD_API_KEYS_H

#include <stddef.h>

#define API_NAME_MAX        64   /* bytes of a key's NAME */
#define API_KEY_MIN         16   /* shorter keys are refused: guessable */
#define API_KEY_MAX         256
#define API_KEYS_FILE_MAX   (1024 * 1024)

/* One line of the keys file. */
struct api_keypair {
	char   name[API_NAME_MAX + 1];
	char   key[API_KEY_MAX + 1];
	size_t keylen;
};

/*
 * Parse the text of a keys file, modified in place (lines are cut at
 * their newline); path only names the file in err. Blank lines and
 * lines starting with '#' are skipped; names are 1..API_NAME_MAX bytes
 * of [A-Za-z0-9_.:@-], keys API_KEY_MIN..API_KEY_MAX printable bytes,
 * and both must be distinct. At least one key is required.
 * On 0, *out is a malloc'd array of *n pairs that the caller frees with
 * api_keypairs_free (which wipes the keys). -1 with err naming the line;
 * nothing to free then.
 */
int api_keys_parse(char *text, const char *path, struct api_keypair **out,
    size_t *n, char *err, size_t errlen);

/* Read path (at most API_KEYS_FILE_MAX bytes) and parse it as above;
 * the file's bytes are wiped from memory before return. */
int api_keys_load(const char *path, struct api_keypair **out, size_t *n,
    char *err, size_t errlen);

/* Wipe and free n pairs; NULL is fine. */
void api_keypairs_free(struct api_keypair *pairs, size_t n);

/*
 * A rate: "N" or "N/s" (per second) or "N/m" (per minute), N a decimal
 * from 0 to 1e9. 0 with *per_s set, or -1 (and *per_s untouched).
 */
int api_rate_parse(const char *s, double *per_s);

#endif
