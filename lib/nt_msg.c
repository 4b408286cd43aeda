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

/* A field that must be a string or absent/null; *out borrowed or NULL. */
static int
opt_string(json_t *obj, const char *key, const char **out, char *err,
    size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		SET_ERR("\"%s\" must be a string", key);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

int
nt_msg_req_from_json(json_t *obj, struct nt_msg_req *req, json_t **many,
    char *err, size_t errlen)
{
	json_t *data, *users;
	const char *alias;

	memset(req, 0, sizeof(*req));
	if (many)
		*many = NULL;
	if (!json_is_object(obj)) {
		SET_ERR("request must be a JSON object");
		return -1;
	}
	if (opt_string(obj, "target_user", &req->target_user, err, errlen) < 0 ||
	    opt_string(obj, "notification_type", &req->type, err, errlen) < 0 ||
	    opt_string(obj, "type", &alias, err, errlen) < 0 ||
	    opt_string(obj, "content", &req->content, err, errlen) < 0 ||
	    opt_string(obj, "channel", &req->channel, err, errlen) < 0)
		return -1;
	if (req->type == NULL)
		req->type = alias;
	data = json_object_get(obj, "data");
	if (data != NULL && !json_is_null(data)) {
		if (!json_is_object(data)) {
			SET_ERR("\"data\" must be a JSON object");
			return -1;
		}
		req->data = data;
	}
	users = json_object_get(obj, "target_users");
	if (users != NULL && !json_is_null(users)) {
		if (many == NULL) {
			SET_ERR("\"target_users\" is not accepted here");
			return -1;
		}
		if (!json_is_array(users)) {
			SET_ERR("\"target_users\" must be an array of user ids");
			return -1;
		}
		if (req->target_user != NULL) {
			SET_ERR("give either \"target_user\" or \"target_users\", not both");
			return -1;
		}
		*many = users;
	}
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
