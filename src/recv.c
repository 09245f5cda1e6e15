/*
 * bs_recv_*: taking events from the scheduler's lines, and holds.
 *
 * Every call first ends the calling thread's holds: the frames it queued to
 * connections it held are written (one system call per connection for all
 * the answers of a hold), then each connection goes back to the scheduler.
 * Then it takes what it is given and holds those connections.
 *
 * Frames it queued with BS_SEND_MORE to connections it did not hold wait
 * longer, while the thread has work, as a single-threaded server writes
 * its clients' buffers only before it sleeps: each such connection is
 * written once, when a receive finds nothing (before it waits, or returns
 * with nothing), or at the start of a receive once MORE_EVENTS_MAX events
 * were taken or send_more_us passed since the first of them; and at
 * bs_release, exit, a receive from another instance, or a send of the
 * thread that waits for room (send.c).
 *
 * Any thread. Lock order: the hold lock (hold.h) before a connection's lock.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "life.h"
#include "recv.h"
#include "redial.h"
#include "worker.h"

/* A take that finds a frame counted but not linked yet tries again, this
 * many times at most within one call. */
#define EMPTY_TAKES_MAX 64

/*
 * A thread whose receives never run dry writes its BS_SEND_MORE frames
 * once it has taken this many events (of any kind) since the first of
 * them, or once send_more_us passed, whichever comes first: the count
 * bounds in work how long a delivery waits behind the thread's other
 * events, the time bounds it when those are slow. A socket write costs the
 * kernel about 11 us here, as much as the library's work for dozens of
 * small deliveries, so what counts is how many deliveries each write
 * carries; 1024 events are four full batches (BS_RECV_BATCH_MAX), the run
 * at which the 100-topic pub/sub load was measured to carry about twice
 * the deliveries per write of a single batch (README).
 */
#define MORE_EVENTS_MAX 1024u

static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;

static struct bs *instance_of(struct hold_registry *reg)
{
	return (struct bs *)(void *)((char *)reg - offsetof(struct bs, holds));
}

/* Writes what c has queued, if id is still c's. */
static void flush_id(struct bs *bs, bs_id_t id)
{
	struct bs_conn *c = table_lock(&bs->table, id);

	if (c == NULL)
		return;
	c->more_listed = false;
	(void)life_flush(bs, c); /* a failed socket closes through its I/O thread */
	pthread_mutex_unlock(&c->lock);
}

/* Ends one hold: the holder's answers are written, then c goes back to
 * the scheduler. */
static void release_one(struct bs *bs, const struct held *held)
{
	struct bs_conn *c = held->c;

	atomic_store_explicit(&c->holder, NULL, memory_order_relaxed);
	if (held->sent) {
		pthread_mutex_lock(&c->lock);
		(void)life_flush(bs, c); /* a failed socket closes through its I/O thread */
		pthread_mutex_unlock(&c->lock);
	}
	if (sched_release(&bs->sched, c))
		life_finish(bs, c);
}

/* Ends every hold of h on bs. */
static void end_holds(struct bs *bs, struct holder *h)
{
	for (unsigned i = 0; i < h->n; i++)
		release_one(bs, &h->h[i]);
	hold_clear(h);
}

/* Writes h's BS_SEND_MORE frames, each connection once. */
static void flush_more(struct bs *bs, struct holder *h)
{
	for (unsigned i = 0; i < h->nmore; i++)
		flush_id(bs, h->more[i]);
	h->nmore = 0;
}

/* Ends every hold of h on bs, and writes its BS_SEND_MORE frames. */
static void release_holds(struct bs *bs, struct holder *h)
{
	end_holds(bs, h);
	flush_more(bs, h);
}

/* Whether h's deferred frames (nmore > 0) waited long enough, in events
 * or in time, for a thread that has not run dry since. The time is read
 * precisely (clock_ns, once per receive while frames wait): the coarse
 * clock ticks at 4 ms on this kind of machine, more than the bound. */
static bool more_due(const struct bs *bs, const struct holder *h)
{
	uint64_t max_ns = (uint64_t)bs->cfg.send_more_us * 1000u;

	return max_ns == 0 || h->more_events >= MORE_EVENTS_MAX ||
	       clock_ns() - h->more_since >= max_ns;
}

static void on_thread_exit(void *arg)
{
	struct holder *h = arg;
	struct hold_registry *reg;

	hold_lock();
	reg = atomic_load_explicit(&h->reg, memory_order_relaxed);
	if (reg != NULL) {
		release_holds(instance_of(reg), h);
		hold_unregister(h);
	}
	hold_unlock();
	hold_more_free(h);
	/* A later destructor that sends arms this one again. */
	h->exit_armed = false;
}

