#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nt_config.h"

#define SET_ERR(...) do { if (err) snprintf(err, errlen, __VA_ARGS__); } while (0)

int
nt_u64_parse(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Split "123suffix" into a number and its suffix. */
static int
number_with_suffix(const char *s, uint64_t *num, const char **suffix)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	*num = v;
	*suffix = end;
	return 0;
}

static int
mul_checked(uint64_t a, uint64_t b, uint64_t *out)
{
	if (b != 0 && a > UINT64_MAX / b)
		return -1;
	*out = a * b;
	return 0;
}

int
nt_size_parse(const char *s, size_t *out)
{
	uint64_t n, mult = 1, v;
	const char *suf;

	if (number_with_suffix(s, &n, &suf) < 0)
		return -1;
	if (strcmp(suf, "") == 0 || strcmp(suf, "b") == 0 || strcmp(suf, "B") == 0)
		mult = 1;
	else if (strcmp(suf, "k") == 0 || strcmp(suf, "K") == 0 || strcmp(suf, "KiB") == 0)
		mult = 1024;
	else if (strcmp(suf, "m") == 0 || strcmp(suf, "M") == 0 || strcmp(suf, "MiB") == 0)
		mult = 1024 * 1024;
	else if (strcmp(suf, "g") == 0 || strcmp(suf, "G") == 0 || strcmp(suf, "GiB") == 0)
		mult = 1024ULL * 1024 * 1024;
	else
		return -1;
	if (mul_checked(n, mult, &v) < 0 || v > SIZE_MAX)
		return -1;
	*out = (size_t)v;
	return 0;
}

