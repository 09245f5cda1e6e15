/*
 * The parts a reconnecting dial is built from, on their own: the backoff
 * (gRPC's delays, jitter bounds, the cap, option checks), the I/O
 * thread's timer heap (order across the clock's wrap, cancel, move), the
 * in-flight marks (their count of maybe-lost messages is never below the
 * truth, and close to it), and the send queue's rewind to a frame boundary
 * and hand-back (what reached the peer whole plus what is handed back is
 * every message, once, in order).
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backoff.h"
#include "framing.h"
#include "inflight.h"
#include "msg.h"
#include "outq.h"
#include "timers.h"

/* Without libm, which the test programs do not link. */
static double dmin(double a, double b) { return a < b ? a : b; }
static double dmax(double a, double b) { return a > b ? a : b; }
static double dabs(double a) { return a < 0 ? -a : a; }

static double base_delay(const bs_dial_opts_t *o, uint32_t n)
{
	double d = o->backoff_initial_ms;

	for (uint32_t i = 1; i < n; i++)
		d = dmin(d * o->backoff_multiplier, o->backoff_max_ms);
	return dmin(d, o->backoff_max_ms);
}

static void test_backoff_delays(void **state)
{
	(void)state;
	enum { SAMPLES = 2000 };
	bs_dial_opts_t o;
	uint64_t rng = backoff_seed(1);

	bs_dial_opts_init(&o);
	assert_int_equal(backoff_check(&o), 0);
	for (uint32_t n = 1; n <= 20; n++) {
		double base = base_delay(&o, n), sum = 0, lo = 1e18, hi = 0;

		for (int i = 0; i < SAMPLES; i++) {
			double d = backoff_delay(&o, n, &rng);
			/* within the jitter, rounded to a millisecond */
			assert_true(d >= base * 0.8 - 1 && d <= base * 1.2 + 1);
			sum += d;
			lo = dmin(lo, d);
			hi = dmax(hi, d);
		}
		/* spread over the whole band, centred on the base delay */
		assert_true(dabs(sum / SAMPLES - base) < base * 0.02);
		assert_true(lo < base * 0.82 && hi > base * 1.18);
	}
	/* gRPC's sequence: 1 s, 1.6 s, 2.56 s, ... capped at 120 s */
	assert_true(dabs(base_delay(&o, 2) - 1600) < 1e-6);
	assert_true(dabs(base_delay(&o, 3) - 2560) < 1e-6);
	assert_true(dabs(base_delay(&o, 11) - 109951.1627776) < 1e-3);
	assert_true(dabs(base_delay(&o, 12) - 120000) < 1e-6);
	for (int i = 0; i < 100; i++) {
		uint32_t d = backoff_delay(&o, 1000000, &rng); /* no overflow */
		assert_true(d >= 96000 && d <= 144000);
	}
	/* no jitter: exact */
	o.backoff_jitter = 0;
	assert_int_equal(backoff_delay(&o, 1, &rng), 1000);
	assert_int_equal(backoff_delay(&o, 2, &rng), 1600);
	assert_int_equal(backoff_delay(&o, 50, &rng), 120000);
	/* two seeds taken at once differ */
	assert_true(backoff_seed(7) != backoff_seed(7));
}

static void test_backoff_check(void **state)
{
	(void)state;
	bs_dial_opts_t o, bad;

	bs_dial_opts_init(&o);
	assert_false(o.reconnect);
	assert_false(o.hand_back);
	assert_true(o.queue_while_down);
	assert_int_equal(o.backoff_initial_ms, 1000);
	assert_int_equal(o.backoff_max_ms, 120000);
	assert_true(o.backoff_multiplier == 1.6 && o.backoff_jitter == 0.2);
	assert_int_equal(o.max_retries, 0);
	assert_int_equal(o.connect_timeout_ms, 20000);
	bad = o, bad.backoff_initial_ms = 0;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.backoff_max_ms = 999;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.backoff_max_ms = BS_DIAL_MAX_MS + 1;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.backoff_multiplier = 0.99;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.backoff_multiplier = NAN;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.backoff_jitter = 1.0;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.backoff_jitter = -0.1;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.connect_timeout_ms = BS_DIAL_MAX_MS + 1;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.stable_ms = BS_DIAL_MAX_MS + 1;
	assert_int_equal(backoff_check(&bad), BS_EINVAL);
	bad = o, bad.backoff_initial_ms = 1, bad.backoff_max_ms = 1, bad.backoff_jitter = 0.99;
	assert_int_equal(backoff_check(&bad), 0);
}