static void make_exit_key(void)
{
	(void)pthread_key_create(&exit_key, on_thread_exit);
}

/* Its exit ends h's holds and writes its BS_SEND_MORE frames. */
static void arm_exit(struct holder *h)
{
	if (!h->exit_armed) {
		pthread_once(&exit_once, make_exit_key);
		h->exit_armed = pthread_setspecific(exit_key, h) == 0;
	}
}

/* The start of every receive: ends this thread's holds, writes its
 * BS_SEND_MORE frames when they are due, and registers it with bs when it
 * last received from another instance (or never). */
static struct holder *enter(struct bs *bs)
{
	struct holder *h = hold_self();
	struct hold_registry *reg = atomic_load_explicit(&h->reg, memory_order_relaxed);

	if (reg == &bs->holds) {
		if (h->n != 0)
			end_holds(bs, h);
		if (h->nmore != 0 && more_due(bs, h))
			flush_more(bs, h);
		return h;
	}
	hold_lock();
	reg = atomic_load_explicit(&h->reg, memory_order_relaxed);
	if (reg != NULL) {
		release_holds(instance_of(reg), h);
		hold_unregister(h);
	}
	h->n = h->nmore = 0;
	hold_register(&bs->holds, h);
	hold_unlock();
	arm_exit(h);
	return h;
}

bool recv_enlist_sender(struct bs *bs)
{
	struct holder *h = hold_self();
	struct hold_registry *reg = atomic_load_explicit(&h->reg, memory_order_relaxed);

	if (reg == &bs->holds)
		return true;
	/* Its list serves one instance: a thread that holds or defers on
	 * another one writes at once rather than switch inside a send. */
	if (reg != NULL)
		return false;
	hold_lock();
	h->n = h->nmore = 0;
	hold_register(&bs->holds, h);
	hold_unlock();
	arm_exit(h);
	return true;
}

void recv_release_thread(struct bs *bs)
{
	struct holder *h = hold_self();

	if (atomic_load_explicit(&h->reg, memory_order_relaxed) == &bs->holds)
		release_holds(bs, h);
}

void recv_flush_more(struct bs *bs)
{
	struct holder *h = hold_self();

	if (h->nmore != 0 && atomic_load_explicit(&h->reg, memory_order_relaxed) == &bs->holds)
		flush_more(bs, h);
}

int bs_release(bs_t *bs)
{
	if (bs == NULL)
		return BS_EINVAL;
	recv_release_thread(bs);
	return 0;
}

int bs_release_id(bs_t *bs, bs_id_t id)
{
	struct holder *h = hold_self();
	struct bs_conn *c;
	struct held held;

	if (bs == NULL)
		return BS_EINVAL;
	c = table_lookup(&bs->table, id);
	/* Only this thread changes its own holds: no lock needed to look. */
	if (c == NULL || atomic_load_explicit(&h->reg, memory_order_relaxed) != &bs->holds ||
	    atomic_load_explicit(&c->holder, memory_order_relaxed) != h)
		return BS_ESTALE;
	held = h->h[c->hold_index];
	h->h[c->hold_index] = h->h[--h->n];
	h->h[c->hold_index].c->hold_index = c->hold_index;
	if (h->n == 0)
		hold_clear(h);
	release_one(bs, &held);
	return 0;
}

/* ---- taking ---------------------------------------------------------------- */

/* A holder took c's inbox below half its bound: its I/O thread may read it
 * again. seq_cst, after the take's count update (see worker.c park). */
static void maybe_resume(struct bs *bs, struct bs_conn *c)
{
	if (atomic_load(&c->rx_parked) &&
	    atomic_load(&c->in.bytes) <= bs->cfg.recv_backlog_bytes / 2 &&
	    atomic_exchange(&c->rx_parked, false)) {
		atomic_store(&c->io->resume, true);
		io_wake(c->io);
	}
}

static uint32_t now_ms(struct bs *bs)
{
	return atomic_load_explicit(&bs->now_ms, memory_order_relaxed);
}

