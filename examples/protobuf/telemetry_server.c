/*
 * telemetry_server — decodes protobuf Readings and answers each with a
 * Summary, using protobuf's delimited stream format (BS_FRAMING_VARINT), so
 * any protobuf implementation that writes and reads delimited messages
 * (writeDelimitedTo / parseDelimitedFrom) can talk to it.
 *
 *   telemetry_server [ADDR] [--conns N]
 *
 * ADDR defaults to 127.0.0.1:5032. With --conns the server exits once N
 * connections have closed; otherwise it runs until SIGINT or SIGTERM.
 * A connection that sends something that is not a Reading is closed.
 */
#include <buffstreams.h>
#include "telemetry.pb-c.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 64
#define POLL_MS 100         /* how often the loop looks at the stop flag */
#define SEND_WAIT_MS 1000   /* how long a reply may wait for a slow peer */

static atomic_bool stop;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, true);
}

static void summarize(const Telemetry__Reading *r, Telemetry__Summary *s)
{
	s->seq = r->seq;
	s->sensor = r->sensor;
	s->count = (uint32_t)r->n_samples;
	for (size_t i = 0; i < r->n_samples; i++) {
		int32_t v = r->samples[i];
		s->sum += v;
		if (i == 0 || v < s->min)
			s->min = v;
		if (i == 0 || v > s->max)
			s->max = v;
	}
}

/*
 * Answers one message. The reply is packed straight into a library
 * buffer, which bs_send then takes over: no copy. 0, or -1 when the
 * message was not a Reading.
 */
static int answer(bs_t *bs, const bs_data_t *ev, uint64_t *replies)
{
	Telemetry__Reading *r = telemetry__reading__unpack(NULL, ev->len, ev->data);
	if (!r)
		return -1;

	Telemetry__Summary s = TELEMETRY__SUMMARY__INIT;
	summarize(r, &s);
	size_t len = telemetry__summary__get_packed_size(&s);
	void *data;
	bs_msg_t *msg = bs_msg_alloc(len, &data);
	if (msg) {
		telemetry__summary__pack(&s, data);
		/* A dead id (the client left) or a peer that stopped reading:
		 * the reply is dropped, and the buffer stays ours to release. */
		if (bs_send(bs, ev->id, data, len, msg, 0, SEND_WAIT_MS) == 0)
			++*replies;
		else
			bs_msg_release(msg);
	}
	telemetry__reading__free_unpacked(r, NULL);
	return 0;
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:5032";
	unsigned long long exit_after = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--conns") && i + 1 < argc) {
			char *end;
			errno = 0;
			exit_after = strtoull(argv[++i], &end, 10);
			if (errno || *end || exit_after == 0)
				goto usage;
		} else if (argv[i][0] != '-' && i == 1) {
			addr = argv[i];
		} else {
			goto usage;
		}
	}

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	bs_config_t cfg;
	bs_config_init(&cfg);
	cfg.framing.kind = BS_FRAMING_VARINT;
	cfg.open_events = false; /* only closes are counted */

	/* The library's threads start with the stop signals blocked, so the
	 * handler runs in this thread. */
	sigset_t sigs, old;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, &old);
	bs_t *bs;
	int rc = bs_create(&cfg, &bs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		fprintf(stderr, "telemetry_server: bs_create: %s\n", bs_strerror(rc));
		return 1;
	}
	uint32_t listener;
	char bound[256];
	rc = bs_listen(bs, addr, NULL, &listener);
	if (rc == 0)
		rc = bs_listener_addr(bs, listener, bound, sizeof bound);
	if (rc) {
		fprintf(stderr, "telemetry_server: listen on %s: %s\n", addr, bs_strerror(rc));
		bs_destroy(bs);
		return 1;
	}
	printf("telemetry_server: listening on %s\n", bound);
	fflush(stdout);

	uint64_t readings = 0, replies = 0, rejected = 0, closed = 0;
	bs_data_t ev[BATCH];
	while (!atomic_load(&stop) && (exit_after == 0 || closed < exit_after)) {
		int n = bs_recv_data_batch(bs, ev, BATCH, POLL_MS);
		for (int i = 0; i < n; i++) {
			if (answer(bs, &ev[i], &replies) == 0) {
				readings++;
			} else {
				fprintf(stderr, "telemetry_server: a message of %zu bytes "
					"is not a Reading; closing its connection\n",
					ev[i].len);
				bs_send_close(bs, ev[i].id); /* BS_ESTALE: gone already */
				rejected++;
			}
			bs_msg_release(ev[i].msg);
		}
		/* A close event only comes after the connection's last message. */
		bs_close_event_t cev;
		for (int k = 0; k < BATCH && bs_recv_close(bs, &cev, 0) == 0; k++)
			closed++;
	}
	bs_destroy(bs);
	printf("telemetry_server: %" PRIu64 " readings, %" PRIu64 " summaries, %"
	       PRIu64 " rejected, %" PRIu64 " connections closed\n",
	       readings, replies, rejected, closed);
	return 0;

usage:
	fprintf(stderr, "usage: telemetry_server [ADDR] [--conns N]\n");
	return 2;
}
