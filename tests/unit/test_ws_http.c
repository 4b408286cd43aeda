/*
 * notifyd-ws/http.c: the request-head parser and the opening-handshake
 * checks beside it (RFC 6455 4.2.1), on buffers only.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http.h"

static int
parse(const char *head, struct ntws_http_req *req)
{
	return ntws_http_parse(head, strlen(head), req);
}

static struct ntws_str
str(const char *s)
{
	struct ntws_str v = { s, s != NULL ? strlen(s) : 0 };

	return v;
}

static void
assert_slice(struct ntws_str s, const char *want)
{
	assert_non_null(s.p);
	assert_int_equal(s.len, strlen(want));
	assert_memory_equal(s.p, want, s.len);
}

static const char upgrade_req[] =
    "GET /ws/notifications?token=abc&since=x HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "upgrade: WebSocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key:   dGhlIHNhbXBsZSBub25jZQ==  \r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: bearer, tok.en\r\n"
    "Origin: https://app.example\r\n"
    "\r\n";

static void
parses_an_upgrade_request(void **state)
{
	struct ntws_http_req req;
	size_t len = strlen(upgrade_req);

	assert_int_equal(parse(upgrade_req, &req), 1);
	assert_int_equal(req.head_len, len);
	assert_slice(req.method, "GET");
	assert_slice(req.path, "/ws/notifications");
	assert_slice(req.query, "token=abc&since=x");
	assert_int_equal(req.minor, 1);
	/* Header names in any case; values trimmed of spaces. */
	assert_slice(req.host, "example.com");
	assert_slice(req.upgrade, "WebSocket");
	assert_slice(req.connection, "keep-alive, Upgrade");
	assert_slice(req.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
	assert_slice(req.ws_version, "13");
	assert_slice(req.ws_protocol, "bearer, tok.en");
	assert_slice(req.origin, "https://app.example");
	assert_null(req.xff.p);
	/* What upgrade() checks of it. */
	assert_true(ntws_http_has_token(req.upgrade, "websocket"));
	assert_true(ntws_http_has_token(req.connection, "upgrade"));
	assert_true(ntws_str_eq(req.ws_version, "13"));
	assert_true(ntws_http_key_valid(req.ws_key));
}

static void
head_len_stops_at_the_blank_line(void **state)
{
	struct ntws_http_req req;
	const char with_body[] = "GET / HTTP/1.0\r\nHost: x\r\n\r\nBODY";

	assert_int_equal(parse(with_body, &req), 1);
	assert_int_equal(req.head_len, strlen(with_body) - 4);
	assert_int_equal(req.minor, 0);
	/* No '?': an empty query that still points into the buffer. */
	assert_non_null(req.query.p);
	assert_int_equal(req.query.len, 0);
	assert_slice(req.path, "/");
}

static void
partial_until_the_blank_line(void **state)
{
	struct ntws_http_req req;
	size_t n, len = strlen(upgrade_req);

	for (n = 0; n < len; n++)
		assert_int_equal(ntws_http_parse(upgrade_req, n, &req),
		    NTWS_HTTP_PARTIAL);
	assert_int_equal(ntws_http_parse(upgrade_req, len, &req), 1);
}

