/*
 * The channels claim of a token and the private channels it opens; see
 * grants.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grants.h"
#include "nt_msg.h"

/*
 * Whether pattern[0..len) is a channel name, or one followed by '*', or
 * "*" alone; err says why not.
 */
static int
pattern_valid(const char *pattern, size_t len, char *err, size_t errlen)
{
	char name[NT_CHANNEL_MAX + 2];

	if (len == 1 && pattern[0] == '*')
		return 0;
	if (len > 0 && pattern[len - 1] == '*')
		len--;
	if (len == 0 || len > NT_CHANNEL_MAX) {
		snprintf(err, errlen, "a channel pattern is empty or too long");
		return -1;
	}
	memcpy(name, pattern, len);
	name[len] = '\0';
	return nt_channel_valid(name, err, errlen);
}

int
ntws_grants_from_claims(const json_t *claims, char **out, char *err,
    size_t errlen)
{
	const json_t *list = json_object_get(claims, "channels");
	const json_t *el;
	size_t i, len, total = 1;
	char why[128], *block, *p;

	*out = NULL;
	if (list == NULL)
		return 0;
	if (!json_is_array(list)) {
		snprintf(err, errlen, "channels claim is not an array");
		return -1;
	}
	json_array_foreach(list, i, el) {
		/* A NUL inside the string would cut the pattern short. */
		if (!json_is_string(el) ||
		    strlen(json_string_value(el)) != json_string_length(el)) {
			snprintf(err, errlen, "channels claim: item %zu is not a "
			    "string", i);
			return -1;
		}
		len = json_string_length(el);
		if (pattern_valid(json_string_value(el), len, why,
		    sizeof(why)) != 0) {
			snprintf(err, errlen, "channels claim: item %zu: %s", i, why);
			return -1;
		}
		total += len + 1;
	}
	if (json_array_size(list) == 0)
		return 0;
	if ((block = malloc(total)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	p = block;
	json_array_foreach(list, i, el) {
		len = json_string_length(el);
		memcpy(p, json_string_value(el), len + 1);
		p += len + 1;
	}
	*p = '\0';
	*out = block;
	return 0;
}

int
ntws_grants_allow(const char *grants, const char *channel)
{
	const char *p;
	size_t len;

	if (grants == NULL)
		return 0;
	for (p = grants; *p != '\0'; p += len + 1) {
		len = strlen(p);
		if (p[len - 1] == '*') {
			if (strncmp(channel, p, len - 1) == 0)
				return 1;
		} else if (strcmp(channel, p) == 0)
			return 1;
	}
	return 0;
}

int
ntws_channel_private(const char *prefix, const char *channel)
{
	return strncmp(channel, prefix, strlen(prefix)) == 0;
}
