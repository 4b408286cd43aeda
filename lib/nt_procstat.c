/*
 * nt_procstat: process_* metrics from /proc/self; see nt_procstat.h.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "nt_procstat.h"

/* Seconds since the epoch at which the machine booted (/proc/stat btime). */
static double
boot_time(void)
{
	char line[256];
	double bt = 0;
	FILE *f = fopen("/proc/stat", "r");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "btime ", 6) == 0) {
			bt = strtod(line + 6, NULL);
			break;
		}
	fclose(f);
	return bt;
}

static long
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;  /* the directory stream's own descriptor */
}

int
nt_procstat_read(struct nt_procstat *ps)
{
	char buf[1024], *p;
	unsigned long utime, stime, vsize;
	unsigned long long start;
	long rss, tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl;
	size_t n;
	FILE *f;

	memset(ps, 0, sizeof(*ps));
	if ((f = fopen("/proc/self/stat", "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and ')': fields start after the last ')'. */
	if ((p = strrchr(buf, ')')) == NULL)
		return -1;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu "
	    "%*d %*d %*d %*d %*d %*d %llu %lu %ld", &utime, &stime, &start,
	    &vsize, &rss) != 5 || tick <= 0)
		return -1;
	ps->cpu_seconds = (double)(utime + stime) / (double)tick;
	ps->start_time_s = boot_time() + (double)start / (double)tick;
	ps->virtual_bytes = vsize;
	ps->resident_bytes = (size_t)rss * (size_t)page;
	ps->open_fds = count_fds();
	ps->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ?
	    (long)rl.rlim_cur : -1;
	return 0;
}

int
nt_procstat_format(const struct nt_procstat *ps, const char *program,
    char *buf, size_t len)
{
	return snprintf(buf, len,
	    "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
	    "# TYPE process_cpu_seconds_total counter\n"
	    "process_cpu_seconds_total %.2f\n"
	    "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
	    "# TYPE process_start_time_seconds gauge\n"
	    "process_start_time_seconds %.2f\n"
	    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
	    "# TYPE process_resident_memory_bytes gauge\n"
	    "process_resident_memory_bytes %zu\n"
	    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
	    "# TYPE process_virtual_memory_bytes gauge\n"
	    "process_virtual_memory_bytes %zu\n"
	    "# HELP process_open_fds Number of open file descriptors.\n"
	    "# TYPE process_open_fds gauge\n"
	    "process_open_fds %ld\n"
	    "# HELP process_max_fds Maximum number of open file descriptors.\n"
	    "# TYPE process_max_fds gauge\n"
	    "process_max_fds %ld\n"
	    "# HELP notifyd_build_info The program and version of this build, always 1.\n"
	    "# TYPE notifyd_build_info gauge\n"
	    "notifyd_build_info{program=\"%s\",version=\"%s\"} 1\n",
	    ps->cpu_seconds, ps->start_time_s, ps->resident_bytes,
	    ps->virtual_bytes, ps->open_fds, ps->max_fds, program, NT_VERSION);
}
