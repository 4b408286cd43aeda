/*
 * Shared outbound buffers: a frame is encoded once and referenced by
 * every connection queue it sits in.
 */
#include <stdlib.h>
#include <string.h>

#include "ws.h"

static struct ntws_buf *
buf_new(size_t len, const char *id)
{
	size_t idlen = id != NULL ? strlen(id) + 1 : 0;
	struct ntws_buf *b;

	if (len > UINT32_MAX)
		return NULL;
	b = malloc(sizeof(*b) + len + idlen);
	if (b == NULL)
		return NULL;
	memset(b, 0, sizeof(*b));
	b->refs = 1;
	b->len = (uint32_t)len;
	if (id != NULL) {
		b->id = (char *)b->data + len;
		memcpy(b->id, id, idlen);
	}
	return b;
}

struct ntws_buf *
ntws_buf_frame(int opcode, const void *payload, size_t len, const char *id)
{
	struct ntws_buf *b;
	size_t hlen = len < 126 ? 2 : len <= 0xffff ? 4 : 10, i;

	if ((b = buf_new(hlen + len, id)) == NULL)
		return NULL;
	/* Server frames are unmasked and never fragmented (RFC 6455 5.2). */
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

	if ((b = buf_new(len, NULL)) == NULL)
		return NULL;
	memcpy(b->data, data, len);
	return b;
}

void
ntws_buf_unref(struct ntws_buf *b)
{
	if (b != NULL && --b->refs == 0)
		free(b);
}