static void test_timers_order(void **state)
{
	(void)state;
	enum { N = 1000 };
	static struct timer tm[N];
	struct timers t;
	uint64_t rng = 42;
	uint32_t base = 0xffffff00u, due, last = 0; /* across the wrap */
	unsigned popped = 0;

	timers_init(&t);
	memset(tm, 0, sizeof(tm));
	assert_false(timers_next(&t, &due));
	for (int i = 0; i < N; i++)
		assert_int_equal(timers_arm(&t, &tm[i], base + (uint32_t)(tu_rand(&rng) % 5000)), 0);
	for (int i = 0; i < N; i += 3)
		timers_cancel(&t, &tm[i]);
	for (int i = 1; i < N; i += 3) /* moved, earlier and later */
		assert_int_equal(timers_arm(&t, &tm[i], base + (uint32_t)(tu_rand(&rng) % 5000)), 0);
	timers_cancel(&t, &tm[0]); /* not armed: nothing */
	assert_null(timers_pop_due(&t, base - 1));
	for (struct timer *e; (e = timers_pop_due(&t, base + 5000)) != NULL; popped++) {
		assert_false(timer_armed(e));
		if (popped > 0)
			assert_true((int32_t)(e->due - last) >= 0);
		last = e->due;
	}
	assert_int_equal(popped, N - (N + 2) / 3);
	for (int i = 0; i < N; i++)
		assert_false(timer_armed(&tm[i]));
	timers_free(&t);
}

static void test_inflight_bound(void **state)
{
	(void)state;
	enum { MSG = 100, N = 100000 };
	struct inflight f;

	inflight_reset(&f);
	/* One message per write; fd -1: the kernel cannot be asked, so the
	 * marks thin out as they fill. */
	for (uint64_t k = 1; k <= N; k++) {
		inflight_wrote(&f, -1, MSG, 1);
		if (k % 997 != 0 && k != N)
			continue;
		for (uint64_t u = 0; u <= k * MSG; u += k * MSG / 50 + 1) {
			uint64_t acked = k * MSG - u;
			uint64_t truth = k - acked / MSG; /* ending after acked */
			uint64_t est = inflight_maybe_lost(&f, u);
			assert_true(est >= truth);
			assert_true(est <= truth + f.step / MSG + 1);
		}
		assert_int_equal(inflight_maybe_lost(&f, 0), 0);
		assert_int_equal(inflight_maybe_lost(&f, UINT64_MAX), k);
	}
	assert_true(f.n <= INFLIGHT_MARKS);
	/* messages found whole later count as written */
	inflight_completed(&f, 3);
	assert_int_equal(inflight_maybe_lost(&f, 0), 0);
	assert_int_equal(inflight_maybe_lost(&f, UINT64_MAX), N + 3);
}

/* Message i: its number in base 200, then bytes derived from it; no byte
 * is ever 0xff (the delimiter below). */
static void fill(uint8_t *p, size_t len, uint32_t i)
{
	for (size_t j = 0; j < 4; j++)
		p[j] = (uint8_t)(i / (j == 0 ? 1u : j == 1 ? 200u : j == 2 ? 40000u : 8000000u) % 200u);
	for (size_t j = 4; j < len; j++)
		p[j] = (uint8_t)((i * 31u + j) % 200u);
}

static long check(const uint8_t *p, size_t len)
{
	uint32_t i;

	if (len < 4)
		return -1;
	i = p[0] + 200u * p[1] + 40000u * p[2] + 8000000u * p[3];
	for (size_t j = 4; j < len; j++)
		if (p[j] != (uint8_t)((i * 31u + j) % 200u))
			return -1;
	return i;
}

static size_t len_of(uint32_t i, size_t big)
{
	return i % 89 == 3 ? big : 4 + (i * 7u) % 300u;
}

/* Queues message i: a big one is zero-copy (a node of its own), every
 * other run of 10 goes whole in shared buffers (reference blocks, as a
 * fan-out's frames do), the rest are copied. */
static void push_msg(struct outq *q, const bs_framing_t *f, uint32_t i, size_t len)
{
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	size_t tlen = 0;
	int hlen = frame_encode_any(f, len, hdr, &tlen);
	bs_msg_t *m = msg_new(len);
	struct iovec iov[3];

	assert_true(hlen >= 0);
	assert_non_null(m);
	fill(m->data, len, i);
	if ((i / 10) % 2 == 1) {
		size_t total = (size_t)hlen + len + tlen;
		bs_msg_t *flat = msg_new(total);

		assert_non_null(flat);
		memcpy(flat->data, hdr, (size_t)hlen);
		memcpy(flat->data + hlen, m->data, len);
		memcpy(flat->data + hlen + len, &f->delim, tlen);
		assert_int_equal(outq_push_ref(q, flat, total, len, 0), 0);
		bs_msg_release(m);
		return;
	}
	iov[0] = (struct iovec){ hdr, (size_t)hlen };
	iov[1] = (struct iovec){ m->data, len };
	iov[2] = (struct iovec){ (void *)&f->delim, tlen };
	assert_int_equal(outq_push(q, iov, tlen ? 3 : 2, len, &m, 0), 0);
	bs_msg_release(m); /* NULL when the queue took it */
}

