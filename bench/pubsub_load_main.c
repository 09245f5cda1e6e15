/*
 * pubsub_load — the pub/sub load client of make bench-pubsub: the engine
 * of pubsub_load.c with a protocol switch, so one program drives our
 * pubsub_server, nats-server and redis-server alike.
 *
 *   pubsub_load ADDR --proto bs|nats|redis [load options, see --help]
 *   pubsub_load --free-port     prints a loopback TCP port free right now
 */
#include "pubsub_load.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The port the kernel picks for 127.0.0.1:0. Another process may take it
 * before the server binds it; the scripts then see that server fail. */
static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
		return -1;
	close(fd);
	return ntohs(sa.sin_port);
}

int main(int argc, char **argv)
{
	static const struct ps_proto *const protos[] = {
		&ps_proto_bs, &ps_proto_nats, &ps_proto_redis, NULL,
	};
	if (argc == 2 && !strcmp(argv[1], "--free-port")) {
		int port = free_port();
		if (port < 0)
			return 1;
		printf("%d\n", port);
		return 0;
	}
	return ps_load_main("pubsub_load", argc - 1, argv + 1, protos);
}