static void
bad_request_lines(void **state)
{
	static const char *const bad[] = {
		"GET  / HTTP/1.1\r\n\r\n",          /* two spaces */
		" / HTTP/1.1\r\n\r\n",              /* no method */
		"G(T / HTTP/1.1\r\n\r\n",           /* not a token */
		"GET x HTTP/1.1\r\n\r\n",           /* not an absolute path */
		"GET / HTTP/2.0\r\n\r\n",
		"GET / HTTP/1.x\r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",          /* trailing junk */
		"GET / HTTP/1.10\r\n\r\n",
		"GET /a\x01 HTTP/1.1\r\n\r\n",      /* control in the target */
		"GET /a\x7f HTTP/1.1\r\n\r\n",
		"GET /\r\n\r\n",                    /* no version */
		"GET\r\n\r\n",
	};

	/* NUL bytes in a token (found by fuzz_handshake: strchr() took the
	 * terminating NUL for one of the token characters). */
	static const char nul_method[] = "GE\0T / HTTP/1.1\r\n\r\n";
	static const char nul_name[] = "GET / HTTP/1.1\r\nHo\0st: x\r\n\r\n";
	struct ntws_http_req req;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &req) != NTWS_HTTP_BAD)
			fail_msg("accepted request line %zu: %s", i, bad[i]);
	}
	assert_int_equal(ntws_http_parse(nul_method, sizeof(nul_method) - 1,
	    &req), NTWS_HTTP_BAD);
	assert_int_equal(ntws_http_parse(nul_name, sizeof(nul_name) - 1,
	    &req), NTWS_HTTP_BAD);
}

static void
bad_headers(void **state)
{
	static const char *const bad[] = {
		"GET / HTTP/1.1\r\nHost x\r\n\r\n",             /* no colon */
		"GET / HTTP/1.1\r\n: x\r\n\r\n",                /* empty name */
		"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",           /* space in name */
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\x01z\r\n\r\n",       /* control */
		"GET / HTTP/1.1\r\nHost: a\rz\r\n\r\n",         /* bare CR */
		"GET / HTTP/1.1\r\nA: b\nHost: x\r\n\r\n",     /* bare LF */
		/* A repeated handshake header is ambiguous. */
		"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nSec-WebSocket-Key: a\r\n"
		    "Sec-WebSocket-Key: b\r\n\r\n",
		"GET / HTTP/1.1\r\nOrigin: a\r\nOrigin: a\r\n\r\n",
	};
	struct ntws_http_req req;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &req) != NTWS_HTTP_BAD)
			fail_msg("accepted header case %zu: %s", i, bad[i]);
	}
}

static void
tabs_unknown_headers_and_forwarded_for(void **state)
{
	struct ntws_http_req req;

	assert_int_equal(parse("GET / HTTP/1.1\r\nHost:\tx\t\r\n"
	    "X-Custom: a\tb\r\nX-Forwarded-For: 1.1.1.1\r\n"
	    "x-forwarded-for: 2.2.2.2, 3.3.3.3\r\n\r\n", &req), 1);
	assert_slice(req.host, "x");
	/* Repeated by proxies: the last line is the nearest proxy's. */
	assert_slice(req.xff, "2.2.2.2, 3.3.3.3");
	/* An empty value is present, and empty. */
	assert_int_equal(parse("GET / HTTP/1.1\r\nOrigin:\r\n\r\n", &req), 1);
	assert_non_null(req.origin.p);
	assert_int_equal(req.origin.len, 0);
}

