/*
 * nt_msg: the notification message, as it travels through Redis and
 * over WebSocket (see notifyd(7)):
 *
 *   {"id":"0193...","type":"info","content":"text","data":{},
 *    "timestamp":"2026-11-26T22:43:46.123Z","target_user":"alice",
 *    "channel":null}
 *
 * target_user is null for a broadcast; channel is null unless given.
 */
#ifndef NT_MSG_H
#define NT_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define NT_USER_MAX     128  /* bytes of a user id */
#define NT_CHANNEL_MAX  128  /* bytes of a channel name */
#define NT_TYPE_MAX     64   /* bytes of a notification type */
#define NT_TIMESTAMP_LEN 24  /* "2026-11-26T22:43:46.123Z" */

#define NT_DEFAULT_MAX_CONTENT (64 * 1024)
#define NT_DEFAULT_MAX_MESSAGE (128 * 1024)

struct nt_limits {
	size_t max_content;  /* bytes of "content" */
	size_t max_message;  /* bytes of the encoded message JSON */
};

/* Fills in the defaults above. */
void nt_limits_default(struct nt_limits *lim);

/*
 * Validators: 0 when valid, -1 with a reason in err. User ids and channel
 * names are 1..128 bytes of [A-Za-z0-9_.:@-]; channel names may also
 * contain '/'; types are 1..64 bytes of [A-Za-z0-9_.:-].
 */
int nt_user_valid(const char *s, char *err, size_t errlen);
int nt_channel_valid(const char *s, char *err, size_t errlen);
int nt_type_valid(const char *s, char *err, size_t errlen);

/* 0 when the n bytes at s are valid UTF-8 (no overlongs, surrogates). */
int nt_utf8_valid(const char *s, size_t n);

/*
 * A request to send one notification. All pointers are borrowed from the
 * caller (typically from a parsed JSON body) and are not kept.
 */
struct nt_msg_req {
	const char *target_user; /* NULL: broadcast */
	const char *type;        /* NULL: "info" */
	const char *content;     /* NULL: "" */
	const char *channel;     /* NULL: none */
	json_t     *data;        /* NULL: {}; must be an object */
};

/* Where a request comes from decides which keys it may carry. */
enum nt_req_kind {
	NT_REQ_SEND,      /* REST /api/notifications/send: "target_user" or "target_users" required */
	NT_REQ_BROADCAST, /* REST /api/notifications/broadcast: no target key at all */
	NT_REQ_LINE,      /* a notify-send --batch line: "target_user", or "broadcast": true */
};

/*
 * Check a parsed send request strictly and read it into req (pointers
 * borrowed from obj). Keys: target_user, target_users (NT_REQ_SEND only;
 * returned borrowed in *many, each element a valid user id, non-empty
 * array), notification_type (or its alias "type", not both), content
 * (required, a non-empty string), channel, data (object), broadcast
 * (NT_REQ_LINE only, must be true). null is the same as absent for channel
 * and data only. Unknown keys, wrong types, empty content, invalid user,
 * type or channel names -> -1, with the offending key's name in field
 * ("" when the request as a whole is wrong) and a sentence in err that
 * names it. A request that does not say whom it is for is an error, never
 * a broadcast. many may be NULL when kind is not NT_REQ_SEND.
 *
 * Keys are checked in the order the object holds them, so the first bad
 * one is reported. A key from the input is shown in field and err
 * escaped (control bytes as \u00XX, bytes that are not UTF-8 as \xXX)
 * and cut to 40 bytes plus "...", so both are safe to echo into a
 * terminal or a JSON answer; err and field are always valid UTF-8, also
 * when cut short by errlen or fieldlen (either buffer may be NULL).
 * Content length is not checked here: nt_msg_build does that against its
 * limits, and gives the default type "info".
 */
int nt_msg_req_parse(json_t *obj, enum nt_req_kind kind,
    struct nt_msg_req *req, json_t **many, char *field, size_t fieldlen,
    char *err, size_t errlen);

/*
 * Validate req against lim and build a new message object with a fresh
 * id and timestamp. Returns a new reference, or NULL with err set.
 */
json_t *nt_msg_build(const struct nt_msg_req *req,
    const struct nt_limits *lim, char *err, size_t errlen);

/*
 * Encode a message compactly (UTF-8 kept as is). Returns a malloc'd
 * NUL-terminated string the caller frees, or NULL with err set when it
 * is over lim->max_message (lim may be NULL: no limit).
 */
char *nt_msg_encode(const json_t *msg, const struct nt_limits *lim,
    size_t *len, char *err, size_t errlen);

/*
 * Parse and check a message read from Redis: an object whose "id" is a
 * string. Returns a new reference or NULL with err set.
 */
json_t *nt_msg_decode(const char *buf, size_t len, char *err, size_t errlen);

/* Accessors on a decoded message: borrowed strings, NULL when absent. */
const char *nt_msg_id(const json_t *msg);
const char *nt_msg_target_user(const json_t *msg);
const char *nt_msg_channel(const json_t *msg);

/* Now, UTC, millisecond precision: "2026-11-26T22:43:46.123Z". */
void nt_timestamp_now(char out[NT_TIMESTAMP_LEN + 1]);

/* ISO 8601 UTC (Z, optional fraction) -> microseconds since the epoch. */
int nt_timestamp_parse_us(const char *s, int64_t *us);

#endif
