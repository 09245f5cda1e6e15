/*
 * multi_worker — per-connection state with many draining threads and no
 * lock: each connection's events are processed by one thread at a time,
 * in order, so its state lives in the connection's user value.
 *
 *   multi_worker [--threads N] [--conns C] [--msgs M] [--work-us W]
 *
 * It listens on a free loopback port and starts C plain-socket clients.
 * Each client sends M numbered messages and reads one answer per message.
 * N server threads take open, data and close events; the open handler
 * allocates the connection's state (the next expected number and a running
 * checksum) and stores it with bs_set_user; every data event finds it in
 * ev.user, checks the number, updates the checksum and answers
 * (number, checksum); the close handler frees it. W µs of busy work per
 * message make threads overlap. A client checks each answer against its
 * own running checksum.
 *
 * Exits 0 when every message was processed in order, by one thread at a
 * time, and every answer was right; 1 otherwise.
 */
#include <buffstreams.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define BATCH 16
#define RUN_LIMIT_S 120     /* every loop stops by itself */

struct conn_state {
	uint32_t next;          /* the number the next message must carry */
	uint64_t sum;           /* running checksum of the numbers */
	atomic_int busy;        /* >0 while a thread works on it: must stay 1 */
};

static bs_t *bs;
static unsigned work_us;
static uint32_t msgs_per_conn;
static atomic_ullong processed, out_of_order, concurrent, bad_answers, freed;
static atomic_bool stop;

static uint64_t mix(uint64_t sum, uint32_t n)
{
	return (sum ^ n) * 0x100000001b3ull;
}

static void busy_work(void)
{
	struct timespec t0, t;

	if (work_us == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 <
	       (long)work_us);
}

static void on_data(const bs_data_t *ev)
{
	struct conn_state *st = ev->user;
	uint32_t n, answer[3];

	if (st == NULL || ev->len != 4) {
		atomic_fetch_add(&bad_answers, 1);
		return;
	}
	if (atomic_fetch_add(&st->busy, 1) != 0)
		atomic_fetch_add(&concurrent, 1);
	memcpy(&n, ev->data, 4);
	n = ntohl(n);
	if (n != st->next)
		atomic_fetch_add(&out_of_order, 1);
	st->next = n + 1;
	st->sum = mix(st->sum, n);
	busy_work();
	answer[0] = htonl(n);
	answer[1] = htonl((uint32_t)(st->sum >> 32));
	answer[2] = htonl((uint32_t)st->sum);
	atomic_fetch_sub(&st->busy, 1);
	(void)bs_send(bs, ev->id, answer, sizeof(answer), NULL, 0, 1000);
	atomic_fetch_add(&processed, 1);
}

/* Each thread serves all three kinds: opens and closes between batches. */
static void *server_thread(void *arg)
{
	bs_data_t ev[BATCH];
	bool done = false;

	(void)arg;
	while (!done && !atomic_load(&stop)) {
		bs_open_event_t oev;
		bs_close_event_t cev;
		int n;

		while (bs_recv_open(bs, &oev, 0) == 0) {
			struct conn_state *st = calloc(1, sizeof(*st));
			if (st == NULL || bs_set_user(bs, oev.id, st) != 0) {
				free(st);
				bs_send_close(bs, oev.id);
			}
		}
		while (bs_recv_close(bs, &cev, 0) == 0) {
			free(cev.user); /* the last event: nothing refers to it now */
			atomic_fetch_add(&freed, 1);
		}
		n = bs_recv_data_batch(bs, ev, BATCH, 10);
		for (int i = 0; i < n; i++)
			on_data(&ev[i]);
		if (n > 0)
			bs_data_release(ev, (size_t)n);
		done = n == BS_ESHUTDOWN;
	}
	return NULL;
}

static int write_all(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p = (const char *)p + k;
		n -= (size_t)k;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	while (n > 0) {
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p = (char *)p + k;
		n -= (size_t)k;
	}
	return 0;
}

