/*
 * nt_opt: one table of flags per program; see nt_opt.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "nt_config.h"
#include "nt_opt.h"

#define SET_ERR(...) snprintf(err, errlen, __VA_ARGS__)

/* getopt_long codes of table entries: index + OPT_BASE. */
#define OPT_BASE    256
#define OPT_HELP    (OPT_BASE - 1)
#define OPT_VERSION (OPT_BASE - 2)

/* Column where help text starts, and the width it wraps at. */
#define HELP_COL   28
#define HELP_WIDTH 79
#define NBSP       '\x01'

static int
short_taken(const struct nt_opt_spec *spec, int c)
{
	size_t i;

	for (i = 0; i < spec->nopts; i++)
		if (spec->opts[i].short_name == c)
			return 1;
	return 0;
}

void
nt_opt_usage(const struct nt_opt_spec *spec, FILE *f)
{
	const char *line = spec->synopsis, *nl;
	int first = 1;

	/* Each synopsis line is printed after "usage: prog" or its indent. */
	while (*line != '\0') {
		nl = strchr(line, '\n');
		if (nl == NULL)
			nl = line + strlen(line);
		fprintf(f, "%s%s %.*s\n", first ? "usage: " : "       ",
		    spec->prog, (int)(nl - line), line);
		first = 0;
		line = *nl ? nl + 1 : nl;
	}
	fprintf(f, "       %s --help | --version\n", spec->prog);
}

/* Print words of text from column col, wrapped at HELP_WIDTH. */
static void
wrap(FILE *f, int col, const char *text)
{
	const char *w = text, *end;
	int at = col, len;

	while (*w != '\0') {
		while (*w == ' ')
			w++;
		if (*w == '\0')
			break;
		end = strchr(w, ' ');
		if (end == NULL)
			end = w + strlen(w);
		len = (int)(end - w);
		if (at > col && at + 1 + len > HELP_WIDTH) {
			fprintf(f, "\n%*s", col, "");
			at = col;
		} else if (at > col) {
			fputc(' ', f);
			at++;
		}
		/* NBSP marks a space that must not break a line. */
		for (const char *c = w; c < end; c++)
			fputc(*c == NBSP ? ' ' : *c, f);
		at += len;
		w = end;
	}
	fputc('\n', f);
}

static void
help_line(FILE *f, int short_name, const char *name, const char *arg,
    const char *text)
{
	char head[128];
	int n;

	if (short_name)
		n = snprintf(head, sizeof(head), "  -%c, --%s%s%s", short_name,
		    name, arg ? " " : "", arg ? arg : "");
	else
		n = snprintf(head, sizeof(head), "      --%s%s%s", name,
		    arg ? " " : "", arg ? arg : "");
	if (n < 0)
		return;
	fputs(head, f);
	if (n + 2 > HELP_COL) {
		fprintf(f, "\n%*s", HELP_COL, "");
	} else
		fprintf(f, "%*s", HELP_COL - n, "");
	wrap(f, HELP_COL, text);
}

void
nt_opt_help(const struct nt_opt_spec *spec, FILE *f)
{
	const struct nt_opt *o;
	char text[1024];
	size_t i;
	int n;

	nt_opt_usage(spec, f);
	fputc('\n', f);
	for (i = 0; i < spec->nopts; i++) {
		o = &spec->opts[i];
		n = snprintf(text, sizeof(text), "%s", o->help);
		if (o->def != NULL && *o->def != '\0' && o->arg != NULL)
			n += snprintf(text + n, sizeof(text) - (size_t)n,
			    " (default:%c%s)", NBSP, o->def);
		if (o->env != NULL)
			snprintf(text + n, sizeof(text) - (size_t)n,
			    " [env:%c%s]", NBSP, o->env);
		help_line(f, o->short_name, o->name, o->arg, text);
	}
	help_line(f, short_taken(spec, 'h') ? 0 : 'h', "help", NULL,
	    "show this help and exit");
	help_line(f, 0, "version", NULL, "show the version and exit");
	if (spec->footer != NULL)
		fprintf(f, "\n%s", spec->footer);
}

const char *
nt_opt_where(const struct nt_opt_spec *spec, const void *dst)
{
	static char buf[160];
	size_t i;

	for (i = 0; i < spec->nopts; i++) {
		if (spec->opts[i].dst != dst)
			continue;
		if (spec->opts[i].env != NULL)
			snprintf(buf, sizeof(buf), "--%s (%s)", spec->opts[i].name,
			    spec->opts[i].env);
		else
			snprintf(buf, sizeof(buf), "--%s", spec->opts[i].name);
		return buf;
	}
	return "";
}

