/*
 * Connection holds, as an application sees them: with many draining
 * threads each connection's open, messages and close are processed one at
 * a time and in order; a stalled handler, a peer that never reads and a
 * flooding peer hold up nobody else; the user value rides on every event;
 * a hold that lasts too long is counted.
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
#define MAX_DRAINERS 8

/* ---- a server whose drainers call back per event ------------------------ */

struct server;
typedef void (*data_fn)(struct server *s, bs_data_t *ev);

struct server {
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	pthread_t th[MAX_DRAINERS];
	int nth;
	size_t batch;
	data_fn on_data;
	atomic_bool stop;
	void *arg;
};

/* Per-connection state, kept in the user value. */
struct cstate {
	atomic_int busy;
	uint32_t stream, next, got;
	bool closed;
};

static atomic_ullong concurrent, disorder, closes_early, states_freed;

static void *drainer_main(void *arg)
{
	struct server *s = arg;
	bs_data_t ev[64];

	while (!atomic_load(&s->stop)) {
		bs_open_event_t oev;
		bs_close_event_t cev;
		int n;

		while (bs_recv_open(s->bs, &oev, 0) == 0) {
			struct cstate *st = calloc(1, sizeof(*st));
			st->stream = UINT32_MAX;
			TU_CHECK(oev.user == NULL, "user value before it was set");
			TU_CHECK(bs_set_user(s->bs, oev.id, st) == 0, "bs_set_user");
		}
		while (bs_recv_close(s->bs, &cev, 0) == 0) {
			struct cstate *st = cev.user;
			TU_CHECK(st != NULL, "close without its user value");
			if (st != NULL && atomic_load(&st->busy) != 0)
				atomic_fetch_add(&concurrent, 1);
			if (st != NULL)
				st->closed = true;
			/* A connection of the ordering test ends after its last
			 * message was processed. */
			if (st != NULL && s->arg != NULL && st->got != *(uint32_t *)s->arg)
				atomic_fetch_add(&closes_early, 1);
			free(st);
			atomic_fetch_add(&states_freed, 1);
		}
		n = bs_recv_data_batch(s->bs, ev, s->batch, 5);
		for (int i = 0; i < n; i++) {
			struct cstate *st = ev[i].user;
			if (st != NULL && atomic_fetch_add(&st->busy, 1) != 0)
				atomic_fetch_add(&concurrent, 1);
			s->on_data(s, &ev[i]);
			if (st != NULL)
				atomic_fetch_sub(&st->busy, 1);
		}
		if (n > 0)
			bs_data_release(ev, (size_t)n);
	}
	return NULL;
}

static void server_start(struct server *s, const bs_config_t *cfg, int nth, size_t batch,
			 data_fn fn)
{
	s->nth = nth;
	s->batch = batch;
	s->on_data = fn;
	atomic_store(&s->stop, false);
	assert_int_equal(tu_server(cfg, NULL, &s->bs, &s->lis, s->addr, sizeof(s->addr)), 0);
	for (int i = 0; i < nth; i++)
		assert_int_equal(pthread_create(&s->th[i], NULL, drainer_main, s), 0);
}

static void server_stop(struct server *s)
{
	atomic_store(&s->stop, true);
	for (int i = 0; i < s->nth; i++)
		pthread_join(s->th[i], NULL);
	bs_destroy(s->bs);
}

/* Checks one message against its connection's state and counts it. */
static void check_order(struct cstate *st, const bs_data_t *ev)
{
	uint32_t sid, q;

	if (tu_pattern_check(ev->data, ev->len, &sid, &q) != 0) {
		TU_CHECK(false, "corrupt message");
		return;
	}
	if (st->stream == UINT32_MAX)
		st->stream = sid;
	if (sid != st->stream || q != st->next)
		atomic_fetch_add(&disorder, 1);
	st->next = q + 1;
	st->got++;
}

