/*
 * nt_uuid: UUIDv7 message ids (RFC 9562) that sort in creation order.
 * Within a process ids are strictly increasing, even inside one
 * millisecond and across threads, so sorting offline messages by id
 * (plain strcmp of the text form) replays them in the order sent.
 */
#ifndef NT_UUID_H
#define NT_UUID_H

#include <stdint.h>

#define NT_UUID_STRLEN 36 /* without the NUL */

/* Write a new id as 36 lowercase hex-and-dash characters plus NUL. */
void nt_uuid7(char out[NT_UUID_STRLEN + 1]);

/* 0 when s is a canonical lowercase UUID string, else -1. */
int nt_uuid_valid(const char *s);

/* The Unix time in ms a UUIDv7 was made at; -1 when s is not one. */
int nt_uuid7_time_ms(const char *s, uint64_t *ms);

#endif
