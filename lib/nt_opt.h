/*
 * nt_opt: every program declares each of its flags once, in one table:
 * the flag, its NOTIFYD_* environment variable, its default, the parser
 * that checks and stores it, and its help text. --help is printed from
 * that table, so the two can never disagree.
 *
 * A value comes from the flag, else from the environment variable when
 * it is set and not empty, else from the default; whichever it is, it
 * goes through the same parser. Nothing here exits; the only output is
 * --help and --version on stdout.
 *
 * Exit-code policy (notifyd(7), EXIT STATUS): a command line that cannot
 * be read (unknown flag, missing value, stray operand) is a usage error,
 * 64; a value that does not parse is a configuration error, 78, whether
 * it came from a flag or from the environment.
 */
#ifndef NT_OPT_H
#define NT_OPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct nt_opt;

/*
 * Check value and store it through o->dst. 0, or -1 with a reason in err
 * that does not repeat the flag or the value (the caller adds both).
 * value is borrowed from argv, the environment or the table: it lives as
 * long as the process, so a parser may keep the pointer.
 */
typedef int (*nt_opt_parser)(const struct nt_opt *o, const char *value,
    char *err, size_t errlen);

struct nt_opt {
	const char   *name;       /* long flag without "--" */
	int           short_name; /* one-letter flag, or 0 */
	const char   *arg;        /* argument name for --help; NULL: a switch */
	const char   *env;        /* environment fallback, or NULL */
	const char   *def;        /* default, parsed like a given value; or NULL */
	nt_opt_parser parse;
	void         *dst;        /* where parse stores: see each parser */
	long long     min, max;   /* bounds for the number parsers */
	const char   *help;       /* one sentence, no default or variable */
};

struct nt_opt_spec {
	const char          *prog;
	const char          *synopsis; /* usage lines, each after the program name */
	const char          *footer;   /* text after the flags (operands...), or NULL */
	const struct nt_opt *opts;
	size_t               nopts;
	/*
	 * Optional, nopts entries: nt_opt_parse records where each value came
	 * from: the flag's name (without "--"), the variable's name, or NULL
	 * for the default.
	 */
	const char         **origin;
};

#define NT_OPT_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* nt_opt_parse result: --help or --version was printed; exit 0. */
#define NT_OPT_DONE 1

/*
 * Read argv, then the environment and defaults, into the table's dst
 * pointers, in table order. --help (and -h where no flag takes it) and
 * --version are built in. Returns 0 with *first_operand set to the index
 * of the first operand in argv; NT_OPT_DONE; 64 (unknown flag, missing
 * value) or 78 (a value that does not parse) with a one-line reason in
 * err that names the flag or the variable and the value.
 */
int nt_opt_parse(const struct nt_opt_spec *spec, int argc, char **argv,
    int *first_operand, char *err, size_t errlen);

/* The full --help text: usage lines, every flag with default and variable. */
void nt_opt_help(const struct nt_opt_spec *spec, FILE *f);

/* The usage lines only (for a usage error). */
void nt_opt_usage(const struct nt_opt_spec *spec, FILE *f);

/*
 * "--name" or "--name (NOTIFYD_VAR)" for the flag whose dst is dst, for
 * error messages that tell the user what to change; "" when unknown.
 * Borrowed from a static buffer, valid until the next call.
 */
const char *nt_opt_where(const struct nt_opt_spec *spec, const void *dst);

/* dst: const char **; the value is borrowed (lives as long as the process). */
int nt_opt_string(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* dst: int *; 1/true/yes/on or 0/false/no/off (a given switch is "1"). */
int nt_opt_switch(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* dst: long long *; a decimal integer in [min, max]. */
int nt_opt_int(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* dst: size_t *; a byte size (64k, 1M) in [min, max]; max 0: no bound. */
int nt_opt_size(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* dst: uint64_t * milliseconds; a duration (500ms, 30s, 7d) in [min, max] ms. */
int nt_opt_duration(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* dst: double * seconds; as nt_opt_duration, bounds in ms. */
int nt_opt_seconds(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/*
 * dst: struct nt_opt_listen *; HOST:PORT or [V6]:PORT; an empty host
 * (":8080") means every IPv4 interface and is stored as 0.0.0.0.
 */
struct nt_opt_listen {
	char host[256];
	int  port;
};
int nt_opt_listen(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* dst: int *; a descriptor number that is open (for --ready-fd). */
int nt_opt_fd(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

#endif
