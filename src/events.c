/*
 * The three event queues and bs_recv_*.
 *
 * Data events sit in one ring per I/O thread (single producer, many
 * consumers); open and close events in one ring each (many producers, many
 * consumers) sized so that they can never be full: a connection has at most
 * one of each outstanding and holds its slot until its close is returned.
 *
 * Blocking uses ck event counts: a consumer snapshots the count, tries the
 * queue, and sleeps only if the count is unchanged. Producers bump the count
 * once per batch, and the futex is only touched when someone sleeps.
 */
#include <errno.h>
#include <ck_pr.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "coalesce.h"
#include "worker.h"
#include "tsan.h"

/* ---- event count operations (futex) ----------------------------------- */

static int ec_gettime(const struct ck_ec_ops *ops, struct timespec *out)
{
	(void)ops;
	return clock_gettime(CLOCK_MONOTONIC, out);
}

static void ec_wait32(const struct ck_ec_wait_state *st, const uint32_t *addr,
		      uint32_t expected, const struct timespec *deadline)
{
	(void)st;
	/* Absolute CLOCK_MONOTONIC deadline, as ck_ec computes it. */
	syscall(SYS_futex, addr, FUTEX_WAIT_BITSET_PRIVATE, expected, deadline, NULL,
		FUTEX_BITSET_MATCH_ANY);
}

static void ec_wait64(const struct ck_ec_wait_state *st, const uint64_t *addr,
		      uint64_t expected, const struct timespec *deadline)
{
	ec_wait32(st, (const uint32_t *)addr, (uint32_t)expected, deadline);
}

static void ec_wake32(const struct ck_ec_ops *ops, const uint32_t *addr)
{
	(void)ops;
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void ec_wake64(const struct ck_ec_ops *ops, const uint64_t *addr)
{
	ec_wake32(ops, (const uint32_t *)addr);
}

static const struct ck_ec_ops ec_ops = {
	.gettime = ec_gettime,
	.wait32 = ec_wait32,
	.wait64 = ec_wait64,
	.wake32 = ec_wake32,
	.wake64 = ec_wake64,
	/* Spinning before sleeping did not pay on two cores; sleep soon. */
	.busy_loop_iter = 1,
};

int events_init(struct bs *bs)
{
	uint32_t cap = 2;

	while (cap < bs->cfg.max_connections + 1)
		cap <<= 1;
	bs->open_buf = calloc(cap, sizeof(*bs->open_buf));
	bs->close_buf = calloc(cap, sizeof(*bs->close_buf));
	if (bs->open_buf == NULL || bs->close_buf == NULL)
		return BS_ENOMEM;
	ck_ring_init(&bs->open_ring, cap);
	ck_ring_init(&bs->close_ring, cap);
	ck_ec32_init(&bs->open_ec, 0);
	ck_ec32_init(&bs->data_ec, 0);
	ck_ec32_init(&bs->close_ec, 0);
	bs->ec_mode.ops = &ec_ops;
	bs->ec_mode.single_producer = false;
	return 0;
}

void events_free(struct bs *bs)
{
	free(bs->open_buf);
	free(bs->close_buf);
}

void events_wake_all(struct bs *bs)
{
	ck_ec32_inc(&bs->open_ec, &bs->ec_mode);
	ck_ec32_inc(&bs->data_ec, &bs->ec_mode);
	ck_ec32_inc(&bs->close_ec, &bs->ec_mode);
}

/* ---- producing -------------------------------------------------------- */

static void *id_ptr(bs_id_t id)
{
	return (void *)(uintptr_t)id;
}

void events_push_open(struct bs *bs, struct bs_conn *c)
{
	if (!bs->cfg.open_events) {
		atomic_fetch_or(&c->gate, GATE_OPEN_DONE);
		return;
	}
	atomic_fetch_add(&c->gate, 1);
	tsan_release(&bs->open_ring);
	ck_ring_enqueue_mpmc(&bs->open_ring, bs->open_buf, id_ptr(atomic_load(&c->id)));
	ck_ec32_inc(&bs->open_ec, &bs->ec_mode);
}

static void emit_close(struct bs *bs, struct bs_conn *c)
{
	if (!bs->cfg.close_events) {
		table_free(&bs->table, c);
		return;
	}
	tsan_release(&bs->close_ring);
	ck_ring_enqueue_mpmc(&bs->close_ring, bs->close_buf, id_ptr(atomic_load(&c->id)));
	ck_ec32_inc(&bs->close_ec, &bs->ec_mode);
}

void events_conn_closed(struct bs *bs, struct bs_conn *c)
{
	uint32_t old = atomic_fetch_or(&c->gate, GATE_CLOSED);

	if ((old & GATE_PENDING_MASK) == 0)
		emit_close(bs, c);
}

bool events_gate_release(struct bs *bs, struct bs_conn *c, uint32_t n)
{
	uint32_t old = atomic_fetch_sub(&c->gate, n);

	if ((old & GATE_PENDING_MASK) == n && (old & GATE_CLOSED))
		emit_close(bs, c);
	return (old & GATE_PENDING_MASK) == n;
}

/* ---- consuming -------------------------------------------------------- */

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/*
 * ck_ec sleeps in rounds of growing length (2 ms, then 8x more, up to 1 s)
 * and does not shorten a round to the caller's deadline. This predicate
 * does: it ends the wait once the deadline (state->data) has passed and
 * caps every round at it.
 */
static int cap_at_deadline(const struct ck_ec_wait_state *st, struct timespec *round)
{
	const struct timespec *deadline = st->data;

	if (deadline == NULL)
		return 0;
	if (!ts_before(&st->now, deadline))
		return -1;
	if (ts_before(deadline, round))
		*round = *deadline;
	return 0;
}

typedef int (*try_fn)(struct bs *bs, void *out, size_t max);
typedef bool (*over_fn)(struct bs *bs);

static int recv_wait(struct bs *bs, struct ck_ec32 *ec, try_fn try, over_fn over,
		     void *out, size_t max, int timeout_ms)
{
	struct timespec deadline, *dl = NULL;
	int r;

	atomic_fetch_add(&bs->in_calls, 1);
	/* Back for more: the replies held back for the last batch go now. */
	coalesce_settle(bs);
	for (;;) {
		uint32_t snap = ck_ec32_value(ec);

		r = try(bs, out, max);
		if (r > 0)
			break;
		if (atomic_load(&bs->phase) == PHASE_DEAD || over(bs)) {
			r = BS_ESHUTDOWN;
			break;
		}
		if (timeout_ms == 0) {
			r = BS_EAGAIN;
			break;
		}
		if (timeout_ms > 0 && dl == NULL) {
			struct timespec rel = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000L };
			ck_ec_deadline(&deadline, &bs->ec_mode, &rel);
			dl = &deadline;
		}
		if (ck_ec32_wait_pred(ec, &bs->ec_mode, snap, cap_at_deadline, dl, dl) != 0) {
			r = try(bs, out, max);
			if (r == 0)
				r = BS_ETIMEDOUT;
			break;
		}
	}
	atomic_fetch_sub(&bs->in_calls, 1);
	return r;
}

