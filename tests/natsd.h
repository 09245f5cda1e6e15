/*
 * A real nats-server for the tests that need one: started on a free
 * loopback port (or a given one, to restart it where it was), stopped
 * with SIGKILL, and never left behind (it dies with the test process).
 * The test's thread only; nothing else is shared.
 */
#ifndef BS_TEST_NATSD_H
#define BS_TEST_NATSD_H

#include <stdbool.h>
#include <sys/types.h>

struct natsd {
	pid_t pid;           /* -1 when not running */
	int port, mport;     /* client and monitoring ports; 0 = pick free ones */
	char url[64];        /* nats://127.0.0.1:port */
};

/* The nats-server program: $BS_NATS_SERVER, PATH, or /usr/sbin. */
const char *natsd_binary(void);
/* Starts it on d->port (d->mport for monitoring); 0 picks free ones
 * (again when another process took them first). 0 once both ports
 * accept, or -1 (said on stderr). Its output goes to /dev/null unless
 * BS_TEST_VERBOSE is set. */
int natsd_start(struct natsd *d);
/* SIGKILL, then reaps it. No-op when it is not running. */
void natsd_stop(struct natsd *d);
/* A TCP connect to 127.0.0.1:port succeeds. */
bool natsd_port_accepts(int port);

#endif
