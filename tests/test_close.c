/*
 * How connections end: bs_send_close flushes first; a peer that goes away
 * leaves a count of what was not sent; idle connections time out and busy
 * ones do not; a refused dial ends with a close event and no open.
 */
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 10000

static void test_send_close_after_many_sends(void **state)
{
	(void)state;
	enum { N = 10000, MAXLEN = 300 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	uint8_t msg[MAXLEN];
	uint64_t bytes = 0;

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	/* a small receive buffer keeps most of it queued in the library */
	int fd = tu_connect_opts(addr, 16384, 0);
	assert_true(fd >= 0);
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, WAIT_MS), 0);
	bs_id_t id = oev.id;

	for (uint32_t i = 0; i < N; i++) {
		size_t len = tu_pattern_len(5, i, 8, MAXLEN);
		tu_pattern_fill(msg, len, 5, i);
		assert_int_equal(bs_send_data(bs, id, msg, len), 0);
		bytes += len;
	}
	assert_int_equal(bs_send_close(bs, id), 0);

	/* the id is dead at once, though its queue is still being written */
	assert_int_equal(bs_send_data(bs, id, msg, 8), BS_ESTALE);
	assert_int_equal(bs_send(bs, id, msg, 8, NULL, 0, 1000), BS_ESTALE);
	assert_int_equal(bs_flush(bs, id), BS_ESTALE);
	assert_int_equal(bs_send_close(bs, id), BS_ESTALE);
	assert_true(tu_stats(bs).sends_stale >= 2);

	/* the peer gets every message, in order, then the end */
	tu_reader_t rd;
	tu_reader_init(&rd, fd, 1 << 16);
	for (uint32_t i = 0; i < N; i++) {
		const uint8_t *p;
		uint32_t s, q;
		long len = tu_reader_recv(&rd, &p, WAIT_MS);
		if (len < 0)
			fail_msg("message %u: read returned %ld", i, len);
		assert_int_equal(tu_pattern_check(p, (size_t)len, &s, &q), 0);
		assert_int_equal(s, 5);
		assert_int_equal(q, i);
		assert_int_equal(len, tu_pattern_len(5, i, 8, MAXLEN));
	}
	const uint8_t *p;
	assert_int_equal(tu_reader_recv(&rd, &p, WAIT_MS), TU_EOF);
	tu_reader_free(&rd);

	assert_int_equal(tu_expect_close(bs, id, BS_ECLOSED, true, NULL, WAIT_MS), 0);
	TU_ASSERT_STAT(bs, msgs_out, N);
	TU_ASSERT_STAT(bs, bytes_out, bytes);
	TU_ASSERT_STAT(bs, unsent_msgs, 0);
	TU_ASSERT_STAT(bs, conns_open, 0);
	TU_ASSERT_STAT(bs, conns_closed, 1);

	close(fd);
	bs_destroy(bs);
}

static void test_peer_gone_counts_unsent(void **state)
{
	(void)state;
	enum { BIG = 1024 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	uint8_t msg[BIG];

	tu_config(&cfg);
	cfg.send_queue_bytes = 64 * 1024;
	cfg.sndbuf = 16384;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	int fd = tu_connect_opts(addr, 4096, 0);
	assert_true(fd >= 0);
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, WAIT_MS), 0);

	uint32_t sent = 0;
	int rc;
	memset(msg, 0x5a, sizeof(msg));
	while ((rc = bs_send_data(bs, oev.id, msg, BIG)) == 0 && sent < 100000)
		sent++;
	assert_int_equal(rc, BS_EAGAIN);

	/* the peer leaves without reading */
	close(fd);
	bs_close_event_t ev;
	assert_int_equal(bs_recv_close(bs, &ev, WAIT_MS), 0);
	assert_int_equal(ev.id, oev.id);
	printf("      reason %s (errno %d), %llu of %u messages unsent\n",
	       bs_err_name(ev.reason), ev.sys_errno,
	       (unsigned long long)ev.unsent_msgs, sent);
	assert_true(ev.reason == BS_EOF || ev.reason == BS_ESYS);
	assert_true(ev.unsent_msgs > 0 && ev.unsent_msgs <= sent);
	assert_true(ev.unsent_bytes > 0 && ev.unsent_bytes <= (uint64_t)sent * BIG);

	/* every accepted message is either written or counted as unsent */
	TU_ASSERT_STAT(bs, unsent_msgs, ev.unsent_msgs);
	TU_ASSERT_STAT(bs, msgs_out, sent - ev.unsent_msgs);
	assert_int_equal(bs_send_data(bs, oev.id, msg, BIG), BS_ESTALE);
	bs_destroy(bs);
}

/* ------------------------------------------------------------------------
 * Idle timeout
 */
enum { IDLE_MS = 200, BEAT_MS = 50, ACTIVE_MS = 1000 };

struct beat {
	int fd;
	atomic_uint sent;
	atomic_bool done;
	atomic_ullong last_ms;
};

