/*
 * pubsub_client — subscriber, publisher and load generator for
 * pubsub_server (its header comment describes the protocol).
 *
 *   pubsub_client sub ADDR [TOPIC...] [--count N] [--seconds T]
 *   pubsub_client pub ADDR TOPIC MESSAGE
 *   pubsub_client direct ADDR ID MESSAGE
 *   pubsub_client load ADDR --publishers P --subscribers S --topics K
 *                 --rate R --seconds N --size B [--window W] [--count C]
 *                 [--stalled N] [--stall-after S] [--expect-stalled open|closed]
 *                 [--pub-addr ADDR]
 *
 * sub asks for its connection's id (printed on stderr as "id HEX"),
 * subscribes to every TOPIC, waits for each acknowledgement, then prints
 * one line per delivery ("TOPIC: body", bytes outside printable ASCII as
 * \xNN; a direct message shows the sender's id as its topic) until
 * SIGINT/SIGTERM, N deliveries or T seconds. pub publishes one message and
 * waits until it is written; direct sends one to the connection ID (as sub
 * printed it, on any node of a cluster) and fails when the server answers
 * that it cannot be delivered. All three use the library as a client
 * (bs_dial, bs_send_data, bs_recv_data).
 *
 * load runs S subscribers (subscriber i on topic "t<i mod K>") and P
 * publishers, each publishing R messages/s (0: as fast as W messages in
 * flight allow) of B bytes, round-robin over the topics, for N seconds.
 * It shows a live progress line, then deliveries/s, end-to-end latency
 * p50/p99/p999, and the check of every delivery: exactly once and in each
 * publisher's order. It exits non-zero on any wrong or missing delivery.
 * Subscribers 0..stalled-1 stop reading after --stall-after seconds; they
 * are not checked for completeness, only for order, and the report says
 * whether the server disconnected them. The load engine is the one
 * bench-pubsub drives nats-server and redis-server with
 * (bench/pubsub_load.c): plain sockets and epoll in one thread, so that
 * the client side costs the same against every server.
 */
#include <buffstreams.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pubsub_load.h"

#define WAIT_MS 5000      /* for a connection, an acknowledgement, a flush */
#define POLL_MS 200       /* how often a waiting sub looks at the stop flag */

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: pubsub_client sub ADDR [TOPIC...] [--count N] [--seconds T]\n"
		"       pubsub_client pub ADDR TOPIC MESSAGE\n"
		"       pubsub_client direct ADDR ID MESSAGE\n"
		"       pubsub_client load ADDR --publishers P --subscribers S --topics K\n"
		"                     --rate R --seconds N --size B [--window W] [--count C]\n"
		"                     [--stalled N] [--stall-after S] [--expect-stalled open|closed]\n"
		"  ADDR  host:port or unix:/path of a pubsub_server\n"
		"  (pubsub_client load --help lists the load options)\n");
	return 2;
}

/* Sends op | topic length | topic | body. */
static int send_command(bs_t *bs, bs_id_t id, char op, const char *topic,
			const void *body, size_t blen)
{
	size_t tlen = strlen(topic);
	if (tlen == 0 || tlen > 255) {
		fprintf(stderr, "pubsub_client: a topic has 1 to 255 bytes: \"%s\"\n", topic);
		return BS_EINVAL;
	}
	uint8_t *buf = malloc(2 + tlen + blen);
	if (!buf)
		return BS_ENOMEM;
	buf[0] = (uint8_t)op;
	buf[1] = (uint8_t)tlen;
	memcpy(buf + 2, topic, tlen);
	if (blen)
		memcpy(buf + 2 + tlen, body, blen);
	int rc = bs_send_data(bs, id, buf, 2 + tlen + blen);
	free(buf);
	if (rc)
		fprintf(stderr, "pubsub_client: send: %s\n", bs_strerror(rc));
	return rc;
}

/* Dials addr and waits until the connection is up. 0 or -1. */
static int connect_to(bs_t *bs, const char *addr, bs_id_t *id)
{
	bs_open_event_t oev;
	bs_close_event_t cev;
	int rc = bs_dial(bs, addr, NULL, id);
	if (rc) {
		fprintf(stderr, "pubsub_client: dial %s: %s\n", addr, bs_strerror(rc));
		return -1;
	}
	if (bs_recv_open(bs, &oev, WAIT_MS) == 0)
		return 0;
	if (bs_recv_close(bs, &cev, 0) == 0)
		fprintf(stderr, "pubsub_client: connect to %s: %s%s%s\n", addr,
			bs_strerror(cev.reason), cev.sys_errno ? ": " : "",
			cev.sys_errno ? strerror(cev.sys_errno) : "");
	else
		fprintf(stderr, "pubsub_client: connect to %s: timed out\n", addr);
	return -1;
}

static void print_bytes(FILE *f, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
			fputc(p[i], f);
		else
			fprintf(f, "\\x%02x", p[i]);
	}
}

/* Handles one message from the server; 1 for a delivery, 0 for anything
 * else that is fine, -1 for an error. */
