/*
 * Who may call: API keys ("NAME KEY" lines) and, when configured, JWTs
 * that carry a scope; and a token bucket per caller.
 *
 * Keys are compared in constant time with respect to the presented
 * token, and every key is compared (no early exit on a match), so the
 * response time tells an attacker neither how much of a key was right
 * nor which key matched.
 *
 * JWT signatures, algorithm, expiry, issuer and audience are checked by
 * lib/nt_jwt; the scope claim is then read from the verified claims.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "api.h"
#include "keys.h"
#include "nt_config.h"
#include "nt_jwt.h"

#define ANONYMOUS "anonymous"
#define JWT_SLOTS 1024          /* rate buckets of JWT subjects */

struct bucket {
	double   tokens;
	uint64_t refill_us;     /* when tokens was last brought up to date */
};

struct api_key {
	struct api_keypair id;
	struct bucket bucket;
};

/*
 * A direct-mapped cache of buckets by JWT subject: bounded memory
 * whatever the number of subjects; two subjects that share a slot reset
 * each other's bucket, which can only ever let a caller in early.
 */
struct jwt_slot {
	char   sub[NT_USER_MAX + 1];
	struct bucket bucket;
};

struct api_auth {
	pthread_mutex_t lock;   /* keys and buckets */
	char   *path;           /* NULL: no key file */
	double  rate_per_s;
	double  burst;
	struct api_key *keys;
	size_t  nkeys;
	struct bucket anon;     /* the shared bucket without auth */
	int     open;           /* --insecure-no-auth */
	pthread_rwlock_t jwt_lock;
	struct nt_jwt_verifier *jwt;   /* NULL: JWTs not accepted */
	char   *scope;
	struct jwt_slot *slots;
};

static void
bucket_fill(struct api_auth *a, struct bucket *b)
{
	b->tokens = a->burst;
	b->refill_us = api_now_us();
}

/* Keys with fresh buckets, from the file at path. */
static int
load_keys(struct api_auth *a, const char *path, struct api_key **out,
    size_t *nout, char *err, size_t errlen)
{
	struct api_keypair *pairs;
	struct api_key *keys;
	size_t n;

	if (api_keys_load(path, &pairs, &n, err, errlen) < 0)
		return -1;
	if ((keys = calloc(n, sizeof(*keys))) == NULL) {
		api_keypairs_free(pairs, n);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		keys[i].id = pairs[i];
		bucket_fill(a, &keys[i].bucket);
	}
	api_keypairs_free(pairs, n);
	*out = keys;
	*nout = n;
	return 0;
}

static void
free_keys(struct api_key *keys, size_t n)
{
	if (keys != NULL)
		explicit_bzero(keys, n * sizeof(*keys));
	free(keys);
}

