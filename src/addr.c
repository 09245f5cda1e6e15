/* Endpoint addresses and socket options. See addr.h. */
#include "addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#define UNIX_PREFIX "unix:"

static int parse_unix(const char *path, bs_addr_t *out)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&out->sa;
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(un->sun_path))
		return BS_EADDR;
	memset(out, 0, sizeof(*out));
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, path, n + 1);
	out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

int addr_parse(const char *text, bs_addr_t *out)
{
	char host[256];
	const char *colon, *port, *h = text;
	size_t hlen;
	struct addrinfo hints, *res = NULL;
	char *end;
	long pnum;

	if (text == NULL || out == NULL)
		return BS_EINVAL;
	if (strncmp(text, UNIX_PREFIX, strlen(UNIX_PREFIX)) == 0)
		return parse_unix(text + strlen(UNIX_PREFIX), out);

	if (text[0] == '[') { /* "[v6]:port" */
		const char *close = strchr(text, ']');
		if (close == NULL || close[1] != ':')
			return BS_EADDR;
		h = text + 1;
		hlen = (size_t)(close - h);
		port = close + 2;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL || memchr(text, ':', (size_t)(colon - text)))
			return BS_EADDR; /* bare IPv6 needs brackets */
		hlen = (size_t)(colon - text);
		port = colon + 1;
	}
	if (hlen >= sizeof(host))
		return BS_EADDR;
	pnum = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || pnum < 0 || pnum > 65535)
		return BS_EADDR;
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = hlen == 0 ? AI_PASSIVE : AI_ADDRCONFIG;
	if (getaddrinfo(hlen ? host : NULL, port, &hints, &res) != 0 || res == NULL)
		return BS_EADDR;
	memset(out, 0, sizeof(*out));
	memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN];
	int w;

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		w = snprintf(buf, n, "%s:%u", ip, ntohs(in->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		w = snprintf(buf, n, "[%s]:%u", ip, ntohs(in6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *un = (const void *)sa;
		size_t plen = len > offsetof(struct sockaddr_un, sun_path)
				      ? strnlen(un->sun_path, len - offsetof(struct sockaddr_un, sun_path))
				      : 0;
		w = snprintf(buf, n, UNIX_PREFIX "%.*s", (int)plen, un->sun_path);
		break;
	}
	default:
		return BS_EADDR;
	}
	return w < 0 || (size_t)w >= n ? BS_EMSGSIZE : 0;
}

int addr_socket(const bs_addr_t *a)
{
	return socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

void addr_tune(int fd, int family, const bs_config_t *cfg)
{
	int one = 1;

	/* Options are best effort: a kernel that refuses one still works. */
	if (cfg->sndbuf > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg->sndbuf, sizeof(int));
	if (cfg->rcvbuf > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg->rcvbuf, sizeof(int));
	if (family == AF_UNIX)
		return;
	if (cfg->tcp_nodelay)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (cfg->tcp_keepalive)
		(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}