static int show(const bs_data_t *ev, size_t *acks)
{
	const uint8_t *p = ev->data;
	if (ev->len < 2 || 2u + p[1] > ev->len) {
		fprintf(stderr, "pubsub_client: malformed message from the server\n");
		return -1;
	}
	const uint8_t *topic = p + 2, *body = p + 2 + p[1];
	size_t blen = ev->len - 2 - p[1];
	switch (p[0]) {
	case 'M':
		print_bytes(stdout, topic, p[1]);
		fputs(": ", stdout);
		print_bytes(stdout, body, blen);
		fputc('\n', stdout);
		fflush(stdout);
		return 1;
	case 'A':
		fputs("subscribed to ", stderr);
		print_bytes(stderr, topic, p[1]);
		fputc('\n', stderr);
		(*acks)++;
		return 0;
	case 'I':
		fputs("id ", stderr);
		print_bytes(stderr, topic, p[1]);
		fputc('\n', stderr);
		return 0;
	case 'E':
		fputs("pubsub_client: error from the server: ", stderr);
		print_bytes(stderr, body, blen);
		fputc('\n', stderr);
		return -1;
	default:
		fprintf(stderr, "pubsub_client: unknown op 0x%02x from the server\n", p[0]);
		return -1;
	}
}

static int run_sub(bs_t *bs, int argc, char **argv)
{
	const char *addr = argv[0];
	const char *topics[256];
	size_t ntopics = 0;
	unsigned long long count = 0, seconds = 0;

	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "--count") || !strcmp(argv[i], "--seconds")) && i + 1 < argc) {
			char *end;
			unsigned long long v = strtoull(argv[i + 1], &end, 10);
			if (*end || end == argv[i + 1])
				return usage();
			*(argv[i][2] == 'c' ? &count : &seconds) = v;
			i++;
		} else if (argv[i][0] == '-' || ntopics == 256) {
			return usage();
		} else {
			topics[ntopics++] = argv[i];
		}
	}
	bs_id_t id;
	if (connect_to(bs, addr, &id) || send_command(bs, id, 'I', "?", NULL, 0))
		return 1;
	for (size_t i = 0; i < ntopics; i++)
		if (send_command(bs, id, 'S', topics[i], NULL, 0))
			return 1;

	uint64_t deadline = seconds ? now_ms() + seconds * 1000 : UINT64_MAX;
	uint64_t ack_deadline = now_ms() + WAIT_MS;
	size_t acks = 0;
	unsigned long long got = 0;
	while (!stop && (count == 0 || got < count) && now_ms() < deadline) {
		bs_data_t ev;
		bs_close_event_t cev;
		int rc = bs_recv_data(bs, &ev, POLL_MS);
		if (rc == 0) {
			int r = show(&ev, &acks);
			bs_msg_release(ev.msg);
			if (r < 0)
				return 1;
			got += (unsigned long long)r;
			continue;
		}
		if (bs_recv_close(bs, &cev, 0) == 0) {
			fprintf(stderr, "pubsub_client: the server closed the connection: %s\n",
				bs_strerror(cev.reason));
			return 1;
		}
		if (acks < ntopics && now_ms() > ack_deadline) {
			fprintf(stderr, "pubsub_client: %zu of %zu subscriptions acknowledged\n",
				acks, ntopics);
			return 1;
		}
	}
	return 0;
}

/* pub (op 'P') and direct (op 'D'): one message, written before the
 * connection closes. */
static int run_pub(bs_t *bs, char op, int argc, char **argv)
{
	if (argc != 3)
		return usage();
	bs_id_t id, target;
	if (op == 'D' && bs_id_parse(argv[1], &target) != 0) {
		fprintf(stderr, "pubsub_client: not an id: %s\n", argv[1]);
		return 2;
	}
	if (connect_to(bs, argv[0], &id) ||
	    send_command(bs, id, op, argv[1], argv[2], strlen(argv[2])))
		return 1;
	if (op == 'D') {
		/* Nothing answers a direct message that went; 'E' says why one
		 * did not. */
		bs_data_t ev;
		if (bs_recv_data(bs, &ev, 500) == 0) {
			size_t acks = 0;
			int r = show(&ev, &acks);
			bs_msg_release(ev.msg);
			if (r < 0)
				return 1;
		}
	}
	/* bs_send_close writes what is queued first: the close event with
	 * our own reason says the message went out. */
	bs_close_event_t cev;
	bs_send_close(bs, id);
	if (bs_recv_close(bs, &cev, WAIT_MS) != 0) {
		fprintf(stderr, "pubsub_client: the message was not written in time\n");
		return 1;
	}
	if (cev.reason != BS_ECLOSED || cev.unsent_msgs) {
		fprintf(stderr, "pubsub_client: connection lost: %s\n", bs_strerror(cev.reason));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	if (!strcmp(argv[1], "load")) {
		static const struct ps_proto *const protos[] = { &ps_proto_bs, NULL };
		return ps_load_main("pubsub_client", argc - 2, argv + 2, protos);
	}
	if (strcmp(argv[1], "sub") && strcmp(argv[1], "pub") && strcmp(argv[1], "direct"))
		return usage();

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	bs_t *bs;
	int rc = bs_create(NULL, &bs);
	if (rc) {
		fprintf(stderr, "pubsub_client: bs_create: %s\n", bs_strerror(rc));
		return 1;
	}
	int status = argv[1][0] == 's' ? run_sub(bs, argc - 2, argv + 2)
		     : run_pub(bs, argv[1][0] == 'd' ? 'D' : 'P', argc - 2, argv + 2);
	bs_destroy(bs);
	return status;
}
