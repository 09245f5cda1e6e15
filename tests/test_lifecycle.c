/*
 * Lifecycle: configuration, the three ways bs_recv_* end (data, timeout,
 * shutdown), graceful shutdown and destroy with threads still inside the
 * library, and running with open and close events turned off.
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

static void test_config_defaults(void **state)
{
	(void)state;
	bs_config_t cfg;
	memset(&cfg, 0xa5, sizeof(cfg));
	bs_config_init(&cfg);
	assert_int_equal(cfg.io_threads, 0);
	assert_int_equal(cfg.node, 0);
	assert_int_equal(cfg.max_connections, 65536);
	assert_int_equal(cfg.recv_backlog_bytes, 1u << 20);
	assert_int_equal(cfg.hold_batch, 64);
	assert_int_equal(cfg.hold_warn_ms, 1000);
	assert_int_equal(cfg.send_more_us, 10000);
	assert_int_equal(cfg.slow_policy, BS_SLOW_REFUSE);
	assert_false(cfg.reuseport);
	assert_int_equal(cfg.send_queue_bytes, 4u << 20);
	assert_int_equal(cfg.framing.kind, BS_FRAMING_FIXED);
	assert_int_equal(cfg.framing.width, 4);
	assert_false(cfg.framing.little_endian);
	assert_true(cfg.framing.max_message_size == 0 ||
		    cfg.framing.max_message_size == 8u << 20);
	assert_true(cfg.open_events);
	assert_true(cfg.close_events);
	assert_int_equal(cfg.idle_timeout_ms, 0);
	assert_int_equal(cfg.shutdown_timeout_ms, 5000);
	assert_true(cfg.tcp_nodelay);
	assert_false(cfg.tcp_keepalive);
	assert_int_equal(cfg.sndbuf, 0);
	assert_int_equal(cfg.rcvbuf, 0);
	assert_int_equal(cfg.backlog, 1024);
	assert_true(cfg.reuseaddr);
	assert_int_equal(cfg.io_poll_us, 100);
	assert_int_equal(cfg.recv_poll_us, 100);
	assert_null(cfg.log);
	assert_int_equal(cfg.log_level, BS_LOG_WARN);

	bs_framing_t f;
	bs_framing_default(&f);
	assert_int_equal(f.kind, BS_FRAMING_FIXED);
	assert_int_equal(f.width, 4);
	assert_false(f.little_endian);
	assert_int_equal(f.max_message_size, 8u << 20);
	assert_int_equal(bs_framing_check(&f), 0);
}

static void test_create_and_destroy(void **state)
{
	(void)state;
	bs_t *bs = NULL;

	bs_destroy(NULL);
	assert_int_equal(bs_create(NULL, &bs), 0);
	assert_non_null(bs);
	bs_stats_t st = tu_stats(bs);
	assert_int_equal(st.conns_open, 0);
	assert_int_equal(st.msgs_in, 0);
	bs_destroy(bs);

	/* a bad configuration creates nothing */
	bs_config_t cfg;
	bs_t *sentinel = (bs_t *)&cfg;
	bs_config_init(&cfg);
	cfg.framing.width = 9;
	bs = sentinel;
	assert_int_equal(bs_create(&cfg, &bs), BS_EINVAL);
	assert_ptr_equal(bs, sentinel);
	bs_config_init(&cfg);
	cfg.framing.kind = (bs_framing_kind_t)99;
	assert_int_equal(bs_create(&cfg, &bs), BS_EINVAL);
	assert_ptr_equal(bs, sentinel);

	/* several instances side by side */
	bs_t *many[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(bs_create(NULL, &many[i]), 0);
	for (int i = 3; i >= 0; i--)
		bs_destroy(many[i]);
}

static void test_recv_timeouts(void **state)
{
	(void)state;
	bs_t *bs;
	bs_open_event_t oev;
	bs_data_t dev[4];
	bs_close_event_t cev;

	assert_int_equal(bs_create(NULL, &bs), 0);
	assert_int_equal(bs_recv_open(bs, &oev, 0), BS_EAGAIN);
	assert_int_equal(bs_recv_data(bs, &dev[0], 0), BS_EAGAIN);
	assert_int_equal(bs_recv_data_batch(bs, dev, 4, 0), BS_EAGAIN);
	assert_int_equal(bs_recv_close(bs, &cev, 0), BS_EAGAIN);

	/* a timeout is honoured: not early, and not much later than asked
	 * (the slack allows for a loaded machine) */
	static const int timeouts[] = { 50, 200 };
	for (int t = 0; t < 2; t++) {
		int ms = timeouts[t];
		for (int kind = 0; kind < 4; kind++) {
			uint64_t t0 = tu_now_ms();
			int rc;
			switch (kind) {
			case 0: rc = bs_recv_open(bs, &oev, ms); break;
			case 1: rc = bs_recv_data(bs, &dev[0], ms); break;
			case 2: rc = bs_recv_data_batch(bs, dev, 4, ms); break;
			default: rc = bs_recv_close(bs, &cev, ms); break;
			}
			uint64_t waited = tu_now_ms() - t0;
			if (rc != BS_ETIMEDOUT || waited + 2 < (uint64_t)ms ||
			    waited > (uint64_t)ms * 2 + 50)
				fail_msg("receive kind %d, timeout %d ms: %s after %llu ms",
					 kind, ms, bs_err_name(rc),
					 (unsigned long long)waited);
		}
	}
	bs_destroy(bs);
}

