/*
 * Reply coalescing.
 *
 * A server answers most messages it receives. Written one by one, the
 * answers to eight messages that arrived in one segment cost eight writes,
 * eight segments and eight wake-ups of the peer, where a hand-written epoll
 * server writes them at once. So each thread remembers the runs of messages
 * its last receive call gave it (connection, how many not answered yet);
 * a send to such a connection only joins its queue while more answers are
 * due — the thread still holds unanswered messages of it, or more of its
 * messages wait in the data queue — and the last answer writes them all.
 * Sends to connections the thread was given nothing from (a publisher's
 * fan-out, say) are written at once.
 *
 * Held-back frames are written by the first of:
 *   - the send that answers the connection's last waiting message, or any
 *     send to it from a thread that holds none of its messages;
 *   - the next bs_recv_* call of the thread that holds unanswered messages
 *     of it or that was given its last waiting message (also that thread's
 *     exit, or its next receive on another instance);
 *   - bs_flush, bs_send_close, shutdown, or EPOLLOUT;
 *   - the held-back bytes reaching the hold limit, or a send that would
 *     not fit in the queue beside them.
 *
 * Who writes a frame held back because messages wait in the queue: the
 * thread whose dequeue empties the gate (see conn.h). The sender stores
 * held_back before it looks at the gate, the taker changes the gate before
 * it looks at held_back (both sequentially consistent), so at least one of
 * them sees the other: the sender does not hold, or the taker settles.
 */
#include "coalesce.h"

#include <pthread.h>

#include "worker.h"

/* Hash slots for the runs: a power of two, twice COALESCE_MAX_TAKE, so a
 * probe always ends at a free slot. */
#define HELD_SLOTS 512u
#define HOLD_MAX_BYTES (64u * 1024u)

struct held_run {
	bs_id_t id;
	uint32_t left;     /* messages given and not answered yet */
	uint16_t slot;     /* its hash slot, cleared when forgotten */
	bool took_last;    /* this thread's dequeue emptied the gate */
};

struct held {
	/* The instance of the last receive. Compared with the caller's;
	 * followed from elsewhere only while it is on the live list. */
	struct bs *bs;
	unsigned n;
	bool exit_armed;
	struct held_run run[COALESCE_MAX_TAKE];
	uint16_t index[HELD_SLOTS]; /* run number + 1; 0 = free */
};

static _Thread_local struct held held;

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bs *live_head;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;

/* ---- the runs of this thread ------------------------------------------ */

static struct held_run *held_find(bs_id_t id)
{
	/* Ids of live connections differ in their slot bits, the low ones. */
	for (unsigned s = (unsigned)id & (HELD_SLOTS - 1);; s = (s + 1) & (HELD_SLOTS - 1)) {
		unsigned k = held.index[s];

		if (k == 0)
			return NULL;
		if (held.run[k - 1].id == id)
			return &held.run[k - 1];
	}
}

static void held_forget(void)
{
	for (unsigned i = 0; i < held.n; i++)
		held.index[held.run[i].slot] = 0;
	held.n = 0;
}

/* Writes c's held-back frames unless messages of it wait in the queue
 * again: then whoever takes the last of them does. */
static void settle_conn(struct bs *bs, bs_id_t id)
{
	struct bs_conn *c = table_lookup(&bs->table, id);
	uint32_t gate;

	if (c == NULL || !atomic_load(&c->held_back))
		return;
	pthread_mutex_lock(&c->lock);
	gate = atomic_load(&c->gate);
	if (atomic_load_explicit(&c->id, memory_order_relaxed) == id &&
	    atomic_load_explicit(&c->held_back, memory_order_relaxed) &&
	    !((gate & GATE_OPEN_DONE) && (gate & GATE_PENDING_MASK)) && !c->out_blocked &&
	    atomic_load_explicit(&c->state, memory_order_relaxed) == CONN_OPEN)
		send_flush_locked(bs, c);
	pthread_mutex_unlock(&c->lock);
}

