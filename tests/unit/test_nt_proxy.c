#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "nt_proxy.h"

static void
parse_lists(void **state)
{
	struct nt_proxy_list l;
	char err[256];

	assert_int_equal(nt_proxy_list_parse("", &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(nt_proxy_list_parse("127.0.0.1, 10.0.0.0/8,::1,fd00::/8",
	    &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 4);
	assert_int_equal(nt_proxy_list_parse("10.0.0.0/33", &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "0..32"));
	assert_int_equal(nt_proxy_list_parse("nginx", &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "'nginx'"));
	assert_int_equal(nt_proxy_list_parse("10.0.0.1/", &l, err, sizeof(err)), -1);
}

static void
match_addresses_and_networks(void **state)
{
	struct nt_proxy_list l;
	char err[256];

	assert_int_equal(nt_proxy_list_parse("127.0.0.1,10.1.0.0/16,fd00::/8",
	    &l, err, sizeof(err)), 0);
	assert_true(nt_proxy_trusted(&l, "127.0.0.1"));
	assert_false(nt_proxy_trusted(&l, "127.0.0.2"));
	assert_true(nt_proxy_trusted(&l, "10.1.255.3"));
	assert_false(nt_proxy_trusted(&l, "10.2.0.1"));
	assert_true(nt_proxy_trusted(&l, "fd12::1"));
	assert_false(nt_proxy_trusted(&l, "fe80::1"));
	/* An IPv4-mapped peer (a dual-stack socket) is its IPv4 address. */
	assert_true(nt_proxy_trusted(&l, "::ffff:127.0.0.1"));
	assert_false(nt_proxy_trusted(&l, "garbage"));
}

static void
client_behind_proxies(void **state)
{
	struct nt_proxy_list l;
	char err[256], out[64];
	const char *xff;

	assert_int_equal(nt_proxy_list_parse("127.0.0.1,10.0.0.0/8", &l, err,
	    sizeof(err)), 0);
	xff = "203.0.113.7";
	nt_proxy_client(&l, "127.0.0.1", xff, strlen(xff), out, sizeof(out));
	assert_string_equal(out, "203.0.113.7");
	/* A client-sent entry on the left never wins over what nginx added. */
	xff = "1.2.3.4, 203.0.113.7 , 10.0.0.5";
	nt_proxy_client(&l, "127.0.0.1", xff, strlen(xff), out, sizeof(out));
	assert_string_equal(out, "203.0.113.7");
	/* From an untrusted peer the header is ignored. */
	nt_proxy_client(&l, "198.51.100.1", xff, strlen(xff), out, sizeof(out));
	assert_string_equal(out, "198.51.100.1");
	/* No header: the peer. */
	nt_proxy_client(&l, "127.0.0.1", NULL, 0, out, sizeof(out));
	assert_string_equal(out, "127.0.0.1");
	/* Garbage stops the walk at the last good address. */
	xff = "evil, 203.0.113.9";
	nt_proxy_client(&l, "127.0.0.1", xff, strlen(xff), out, sizeof(out));
	assert_string_equal(out, "203.0.113.9");
	xff = "203.0.113.9, evil";
	nt_proxy_client(&l, "127.0.0.1", xff, strlen(xff), out, sizeof(out));
	assert_string_equal(out, "127.0.0.1");
	/* Only trusted hops: the leftmost. */
	xff = "10.0.0.9, 10.0.0.5";
	nt_proxy_client(&l, "127.0.0.1", xff, strlen(xff), out, sizeof(out));
	assert_string_equal(out, "10.0.0.9");
	/* Not NUL-terminated at xfflen. */
	nt_proxy_client(&l, "127.0.0.1", "203.0.113.7XYZ", 11, out, sizeof(out));
	assert_string_equal(out, "203.0.113.7");
}

static void
socket_address_text(void **state)
{
	struct sockaddr_in in = { .sin_family = AF_INET };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
	char out[64];

	inet_pton(AF_INET, "192.0.2.1", &in.sin_addr);
	nt_proxy_addr_text((struct sockaddr *)&in, out, sizeof(out));
	assert_string_equal(out, "192.0.2.1");
	inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
	nt_proxy_addr_text((struct sockaddr *)&in6, out, sizeof(out));
	assert_string_equal(out, "2001:db8::1");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_lists),
		cmocka_unit_test(match_addresses_and_networks),
		cmocka_unit_test(client_behind_proxies),
		cmocka_unit_test(socket_address_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
