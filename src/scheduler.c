/* The scheduler of ready connections. See sched.h. */
#include "scheduler.h"

#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "conn.h"
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

int sched_init(struct sched *s, uint32_t max_conns, bool open_events, bool close_events)
{
	uint32_t cap = 2;

	while (cap < max_conns + 1)
		cap <<= 1;
	for (int k = 0; k < EV_KINDS; k++) {
		ck_ring_buffer_t *buf = calloc(cap, sizeof(*buf));
		if (buf == NULL)
			return BS_ENOMEM;
		mp_ring_init(&s->ring[k], buf, cap);
		ck_ec32_init(&s->ec[k], 0);
	}
	s->mode.ops = &ec_ops;
	s->mode.single_producer = false;
	s->open_events = open_events;
	s->close_events = close_events;
	return 0;
}

void sched_free(struct sched *s)
{
	for (int k = 0; k < EV_KINDS; k++) {
		free(s->ring[k].buf);
		mp_ring_destroy(&s->ring[k]);
	}
}

/* ---- the lines ---------------------------------------------------------- */

static void push(struct sched *s, enum ev_kind kind, struct bs_conn *c, unsigned *wake)
{
	tsan_release(&s->ring[kind]);
	/* Room for every slot: cannot fail. */
	(void)mp_ring_push(&s->ring[kind], c);
	if (wake != NULL)
		*wake |= 1u << kind;
	else
		ck_ec32_inc(&s->ec[kind], &s->mode);
}

void sched_wake(struct sched *s, unsigned wake)
{
	for (int k = 0; k < EV_KINDS; k++)
		if (wake & (1u << k))
			ck_ec32_inc(&s->ec[k], &s->mode);
}

void sched_wake_all(struct sched *s)
{
	sched_wake(s, (1u << EV_KINDS) - 1);
}

/*
 * The owner of c (SCHED_OWNED set by us) sends it where its next event is.
 * Returns true when c is finished and must be freed by the caller.
 */
static bool dispatch(struct sched *s, struct bs_conn *c, unsigned *wake)
{
	for (;;) {
		uint32_t st = atomic_load(&c->sched);

		if (st & SCHED_EVENT_DUE) {
			/* The frames read before the event go first; those read
			 * after it wait in the inbox. */
			push(s, inbox_ready(&c->in, c->rx_epoch) ? EV_DATA : EV_OPEN, c, wake);
			return false;
		}
		if (inbox_pending(&c->in)) {
			push(s, EV_DATA, c, wake);
			return false;
		}
		if (st & SCHED_CLOSE_DUE) {
			if (!s->close_events)
				return true;
			push(s, EV_CLOSE, c, wake);
			return false;
		}
		/* Idle. Data, an event or a close that came after our look
		 * finds OWNED clear and schedules c itself; or we see it here.
		 * Only the byte count is looked at once OWNED is clear: the
		 * inbox may have a new consumer already. */
		atomic_fetch_and(&c->sched, ~SCHED_OWNED);
		if (!inbox_pending(&c->in) &&
		    !(atomic_load(&c->sched) & (SCHED_CLOSE_DUE | SCHED_EVENT_DUE)))
			return false;
		if (atomic_fetch_or(&c->sched, SCHED_OWNED) & SCHED_OWNED)
			return false; /* the I/O thread took it over */
	}
}

void sched_new(struct sched *s, struct bs_conn *c, unsigned *wake)
{
	if (s->open_events) {
		atomic_store(&c->sched, SCHED_OWNED | SCHED_OPEN_DUE);
		push(s, EV_OPEN, c, wake);
	} else {
		atomic_store(&c->sched, 0);
	}
}

void sched_data(struct sched *s, struct bs_conn *c, unsigned *wake)
{
	/* Owned already (queued, held, open due): its owner sees the data. */
	uint32_t old = atomic_fetch_or(&c->sched, SCHED_OWNED);

	if (old & SCHED_OWNED)
		return;
	if (old & SCHED_EVENT_DUE)
		(void)dispatch(s, c, wake); /* the event may have to come first */
	else
		push(s, EV_DATA, c, wake);
}

void sched_event_due(struct bs_conn *c, bool due)
{
	if (due)
		atomic_fetch_or(&c->sched, SCHED_EVENT_DUE);
	else
		atomic_fetch_and(&c->sched, ~SCHED_EVENT_DUE);
}

void sched_event(struct sched *s, struct bs_conn *c, unsigned *wake)
{
	/* Owned already (queued, held): its owner sees the event. Not
	 * closed yet, so dispatch cannot find c finished. */
	if (!(atomic_fetch_or(&c->sched, SCHED_OWNED) & SCHED_OWNED))
		(void)dispatch(s, c, wake);
}

bool sched_closed(struct sched *s, struct bs_conn *c, unsigned *wake)
{
	if (atomic_fetch_or(&c->sched, SCHED_CLOSE_DUE | SCHED_OWNED) & SCHED_OWNED)
		return false;
	return dispatch(s, c, wake);
}

struct bs_conn *sched_take(struct sched *s, enum ev_kind kind)
{
	void *v;

	if (!mp_ring_pop(&s->ring[kind], &v))
		return NULL;
	tsan_acquire(&s->ring[kind]);
	if (kind == EV_OPEN)
		atomic_fetch_and(&((struct bs_conn *)v)->sched, ~SCHED_OPEN_DUE);
	return v;
}

bool sched_release(struct sched *s, struct bs_conn *c)
{
	return dispatch(s, c, NULL);
}

uint32_t sched_ec_value(struct sched *s, enum ev_kind kind)
{
	return ck_ec32_value(&s->ec[kind]);
}

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

int sched_ec_wait(struct sched *s, enum ev_kind kind, uint32_t snap,
		  const struct timespec *deadline)
{
	return ck_ec32_wait_pred(&s->ec[kind], &s->mode, snap, cap_at_deadline,
				 (void *)deadline, deadline);
}

unsigned sched_queued(struct sched *s, enum ev_kind kind)
{
	return mp_ring_size(&s->ring[kind]);
}
