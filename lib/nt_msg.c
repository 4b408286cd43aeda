#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "nt_msg.h"
#include "nt_uuid.h"

#define SET_ERR(...) do { if (err) snprintf(err, errlen, __VA_ARGS__); } while (0)

void
nt_limits_default(struct nt_limits *lim)
{
	lim->max_content = NT_DEFAULT_MAX_CONTENT;
	lim->max_message = NT_DEFAULT_MAX_MESSAGE;
}

static int
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

/* Shared shape of every name: 1..max bytes of alnum plus extra. */
static int
name_valid(const char *what, const char *s, size_t max, const char *extra,
    char *err, size_t errlen)
{
	size_t n;

	if (s == NULL || *s == '\0') {
		SET_ERR("%s is empty", what);
		return -1;
	}
	n = strlen(s);
	if (n > max) {
		SET_ERR("%s is longer than %zu bytes", what, max);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (!is_alnum(s[i]) && strchr(extra, s[i]) == NULL) {
			SET_ERR("%s may only contain letters, digits and %s", what, extra);
			return -1;
		}
	}
	return 0;
}

int
nt_user_valid(const char *s, char *err, size_t errlen)
{
	return name_valid("user id", s, NT_USER_MAX, "_.:@-", err, errlen);
}

int
nt_channel_valid(const char *s, char *err, size_t errlen)
{
	return name_valid("channel", s, NT_CHANNEL_MAX, "_.:@-/", err, errlen);
}

int
nt_type_valid(const char *s, char *err, size_t errlen)
{
	return name_valid("type", s, NT_TYPE_MAX, "_.:-", err, errlen);
}

int
nt_utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t len;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			len = 2;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return -1;
		}
		if (i + len > n)
			return -1;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return -1;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return -1;
		i += len;
	}
	return 0;
}

/*
 * The strict request parser. Everything a key or a sentence shows of the
 * input goes through key_shown(), so that err and field can be echoed
 * into a terminal or a JSON answer as they are.
 */

#define KEY_SHOWN_MAX  40  /* bytes of a shown key, before "..." */
#define KEY_SHOWN_SIZE (KEY_SHOWN_MAX + 4)
#define KEY_CMP_MAX    24  /* longer keys are never a near miss */
#define KIND(k)        (1u << (k))
#define ALL_KINDS      (KIND(NT_REQ_SEND) | KIND(NT_REQ_BROADCAST) | \
                        KIND(NT_REQ_LINE))

enum req_key {
	K_TARGET_USER, K_TARGET_USERS, K_NOTIFICATION_TYPE, K_TYPE,
	K_CONTENT, K_CHANNEL, K_DATA, K_BROADCAST, K_COUNT
};

/* Every key a request may carry, and the kinds that accept it. */
static const struct {
	const char *name;
	unsigned    kinds;
} req_keys[K_COUNT] = {
	[K_TARGET_USER]       = { "target_user", KIND(NT_REQ_SEND) | KIND(NT_REQ_LINE) },
	[K_TARGET_USERS]      = { "target_users", KIND(NT_REQ_SEND) },
	[K_NOTIFICATION_TYPE] = { "notification_type", ALL_KINDS },
	[K_TYPE]              = { "type", ALL_KINDS },
	[K_CONTENT]           = { "content", ALL_KINDS },
	[K_CHANNEL]           = { "channel", ALL_KINDS },
	[K_DATA]              = { "data", ALL_KINDS },
	[K_BROADCAST]         = { "broadcast", KIND(NT_REQ_LINE) },
};

/* Why a known key is refused by a kind: what the kind sends to. */
static const char *const kind_goes_to[] = {
	[NT_REQ_SEND]      = "a send request (it goes to \"target_user\" or "
	                     "\"target_users\")",
	[NT_REQ_BROADCAST] = "a broadcast request (it goes to everyone)",
	[NT_REQ_LINE]      = "a request line (give one \"target_user\" per "
	                     "line)",
};

