/*
 * grants: the private channels a token opens (notifyd-ws(8), "Private
 * channels"). A channel whose name starts with --private-prefix may be
 * subscribed to only by a connection whose token lists it in its
 * "channels" claim: a JSON array of patterns, each a channel name
 * (exact) or a channel name followed by '*' (every channel that starts
 * with it; "*" alone: every channel). Pure: no connection, no config.
 *
 * A connection keeps its grants as one compact malloc'd block: the
 * patterns one after the other, each NUL-terminated, the block ended by
 * an empty string. A token without the claim keeps NULL, and costs
 * nothing more.
 */
#ifndef NTWS_GRANTS_H
#define NTWS_GRANTS_H

#include <stddef.h>
#include <jansson.h>

/*
 * The grants of a verified token's claims (borrowed). 0 with *out a new
 * block the caller frees, or NULL when there is no "channels" claim or
 * it is an empty array; -1 with a reason in err when the claim is there
 * but is not an array of valid patterns (the token is then refused).
 */
int ntws_grants_from_claims(const json_t *claims, char **out, char *err,
    size_t errlen);

/* Whether grants (a block as above, or NULL: none) open channel. */
int ntws_grants_allow(const char *grants, const char *channel);

/*
 * Whether channel is private under prefix: it starts with prefix. The
 * empty prefix makes every channel private.
 */
int ntws_channel_private(const char *prefix, const char *channel);

#endif
