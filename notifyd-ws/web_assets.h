/*
 * The browser client and demo page, compiled in from clients/js/ by
 * tools/embed-assets.sh so that one binary serves them.
 */
#ifndef NT_WEB_ASSETS_H
#define NT_WEB_ASSETS_H

#include <stddef.h>

struct nt_web_asset {
	const char          *path;          /* "/notify-client.js" */
	const char          *content_type;
	const unsigned char *data;          /* NUL-terminated, len excludes it */
	size_t               len;
};

/* Terminated by an entry whose path is NULL. */
extern const struct nt_web_asset nt_web_assets[];

#endif
