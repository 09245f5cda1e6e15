/*
 * An I/O thread: one epoll set (edge-triggered), the connections it
 * accepted or adopted, and the loop that reads them, flushes their queued
 * sends, times them out and closes them.
 *
 * Wake-ups from other threads go through one eventfd, written only when no
 * wake-up is already on its way (wake_pending), so a burst of requests
 * costs one write and one epoll return. Data events are announced to
 * consumers once per loop turn, never per message.
 */
#include "worker.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "reader.h"
#include "tsan.h"

#define EPOLL_BATCH 256
#define LISTED_NONE 0
#define LISTED_READY 1
#define LISTED_WAITING 2

/* ---- intrusive lists (this thread only) ------------------------------- */

static void list_append(struct conn_list *l, struct bs_conn *c, uint8_t which)
{
	c->list_next = NULL;
	c->list_prev = l->tail;
	if (l->tail)
		l->tail->list_next = c;
	else
		l->head = c;
	l->tail = c;
	l->count++;
	c->listed = which;
}

static void list_prepend(struct conn_list *l, struct bs_conn *c, uint8_t which)
{
	c->list_prev = NULL;
	c->list_next = l->head;
	if (l->head)
		l->head->list_prev = c;
	else
		l->tail = c;
	l->head = c;
	l->count++;
	c->listed = which;
}

static void list_remove(struct conn_list *l, struct bs_conn *c)
{
	if (c->list_prev)
		c->list_prev->list_next = c->list_next;
	else
		l->head = c->list_next;
	if (c->list_next)
		c->list_next->list_prev = c->list_prev;
	else
		l->tail = c->list_prev;
	c->list_prev = c->list_next = NULL;
	l->count--;
	c->listed = LISTED_NONE;
}

static void unlist(struct worker *w, struct bs_conn *c)
{
	if (c->listed == LISTED_READY)
		list_remove(&w->ready, c);
	else if (c->listed == LISTED_WAITING)
		list_remove(&w->waiting, c);
}

static void lru_unlink(struct worker *w, struct bs_conn *c)
{
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else if (w->lru_head == c)
		w->lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else if (w->lru_tail == c)
		w->lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
}

static void lru_append(struct worker *w, struct bs_conn *c, uint32_t now)
{
	c->lru_stamp = now;
	c->lru_next = NULL;
	c->lru_prev = w->lru_tail;
	if (w->lru_tail)
		w->lru_tail->lru_next = c;
	else
		w->lru_head = c;
	w->lru_tail = c;
}

void worker_touch(struct worker *w, struct bs_conn *c)
{
	uint32_t now = w->now;

	atomic_store_explicit(&c->last_active, now, memory_order_relaxed);
	if (w->lru_tail != c && c->lru_stamp != now) {
		lru_unlink(w, c);
		lru_append(w, c, now);
	}
}

/* ---- connection lifecycle --------------------------------------------- */

/*
 * EPOLLOUT is asked for only while a connect is in progress or a send was
 * refused: a socket that has it in its mask wakes its I/O thread at every
 * ACK that frees send buffer space, for nothing when no send waits.
 */
static int watch(struct bs_conn *c, int op, bool out)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (out ? EPOLLOUT : 0),
		.data.u64 = (uintptr_t)c | TAG_CONN,
	};

	if (epoll_ctl(c->worker->epfd, op, c->fd, &ev) != 0)
		return BS_ESYS;
	c->out_armed = out;
	return 0;
}

void worker_watch_out(struct bs_conn *c, bool on)
{
	if (c->out_armed != on && c->fd >= 0)
		(void)watch(c, EPOLL_CTL_MOD, on);
}