static void *beat_main(void *arg)
{
	struct beat *b = arg;
	uint64_t end = tu_now_ms() + ACTIVE_MS;

	while (tu_now_ms() < end) {
		uint32_t n = atomic_load(&b->sent);
		if (tu_send_frame(b->fd, &n, sizeof(n)) != 0) {
			TU_CHECK(0, "active client: write: %s", strerror(errno));
			break;
		}
		atomic_store(&b->last_ms, tu_now_ms());
		atomic_store(&b->sent, n + 1);
		tu_sleep_ms(BEAT_MS); /* the activity pattern itself */
	}
	atomic_store(&b->done, true);
	return NULL;
}

static void test_idle_timeout(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fds[2];
	bs_id_t ids[2];
	static struct beat b;

	tu_config(&cfg);
	cfg.idle_timeout_ms = IDLE_MS;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	uint64_t t_open = tu_now_ms();
	assert_int_equal(tu_open_clients(bs, addr, lis, 2, fds, ids, WAIT_MS), 0);

	b.fd = fds[1];
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, beat_main, &b), 0);

	uint32_t received = 0;
	uint64_t idle_closed_after = 0;
	bool active_closed_early = false;
	while (!atomic_load(&b.done)) {
		bs_data_t ev;
		if (bs_recv_data(bs, &ev, 10) == 0) {
			TU_CHECK(ev.id == ids[1] && ev.len == 4, "unexpected data");
			received++;
			bs_msg_release(ev.msg);
		}
		bs_close_event_t cev;
		if (bs_recv_close(bs, &cev, 0) == 0) {
			if (cev.id == ids[0] && !idle_closed_after) {
				idle_closed_after = tu_now_ms() - t_open;
				TU_CHECK(cev.reason == BS_ETIMEDOUT, "idle close reason %s",
					 bs_err_name(cev.reason));
			} else {
				active_closed_early = true;
			}
		}
	}
	pthread_join(th, NULL);
	assert_int_equal(tu_failures(), 0);
	assert_false(active_closed_early);
	if (!idle_closed_after) {
		assert_int_equal(tu_expect_close(bs, ids[0], BS_ETIMEDOUT, true, NULL, 3000), 0);
		idle_closed_after = tu_now_ms() - t_open;
	}
	printf("      idle connection closed %llu ms after connecting\n",
	       (unsigned long long)idle_closed_after);
	/* not before its time (a little slack for coarse clocks) */
	assert_true(idle_closed_after >= IDLE_MS - 20);
	assert_int_equal(tu_wait_eof(fds[0], WAIT_MS), 1);
	TU_ASSERT_STAT(bs, idle_timeouts, 1);
	assert_int_equal(bs_send_data(bs, ids[0], "x", 1), BS_ESTALE);

	/* the active one goes quiet now: it times out too, after all its
	 * messages */
	uint64_t deadline = tu_now_ms() + 5000;
	bs_close_event_t cev;
	int rc;
	while ((rc = bs_recv_close(bs, &cev, 0)) != 0 && tu_now_ms() < deadline) {
		bs_data_t ev;
		if (bs_recv_data(bs, &ev, 10) == 0) {
			assert_int_equal(ev.id, ids[1]);
			received++;
			bs_msg_release(ev.msg);
		}
	}
	assert_int_equal(rc, 0);
	uint64_t quiet = tu_now_ms() - atomic_load(&b.last_ms);
	assert_int_equal(cev.id, ids[1]);
	assert_int_equal(cev.reason, BS_ETIMEDOUT);
	assert_true(quiet >= IDLE_MS - 20);
	assert_int_equal(received, atomic_load(&b.sent));
	TU_ASSERT_STAT(bs, idle_timeouts, 2);

	close(fds[0]);
	close(fds[1]);
	bs_destroy(bs);
}

/* ------------------------------------------------------------------------
 * Refused dial
 */
static void test_dial_refused(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	int hold;
	int port = tu_closed_port(&hold);
	char addr[64];

	assert_true(port > 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &bs), 0);

	bs_id_t id = 0;
	uint64_t t0 = tu_now_ms();
	assert_int_equal(bs_dial(bs, addr, NULL, &id), 0);
	assert_true(tu_now_ms() - t0 < 1000);
	assert_int_not_equal(id, 0);
	/* may still be queued for the connection, or already refused */
	int rc = bs_send_data(bs, id, "hello", 5);
	assert_true(rc == 0 || rc == BS_ESTALE);

	bs_close_event_t ev;
	assert_int_equal(tu_expect_close(bs, id, BS_ECONNREFUSED, false, &ev, WAIT_MS), 0);
	if (rc == 0) {
		assert_int_equal(ev.unsent_msgs, 1);
		assert_int_equal(ev.unsent_bytes, 5);
	} else {
		assert_int_equal(ev.unsent_msgs, 0);
	}
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, 200), BS_ETIMEDOUT);
	assert_int_equal(bs_send_data(bs, id, "hello", 5), BS_ESTALE);
	TU_ASSERT_STAT(bs, conns_open, 0);

	bs_destroy(bs);
	close(hold);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_close_after_many_sends),
		cmocka_unit_test(test_peer_gone_counts_unsent),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_dial_refused),
	};
	return TU_RUN("close", tests, argc, argv);
}
