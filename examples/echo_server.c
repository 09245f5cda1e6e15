/*
 * echo_server — sends every message back to the connection it came from.
 *
 *   echo_server [ADDR] [--threads N] [--max BYTES]
 *
 * ADDR defaults to 127.0.0.1:5031 ("unix:/path" works too). N application
 * threads drain messages and echo them without copying: the received buffer
 * is handed straight back to bs_send. One more thread counts open and close
 * events. SIGINT or SIGTERM shuts down gracefully and prints a summary.
 */
#include <buffstreams.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 64            /* messages taken per bs_recv_data_batch call */
#define POLL_MS 200         /* how often idle threads look at the stop flag */
#define SEND_WAIT_MS 1000   /* how long a full send queue may hold up its peer */
#define MAX_THREADS 64

static bs_t *bs;
static atomic_bool stopping;
static atomic_uint_fast64_t echoed, echoed_bytes, dropped, opened, closed;

/*
 * Each connection's messages are processed by one thread at a time, in
 * order (a thread holds the connections of its batch until its next
 * receive), so the echoes keep their order with no lock here, and the
 * echoes of one hold leave in one write when it ends.
 *
 * A peer that sends but does not read fills its send queue. Its echoes then
 * wait a bounded time for room; first the thread lets go of every other
 * connection of its batch (their echoes leave at once), so the wait delays
 * that peer alone.
 */
/* Sends one echo. A full queue (keep) leaves the message ours. */
static bool echo_one(bs_data_t *ev, int timeout_ms, bool keep)
{
	int rc = bs_send(bs, ev->id, ev->data, ev->len, ev->msg, 0, timeout_ms);

	if (rc == 0) {
		atomic_fetch_add(&echoed, 1);
		atomic_fetch_add(&echoed_bytes, ev->len);
		return true;
	}
	if (rc != BS_EAGAIN || !keep) { /* closed, or no room in time: drop it */
		bs_msg_release(ev->msg);
		atomic_fetch_add(&dropped, 1);
	}
	return false;
}

/* Echoes a batch; returns how many messages (moved to the front of ev)
 * wait for a full send queue. */
static int echo_batch(bs_data_t *ev, int n)
{
	bs_id_t stalled[BATCH];
	int nstalled = 0, waiting = 0;

	for (int i = 0; i < n; i++) {
		bool stuck = false;

		for (int k = 0; k < nstalled && !stuck; k++)
			stuck = stalled[k] == ev[i].id;
		/* Behind a stalled message of its connection, a message waits
		 * too: echoes stay in order. */
		if (stuck || !echo_one(&ev[i], 0, true)) {
			if (!stuck)
				stalled[nstalled++] = ev[i].id;
			ev[waiting++] = ev[i];
		}
	}
	if (nstalled == 0)
		return 0;
	/* Let every other connection of the batch go before waiting. */
	for (int i = 0; i < n; i++) {
		bool stuck = false;
		for (int k = 0; k < nstalled && !stuck; k++)
			stuck = stalled[k] == ev[i].id;
		if (!stuck)
			(void)bs_release_id(bs, ev[i].id); /* BS_ESTALE once let go */
	}
	return waiting;
}

static void *data_thread(void *arg)
{
	bs_data_t ev[BATCH];

	(void)arg;
	for (;;) {
		int n = bs_recv_data_batch(bs, ev, BATCH, POLL_MS);
		int waiting = n > 0 ? echo_batch(ev, n) : 0;

		bs_id_t given_up = 0;

		/* One bounded wait per stalled connection; once it timed out
		 * the rest of its batch is dropped at once. */
		for (int i = 0; i < waiting; i++)
			if (!echo_one(&ev[i], ev[i].id == given_up ? 0 : SEND_WAIT_MS, false))
				given_up = ev[i].id;
		if (n == BS_ESHUTDOWN)
			break;
		if (n == BS_ETIMEDOUT && atomic_load(&stopping))
			break;
		if (n < 0 && n != BS_ETIMEDOUT) {
			fprintf(stderr, "echo_server: bs_recv_data_batch: %s\n",
				bs_strerror(n));
			break;
		}
	}
	return NULL;
}

