/*
 * nt_proxy: trusted proxies and X-Forwarded-For; see nt_proxy.h.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nt_opt.h"
#include "nt_proxy.h"

#define SET_ERR(...) snprintf(err, errlen, __VA_ARGS__)

/* Text to binary address; an IPv4-mapped IPv6 address counts as IPv4. */
static int
addr_parse(const char *s, int *family, unsigned char addr[16])
{
	static const unsigned char mapped[12] =
	    { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (inet_pton(AF_INET, s, addr) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, addr) == 1) {
		*family = AF_INET6;
		if (memcmp(addr, mapped, 12) == 0) {
			memmove(addr, addr + 12, 4);
			*family = AF_INET;
		}
		return 0;
	}
	return -1;
}

static void
clear_host_bits(unsigned char *addr, int prefix, int bits)
{
	int i;

	for (i = prefix; i < bits; i++)
		addr[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
}

int
nt_proxy_list_parse(const char *s, struct nt_proxy_list *list, char *err,
    size_t errlen)
{
	char item[128], *slash, *end;
	const char *p = s, *comma;
	struct nt_proxy_net *net;
	size_t len;
	long prefix;
	int bits;

	memset(list, 0, sizeof(*list));
	while (*p != '\0') {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		while (len > 0 && p[len - 1] == ' ')
			len--;
		if (len >= sizeof(item)) {
			SET_ERR("address too long");
			return -1;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p += comma ? (size_t)(comma - p) : strlen(p);
		if (list->n == NT_PROXY_MAX_NETS) {
			SET_ERR("more than %d addresses", NT_PROXY_MAX_NETS);
			return -1;
		}
		net = &list->nets[list->n];
		if ((slash = strchr(item, '/')) != NULL)
			*slash = '\0';
		if (addr_parse(item, &net->family, net->addr) != 0) {
			SET_ERR("'%s' is not an IPv4 or IPv6 address", item);
			return -1;
		}
		bits = net->family == AF_INET ? 32 : 128;
		prefix = bits;
		if (slash != NULL) {
			prefix = strtol(slash + 1, &end, 10);
			if (slash[1] == '\0' || *end != '\0' || prefix < 0 ||
			    prefix > bits) {
				SET_ERR("'%s/%s': prefix length must be 0..%d", item,
				    slash + 1, bits);
				return -1;
			}
		}
		net->prefix = (int)prefix;
		clear_host_bits(net->addr, net->prefix, bits);
		list->n++;
	}
	return 0;
}

int
nt_proxy_trusted(const struct nt_proxy_list *list, const char *addr)
{
	unsigned char a[16];
	int family;
	size_t i;

	if (list->n == 0 || addr_parse(addr, &family, a) != 0)
		return 0;
	for (i = 0; i < list->n; i++) {
		const struct nt_proxy_net *net = &list->nets[i];
		unsigned char m[16];

		if (net->family != family)
			continue;
		memcpy(m, a, 16);
		clear_host_bits(m, net->prefix, family == AF_INET ? 32 : 128);
		if (memcmp(m, net->addr, family == AF_INET ? 4 : 16) == 0)
			return 1;
	}
	return 0;
}

static void
copy_text(char *out, size_t outlen, const char *s, size_t n)
{
	if (outlen == 0)
		return;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, s, n);
	out[n] = '\0';
}

void
nt_proxy_client(const struct nt_proxy_list *list, const char *peer,
    const char *xff, size_t xfflen, char *out, size_t outlen)
{
	char item[64];
	unsigned char a[16];
	size_t end = xfflen, start, len, next_end;
	int family;

	copy_text(out, outlen, peer, strlen(peer));
	if (xff == NULL || !nt_proxy_trusted(list, peer))
		return;
	/* Walk right to left: each hop appends the address it saw. */
	while (end > 0) {
		start = end;
		while (start > 0 && xff[start - 1] != ',')
			start--;
		len = end - start;
		next_end = start > 0 ? start - 1 : 0;  /* before the comma */
		while (len > 0 && (xff[start] == ' ' || xff[start] == '\t')) {
			start++;
			len--;
		}
		while (len > 0 && (xff[start + len - 1] == ' ' ||
		    xff[start + len - 1] == '\t'))
			len--;
		end = next_end;
		if (len == 0 || len >= sizeof(item))
			break;
		memcpy(item, xff + start, len);
		item[len] = '\0';
		if (addr_parse(item, &family, a) != 0)
			break;
		copy_text(out, outlen, item, len);
		if (!nt_proxy_trusted(list, item))
			return;
	}
}

void
nt_proxy_addr_text(const struct sockaddr *sa, char *out, size_t outlen)
{
	const void *a;
	int family = sa->sa_family;

	if (family == AF_INET)
		a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	else if (family == AF_INET6)
		a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	else {
		copy_text(out, outlen, "?", 1);
		return;
	}
	if (inet_ntop(family, a, out, (socklen_t)outlen) == NULL)
		copy_text(out, outlen, "?", 1);
}

int
nt_proxy_opt_list(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	return nt_proxy_list_parse(value, o->dst, err, errlen);
}