static void reset_counts(void)
{
	atomic_store(&concurrent, 0);
	atomic_store(&disorder, 0);
	atomic_store(&closes_early, 0);
	atomic_store(&states_freed, 0);
}

/* ---- order under many drainers ------------------------------------------ */

static _Thread_local uint64_t work_seed = 1;

static void work_and_check(struct server *s, bs_data_t *ev)
{
	uint64_t r = tu_rand(&work_seed);

	(void)s;
	check_order(ev->user, ev);
	if (r % 512 == 0)
		usleep(1000); /* an occasional sleep: the holder is descheduled */
	else
		for (volatile unsigned i = 0; i < (unsigned)(r % 2000); i++)
			;
}

static void test_order_under_many_drainers(void **state)
{
	(void)state;
	enum { CONNS = 100 };
	static struct server s;
	static uint32_t msgs;
	bs_config_t cfg;
	int fds[CONNS];
	bs_id_t ids[CONNS];

	reset_counts();
	msgs = (uint32_t)tu_scaled(1000, 100);
	s.arg = &msgs;
	(void)ids;
	tu_config(&cfg);
	server_start(&s, &cfg, 4, 16, work_and_check);
	for (int i = 0; i < CONNS; i++) {
		fds[i] = tu_connect(s.addr);
		assert_true(fds[i] >= 0);
	}
	/* Round-robin writes of a few frames each, so that the connections'
	 * bytes interleave in the I/O threads' reads. */
	uint8_t buf[8 * 300];
	for (uint32_t q = 0; q < msgs; q += 8) {
		for (int i = 0; i < CONNS; i++) {
			size_t used = 0;
			for (uint32_t k = q; k < q + 8 && k < msgs; k++) {
				size_t len = tu_pattern_len((uint32_t)i, k, TU_PATTERN_MIN, 200);
				tu_frame_header(buf + used, len);
				tu_pattern_fill(buf + used + 4, len, (uint32_t)i, k);
				used += len + 4;
			}
			assert_int_equal(tu_write_all(fds[i], buf, used), 0);
		}
	}
	for (int i = 0; i < CONNS; i++)
		close(fds[i]);
	assert_true(TU_WAIT_FOR(atomic_load(&states_freed) == CONNS, WAIT_MS));
	server_stop(&s);
	printf("      %u messages on %d connections, 4 drainers: %llu concurrent, %llu out of "
	       "order, %llu closes before the last message\n",
	       msgs * CONNS, CONNS, atomic_load(&concurrent), atomic_load(&disorder),
	       atomic_load(&closes_early));
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(atomic_load(&concurrent), 0);
	assert_int_equal(atomic_load(&disorder), 0);
	assert_int_equal(atomic_load(&closes_early), 0);
	s.arg = NULL;
}

/* ---- a stalled handler -------------------------------------------------- */

/* The handler of connection 0 stalls (stalled set) until the test lets it
 * go (or 20 s pass); every other message is counted. */
static atomic_ullong counted;
static atomic_bool stalled, let_go;

static void count_or_stall(struct server *s, bs_data_t *ev)
{
	(void)s;
	if (ev->len == 9 && !memcmp(ev->data, "stall now", 9)) {
		atomic_store(&stalled, true);
		(void)TU_WAIT_FOR(atomic_load(&let_go), 20000);
		atomic_store(&stalled, false);
		return;
	}
	atomic_fetch_add(&counted, 1);
}

/*
 * While one handler is stuck, every message of 99 other connections is
 * still processed, before the stuck one returns: a held connection never
 * delays another's events (three drainers, one of them stuck).
 */
