/*
 * Shared outbound buffers; see buf.h.
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static size_t live_bytes;   /* data bytes of the buffers alive */

static struct ntws_buf *
buf_new(size_t len)
{
	struct ntws_buf *b;

	if (len > UINT32_MAX)
		return NULL;
	if ((b = malloc(sizeof(*b) + len)) == NULL)
		return NULL;
	memset(b, 0, sizeof(*b));
	b->refs = 1;
	b->len = (uint32_t)len;
	live_bytes += len;
	return b;
}

struct ntws_buf *
ntws_buf_frame(int opcode, const void *payload, size_t len)
{
	struct ntws_buf *b;
	size_t hlen = len < 126 ? 2 : len <= 0xffff ? 4 : 10, i;

	if ((b = buf_new(hlen + len)) == NULL)
		return NULL;
	b->data[0] = 0x80 | (uint8_t)(opcode & 0x0f);
	if (hlen == 2)
		b->data[1] = (uint8_t)len;
	else if (hlen == 4) {
		b->data[1] = 126;
		b->data[2] = (uint8_t)(len >> 8);
		b->data[3] = (uint8_t)len;
	} else {
		b->data[1] = 127;
		for (i = 0; i < 8; i++)
			b->data[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
	}
	if (len > 0)
		memcpy(b->data + hlen, payload, len);
	return b;
}

struct ntws_buf *
ntws_buf_raw(const void *data, size_t len)
{
	struct ntws_buf *b;

	if ((b = buf_new(len)) == NULL)
		return NULL;
	if (len > 0)
		memcpy(b->data, data, len);
	return b;
}

void
ntws_buf_unref(struct ntws_buf *b)
{
	if (b == NULL || --b->refs > 0)
		return;
	live_bytes -= b->len;
	free(b);
}

size_t
ntws_buf_bytes(void)
{
	return live_bytes;
}