struct peer {
	int fd;
	uint8_t *buf;
	size_t have, cap;
};

static void drain(struct peer *p)
{
	ssize_t r;

	while ((r = read(p->fd, p->buf + p->have, p->cap - p->have)) > 0)
		p->have += (size_t)r;
}

/* The whole frames the peer got: messages 0, 1, ... in order. */
static uint32_t whole_frames(const struct peer *p, const bs_framing_t *framing)
{
	bs_framing_t g = *framing, *f = &g;
	size_t off = 0;
	uint32_t n = 0;
	bs_frame_t fr;

	g.keep_delim = false; /* the message without its delimiter */
	while (frame_decode_any(f, p->buf + off, p->have - off, &fr) > 0) {
		assert_int_equal(check(p->buf + off + fr.header_len, fr.payload_len), n);
		n++;
		off += fr.header_len + fr.payload_len + fr.trailer_len;
	}
	assert_true(off < p->have); /* a frame was cut */
	return n;
}

/*
 * Writes N messages into a small socket until it is full, `rounds` times
 * (the peer reads in between), then rewinds and hands back: the frames the
 * peer got whole plus those handed back are every message, once, in
 * order, and the counts say which is which.
 */
static void rewind_hand_back(const bs_framing_t *f, size_t big, int rounds)
{
	enum { N = 3000 };
	struct outq q = { 0 };
	struct outq_count done = { 0 }, written = { 0 };
	struct peer p = { .cap = 8u << 20 };
	int sv[2], sz = 4096;
	size_t nback;
	bs_data_t *back;
	uint32_t got;

	p.buf = malloc(p.cap);
	assert_non_null(p.buf);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	p.fd = sv[1];
	for (uint32_t i = 0; i < N; i++)
		push_msg(&q, f, i, len_of(i, big));
	for (int r = 0; r < rounds; r++) {
		assert_int_equal(outq_write(&q, sv[0], &done, NULL), OUTQ_FULL);
		drain(&p);
	}
	got = whole_frames(&p, f);
	outq_rewind(&q, f, &written);
	assert_int_equal(done.msgs + written.msgs, got);
	outq_rewind(&q, f, &written); /* again (a break, then the end): nothing more */
	assert_int_equal(done.msgs + written.msgs, got);
	assert_int_equal(q.msgs, N - got);
	assert_int_equal(outq_hand_back(&q, f, 77, &p, &back, &nback), 0);
	assert_int_equal(nback, N - got);
	assert_true(outq_empty(&q));
	assert_int_equal(q.bytes, 0);
	for (size_t i = 0; i < nback; i++) {
		assert_int_equal(back[i].id, 77);
		assert_ptr_equal(back[i].user, &p);
		assert_int_equal(back[i].len, len_of(got + (uint32_t)i, big));
		assert_int_equal(check(back[i].data, back[i].len), got + i); /* from the cut one */
	}
	bs_data_release(back, nback);
	free(back);
	close(sv[0]);
	close(sv[1]);
	free(p.buf);
}

static void test_outq_rewind(void **state)
{
	(void)state;
	bs_framing_t f;

	bs_framing_default(&f);
	f.max_message_size = BS_DEFAULT_MAX_MESSAGE_SIZE;
	rewind_hand_back(&f, 20000, 1); /* copy blocks, zero-copy nodes, reference blocks */
	rewind_hand_back(&f, 20000, 3);
	rewind_hand_back(&f, 20000, 5);
	rewind_hand_back(&f, 300, 2);   /* no zero-copy nodes */
	f.kind = BS_FRAMING_DELIM;
	f.delim = 0xff;
	f.keep_delim = true; /* received messages keep it; queued ones do not */
	rewind_hand_back(&f, 20000, 2);
	f.kind = BS_FRAMING_VARINT;
	rewind_hand_back(&f, 20000, 2);
	f.kind = BS_FRAMING_BUFFSTREAMS;
	f.max_message_size = 65536;
	rewind_hand_back(&f, 20000, 2);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff_delays),
		cmocka_unit_test(test_backoff_check),
		cmocka_unit_test(test_timers_order),
		cmocka_unit_test(test_inflight_bound),
		cmocka_unit_test(test_outq_rewind),
	};
	return TU_RUN("reconnect-parts", tests, argc, argv);
}
