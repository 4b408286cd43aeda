#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "nt_msg.h"
#include "nt_uuid.h"

static void
name_rules(void **state)
{
	char err[128], long_name[NT_USER_MAX + 2];

	assert_int_equal(nt_user_valid("alice", err, sizeof(err)), 0);
	assert_int_equal(nt_user_valid("user-1_a.b:c@d", err, sizeof(err)), 0);
	assert_int_equal(nt_user_valid("", err, sizeof(err)), -1);
	assert_int_equal(nt_user_valid("a b", err, sizeof(err)), -1);
	assert_int_equal(nt_user_valid("a/b", err, sizeof(err)), -1);
	assert_int_equal(nt_user_valid("ü", err, sizeof(err)), -1);
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[NT_USER_MAX] = '\0';
	assert_int_equal(nt_user_valid(long_name, err, sizeof(err)), 0);
	long_name[NT_USER_MAX] = 'a';
	long_name[NT_USER_MAX + 1] = '\0';
	assert_int_equal(nt_user_valid(long_name, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "longer"));

	assert_int_equal(nt_channel_valid("news/sport", err, sizeof(err)), 0);
	assert_int_equal(nt_channel_valid("news*", err, sizeof(err)), -1);
	assert_int_equal(nt_type_valid("alert.high", err, sizeof(err)), 0);
	assert_int_equal(nt_type_valid("a@b", err, sizeof(err)), -1);
}

static void
utf8_rules(void **state)
{
	assert_int_equal(nt_utf8_valid("abc", 3), 0);
	assert_int_equal(nt_utf8_valid("通知 ✓ 🎉", strlen("通知 ✓ 🎉")), 0);
	assert_int_equal(nt_utf8_valid("\xc3", 1), -1);           /* truncated */
	assert_int_equal(nt_utf8_valid("\xc0\xaf", 2), -1);       /* overlong */
	assert_int_equal(nt_utf8_valid("\xed\xa0\x80", 3), -1);   /* surrogate */
	assert_int_equal(nt_utf8_valid("\xf4\x90\x80\x80", 4), -1); /* > U+10FFFF */
	assert_int_equal(nt_utf8_valid("\xff", 1), -1);
}

static json_t *
parse(const char *s)
{
	json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);

	assert_non_null(j);
	return j;
}

/* One request parsed as a kind; obj lives until done(). */
struct parsed {
	json_t            *obj;
	struct nt_msg_req  req;
	json_t            *many;
	char               field[64];
	char               err[256];
	int                rc;
};

static void
parse_as(struct parsed *p, enum nt_req_kind kind, const char *text)
{
	memset(p, 0, sizeof(*p));
	p->obj = parse(text);
	p->rc = nt_msg_req_parse(p->obj, kind, &p->req,
	    kind == NT_REQ_SEND ? &p->many : NULL, p->field, sizeof(p->field),
	    p->err, sizeof(p->err));
}

static void
done(struct parsed *p)
{
	json_decref(p->obj);
}

/* text is refused as kind, naming field, with want somewhere in err. */
static void
refused(enum nt_req_kind kind, const char *text, const char *field,
    const char *want)
{
	struct parsed p;

	parse_as(&p, kind, text);
	if (p.rc != -1 || strcmp(p.field, field) != 0 ||
	    strstr(p.err, want) == NULL)
		fail_msg("%s: rc %d, field \"%s\", err \"%s\"; wanted field "
		    "\"%s\" and \"%s\"", text, p.rc, p.field, p.err, field,
		    want);
	/* Nothing of a refused request is handed out. */
	assert_null(p.req.target_user);
	assert_null(p.req.content);
	assert_null(p.many);
	done(&p);
}

