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

#define NTWS_EPOCH_MAX 24     /* bytes of a log epoch (16 digits), NUL */

struct ntws_sess;             /* deliver.c */

struct ntws_user {
	struct ntws_user *hnext;          /* hash chain (users.c) */
	struct ntws_sess *sessions;       /* its connections here */
	uint32_t          nsess;

	/*
	 * The log. epoch "" until a read tells, "0" when it had no log then.
	 * Every position below is of that epoch; epoch_gen counts changes,
	 * so that a position taken under an older epoch is known as such.
	 */
	char              epoch[NTWS_EPOCH_MAX];
	uint32_t          epoch_gen;
	uint32_t          live_gen;       /* live messages seen */
	int64_t           live_last;      /* position of the last one */
	uint32_t          suspect_gen;    /* times the log looked replaced */
	int64_t           top_seq;        /* highest position known... */
	uint64_t          top_ms;         /* ...when its id was made; 0: ? */

	/* Read marks not yet written (bounded: see deliver.c). */
	int64_t           mark_pos;       /* highest position read */
	int64_t           mark_sent;      /* highest one Redis has taken */
	char            **acks;           /* ring of acknowledged ids */
	uint16_t          ack_head, nacks;
	uint16_t          marks_inflight; /* mark commands unanswered */
	uint8_t           dirty;          /* in the list of marks to write */
	uint8_t           probing;        /* reading the epoch for a mark */
	struct ntws_user *dirty_next, *dirty_prev;
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