int worker_add(struct worker *w, struct bs_conn *c)
{
	uint32_t now = w->now;

	/* Bookkeeping first: on failure the caller closes through
	 * worker_close, which undoes it. */
	c->worker = w;
	atomic_store_explicit(&c->last_active, now, memory_order_relaxed);
	lru_append(w, c, now);
	atomic_store_explicit(&w->nconns, w->nconns + 1, memory_order_relaxed);
	return watch(c, EPOLL_CTL_ADD,
		     atomic_load_explicit(&c->state, memory_order_relaxed) == CONN_CONNECTING);
}

void worker_close(struct worker *w, struct bs_conn *c, int reason, int err)
{
	pthread_mutex_lock(&c->lock);
	/* A close the application or shutdown asked for keeps its reason
	 * when it completes by EOF or by force. */
	if ((reason == BS_EOF || reason == BS_ESHUTDOWN) && c->close_reason != 0)
		reason = c->close_reason;
	atomic_store_explicit(&c->state, CONN_CLOSED, memory_order_relaxed);
	send_drop_locked(w->bs, c);
	if (c->fd >= 0)
		close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
	pthread_mutex_unlock(&c->lock);

	reader_drop_rx(c);
	unlist(w, c);
	lru_unlink(w, c);
	c->close_reason = reason;
	c->close_errno = err;
	stat_add(&w->st.closed, 1);
	stat_add(&w->st.unsent_msgs, c->unsent_msgs);
	atomic_store_explicit(&w->nconns, w->nconns - 1, memory_order_relaxed);
	events_conn_closed(w->bs, c); /* c may be reused from here on */
}

/*
 * Asks c to close once its queued sends are out: the thread that empties
 * the queue shuts the socket down, and its EOF ends the connection here.
 */
static void begin_close(struct worker *w, struct bs_conn *c, int reason)
{
	bool now;

	pthread_mutex_lock(&c->lock);
	now = atomic_load_explicit(&c->state, memory_order_relaxed) != CONN_OPEN ||
	      !(atomic_load(&c->gate) & GATE_OPEN_DONE);
	if (!now && !c->close_requested) {
		c->close_requested = true;
		if (c->close_reason == 0)
			c->close_reason = reason;
		if (c->out_head == NULL)
			shutdown(c->fd, SHUT_RDWR);
		else if (!c->out_blocked)
			send_flush_locked(w->bs, c); /* held-back replies; shuts down when done */
	}
	pthread_mutex_unlock(&c->lock);
	if (now)
		worker_close(w, c, reason, 0);
}

/* ---- events ----------------------------------------------------------- */

static void on_connected(struct worker *w, struct bs_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	if (err != 0) {
		worker_close(w, c, err == ECONNREFUSED ? BS_ECONNREFUSED : BS_ESYS,
			     err == ECONNREFUSED ? 0 : err);
		return;
	}
	if (atomic_load(&w->bs->phase) >= PHASE_DRAIN) {
		worker_close(w, c, BS_ESHUTDOWN, 0);
		return;
	}
	c->peer_len = sizeof(c->peer);
	if (getpeername(c->fd, &c->peer.sa, &c->peer_len) != 0)
		c->peer_len = 0;
	addr_tune(c->fd, c->peer.sa.sa_family, &w->bs->cfg);
	pthread_mutex_lock(&c->lock);
	atomic_store_explicit(&c->state, CONN_OPEN, memory_order_relaxed);
	c->out_blocked = false;
	send_flush_locked(w->bs, c);
	pthread_mutex_unlock(&c->lock);
	events_push_open(w->bs, c);
}

static void on_conn_event(struct worker *w, struct bs_conn *c, uint32_t events)
{
	uint8_t state = atomic_load_explicit(&c->state, memory_order_relaxed);

	if (state == CONN_CONNECTING) {
		on_connected(w, c);
		/* The same edge may carry the peer's first bytes (a greeting
		 * sent on accept): no other edge will announce them. */
		state = atomic_load_explicit(&c->state, memory_order_relaxed);
	}
	if (state != CONN_OPEN)
		return;
	if (events & EPOLLOUT) {
		pthread_mutex_lock(&c->lock);
		c->out_blocked = false;
		if (c->out_head != NULL)
			send_flush_locked(w->bs, c);
		if (!c->out_blocked)
			worker_watch_out(c, false);
		pthread_mutex_unlock(&c->lock);
	}
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->hup = true;
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
	    c->listed == LISTED_NONE)
		list_append(&w->ready, c, LISTED_READY);
}