int
nt_duration_ms_parse(const char *s, uint64_t *ms)
{
	uint64_t n, mult;
	const char *suf;

	if (number_with_suffix(s, &n, &suf) < 0)
		return -1;
	if (strcmp(suf, "ms") == 0)
		mult = 1;
	else if (strcmp(suf, "") == 0 || strcmp(suf, "s") == 0)
		mult = 1000;
	else if (strcmp(suf, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(suf, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(suf, "d") == 0)
		mult = 86400ULL * 1000;
	else
		return -1;
	return mul_checked(n, mult, ms);
}

/* A decimal int in [min, max]: ports, database numbers. */
static int
int_parse(const char *s, int min, int max, int *out)
{
	uint64_t v;

	if (nt_u64_parse(s, (uint64_t)min, (uint64_t)max, &v) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

/* Copy n bytes of src into dst (size dstlen) with a NUL; -1 if too long. */
static int
copy_n(char *dst, size_t dstlen, const char *src, size_t n)
{
	if (n >= dstlen)
		return -1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

int
nt_hostport_parse(const char *s, char *host, size_t hostlen, int *port,
    char *err, size_t errlen)
{
	const char *colon, *hstart = s, *hend;

	if (s == NULL || *s == '\0') {
		SET_ERR("empty address");
		return -1;
	}
	if (*s == '[') {
		hstart = s + 1;
		hend = strchr(hstart, ']');
		if (hend == NULL || hend[1] != ':') {
			SET_ERR("bad address '%s': expected [IPv6]:PORT", s);
			return -1;
		}
		colon = hend + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL) {
			SET_ERR("bad address '%s': expected HOST:PORT", s);
			return -1;
		}
		hend = colon;
	}
	if (hend == hstart || copy_n(host, hostlen, hstart, (size_t)(hend - hstart)) < 0) {
		SET_ERR("bad address '%s': empty or too long host", s);
		return -1;
	}
	if (int_parse(colon + 1, 1, 65535, port) < 0) {
		SET_ERR("bad address '%s': port must be 1..65535", s);
		return -1;
	}
	return 0;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
nt_percent_decode(const char *s, size_t n, int plus_space, char *out,
    size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int hi, lo;

		if (o + 1 >= outlen)
			return -1;
		if (s[i] != '%') {
			out[o++] = plus_space && s[i] == '+' ? ' ' : s[i];
			continue;
		}
		/* Exactly two hex digits (sscanf's %x would skip blanks). */
		if (n - i < 3 || (hi = hex_digit(s[i + 1])) < 0 ||
		    (lo = hex_digit(s[i + 2])) < 0 || (hi == 0 && lo == 0))
			return -1;
		out[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	if (outlen == 0)
		return -1;
	out[o] = '\0';
	return (int)o;
}

/* In place: decoding never writes ahead of what it reads. */
static int
url_unescape(char *s)
{
	size_t n = strlen(s);

	return nt_percent_decode(s, n, 0, s, n + 1) < 0 ? -1 : 0;
}

static int
parse_unix_url(const char *rest, struct nt_redis_url *out, char *err,
    size_t errlen)
{
	const char *q = strchr(rest, '?');
	size_t plen = q ? (size_t)(q - rest) : strlen(rest);

	out->is_unix = 1;
	if (plen == 0 || rest[0] != '/' ||
	    copy_n(out->path, sizeof(out->path), rest, plen) < 0) {
		SET_ERR("bad redis URL: unix:// needs an absolute socket path");
		return -1;
	}
	if (q != NULL) {
		if (strncmp(q + 1, "db=", 3) != 0 || int_parse(q + 4, 0, 1000000, &out->db) < 0) {
			SET_ERR("bad redis URL: expected ?db=N after the socket path");
			return -1;
		}
	}
	return 0;
}

static int
parse_userinfo(const char *s, size_t n, struct nt_redis_url *out)
{
	const char *colon = memchr(s, ':', n);

	if (colon == NULL) {
		/* redis://secret@host: a password alone, as redis-cli takes it. */
		if (copy_n(out->password, sizeof(out->password), s, n) < 0)
			return -1;
	} else {
		if (copy_n(out->username, sizeof(out->username), s,
		    (size_t)(colon - s)) < 0 ||
		    copy_n(out->password, sizeof(out->password), colon + 1,
		    n - (size_t)(colon - s) - 1) < 0)
			return -1;
	}
	if (url_unescape(out->username) < 0 || url_unescape(out->password) < 0)
		return -1;
	return 0;
}

int
nt_redis_url_parse(const char *url, struct nt_redis_url *out, char *err,
    size_t errlen)
{
	const char *rest, *at, *slash, *hp_end;
	char hostport[300];

	memset(out, 0, sizeof(*out));
	out->port = 6379;
	if (url == NULL || *url == '\0') {
		SET_ERR("empty redis URL");
		return -1;
	}
	if (strncmp(url, "unix://", 7) == 0)
		return parse_unix_url(url + 7, out, err, errlen);
	if (strncmp(url, "redis://", 8) != 0) {
		SET_ERR("bad redis URL: expected redis://[:password@]host[:port][/db] or unix:///path");
		return -1;
	}
	rest = url + 8;
	slash = strchr(rest, '/');
	hp_end = slash ? slash : rest + strlen(rest);
	/* The last '@' before the path: passwords may contain '@' escaped or not. */
	at = NULL;
	for (const char *p = rest; p < hp_end; p++)
		if (*p == '@')
			at = p;
	if (at != NULL) {
		if (parse_userinfo(rest, (size_t)(at - rest), out) < 0) {
			SET_ERR("bad redis URL: bad or too long user/password");
			return -1;
		}
		rest = at + 1;
	}
	if (copy_n(hostport, sizeof(hostport), rest, (size_t)(hp_end - rest)) < 0 ||
	    hostport[0] == '\0') {
		SET_ERR("bad redis URL: missing or too long host");
		return -1;
	}
	if (hostport[0] == '[' && strchr(hostport, ']') != NULL &&
	    strchr(hostport, ']')[1] == '\0') {
		/* [IPv6] without a port: the default port. */
		size_t hl = strlen(hostport);
		if (hl <= 2 || copy_n(out->host, sizeof(out->host), hostport + 1,
		    hl - 2) < 0) {
			SET_ERR("bad redis URL: empty or too long host");
			return -1;
		}
	} else if (hostport[0] == '[' || strchr(hostport, ':') != NULL) {
		char why[256];
		if (nt_hostport_parse(hostport, out->host, sizeof(out->host),
		    &out->port, why, sizeof(why)) < 0) {
			SET_ERR("bad redis URL: %s", why);
			return -1;
		}
	} else if (copy_n(out->host, sizeof(out->host), hostport,
	    strlen(hostport)) < 0) {
		SET_ERR("bad redis URL: host too long");
		return -1;
	}
	if (slash != NULL && slash[1] != '\0' && int_parse(slash + 1, 0, 1000000, &out->db) < 0) {
		SET_ERR("bad redis URL: database must be a number after '/'");
		return -1;
	}
	return 0;
}

int
nt_prefix_valid(const char *prefix, char *err, size_t errlen)
{
	size_t n = strlen(prefix);

	if (n > 64) {
		SET_ERR("redis prefix longer than 64 bytes");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		char c = prefix[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("_.:{}-", c))) {
			SET_ERR("redis prefix may only contain A-Z a-z 0-9 _ . : { } -");
			return -1;
		}
	}
	return 0;
}

char *
nt_redis_url_format(const struct nt_redis_url *url, char *buf, size_t len)
{
	const char *open = "", *close = "";

	if (len == 0)
		return buf;
	if (url->is_unix) {
		if (url->db > 0)
			snprintf(buf, len, "unix://%s?db=%d", url->path, url->db);
		else
			snprintf(buf, len, "unix://%s", url->path);
		return buf;
	}
	if (strchr(url->host, ':') != NULL) {
		open = "[";
		close = "]";
	}
	/*
	 * Without a password no AUTH is sent, so a user name alone is not
	 * shown; with one, the user name stays: it tells which ACL user was
	 * tried.
	 */
	if (url->password[0] != '\0')
		snprintf(buf, len, "redis://%s:***@%s%s%s:%d", url->username,
		    open, url->host, close, url->port);
	else
		snprintf(buf, len, "redis://%s%s%s:%d", open, url->host, close,
		    url->port);
	if (url->db > 0) {
		size_t n = strlen(buf);

		snprintf(buf + n, len - n, "/%d", url->db);
	}
	return buf;
}

char *
nt_url_mask_password(const char *text, char *buf, size_t len)
{
	const char *user, *at = NULL, *colon;

	if (len == 0)
		return buf;
	/*
	 * The last '@' of the whole text: a password may hold '@' or '/'
	 * (unescaped, in a URL that will not parse), and masking too much
	 * of a bad value does less harm than showing a password.
	 */
	user = strstr(text, "://");
	if (user != NULL) {
		user += 3;
		at = strrchr(user, '@');
	}
	if (at == NULL) {
		snprintf(buf, len, "%s", text);
		return buf;
	}
	colon = memchr(user, ':', (size_t)(at - user));
	if (colon == NULL)
		colon = user - 1;  /* the whole userinfo is the password */
	snprintf(buf, len, "%.*s***%s", (int)(colon + 1 - text), text, at);
	return buf;
}

char *
nt_file_read(const char *path, size_t max, size_t *len, char *err,
    size_t errlen)
{
	char *buf;
	size_t n = 0;
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		SET_ERR("%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(max + 1);
	if (buf == NULL) {
		SET_ERR("%s: out of memory", path);
		close(fd);
		return NULL;
	}
	for (;;) {
		r = read(fd, buf + n, max + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			SET_ERR("%s: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			SET_ERR("%s: larger than %zu bytes", path, max);
			goto fail;
		}
	}
	close(fd);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
fail:
	close(fd);
	free(buf);
	return NULL;
}
