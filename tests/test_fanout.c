/*
 * Fan-out and slow subscribers: one message to many ids from one shared
 * buffer (bs_send_many), one result per id, and the per-connection policy
 * for a full queue (refuse, drop and count, disconnect) while the healthy
 * subscribers receive everything, in order.
 */
#include "util.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 20000

/* Publishes message q of stream 1 (len bytes) to ids with one call. */
static int publish(bs_t *bs, const bs_id_t *ids, size_t n, uint32_t q, size_t len, int *res)
{
	void *p;
	bs_msg_t *m = bs_msg_alloc(len, &p);

	assert_non_null(m);
	tu_pattern_fill(p, len, 1, q);
	return bs_send_many(bs, ids, n, m, p, len, BS_SEND_MORE, res);
}

/* Reads n messages of stream 1, numbered from 0, from fd. */
static void expect_stream(tu_reader_t *r, uint32_t n)
{
	for (uint32_t q = 0; q < n; q++) {
		const uint8_t *p;
		uint32_t s, got;
		long len = tu_reader_recv(r, &p, WAIT_MS);

		assert_true(len > 0);
		assert_int_equal(tu_pattern_check(p, (size_t)len, &s, &got), 0);
		assert_int_equal(s, 1);
		assert_int_equal(got, q);
	}
}

static void test_fanout_to_1000(void **state)
{
	(void)state;
	enum { SUBS = 1000 };
	uint32_t msgs = (uint32_t)tu_scaled(50, 10);
	static int fds[SUBS], res[SUBS];
	static bs_id_t ids[SUBS];
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, SUBS, fds, ids, WAIT_MS), 0);
	bs_stats_t before = tu_stats(bs);
	for (uint32_t q = 0; q < msgs; q++) {
		assert_int_equal(publish(bs, ids, SUBS, q, 110, res), SUBS);
		for (int i = 0; i < SUBS; i++)
			assert_int_equal(res[i], 0);
		/* every 10 publishes the queued frames leave together */
		if (q % 10 == 9)
			assert_int_equal(bs_release(bs), 0);
	}
	assert_int_equal(bs_release(bs), 0);
	for (int i = 0; i < SUBS; i++) {
		tu_reader_t r;
		tu_reader_init(&r, fds[i], 1 << 16);
		expect_stream(&r, msgs);
		assert_false(tu_readable(fds[i], 0)); /* exactly once */
		tu_reader_free(&r);
	}
	bs_stats_t after = tu_stats(bs);
	assert_int_equal(after.msgs_out - before.msgs_out, (uint64_t)SUBS * msgs);
	/* coalesced: far fewer writes than messages */
	printf("      %u x %d deliveries in %llu writes\n", msgs, SUBS,
	       (unsigned long long)(after.send_writes - before.send_writes));
	assert_true(after.send_writes - before.send_writes <= (uint64_t)SUBS * ((msgs + 9) / 10));
	/* a dead id and a made-up one get their own result */
	close(fds[0]);
	bs_close_event_t cev;
	assert_int_equal(bs_recv_close(bs, &cev, WAIT_MS), 0);
	bs_id_t two[3] = { ids[0], ids[1], 12345 };
	assert_int_equal(publish(bs, two, 3, msgs, 110, res), 1);
	assert_int_equal(res[0], BS_ESTALE);
	assert_int_equal(res[1], 0);
	assert_int_equal(res[2], BS_ESTALE);
	assert_int_equal(bs_send_many(bs, two, 3, NULL, NULL, 0, 0, res), BS_EINVAL);
	for (int i = 1; i < SUBS; i++)
		close(fds[i]);
	bs_destroy(bs);
}

/*
 * A thread's list of connections with deferred frames grows with the
 * fan-out: 1500 subscribers (more than the list's first sizes) get all of
 * their publishes in one write each.
 */
static void test_fanout_to_1500_one_write_each(void **state)
{
	(void)state;
	enum { SUBS = 1500, MSGS = 3 };
	static int fds[SUBS], res[SUBS];
	static bs_id_t ids[SUBS];
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, SUBS, fds, ids, WAIT_MS), 0);
	uint64_t w0 = tu_stats(bs).send_writes;
	for (uint32_t q = 0; q < MSGS; q++)
		assert_int_equal(publish(bs, ids, SUBS, q, 110, res), SUBS);
	assert_int_equal(tu_stats(bs).send_writes - w0, 0);
	assert_int_equal(bs_release(bs), 0);
	assert_int_equal(tu_stats(bs).send_writes - w0, SUBS);
	for (int i = 0; i < SUBS; i++) {
		tu_reader_t r;
		tu_reader_init(&r, fds[i], 1 << 16);
		expect_stream(&r, MSGS);
		assert_false(tu_readable(fds[i], 0));
		tu_reader_free(&r);
		close(fds[i]);
	}
	bs_destroy(bs);
}

