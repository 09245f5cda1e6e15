/*
 * Scale and hostile peers: thousands of concurrent connections near the fd
 * limit, each echoing and checked; peers that trickle frames byte by byte,
 * announce huge frames and vanish, or send garbage — while a well-behaved
 * connection keeps working.
 */
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 20000

/* Echoes every message back, zero-copy, until stopped. */
struct echo_loop {
	bs_t *bs;
	atomic_bool stop;
	atomic_ulong echoed;
};

static void *echo_main(void *arg)
{
	struct echo_loop *e = arg;
	bs_data_t ev[64];

	while (!atomic_load(&e->stop)) {
		int n = bs_recv_data_batch(e->bs, ev, 64, 20);
		for (int i = 0; i < n; i++) {
			if (bs_send_msg(e->bs, ev[i].id, ev[i].msg, ev[i].data, ev[i].len) != 0)
				bs_msg_release(ev[i].msg);
		}
		if (n > 0)
			atomic_fetch_add(&e->echoed, (unsigned long)n);
	}
	return NULL;
}

static int fd_budget(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	return (int)(rl.rlim_cur > 20000 ? 20000 : rl.rlim_cur);
}

/* Many connections at once: each sends ROUNDS messages (one at a time in
 * flight per connection, all connections concurrently) and checks every
 * echo. Ids must be distinct, one open and one close each. */
static void test_thousands_of_connections(void **state)
{
	(void)state;
	enum { ROUNDS = 3 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	struct echo_loop e = { 0 };
	pthread_t th[2];
	/* two fds per connection (both ends in this process), some spare */
	int most = (fd_budget() - 200) / 2;
	int conns = (int)tu_scaled(most < 9000 ? most : 9000, 500);

	if (conns > most) /* a larger scale cannot exceed the fd limit */
		conns = most;
	tu_config(&cfg);
	cfg.open_events = false;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	e.bs = bs;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, echo_main, &e), 0);

	int *fds = calloc((size_t)conns, sizeof(int));
	struct pollfd *pfd = calloc((size_t)conns, sizeof(*pfd));
	uint32_t *round = calloc((size_t)conns, sizeof(uint32_t));
	assert_non_null(fds);
	assert_non_null(pfd);
	assert_non_null(round);
	for (int i = 0; i < conns; i++) {
		fds[i] = tu_connect(addr);
		if (fds[i] < 0)
			fail_msg("connection %d of %d: %s", i, conns, strerror(errno));
	}
	assert_true(TU_WAIT_FOR(tu_stats(bs).conns_open == (uint64_t)conns, WAIT_MS));

	uint8_t msg[64], back[64];
	for (int i = 0; i < conns; i++) {
		size_t len = tu_pattern_len((uint32_t)i, 0, 8, 60);
		tu_pattern_fill(msg, len, (uint32_t)i, 0);
		assert_int_equal(tu_send_frame(fds[i], msg, len), 0);
	}
	int done = 0;
	uint64_t deadline = tu_now_ms() + 60000;
	while (done < conns && tu_now_ms() < deadline) {
		for (int i = 0; i < conns; i++) {
			pfd[i].fd = round[i] < ROUNDS ? fds[i] : -1;
			pfd[i].events = POLLIN;
		}
		if (poll(pfd, (nfds_t)conns, 1000) <= 0)
			continue;
		for (int i = 0; i < conns; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			uint32_t s, q;
			long got = tu_recv_frame(fds[i], back, sizeof(back), WAIT_MS);
			size_t want = tu_pattern_len((uint32_t)i, round[i], 8, 60);
			if (got != (long)want || tu_pattern_check(back, want, &s, &q) != 0 ||
			    s != (uint32_t)i || q != round[i])
				fail_msg("connection %d round %u: bad echo (%ld bytes)", i, round[i], got);
			if (++round[i] == ROUNDS) {
				done++;
				continue;
			}
			want = tu_pattern_len((uint32_t)i, round[i], 8, 60);
			tu_pattern_fill(msg, want, (uint32_t)i, round[i]);
			assert_int_equal(tu_send_frame(fds[i], msg, want), 0);
		}
	}
	printf("      %d connections x %d echoes\n", conns, ROUNDS);
	assert_int_equal(done, conns);
	assert_int_equal(atomic_load(&e.echoed), (unsigned long)conns * ROUNDS);

	for (int i = 0; i < conns; i++)
		close(fds[i]);
	/* every id closes exactly once, and ids are all distinct */
	tu_idmap_t seen;
	tu_idmap_init(&seen, (size_t)conns);
	for (int i = 0; i < conns; i++) {
		bs_close_event_t ev;
		assert_int_equal(bs_recv_close(bs, &ev, WAIT_MS), 0);
		assert_int_equal(ev.reason, BS_EOF);
		assert_true(tu_idmap_add(&seen, ev.id, NULL) == i);
	}
	bs_close_event_t extra;
	assert_int_equal(bs_recv_close(bs, &extra, 100), BS_ETIMEDOUT);
	tu_idmap_free(&seen);

	atomic_store(&e.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	free(fds);
	free(pfd);
	free(round);
	bs_destroy(bs);
}

