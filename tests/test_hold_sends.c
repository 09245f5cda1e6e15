/*
 * Coalescing follows holds: the answers a thread sends to a connection it
 * holds leave in one write when the hold ends — at its next receive, at
 * bs_release, at its exit, on a receive from another instance — or earlier:
 * on another thread's send, bs_send_close, shutdown, the 64 KiB bound, or a
 * send that needs the queue's room. BS_SEND_MORE from a thread that does
 * not hold the connection waits longer: across that thread's receives while
 * they find work, until one finds none (before it returns or waits), until
 * it has taken 1024 events or send_more_us passed, or until its bs_release
 * or exit, even when it never received at all; a later send without the
 * flag, from any thread, writes them first.
 */
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 10000
#define BURST 8
#define STREAM 7

struct fixture {
	bs_t *bs;
	int fd;
	bs_id_t id;
	tu_reader_t rd;
};

static void fixture_open(struct fixture *f, const bs_config_t *cfg)
{
	uint32_t lis;
	char addr[128];
	bs_open_event_t oev;

	assert_int_equal(tu_server(cfg, NULL, &f->bs, &lis, addr, sizeof(addr)), 0);
	f->fd = tu_connect(addr);
	assert_true(f->fd >= 0);
	assert_int_equal(bs_recv_open(f->bs, &oev, WAIT_MS), 0);
	f->id = oev.id;
	assert_int_equal(bs_release(f->bs), 0);
	tu_reader_init(&f->rd, f->fd, 1 << 20);
}

static void fixture_close(struct fixture *f)
{
	tu_reader_free(&f->rd);
	close(f->fd);
	bs_destroy(f->bs);
}

/* The peer writes messages first..first+n-1 of len bytes each (0: pattern
 * lengths) in one write; the test waits until all of them are queued. */
static void burst(struct fixture *f, uint32_t first, uint32_t n, size_t len)
{
	static uint8_t buf[BURST * 2 * (32768 + 4)];
	size_t used = 0;
	uint64_t before = tu_stats(f->bs).msgs_in;

	for (uint32_t q = first; q < first + n; q++) {
		size_t l = len ? len : tu_pattern_len(STREAM, q, 8, 200);
		assert_true(used + l + 4 <= sizeof(buf));
		tu_frame_header(buf + used, l);
		tu_pattern_fill(buf + used + 4, l, STREAM, q);
		used += l + 4;
	}
	assert_int_equal(tu_write_all(f->fd, buf, used), 0);
	TU_ASSERT_STAT(f->bs, msgs_in, before + n);
}

/*
 * Two peers of one instance: a is sent BS_SEND_MORE frames, b's messages
 * give the receiving thread work (queued beforehand, so that a receive
 * finds them for sure).
 */