/* ---- one call, several framings ------------------------------------------ */

/* Reads exactly n bytes from fd into buf within WAIT_MS. */
static void read_exact(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		assert_true(tu_readable(fd, WAIT_MS));
		ssize_t r = read(fd, buf + got, n - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

/*
 * Subscribers of three listeners with three framings get one message from
 * one call, each framed its own way: small (laid out once per framing) and
 * large (by reference). A payload that holds the delimiter is refused to
 * the delimited ones alone.
 */
static void test_fanout_framings(void **state)
{
	(void)state;
	enum { EACH = 3, BIG = 3000 };
	static const uint8_t small[] = "fan-out";
	static uint8_t big[BIG], got[BIG + 16];
	bs_framing_t fr[3];
	bs_id_t ids[3 * EACH];
	int fds[3 * EACH], res[3 * EACH];
	bs_config_t cfg;
	bs_t *bs;

	bs_framing_default(&fr[0]);
	bs_framing_default(&fr[1]);
	fr[1].kind = BS_FRAMING_VARINT;
	bs_framing_default(&fr[2]);
	fr[2].kind = BS_FRAMING_DELIM;
	fr[2].delim = '\n';
	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &bs), 0);
	for (int k = 0; k < 3; k++) {
		uint32_t lis;
		char addr[BS_ADDR_STRLEN];
		assert_int_equal(bs_listen(bs, "127.0.0.1:0", &fr[k], &lis), 0);
		assert_int_equal(bs_listener_addr(bs, lis, addr, sizeof addr), 0);
		assert_int_equal(tu_open_clients(bs, addr, lis, EACH, fds + k * EACH,
						 ids + k * EACH, WAIT_MS), 0);
	}
	/* interleaved, so that the framing changes from one id to the next */
	bs_id_t mixed[3 * EACH];
	int mfd[3 * EACH], mk[3 * EACH];
	for (int i = 0; i < 3 * EACH; i++) {
		mixed[i] = ids[(i % 3) * EACH + i / 3];
		mfd[i] = fds[(i % 3) * EACH + i / 3];
		mk[i] = i % 3;
	}
	for (int i = 0; i < BIG; i++)
		big[i] = (uint8_t)('a' + i % 26);

	for (int round = 0; round < 2; round++) {
		const uint8_t *p = round ? big : small;
		size_t len = round ? BIG : sizeof(small) - 1;
		void *buf;
		bs_msg_t *m = bs_msg_alloc(len, &buf);
		assert_non_null(m);
		memcpy(buf, p, len);
		assert_int_equal(bs_send_many(bs, mixed, 3 * EACH, m, buf, len, 0, res), 3 * EACH);
		for (int i = 0; i < 3 * EACH; i++) {
			uint8_t hdr[BS_FRAME_HEADER_MAX];
			size_t tl = 0;
			int hl = bs_frame_encode(&fr[mk[i]], len, hdr, &tl);
			assert_int_equal(res[i], 0);
			assert_true(hl >= 0);
			read_exact(mfd[i], got, (size_t)hl + len + tl);
			assert_memory_equal(got, hdr, (size_t)hl);
			assert_memory_equal(got + hl, p, len);
			if (tl)
				assert_int_equal(got[hl + len], '\n');
		}
	}
	/* the delimiter inside: refused to the delimited ones only */
	void *buf;
	bs_msg_t *m = bs_msg_alloc(3, &buf);
	assert_non_null(m);
	memcpy(buf, "a\nb", 3);
	assert_int_equal(bs_send_many(bs, mixed, 3 * EACH, m, buf, 3, 0, res), 2 * EACH);
	for (int i = 0; i < 3 * EACH; i++) {
		assert_int_equal(res[i], mk[i] == 2 ? BS_EPROTO : 0);
		if (mk[i] != 2) {
			read_exact(mfd[i], got, 3 + (mk[i] == 0 ? 4 : 1));
			assert_memory_equal(got + (mk[i] == 0 ? 4 : 1), "a\nb", 3);
		}
	}
	for (int i = 0; i < 3 * EACH; i++) {
		assert_false(tu_readable(mfd[i], 0));
		close(mfd[i]);
	}
	bs_destroy(bs);
}

/* ---- a subscriber that stops reading ------------------------------------- */

/* The publisher stays at most WINDOW messages ahead of the slowest healthy
 * subscriber: 16 KB, a quarter of the queue, so that only the stalled one
 * can fill its queue however slowly the readers run (a sanitizer build on
 * a busy machine). */
enum { HEALTHY = 10, SLOW_MSGS = 1500, SLOW_LEN = 1000, WINDOW = 16 };

struct readers {
	int fds[HEALTHY];
	_Atomic uint32_t got[HEALTHY];
	atomic_bool stop;
	atomic_int errors;
};

