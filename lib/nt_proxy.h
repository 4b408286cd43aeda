/*
 * nt_proxy: which peers are trusted reverse proxies (nginx in front of
 * the daemons), and the real client address behind them taken from
 * X-Forwarded-For. A header from anyone else is ignored: any client can
 * send one.
 */
#ifndef NT_PROXY_H
#define NT_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

#define NT_PROXY_MAX_NETS 32

struct nt_proxy_net {
	int           family;     /* AF_INET or AF_INET6 */
	unsigned char addr[16];   /* network address, host bits cleared */
	int           prefix;     /* mask length in bits */
};

struct nt_proxy_list {
	size_t              n;
	struct nt_proxy_net nets[NT_PROXY_MAX_NETS];
};

/*
 * Parse "ADDR[/LEN],..." (IPv4 or IPv6; spaces around commas allowed; an
 * empty string is an empty list) into *list. 0, or -1 with err set.
 */
int nt_proxy_list_parse(const char *s, struct nt_proxy_list *list,
    char *err, size_t errlen);

struct nt_opt;

/* nt_opt parser of --trusted-proxy: dst is a struct nt_proxy_list *. */
int nt_proxy_opt_list(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

/* Whether the textual address addr is in the list (0 for bad text). */
int nt_proxy_trusted(const struct nt_proxy_list *list, const char *addr);

/*
 * The client address of a request from peer (text) carrying the
 * X-Forwarded-For value xff (xfflen bytes, may be NULL): when peer is a
 * trusted proxy, the rightmost address in xff that is not itself
 * trusted (all trusted: the leftmost); otherwise peer. The result is
 * written to out (outlen >= 46 holds any address), always
 * NUL-terminated; an address in xff that does not parse ends the walk
 * and the last good one is used, so a forged entry can never be chosen
 * over what a trusted proxy appended.
 */
void nt_proxy_client(const struct nt_proxy_list *list, const char *peer,
    const char *xff, size_t xfflen, char *out, size_t outlen);

/* The textual address of a socket address (no port); "?" when unknown. */
void nt_proxy_addr_text(const struct sockaddr *sa, char *out, size_t outlen);

#endif