static int try_data(struct bs *bs, struct holder *h, void *out, size_t max)
{
	bs_data_t *ev = out;
	size_t got = 0, quota = bs->cfg.hold_batch;
	unsigned empty = 0;
	struct bs_conn *c;

	while (got < max && h->n < HOLD_MAX && (c = sched_take(&bs->sched, EV_DATA)) != NULL) {
		size_t bytes, want = max - got < quota ? max - got : quota;
		size_t k = inbox_take(&c->in, c->framing, conn_id(c),
				      atomic_load_explicit(&c->user, memory_order_relaxed),
				      ev + got, want, &bytes, c->rx_epoch);

		if (k == 0) {
			/* Counted a moment before it was linked, or of a new
			 * connection whose event comes first: round again. */
			if (sched_release(&bs->sched, c))
				life_finish(bs, c);
			if (++empty == EMPTY_TAKES_MAX)
				break;
			continue;
		}
		hold_add(h, c, now_ms(bs));
		atomic_fetch_sub_explicit(&bs->undelivered, k, memory_order_relaxed);
		maybe_resume(bs, c);
		got += k;
	}
	return (int)got;
}

/* A dial's next event into ev; false when none was waiting (its line
 * place was stale). The holder of c. */
static bool take_dial_event(struct bs_conn *c, bs_open_event_t *ev)
{
	struct redial_event e;
	bool got;

	pthread_mutex_lock(&c->lock);
	got = redial_pop(c->rd, &e);
	if (c->rd->ev_n == 0)
		sched_event_due(c, false);
	pthread_mutex_unlock(&c->lock);
	if (!got)
		return false;
	ev->kind = e.kind;
	ev->reason = e.reason;
	ev->sys_errno = e.err;
	ev->attempt = e.attempt;
	ev->delay_ms = e.delay_ms;
	ev->maybe_lost_msgs = e.maybe_lost;
	if (e.kind != BS_OPEN_DOWN)
		c->rx_epoch = e.epoch; /* the new connection's frames follow */
	return true;
}

static int try_open(struct bs *bs, struct holder *h, void *out, size_t max)
{
	bs_open_event_t *ev = out;
	struct bs_conn *c;

	(void)max;
	for (unsigned empty = 0; empty < EMPTY_TAKES_MAX; empty++) {
		c = sched_take(&bs->sched, EV_OPEN);
		if (c == NULL)
			return 0;
		memset(ev, 0, sizeof(*ev));
		if (c->rd != NULL && !take_dial_event(c, ev)) {
			if (sched_release(&bs->sched, c))
				life_finish(bs, c);
			continue;
		}
		ev->id = conn_id(c);
		ev->user = atomic_load_explicit(&c->user, memory_order_relaxed);
		ev->listener = c->listener;
		ev->dialled = c->dialled;
		ev->peer_len = c->peer_len;
		memcpy(&ev->peer, &c->peer, c->peer_len);
		hold_add(h, c, now_ms(bs));
		return 1;
	}
	return 0;
}

static int try_close(struct bs *bs, struct holder *h, void *out, size_t max)
{
	bs_close_event_t *ev = out;
	struct bs_conn *c = sched_take(&bs->sched, EV_CLOSE);

	(void)h;
	(void)max;
	if (c == NULL)
		return 0;
	memset(ev, 0, sizeof(*ev));
	ev->id = conn_id(c);
	ev->user = atomic_load_explicit(&c->user, memory_order_relaxed);
	ev->reason = c->close_reason;
	ev->sys_errno = c->close_errno;
	ev->unsent_msgs = c->unsent_msgs;
	ev->unsent_bytes = c->unsent_bytes;
	ev->dropped_msgs = c->dropped_msgs;
	ev->written_msgs = c->written_msgs;
	if (c->rd != NULL) {
		ev->maybe_lost_msgs = c->rd->maybe_lost;
		ev->reconnects = c->rd->reconnects;
		ev->returned = c->rd->returned; /* the caller's now */
		ev->nreturned = c->rd->nreturned;
		c->rd->returned = NULL;
		c->rd->nreturned = 0;
	}
	/* The last event: nothing of the connection is left to hold. */
	life_finish(bs, c);
	return 1;
}

void bs_close_event_release(bs_close_event_t *ev)
{
	if (ev == NULL || ev->returned == NULL)
		return;
	bs_data_release(ev->returned, ev->nreturned);
	free(ev->returned);
	ev->returned = NULL;
	ev->nreturned = 0;
}

typedef int (*try_fn)(struct bs *bs, struct holder *h, void *out, size_t max);
typedef bool (*over_fn)(struct bs *bs);

/*
 * Before it sleeps, a receive that found nothing looks again for a while,
 * yielding the CPU between looks: a thread that answers a peer (echo,
 * request and response) then finds the peer's next message without being
 * woken across CPUs, which on small VMs costs more than the exchange.
 * How long it looks adapts as an I/O thread's poll does (worker.c): it
 * doubles, up to recv_poll_us, when the wait that followed ended with an
 * event within recv_poll_us, and halves when the thread slept longer.
 * Sparse events soon cost no polling. Returns what the last look took.
 */
#define POLL_START_NS 10000u

