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
 * value when not NULL, else the environment variable env_name when set
 * and non-empty, else fallback. Returned pointers are borrowed.
 */
const char *nt_env_or(const char *value, const char *env_name,
    const char *fallback);

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
 * Where every program finds Redis: the --redis and --redis-prefix values
 * (NULL when not given), else NOTIFYD_REDIS_URL and NOTIFYD_REDIS_PREFIX,
 * else the defaults; parsed into *url and checked. *prefix is borrowed
 * from the flag or the environment. 0, or -1 with err set (exit 78).
 */
int nt_redis_settings(const char *url_flag, const char *prefix_flag,
    struct nt_redis_url *url, const char **prefix, char *err, size_t errlen);

/*
 * Read a whole small file (a key, a secret) into a NUL-terminated
 * malloc'd buffer; *len excludes the NUL. Caller frees. Trailing
 * newlines are kept: callers that want them gone strip them.
 */
char *nt_file_read(const char *path, size_t max, size_t *len,
    char *err, size_t errlen);

#endif
