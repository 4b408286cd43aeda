/* Key names are the Redis contract of notifyd(7): pin them down. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "nt_redis.h"

static void
key_names(void **state)
{
	char k[NT_KEY_MAX];

	assert_int_equal(nt_key_channel(k, sizeof(k), ""), 13);
	assert_string_equal(k, "notifications");
	nt_key_channel(k, sizeof(k), "app:");
	assert_string_equal(k, "app:notifications");
	nt_key_offline(k, sizeof(k), "", "alice");
	assert_string_equal(k, "offline:alice");
	nt_key_offline(k, sizeof(k), "app:", "alice");
	assert_string_equal(k, "app:offline:alice");
	nt_key_presence_instances(k, sizeof(k), "");
	assert_string_equal(k, "presence:instances");
	nt_key_presence(k, sizeof(k), "p:", "host-1");
	assert_string_equal(k, "p:presence:host-1");
}

static void
key_too_long(void **state)
{
	char k[16];

	assert_int_equal(nt_key_offline(k, sizeof(k), "", "a-rather-long-user"), -1);
}

/* The Lua of online-count must build keys the same way as nt_key_presence. */
static void
lua_uses_contract_names(void **state)
{
	assert_non_null(strstr(nt_lua_online_count, "'presence:'"));
	assert_non_null(strstr(nt_lua_user_online, "'presence:'"));
	assert_non_null(strstr(nt_lua_send_targeted, "HSET"));
	assert_non_null(strstr(nt_lua_send_targeted, "PUBLISH"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_names),
		cmocka_unit_test(key_too_long),
		cmocka_unit_test(lua_uses_contract_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
