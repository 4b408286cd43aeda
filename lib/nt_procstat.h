/*
 * nt_procstat: the standard process_* series of a Prometheus client and
 * notifyd_build_info, read from /proc/self, for both daemons' /metrics.
 */
#ifndef NT_PROCSTAT_H
#define NT_PROCSTAT_H

#include <stddef.h>

struct nt_procstat {
	double      cpu_seconds;     /* user + system */
	double      start_time_s;    /* since the Unix epoch */
	size_t      resident_bytes;
	size_t      virtual_bytes;
	long        open_fds;
	long        max_fds;         /* soft RLIMIT_NOFILE */
};

/* Fill *ps from /proc/self. 0, or -1 when /proc cannot be read. */
int nt_procstat_read(struct nt_procstat *ps);

/*
 * Append the Prometheus text of *ps plus notifyd_build_info{program,
 * version} to buf (at most len bytes, NUL-terminated). Returns the length
 * it needs, as snprintf does: a result >= len means buf was too small.
 */
int nt_procstat_format(const struct nt_procstat *ps, const char *program,
    char *buf, size_t len);

#endif