static bool open_over(struct bs *bs)
{
	return atomic_load(&bs->phase) >= PHASE_DRAIN;
}

static bool data_over(struct bs *bs)
{
	return atomic_load(&bs->phase) >= PHASE_DRAIN && bs_live_sockets(bs) == 0;
}

static bool close_over(struct bs *bs)
{
	return atomic_load(&bs->phase) >= PHASE_DRAIN &&
	       atomic_load(&bs->table.in_use) == 0;
}

static int try_open(struct bs *bs, void *out, size_t max)
{
	bs_open_event_t *ev = out;
	struct bs_conn *c;
	struct worker *w;
	void *v;
	uint32_t old;

	(void)max;
	if (!ck_ring_dequeue_mpmc(&bs->open_ring, bs->open_buf, &v))
		return 0;
	tsan_acquire(&bs->open_ring);
	/* The slot stays ours: its pending count includes this event. */
	c = table_slot(&bs->table, (bs_id_t)(uintptr_t)v);
	memset(ev, 0, sizeof(*ev));
	ev->id = (bs_id_t)(uintptr_t)v;
	ev->listener = c->listener;
	ev->dialled = c->dialled;
	ev->peer_len = c->peer_len;
	memcpy(&ev->peer, &c->peer, c->peer_len);
	w = c->worker;
	/* Sets OPEN_DONE and gives back the open's count in one step. */
	old = atomic_fetch_add(&c->gate, GATE_OPEN_DONE - 1);
	if (old & GATE_READ_WAIT) {
		atomic_store(&w->open_returned, true);
		worker_wake(w);
	}
	if ((old & GATE_PENDING_MASK) == 1 && (old & GATE_CLOSED))
		emit_close(bs, c);
	return 1;
}

static int try_close(struct bs *bs, void *out, size_t max)
{
	bs_close_event_t *ev = out;
	struct bs_conn *c;
	void *v;

	(void)max;
	if (!ck_ring_dequeue_mpmc(&bs->close_ring, bs->close_buf, &v))
		return 0;
	tsan_acquire(&bs->close_ring);
	c = table_slot(&bs->table, (bs_id_t)(uintptr_t)v);
	ev->id = (bs_id_t)(uintptr_t)v;
	ev->reason = c->close_reason;
	ev->sys_errno = c->close_errno;
	ev->unsent_msgs = c->unsent_msgs;
	ev->unsent_bytes = c->unsent_bytes;
	table_free(&bs->table, c);
	return 1;
}