static int poll_for(struct bs *bs, struct holder *h, try_fn try, void *out, size_t max,
		    uint64_t start, uint64_t limit_ns)
{
	uint64_t until = h->poll_ns < limit_ns ? h->poll_ns : limit_ns;
	int r = 0;

	while (r == 0 && clock_ns() - start < until) {
		sched_yield();
		r = try(bs, h, out, max);
	}
	return r;
}

static void adapt_poll(struct bs *bs, struct holder *h, uint64_t slept_ns, bool got)
{
	uint64_t max = (uint64_t)bs->cfg.recv_poll_us * 1000u;

	if (!got || slept_ns > max)
		h->poll_ns = h->poll_ns / 2 < POLL_START_NS ? 0 : h->poll_ns / 2;
	else if (h->poll_ns < max)
		h->poll_ns = h->poll_ns == 0 ? POLL_START_NS : 2 * h->poll_ns;
	if (h->poll_ns > max)
		h->poll_ns = max;
}

static int recv_wait(struct bs *bs, enum ev_kind kind, try_fn try, over_fn over, void *out,
		     size_t max, int timeout_ms)
{
	struct timespec deadline;
	bool timed = false, polled = false;
	uint64_t start = 0;
	struct holder *h;
	int r;

	atomic_fetch_add(&bs->in_calls, 1);
	h = enter(bs);
	for (;;) {
		uint32_t snap = sched_ec_value(&bs->sched, kind);

		r = try(bs, h, out, max);
		if (r > 0)
			break;
		if (h->nmore != 0) {
			/* Out of work: the deferred frames go before the
			 * thread waits or returns empty-handed. Writing them
			 * takes a while; look again before either. */
			flush_more(bs, h);
			continue;
		}
		if (atomic_load(&bs->phase) == PHASE_DEAD || over(bs)) {
			r = BS_ESHUTDOWN;
			break;
		}
		if (timeout_ms == 0) {
			r = BS_EAGAIN;
			break;
		}
		if (!polled) {
			polled = true;
			start = clock_ns();
			/* Whatever came since snap, during the poll too, ends the
			 * wait below at once. */
			r = poll_for(bs, h, try, out, max, start,
				     timeout_ms > 0 ? (uint64_t)timeout_ms * 1000000u : UINT64_MAX);
			if (r > 0)
				break;
		}
		if (timeout_ms > 0 && !timed) {
			deadline = deadline_after_ms(timeout_ms);
			timed = true;
		}
		if (sched_ec_wait(&bs->sched, kind, snap, timed ? &deadline : NULL) != 0) {
			r = try(bs, h, out, max);
			if (r == 0)
				r = BS_ETIMEDOUT;
			break;
		}
	}
	if (polled)
		adapt_poll(bs, h, clock_ns() - start, r > 0);
	if (r > 0 && h->nmore != 0)
		h->more_events += (unsigned)r;
	atomic_fetch_sub(&bs->in_calls, 1);
	return r;
}

static bool open_over(struct bs *bs)
{
	return atomic_load(&bs->phase) >= PHASE_DRAIN;
}

static bool data_over(struct bs *bs)
{
	return atomic_load(&bs->phase) >= PHASE_DRAIN && workers_live_sockets(bs) == 0 &&
	       atomic_load(&bs->undelivered) == 0;
}

static bool close_over(struct bs *bs)
{
	return atomic_load(&bs->phase) >= PHASE_DRAIN && atomic_load(&bs->table.in_use) == 0;
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
	return as_status(recv_wait(bs, EV_OPEN, try_open, open_over, ev, 1, timeout_ms));
}

int bs_recv_data_batch(bs_t *bs, bs_data_t *ev, size_t max, int timeout_ms)
{
	if (bs == NULL || ev == NULL || max == 0)
		return BS_EINVAL;
	if (max > BS_RECV_BATCH_MAX)
		max = BS_RECV_BATCH_MAX;
	return recv_wait(bs, EV_DATA, try_data, data_over, ev, max, timeout_ms);
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
	return as_status(recv_wait(bs, EV_CLOSE, try_close, close_over, ev, 1, timeout_ms));
}

int bs_set_user(bs_t *bs, bs_id_t id, void *user)
{
	struct bs_conn *c;

	if (bs == NULL)
		return BS_EINVAL;
	c = table_lock(&bs->table, id);
	if (c == NULL)
		return BS_ESTALE;
	atomic_store_explicit(&c->user, user, memory_order_relaxed);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void recv_forget_instance(struct bs *bs)
{
	hold_lock();
	hold_registry_close(&bs->holds);
	hold_unlock();
}