struct req_parse {
	enum nt_req_kind   kind;
	struct nt_msg_req *req;
	json_t            *many;
	int                want_many;  /* the caller gave somewhere for it */
	const char        *alias;      /* "type", when given */
	int                broadcast;
	char              *field;
	size_t             fieldlen;
	char              *err;
	size_t             errlen;
};

/*
 * Drop an incomplete UTF-8 sequence at the end of s, left there when a
 * longer text was cut to fit its buffer.
 */
static void
utf8_trim(char *s)
{
	size_t n = strlen(s), lead = n, want;
	unsigned char c;

	while (lead > 0 && n - lead < 4 &&
	    ((unsigned char)s[lead - 1] & 0xc0) == 0x80)
		lead--;
	if (lead == 0)
		return;
	c = (unsigned char)s[lead - 1];
	if (c < 0x80)
		return;
	want = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : 4;
	if (n - (lead - 1) < want)
		s[lead - 1] = '\0';
}

/* snprintf that never leaves half a UTF-8 character at the end. */
static void __attribute__((format(printf, 3, 4)))
put_text(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (buf == NULL || len == 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0)
		buf[0] = '\0';
	else if ((size_t)n >= len)
		utf8_trim(buf);
}

/* Code points a terminal may act on rather than show: C0, DEL, C1,
 * and the invisible and bidirectional formatting characters. */