/*
 * Takes up to max events from a data ring with one compare-and-swap on its
 * consumer head, where ck_ring_dequeue_spmc takes one per CAS. The steps and
 * fences are those of ck's multi-consumer dequeue (_ck_ring_dequeue_mc),
 * applied to a run of slots. ThreadSanitizer builds use ck's own dequeue,
 * whose accesses the suppressions cover.
 */
static unsigned ring_take(struct worker *w, struct bs_data *out, unsigned max)
{
#ifdef BS_TSAN
	unsigned n = 0;
	while (n < max && ck_ring_dequeue_spmc_data(&w->ring, w->ring_buf, &out[n]))
		n++;
	return n;
#else
	ck_ring_t *ring = &w->ring;
	unsigned consumer = ck_pr_load_uint(&ring->c_head), producer, n;

	do {
		ck_pr_fence_load();
		producer = ck_pr_load_uint(&ring->p_tail);
		n = producer - consumer;
		if (n == 0)
			return 0;
		if (n > max)
			n = max;
		ck_pr_fence_load();
		for (unsigned i = 0; i < n; i++)
			out[i] = w->ring_buf[(consumer + i) & ring->mask];
		ck_pr_fence_store_atomic();
	} while (!ck_pr_cas_uint_value(&ring->c_head, consumer, consumer + n, &consumer));
	return n;
#endif
}

/* Consumers start at different rings so that they do not all contend on
 * the same one. */
static _Thread_local unsigned next_ring;

static int try_data(struct bs *bs, void *out, size_t max)
{
	struct bs_data *ev = out;
	size_t got = 0;
	unsigned start = next_ring++;

	for (unsigned k = 0; k < bs->nworkers && got < max; k++) {
		struct worker *w = &bs->workers[(start + k) % bs->nworkers];
		size_t before = got;

		got += ring_take(w, ev + got, (unsigned)(max - got));
		if (got != before)
			tsan_acquire(&w->ring);
		/* One wake-up when half the ring is free, not one per message. */
		if (got != before && atomic_load_explicit(&w->rx_paused, memory_order_acquire) &&
		    ck_ring_size(&w->ring) <= w->ring_limit / 2 &&
		    atomic_exchange(&w->rx_paused, false))
			worker_wake(w);
	}
	/* Give the gates back, once per run of one connection's messages,
	 * and remember the runs for the replies to them. */
	for (size_t i = 0; i < got;) {
		size_t j = i + 1;
		bool last;

		while (j < got && ev[j].id == ev[i].id)
			j++;
		last = events_gate_release(bs, table_slot(&bs->table, ev[i].id), (uint32_t)(j - i));
		coalesce_took(bs, ev[i].id, (uint32_t)(j - i), last);
		i = j;
	}
	return (int)got;
}

/* A single-event call returns 0 where the batch form returns a count. */
static int as_status(int r)
{
	return r > 0 ? 0 : r;
}

int bs_recv_open(bs_t *bs, bs_open_event_t *ev, int timeout_ms)
{
	if (bs == NULL || ev == NULL)
		return BS_EINVAL;
	if (!bs->cfg.open_events)
		return BS_EDISABLED;
	return as_status(recv_wait(bs, &bs->open_ec, try_open, open_over, ev, 1, timeout_ms));
}

int bs_recv_data_batch(bs_t *bs, bs_data_t *ev, size_t max, int timeout_ms)
{
	if (bs == NULL || ev == NULL || max == 0 || max > INT_MAX)
		return BS_EINVAL;
	if (max > COALESCE_MAX_TAKE)
		max = COALESCE_MAX_TAKE; /* every run is remembered */
	return recv_wait(bs, &bs->data_ec, try_data, data_over, ev, max, timeout_ms);
}

int bs_recv_data(bs_t *bs, bs_data_t *ev, int timeout_ms)
{
	return as_status(bs_recv_data_batch(bs, ev, 1, timeout_ms));
}

int bs_recv_close(bs_t *bs, bs_close_event_t *ev, int timeout_ms)
{
	if (bs == NULL || ev == NULL)
		return BS_EINVAL;
	if (!bs->cfg.close_events)
		return BS_EDISABLED;
	return as_status(recv_wait(bs, &bs->close_ec, try_close, close_over, ev, 1, timeout_ms));
}