/*
 * A receive polls before it sleeps (recv_poll_us, here the most: 10 ms),
 * once traffic taught it to. The poll takes what comes during it, and it
 * never outlasts the caller's timeout.
 */
struct late_sender {
	int fd;
	unsigned delay_ms;
};

static void *send_late(void *arg)
{
	struct late_sender *ls = arg;

	tu_sleep_ms(ls->delay_ms);
	(void)tu_send_frame(ls->fd, "late", 4);
	return NULL;
}

static void test_recv_poll_within_timeout(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t l;
	char addr[64];
	int fd;
	bs_id_t id;

	tu_config(&cfg);
	cfg.recv_poll_us = 10000;
	cfg.close_events = false;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &l, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, l, 1, &fd, &id, 5000), 0);
	/* Each message comes soon after the receive started waiting: the
	 * poll grows to its most. */
	for (int i = 0; i < 20; i++) {
		assert_int_equal(tu_send_frame(fd, "ping", 4), 0);
		assert_int_equal(tu_expect_data(bs, id, "ping", 4, 5000), 0);
	}
	/* A message that comes while it polls (or after) is taken. */
	struct late_sender ls = { .fd = fd, .delay_ms = 3 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, send_late, &ls), 0);
	assert_int_equal(tu_expect_data(bs, id, "late", 4, 5000), 0);
	pthread_join(th, NULL);
	/* Nothing comes: the timeout holds, poll or not. */
	for (int ms = 1; ms <= 4; ms *= 2) {
		bs_data_t ev;
		uint64_t t0 = tu_now_ms();
		int rc = bs_recv_data(bs, &ev, ms);
		uint64_t waited = tu_now_ms() - t0;

		if (rc != BS_ETIMEDOUT || waited + 1 < (uint64_t)ms || waited > (uint64_t)ms * 2 + 50)
			fail_msg("timeout %d ms with a 10 ms poll: %s after %llu ms", ms,
				 bs_err_name(rc), (unsigned long long)waited);
	}
	close(fd);
	bs_destroy(bs);
}

/* ------------------------------------------------------------------------
 * Threads blocked in bs_recv_* when the library goes away
 */
enum { KINDS = 4, PER_KIND = 2 };

struct blocked {
	bs_t *bs;
	int kind;
	atomic_int tid;
	atomic_int rc;
	atomic_bool returned;
};

static void *blocked_main(void *arg)
{
	struct blocked *b = arg;
	bs_open_event_t oev;
	bs_data_t dev[8];
	bs_close_event_t cev;
	int rc;

	atomic_store(&b->tid, (int)tu_gettid());
	switch (b->kind) {
	case 0: rc = bs_recv_open(b->bs, &oev, -1); break;
	case 1: rc = bs_recv_data(b->bs, &dev[0], -1); break;
	case 2: rc = bs_recv_data_batch(b->bs, dev, 8, -1); break;
	default: rc = bs_recv_close(b->bs, &cev, -1); break;
	}
	atomic_store(&b->rc, rc);
	atomic_store(&b->returned, true);
	return NULL;
}

static bool all_asleep(struct blocked *b, int n)
{
	for (int i = 0; i < n; i++) {
		int tid = atomic_load(&b[i].tid);
		if (!tid || atomic_load(&b[i].returned) || !tu_thread_sleeping(tid))
			return false;
	}
	return true;
}

/* Starts PER_KIND threads blocked in each bs_recv_* call. */
static void start_blocked(bs_t *bs, struct blocked *b, pthread_t *th)
{
	for (int i = 0; i < KINDS * PER_KIND; i++) {
		b[i].bs = bs;
		b[i].kind = i % KINDS;
		atomic_store(&b[i].tid, 0);
		atomic_store(&b[i].rc, 1);
		atomic_store(&b[i].returned, false);
		assert_int_equal(pthread_create(&th[i], NULL, blocked_main, &b[i]), 0);
	}
	/* bounded wait until every one of them sleeps inside the library */
	assert_true(TU_WAIT_FOR(all_asleep(b, KINDS * PER_KIND), 5000));
}