static void pair_open(struct fixture *a, struct fixture *b, const bs_config_t *cfg)
{
	uint32_t lis;
	char addr[128];
	int fds[2];
	bs_id_t ids[2];

	assert_int_equal(tu_server(cfg, NULL, &a->bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(a->bs, addr, lis, 2, fds, ids, WAIT_MS), 0);
	b->bs = a->bs;
	a->fd = fds[0];
	a->id = ids[0];
	b->fd = fds[1];
	b->id = ids[1];
	tu_reader_init(&a->rd, a->fd, 1 << 20);
	tu_reader_init(&b->rd, b->fd, 1 << 20);
}

static void pair_close(struct fixture *a, struct fixture *b)
{
	tu_reader_free(&b->rd);
	close(b->fd);
	fixture_close(a);
}

/* Frames deferred in these tests wait for events or for the receive that
 * finds none, never for the clock (the longest send_more_us). */
static void config_untimed(bs_config_t *cfg)
{
	tu_config(cfg);
	cfg->send_more_us = 1000000;
}

/* Message q of the stream, to f's connection with BS_SEND_MORE. */
static int send_more(const struct fixture *f, uint32_t q)
{
	uint8_t msg[TU_PATTERN_MIN + 8];

	tu_pattern_fill(msg, sizeof(msg), STREAM, q);
	return bs_send(f->bs, f->id, msg, sizeof(msg), NULL, BS_SEND_MORE, 0);
}

/* Takes exactly n messages, as one batch. */
static void take(bs_t *bs, bs_data_t *ev, int n)
{
	assert_int_equal(bs_recv_data_batch(bs, ev, 64, WAIT_MS), n);
}

static void answer(bs_t *bs, const bs_data_t *ev)
{
	assert_int_equal(bs_send_data(bs, ev->id, ev->data, ev->len), 0);
}

/* The peer receives the echoes of messages first..first+n-1, in order. */
static void expect_echoes(struct fixture *f, uint32_t first, uint32_t n)
{
	for (uint32_t q = first; q < first + n; q++) {
		const uint8_t *p;
		uint32_t s, got;
		long len = tu_reader_recv(&f->rd, &p, WAIT_MS);

		assert_true(len >= 0);
		assert_int_equal(tu_pattern_check(p, (size_t)len, &s, &got), 0);
		assert_int_equal(s, STREAM);
		assert_int_equal(got, q);
	}
}

/* Nothing has been written to the peer (yet). */
static bool peer_has_nothing(struct fixture *f)
{
	return tu_reader_pending(&f->rd) == 0 && !tu_readable(f->fd, 0);
}

/* Nothing arrives within a short poll. */
static bool peer_quiet(struct fixture *f)
{
	return tu_reader_pending(&f->rd) == 0 && !tu_readable(f->fd, 20);
}

static uint64_t writes(bs_t *bs)
{
	return tu_stats(bs).send_writes;
}

/* The peer sends a burst, this thread takes it whole and answers the
 * first `answered` messages, which are held back. */
static void hold_answers(struct fixture *f, bs_data_t *ev, int answered)
{
	burst(f, 0, BURST, 0);
	take(f->bs, ev, BURST);
	for (int i = 0; i < answered; i++)
		answer(f->bs, &ev[i]);
	assert_true(peer_has_nothing(f));
}

static void test_batch_answers_leave_in_one_write(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev[64];

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	burst(&f, 0, BURST, 0);
	take(f.bs, ev, BURST);
	uint64_t w0 = writes(f.bs);
	for (int i = 0; i < BURST; i++) {
		answer(f.bs, &ev[i]);
		assert_true(peer_has_nothing(&f));
	}
	assert_int_equal(bs_release(f.bs), 0);
	expect_echoes(&f, 0, BURST);
	assert_int_equal(writes(f.bs) - w0, 1);
	bs_data_release(ev, BURST);
	fixture_close(&f);
}

static void test_each_hold_answers_at_its_end(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev, none;

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	burst(&f, 0, BURST, 0);
	uint64_t w0 = writes(f.bs);
	for (uint32_t i = 0; i < BURST; i++) {
		/* the receive ends the hold of the previous message */
		assert_int_equal(bs_recv_data(f.bs, &ev, WAIT_MS), 0);
		if (i > 0)
			expect_echoes(&f, i - 1, 1);
		answer(f.bs, &ev);
		bs_msg_release(ev.msg);
		assert_true(peer_has_nothing(&f));
	}
	assert_int_equal(bs_recv_data(f.bs, &none, 0), BS_EAGAIN);
	expect_echoes(&f, BURST - 1, 1);
	assert_int_equal(writes(f.bs) - w0, BURST);
	fixture_close(&f);
}

/* A thread that holds nothing fans out with BS_SEND_MORE: its frames wait
 * for its next receive, then leave in one write per connection. */
static void test_send_more_waits_for_next_receive(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	bs_data_t none;
	uint8_t msg[TU_PATTERN_MIN + 8];

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	uint64_t w0 = writes(f.bs);
	for (uint32_t q = 0; q < BURST; q++) {
		tu_pattern_fill(msg, sizeof(msg), STREAM, q);
		assert_int_equal(bs_send(f.bs, f.id, msg, sizeof(msg), NULL, BS_SEND_MORE, 0), 0);
	}
	assert_true(peer_has_nothing(&f));
	assert_int_equal(bs_recv_data(f.bs, &none, 0), BS_EAGAIN);
	expect_echoes(&f, 0, BURST);
	assert_int_equal(writes(f.bs) - w0, 1);
	fixture_close(&f);
}

/* Receives one of b's messages: the receive found work. */
static void take_one_of(struct fixture *b)
{
	bs_data_t ev;

	assert_int_equal(bs_recv_data(b->bs, &ev, WAIT_MS), 0);
	assert_true(ev.id == b->id);
	bs_msg_release(ev.msg);
}

/* While its receives find work, a thread's BS_SEND_MORE frames stay
 * deferred; the receive that finds nothing writes them, once. */
static void test_send_more_waits_while_receives_find_work(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture a, b;
	bs_data_t none;

	config_untimed(&cfg);
	pair_open(&a, &b, &cfg);
	burst(&b, 0, 2, 0);
	uint64_t w0 = writes(a.bs);
	assert_int_equal(send_more(&a, 0), 0);
	take_one_of(&b);
	assert_true(peer_quiet(&a));
	assert_int_equal(send_more(&a, 1), 0);
	take_one_of(&b);
	assert_true(peer_quiet(&a));
	assert_int_equal(writes(a.bs) - w0, 0);
	assert_int_equal(bs_recv_data(a.bs, &none, 0), BS_EAGAIN);
	expect_echoes(&a, 0, 2);
	assert_int_equal(writes(a.bs) - w0, 1);
	pair_close(&a, &b);
}

struct waiter {
	bs_t *bs;
	struct fixture *a;
	int rc;
	bs_data_t ev;
};

/* Defers a frame, then waits for ever in a receive. */
static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	TU_CHECK(send_more(w->a, 0) == 0, "send");
	w->rc = bs_recv_data(w->bs, &w->ev, -1);
	if (w->rc == 0)
		bs_msg_release(w->ev.msg);
	return NULL;
}

