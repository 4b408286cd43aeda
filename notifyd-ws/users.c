/*
 * The user table: an open hash of chains, grown by doubling; see users.h.
 * Chains average up to LOAD records: the buckets are a pointer per
 * LOAD users, and a short name compares fast.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "users.h"

#define LOAD 2

static struct {
	struct ntws_user **buckets;
	size_t             nbuckets, n;   /* nbuckets: a power of two */
} t;

static size_t
hash(const char *name)
{
	size_t h = 1469598103934665603ULL;   /* FNV-1a */

	for (; *name != '\0'; name++) {
		h ^= (unsigned char)*name;
		h *= 1099511628211ULL;
	}
	return h;
}

int
ntws_users_init(void)
{
	t.nbuckets = 1024;
	t.n = 0;
	t.buckets = calloc(t.nbuckets, sizeof(*t.buckets));
	return t.buckets != NULL ? 0 : -1;
}

void
ntws_users_free(void)
{
	struct ntws_user *u, *next;
	size_t i;

	for (i = 0; i < t.nbuckets; i++)
		for (u = t.buckets[i]; u != NULL; u = next) {
			next = u->hnext;
			free(u);
		}
	free(t.buckets);
	memset(&t, 0, sizeof(t));
}

struct ntws_user *
ntws_users_find(const char *name)
{
	struct ntws_user *u;

	if (t.nbuckets == 0)
		return NULL;
	for (u = t.buckets[hash(name) & (t.nbuckets - 1)]; u != NULL;
	    u = u->hnext)
		if (strcmp(u->name, name) == 0)
			return u;
	return NULL;
}

/* Twice the buckets; on failure the table stays as it was. */
static void
grow(void)
{
	size_t nb = t.nbuckets * 2, i, h;
	struct ntws_user **nt = calloc(nb, sizeof(*nt)), *u, *next;

	if (nt == NULL)
		return;
	for (i = 0; i < t.nbuckets; i++)
		for (u = t.buckets[i]; u != NULL; u = next) {
			next = u->hnext;
			h = hash(u->name) & (nb - 1);
			u->hnext = nt[h];
			nt[h] = u;
		}
	free(t.buckets);
	t.buckets = nt;
	t.nbuckets = nb;
}

struct ntws_user *
ntws_users_get(const char *name, int *made)
{
	struct ntws_user *u = ntws_users_find(name);
	size_t n, h;

	*made = 0;
	if (u != NULL || t.nbuckets == 0)
		return u;
	n = strlen(name);
	if ((u = calloc(1, offsetof(struct ntws_user, name) + n + 1)) == NULL)
		return NULL;
	memcpy(u->name, name, n + 1);
	if (t.n + 1 > t.nbuckets * LOAD)
		grow();
	h = hash(name) & (t.nbuckets - 1);
	u->hnext = t.buckets[h];
	t.buckets[h] = u;
	t.n++;
	*made = 1;
	return u;
}

void
ntws_users_remove(struct ntws_user *u)
{
	struct ntws_user **pp = &t.buckets[hash(u->name) & (t.nbuckets - 1)];

	for (; *pp != NULL; pp = &(*pp)->hnext)
		if (*pp == u) {
			*pp = u->hnext;
			t.n--;
			break;
		}
	free(u);
}

size_t
ntws_users_count(void)
{
	return t.n;
}

void
ntws_users_each(void (*fn)(struct ntws_user *u, void *arg), void *arg)
{
	struct ntws_user *u, *next;
	size_t i;

	for (i = 0; i < t.nbuckets; i++)
		for (u = t.buckets[i]; u != NULL; u = next) {
			next = u->hnext;
			fn(u, arg);
		}
}