static void
header_count_limit(void **state)
{
	char buf[NTWS_HTTP_MAX_HEAD];
	struct ntws_http_req req;
	size_t n;
	int i;

	n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n");
	for (i = 0; i < NTWS_HTTP_MAX_HEADERS; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-%d: v\r\n", i);
	snprintf(buf + n, sizeof(buf) - n, "\r\n");
	assert_int_equal(parse(buf, &req), 1);
	snprintf(buf + n, sizeof(buf) - n, "X-last: v\r\n\r\n");
	assert_int_equal(parse(buf, &req), NTWS_HTTP_TOO_BIG);
}

static void
head_size_limit(void **state)
{
	size_t cap = NTWS_HTTP_MAX_HEAD + 16, n;
	char *buf = malloc(cap);
	struct ntws_http_req req;

	assert_non_null(buf);
	n = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nX: ");
	memset(buf + n, 'a', cap - n);
	/* No end yet, under the cap: more may come. */
	assert_int_equal(ntws_http_parse(buf, NTWS_HTTP_MAX_HEAD - 1, &req),
	    NTWS_HTTP_PARTIAL);
	/* The cap reached without an end: too big. */
	assert_int_equal(ntws_http_parse(buf, NTWS_HTTP_MAX_HEAD, &req),
	    NTWS_HTTP_TOO_BIG);
	assert_int_equal(ntws_http_parse(buf, cap, &req), NTWS_HTTP_TOO_BIG);
	/* A head of exactly the cap, blank line included, is fine. */
	memcpy(buf + NTWS_HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
	assert_int_equal(ntws_http_parse(buf, cap, &req), 1);
	assert_int_equal(req.head_len, NTWS_HTTP_MAX_HEAD);
	/* One byte more and the blank line is past the cap. */
	memset(buf + n, 'a', cap - n);
	memcpy(buf + NTWS_HTTP_MAX_HEAD - 3, "\r\n\r\n", 4);
	assert_int_equal(ntws_http_parse(buf, cap, &req), NTWS_HTTP_TOO_BIG);
	free(buf);
}

static void
tokens_of_list_headers(void **state)
{
	struct ntws_str none = { NULL, 0 };

	assert_true(ntws_http_has_token(str("Upgrade"), "upgrade"));
	assert_true(ntws_http_has_token(str("keep-alive,UPGRADE"), "upgrade"));
	assert_true(ntws_http_has_token(str(" , upgrade ,"), "upgrade"));
	assert_false(ntws_http_has_token(str("upgrade2"), "upgrade"));
	assert_false(ntws_http_has_token(str("keep-alive"), "upgrade"));
	assert_false(ntws_http_has_token(str("up grade"), "upgrade"));
	assert_false(ntws_http_has_token(str(""), "upgrade"));
	assert_false(ntws_http_has_token(none, "upgrade"));
	assert_true(ntws_str_eq(str("13"), "13"));
	assert_false(ntws_str_eq(str("8"), "13"));
	assert_false(ntws_str_eq(str("13, 8"), "13"));
	assert_false(ntws_str_eq(none, "13"));
}

static void
websocket_key_shape(void **state)
{
	struct ntws_str none = { NULL, 0 };

	assert_true(ntws_http_key_valid(str("dGhlIHNhbXBsZSBub25jZQ==")));
	assert_true(ntws_http_key_valid(str("AAAAAAAAAAAAAAAAAAAA+/==")));
	assert_false(ntws_http_key_valid(str("dGhlIHNhbXBsZSBub25jZQ=")));
	assert_false(ntws_http_key_valid(str("dGhlIHNhbXBsZSBub25jZQ===")));
	assert_false(ntws_http_key_valid(str("dGhlIHNhbXBsZSBub25jZQAA")));
	assert_false(ntws_http_key_valid(str("dGhlIHNhbXBsZSBub25j-Q==")));
	assert_false(ntws_http_key_valid(str("dGhlIHNhbXBsZSBub25j Q==")));
	assert_false(ntws_http_key_valid(str("")));
	assert_false(ntws_http_key_valid(none));
}

/* RFC 6455 1.3, the worked example. */
static void
accept_known_answer(void **state)
{
	const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
	char out[NTWS_WS_ACCEPT_LEN + 1];
	char big[NTWS_WS_KEY_MAX + 1];

	assert_int_equal(ntws_ws_accept(key, strlen(key), out), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	/* Any key hashes; a longer one than the buffer is refused. */
	memset(big, 'k', sizeof(big));
	assert_int_equal(ntws_ws_accept(big, NTWS_WS_KEY_MAX, out), 0);
	assert_int_equal(strlen(out), NTWS_WS_ACCEPT_LEN);
	assert_int_equal(ntws_ws_accept(big, sizeof(big), out), -1);
	assert_string_equal(out, "");
}

static void
query_parameters(void **state)
{
	struct ntws_str q = str("ack=1&token=a%2Eb%20c+d&since=0190-x&tok=no"
	    "&empty=&bad=%zz");
	struct ntws_str none = { NULL, 0 };
	char out[32], small[4];

	assert_int_equal(ntws_http_query_param(q, "token", out, sizeof(out)), 7);
	assert_string_equal(out, "a.b c d");
	assert_int_equal(ntws_http_query_param(q, "since", out, sizeof(out)), 6);
	assert_string_equal(out, "0190-x");
	assert_int_equal(ntws_http_query_param(q, "ack", out, sizeof(out)), 1);
	assert_string_equal(out, "1");
	/* Names match whole: "tok" is not "token" and the reverse. */
	assert_int_equal(ntws_http_query_param(q, "tok", out, sizeof(out)), 2);
	assert_string_equal(out, "no");
	assert_int_equal(ntws_http_query_param(q, "toke", out, sizeof(out)), -1);
	assert_int_equal(ntws_http_query_param(q, "empty", out, sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_int_equal(ntws_http_query_param(q, "bad", out, sizeof(out)), -2);
	/* Too long for the buffer (with its NUL): malformed, not cut. */
	assert_int_equal(ntws_http_query_param(q, "since", small,
	    sizeof(small)), -2);
	assert_int_equal(ntws_http_query_param(str(""), "token", out,
	    sizeof(out)), -1);
	assert_int_equal(ntws_http_query_param(none, "token", out,
	    sizeof(out)), -1);
}

static void
bearer_token_in_the_protocol_header(void **state)
{
	struct ntws_str none = { NULL, 0 };
	char out[16];

	assert_int_equal(ntws_http_bearer_token(str("bearer, tok.en"), out,
	    sizeof(out)), 1);
	assert_string_equal(out, "tok.en");
	assert_int_equal(ntws_http_bearer_token(str("tok.en ,Bearer"), out,
	    sizeof(out)), 1);
	assert_string_equal(out, "tok.en");
	/* Offered, with no token: the query may still carry one. */
	assert_int_equal(ntws_http_bearer_token(str("bearer"), out,
	    sizeof(out)), 1);
	assert_string_equal(out, "");
	/* A token longer than the buffer is dropped, not cut. */
	assert_int_equal(ntws_http_bearer_token(str("bearer, "
	    "0123456789abcdefXYZ"), out, sizeof(out)), 1);
	assert_string_equal(out, "");
	/* ...and no later item takes its place (found by fuzz_handshake). */
	assert_int_equal(ntws_http_bearer_token(str("0123456789abcdefXYZ, "
	    "bearer, o"), out, sizeof(out)), 1);
	assert_string_equal(out, "");
	/* No "bearer": no token, whatever else is offered. */
	assert_int_equal(ntws_http_bearer_token(str("chat, tok.en"), out,
	    sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_int_equal(ntws_http_bearer_token(none, out, sizeof(out)), 0);
	assert_string_equal(out, "");
}

static void
origin_list(void **state)
{
	const char *list = " http://a.example , https://b.example:8443,,";
	struct ntws_str none = { NULL, 0 };

	assert_true(ntws_http_origin_allowed(NULL, str("https://evil")));
	assert_true(ntws_http_origin_allowed(list, none));
	assert_true(ntws_http_origin_allowed(list, str("http://a.example")));
	assert_true(ntws_http_origin_allowed(list, str("HTTPS://B.example:8443")));
	assert_false(ntws_http_origin_allowed(list, str("https://a.example")));
	assert_false(ntws_http_origin_allowed(list, str("http://a.example.evil")));
	assert_false(ntws_http_origin_allowed("http://a.example", str("")));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parses_an_upgrade_request),
		cmocka_unit_test(head_len_stops_at_the_blank_line),
		cmocka_unit_test(partial_until_the_blank_line),
		cmocka_unit_test(bad_request_lines),
		cmocka_unit_test(bad_headers),
		cmocka_unit_test(tabs_unknown_headers_and_forwarded_for),
		cmocka_unit_test(header_count_limit),
		cmocka_unit_test(head_size_limit),
		cmocka_unit_test(tokens_of_list_headers),
		cmocka_unit_test(websocket_key_shape),
		cmocka_unit_test(accept_known_answer),
		cmocka_unit_test(query_parameters),
		cmocka_unit_test(bearer_token_in_the_protocol_header),
		cmocka_unit_test(origin_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