static void test_stalled_handler(void **state)
{
	(void)state;
	enum { CONNS = 100, ROUNDS = 20 };
	static struct server s;
	bs_config_t cfg;
	int fds[CONNS];
	uint8_t msg[32];

	atomic_store(&counted, 0);
	atomic_store(&stalled, false);
	atomic_store(&let_go, false);
	tu_config(&cfg);
	cfg.open_events = cfg.close_events = false;
	server_start(&s, &cfg, 3, 16, count_or_stall);
	for (int i = 0; i < CONNS; i++) {
		fds[i] = tu_connect(s.addr);
		assert_true(fds[i] >= 0);
	}
	tu_pattern_fill(msg, sizeof(msg), 1, 1);
	for (int i = 1; i < CONNS; i++)
		assert_int_equal(tu_send_frame(fds[i], msg, sizeof(msg)), 0);
	assert_true(TU_WAIT_FOR(atomic_load(&counted) == CONNS - 1, 10000));

	assert_int_equal(tu_send_frame(fds[0], "stall now", 9), 0);
	assert_true(TU_WAIT_FOR(atomic_load(&stalled), 10000));
	for (int r = 0; r < ROUNDS; r++)
		for (int i = 1; i < CONNS; i++)
			assert_int_equal(tu_send_frame(fds[i], msg, sizeof(msg)), 0);
	bool all = TU_WAIT_FOR(atomic_load(&counted) == (ROUNDS + 1) * (CONNS - 1), 15000);
	bool still = atomic_load(&stalled);
	printf("      %llu of %d messages of the other connections processed while one "
	       "handler was stuck\n", (unsigned long long)atomic_load(&counted) - (CONNS - 1),
	       ROUNDS * (CONNS - 1));
	atomic_store(&let_go, true);
	server_stop(&s);
	for (int i = 0; i < CONNS; i++)
		close(fds[i]);
	assert_true(all);
	assert_true(still);
}

/* ---- a peer that never reads, beside healthy ones ------------------------ */

static void echo_bounded(struct server *s, bs_data_t *ev)
{
	/* One connection per hold (batch 1): waiting for room delays only
	 * the peer whose queue is full. */
	int rc = bs_send(s->bs, ev->id, ev->data, ev->len, NULL, 0, 0);
	if (rc == BS_EAGAIN)
		(void)bs_send(s->bs, ev->id, ev->data, ev->len, NULL, 0, 200);
}

static void test_peer_that_never_reads(void **state)
{
	(void)state;
	enum { HEALTHY = 20, PINGS = 20, FLOOD = 3000 };
	static struct server s;
	static uint8_t big[1024];
	bs_config_t cfg;
	int stuck, fds[HEALTHY];
	uint64_t worst = 0;

	tu_config(&cfg);
	cfg.open_events = cfg.close_events = false;
	cfg.send_queue_bytes = 64 * 1024;
	cfg.sndbuf = 4096; /* its echoes back up into the queue soon */
	server_start(&s, &cfg, 3, 1, echo_bounded);
	stuck = tu_connect_opts(s.addr, 4096, 0);
	assert_true(stuck >= 0);
	/* It sends far more than its queue and its socket can hold back: at
	 * least FLOOD messages, and on until its echoes have been refused
	 * (the kernel's buffers may take megabytes first) and TCP pushes
	 * back, because the server stopped reading it. */
	tu_pattern_fill(big, sizeof(big), 9, 9);
	uint8_t frame[sizeof(big) + 4];
	tu_frame(frame, big, sizeof(big));
	uint64_t until = tu_now_ms() + WAIT_MS;
	for (int i = 0; tu_now_ms() < until; i++) {
		struct pollfd p = { .fd = stuck, .events = POLLOUT };
		if (poll(&p, 1, 50) <= 0) {
			if (i >= FLOOD && tu_stats(s.bs).sends_refused > 0)
				break;
			continue;
		}
		if (tu_write_all(stuck, frame, sizeof(frame)) != 0)
			break;
	}
	/* Its queue is full: its echoes wait (bounded) from now on. */
	assert_true(TU_WAIT_FOR(tu_stats(s.bs).sends_refused > 0, WAIT_MS));
	for (int i = 0; i < HEALTHY; i++) {
		fds[i] = tu_connect(s.addr);
		assert_true(fds[i] >= 0);
	}
	for (int k = 0; k < PINGS; k++) {
		for (int i = 0; i < HEALTHY; i++) {
			uint8_t m[16], back[16];
			tu_pattern_fill(m, sizeof(m), (uint32_t)i, (uint32_t)k);
			uint64_t t = tu_now_ns();
			assert_int_equal(tu_send_frame(fds[i], m, sizeof(m)), 0);
			assert_int_equal(tu_recv_frame(fds[i], back, sizeof(back), WAIT_MS), 16);
			assert_memory_equal(back, m, 16);
			t = tu_now_ns() - t;
			worst = t > worst ? t : worst;
		}
	}
	printf("      slowest of %d healthy echoes beside a peer that never reads: %.1f ms\n",
	       HEALTHY * PINGS, worst / 1e6);
	/* 100 ms; sanitizer builds run several times slower */
	assert_true(worst < (tu_sanitized() ? 500 : 100) * 1000000ull);
	server_stop(&s);
	close(stuck);
	for (int i = 0; i < HEALTHY; i++)
		close(fds[i]);
}

