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
	json_t *j = json_loads(s, 0, NULL);

	assert_non_null(j);
	return j;
}

static void
request_from_json(void **state)
{
	struct nt_msg_req req;
	json_t *many, *j;
	char err[128];

	j = parse("{\"target_user\":\"bob\",\"notification_type\":\"alert\","
	    "\"content\":\"hi\",\"channel\":null,\"data\":{\"k\":[1,{\"x\":2}]}}");
	assert_int_equal(nt_msg_req_from_json(j, &req, NULL, err, sizeof(err)), 0);
	assert_string_equal(req.target_user, "bob");
	assert_string_equal(req.type, "alert");
	assert_string_equal(req.content, "hi");
	assert_null(req.channel);
	assert_true(json_is_object(req.data));
	json_decref(j);

	j = parse("{\"type\":\"t\",\"content\":\"c\"}");
	assert_int_equal(nt_msg_req_from_json(j, &req, NULL, err, sizeof(err)), 0);
	assert_string_equal(req.type, "t");
	assert_null(req.target_user);
	json_decref(j);

	j = parse("{\"content\":5}");
	assert_int_equal(nt_msg_req_from_json(j, &req, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "content"));
	json_decref(j);

	j = parse("{\"data\":[1]}");
	assert_int_equal(nt_msg_req_from_json(j, &req, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "data"));
	json_decref(j);

	j = parse("[1,2]");
	assert_int_equal(nt_msg_req_from_json(j, &req, NULL, err, sizeof(err)), -1);
	json_decref(j);

	j = parse("{\"target_users\":[\"a\",\"b\"],\"content\":\"x\"}");
	assert_int_equal(nt_msg_req_from_json(j, &req, NULL, err, sizeof(err)), -1);
	assert_int_equal(nt_msg_req_from_json(j, &req, &many, err, sizeof(err)), 0);
	assert_int_equal(json_array_size(many), 2);
	json_decref(j);

	j = parse("{\"target_users\":[\"a\"],\"target_user\":\"b\"}");
	assert_int_equal(nt_msg_req_from_json(j, &req, &many, err, sizeof(err)), -1);
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
		cmocka_unit_test(request_from_json),
		cmocka_unit_test(build_and_encode),
		cmocka_unit_test(build_rejects),
		cmocka_unit_test(decode_rejects),
		cmocka_unit_test(timestamps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
