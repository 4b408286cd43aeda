/*
 * nt_log: one line per event on stderr, for the daemons and the CLIs.
 *
 *   2026-11-26T22:43:46.123Z notifyd-ws[4242] info: listening on 127.0.0.1:8080
 *
 * Never pass a token, password or key to these functions.
 */
#ifndef NT_LOG_H
#define NT_LOG_H

enum nt_log_level {
	NT_LOG_ERR = 0,
	NT_LOG_WARN,
	NT_LOG_INFO,
	NT_LOG_DEBUG,
};

/* Set the program name (borrowed: must outlive logging) and the level. */
void nt_log_init(const char *prog, enum nt_log_level level);

/* "error", "warn", "info", "debug" -> 0, or -1 when unknown. */
int nt_log_level_parse(const char *name, enum nt_log_level *out);

struct nt_opt;

/* nt_opt parser of --log-level: dst is an enum nt_log_level *. */
int nt_log_opt_level(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* Whether a message at this level would be written (skip costly args). */
int nt_log_enabled(enum nt_log_level level);

void nt_log(enum nt_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define nt_log_err(...)   nt_log(NT_LOG_ERR, __VA_ARGS__)
#define nt_log_warn(...)  nt_log(NT_LOG_WARN, __VA_ARGS__)
#define nt_log_info(...)  nt_log(NT_LOG_INFO, __VA_ARGS__)
#define nt_log_debug(...) nt_log(NT_LOG_DEBUG, __VA_ARGS__)

#endif