/* Build getopt_long's tables from the spec; caller frees both. */
static int
getopt_tables(const struct nt_opt_spec *spec, struct option **longopts,
    char **shortopts)
{
	struct option *lo;
	char *so;
	size_t i, k = 0, s = 0;

	lo = calloc(spec->nopts + 3, sizeof(*lo));
	so = calloc(spec->nopts * 2 + 4, 1);
	if (lo == NULL || so == NULL) {
		free(lo);
		free(so);
		return -1;
	}
	so[s++] = ':';  /* report a missing value apart from an unknown flag */
	for (i = 0; i < spec->nopts; i++, k++) {
		lo[k].name = spec->opts[i].name;
		lo[k].has_arg = spec->opts[i].arg ? required_argument : no_argument;
		lo[k].val = OPT_BASE + (int)i;
		if (spec->opts[i].short_name) {
			so[s++] = (char)spec->opts[i].short_name;
			if (spec->opts[i].arg)
				so[s++] = ':';
		}
	}
	lo[k].name = "help";
	lo[k++].val = OPT_HELP;
	lo[k].name = "version";
	lo[k++].val = OPT_VERSION;
	if (!short_taken(spec, 'h'))
		so[s++] = 'h';
	*longopts = lo;
	*shortopts = so;
	return 0;
}

static int
index_of_short(const struct nt_opt_spec *spec, int c)
{
	size_t i;

	for (i = 0; i < spec->nopts; i++)
		if (spec->opts[i].short_name == c)
			return (int)i;
	return -1;
}

int
nt_opt_parse(const struct nt_opt_spec *spec, int argc, char **argv,
    int *first_operand, char *err, size_t errlen)
{
	const char **given;
	const struct nt_opt *o;
	struct option *longopts;
	char *shortopts, why[256], shown[256], reason[256];
	const char *v, *from, *env;
	int ch, idx, rc = 0;
	size_t i;

	given = calloc(spec->nopts ? spec->nopts : 1, sizeof(*given));
	if (given == NULL || getopt_tables(spec, &longopts, &shortopts) != 0) {
		free(given);
		SET_ERR("out of memory");
		return EX_SOFTWARE;
	}
	opterr = 0;
	optind = 1;
	while (rc == 0 &&
	    (ch = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		idx = ch >= OPT_BASE ? ch - OPT_BASE : index_of_short(spec, ch);
		if (ch == OPT_HELP || (ch == 'h' && idx < 0)) {
			nt_opt_help(spec, stdout);
			rc = NT_OPT_DONE;
		} else if (ch == OPT_VERSION) {
			printf("%s %s\n", spec->prog, NT_VERSION);
			rc = NT_OPT_DONE;
		} else if (ch == ':') {
			SET_ERR("%s needs a value (see --help)", argv[optind - 1]);
			rc = EX_USAGE;
		} else if (ch == '?' || idx < 0) {
			if (optopt != 0 && optopt < OPT_BASE &&
			    (optind <= 1 || argv[optind - 1][1] != '-'))
				SET_ERR("unknown flag '-%c' (see --help)", optopt);
			else
				SET_ERR("unknown flag '%s' (see --help)",
				    argv[optind - 1]);
			rc = EX_USAGE;
		} else
			given[idx] = spec->opts[idx].arg ? optarg : "1";
	}
	*first_operand = optind;
	free(longopts);
	free(shortopts);

	for (i = 0; rc == 0 && i < spec->nopts; i++) {
		o = &spec->opts[i];
		v = given[i];
		from = v ? o->name : NULL;
		if (v == NULL && o->env != NULL && (env = getenv(o->env)) != NULL &&
		    *env != '\0') {
			v = env;
			from = o->env;
		}
		if (v == NULL)
			v = o->def;
		if (spec->origin != NULL)
			spec->origin[i] = from;
		if (v == NULL || o->parse == NULL)
			continue;
		if (o->parse(o, v, why, sizeof(why)) == 0)
			continue;
		/* The value is echoed: never with a password from a URL in it. */
		v = nt_url_mask_password(v, shown, sizeof(shown));
		snprintf(why, sizeof(why), "%s",
		    nt_url_mask_password(why, reason, sizeof(reason)));
		if (from == NULL)
			SET_ERR("default of --%s '%s': %s", o->name, v, why);
		else if (from == o->env)
			SET_ERR("%s='%s': %s", o->env, v, why);
		else if (o->arg != NULL)
			SET_ERR("--%s '%s': %s", o->name, v, why);
		else
			SET_ERR("--%s: %s", o->name, why);
		rc = EX_CONFIG;
	}
	free(given);
	return rc;
}

int
nt_opt_string(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	*(const char **)o->dst = value;
	return 0;
}

int
nt_opt_switch(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcmp(value, yes[i]) == 0) {
			*(int *)o->dst = 1;
			return 0;
		}
		if (strcmp(value, no[i]) == 0) {
			*(int *)o->dst = 0;
			return 0;
		}
	}
	SET_ERR("want 1/true/yes/on or 0/false/no/off");
	return -1;
}

