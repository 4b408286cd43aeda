/*
 * notifyd-ws/buf.c: server frames (RFC 6455 5.2) and the shared,
 * reference-counted buffers they live in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

/* What a client reads from a frame header: RFC 6455 5.2, by hand. */
struct head {
	int      fin, rsv, opcode, masked;
	uint64_t len;
	size_t   hlen;
};

static struct head
read_head(const uint8_t *d)
{
	struct head h;
	int i;

	h.fin = d[0] >> 7;
	h.rsv = (d[0] >> 4) & 7;
	h.opcode = d[0] & 0x0f;
	h.masked = d[1] >> 7;
	h.len = d[1] & 0x7f;
	h.hlen = 2;
	if (h.len == 126) {
		h.len = (uint64_t)d[2] << 8 | d[3];
		h.hlen = 4;
	} else if (h.len == 127) {
		h.len = 0;
		for (i = 0; i < 8; i++)
			h.len = h.len << 8 | d[2 + i];
		h.hlen = 10;
	}
	return h;
}

/* A frame of len bytes of a pattern: header form, bits, payload. */
static void
check_frame(int opcode, size_t len, size_t want_hlen)
{
	uint8_t *payload = malloc(len > 0 ? len : 1);
	struct ntws_buf *b;
	struct head h;
	size_t i;

	assert_non_null(payload);
	for (i = 0; i < len; i++)
		payload[i] = (uint8_t)(i * 7 + 3);
	b = ntws_buf_frame(opcode, payload, len);
	assert_non_null(b);
	h = read_head(b->data);
	assert_int_equal(h.hlen, want_hlen);
	assert_int_equal(h.len, len);
	assert_int_equal(b->len, want_hlen + len);
	assert_int_equal(h.fin, 1);
	assert_int_equal(h.rsv, 0);
	assert_int_equal(h.masked, 0);   /* a server never masks */
	assert_int_equal(h.opcode, opcode);
	if (len > 0)
		assert_memory_equal(b->data + h.hlen, payload, len);
	assert_int_equal(b->refs, 1);
	assert_int_equal(b->kind, NTWS_BUF_RAW);
	ntws_buf_unref(b);
	free(payload);
}

static void
length_forms_at_their_boundaries(void **state)
{
	check_frame(0x1, 0, 2);
	check_frame(0x1, 1, 2);
	check_frame(0x1, 125, 2);        /* the largest 7-bit length */
	check_frame(0x1, 126, 4);        /* the smallest 16-bit one */
	check_frame(0x2, 127, 4);
	check_frame(0x1, 65535, 4);      /* the largest 16-bit one */
	check_frame(0x1, 65536, 10);     /* the smallest 64-bit one */
	check_frame(0x1, 70000, 10);
}

static void
exact_header_bytes(void **state)
{
	struct ntws_buf *b;
	uint8_t big[65536];

	memset(big, 'x', sizeof(big));
	b = ntws_buf_frame(0x1, "hi", 2);
	assert_memory_equal(b->data, "\x81\x02hi", 4);
	ntws_buf_unref(b);
	b = ntws_buf_frame(0x1, big, 126);
	assert_memory_equal(b->data, "\x81\x7e\x00\x7e", 4);
	ntws_buf_unref(b);
	b = ntws_buf_frame(0x1, big, 65535);
	assert_memory_equal(b->data, "\x81\x7e\xff\xff", 4);
	ntws_buf_unref(b);
	b = ntws_buf_frame(0x1, big, 65536);
	assert_memory_equal(b->data, "\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
	    10);
	ntws_buf_unref(b);
}

static void
opcodes_keep_fin_and_only_four_bits(void **state)
{
	static const int ops[] = { 0x0, 0x1, 0x2, 0x8, 0x9, 0xa };
	size_t i;

	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		check_frame(ops[i], 3, 2);
	/* Bits over the opcode's four never reach FIN or RSV. */
	{
		struct ntws_buf *b = ntws_buf_frame(0x71, "x", 1);

		assert_int_equal(b->data[0], 0x81);
		ntws_buf_unref(b);
	}
}

/* A close frame as notifyd-ws builds one: code big-endian, then reason. */
static void
close_frame_with_code(void **state)
{
	const char reason[] = "slow consumer";
	uint8_t payload[2 + sizeof(reason) - 1];
	struct ntws_buf *b;
	struct head h;

	payload[0] = 1013 >> 8;
	payload[1] = 1013 & 0xff;
	memcpy(payload + 2, reason, sizeof(reason) - 1);
	b = ntws_buf_frame(0x8, payload, sizeof(payload));
	h = read_head(b->data);
	assert_int_equal(h.opcode, 0x8);
	assert_int_equal(h.fin, 1);
	assert_int_equal(h.len, 2 + strlen(reason));
	assert_int_equal(b->data[2] << 8 | b->data[3], 1013);
	assert_memory_equal(b->data + 4, reason, strlen(reason));
	ntws_buf_unref(b);
	/* The largest control payload still takes the 7-bit form. */
	check_frame(0x8, 125, 2);
}

static void
references_and_live_bytes(void **state)
{
	size_t before = ntws_buf_bytes();
	struct ntws_buf *b = ntws_buf_frame(0x1, "abc", 3);
	struct ntws_buf *raw = ntws_buf_raw("HTTP/1.1 200 OK\r\n", 17);

	assert_int_equal(ntws_buf_bytes(), before + 5 + 17);
	assert_memory_equal(raw->data, "HTTP/1.1 200 OK\r\n", 17);
	assert_int_equal(raw->len, 17);
	assert_ptr_equal(ntws_buf_ref(b), b);
	assert_int_equal(b->refs, 2);
	ntws_buf_unref(b);
	/* Still held once: still counted. */
	assert_int_equal(ntws_buf_bytes(), before + 5 + 17);
	ntws_buf_unref(b);
	ntws_buf_unref(raw);
	ntws_buf_unref(NULL);
	assert_int_equal(ntws_buf_bytes(), before);
	raw = ntws_buf_raw(NULL, 0);
	assert_non_null(raw);
	assert_int_equal(raw->len, 0);
	ntws_buf_unref(raw);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(length_forms_at_their_boundaries),
		cmocka_unit_test(exact_header_bytes),
		cmocka_unit_test(opcodes_keep_fin_and_only_four_bits),
		cmocka_unit_test(close_frame_with_code),
		cmocka_unit_test(references_and_live_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
