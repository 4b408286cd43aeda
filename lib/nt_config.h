/*
 * nt_config: parsing of the values every program takes from flags or
 * NOTIFYD_* environment variables. Nothing here prints or exits; each
 * parser returns 0 on success or -1 with a one-line reason in err.
 */
#ifndef NT_CONFIG_H
#define NT_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sysexits.h>

/* Fixed exit codes of every notifyd program (sysexits). */
#define NT_EXIT_OK          0
#define NT_EXIT_USAGE       EX_USAGE        /* 64: bad flags */
#define NT_EXIT_DATAERR     EX_DATAERR      /* 65: bad input data */
#define NT_EXIT_UNAVAILABLE EX_UNAVAILABLE  /* 69: Redis unreachable/refused */
#define NT_EXIT_SOFTWARE    EX_SOFTWARE     /* 70: internal error */
#define NT_EXIT_CONFIG      EX_CONFIG       /* 78: bad configuration */

#define NT_DEFAULT_REDIS_URL "redis://127.0.0.1:6379"

struct nt_redis_url {
	int  is_unix;          /* 1: unix socket at path; 0: TCP host:port */
	char host[256];
	int  port;
	char path[108];
	char username[128];    /* empty: none (Redis 6 ACL user) */
	char password[256];    /* empty: no AUTH */
	int  db;               /* SELECT db when > 0 */
};

/*
 * Parse redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N].
 * IPv6 hosts go in brackets: redis://[::1]:6379.
 */
int nt_redis_url_parse(const char *url, struct nt_redis_url *out,
    char *err, size_t errlen);

/*
 * The URL as text for messages, the password masked: redis://:***@host:6379/2,
 * redis://user:***@[::1]:6379, unix:///run/redis.sock?db=1. Always
 * NUL-terminated, cut to len; returns buf.
 */
char *nt_redis_url_format(const struct nt_redis_url *url, char *buf,
    size_t len);

/*
 * text with the password of a URL in it masked, for echoing a value the
 * user gave: "redis://u:pw@h" becomes "redis://u:***@h"; a userinfo
 * without ':' is masked whole (it is a password in redis URLs); any
 * other text is copied as it is. Always NUL-terminated, cut to len;
 * returns buf.
 */
char *nt_url_mask_password(const char *text, char *buf, size_t len);

/* "host:port" or "[v6]:port" -> host (no brackets) and port 1..65535. */
int nt_hostport_parse(const char *s, char *host, size_t hostlen, int *port,
    char *err, size_t errlen);

/* Decimal integer in [min, max], whole string, no sign games. */
int nt_u64_parse(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Byte size with optional suffix k/K (1024), m/M, g/G: "64k", "1M". */
int nt_size_parse(const char *s, size_t *out);

/* Duration with optional suffix ms, s, m, h, d (default seconds) -> ms. */
int nt_duration_ms_parse(const char *s, uint64_t *ms);

/*
 * Decode n bytes of URL-encoded text into out (outlen bytes, always
 * NUL-terminated on success): %XX takes exactly two hex digits, and with
 * plus_space '+' is a space. %00 is refused, since the result is used as
 * a C string (a password, a token). Returns the decoded length, or -1 on
 * a bad escape or when out is too small. s and out may be the same.
 */
int nt_percent_decode(const char *s, size_t n, int plus_space, char *out,
    size_t outlen);

/* Key prefix: at most 64 bytes of [A-Za-z0-9_.:{}-]. */
int nt_prefix_valid(const char *prefix, char *err, size_t errlen);

/*
 * Read a whole small file (a key, a secret) into a NUL-terminated
 * malloc'd buffer; *len excludes the NUL. Caller frees. Trailing
 * newlines are kept: callers that want them gone strip them.
 */
char *nt_file_read(const char *path, size_t max, size_t *len,
    char *err, size_t errlen);

#endif