/* Reads every healthy subscriber as fast as it can, checking order. */
static void *readers_main(void *arg)
{
	struct readers *rd = arg;
	tu_reader_t r[HEALTHY];

	uint64_t deadline = tu_now_ms() + WAIT_MS;

	for (int i = 0; i < HEALTHY; i++)
		tu_reader_init(&r[i], rd->fds[i], 1 << 16);
	while (!atomic_load(&rd->stop) && tu_now_ms() < deadline) {
		bool all = true;
		for (int i = 0; i < HEALTHY; i++) {
			const uint8_t *p;
			uint32_t s, q;
			size_t len;

			(void)tu_reader_fill(&r[i]); /* non-blocking */
			while (tu_reader_next(&r[i], &p, &len) == 1) {
				if (tu_pattern_check(p, len, &s, &q) != 0 || q != rd->got[i])
					atomic_fetch_add(&rd->errors, 1);
				rd->got[i]++;
			}
			all &= rd->got[i] == SLOW_MSGS;
		}
		if (all)
			break;
		usleep(200);
	}
	for (int i = 0; i < HEALTHY; i++)
		tu_reader_free(&r[i]);
	return NULL;
}

/* Reads about `bytes` from r's socket (at most WAIT_MS); the whole frames
 * they held. */
static uint64_t frames_in(tu_reader_t *r, long bytes)
{
	uint64_t end = tu_now_ms() + WAIT_MS, n = 0;
	const uint8_t *p;
	size_t len;

	for (long got = 0, k; got < bytes && tu_now_ms() < end; got += k > 0 ? k : 0) {
		k = tu_reader_fill(r);
		while (tu_reader_next(r, &p, &len) == 1)
			n++;
		if (k <= 0)
			usleep(1000);
	}
	return n;
}

/* Whole frames r delivers until its end (a cut last frame not counted). */
static uint64_t frames_until_eof(tu_reader_t *r)
{
	const uint8_t *p;
	uint64_t n = 0;

	while (tu_reader_recv(r, &p, WAIT_MS) > 0)
		n++;
	return n;
}

static void slow_subscriber(int policy, int full_code)
{
	static struct readers rd;
	static int res[HEALTHY + 1];
	bs_id_t ids[HEALTHY + 1];
	int fds[HEALTHY + 1], stalled_results = 0, first_full = 0;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	pthread_t th;

	tu_config(&cfg);
	cfg.send_queue_bytes = 64 * 1024;
	cfg.sndbuf = 16 * 1024; /* the kernel absorbs little of the backlog */
	cfg.slow_policy = policy;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, HEALTHY, fds, ids, WAIT_MS), 0);
	int sfd = tu_connect_opts(addr, 4096, 0);
	assert_true(sfd >= 0);
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, WAIT_MS), 0);
	ids[HEALTHY] = oev.id;
	fds[HEALTHY] = sfd;
	memset(&rd, 0, sizeof(rd));
	memcpy(rd.fds, fds, sizeof(rd.fds));
	assert_int_equal(pthread_create(&th, NULL, readers_main, &rd), 0);
	/* The stalled peer reads 12 KB once, when 30 KB of frames have piled
	 * up in its queue: the I/O thread then writes the queue's front in
	 * part, some of its frames whole. */
	tu_reader_t sr;
	uint64_t stalled_read = 0;
	tu_reader_init(&sr, sfd, 8192);

	for (uint32_t q = 0; q < SLOW_MSGS; q++) {
		if (q == 60)
			stalled_read = frames_in(&sr, 12000);
		publish(bs, ids, HEALTHY + 1, q, SLOW_LEN, res);
		for (int i = 0; i < HEALTHY; i++)
			TU_CHECK(res[i] == 0, "healthy subscriber %d: %s", i, bs_err_name(res[i]));
		if (res[HEALTHY] != 0) {
			if (stalled_results++ == 0)
				first_full = res[HEALTHY];
		}
		assert_int_equal(bs_release(bs), 0);
		for (int i = 0; i < HEALTHY; i++)
			(void)TU_WAIT_FOR(atomic_load(&rd.got[i]) + WINDOW > q, WAIT_MS);
	}
	pthread_join(th, NULL);
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(atomic_load(&rd.errors), 0);
	for (int i = 0; i < HEALTHY; i++)
		assert_int_equal(rd.got[i], SLOW_MSGS);
	assert_int_equal(first_full, full_code);
	bs_stats_t st = tu_stats(bs);
	printf("      %s: the stalled subscriber got %d refusals/drops; healthy ones all %d\n",
	       bs_err_name(full_code), stalled_results, SLOW_MSGS);
	if (policy == BS_SLOW_DROP) {
		bs_conn_info_t info;
		assert_int_equal(bs_conn_info(bs, ids[HEALTHY], &info), 0);
		assert_int_equal(info.dropped_msgs, (uint64_t)stalled_results);
		assert_int_equal(info.dropped_bytes, (uint64_t)stalled_results * SLOW_LEN);
		assert_int_equal(st.msgs_dropped, (uint64_t)stalled_results);
		assert_true(info.queued_bytes <= cfg.send_queue_bytes);
	} else if (policy == BS_SLOW_DISCONNECT) {
		bs_close_event_t cev;
		assert_int_equal(st.slow_disconnects, 1);
		assert_int_equal(bs_recv_close(bs, &cev, WAIT_MS), 0);
		assert_int_equal(cev.id, ids[HEALTHY]);
		assert_int_equal(cev.reason, BS_ESLOW);
		assert_true(cev.unsent_msgs > 0);
		/* after the disconnect its id is stale */
		assert_true(stalled_results > 1);
		/* Every message it took was either read whole by the peer or
		 * counted unsent, never both: the frames the socket had taken
		 * whole from a partly written block count as written. */
		stalled_read += frames_until_eof(&sr);
		assert_int_equal(stalled_read + cev.unsent_msgs,
				 (uint64_t)(SLOW_MSGS - stalled_results));
	} else {
		assert_int_equal(st.sends_refused, (uint64_t)stalled_results);
	}
	tu_reader_free(&sr);
	for (int i = 0; i <= HEALTHY; i++)
		close(fds[i]);
	bs_destroy(bs);
}