/* ---- a flooding connection beside light ones ----------------------------- */

static _Atomic bs_id_t flood_id;

static void echo_light(struct server *s, bs_data_t *ev)
{
	if (ev->len == 1024) { /* the flood: some work, no answer */
		for (volatile int i = 0; i < 20000; i++)
			;
		atomic_store(&flood_id, ev->id);
		return;
	}
	(void)bs_send(s->bs, ev->id, ev->data, ev->len, NULL, 0, 0);
}

struct flooder {
	int fd;
	atomic_bool stop;
};

static void *flood_main(void *arg)
{
	struct flooder *f = arg;
	static uint8_t frame[1028];

	tu_frame(frame, memset(frame + 4, 7, 1024), 1024);
	while (!atomic_load(&f->stop)) {
		struct pollfd p = { .fd = f->fd, .events = POLLOUT };
		if (poll(&p, 1, 20) > 0 && tu_write_all(f->fd, frame, sizeof(frame)) != 0)
			break;
	}
	return NULL;
}

static void test_flooding_connection(void **state)
{
	(void)state;
	enum { LIGHT = 100, ROUNDS = 20 };
	static struct server s;
	static struct flooder fl;
	bs_config_t cfg;
	int fds[LIGHT];
	pthread_t th;
	uint64_t worst = 0;
	bool flood_paused = false, light_paused = false;

	tu_config(&cfg);
	cfg.open_events = cfg.close_events = false;
	cfg.recv_backlog_bytes = 64 * 1024;
	atomic_store(&flood_id, 0);
	server_start(&s, &cfg, 2, 16, echo_light);
	for (int i = 0; i < LIGHT; i++) {
		fds[i] = tu_connect(s.addr);
		assert_true(fds[i] >= 0);
	}
	fl.fd = tu_connect(s.addr);
	assert_true(fl.fd >= 0);
	atomic_store(&fl.stop, false);
	assert_int_equal(pthread_create(&th, NULL, flood_main, &fl), 0);
	tu_sleep_ms(200);
	for (int k = 0; k < ROUNDS; k++) {
		uint8_t m[16], back[16];
		uint64_t t = tu_now_ns();
		for (int i = 0; i < LIGHT; i++) {
			tu_pattern_fill(m, sizeof(m), (uint32_t)i, (uint32_t)k);
			assert_int_equal(tu_send_frame(fds[i], m, sizeof(m)), 0);
		}
		for (int i = 0; i < LIGHT; i++)
			assert_int_equal(tu_recv_frame(fds[i], back, sizeof(back), WAIT_MS), 16);
		t = tu_now_ns() - t;
		worst = t > worst ? t : worst;
		bs_conn_info_t info;
		if (atomic_load(&flood_id) != 0 && bs_conn_info(s.bs, atomic_load(&flood_id), &info) == 0)
			flood_paused |= info.reading_paused;
		bs_stats_t st = tu_stats(s.bs);
		light_paused |= st.paused_reads > 1;
	}
	atomic_store(&fl.stop, true);
	pthread_join(th, NULL);
	printf("      slowest round of 100 light echoes beside a flood: %.1f ms; flood paused %d, "
	       "others paused %d\n", worst / 1e6, flood_paused, light_paused);
	/* The bound: a round of 100 echoes within 200 ms (sanitizer builds
	 * run several times slower). */
	assert_true(worst < (tu_sanitized() ? 1000 : 200) * 1000000ull);
	assert_true(flood_paused);
	assert_false(light_paused);
	server_stop(&s);
	close(fl.fd);
	for (int i = 0; i < LIGHT; i++)
		close(fds[i]);
}

