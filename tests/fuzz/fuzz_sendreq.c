/*
 * fuzz_sendreq: the strict send request parser, nt_msg_req_parse, on
 * arbitrary bytes. The input is parsed as JSON (duplicates refused, as
 * every caller does) and checked as each kind of request; it is also
 * used, raw, as the one key of an object, since keys are what the
 * parser's errors echo. Each verdict is checked, not just computed:
 *
 *  - accepted: content is a non-empty valid UTF-8 string, every name is
 *    valid, every key is one the kind takes, and the target rule of the
 *    kind holds (a send names one user or a non-empty list, a broadcast
 *    names none, a batch line names one user or says "broadcast": true);
 *  - refused: err is a sentence, field is "" or appears quoted in err,
 *    nothing is handed out in req or many;
 *  - always: field and err end inside their buffers (the bytes past them
 *    are untouched), are valid UTF-8 without control characters, and a
 *    small buffer holds a prefix of what a large one holds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nt_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CANARY     0xA5
#define CANARY_LEN 8
#define FIELD_BIG  64
#define ERR_BIG    512
#define FIELD_TINY 5
#define ERR_TINY   13

static const char *const kind_keys[][8] = {
	[NT_REQ_SEND] = { "target_user", "target_users", "notification_type",
	    "type", "content", "channel", "data", NULL },
	[NT_REQ_BROADCAST] = { "notification_type", "type", "content",
	    "channel", "data", NULL },
	[NT_REQ_LINE] = { "target_user", "notification_type", "type",
	    "content", "channel", "data", "broadcast", NULL },
};

/* One call's outputs, in buffers with canaries behind them. */
struct outcome {
	int               rc;
	struct nt_msg_req req;
	json_t           *many;
	char              field[FIELD_BIG + CANARY_LEN];
	char              err[ERR_BIG + CANARY_LEN];
};

static int
key_taken(enum nt_req_kind kind, const char *key)
{
	for (const char *const *k = kind_keys[kind]; *k; k++)
		if (strcmp(*k, key) == 0)
			return 1;
	return 0;
}

/* s (in a buffer of len bytes, canaries after) is a safe string. */
static void
check_text(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n;

	for (size_t i = 0; i < CANARY_LEN; i++)
		if (u[len + i] != CANARY)
			abort();
	if (memchr(s, '\0', len) == NULL)
		abort();
	n = strlen(s);
	if (nt_utf8_valid(s, n) < 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (u[i] < 0x20 || u[i] == 0x7f)
			abort();
		/* U+0080..U+009F, the C1 controls. */
		if (u[i] == 0xc2 && i + 1 < n && u[i + 1] >= 0x80 &&
		    u[i + 1] <= 0x9f)
			abort();
	}
}

static void
run_parse(json_t *obj, enum nt_req_kind kind, struct outcome *o,
    size_t fieldlen, size_t errlen)
{
	memset(o, CANARY, sizeof(*o));
	o->rc = nt_msg_req_parse(obj, kind, &o->req,
	    kind == NT_REQ_SEND ? &o->many : NULL, o->field, fieldlen,
	    o->err, errlen);
	if (o->rc != 0 && o->rc != -1)
		abort();
	check_text(o->field, fieldlen);
	check_text(o->err, errlen);
	if (kind != NT_REQ_SEND)
		o->many = NULL;
}

static void
check_refused(const struct outcome *o)
{
	char quoted[sizeof(o->field) + 3];
	const struct nt_msg_req *r = &o->req;

	if (o->err[0] == '\0')
		abort();
	if (r->target_user || r->type || r->content || r->channel ||
	    r->data || o->many)
		abort();
	if (o->field[0] != '\0') {
		snprintf(quoted, sizeof(quoted), "\"%s\"", o->field);
		if (strstr(o->err, quoted) == NULL)
			abort();
	}
}

static void
check_accepted(json_t *obj, enum nt_req_kind kind, const struct outcome *o)
{
	const struct nt_msg_req *r = &o->req;
	const char *key;
	json_t *v, *el;
	size_t i;

	if (o->field[0] != '\0' || o->err[0] != '\0')
		abort();
	if (r->content == NULL || r->content[0] == '\0' ||
	    nt_utf8_valid(r->content, strlen(r->content)) < 0 ||
	    r->content != json_string_value(json_object_get(obj, "content")))
		abort();
	if ((r->type && nt_type_valid(r->type, NULL, 0) < 0) ||
	    (r->channel && nt_channel_valid(r->channel, NULL, 0) < 0) ||
	    (r->target_user && nt_user_valid(r->target_user, NULL, 0) < 0) ||
	    (r->data && !json_is_object(r->data)))
		abort();
	json_object_foreach(obj, key, v)
		if (!key_taken(kind, key))
			abort();
	switch (kind) {
	case NT_REQ_SEND:
		if ((r->target_user != NULL) == (o->many != NULL))
			abort();
		if (o->many != NULL) {
			if (!json_is_array(o->many) ||
			    json_array_size(o->many) == 0)
				abort();
			json_array_foreach(o->many, i, el)
				if (nt_user_valid(json_string_value(el), NULL,
				    0) < 0)
					abort();
		}
		break;
	case NT_REQ_BROADCAST:
		if (r->target_user != NULL)
			abort();
		break;
	case NT_REQ_LINE:
		if ((r->target_user != NULL) ==
		    json_is_true(json_object_get(obj, "broadcast")))
			abort();
		break;
	}
}

/* A short buffer holds the start of what a long one holds. */
static void
check_prefix(const char *small, const char *big)
{
	if (strncmp(small, big, strlen(small)) != 0)
		abort();
}

static void
check_kind(json_t *obj, enum nt_req_kind kind)
{
	struct outcome big, tiny;

	run_parse(obj, kind, &big, FIELD_BIG, ERR_BIG);
	run_parse(obj, kind, &tiny, FIELD_TINY, ERR_TINY);
	if (big.rc != tiny.rc || memcmp(&big.req, &tiny.req,
	    sizeof(big.req)) != 0 || big.many != tiny.many)
		abort();
	check_prefix(tiny.field, big.field);
	check_prefix(tiny.err, big.err);
	if (big.rc == 0)
		check_accepted(obj, kind, &big);
	else
		check_refused(&big);
}

/* The input, up to its first NUL, as the only key of an object. */
static void
check_raw_key(const uint8_t *data, size_t size)
{
	struct outcome o;
	char *key = malloc(size + 1);
	json_t *obj = json_object();

	if (key == NULL || obj == NULL)
		abort();
	memcpy(key, data, size);
	key[size] = '\0';
	/* 1 is a wrong value for every key: each kind must refuse it. */
	if (json_object_set_new_nocheck(obj, key, json_integer(1)) != 0)
		abort();
	for (int kind = NT_REQ_SEND; kind <= NT_REQ_LINE; kind++) {
		run_parse(obj, kind, &o, FIELD_BIG, ERR_BIG);
		if (o.rc != -1)
			abort();
		check_refused(&o);
		/* A key is shown in at most 40 bytes and "...". */
		if (strlen(o.field) > 43 || o.field[0] == '\0')
			abort();
	}
	json_decref(obj);
	free(key);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *obj;

	obj = json_loadb((const char *)data, size,
	    JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	if (obj != NULL) {
		check_kind(obj, NT_REQ_SEND);
		check_kind(obj, NT_REQ_BROADCAST);
		check_kind(obj, NT_REQ_LINE);
		json_decref(obj);
	}
	if (size > 0 && data[0] != '\0')
		check_raw_key(data, size);
	return 0;
}