/*
 * One thread serves both event queues. It waits on the open queue, since a
 * connection's messages are given out only after its open event, and picks
 * up close events between waits.
 */
static void *event_thread(void *arg)
{
	bs_open_event_t oev;
	bs_close_event_t cev;
	bool open_done = false, close_done = false;

	(void)arg;
	while (!open_done || !close_done) {
		bool idle = true;

		if (!open_done) {
			int rc = bs_recv_open(bs, &oev, close_done ? POLL_MS : POLL_MS / 10);
			if (rc == 0) {
				atomic_fetch_add(&opened, 1);
				idle = false;
			}
			open_done = rc == BS_ESHUTDOWN;
		}
		/* Take the close events waiting now, a bounded number per
		 * round so that new connections are not held up. */
		for (int i = 0; i < 1024 && !close_done; i++) {
			int rc = bs_recv_close(bs, &cev, open_done ? POLL_MS : 0);
			if (rc != 0) {
				close_done = rc == BS_ESHUTDOWN;
				break;
			}
			atomic_fetch_add(&closed, 1);
			idle = false;
		}
		if (idle && atomic_load(&stopping))
			break;
	}
	return NULL;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -1;
	*out = v;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: echo_server [ADDR] [--threads N] [--max BYTES]\n"
			"  ADDR  host:port or unix:/path (default 127.0.0.1:5031)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:5031";
	unsigned long long nthreads = 2, max = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
			if (parse_uint(argv[++i], MAX_THREADS, &nthreads) || nthreads == 0)
				usage();
		} else if (!strcmp(argv[i], "--max") && i + 1 < argc) {
			if (parse_uint(argv[++i], SIZE_MAX, &max))
				usage();
		} else if (argv[i][0] == '-' || i != 1) {
			usage();
		} else {
			addr = argv[i];
		}
	}

	/* Block the stop signals before any thread starts, the library's
	 * included, so that only sigwait below receives them. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	bs_config_t cfg;
	bs_config_init(&cfg);
	cfg.framing.max_message_size = max; /* 0 keeps the default */

	int rc = bs_create(&cfg, &bs);
	if (rc) {
		fprintf(stderr, "echo_server: bs_create: %s\n", bs_strerror(rc));
		return 1;
	}
	uint32_t listener;
	char bound[128];
	rc = bs_listen(bs, addr, NULL, &listener);
	if (rc == 0)
		rc = bs_listener_addr(bs, listener, bound, sizeof bound);
	if (rc) {
		fprintf(stderr, "echo_server: listen on %s: %s\n", addr, bs_strerror(rc));
		bs_destroy(bs);
		return 1;
	}

	pthread_t threads[MAX_THREADS + 1];
	size_t started = 0;
	bool ok = pthread_create(&threads[started], NULL, event_thread, NULL) == 0;
	started += ok;
	for (unsigned long long i = 0; ok && i < nthreads; i++) {
		ok = pthread_create(&threads[started], NULL, data_thread, NULL) == 0;
		started += ok;
	}
	if (ok) {
		printf("echo_server: listening on %s with %llu threads\n", bound, nthreads);
		fflush(stdout);
		int sig;
		sigwait(&sigs, &sig);
	} else {
		fprintf(stderr, "echo_server: cannot start threads\n");
	}

	/* Stop accepting, flush and close every connection; the threads see
	 * BS_ESHUTDOWN once their queues are drained. They are joined before
	 * bs_destroy, since no bs_* call may start once it has begun. */
	atomic_store(&stopping, true);
	bs_shutdown(bs);
	for (size_t i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	bs_destroy(bs);

	printf("echo_server: echoed %" PRIuFAST64 " messages (%" PRIuFAST64
	       " bytes), dropped %" PRIuFAST64 ", connections %" PRIuFAST64
	       " opened / %" PRIuFAST64 " closed\n",
	       atomic_load(&echoed), atomic_load(&echoed_bytes), atomic_load(&dropped),
	       atomic_load(&opened), atomic_load(&closed));
	return ok ? 0 : 1;
}