int
nt_opt_int(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(value, &end, 10);
	if (*value == '\0' || *end != '\0' || errno != 0 || *value == '+' ||
	    *value == ' ' || n < o->min || n > o->max) {
		SET_ERR("want a whole number from %lld to %lld", o->min, o->max);
		return -1;
	}
	*(long long *)o->dst = n;
	return 0;
}

int
nt_opt_size(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	size_t n;

	if (nt_size_parse(value, &n) != 0 || n < (size_t)o->min ||
	    (o->max > 0 && n > (size_t)o->max)) {
		if (o->max > 0)
			SET_ERR("want a size from %lld to %lld bytes, e.g. 64k",
			    o->min, o->max);
		else
			SET_ERR("want a size of at least %lld bytes, e.g. 64k",
			    o->min);
		return -1;
	}
	*(size_t *)o->dst = n;
	return 0;
}

/* ms in its largest exact unit: 1000 -> "1s", 31622400000 -> "366d". */
static const char *
duration_text(long long ms, char *buf, size_t len)
{
	static const struct { long long ms; const char *unit; } units[] = {
		{ 86400000, "d" }, { 3600000, "h" }, { 60000, "m" }, { 1000, "s" },
	};
	size_t i;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (ms > 0 && ms % units[i].ms == 0) {
			snprintf(buf, len, "%lld%s", ms / units[i].ms, units[i].unit);
			return buf;
		}
	snprintf(buf, len, "%lldms", ms);
	return buf;
}

static int
duration_in_range(const struct nt_opt *o, const char *value, uint64_t *ms,
    char *err, size_t errlen)
{
	if (nt_duration_ms_parse(value, ms) != 0 || *ms < (uint64_t)o->min ||
	    (o->max > 0 && *ms > (uint64_t)o->max)) {
		char lo[32], hi[32];

		duration_text(o->min, lo, sizeof(lo));
		if (o->max > 0)
			SET_ERR("want a duration from %s to %s (units ms, s, m, "
			    "h, d)", lo, duration_text(o->max, hi, sizeof(hi)));
		else
			SET_ERR("want a duration of at least %s (units ms, s, m, "
			    "h, d)", lo);
		return -1;
	}
	return 0;
}

int
nt_opt_duration(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	uint64_t ms;

	if (duration_in_range(o, value, &ms, err, errlen) != 0)
		return -1;
	*(uint64_t *)o->dst = ms;
	return 0;
}

int
nt_opt_seconds(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	uint64_t ms;

	if (duration_in_range(o, value, &ms, err, errlen) != 0)
		return -1;
	*(double *)o->dst = (double)ms / 1000.0;
	return 0;
}

int
nt_opt_listen(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	struct nt_opt_listen *l = o->dst;
	char buf[300];

	/* ":8080" is every interface, as in nginx's listen and Go's net. */
	if (value[0] == ':') {
		snprintf(buf, sizeof(buf), "0.0.0.0%s", value);
		value = buf;
	}
	return nt_hostport_parse(value, l->host, sizeof(l->host), &l->port,
	    err, errlen);
}

int
nt_opt_fd(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	uint64_t n;

	if (nt_u64_parse(value, 0, 65535, &n) != 0) {
		SET_ERR("not a file descriptor number");
		return -1;
	}
	if (fcntl((int)n, F_GETFD) < 0) {
		SET_ERR("descriptor %d is not open", (int)n);
		return -1;
	}
	*(int *)o->dst = (int)n;
	return 0;
}
