/*
 * Flow control: a slow application makes the library stop reading (TCP
 * pushes back on the peers) without losing, reordering or blocking
 * anything; a peer that never reads fills its bounded send queue and
 * further sends are refused at once or after the caller's timeout, while
 * other connections carry on.
 */
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 10000

/* ------------------------------------------------------------------------
 * A slow application
 */
enum {
	SLOW_CLIENTS = 4,
	SLOW_BACKLOG = 4096,
	MIN_LEN = 100,
	MAX_LEN = 200,
	BATCH = 32,
};

struct sender {
	int fd;
	uint32_t stream, msgs;
	atomic_uint sent; /* messages fully written to the socket */
	uint64_t bytes;
};

/* Writes msgs pattern messages, a few per write, then half-closes. */
static void *sender_main(void *arg)
{
	struct sender *s = arg;
	uint8_t buf[BATCH * (MAX_LEN + 4)];

	for (uint32_t q = 0; q < s->msgs;) {
		size_t used = 0;
		uint32_t n = 0;
		for (; n < BATCH && q + n < s->msgs; n++) {
			size_t len = tu_pattern_len(s->stream, q + n, MIN_LEN, MAX_LEN);
			tu_frame_header(buf + used, len);
			tu_pattern_fill(buf + used + 4, len, s->stream, q + n);
			used += len + 4;
			s->bytes += len;
		}
		if (tu_write_all(s->fd, buf, used) != 0) {
			TU_CHECK(0, "client %u: write after %u messages: %s", s->stream,
				 q, strerror(errno));
			return NULL;
		}
		q += n;
		atomic_store(&s->sent, q);
	}
	shutdown(s->fd, SHUT_WR);
	return NULL;
}