/*
 * Reads the ready connections, one budget each per turn, until they are
 * drained or the data ring is full. A connection whose open event has not
 * been returned waits (GATE_READ_WAIT) without being read.
 */
static void run_ready(struct worker *w)
{
	struct bs_conn *c;

	if (atomic_load_explicit(&w->rx_paused, memory_order_acquire))
		return;
	for (unsigned turns = 0; (c = w->ready.head) != NULL && turns < 4096; turns++) {
		uint32_t gate = atomic_load_explicit(&c->gate, memory_order_acquire);

		list_remove(&w->ready, c);
		/* Park it until bs_recv_open returns its open event; the
		 * thread that returns it sees GATE_READ_WAIT and wakes us. */
		while (!(gate & GATE_OPEN_DONE) &&
		       !atomic_compare_exchange_weak(&c->gate, &gate, gate | GATE_READ_WAIT))
			;
		if (!(gate & GATE_OPEN_DONE)) {
			list_append(&w->waiting, c, LISTED_WAITING);
			continue;
		}
		switch (reader_run(w, c)) {
		case READ_DONE:
		case READ_CLOSED:
			break;
		case READ_MORE:
			list_append(&w->ready, c, LISTED_READY);
			break;
		case READ_PAUSED:
			list_prepend(&w->ready, c, LISTED_READY);
			stat_add(&w->st.read_pauses, 1);
			/* seq_cst: ordered before the size check below, as the
			 * consumer's dequeue is before its flag check. */
			atomic_store(&w->rx_paused, true);
			/* A consumer may have drained the ring meanwhile and
			 * seen no pause flag: look once more ourselves. */
			if (ck_ring_size(&w->ring) <= w->ring_limit / 2)
				atomic_store(&w->rx_paused, false);
			else
				return;
		}
	}
}

/* Connections whose open event has now been returned may be read. */
static void release_waiting(struct worker *w)
{
	struct bs_conn *c = w->waiting.head, *next;

	for (; c != NULL; c = next) {
		next = c->list_next;
		if (atomic_load_explicit(&c->gate, memory_order_acquire) & GATE_OPEN_DONE) {
			list_remove(&w->waiting, c);
			list_append(&w->ready, c, LISTED_READY);
		}
	}
}

/* Takes over connections handed to this thread: dialled ones (connecting)
 * and accepted ones that another thread's accept placed here. */
static void adopt_new(struct worker *w)
{
	ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&w->adopt), *next;

	tsan_acquire(&w->adopt);

	for (; e != NULL; e = next) {
		struct bs_conn *c = (struct bs_conn *)((char *)e -
			offsetof(struct bs_conn, adopt_entry));
		int failed = c->close_errno;

		next = e->next;
		if (worker_add(w, c) != 0)
			worker_close(w, c, BS_ESYS, errno);
		else if (failed != 0) /* refused inside bs_dial itself */
			worker_close(w, c, BS_ECONNREFUSED, 0);
		else if (atomic_load(&w->bs->phase) >= PHASE_DRAIN)
			worker_close(w, c, BS_ESHUTDOWN, 0);
		else if (!c->dialled)
			events_push_open(w->bs, c);
	}
}

static void on_wake(struct worker *w)
{
	uint64_t v;

	/* Drain the eventfd before clearing the flag: the other order lets a
	 * waker write between the two, have its write swallowed by our read,
	 * and leave the flag set for good, so that no one writes again. */
	(void)!read(w->wakefd, &v, sizeof(v));
	atomic_store_explicit(&w->wake_pending, false, memory_order_seq_cst);
	adopt_new(w);
	if (atomic_exchange(&w->open_returned, false))
		release_waiting(w);
}

