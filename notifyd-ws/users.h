/*
 * users: the table of the users this instance serves, by user id. A
 * record holds what this instance knows of the user's log (notifyd(7))
 * and what it has still to tell Redis about it; deliver.c owns those
 * fields and the list of sessions, this module only finds, adds, removes
 * and walks records. Nothing here talks to Redis or to sockets.
 */
#ifndef NTWS_USERS_H
#define NTWS_USERS_H

#include <stddef.h>
#include <stdint.h>

/* A log epoch (notifyd(7): 16 decimal digits) as a number, and its
 * two states that are not epochs. */
#define NTWS_EPOCH_UNKNOWN 0            /* no read told it yet */
#define NTWS_EPOCH_NONE    UINT64_MAX   /* "0": it had no log then */

struct ntws_sess;             /* deliver.c */
struct ntws_marks;            /* deliver.c */

/*
 * One per user served, so kept small: what only matters while marks
 * wait for Redis is in marks, allocated on the first one.
 */
struct ntws_user {
	struct ntws_user *hnext;          /* hash chain (users.c) */
	struct ntws_sess *sessions;       /* its connections here */

	/*
	 * The log. Every position below is of epoch; epoch_gen counts
	 * changes, so that a position taken under an older epoch is known
	 * as such.
	 */
	uint64_t          epoch;
	int64_t           live_last;      /* position of the last live one */
	int64_t           top_seq;        /* highest position known... */
	uint64_t          top_ms;         /* ...when its id was made; 0: ? */
	struct ntws_marks *marks;         /* read marks to write, or NULL */
	uint32_t          nsess;
	uint32_t          epoch_gen;
	uint32_t          live_gen;       /* live messages seen */
	uint32_t          suspect_gen;    /* times the log looked replaced */
	char              name[];
};

/* Set up an empty table. 0, or -1 when out of memory. */
int ntws_users_init(void);

/* Free the table and every record still in it. */
void ntws_users_free(void);

/* The record of name, or NULL. Borrowed: valid until removed. */
struct ntws_user *ntws_users_find(const char *name);

/*
 * The record of name, made (zeroed, name copied) when absent; *made says
 * which. NULL when out of memory.
 */
struct ntws_user *ntws_users_get(const char *name, int *made);

/* Take u out of the table and free it (u must be in the table). */
void ntws_users_remove(struct ntws_user *u);

/* Number of records. */
size_t ntws_users_count(void);

/*
 * Call fn(u, arg) for every record. fn must not add or remove records.
 */
void ntws_users_each(void (*fn)(struct ntws_user *u, void *arg), void *arg);

#endif