static void test_slow_application(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fds[SLOW_CLIENTS];
	bs_id_t ids[SLOW_CLIENTS];
	static struct sender senders[SLOW_CLIENTS];
	pthread_t threads[SLOW_CLIENTS];
	uint32_t msgs = (uint32_t)tu_scaled(5000, 3000);

	tu_config(&cfg);
	cfg.io_threads = 1;
	cfg.recv_backlog_bytes = SLOW_BACKLOG;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);

	/* small client buffers: the kernel cannot absorb what is sent */
	for (int i = 0; i < SLOW_CLIENTS; i++) {
		fds[i] = tu_connect_opts(addr, 0, 16384);
		assert_true(fds[i] >= 0);
	}
	for (int i = 0; i < SLOW_CLIENTS; i++) {
		bs_open_event_t ev;
		assert_int_equal(bs_recv_open(bs, &ev, WAIT_MS), 0);
		int k = -1;
		for (int j = 0; j < SLOW_CLIENTS; j++)
			if (tu_local_port(fds[j]) == tu_sockaddr_port(&ev.peer))
				k = j;
		assert_true(k >= 0);
		ids[k] = ev.id;
	}
	for (int i = 0; i < SLOW_CLIENTS; i++) {
		senders[i] = (struct sender){ .fd = fds[i], .stream = (uint32_t)i, .msgs = msgs };
		assert_int_equal(pthread_create(&threads[i], NULL, sender_main, &senders[i]), 0);
	}

	/* nobody drains: reading must pause */
	bool paused = TU_WAIT_FOR(tu_stats(bs).paused_reads > 0, WAIT_MS);
	bs_stats_t st = tu_stats(bs);
	printf("      paused_reads %llu read_pauses %llu data_queue_depth %llu\n",
	       (unsigned long long)st.paused_reads, (unsigned long long)st.read_pauses,
	       (unsigned long long)st.data_queue_depth);
	assert_true(paused);
	assert_true(st.read_pauses > 0);

	/* while paused each backlog stays within its bound (exceeded by at
	 * most one read), the peers are held back, and the library still
	 * accepts and sends */
	uint64_t max_unread = 0;
	for (int i = 0; i < 20; i++) {
		for (int k = 0; k < SLOW_CLIENTS; k++) {
			bs_conn_info_t info;
			assert_int_equal(bs_conn_info(bs, ids[k], &info), 0);
			max_unread = info.unread_bytes > max_unread ? info.unread_bytes : max_unread;
		}
		tu_sleep_ms(10);
	}
	printf("      longest backlog while paused: %llu bytes\n", (unsigned long long)max_unread);
	assert_true(max_unread <= SLOW_BACKLOG + 256 * 1024);
	for (int i = 0; i < SLOW_CLIENTS; i++)
		assert_true(atomic_load(&senders[i].sent) < msgs);

	int xfd;
	bs_id_t xid;
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &xfd, &xid, WAIT_MS), 0);
	static const char hello[] = "sent while reads are paused";
	assert_int_equal(bs_send_data(bs, xid, hello, sizeof(hello)), 0);
	char buf[64];
	assert_int_equal(tu_recv_frame(xfd, buf, sizeof(buf), WAIT_MS), (long)sizeof(hello));
	assert_memory_equal(buf, hello, sizeof(hello));

	/* resume: one drainer, so the order it sees is the order returned */
	uint32_t next[SLOW_CLIENTS] = { 0 };
	bool closed[SLOW_CLIENTS] = { false };
	int nclosed = 0;
	uint64_t resumed = tu_now_ms(), deadline = resumed + 60000;
	unsigned batches = 0, timeouts = 0;
	bs_data_t evs[BATCH];
	while (nclosed < SLOW_CLIENTS && tu_now_ms() < deadline) {
		int n = bs_recv_data_batch(bs, evs, BATCH, 20);
		assert_true(n > 0 || n == BS_ETIMEDOUT);
		if (n > 0)
			batches++;
		else
			timeouts++;
		for (int i = 0; i < n; i++) {
			uint32_t s, q;
			int k = -1;
			for (int j = 0; j < SLOW_CLIENTS; j++)
				if (ids[j] == evs[i].id)
					k = j;
			TU_CHECK(k >= 0 && !closed[k], "data for an unknown or closed id");
			TU_CHECK(tu_pattern_check(evs[i].data, evs[i].len, &s, &q) == 0 &&
					 (int)s == k && q == next[k] &&
					 evs[i].len == tu_pattern_len(s, q, MIN_LEN, MAX_LEN),
				 "client %d: expected message %u, got %zu bytes", k,
				 k >= 0 ? next[k] : 0, evs[i].len);
			if (k >= 0)
				next[k]++;
			bs_msg_release(evs[i].msg);
		}
		assert_int_equal(tu_failures(), 0);

		bs_close_event_t cev;
		while (bs_recv_close(bs, &cev, 0) == 0) {
			int k = -1;
			for (int j = 0; j < SLOW_CLIENTS; j++)
				if (ids[j] == cev.id)
					k = j;
			assert_true(k >= 0);
			assert_false(closed[k]);
			/* every message came before the close */
			assert_int_equal(next[k], msgs);
			assert_int_equal(cev.reason, BS_EOF);
			closed[k] = true;
			nclosed++;
		}
	}
	printf("      drained %u messages in %llu ms after resuming (%u batches, "
	       "%u empty waits)\n", SLOW_CLIENTS * msgs,
	       (unsigned long long)(tu_now_ms() - resumed), batches, timeouts);
	for (int i = 0; i < SLOW_CLIENTS; i++) {
		pthread_join(threads[i], NULL);
		assert_int_equal(next[i], msgs);
	}
	assert_int_equal(nclosed, SLOW_CLIENTS);
	assert_int_equal(tu_failures(), 0);

	uint64_t bytes = 0;
	for (int i = 0; i < SLOW_CLIENTS; i++)
		bytes += senders[i].bytes;
	TU_ASSERT_STAT(bs, msgs_in, (uint64_t)SLOW_CLIENTS * msgs);
	TU_ASSERT_STAT(bs, bytes_in, bytes);
	TU_ASSERT_STAT(bs, paused_reads, 0);

	for (int i = 0; i < SLOW_CLIENTS; i++)
		close(fds[i]);
	close(xfd);
	bs_destroy(bs);
}

/* ------------------------------------------------------------------------
 * A peer that never reads
 */
enum { BIG = 1024 };

struct late_reader {
	int fd;
	pid_t wait_for; /* start reading once this thread sleeps */
	uint32_t expect, got;
};

static void *late_reader_main(void *arg)
{
	struct late_reader *r = arg;
	tu_reader_t rd;
	const uint8_t *p;

	/* let the sender block first; if it does not, read anyway */
	TU_WAIT_FOR(tu_thread_sleeping(r->wait_for), 2000);
	tu_reader_init(&rd, r->fd, 1 << 16);
	while (r->got < r->expect) {
		long len = tu_reader_recv(&rd, &p, WAIT_MS);
		uint32_t s, q;
		if (len < 0) {
			TU_CHECK(0, "slow peer: read %ld after %u messages", len, r->got);
			break;
		}
		TU_CHECK(tu_pattern_check(p, (size_t)len, &s, &q) == 0 && s == 0 &&
				 q == r->got && len == BIG,
			 "slow peer: message %u wrong", r->got);
		r->got++;
	}
	tu_reader_free(&rd);
	return NULL;
}

