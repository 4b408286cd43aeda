#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "nt_uuid.h"

/*
 * Monotonicity (RFC 9562 §6.2, method 1): after the 48-bit millisecond
 * time, 42 bits (the 12 of rand_a and the top 30 of rand_b) are a counter
 * that starts at a random value below 2^41 each new millisecond and is
 * incremented for each id within it. If it ever overflows, the time field
 * moves one millisecond ahead of the clock. The last 32 bits are random.
 * A clock that steps back keeps the last time: ids never go backwards.
 */
#define COUNTER_BITS 42
#define COUNTER_MAX  ((UINT64_C(1) << COUNTER_BITS) - 1)

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t uuid_last_ms;
static uint64_t uuid_counter;

static void
random_bytes(void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r <= 0)
			continue; /* EINTR; the entropy pool is always ready after boot */
		p += r;
		n -= (size_t)r;
	}
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
nt_uuid7(char out[NT_UUID_STRLEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t b[16], rnd[12];
	uint64_t ms, counter, t;
	uint32_t tail;
	char *w = out;

	random_bytes(rnd, sizeof(rnd));
	memcpy(&tail, rnd, 4);
	memcpy(&counter, rnd + 4, 8);
	counter &= (UINT64_C(1) << (COUNTER_BITS - 1)) - 1;

	t = now_ms();
	pthread_mutex_lock(&uuid_lock);
	if (t > uuid_last_ms) {
		uuid_last_ms = t;
		uuid_counter = counter;
	} else if (uuid_counter < COUNTER_MAX) {
		uuid_counter++;
	} else {
		uuid_last_ms++;
		uuid_counter = counter;
	}
	ms = uuid_last_ms;
	counter = uuid_counter;
	pthread_mutex_unlock(&uuid_lock);

	for (int i = 0; i < 6; i++)
		b[i] = (uint8_t)(ms >> (40 - 8 * i));
	b[6] = (uint8_t)(0x70 | ((counter >> 38) & 0x0f));
	b[7] = (uint8_t)(counter >> 30);
	b[8] = (uint8_t)(0x80 | ((counter >> 24) & 0x3f));
	b[9] = (uint8_t)(counter >> 16);
	b[10] = (uint8_t)(counter >> 8);
	b[11] = (uint8_t)counter;
	memcpy(b + 12, &tail, 4);

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*w++ = '-';
		*w++ = hex[b[i] >> 4];
		*w++ = hex[b[i] & 0x0f];
	}
	*w = '\0';
}

int
nt_uuid_valid(const char *s)
{
	for (int i = 0; i < NT_UUID_STRLEN; i++) {
		char c = s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return -1;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return -1;
		}
	}
	return s[NT_UUID_STRLEN] == '\0' ? 0 : -1;
}

int
nt_uuid7_time_ms(const char *s, uint64_t *ms)
{
	uint64_t v = 0;

	if (nt_uuid_valid(s) < 0 || s[14] != '7')
		return -1;
	for (int i = 0; i < 13; i++) {
		char c = s[i];
		if (c == '-')
			continue;
		v = v * 16 + (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	*ms = v;
	return 0;
}