/* A receive that is about to wait writes the deferred frames first. */
static void test_send_more_written_before_a_receive_waits(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture a, b;
	struct waiter w = { .rc = 1 };
	pthread_t th;

	config_untimed(&cfg);
	pair_open(&a, &b, &cfg);
	w.bs = a.bs;
	w.a = &a;
	assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
	/* the frame arrives while the thread still waits: only b's message
	 * below can end its receive */
	expect_echoes(&a, 0, 1);
	burst(&b, 0, 1, 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(w.rc, 0);
	assert_true(w.ev.id == b.id);
	assert_int_equal(tu_failures(), 0);
	pair_close(&a, &b);
}

/* A send that waits for room writes the thread's deferred frames first. */
static void test_send_more_written_before_a_send_waits(void **state)
{
	(void)state;
	static uint8_t chunk[16384];
	bs_config_t cfg;
	struct fixture a, b;
	int rc = 0;

	config_untimed(&cfg);
	cfg.send_queue_bytes = 64 * 1024;
	pair_open(&a, &b, &cfg);
	/* b's peer never reads: its socket and then its queue fill (the
	 * kernel may take a few megabytes first) */
	for (int i = 0; i < 10000 && rc == 0; i++)
		rc = bs_send_data(a.bs, b.id, chunk, sizeof(chunk));
	assert_int_equal(rc, BS_EAGAIN);
	assert_int_equal(send_more(&a, 0), 0);
	assert_true(peer_quiet(&a));
	assert_int_equal(bs_send(a.bs, b.id, chunk, sizeof(chunk), NULL, 0, 50), BS_ETIMEDOUT);
	expect_echoes(&a, 0, 1);
	pair_close(&a, &b);
}

/* A thread that never runs dry writes once it has taken 1024 events since
 * its first deferred frame: the receive after those starts with it. */
static void test_send_more_bounded_by_events(void **state)
{
	(void)state;
	enum { EVENTS = 1024, QUEUED = EVENTS + 100 };
	bs_config_t cfg;
	struct fixture a, b;
	bs_data_t ev[64];
	int taken = 0, n;

	config_untimed(&cfg);
	pair_open(&a, &b, &cfg);
	for (uint32_t q = 0; q < QUEUED; q += 100)
		burst(&b, q, 100, 16);
	uint64_t w0 = writes(a.bs);
	assert_int_equal(send_more(&a, 0), 0);
	while (taken < EVENTS) {
		n = bs_recv_data_batch(a.bs, ev, 64, WAIT_MS);
		assert_true(n > 0);
		bs_data_release(ev, (size_t)n);
		taken += n;
		assert_true(peer_has_nothing(&a));
	}
	/* b has messages left: this receive finds work, and writes first */
	n = bs_recv_data_batch(a.bs, ev, 64, WAIT_MS);
	assert_true(n > 0);
	bs_data_release(ev, (size_t)n);
	expect_echoes(&a, 0, 1);
	assert_int_equal(writes(a.bs) - w0, 1);
	pair_close(&a, &b);
}

/* ... or once send_more_us passed since the first, whichever is first; 0
 * writes at the next receive, as for the holder's own answers. */
static void run_timed(uint32_t send_more_us, unsigned pause_ms)
{
	bs_config_t cfg;
	struct fixture a, b;

	tu_config(&cfg);
	cfg.send_more_us = send_more_us;
	pair_open(&a, &b, &cfg);
	burst(&b, 0, 1, 0);
	assert_int_equal(send_more(&a, 0), 0);
	tu_sleep_ms(pause_ms);
	take_one_of(&b);
	expect_echoes(&a, 0, 1);
	pair_close(&a, &b);
}

static void test_send_more_bounded_by_time(void **state)
{
	(void)state;
	run_timed(1000, 10);
	run_timed(0, 0);
}

struct busy {
	struct fixture *a, *b;
};

/* Defers a frame, receives one of b's messages, and exits. */
static void *busy_main(void *arg)
{
	struct busy *t = arg;
	bs_data_t ev;

	TU_CHECK(send_more(t->a, 1) == 0, "send");
	TU_CHECK(bs_recv_data(t->b->bs, &ev, WAIT_MS) == 0 && ev.id == t->b->id, "receive");
	bs_msg_release(ev.msg);
	TU_CHECK(peer_quiet(t->a), "written before its exit");
	return NULL;
}

/* Frames deferred across receives go at bs_release and at thread exit. */
static void test_send_more_across_receives_goes_at_release_and_exit(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture a, b;
	pthread_t th;

	config_untimed(&cfg);
	pair_open(&a, &b, &cfg);
	burst(&b, 0, 3, 0);
	assert_int_equal(send_more(&a, 0), 0);
	take_one_of(&b);
	assert_true(peer_quiet(&a));
	assert_int_equal(bs_release(a.bs), 0);
	expect_echoes(&a, 0, 1);

	struct busy exits = { &a, &b };
	assert_int_equal(pthread_create(&th, NULL, busy_main, &exits), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	expect_echoes(&a, 1, 1);
	assert_int_equal(tu_failures(), 0);
	pair_close(&a, &b);
}

struct other_send {
	bs_t *bs;
	bs_id_t id;
	uint8_t msg[TU_PATTERN_MIN + 8];
	unsigned flags;
	int rc;
};

static void *other_send_main(void *arg)
{
	struct other_send *o = arg;

	o->rc = bs_send(o->bs, o->id, o->msg, sizeof(o->msg), NULL, o->flags, 0);
	return NULL;
}

/* Message q of the stream to f's connection from a thread of its own. */
static int send_from_thread(struct fixture *f, uint32_t q, unsigned flags)
{
	struct other_send o = { .bs = f->bs, .id = f->id, .flags = flags, .rc = -1 };
	pthread_t th;

	tu_pattern_fill(o.msg, sizeof(o.msg), STREAM, q);
	assert_int_equal(pthread_create(&th, NULL, other_send_main, &o), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	return o.rc;
}

/*
 * Deferred frames are in the connection's queue already: a later send
 * without the flag, from another thread, goes behind them and writes them
 * with it. Another thread's BS_SEND_MORE frame to a connection this thread
 * deferred to waits with this thread's, even past that thread's exit.
 */
static void test_send_more_keeps_order_with_other_senders(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture a, b;
	bs_data_t none;

	config_untimed(&cfg);
	pair_open(&a, &b, &cfg);
	burst(&b, 0, 2, 0);
	assert_int_equal(send_more(&a, 0), 0);
	take_one_of(&b);
	assert_int_equal(send_from_thread(&a, 1, 0), 0);
	expect_echoes(&a, 0, 2);

	assert_int_equal(send_more(&a, 2), 0);
	take_one_of(&b);
	assert_int_equal(send_from_thread(&a, 3, BS_SEND_MORE), 0);
	assert_true(peer_quiet(&a));
	assert_int_equal(bs_recv_data(a.bs, &none, 0), BS_EAGAIN);
	expect_echoes(&a, 2, 2);
	assert_true(peer_quiet(&a));
	pair_close(&a, &b);
}

/* A thread that never received from the instance (a bus's delivery
 * thread, say) sends with BS_SEND_MORE: its frames wait for its
 * bs_release, or for its exit, and then leave in one write. */
struct sender {
	struct fixture *f;
	uint32_t first, n;
	bool release;
	int failures;
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	uint8_t msg[TU_PATTERN_MIN + 8];

	for (uint32_t q = s->first; q < s->first + s->n; q++) {
		tu_pattern_fill(msg, sizeof(msg), STREAM, q);
		s->failures += bs_send(s->f->bs, s->f->id, msg, sizeof(msg), NULL, BS_SEND_MORE,
				       0) != 0;
	}
	s->failures += !peer_has_nothing(s->f);
	if (s->release)
		s->failures += bs_release(s->f->bs) != 0;
	return NULL;
}

static void test_send_more_from_a_thread_that_never_received(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	pthread_t t;

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	uint64_t w0 = writes(f.bs);
	struct sender released = { &f, 0, BURST, true, 0 };
	assert_int_equal(pthread_create(&t, NULL, sender_main, &released), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(released.failures, 0);
	expect_echoes(&f, 0, BURST);
	assert_int_equal(writes(f.bs) - w0, 1);

	struct sender exits = { &f, BURST, BURST, false, 0 };
	assert_int_equal(pthread_create(&t, NULL, sender_main, &exits), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(exits.failures, 0);
	expect_echoes(&f, BURST, BURST);
	assert_int_equal(writes(f.bs) - w0, 2);
	fixture_close(&f);
}

static void test_unanswered_go_on_next_receive(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev[64], none;

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	hold_answers(&f, ev, 3);
	/* the thread comes back for more: what it answered goes out */
	assert_int_equal(bs_recv_data(f.bs, &none, 0), BS_EAGAIN);
	expect_echoes(&f, 0, 3);
	bs_data_release(ev, BURST);
	fixture_close(&f);
}

struct holder {
	bs_t *bs;
	int answers;
	atomic_int step; /* 1: answered; 2: go on */
	bs_data_t ev[64];
	int got;
};

/* Takes a batch, answers some of it, then waits for the test (or exits). */
static void *holder_main(void *arg)
{
	struct holder *h = arg;

	h->got = bs_recv_data_batch(h->bs, h->ev, 64, WAIT_MS);
	for (int i = 0; i < h->answers && i < h->got; i++)
		TU_CHECK(bs_send_data(h->bs, h->ev[i].id, h->ev[i].data, h->ev[i].len) == 0,
			 "answer %d", i);
	atomic_store(&h->step, 1);
	return NULL;
}

static void test_thread_exit_writes_held(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	struct holder h = { .answers = 3 };
	pthread_t th;

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	h.bs = f.bs;
	burst(&f, 0, BURST, 0);
	assert_int_equal(pthread_create(&th, NULL, holder_main, &h), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(h.got, BURST);
	assert_int_equal(tu_failures(), 0);
	expect_echoes(&f, 0, 3);
	bs_data_release(h.ev, BURST);
	fixture_close(&f);
}

static void test_send_from_other_thread_writes_held(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev[64], none;
	struct other_send o;
	pthread_t th;

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	hold_answers(&f, ev, 3);

	/* a thread that does not hold the connection sends: its message
	 * goes at once, behind the holder's answers */
	o = (struct other_send){ .bs = f.bs, .id = f.id, .flags = 0, .rc = -1 };
	tu_pattern_fill(o.msg, sizeof(o.msg), STREAM, 3);
	assert_int_equal(pthread_create(&th, NULL, other_send_main, &o), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(o.rc, 0);
	expect_echoes(&f, 0, 4);
	/* the holder's later answers wait for the end of its hold */
	for (int i = 4; i < BURST; i++)
		answer(f.bs, &ev[i]);
	assert_true(peer_has_nothing(&f));
	assert_int_equal(bs_recv_data(f.bs, &none, 0), BS_EAGAIN);
	expect_echoes(&f, 4, BURST - 4);
	bs_data_release(ev, BURST);
	fixture_close(&f);
}

static void test_other_instance_receive_writes_held(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture a, b;
	bs_data_t ev[64], none;

	tu_config(&cfg);
	fixture_open(&a, &cfg);
	fixture_open(&b, &cfg);
	hold_answers(&a, ev, 2);
	assert_int_equal(bs_recv_data(b.bs, &none, 0), BS_EAGAIN);
	expect_echoes(&a, 0, 2);
	bs_data_release(ev, BURST);
	fixture_close(&b);
	fixture_close(&a);
}

static void test_send_close_writes_held(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev[64];

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	hold_answers(&f, ev, 3);
	assert_int_equal(bs_send_close(f.bs, f.id), 0);
	expect_echoes(&f, 0, 3);
	assert_int_equal(tu_wait_eof(f.fd, WAIT_MS), 1);
	bs_data_release(ev, BURST);
	assert_int_equal(tu_expect_close(f.bs, f.id, BS_ECLOSED, true, NULL, WAIT_MS), 0);
	fixture_close(&f);
}

static void test_shutdown_writes_held(void **state)
{
	(void)state;
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev[64];

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	hold_answers(&f, ev, 3);
	bs_data_release(ev, BURST);
	/* this thread never receives again: the shutdown flush writes them */
	bs_destroy(f.bs);
	expect_echoes(&f, 0, 3);
	assert_int_equal(tu_wait_eof(f.fd, WAIT_MS), 1);
	tu_reader_free(&f.rd);
	close(f.fd);
}

static void test_held_bytes_are_bounded(void **state)
{
	(void)state;
	enum { BIG = 20000 };
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev[64];

	tu_config(&cfg);
	fixture_open(&f, &cfg);
	burst(&f, 0, BURST, BIG);
	take(f.bs, ev, BURST);
	/* four answers are over the 64 KiB a connection holds back */
	for (int i = 0; i < 4; i++)
		answer(f.bs, &ev[i]);
	assert_true(tu_readable(f.fd, WAIT_MS));
	for (int i = 4; i < BURST; i++)
		answer(f.bs, &ev[i]);
	assert_int_equal(bs_release(f.bs), 0);
	expect_echoes(&f, 0, BURST);
	bs_data_release(ev, BURST);
	fixture_close(&f);
}

static void test_held_frames_never_refuse_a_send(void **state)
{
	(void)state;
	enum { SMALL = 5000, BIG = 25000 };
	bs_config_t cfg;
	struct fixture f;
	bs_data_t ev[64];
	static uint8_t big[BIG];

	tu_config(&cfg);
	cfg.send_queue_bytes = 32 * 1024;
	fixture_open(&f, &cfg);
	burst(&f, 0, BURST, SMALL);
	take(f.bs, ev, BURST);
	answer(f.bs, &ev[0]);
	answer(f.bs, &ev[1]);
	assert_true(peer_has_nothing(&f));
	/* 10 KiB held + 25 KiB is over the bound: what is held goes first,
	 * the send is not refused */
	tu_pattern_fill(big, BIG, STREAM, 2);
	assert_int_equal(bs_send_data(f.bs, f.id, big, BIG), 0);
	for (int i = 3; i < BURST; i++)
		answer(f.bs, &ev[i]);
	assert_int_equal(bs_release(f.bs), 0);
	expect_echoes(&f, 0, BURST);
	assert_int_equal(tu_stats(f.bs).sends_refused, 0);
	bs_data_release(ev, BURST);
	fixture_close(&f);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batch_answers_leave_in_one_write),
		cmocka_unit_test(test_each_hold_answers_at_its_end),
		cmocka_unit_test(test_send_more_waits_for_next_receive),
		cmocka_unit_test(test_send_more_from_a_thread_that_never_received),
		cmocka_unit_test(test_send_more_waits_while_receives_find_work),
		cmocka_unit_test(test_send_more_written_before_a_receive_waits),
		cmocka_unit_test(test_send_more_written_before_a_send_waits),
		cmocka_unit_test(test_send_more_bounded_by_events),
		cmocka_unit_test(test_send_more_bounded_by_time),
		cmocka_unit_test(test_send_more_across_receives_goes_at_release_and_exit),
		cmocka_unit_test(test_send_more_keeps_order_with_other_senders),
		cmocka_unit_test(test_unanswered_go_on_next_receive),
		cmocka_unit_test(test_thread_exit_writes_held),
		cmocka_unit_test(test_send_from_other_thread_writes_held),
		cmocka_unit_test(test_other_instance_receive_writes_held),
		cmocka_unit_test(test_send_close_writes_held),
		cmocka_unit_test(test_shutdown_writes_held),
		cmocka_unit_test(test_held_bytes_are_bounded),
		cmocka_unit_test(test_held_frames_never_refuse_a_send),
	};
	return TU_RUN("hold-sends", tests, argc, argv);
}