/* ---- the user value -------------------------------------------------------- */

static void test_user_value_rides_every_event(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fd;
	bs_id_t id;
	static int mine;
	bs_data_t ev;
	bs_close_event_t cev;

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &fd, &id, WAIT_MS), 0);
	assert_int_equal(bs_set_user(bs, id, &mine), 0);
	assert_int_equal(tu_send_frame(fd, "x", 1), 0);
	assert_int_equal(bs_recv_data(bs, &ev, WAIT_MS), 0);
	assert_ptr_equal(ev.user, &mine);
	bs_msg_release(ev.msg);
	close(fd);
	assert_int_equal(bs_recv_close(bs, &cev, WAIT_MS), 0);
	assert_int_equal(cev.id, id);
	assert_ptr_equal(cev.user, &mine);
	/* after the close event the id is dead, and so is a made-up one */
	assert_int_equal(bs_set_user(bs, id, NULL), BS_ESTALE);
	assert_int_equal(bs_set_user(bs, id ^ 0x10000000ull, NULL), BS_ESTALE);
	assert_int_equal(bs_set_user(bs, 0, NULL), BS_ESTALE);
	assert_int_equal(bs_set_user(NULL, id, NULL), BS_EINVAL);
	bs_destroy(bs);
}

/* ---- a hold that lasts too long -------------------------------------------- */

static atomic_int warnings;

static void count_log(void *arg, int level, const char *line)
{
	(void)arg;
	if (level == BS_LOG_WARN && strstr(line, "held for") != NULL)
		atomic_fetch_add(&warnings, 1);
}

static void test_long_hold_is_counted(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fd;
	bs_id_t id;
	bs_data_t ev;

	tu_config(&cfg);
	cfg.hold_warn_ms = 100;
	cfg.log = count_log;
	atomic_store(&warnings, 0);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &fd, &id, WAIT_MS), 0);
	assert_int_equal(tu_send_frame(fd, "x", 1), 0);
	assert_int_equal(bs_recv_data(bs, &ev, WAIT_MS), 0);
	bs_msg_release(ev.msg);
	/* this thread works on it for 400 ms without coming back */
	tu_sleep_ms(400);
	TU_ASSERT_STAT(bs, holds_stuck, 1);
	assert_int_equal(atomic_load(&warnings), 1);
	assert_int_equal(bs_release(bs), 0);
	/* a short hold is not counted */
	assert_int_equal(tu_send_frame(fd, "y", 1), 0);
	assert_int_equal(bs_recv_data(bs, &ev, WAIT_MS), 0);
	bs_msg_release(ev.msg);
	assert_int_equal(bs_release(bs), 0);
	tu_sleep_ms(250);
	assert_int_equal(tu_stats(bs).holds_stuck, 1);
	close(fd);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_under_many_drainers),
		cmocka_unit_test(test_stalled_handler),
		cmocka_unit_test(test_peer_that_never_reads),
		cmocka_unit_test(test_flooding_connection),
		cmocka_unit_test(test_user_value_rides_every_event),
		cmocka_unit_test(test_long_hold_is_counted),
	};
	return TU_RUN("holds", tests, argc, argv);
}