static void
parse_accepts(void **state)
{
	struct parsed p;

	parse_as(&p, NT_REQ_SEND, "{\"target_user\":\"bob\","
	    "\"notification_type\":\"alert\",\"content\":\"hi\","
	    "\"channel\":null,\"data\":{\"k\":[1,{\"x\":2}]}}");
	assert_int_equal(p.rc, 0);
	assert_string_equal(p.field, "");
	assert_string_equal(p.req.target_user, "bob");
	assert_string_equal(p.req.type, "alert");
	assert_string_equal(p.req.content, "hi");
	assert_null(p.req.channel);
	assert_true(json_is_object(p.req.data));
	assert_null(p.many);
	done(&p);

	/* "type" is an alias; data null is absent; channel kept. */
	parse_as(&p, NT_REQ_SEND, "{\"target_users\":[\"a\",\"b@c\"],"
	    "\"type\":\"t\",\"content\":\"c\",\"channel\":\"news/x\","
	    "\"data\":null}");
	assert_int_equal(p.rc, 0);
	assert_string_equal(p.req.type, "t");
	assert_null(p.req.target_user);
	assert_null(p.req.data);
	assert_string_equal(p.req.channel, "news/x");
	assert_int_equal(json_array_size(p.many), 2);
	done(&p);

	parse_as(&p, NT_REQ_BROADCAST, "{\"content\":\"all\"}");
	assert_int_equal(p.rc, 0);
	assert_null(p.req.target_user);
	assert_null(p.req.type);  /* nt_msg_build makes it "info" */
	done(&p);

	parse_as(&p, NT_REQ_LINE, "{\"target_user\":\"alice\",\"content\":\"x\"}");
	assert_int_equal(p.rc, 0);
	assert_string_equal(p.req.target_user, "alice");
	done(&p);

	parse_as(&p, NT_REQ_LINE, "{\"broadcast\":true,\"content\":\"x\"}");
	assert_int_equal(p.rc, 0);
	assert_null(p.req.target_user);
	done(&p);
}

static void
parse_unknown_keys(void **state)
{
	struct parsed p;

	/* The typo that used to broadcast a reset code to everyone. */
	parse_as(&p, NT_REQ_LINE, "{\"target_usr\":\"alice\","
	    "\"content\":\"your reset code is 1234\"}");
	assert_int_equal(p.rc, -1);
	assert_string_equal(p.field, "target_usr");
	assert_string_equal(p.err,
	    "unknown key \"target_usr\" (did you mean \"target_user\"?)");
	done(&p);

	refused(NT_REQ_SEND, "{\"target_user\":\"a\",\"contnet\":\"x\"}",
	    "contnet", "(did you mean \"content\"?)");        /* a swap */
	refused(NT_REQ_SEND, "{\"target_user\":\"a\",\"Content\":\"x\"}",
	    "Content", "(did you mean \"content\"?)");
	refused(NT_REQ_SEND, "{\"notification_typ\":\"a\"}",
	    "notification_typ", "(did you mean \"notification_type\"?)");
	refused(NT_REQ_LINE, "{\"chanel\":\"a\"}", "chanel",
	    "(did you mean \"channel\"?)");
	refused(NT_REQ_LINE, "{\"brodcast\":true}", "brodcast",
	    "(did you mean \"broadcast\"?)");
	refused(NT_REQ_SEND, "{\"target_user\":\"a\",\"target\":\"x\"}",
	    "target", "unknown key \"target\"");
	/* Three edits away: no guess. */
	refused(NT_REQ_SEND, "{\"colour\":1}", "colour", "unknown key");
	parse_as(&p, NT_REQ_SEND, "{\"colour\":1}");
	assert_null(strstr(p.err, "did you mean"));
	done(&p);
	/* Only keys of the kind are suggested. */
	parse_as(&p, NT_REQ_BROADCAST, "{\"content\":\"x\",\"target_usr\":\"a\"}");
	assert_int_equal(p.rc, -1);
	assert_string_equal(p.err, "unknown key \"target_usr\"");
	done(&p);

	/* Known keys that the kind does not take. */
	refused(NT_REQ_LINE, "{\"target_users\":[\"a\"],\"content\":\"x\"}",
	    "target_users", "not accepted in a request line");
	refused(NT_REQ_BROADCAST, "{\"target_user\":\"a\",\"content\":\"x\"}",
	    "target_user", "not accepted in a broadcast");
	refused(NT_REQ_BROADCAST, "{\"target_users\":[\"a\"],\"content\":\"x\"}",
	    "target_users", "not accepted in a broadcast");
	refused(NT_REQ_SEND, "{\"broadcast\":true,\"content\":\"x\"}",
	    "broadcast", "not accepted in a send request");
	refused(NT_REQ_BROADCAST, "{\"broadcast\":true,\"content\":\"x\"}",
	    "broadcast", "not accepted in a broadcast");
}