static int
cp_needs_escape(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) ||
	    (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
	    (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff;
}

/* Length and code point of the UTF-8 character at s (n bytes left);
 * 0 when the bytes there are not one. */
static size_t
utf8_char(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 :
	    (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;

	if (len == 0 || len > n || nt_utf8_valid((const char *)s, len) < 0)
		return 0;
	*cp = len == 1 ? s[0] : s[0] & (0x7f >> len);
	for (size_t k = 1; k < len; k++)
		*cp = (*cp << 6) | (s[k] & 0x3f);
	return len;
}

/*
 * key as it may be shown: at most KEY_SHOWN_MAX bytes then "...",
 * quotes and backslashes escaped, code points a terminal acts on as
 * \uXXXX, bytes that are not UTF-8 as \xXX. out holds KEY_SHOWN_SIZE.
 */
static void
key_shown(const char *key, char out[KEY_SHOWN_SIZE])
{
	const unsigned char *s = (const unsigned char *)key;
	size_t n = strlen(key), i = 0, o = 0, len;
	char unit[8];
	uint32_t cp;

	while (i < n) {
		len = utf8_char(s + i, n - i, &cp);
		if (len == 0) {
			snprintf(unit, sizeof(unit), "\\x%02X", s[i]);
			len = 1;
		} else if (cp_needs_escape(cp)) {
			snprintf(unit, sizeof(unit), "\\u%04X", (unsigned)cp);
		} else if (cp == '"' || cp == '\\') {
			snprintf(unit, sizeof(unit), "\\%c", (char)cp);
		} else {
			memcpy(unit, s + i, len);
			unit[len] = '\0';
		}
		if (o + strlen(unit) > KEY_SHOWN_MAX)
			break;
		memcpy(out + o, unit, strlen(unit));
		o += strlen(unit);
		i += len;
	}
	if (i < n) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/*
 * Edit distance of a and b (insert, delete, replace, swap of neighbours)
 * when both are at most KEY_CMP_MAX bytes; else a number over any bound.
 */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t d[KEY_CMP_MAX + 1][KEY_CMP_MAX + 1];

	if (la > KEY_CMP_MAX || lb > KEY_CMP_MAX)
		return SIZE_MAX;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

/* The accepted key nearest to key, within 2 edits; NULL when none. */
static const char *
near_key(const char *key, enum nt_req_kind kind)
{
	const char *best = NULL;
	size_t best_d = 3, d;

	for (int k = 0; k < K_COUNT; k++) {
		if (!(req_keys[k].kinds & KIND(kind)))
			continue;
		d = edit_distance(key, req_keys[k].name);
		if (d < best_d) {
			best_d = d;
			best = req_keys[k].name;
		}
	}
	return best;
}

/* Fail on the key shown (already safe; "" for the whole request). */
static int __attribute__((format(printf, 3, 4)))
req_fail(struct req_parse *p, const char *shown, const char *fmt, ...)
{
	va_list ap;
	char text[512];

	put_text(p->field, p->fieldlen, "%s", shown);
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	put_text(p->err, p->errlen, "%s", text);
	return -1;
}

static int
unknown_key(struct req_parse *p, const char *key)
{
	char shown[KEY_SHOWN_SIZE];
	const char *near = near_key(key, p->kind);

	key_shown(key, shown);
	if (near != NULL)
		return req_fail(p, shown, "unknown key \"%s\" (did you mean "
		    "\"%s\"?)", shown, near);
	return req_fail(p, shown, "unknown key \"%s\"", shown);
}

/* A user, type or channel name: its validator's reason, with the key. */
static int
check_name(struct req_parse *p, const char *key, json_t *v,
    int (*valid)(const char *, char *, size_t), const char **out)
{
	char why[128];

	if (!json_is_string(v))
		return req_fail(p, key, "\"%s\" must be a string", key);
	if (valid(json_string_value(v), why, sizeof(why)) < 0)
		return req_fail(p, key, "\"%s\": %s", key, why);
	*out = json_string_value(v);
	return 0;
}

static int
check_many(struct req_parse *p, json_t *v)
{
	const char *key = req_keys[K_TARGET_USERS].name;
	char why[128];
	json_t *el;
	size_t i;

	if (!json_is_array(v) || json_array_size(v) == 0)
		return req_fail(p, key, "\"%s\" must be a non-empty array of "
		    "user ids", key);
	json_array_foreach(v, i, el) {
		if (!json_is_string(el))
			return req_fail(p, key, "\"%s\"[%zu] must be a string "
			    "(a user id)", key, i);
		if (nt_user_valid(json_string_value(el), why, sizeof(why)) < 0)
			return req_fail(p, key, "\"%s\"[%zu]: %s", key, i, why);
	}
	p->many = v;
	return 0;
}

static int
check_content(struct req_parse *p, json_t *v)
{
	const char *key = req_keys[K_CONTENT].name;

	if (!json_is_string(v))
		return req_fail(p, key, "\"%s\" must be a string", key);
	if (json_string_length(v) == 0)
		return req_fail(p, key, "\"%s\" is empty: a notification needs "
		    "some text", key);
	/* Only an object built in memory can hold a string like these. */
	if (strlen(json_string_value(v)) != json_string_length(v) ||
	    nt_utf8_valid(json_string_value(v), json_string_length(v)) < 0)
		return req_fail(p, key, "\"%s\" is not valid UTF-8 text", key);
	p->req->content = json_string_value(v);
	return 0;
}

/* One key of the request, against the rules of its kind. */
static int
check_key(struct req_parse *p, const char *key, json_t *v)
{
	int k;

	for (k = 0; k < K_COUNT; k++)
		if (strcmp(key, req_keys[k].name) == 0)
			break;
	if (k == K_COUNT)
		return unknown_key(p, key);
	if (!(req_keys[k].kinds & KIND(p->kind)) ||
	    (k == K_TARGET_USERS && !p->want_many))
		return req_fail(p, key, "\"%s\" is not accepted in %s", key,
		    kind_goes_to[p->kind]);
	switch (k) {
	case K_TARGET_USER:
		return check_name(p, key, v, nt_user_valid,
		    &p->req->target_user);
	case K_TARGET_USERS:
		return check_many(p, v);
	case K_NOTIFICATION_TYPE:
		return check_name(p, key, v, nt_type_valid, &p->req->type);
	case K_TYPE:
		return check_name(p, key, v, nt_type_valid, &p->alias);
	case K_CONTENT:
		return check_content(p, v);
	case K_CHANNEL:
		if (json_is_null(v))
			return 0;
		return check_name(p, key, v, nt_channel_valid,
		    &p->req->channel);
	case K_DATA:
		if (json_is_null(v))
			return 0;
		if (!json_is_object(v))
			return req_fail(p, key, "\"%s\" must be a JSON object "
			    "(or null)", key);
		p->req->data = v;
		return 0;
	default:  /* K_BROADCAST, the last of the table */
		if (!json_is_true(v))
			return req_fail(p, key, "\"%s\" must be true (to send "
			    "to one user, give \"target_user\" instead)", key);
		p->broadcast = 1;
		return 0;
	}
}

/* The rules on the request as a whole, once every key passed. */
static int
check_whole(struct req_parse *p)
{
	const struct nt_msg_req *req = p->req;

	if (req->type != NULL && p->alias != NULL)
		return req_fail(p, "type", "give \"notification_type\" or its "
		    "alias \"type\", not both");
	if (req->content == NULL)
		return req_fail(p, "content", "no \"content\": it is required");
	switch (p->kind) {
	case NT_REQ_SEND:
		if (req->target_user != NULL && p->many != NULL)
			return req_fail(p, "target_users", "give "
			    "\"target_user\" or \"target_users\", not both");
		if (req->target_user == NULL && p->many == NULL)
			return req_fail(p, "target_user", "no \"target_user\" "
			    "or \"target_users\": say whom the notification "
			    "is for");
		break;
	case NT_REQ_LINE:
		if (req->target_user != NULL && p->broadcast)
			return req_fail(p, "broadcast", "give \"target_user\" "
			    "or \"broadcast\": true, not both");
		if (req->target_user == NULL && !p->broadcast)
			return req_fail(p, "target_user", "no \"target_user\": "
			    "give one, or \"broadcast\": true to send to "
			    "everyone");
		break;
	case NT_REQ_BROADCAST:
		break;
	}
	return 0;
}

int
nt_msg_req_parse(json_t *obj, enum nt_req_kind kind, struct nt_msg_req *req,
    json_t **many, char *field, size_t fieldlen, char *err, size_t errlen)
{
	struct req_parse p = {
		.kind = kind, .req = req, .want_many = many != NULL,
		.field = field, .fieldlen = fieldlen, .err = err,
		.errlen = errlen,
	};
	const char *key;
	json_t *v;
	int rc = 0;

	memset(req, 0, sizeof(*req));
	if (many)
		*many = NULL;
	put_text(field, fieldlen, "%s", "");
	put_text(err, errlen, "%s", "");
	if ((unsigned)kind > NT_REQ_LINE)
		rc = req_fail(&p, "", "unknown kind of request");
	else if (!json_is_object(obj))
		rc = req_fail(&p, "", "the request must be a JSON object");
	else {
		json_object_foreach(obj, key, v) {
			if ((rc = check_key(&p, key, v)) != 0)
				break;
		}
		if (rc == 0)
			rc = check_whole(&p);
	}
	if (rc != 0) {
		memset(req, 0, sizeof(*req));
		return -1;
	}
	if (req->type == NULL)
		req->type = p.alias;
	if (many)
		*many = p.many;
	return 0;
}

json_t *
nt_msg_build(const struct nt_msg_req *req, const struct nt_limits *lim,
    char *err, size_t errlen)
{
	const char *type = req->type ? req->type : "info";
	const char *content = req->content ? req->content : "";
	char id[NT_UUID_STRLEN + 1], ts[NT_TIMESTAMP_LEN + 1];
	size_t clen = strlen(content);
	json_t *msg, *jcontent;

	if (req->target_user && nt_user_valid(req->target_user, err, errlen) < 0)
		return NULL;
	if (nt_type_valid(type, err, errlen) < 0)
		return NULL;
	if (req->channel && nt_channel_valid(req->channel, err, errlen) < 0)
		return NULL;
	if (req->data && !json_is_object(req->data)) {
		SET_ERR("\"data\" must be a JSON object");
		return NULL;
	}
	if (lim && clen > lim->max_content) {
		SET_ERR("content is %zu bytes, over the limit of %zu", clen,
		    lim->max_content);
		return NULL;
	}
	if (nt_utf8_valid(content, clen) < 0 ||
	    (jcontent = json_stringn(content, clen)) == NULL) {
		SET_ERR("content is not valid UTF-8");
		return NULL;
	}
	nt_uuid7(id);
	nt_timestamp_now(ts);
	msg = json_object();
	if (msg == NULL) {
		json_decref(jcontent);
		SET_ERR("out of memory");
		return NULL;
	}
	json_object_set_new(msg, "id", json_string(id));
	json_object_set_new(msg, "type", json_string(type));
	json_object_set_new(msg, "content", jcontent);
	json_object_set_new(msg, "data",
	    req->data ? json_deep_copy(req->data) : json_object());
	json_object_set_new(msg, "timestamp", json_string(ts));
	json_object_set_new(msg, "target_user",
	    req->target_user ? json_string(req->target_user) : json_null());
	json_object_set_new(msg, "channel",
	    req->channel ? json_string(req->channel) : json_null());
	if (json_object_size(msg) != 7) {
		json_decref(msg);
		SET_ERR("out of memory");
		return NULL;
	}
	return msg;
}

char *
nt_msg_encode(const json_t *msg, const struct nt_limits *lim, size_t *len,
    char *err, size_t errlen)
{
	char *s = json_dumps(msg, JSON_COMPACT);
	size_t n;

	if (s == NULL) {
		SET_ERR("cannot encode message");
		return NULL;
	}
	n = strlen(s);
	if (lim && n > lim->max_message) {
		SET_ERR("message is %zu bytes, over the limit of %zu", n,
		    lim->max_message);
		free(s);
		return NULL;
	}
	if (len)
		*len = n;
	return s;
}

json_t *
nt_msg_decode(const char *buf, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *msg = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);

	if (msg == NULL) {
		SET_ERR("bad JSON at %d:%d: %s", jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(msg) || !json_is_string(json_object_get(msg, "id"))) {
		SET_ERR("not a notification: no string \"id\"");
		json_decref(msg);
		return NULL;
	}
	return msg;
}

static const char *
string_field(const json_t *msg, const char *key)
{
	return json_string_value(json_object_get(msg, key));
}

const char *
nt_msg_id(const json_t *msg)
{
	return string_field(msg, "id");
}

const char *
nt_msg_target_user(const json_t *msg)
{
	return string_field(msg, "target_user");
}

const char *
nt_msg_channel(const json_t *msg)
{
	return string_field(msg, "channel");
}

void
nt_timestamp_now(char out[NT_TIMESTAMP_LEN + 1])
{
	struct timeval tv;
	struct tm tm;
	char buf[64];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	/* A wide buffer: the compiler cannot know tm's fields are small. */
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
	memcpy(out, buf, NT_TIMESTAMP_LEN);
	out[NT_TIMESTAMP_LEN] = '\0';
}

static int
digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int
nt_timestamp_parse_us(const char *s, int64_t *us)
{
	int y, mo, d, h, mi, sec;
	int64_t frac = 0, scale = 1000000;
	const char *p;
	struct tm tm;

	if (strlen(s) < 19 || digits(s, 4, &y) < 0 || s[4] != '-' ||
	    digits(s + 5, 2, &mo) < 0 || s[7] != '-' ||
	    digits(s + 8, 2, &d) < 0 || (s[10] != 'T' && s[10] != ' ') ||
	    digits(s + 11, 2, &h) < 0 || s[13] != ':' ||
	    digits(s + 14, 2, &mi) < 0 || s[16] != ':' ||
	    digits(s + 17, 2, &sec) < 0)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -1;
		while (*p >= '0' && *p <= '9') {
			if (scale > 1) {
				scale /= 10;
				frac += (*p - '0') * scale;
			}
			p++;
		}
	}
	if (!(strcmp(p, "Z") == 0 || strcmp(p, "") == 0 ||
	    strcmp(p, "+00:00") == 0))
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*us = (int64_t)timegm(&tm) * 1000000 + frac;
	return 0;
}
