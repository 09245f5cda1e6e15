/*
 * examples/pubsub_server as a child process of a test, and its protocol
 * spoken over plain sockets (the server's header comment describes it).
 * A started server prints its bound address, which lands in s->addr; a
 * stopped one (SIGTERM) prints its summary line, parsed into struct
 * ps_summary. Its stderr (log lines) is kept in a file that the test can
 * read. The test's thread only; helpers fail the test (cmocka) on error.
 *
 * The server binary is found beside the test's build directory
 * (BUILD/tests/x -> BUILD/examples/pubsub_server), or at $PUBSUB_SERVER.
 */
#ifndef BS_TEST_PUBSUB_PROC_H
#define BS_TEST_PUBSUB_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PS_WAIT_MS 10000
#define PS_FRAME_MAX 65536

struct ps_server {
	pid_t pid;
	int out;                /* its stdout */
	char addr[128];         /* as it printed it */
	char err_path[64];      /* its stderr */
};

struct ps_summary {
	unsigned long long published, delivered, dropped, slow, stale, discarded, errors,
		direct, closed;
	bool nats;              /* the nats part was there */
	unsigned long long nats_sent, nats_not_sent, nats_received, nats_lost, direct_stale,
		disconnects, reconnects;
};

/* Starts the server on addr (NULL: 127.0.0.1:0) with the extra arguments
 * (NULL-ended; may be NULL); threads (NULL: the server's default) is
 * passed as --threads, and so is $PUBSUB_THREADS when set. */
void ps_server_start(struct ps_server *s, const char *addr, const char *threads,
		     const char *const *extra);
/* The same, but 0, or -1 when it did not start (it exited, or said no
 * address in time; its log lines are shown). */
int ps_server_try_start(struct ps_server *s, const char *addr, const char *threads,
			const char *const *extra);
/* SIGTERM, then its summary line and a clean exit (asserted). */
void ps_server_stop(struct ps_server *s, struct ps_summary *sum);
/* SIGKILL without a word, for a server left over by a failed test. */
void ps_server_kill(struct ps_server *s);
/* Whether the server's stderr has a line containing text. */
bool ps_server_logged(const struct ps_server *s, const char *text);

/* A plain client connected to the server (asserted). */
int ps_client(const char *addr);
/* Sends op | topic | body. */
void ps_command(int fd, char op, const char *topic, const void *body, size_t blen);
/* The next frame must be exactly op | topic | body. */
void ps_expect(int fd, char op, const char *topic, const char *body);
/* S, then its A. */
void ps_subscribe(int fd, const char *topic);
void ps_publish(int fd, const char *topic, const char *body);
/* I, then its answer: the connection's id as 16 hex digits into hex. */
void ps_identify(int fd, char hex[17]);

#endif