static void settle_runs(struct bs *bs)
{
	for (unsigned i = 0; i < held.n; i++) {
		const struct held_run *r = &held.run[i];

		if (r->left > 0 || r->took_last)
			settle_conn(bs, r->id);
	}
	held_forget();
}

/* Settles runs of an instance other than the caller's, if it still lives. */
static void settle_elsewhere(void)
{
	pthread_mutex_lock(&live_lock);
	for (struct bs *p = live_head; p != NULL; p = p->live_next) {
		if (p == held.bs) {
			settle_runs(p);
			break;
		}
	}
	pthread_mutex_unlock(&live_lock);
	held_forget();
}

static void on_thread_exit(void *unused)
{
	(void)unused;
	if (held.n != 0)
		settle_elsewhere();
}

static void make_exit_key(void)
{
	(void)pthread_key_create(&exit_key, on_thread_exit);
}

/* ---- the calls -------------------------------------------------------- */

void coalesce_register(struct bs *bs)
{
	pthread_mutex_lock(&live_lock);
	bs->live_next = live_head;
	live_head = bs;
	pthread_mutex_unlock(&live_lock);
}

void coalesce_unregister(struct bs *bs)
{
	pthread_mutex_lock(&live_lock);
	for (struct bs **p = &live_head; *p != NULL; p = &(*p)->live_next) {
		if (*p == bs) {
			*p = bs->live_next;
			break;
		}
	}
	pthread_mutex_unlock(&live_lock);
}

void coalesce_settle(struct bs *bs)
{
	if (held.n != 0) {
		if (held.bs == bs)
			settle_runs(bs);
		else
			settle_elsewhere();
	}
	held.bs = bs;
}

void coalesce_took(struct bs *bs, bs_id_t id, uint32_t n, bool took_last)
{
	struct held_run *r;
	unsigned s;

	if (!bs->cfg.coalesce_sends || held.bs != bs)
		return;
	r = held_find(id);
	if (r != NULL) {
		/* The same connection again later in the batch. */
		r->left += n;
		r->took_last |= took_last;
		return;
	}
	if (held.n == COALESCE_MAX_TAKE) /* the receive calls take no more */
		return;
	if (!held.exit_armed) {
		pthread_once(&exit_once, make_exit_key);
		held.exit_armed = pthread_setspecific(exit_key, &held) == 0;
	}
	for (s = (unsigned)id & (HELD_SLOTS - 1); held.index[s] != 0; s = (s + 1) & (HELD_SLOTS - 1))
		;
	held.run[held.n] = (struct held_run){ .id = id, .left = n, .slot = (uint16_t)s,
					      .took_last = took_last };
	held.index[s] = (uint16_t)++held.n;
}

bool coalesce_hold(struct bs *bs, struct bs_conn *c, bs_id_t id, size_t total)
{
	size_t limit = bs->cfg.send_queue_bytes / 2;
	struct held_run *r;
	uint32_t gate;

	if (held.bs != bs || held.n == 0 || (r = held_find(id)) == NULL)
		return false;
	if (r->left > 0)
		r->left--;
	if (limit > HOLD_MAX_BYTES)
		limit = HOLD_MAX_BYTES;
	if (atomic_load_explicit(&c->out_bytes, memory_order_relaxed) + total > limit)
		return false; /* the caller writes what is held back */
	/* Stored before the gate is read: see the top of this file. */
	atomic_store(&c->held_back, true);
	if (r->left > 0)
		return true; /* this thread settles it at the latest */
	gate = atomic_load(&c->gate);
	if ((gate & GATE_OPEN_DONE) && (gate & GATE_PENDING_MASK))
		return true; /* the taker of the last waiting message settles it */
	atomic_store_explicit(&c->held_back, false, memory_order_relaxed);
	return false;
}
