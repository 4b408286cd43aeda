#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "nt_log.h"
#include "nt_opt.h"

static const char *log_prog = "notifyd";
static enum nt_log_level log_level = NT_LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
nt_log_init(const char *prog, enum nt_log_level level)
{
	log_prog = prog;
	log_level = level;
}

int
nt_log_level_parse(const char *name, enum nt_log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum nt_log_level)i;
			return 0;
		}
	}
	return -1;
}

int
nt_log_enabled(enum nt_log_level level)
{
	return level <= log_level;
}

void
nt_log(enum nt_log_level level, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	va_list ap;
	int n;

	if (!nt_log_enabled(level))
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000), log_prog,
	    (long)getpid(), level_names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	/* One write per line so lines of concurrent writers never interleave. */
	n = (int)strlen(line);
	for (int i = 0; i < n; i++) {
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	}
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
}

int
nt_log_opt_level(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	if (nt_log_level_parse(value, o->dst) == 0)
		return 0;
	snprintf(err, errlen, "want error, warn, info or debug");
	return -1;
}