static void
parse_wrong_types(void **state)
{
	static const struct {
		const char *text, *field, *want;
	} cases[] = {
		{ "{\"target_user\":5,\"content\":\"x\"}", "target_user",
		  "\"target_user\" must be a string" },
		/* null is absent only for channel and data. */
		{ "{\"target_user\":null,\"content\":\"x\"}", "target_user",
		  "must be a string" },
		{ "{\"target_user\":\"bad user\",\"content\":\"x\"}",
		  "target_user", "\"target_user\": user id may only" },
		{ "{\"target_user\":\"\",\"content\":\"x\"}", "target_user",
		  "user id is empty" },
		{ "{\"target_users\":\"alice\",\"content\":\"x\"}",
		  "target_users", "non-empty array" },
		{ "{\"target_users\":[],\"content\":\"x\"}", "target_users",
		  "non-empty array" },
		{ "{\"target_users\":null,\"content\":\"x\"}", "target_users",
		  "non-empty array" },
		{ "{\"target_users\":[\"a\",1],\"content\":\"x\"}",
		  "target_users", "\"target_users\"[1] must be a string" },
		{ "{\"target_users\":[\"a\",\"b c\"],\"content\":\"x\"}",
		  "target_users", "\"target_users\"[1]: user id may only" },
		{ "{\"target_users\":[\"a\"],\"target_user\":\"b\","
		  "\"content\":\"x\"}", "target_users", "not both" },
		{ "{\"target_user\":\"a\",\"notification_type\":1,"
		  "\"content\":\"x\"}", "notification_type", "must be a string" },
		{ "{\"target_user\":\"a\",\"notification_type\":null,"
		  "\"content\":\"x\"}", "notification_type", "must be a string" },
		{ "{\"target_user\":\"a\",\"type\":[],\"content\":\"x\"}",
		  "type", "\"type\" must be a string" },
		{ "{\"target_user\":\"a\",\"type\":\"bad/type\",\"content\":\"x\"}",
		  "type", "\"type\": type may only" },
		{ "{\"target_user\":\"a\",\"type\":\"t\",\"notification_type\":"
		  "\"t\",\"content\":\"x\"}", "type", "not both" },
		{ "{\"target_user\":\"a\",\"content\":5}", "content",
		  "\"content\" must be a string" },
		{ "{\"target_user\":\"a\",\"content\":null}", "content",
		  "must be a string" },
		{ "{\"target_user\":\"a\",\"content\":\"\"}", "content",
		  "\"content\" is empty" },
		{ "{\"target_user\":\"a\"}", "content",
		  "no \"content\": it is required" },
		{ "{\"target_user\":\"a\",\"content\":\"x\",\"channel\":5}",
		  "channel", "\"channel\" must be a string" },
		{ "{\"target_user\":\"a\",\"content\":\"x\",\"channel\":\"a b\"}",
		  "channel", "\"channel\": channel may only" },
		{ "{\"target_user\":\"a\",\"content\":\"x\",\"data\":[1]}",
		  "data", "\"data\" must be a JSON object" },
		{ "{\"target_user\":\"a\",\"content\":\"x\",\"data\":\"{}\"}",
		  "data", "must be a JSON object" },
		{ "{\"content\":\"x\"}", "target_user",
		  "no \"target_user\" or \"target_users\"" },
		{ "[1,2]", "", "must be a JSON object" },
		{ "\"x\"", "", "must be a JSON object" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		refused(NT_REQ_SEND, cases[i].text, cases[i].field,
		    cases[i].want);
	refused(NT_REQ_BROADCAST, "{\"content\":\"\"}", "content", "empty");
	refused(NT_REQ_BROADCAST, "{}", "content", "required");
}

static void
parse_line_targets(void **state)
{
	refused(NT_REQ_LINE, "{\"content\":\"x\"}", "target_user",
	    "no \"target_user\": give one, or \"broadcast\": true to send "
	    "to everyone");
	refused(NT_REQ_LINE, "{\"broadcast\":false,\"content\":\"x\"}",
	    "broadcast", "\"broadcast\" must be true");
	refused(NT_REQ_LINE, "{\"broadcast\":\"yes\",\"content\":\"x\"}",
	    "broadcast", "must be true");
	refused(NT_REQ_LINE, "{\"broadcast\":1,\"content\":\"x\"}",
	    "broadcast", "must be true");
	refused(NT_REQ_LINE, "{\"broadcast\":null,\"content\":\"x\"}",
	    "broadcast", "must be true");
	refused(NT_REQ_LINE, "{\"target_user\":\"a\",\"broadcast\":true,"
	    "\"content\":\"x\"}", "broadcast", "not both");
	refused(NT_REQ_LINE, "{\"broadcast\":true,\"content\":\"\"}",
	    "content", "empty");
}

static void
parse_send_without_many(void **state)
{
	struct nt_msg_req req;
	char field[32], err[128];
	json_t *j = parse("{\"target_users\":[\"a\"],\"content\":\"x\"}");

	/* A caller with nowhere to put target_users does not get them. */
	assert_int_equal(nt_msg_req_parse(j, NT_REQ_SEND, &req, NULL, field,
	    sizeof(field), err, sizeof(err)), -1);
	assert_string_equal(field, "target_users");
	/* field and err may be left out. */
	assert_int_equal(nt_msg_req_parse(j, NT_REQ_SEND, &req, NULL, NULL, 0,
	    NULL, 0), -1);
	json_decref(j);
}

/* Every byte of s is printable: no control byte reaches a terminal. */
static void
assert_printable(const char *s)
{
	for (; *s; s++)
		assert_true((unsigned char)*s >= 0x20 && *s != 0x7f);
}

static void
parse_shows_keys_safely(void **state)
{
	struct nt_msg_req req;
	struct parsed p;
	char text[400], want[64], field[64], err[256], tiny[12];
	json_t *j;

	/* A long key is cut to 40 bytes and "...". */
	memset(want, 'k', 40);
	strcpy(want + 40, "...");
	snprintf(text, sizeof(text), "{\"%0200d\":1}", 0);
	memset(text + 2, 'k', 200);
	parse_as(&p, NT_REQ_SEND, text);
	assert_int_equal(p.rc, -1);
	assert_string_equal(p.field, want);
	assert_non_null(strstr(p.err, want));
	assert_true(strlen(p.err) < 80);
	done(&p);

	/* Control bytes (an ANSI escape, a newline) and quotes escaped. */
	parse_as(&p, NT_REQ_SEND, "{\"a\\u001b[31m\\n\\\"b\\u202e\":1}");
	assert_int_equal(p.rc, -1);
	assert_string_equal(p.field, "a\\u001B[31m\\u000A\\\"b\\u202E");
	assert_printable(p.err);
	assert_non_null(strstr(p.err, "\"a\\u001B[31m\\u000A\\\"b\\u202E\""));
	done(&p);

	/* Multi-byte characters are never cut in half. */
	snprintf(text, sizeof(text), "{\"");
	for (int i = 0; i < 30; i++)
		strcat(text, "ü");
	strcat(text, "\":1}");
	parse_as(&p, NT_REQ_SEND, text);
	assert_int_equal(p.rc, -1);
	assert_int_equal(nt_utf8_valid(p.field, strlen(p.field)), 0);
	assert_int_equal(strlen(p.field), 40 + 3);
	assert_int_equal(nt_utf8_valid(p.err, strlen(p.err)), 0);
	done(&p);

	/* Bytes that are not UTF-8 (only an object built in memory). */
	j = json_object();
	json_object_set_new_nocheck(j, "x\xff", json_true());
	assert_int_equal(nt_msg_req_parse(j, NT_REQ_SEND, &req, NULL, field,
	    sizeof(field), err, sizeof(err)), -1);
	assert_string_equal(field, "x\\xFF");
	json_decref(j);

	/* Buffers too small still end on a whole character. */
	j = parse("{\"üüüüüüüü\":1}");
	assert_int_equal(nt_msg_req_parse(j, NT_REQ_SEND, &req, NULL, tiny,
	    sizeof(tiny), tiny, sizeof(tiny)), -1);
	assert_true(strlen(tiny) < sizeof(tiny));
	assert_int_equal(nt_utf8_valid(tiny, strlen(tiny)), 0);
	assert_int_equal(nt_msg_req_parse(j, NT_REQ_SEND, &req, NULL, field,
	    4, err, 17), -1);
	assert_int_equal(nt_utf8_valid(field, strlen(field)), 0);
	assert_int_equal(nt_utf8_valid(err, strlen(err)), 0);
	assert_string_equal(field, "ü");
	json_decref(j);
}

static void
build_and_encode(void **state)
{
	struct nt_limits lim;
	struct nt_msg_req req = { .target_user = "alice", .type = "info",
	    .content = "通知 ✓", .channel = "news" };
	char err[128], *s;
	size_t len;
	json_t *msg, *back;
	const char *keys[] = { "id", "type", "content", "data", "timestamp",
	    "target_user", "channel" };
	int64_t us;

	nt_limits_default(&lim);
	msg = nt_msg_build(&req, &lim, err, sizeof(err));
	assert_non_null(msg);
	for (size_t i = 0; i < 7; i++)
		assert_non_null(json_object_get(msg, keys[i]));
	assert_int_equal(nt_uuid_valid(nt_msg_id(msg)), 0);
	assert_string_equal(nt_msg_target_user(msg), "alice");
	assert_string_equal(nt_msg_channel(msg), "news");
	assert_true(json_is_object(json_object_get(msg, "data")));
	assert_int_equal(nt_timestamp_parse_us(json_string_value(
	    json_object_get(msg, "timestamp")), &us), 0);
	assert_true(llabs(us / 1000000 - (int64_t)time(NULL)) < 5);

	s = nt_msg_encode(msg, &lim, &len, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(strlen(s), len);
	/* UTF-8 kept as is, not \u-escaped, and compact. */
	assert_non_null(strstr(s, "通知 ✓"));
	assert_null(strstr(s, ": "));
	back = nt_msg_decode(s, len, err, sizeof(err));
	assert_non_null(back);
	assert_true(json_equal(back, msg));
	json_decref(back);
	free(s);

	/* A broadcast carries null target_user. */
	req.target_user = NULL;
	json_decref(msg);
	msg = nt_msg_build(&req, &lim, err, sizeof(err));
	assert_true(json_is_null(json_object_get(msg, "target_user")));
	json_decref(msg);
}

static void
build_rejects(void **state)
{
	struct nt_limits lim = { .max_content = 8, .max_message = 200 };
	struct nt_msg_req req = { .target_user = "bad user", .content = "x" };
	char err[128], *s;
	json_t *msg, *arr = json_array();

	assert_null(nt_msg_build(&req, &lim, err, sizeof(err)));
	req.target_user = "ok";
	req.content = "123456789";
	assert_null(nt_msg_build(&req, &lim, err, sizeof(err)));
	assert_non_null(strstr(err, "limit"));
	req.content = "\xff\xfe";
	assert_null(nt_msg_build(&req, &lim, err, sizeof(err)));
	assert_non_null(strstr(err, "UTF-8"));
	req.content = "ok";
	req.channel = "bad channel";
	assert_null(nt_msg_build(&req, &lim, err, sizeof(err)));
	req.channel = NULL;
	req.type = "";
	assert_null(nt_msg_build(&req, &lim, err, sizeof(err)));
	req.type = NULL;
	req.data = arr;
	assert_null(nt_msg_build(&req, &lim, err, sizeof(err)));
	req.data = NULL;

	/* Whole-message limit applies at encode time. */
	msg = nt_msg_build(&req, &lim, err, sizeof(err));
	assert_non_null(msg);
	lim.max_message = 50;
	s = nt_msg_encode(msg, &lim, NULL, err, sizeof(err));
	assert_null(s);
	assert_non_null(strstr(err, "limit"));
	json_decref(msg);
	json_decref(arr);
}

static void
decode_rejects(void **state)
{
	char err[128];

	assert_null(nt_msg_decode("{", 1, err, sizeof(err)));
	assert_null(nt_msg_decode("[]", 2, err, sizeof(err)));
	assert_null(nt_msg_decode("{\"id\":1}", 8, err, sizeof(err)));
	assert_null(nt_msg_decode("{\"id\":\"a\",\"id\":\"b\"}", 19, err, sizeof(err)));
}

static void
timestamps(void **state)
{
	int64_t us;

	assert_int_equal(nt_timestamp_parse_us("1970-01-01T00:00:01.5Z", &us), 0);
	assert_int_equal(us, 1500000);
	assert_int_equal(nt_timestamp_parse_us("2026-11-26T22:43:46.123456", &us), 0);
	assert_int_equal(us % 1000000, 123456);
	assert_int_equal(nt_timestamp_parse_us("2026-11-26T22:43:46+00:00", &us), 0);
	assert_int_equal(nt_timestamp_parse_us("2026-13-26T22:43:46Z", &us), -1);
	assert_int_equal(nt_timestamp_parse_us("yesterday", &us), -1);
	assert_int_equal(nt_timestamp_parse_us("2026-11-26T22:43:46+02:00", &us), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(name_rules),
		cmocka_unit_test(utf8_rules),
		cmocka_unit_test(parse_accepts),
		cmocka_unit_test(parse_unknown_keys),
		cmocka_unit_test(parse_wrong_types),
		cmocka_unit_test(parse_line_targets),
		cmocka_unit_test(parse_send_without_many),
		cmocka_unit_test(parse_shows_keys_safely),
		cmocka_unit_test(build_and_encode),
		cmocka_unit_test(build_rejects),
		cmocka_unit_test(decode_rejects),
		cmocka_unit_test(timestamps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