static void test_destroy_wakes_blocked_receivers(void **state)
{
	(void)state;
	bs_t *bs;
	struct blocked b[KINDS * PER_KIND];
	pthread_t th[KINDS * PER_KIND];

	assert_int_equal(bs_create(NULL, &bs), 0);
	start_blocked(bs, b, th);
	for (int i = 0; i < KINDS * PER_KIND; i++)
		assert_false(atomic_load(&b[i].returned));

	uint64_t t0 = tu_now_ms();
	bs_destroy(bs);
	uint64_t took = tu_now_ms() - t0;
	for (int i = 0; i < KINDS * PER_KIND; i++) {
		pthread_join(th[i], NULL);
		if (atomic_load(&b[i].rc) != BS_ESHUTDOWN)
			fail_msg("receive kind %d returned %s", b[i].kind,
				 bs_err_name(atomic_load(&b[i].rc)));
	}
	printf("      bs_destroy took %llu ms\n", (unsigned long long)took);
	assert_true(took < 5000);
}

static void test_shutdown_drains_queues(void **state)
{
	(void)state;
	enum { N = 10 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fd;
	bs_id_t id;
	struct blocked b[KINDS * PER_KIND];
	pthread_t th[KINDS * PER_KIND];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &fd, &id, WAIT_MS), 0);
	for (uint32_t i = 0; i < N; i++)
		assert_int_equal(tu_send_frame(fd, &i, sizeof(i)), 0);
	TU_ASSERT_STAT(bs, data_queue_depth, N);

	/* a message queued by the application before shutdown still goes */
	static const char bye[] = "queued before shutdown";
	assert_int_equal(bs_send_data(bs, id, bye, sizeof(bye)), 0);
	bs_shutdown(bs);
	bs_shutdown(bs); /* idempotent */
	assert_int_equal(bs_send_data(bs, id, bye, sizeof(bye)), BS_ESHUTDOWN);
	char buf[64];
	assert_int_equal(tu_recv_frame(fd, buf, sizeof(buf), WAIT_MS), (long)sizeof(bye));
	assert_memory_equal(buf, bye, sizeof(bye));

	/* what was queued is still handed out, then BS_ESHUTDOWN */
	for (uint32_t i = 0; i < N; i++)
		assert_int_equal(tu_expect_data(bs, id, &i, sizeof(i), WAIT_MS), 0);
	bs_data_t dev;
	assert_int_equal(bs_recv_data(bs, &dev, WAIT_MS), BS_ESHUTDOWN);
	assert_int_equal(tu_expect_close(bs, id, BS_ESHUTDOWN, true, NULL, WAIT_MS), 0);
	bs_close_event_t cev;
	assert_int_equal(bs_recv_close(bs, &cev, WAIT_MS), BS_ESHUTDOWN);
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, 0), BS_ESHUTDOWN);
	assert_int_equal(bs_recv_open(bs, &oev, -1), BS_ESHUTDOWN);
	assert_int_equal(tu_wait_eof(fd, WAIT_MS), 1);

	/* no new connections */
	int late = tu_connect(addr);
	assert_true(late < 0 || tu_wait_eof(late, WAIT_MS) == 1);
	if (late >= 0)
		close(late);

	/* threads arriving now return at once, and destroy still works */
	for (int i = 0; i < KINDS * PER_KIND; i++) {
		b[i].bs = bs;
		b[i].kind = i % KINDS;
		atomic_store(&b[i].returned, false);
		assert_int_equal(pthread_create(&th[i], NULL, blocked_main, &b[i]), 0);
	}
	for (int i = 0; i < KINDS * PER_KIND; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(atomic_load(&b[i].rc), BS_ESHUTDOWN);
	}
	close(fd);
	bs_destroy(bs);
}

/* Reads frames until EOF; counts them and checks their order. */
struct drain_peer {
	int fd;
	uint32_t got;
	bool clean_eof;
};

static void *drain_peer_main(void *arg)
{
	struct drain_peer *d = arg;
	tu_reader_t rd;
	const uint8_t *p;
	long len;

	tu_reader_init(&rd, d->fd, 1 << 16);
	while ((len = tu_reader_recv(&rd, &p, WAIT_MS)) >= 0) {
		uint32_t s, q;
		TU_CHECK(tu_pattern_check(p, (size_t)len, &s, &q) == 0 && q == d->got,
			 "message %u wrong", d->got);
		d->got++;
	}
	d->clean_eof = len == TU_EOF;
	tu_reader_free(&rd);
	return NULL;
}