/* Sends its numbers in windows of 32 and checks every answer. */
static void *client_thread(void *arg)
{
	struct sockaddr_in *sa = arg;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	uint64_t sum = 0;
	uint32_t sent = 0, got = 0;

	if (fd < 0 || connect(fd, (struct sockaddr *)sa, sizeof(*sa)) != 0) {
		atomic_fetch_add(&bad_answers, 1);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (got < msgs_per_conn && !atomic_load(&stop)) {
		uint8_t out[32 * 8];
		size_t len = 0;

		for (; sent < msgs_per_conn && sent < got + 32; sent++) {
			uint32_t h = htonl(4), v = htonl(sent);
			memcpy(out + len, &h, 4);
			memcpy(out + len + 4, &v, 4);
			len += 8;
		}
		if (len && write_all(fd, out, len) != 0)
			break;
		uint8_t in[16];
		uint32_t a[3];
		if (read_all(fd, in, sizeof(in)) != 0)
			break;
		memcpy(a, in + 4, sizeof(a));
		sum = mix(sum, got);
		if (ntohl(a[0]) != got || ((uint64_t)ntohl(a[1]) << 32 | ntohl(a[2])) != sum)
			atomic_fetch_add(&bad_answers, 1);
		got++;
	}
	if (got != msgs_per_conn)
		atomic_fetch_add(&bad_answers, 1);
	close(fd);
	return NULL;
}

static unsigned long arg_num(const char *s, unsigned long max)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v > max) {
		fprintf(stderr, "multi_worker: bad number %s\n", s);
		exit(2);
	}
	return v;
}

static void *watchdog(void *arg)
{
	(void)arg;
	for (int i = 0; i < RUN_LIMIT_S * 10 && !atomic_load(&stop); i++)
		usleep(100000);
	atomic_store(&stop, true);
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned threads = 4, conns = 100;
	pthread_t srv[MAX_THREADS], *cli, dog;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char bound[BS_ADDR_STRLEN], *colon;
	uint32_t listener;
	bs_config_t cfg;
	bool ok;

	msgs_per_conn = 2000;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--threads"))
			threads = (unsigned)arg_num(argv[i + 1], MAX_THREADS);
		else if (!strcmp(argv[i], "--conns"))
			conns = (unsigned)arg_num(argv[i + 1], 5000);
		else if (!strcmp(argv[i], "--msgs"))
			msgs_per_conn = (uint32_t)arg_num(argv[i + 1], 10000000);
		else if (!strcmp(argv[i], "--work-us"))
			work_us = (unsigned)arg_num(argv[i + 1], 100000);
		else {
			fprintf(stderr, "usage: multi_worker [--threads N] [--conns C] "
					"[--msgs M] [--work-us W]\n");
			return 2;
		}
	}
	if (threads == 0 || conns == 0)
		return 2;
	bs_config_init(&cfg);
	if (bs_create(&cfg, &bs) != 0 || bs_listen(bs, "127.0.0.1:0", NULL, &listener) != 0 ||
	    bs_listener_addr(bs, listener, bound, sizeof(bound)) != 0) {
		fprintf(stderr, "multi_worker: cannot listen\n");
		return 1;
	}
	colon = strrchr(bound, ':');
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cli = calloc(conns, sizeof(*cli));
	if (cli == NULL)
		return 1;
	pthread_create(&dog, NULL, watchdog, NULL);
	for (unsigned i = 0; i < threads; i++)
		pthread_create(&srv[i], NULL, server_thread, NULL);
	for (unsigned i = 0; i < conns; i++)
		pthread_create(&cli[i], NULL, client_thread, &sa);
	for (unsigned i = 0; i < conns; i++)
		pthread_join(cli[i], NULL);
	/* Every close event frees its state: wait for them, bounded. */
	for (int i = 0; i < 500 && atomic_load(&freed) < conns && !atomic_load(&stop); i++)
		usleep(10000);
	bs_shutdown(bs);
	for (unsigned i = 0; i < threads; i++)
		pthread_join(srv[i], NULL);
	atomic_store(&stop, true);
	pthread_join(dog, NULL);
	bs_destroy(bs);
	free(cli);

	ok = atomic_load(&processed) == (unsigned long long)conns * msgs_per_conn &&
	     atomic_load(&out_of_order) == 0 && atomic_load(&concurrent) == 0 &&
	     atomic_load(&bad_answers) == 0 && atomic_load(&freed) == conns;
	printf("multi_worker: %u threads, %u connections: processed %llu, out of order %llu, "
	       "concurrent %llu, bad answers %llu, states freed %llu: %s\n",
	       threads, conns, atomic_load(&processed), atomic_load(&out_of_order),
	       atomic_load(&concurrent), atomic_load(&bad_answers), atomic_load(&freed),
	       ok ? "ok" : "FAILED");
	return ok ? 0 : 1;
}