static void test_peer_that_never_reads(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	uint8_t msg[BIG];

	tu_config(&cfg);
	cfg.send_queue_bytes = 64 * 1024;
	cfg.sndbuf = 16384;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);

	int slow = tu_connect_opts(addr, 4096, 0);
	assert_true(slow >= 0);
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, WAIT_MS), 0);
	bs_id_t slow_id = oev.id;
	int fast;
	bs_id_t fast_id;
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &fast, &fast_id, WAIT_MS), 0);

	/* fill the slow peer's queue until the library refuses */
	uint32_t sent = 0;
	int rc = 0;
	uint64_t refused_ns = 0;
	while (sent < 100000) {
		tu_pattern_fill(msg, BIG, 0, sent);
		uint64_t t0 = tu_now_ns();
		rc = bs_send_data(bs, slow_id, msg, BIG);
		refused_ns = tu_now_ns() - t0;
		if (rc != 0)
			break;
		sent++;
	}
	printf("      %u KiB accepted before BS_EAGAIN\n", sent * BIG / 1024);
	assert_int_equal(rc, BS_EAGAIN);
	assert_true(sent > 0);
	assert_true(refused_ns < 500 * 1000000ull);
	assert_int_equal(tu_stats(bs).sends_refused, 1);

	/* the same refusal with a timeout: at once for 0, after it for > 0 */
	tu_pattern_fill(msg, BIG, 0, sent);
	assert_int_equal(bs_send(bs, slow_id, msg, BIG, NULL, 0, 0), BS_EAGAIN);
	uint64_t t0 = tu_now_ms();
	assert_int_equal(bs_send(bs, slow_id, msg, BIG, NULL, 0, 100), BS_ETIMEDOUT);
	uint64_t waited = tu_now_ms() - t0;
	printf("      bs_send(timeout 100 ms) returned after %llu ms\n",
	       (unsigned long long)waited);
	assert_true(waited >= 90 && waited < 3000);
	assert_int_equal(tu_stats(bs).sends_refused, 3);

	/* meanwhile another connection works as usual, both ways */
	for (uint32_t i = 0; i < 200; i++) {
		uint8_t m[256], back[256];
		size_t len = tu_pattern_len(1, i, 8, sizeof(m));
		tu_pattern_fill(m, len, 1, i);
		assert_int_equal(tu_send_frame(fast, m, len), 0);
		bs_data_t ev;
		assert_int_equal(bs_recv_data(bs, &ev, WAIT_MS), 0);
		assert_int_equal(ev.id, fast_id);
		assert_int_equal(ev.len, len);
		assert_memory_equal(ev.data, m, len);
		rc = bs_send_msg(bs, fast_id, ev.msg, ev.data, ev.len);
		if (rc != 0)
			bs_msg_release(ev.msg);
		assert_int_equal(rc, 0);
		assert_int_equal(bs_release(bs), 0); /* the answer goes now */
		assert_int_equal(tu_recv_frame(fast, back, sizeof(back), WAIT_MS), (long)len);
		assert_memory_equal(back, m, len);
	}
	/* still full */
	assert_int_equal(bs_send_data(bs, slow_id, msg, BIG), BS_EAGAIN);
	assert_int_equal(tu_stats(bs).sends_refused, 4);

	/* a sender willing to wait gets through once the peer reads, and
	 * the peer gets everything accepted, in order */
	struct late_reader r = { .fd = slow, .wait_for = tu_gettid(), .expect = sent + 1 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, late_reader_main, &r), 0);
	rc = bs_send(bs, slow_id, msg, BIG, NULL, 0, 20000);
	pthread_join(th, NULL);
	assert_int_equal(rc, 0);
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(r.got, sent + 1);
	assert_int_equal(tu_stats(bs).sends_refused, 4);

	close(slow);
	assert_int_equal(tu_expect_close(bs, slow_id, BS_EOF, true, NULL, WAIT_MS), 0);
	close(fast);
	assert_int_equal(tu_expect_close(bs, fast_id, BS_EOF, true, NULL, WAIT_MS), 0);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slow_application),
		cmocka_unit_test(test_peer_that_never_reads),
	};
	return TU_RUN("flow", tests, argc, argv);
}