static void test_destroy_flushes_queued_sends(void **state)
{
	(void)state;
	enum { N = 5000 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	uint8_t msg[300];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	int fd = tu_connect_opts(addr, 16384, 0);
	assert_true(fd >= 0);
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, WAIT_MS), 0);

	for (uint32_t i = 0; i < N; i++) {
		size_t len = tu_pattern_len(6, i, 8, sizeof(msg));
		tu_pattern_fill(msg, len, 6, i);
		assert_int_equal(bs_send_data(bs, oev.id, msg, len), 0);
	}
	struct drain_peer d = { .fd = fd };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, drain_peer_main, &d), 0);
	bs_destroy(bs);
	pthread_join(th, NULL);
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(d.got, N);
	assert_true(d.clean_eof);
	close(fd);
}

/* ------------------------------------------------------------------------
 * Open and close events turned off
 */
static void test_events_disabled(void **state)
{
	(void)state;
	enum { CLIENTS = 3 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fds[CLIENTS];
	uint32_t msgs = (uint32_t)tu_scaled(1000, 100);

	tu_config(&cfg);
	cfg.open_events = false;
	cfg.close_events = false;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);

	for (int i = 0; i < CLIENTS; i++) {
		fds[i] = tu_connect(addr);
		assert_true(fds[i] >= 0);
	}
	for (uint32_t q = 0; q < msgs; q++) {
		for (int i = 0; i < CLIENTS; i++) {
			uint8_t m[128];
			size_t len = tu_pattern_len((uint32_t)i, q, 8, sizeof(m));
			tu_pattern_fill(m, len, (uint32_t)i, q);
			assert_int_equal(tu_send_frame(fds[i], m, len), 0);
		}
	}

	/* ingest only: data arrives without anyone taking opens */
	bs_id_t ids[CLIENTS] = { 0 };
	uint32_t next[CLIENTS] = { 0 };
	uint32_t total = 0;
	while (total < CLIENTS * msgs) {
		bs_data_t ev;
		int rc = bs_recv_data(bs, &ev, WAIT_MS);
		if (rc != 0)
			fail_msg("after %u messages: %s", total, bs_err_name(rc));
		uint32_t s, q;
		assert_int_equal(tu_pattern_check(ev.data, ev.len, &s, &q), 0);
		assert_true(s < CLIENTS);
		if (!ids[s])
			ids[s] = ev.id;
		assert_int_equal(ev.id, ids[s]);
		assert_int_equal(q, next[s]);
		next[s]++;
		total++;
		bs_msg_release(ev.msg);
	}

	/* ids from data events work for sending */
	assert_int_equal(bs_release(bs), 0);
	for (int i = 0; i < CLIENTS; i++) {
		char buf[16];
		assert_int_equal(bs_send_data(bs, ids[i], "ok", 2), 0);
		assert_int_equal(tu_recv_frame(fds[i], buf, sizeof(buf), WAIT_MS), 2);
	}

	bs_open_event_t oev;
	bs_close_event_t cev;
	uint64_t t0 = tu_now_ms();
	assert_int_equal(bs_recv_open(bs, &oev, 0), BS_EDISABLED);
	assert_int_equal(bs_recv_open(bs, &oev, 1000), BS_EDISABLED);
	assert_int_equal(bs_recv_close(bs, &cev, 0), BS_EDISABLED);
	assert_int_equal(bs_recv_close(bs, &cev, 1000), BS_EDISABLED);
	assert_true(tu_now_ms() - t0 < 500);

	/* connections end without anyone taking close events */
	for (int i = 0; i < CLIENTS; i++)
		close(fds[i]);
	TU_ASSERT_STAT(bs, conns_closed, CLIENTS);
	TU_ASSERT_STAT(bs, conns_open, 0);
	for (int i = 0; i < CLIENTS; i++)
		assert_int_equal(bs_send_data(bs, ids[i], "x", 1), BS_ESTALE);
	TU_ASSERT_STAT(bs, msgs_in, (uint64_t)CLIENTS * msgs);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_defaults),
		cmocka_unit_test(test_create_and_destroy),
		cmocka_unit_test(test_recv_timeouts),
		cmocka_unit_test(test_recv_poll_within_timeout),
		cmocka_unit_test(test_destroy_wakes_blocked_receivers),
		cmocka_unit_test(test_shutdown_drains_queues),
		cmocka_unit_test(test_destroy_flushes_queued_sends),
		cmocka_unit_test(test_events_disabled),
	};
	return TU_RUN("lifecycle", tests, argc, argv);
}