/* ---- timers and shutdown ---------------------------------------------- */

static void expire_idle(struct worker *w, uint32_t now)
{
	uint32_t timeout = w->bs->cfg.idle_timeout_ms;
	struct bs_conn *c;

	while ((c = w->lru_head) != NULL && ms_elapsed(now, c->lru_stamp, timeout)) {
		uint32_t last = atomic_load_explicit(&c->last_active, memory_order_relaxed);
		/* Busy in the library's own queues, or active since stamped. */
		if (c->listed != LISTED_NONE || !ms_elapsed(now, last, timeout)) {
			lru_unlink(w, c);
			lru_append(w, c, c->listed != LISTED_NONE ? now : last);
			if (w->lru_head == c)
				break;
			continue;
		}
		stat_add(&w->st.idle_timeouts, 1);
		worker_close(w, c, BS_ETIMEDOUT, 0);
	}
}

static void close_all(struct worker *w, bool force)
{
	struct bs_conn *c = w->lru_head, *next;

	for (; c != NULL; c = next) {
		next = c->lru_next;
		if (force)
			worker_close(w, c, BS_ESHUTDOWN, 0);
		else
			begin_close(w, c, BS_ESHUTDOWN);
	}
}

static int poll_timeout(struct worker *w)
{
	if (w->ready.head != NULL && !atomic_load(&w->rx_paused))
		return 0;
	if (atomic_load(&w->bs->phase) != PHASE_RUN)
		return 10;
	if (w->listeners_paused)
		return 100;
	if (w->bs->cfg.idle_timeout_ms) {
		uint32_t t = w->bs->cfg.idle_timeout_ms / 4;
		return t < 5 ? 5 : t > 1000 ? 1000 : (int)t;
	}
	return -1;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Waits for the next events. After a turn that had some, the thread first
 * looks again for a while, yielding the CPU between looks, before it
 * sleeps: a peer that answers within that time (a request and its
 * response, a client that streams) finds it awake, and neither the peer's
 * write nor this thread pays for a wake-up across CPUs, which on small VMs
 * costs more than the exchange itself.
 *
 * How long it looks adapts as the kernel's halt polling does: the time
 * doubles (up to io_poll_us) when the events came after the look ended but
 * within io_poll_us, so looking longer would have caught them, and halves
 * when the thread then slept longer than io_poll_us, so looking was
 * wasted. Sparse traffic soon costs no polling.
 */
#define POLL_START_NS 10000u

static int wait_events(struct worker *w, struct epoll_event *evs, bool busy)
{
	uint64_t max = (uint64_t)w->bs->cfg.io_poll_us * 1000u, start, slept;
	int timeout = poll_timeout(w), n;

	if (!busy || timeout == 0 || max == 0)
		return epoll_wait(w->epfd, evs, EPOLL_BATCH, timeout);
	start = mono_ns();
	if (w->poll_ns != 0) {
		do {
			n = epoll_wait(w->epfd, evs, EPOLL_BATCH, 0);
			if (n != 0)
				return n;
			sched_yield();
		} while (mono_ns() - start < w->poll_ns);
	}
	n = epoll_wait(w->epfd, evs, EPOLL_BATCH, timeout);
	slept = mono_ns() - start;
	if (slept > max)
		w->poll_ns = w->poll_ns / 2 < POLL_START_NS ? 0 : w->poll_ns / 2;
	else if (w->poll_ns < max)
		w->poll_ns = w->poll_ns == 0 ? POLL_START_NS : 2 * w->poll_ns;
	if (w->poll_ns > max)
		w->poll_ns = max;
	return n;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bs *bs = w->bs;
	struct epoll_event evs[EPOLL_BATCH];
	int phase, n = 0;

	for (;;) {
		n = wait_events(w, evs, n > 0);
		uint32_t now = bs_now_ms();

		w->now = now;
		atomic_store_explicit(&bs->now_ms, now, memory_order_relaxed);
		for (int i = 0; i < n; i++) {
			uintptr_t tag = evs[i].data.u64 & TAG_MASK;
			void *p = (void *)(uintptr_t)(evs[i].data.u64 & ~(uint64_t)TAG_MASK);

			if (tag == TAG_CONN)
				on_conn_event(w, p, evs[i].events);
			else if (tag == TAG_LISTENER)
				listener_accept(w, p);
			else
				on_wake(w);
		}
		/* After this turn's events: none can name a dropped listener. */
		listener_drop_closing(w);
		run_ready(w);
		if (w->pushed) {
			w->pushed = false;
			ck_ec32_inc(&bs->data_ec, &bs->ec_mode);
		}
		if (w->listeners_paused && ms_elapsed(now, w->accept_retry_ms, 100))
			listener_resume(w);
		if (bs->cfg.idle_timeout_ms)
			expire_idle(w, now);
		atomic_store_explicit(&w->st.paused_reads,
				      atomic_load(&w->rx_paused) ? w->ready.count : 0,
				      memory_order_relaxed);

		phase = atomic_load(&bs->phase);
		if (phase >= PHASE_DRAIN && !w->stop_begun) {
			w->stop_begun = true;
			listener_drop_closing(w);
			close_all(w, false);
		}
		if (phase >= PHASE_FORCE)
			close_all(w, true);
		if (phase >= PHASE_DRAIN)
			events_wake_all(bs); /* receivers re-check for the end */
		if (phase >= PHASE_EXIT) {
			adopt_new(w);
			close_all(w, true);
			break;
		}
	}
	if (w->pushed)
		ck_ec32_inc(&bs->data_ec, &bs->ec_mode);
	return NULL;
}

/* ---- setup ------------------------------------------------------------ */

void worker_wake(struct worker *w)
{
	uint64_t one = 1;

	if (!atomic_exchange_explicit(&w->wake_pending, true, memory_order_seq_cst))
		(void)!write(w->wakefd, &one, sizeof(one));
}

struct worker *worker_next(struct bs *bs)
{
	return &bs->workers[atomic_fetch_add_explicit(&bs->next_worker, 1, memory_order_relaxed) %
			    bs->nworkers];
}

void worker_adopt(struct worker *w, struct bs_conn *c)
{
	tsan_release(&w->adopt);
	ck_stack_push_upmc(&w->adopt, &c->adopt_entry);
	worker_wake(w);
}

int worker_start(struct bs *bs, struct worker *w, unsigned index)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_WAKE };
	uint32_t cap = 2;

	memset(w, 0, sizeof(*w));
	w->bs = bs;
	w->index = index;
	w->epfd = w->wakefd = -1;
	while (cap < bs->cfg.recv_queue_len + 1)
		cap <<= 1;
	w->ring_cap = cap;
	w->ring_limit = bs->cfg.recv_queue_len;
	w->now = bs_now_ms();
	w->ring_buf = calloc(cap, sizeof(*w->ring_buf));
	if (w->ring_buf == NULL)
		return BS_ENOMEM;
	ck_ring_init(&w->ring, cap);
	ck_stack_init(&w->adopt);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->epfd < 0 || w->wakefd < 0 ||
	    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev) != 0)
		return BS_ESYS;
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
		return BS_ESYS;
	return 0;
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}

/* Frees what the thread left: its chunk and undelivered events. */
void worker_free(struct worker *w)
{
	struct bs_data ev;

	if (w->ring_buf != NULL) {
		while (ck_ring_dequeue_spmc_data(&w->ring, w->ring_buf, &ev)) {
			tsan_acquire(&w->ring);
			bs_msg_release(ev.msg);
		}
	}
	reader_retire_chunk(w);
	free(w->ring_buf);
	if (w->epfd >= 0)
		close(w->epfd);
	if (w->wakefd >= 0)
		close(w->wakefd);
}
