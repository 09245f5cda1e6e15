/* Endpoint addresses ("host:port", "[v6]:port", "unix:/path") and socket
 * helpers. Parsing may resolve names and so runs in the caller's thread,
 * never in an I/O thread. */
#ifndef BS_ADDR_H
#define BS_ADDR_H

#include <sys/socket.h>

#include "buffstreams.h"

typedef struct bs_addr {
	struct sockaddr_storage sa;
	socklen_t len;
} bs_addr_t;

/* 0, or BS_EADDR for anything malformed or unresolvable. */
int addr_parse(const char *text, bs_addr_t *out);
/* "1.2.3.4:5", "[::1]:5", "unix:/p" into buf. 0 or BS_EMSGSIZE. */
int addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t n);

/* A non-blocking, close-on-exec socket for the address's family, or -1. */
int addr_socket(const bs_addr_t *a);
/* Applies the TCP options of cfg (no-op for Unix sockets). */
void addr_tune(int fd, int family, const bs_config_t *cfg);

#endif