int
api_auth_new(const struct api_auth_config *cfg, struct api_auth **out,
    char *err, size_t errlen)
{
	struct api_auth *a = calloc(1, sizeof(*a));

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_rwlock_init(&a->jwt_lock, NULL);
	a->rate_per_s = cfg->rate_per_s;
	a->burst = cfg->burst > 0 ? cfg->burst :
	    (cfg->rate_per_s > 1 ? cfg->rate_per_s : 1);
	a->open = cfg->open;
	bucket_fill(a, &a->anon);
	if (cfg->keys_file != NULL) {
		if ((a->path = strdup(cfg->keys_file)) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		if (load_keys(a, a->path, &a->keys, &a->nkeys, err,
		    errlen) < 0)
			goto fail;
	}
	if (cfg->jwt != NULL) {
		char jerr[256];
		a->scope = strdup(cfg->jwt_scope);
		a->slots = calloc(JWT_SLOTS, sizeof(*a->slots));
		if (a->scope == NULL || a->slots == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		if (nt_jwt_verifier_new(cfg->jwt, &a->jwt, jerr,
		    sizeof(jerr)) < 0) {
			snprintf(err, errlen, "jwt: %s", jerr);
			goto fail;
		}
	}
	*out = a;
	return 0;
fail:
	api_auth_free(a);
	return -1;
}

int
api_auth_reload(struct api_auth *a, size_t *nkeys, char *err, size_t errlen)
{
	struct api_key *keys = NULL, *old;
	size_t n = 0, nold;
	int rc;

	if (a->jwt != NULL) {
		pthread_rwlock_wrlock(&a->jwt_lock);
		rc = nt_jwt_verifier_reload(a->jwt, err, errlen);
		pthread_rwlock_unlock(&a->jwt_lock);
		if (rc < 0)
			return -1;
	}
	if (a->path == NULL) {
		*nkeys = 0;
		return 0;
	}
	if (load_keys(a, a->path, &keys, &n, err, errlen) < 0)
		return -1;
	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < n; i++) {
		/* A reload must not hand a limited caller a fresh burst. */
		for (size_t j = 0; j < a->nkeys; j++) {
			if (strcmp(keys[i].id.name, a->keys[j].id.name) == 0) {
				keys[i].bucket = a->keys[j].bucket;
				break;
			}
		}
	}
	old = a->keys;
	nold = a->nkeys;
	a->keys = keys;
	a->nkeys = n;
	pthread_mutex_unlock(&a->lock);
	free_keys(old, nold);
	*nkeys = n;
	return 0;
}

size_t
api_auth_count(const struct api_auth *a)
{
	return a->nkeys;
}

/* 0 when equal. Time depends on the stored key's length only. */
static unsigned
ct_compare(const struct api_key *k, const char *tok, size_t toklen)
{
	unsigned diff = (unsigned)(k->id.keylen != toklen);

	for (size_t i = 0; i < k->id.keylen; i++)
		diff |= (unsigned char)(k->id.key[i] ^ tok[i % toklen]);
	return diff;
}

/* Take n tokens or none; 0 ok, else seconds until n are there. */
static unsigned
bucket_take(struct api_auth *a, struct bucket *k, double n)
{
	uint64_t now = api_now_us();
	double add, wait;

	if (a->rate_per_s <= 0)
		return 0;
	add = (double)(now - k->refill_us) / 1e6 * a->rate_per_s;
	k->tokens = fmin(a->burst, k->tokens + add);
	k->refill_us = now;
	if (k->tokens >= n) {
		k->tokens -= n;
		return 0;
	}
	wait = ceil((n - k->tokens) / a->rate_per_s);
	return wait < 1 ? 1 : wait > 1e9 ? 1000000000u : (unsigned)wait;
}

static const char *
bearer_token(const char *header, size_t *len)
{
	const char *p;

	if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
		return NULL;
	p = header + 7;
	while (*p == ' ')
		p++;
	*len = strcspn(p, " \t\r\n");
	if (*len == 0 || p[*len] != '\0')
		return NULL;
	return p;
}

/* The key that matches tok, or NULL; every key is compared. */
static struct api_key *
key_match(struct api_auth *a, const char *tok, size_t toklen)
{
	struct api_key *match = NULL;

	if (toklen > API_KEY_MAX)
		return NULL;
	for (size_t i = 0; i < a->nkeys; i++) {
		unsigned d = ct_compare(&a->keys[i], tok, toklen);
		/* Branch-free select: keeps the loop's timing flat. */
		uintptr_t m = (uintptr_t)0 - (uintptr_t)(d == 0);
		match = (struct api_key *)(((uintptr_t)&a->keys[i] & m) |
		    ((uintptr_t)match & ~m));
	}
	return match;
}

static int
scope_has(const char *list, const char *want)
{
	size_t wlen = strlen(want);

	while (*list != '\0') {
		size_t n = strcspn(list, " ");
		if (n == wlen && strncmp(list, want, n) == 0)
			return 1;
		list += n;
		list += strspn(list, " ");
	}
	return 0;
}

/* "scope" as a space-separated string (RFC 8693) or an array, or "scp". */
static int
jwt_has_scope(json_t *claims, const char *want)
{
	json_t *v;
	int ok = 0;

	v = json_object_get(claims, "scope");
	if (v == NULL)
		v = json_object_get(claims, "scp");
	if (json_is_string(v)) {
		ok = scope_has(json_string_value(v), want);
	} else if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e)
			if (json_is_string(e) && strcmp(json_string_value(e),
			    want) == 0)
				ok = 1;
	}
	return ok;
}