static void test_slow_subscriber_refused(void **state)
{
	(void)state;
	slow_subscriber(BS_SLOW_REFUSE, BS_EAGAIN);
}

static void test_slow_subscriber_dropped(void **state)
{
	(void)state;
	slow_subscriber(BS_SLOW_DROP, BS_EDROPPED);
}

static void test_slow_subscriber_disconnected(void **state)
{
	(void)state;
	slow_subscriber(BS_SLOW_DISCONNECT, BS_ESLOW);
}

/* bs_send_msg refused by a policy leaves the message with the caller, as
 * every failed call does: it releases it once, and nothing is freed twice
 * (the sanitizer builds would say). */
static void test_dropped_message_stays_with_caller(void **state)
{
	(void)state;
	enum { LEN = 1000 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fd, drops = 0, slow = 0;
	bs_id_t id;

	tu_config(&cfg);
	cfg.send_queue_bytes = 8 * 1024;
	cfg.sndbuf = 4096;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &fd, &id, WAIT_MS), 0);
	for (int policy = BS_SLOW_DROP; policy <= BS_SLOW_DISCONNECT; policy++) {
		assert_int_equal(bs_conn_set_slow(bs, id, policy), 0);
		for (int i = 0; i < 10000; i++) {
			void *p;
			bs_msg_t *m = bs_msg_alloc(LEN, &p);
			assert_non_null(m);
			memset(p, 'x', LEN);
			int rc = bs_send_msg(bs, id, m, p, LEN);
			if (rc == 0)
				continue;
			bs_msg_release(m); /* ours again */
			if (rc == BS_EDROPPED && ++drops < 5)
				continue;
			if (rc == BS_ESLOW)
				slow++;
			break;
		}
	}
	assert_int_equal(drops, 5);
	assert_int_equal(slow, 1);
	close(fd);
	bs_destroy(bs);
}

static void test_policy_per_connection(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fd;
	bs_id_t id;
	bs_conn_info_t info;

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &fd, &id, WAIT_MS), 0);
	assert_int_equal(bs_conn_info(bs, id, &info), 0);
	assert_int_equal(info.slow, BS_SLOW_REFUSE);
	assert_int_equal(bs_conn_set_slow(bs, id, BS_SLOW_DROP), 0);
	assert_int_equal(bs_conn_info(bs, id, &info), 0);
	assert_int_equal(info.slow, BS_SLOW_DROP);
	assert_int_equal(bs_conn_set_slow(bs, id, 9), BS_EINVAL);
	assert_int_equal(bs_conn_set_slow(bs, id ^ 1, BS_SLOW_DROP), BS_ESTALE);
	assert_int_equal(bs_conn_info(bs, id ^ 1, &info), BS_ESTALE);
	assert_int_equal(bs_conn_info(bs, id, NULL), BS_EINVAL);
	close(fd);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fanout_to_1000),
		cmocka_unit_test(test_fanout_to_1500_one_write_each),
		cmocka_unit_test(test_fanout_framings),
		cmocka_unit_test(test_slow_subscriber_refused),
		cmocka_unit_test(test_slow_subscriber_dropped),
		cmocka_unit_test(test_slow_subscriber_disconnected),
		cmocka_unit_test(test_dropped_message_stays_with_caller),
		cmocka_unit_test(test_policy_per_connection),
	};
	return TU_RUN("fanout", tests, argc, argv);
}