/* Hostile peers next to a good one: the good connection's echoes are
 * checked after each of them did its worst. */
static void test_hostile_peers(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	struct echo_loop e = { 0 };
	pthread_t th;

	tu_config(&cfg);
	cfg.open_events = false;
	cfg.framing.max_message_size = 1 << 20;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	e.bs = bs;
	assert_int_equal(pthread_create(&th, NULL, echo_main, &e), 0);

	int good = tu_connect(addr);
	assert_true(good >= 0);
	uint8_t back[64];

	/* 1. a frame trickled one byte per write is still one message */
	int slow = tu_connect(addr);
	uint8_t frame[4 + 40];
	size_t flen = tu_frame(frame, "trickled one byte at a time, still whole", 40);
	for (size_t i = 0; i < flen; i++) {
		assert_int_equal(tu_write_all(slow, frame + i, 1), 0);
		tu_sleep_ms(1);
	}
	assert_int_equal(tu_recv_frame(slow, back, sizeof(back), WAIT_MS), 40);
	assert_memory_equal(back, frame + 4, 40);

	/* 2. a peer announcing the maximum and vanishing costs nothing lasting */
	for (int i = 0; i < 200; i++) {
		int fd = tu_connect(addr);
		uint8_t hdr[4] = { 0x00, 0x10, 0x00, 0x00 }; /* exactly 1 MiB announced */
		assert_int_equal(tu_write_all(fd, hdr, 4), 0);
		assert_int_equal(tu_write_all(fd, "partial", 7), 0);
		close(fd);
	}

	/* 3. over the maximum, and random garbage: closed, counted */
	int big = tu_connect(addr);
	uint8_t over[4] = { 0x00, 0x10, 0x00, 0x01 };
	assert_int_equal(tu_write_all(big, over, 4), 0);
	assert_int_equal(tu_wait_eof(big, WAIT_MS), 1);
	close(big);
	uint64_t seed = 42;
	for (int i = 0; i < 50; i++) {
		int fd = tu_connect(addr);
		uint8_t junk[256];
		for (size_t k = 0; k < sizeof(junk); k++)
			junk[k] = (uint8_t)tu_rand(&seed);
		junk[0] = 0xff; /* the first header announces far too much */
		assert_int_equal(tu_write_all(fd, junk, sizeof(junk)), 0);
		assert_int_equal(tu_wait_eof(fd, WAIT_MS), 1);
		close(fd);
	}
	assert_true(TU_WAIT_FOR(tu_stats(bs).frames_rejected == 51, WAIT_MS));

	/* the good connection never noticed */
	for (uint32_t q = 0; q < 100; q++) {
		uint8_t msg[64];
		size_t len = tu_pattern_len(7, q, 8, 60);
		tu_pattern_fill(msg, len, 7, q);
		assert_int_equal(tu_send_frame(good, msg, len), 0);
		assert_int_equal(tu_recv_frame(good, back, sizeof(back), WAIT_MS), (long)len);
		assert_memory_equal(back, msg, len);
	}
	/* 200 half-frames, 51 rejected, slow and good still open */
	close(slow);
	assert_true(TU_WAIT_FOR(tu_stats(bs).conns_open == 1, WAIT_MS));
	close(good);
	atomic_store(&e.stop, true);
	pthread_join(th, NULL);
	bs_destroy(bs);
}

/* A server that greets on accept: the dialled side gets the greeting even
 * though it arrives with the connect itself and nothing follows it. */
static void test_dial_gets_greeting(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *srv, *cli;
	uint32_t lis;
	char addr[128];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &srv, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	for (int round = 0; round < 20; round++) {
		bs_id_t id;
		bs_open_event_t sev, cev;
		bs_data_t d;

		assert_int_equal(bs_dial(cli, addr, NULL, &id), 0);
		assert_int_equal(bs_recv_open(srv, &sev, WAIT_MS), 0);
		assert_int_equal(bs_send_data(srv, sev.id, "welcome", 7), 0);
		tu_sleep_ms(2); /* let the greeting land before the open is taken */
		assert_int_equal(bs_recv_open(cli, &cev, WAIT_MS), 0);
		assert_int_equal(cev.id, id);
		assert_int_equal(bs_recv_data(cli, &d, 2000), 0);
		assert_int_equal(d.id, id);
		assert_int_equal(d.len, 7);
		assert_memory_equal(d.data, "welcome", 7);
		bs_msg_release(d.msg);
		assert_int_equal(bs_send_close(srv, sev.id), 0);
		assert_int_equal(tu_expect_close(cli, id, BS_EOF, true, NULL, WAIT_MS), 0);
		assert_int_equal(tu_expect_close(srv, sev.id, BS_ECLOSED, true, NULL, WAIT_MS), 0);
	}
	bs_destroy(cli);
	bs_destroy(srv);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_thousands_of_connections),
		cmocka_unit_test(test_hostile_peers),
		cmocka_unit_test(test_dial_gets_greeting),
	};
	return TU_RUN("scale", tests, argc, argv);
}