static struct bucket *
jwt_bucket(struct api_auth *a, const char *sub)
{
	uint32_t h = 2166136261u;   /* FNV-1a */
	struct jwt_slot *slot;

	for (const char *p = sub; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	slot = &a->slots[h % JWT_SLOTS];
	if (strcmp(slot->sub, sub) != 0) {
		snprintf(slot->sub, sizeof(slot->sub), "%s", sub);
		bucket_fill(a, &slot->bucket);
	}
	return &slot->bucket;
}

/* "jwt:SUBJECT", cut to API_NAME_MAX: only for logs. */
static void
name_jwt(char *name, const char *sub)
{
	size_t n = strlen(sub);

	if (n > API_NAME_MAX - 4)
		n = API_NAME_MAX - 4;
	memcpy(name, "jwt:", 4);
	memcpy(name + 4, sub, n);
	name[4 + n] = '\0';
}

/* Verify a JWT and its scope; sub gets its subject. */
static enum api_auth_result
check_jwt(struct api_auth *a, const char *tok, char *sub, char *name)
{
	char err[256];
	json_t *claims = NULL;
	int rc, ok;

	pthread_rwlock_rdlock(&a->jwt_lock);
	rc = nt_jwt_verify_claims(a->jwt, tok, time(NULL), sub, &claims, err,
	    sizeof(err));
	pthread_rwlock_unlock(&a->jwt_lock);
	if (rc < 0)
		return API_AUTH_INVALID;
	name_jwt(name, sub);
	ok = jwt_has_scope(claims, a->scope);
	json_decref(claims);
	return ok ? API_AUTH_OK : API_AUTH_FORBIDDEN;
}

static int
looks_like_jwt(const char *tok, size_t len)
{
	size_t dots = 0;

	for (size_t i = 0; i < len; i++)
		dots += tok[i] == '.';
	return dots == 2;
}

/* The key named name, or NULL. Called with a->lock held. */
static struct api_key *
key_by_name(struct api_auth *a, const char *name)
{
	for (size_t i = 0; i < a->nkeys; i++)
		if (strcmp(a->keys[i].id.name, name) == 0)
			return &a->keys[i];
	return NULL;
}

enum api_auth_result
api_auth_check(struct api_auth *a, const char *header,
    unsigned *retry_after_s, char *name, struct api_caller *who)
{
	struct bucket *b = NULL;
	struct api_key *k;
	char sub[NT_USER_MAX + 1];
	const char *tok;
	size_t toklen = 0;
	enum api_auth_result res = API_AUTH_OK;

	*retry_after_s = 0;
	name[0] = '\0';
	memset(who, 0, sizeof(*who));
	if (a->open) {
		snprintf(name, API_NAME_MAX + 1, "%s", ANONYMOUS);
		who->kind = API_CALLER_ANON;
		pthread_mutex_lock(&a->lock);
		b = &a->anon;
	} else if ((tok = bearer_token(header, &toklen)) == NULL) {
		return API_AUTH_MISSING;
	} else if (a->jwt != NULL && looks_like_jwt(tok, toklen)) {
		/* Verify outside the bucket lock: RSA is slow. */
		if ((res = check_jwt(a, tok, sub, name)) != API_AUTH_OK)
			return res;
		who->kind = API_CALLER_JWT;
		snprintf(who->id, sizeof(who->id), "%s", sub);
		pthread_mutex_lock(&a->lock);
		b = jwt_bucket(a, sub);
	} else {
		pthread_mutex_lock(&a->lock);
		if ((k = key_match(a, tok, toklen)) != NULL) {
			memcpy(name, k->id.name, strlen(k->id.name) + 1);
			who->kind = API_CALLER_KEY;
			memcpy(who->id, k->id.name, strlen(k->id.name) + 1);
			b = &k->bucket;
		} else {
			res = API_AUTH_INVALID;
		}
	}
	if (b != NULL && (*retry_after_s = bucket_take(a, b, 1.0)) > 0)
		res = API_AUTH_LIMITED;
	pthread_mutex_unlock(&a->lock);
	return res;
}

enum api_auth_result
api_auth_charge(struct api_auth *a, const struct api_caller *who, double n,
    unsigned *retry_after_s)
{
	struct bucket *b = NULL;
	struct api_key *k;
	enum api_auth_result res = API_AUTH_OK;

	*retry_after_s = 0;
	if (a->rate_per_s <= 0 || n <= 0)
		return API_AUTH_OK;
	pthread_mutex_lock(&a->lock);
	switch (who->kind) {
	case API_CALLER_ANON:
		b = &a->anon;
		break;
	case API_CALLER_JWT:
		b = jwt_bucket(a, who->id);
		break;
	case API_CALLER_KEY:
		/* By name: a reload may have moved or removed the key. */
		if ((k = key_by_name(a, who->id)) != NULL)
			b = &k->bucket;
		else
			res = API_AUTH_INVALID;
		break;
	case API_CALLER_NONE:
		res = API_AUTH_INVALID;
		break;
	}
	if (b != NULL && (*retry_after_s = bucket_take(a, b, n)) > 0)
		res = API_AUTH_LIMITED;
	pthread_mutex_unlock(&a->lock);
	return res;
}

double
api_auth_burst(const struct api_auth *a)
{
	return a->rate_per_s > 0 ? a->burst : 0;
}

void
api_auth_free(struct api_auth *a)
{
	if (a == NULL)
		return;
	free_keys(a->keys, a->nkeys);
	free(a->path);
	nt_jwt_verifier_free(a->jwt);
	free(a->scope);
	free(a->slots);
	pthread_rwlock_destroy(&a->jwt_lock);
	pthread_mutex_destroy(&a->lock);
	free(a);
}
