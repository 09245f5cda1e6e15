/*
 * An I/O thread's loop. Each thread owns its epoll set, its read chunk, the
 * read side of its connections and four lists of them:
 *   ready   bytes to read (edge-triggered: read until EAGAIN, one read per
 *           connection per turn, so one busy socket cannot starve others);
 *   parked  not read while their inbox is over its bound (reader.h);
 *   idle    every connection with a socket, by last activity, for the
 *           idle timeout;
 *   down    reconnecting dials between two sockets;
 * and its timers (timers.h): a dial's next retry, or its connect deadline.
 * New lines in the ready-connection scheduler are announced once per turn.
 *
 * A dial's failure (fail_conn) is either retried (go_down: its retry is
 * timed with the backoff) or final (close_conn). Retries connect from this
 * thread, to the address resolved at bs_dial_ex; nothing here blocks.
 */
#include "worker.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "clock.h"
#include "dial.h"
#include "life.h"
#include "listener.h"
#include "reader.h"
#include "redial.h"
#include "stat.h"
#include "timers.h"
#include "tsan.h"

#define EPOLL_BATCH 256
#define LISTED_NONE 0
#define LISTED_READY 1
#define LISTED_PARKED 2
#define LISTED_DOWN 3
/* How often thread 0 looks for holds that last too long. */
#define HOLD_SCAN_MS 100

struct worker {
	struct io io;
	struct bs *bs;
	pthread_t thread;
	bool started;
	struct reader rd;
	struct list ready, parked, idle, down;
	struct timers timers;
	struct listen_state ls;
	bool stop_begun;
	uint32_t now;               /* this thread's clock, read once a turn */
	uint32_t last_scan;
	uint64_t poll_ns;           /* how long to poll before sleeping */
};

static struct bs_conn *of_ready(struct list_node *n)
{
	return list_entry(n, struct bs_conn, ready_node);
}

static struct list *list_of(struct worker *w, uint8_t which)
{
	return which == LISTED_READY ? &w->ready : which == LISTED_PARKED ? &w->parked : &w->down;
}

static void list_as(struct worker *w, struct bs_conn *c, uint8_t which, bool front)
{
	struct list *l = list_of(w, which);

	if (front)
		list_prepend(l, &c->ready_node);
	else
		list_append(l, &c->ready_node);
	c->listed = which;
}

static void unlist(struct worker *w, struct bs_conn *c)
{
	if (c->listed != LISTED_NONE)
		list_remove(list_of(w, c->listed), &c->ready_node);
	c->listed = LISTED_NONE;
}

static void touch(struct worker *w, struct bs_conn *c)
{
	atomic_store_explicit(&c->last_active, w->now, memory_order_relaxed);
	if (w->idle.tail != &c->idle_node && c->idle_stamp != w->now) {
		list_remove(&w->idle, &c->idle_node);
		c->idle_stamp = w->now;
		list_append(&w->idle, &c->idle_node);
	}
}

/* ---- connection bookkeeping -------------------------------------------- */

static int add_conn(struct worker *w, struct bs_conn *c)
{
	/* Bookkeeping first: on failure the caller closes through
	 * close_conn, which undoes it. c->io is this thread already (set
	 * before the hand-over), and other threads read it. */
	c->idle_stamp = w->now;
	atomic_store_explicit(&c->last_active, w->now, memory_order_relaxed);
	list_append(&w->idle, &c->idle_node);
	atomic_store_explicit(&w->io.nconns, w->io.nconns + 1, memory_order_relaxed);
	return io_watch(c, true, conn_state(c) == CONN_CONNECTING);
}

/* Closes c for good. */
static void close_conn(struct worker *w, struct bs_conn *c, int reason, int err)
{
	if (c->rd != NULL)
		timers_cancel(&w->timers, &c->rd->tm);
	if (c->listed != LISTED_DOWN)
		list_remove(&w->idle, &c->idle_node);
	unlist(w, c);
	life_close(w->bs, c, reason, err, &w->rd.wake); /* c may be reused from here on */
}

/* Whether a failure of c is retried: a reconnecting dial of a running
 * instance, that nobody asked to close, failing for a reason a new
 * connection may not have. */
static bool will_retry(struct worker *w, struct bs_conn *c, int reason)
{
	bool closing;

	if (c->rd == NULL || !c->rd->opts.reconnect || !instance_running(w->bs))
		return false;
	pthread_mutex_lock(&c->lock);
	closing = c->close_reason != 0;
	pthread_mutex_unlock(&c->lock);
	if (closing)
		return false;
	switch (reason) {
	case BS_EOF:
	case BS_ESYS:
	case BS_ECONNREFUSED:
	case BS_ETIMEDOUT: /* a connect timeout: idle timeouts close_conn */
	case BS_EPROTO:
	case BS_EMSGSIZE:
		return true;
	default:
		return false;
	}
}

/*
 * A reconnecting dial's socket broke or its attempt failed: the retry
 * count (reset by a connection that stayed up stable_ms) and the backoff
 * time the next attempt, unless max_retries are spent.
 */
static void go_down(struct worker *w, struct bs_conn *c, int reason, int err)
{
	struct redial *rd = c->rd;
	enum conn_state st = conn_state(c);
	uint32_t delay;

	if ((st == CONN_OPEN || st == CONN_CLOSING) &&
	    ms_elapsed(w->now, rd->up_since, rd->opts.stable_ms))
		rd->retries = 0;
	if (rd->opts.max_retries != 0 && rd->retries >= rd->opts.max_retries) {
		close_conn(w, c, reason, err); /* given up: the last failure says why */
		return;
	}
	rd->retries++;
	delay = redial_delay(rd);
	if (timers_arm(&w->timers, &rd->tm, w->now + delay) != 0) {
		close_conn(w, c, BS_ENOMEM, 0);
		return;
	}
	if (c->listed != LISTED_DOWN) {
		list_remove(&w->idle, &c->idle_node);
		unlist(w, c);
		list_as(w, c, LISTED_DOWN, false);
	}
	life_down(w->bs, c, reason, err, rd->retries, delay, &w->rd.wake);
}

/* A connection failed (the peer, the socket or a connect): a reconnecting
 * dial goes down and retries, anything else closes for good. */
static void fail_conn(struct worker *w, struct bs_conn *c, int reason, int err)
{
	if (will_retry(w, c, reason))
		go_down(w, c, reason, err);
	else
		close_conn(w, c, reason, err);
}

/* Shutdown: queued sends go first, then the socket closes. */
static void begin_close(struct worker *w, struct bs_conn *c, int reason)
{
	bool now;

	pthread_mutex_lock(&c->lock);
	now = conn_state(c) == CONN_CONNECTING || conn_state(c) == CONN_DOWN;
	if (!now)
		life_request_close(w->bs, c, reason);
	pthread_mutex_unlock(&c->lock);
	if (now)
		close_conn(w, c, reason, 0);
}

/* ---- events ------------------------------------------------------------ */

static int connect_reason(int err)
{
	return err == ECONNREFUSED || err == ENOENT ? BS_ECONNREFUSED
	       : err == ETIMEDOUT ? BS_ETIMEDOUT
	       : BS_ESYS;
}

static void on_connected(struct worker *w, struct bs_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	if (err != 0) {
		int reason = connect_reason(err);
		fail_conn(w, c, reason, reason == BS_ESYS ? err : 0);
		return;
	}
	if (!instance_running(w->bs)) {
		close_conn(w, c, BS_ESHUTDOWN, 0);
		return;
	}
	if (c->rd != NULL) {
		/* A dial's peer is the address dialled, set once by
		 * bs_dial_ex: its events may be read while it reconnects. */
		timers_cancel(&w->timers, &c->rd->tm);
		c->rd->up_since = w->now;
	} else {
		c->peer_len = sizeof(c->peer);
		if (getpeername(c->fd, &c->peer.sa, &c->peer_len) != 0)
			c->peer_len = 0;
	}
	addr_tune(c->fd, c->peer.sa.sa_family, &w->bs->cfg);
	life_opened(w->bs, c, &w->rd.wake);
}

static void on_conn_event(struct worker *w, struct bs_conn *c, uint32_t events)
{
	enum conn_state st = conn_state(c);

	if (st == CONN_CONNECTING) {
		on_connected(w, c);
		/* The same edge may carry the peer's first bytes (a greeting
		 * sent on accept): no other edge will announce them. */
		st = conn_state(c);
	}
	if (st != CONN_OPEN && st != CONN_CLOSING)
		return;
	if (events & EPOLLOUT) {
		pthread_mutex_lock(&c->lock);
		c->out_blocked = false;
		(void)life_flush(w->bs, c); /* a failed socket reports EPOLLERR too */
		if (!c->out_blocked && c->out_armed)
			(void)io_watch(c, false, false);
		pthread_mutex_unlock(&c->lock);
	}
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->hup = true;
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && c->listed == LISTED_NONE)
		list_as(w, c, LISTED_READY, false);
}

static void park(struct worker *w, struct bs_conn *c)
{
	list_as(w, c, LISTED_PARKED, false);
	stat_add(&w->io.st.read_pauses, 1);
	/* seq_cst: before the look at the inbox, as a holder's take is
	 * before its look at rx_parked (recv.c). */
	atomic_store(&c->rx_parked, true);
	if (reader_may_resume(&w->rd, c) && atomic_exchange(&c->rx_parked, false)) {
		unlist(w, c);
		list_as(w, c, LISTED_READY, false);
	}
}

/* Reads the ready connections, one budget each per turn. */
static void run_ready(struct worker *w)
{
	struct list_node *n;

	for (unsigned turns = 0; (n = w->ready.head) != NULL && turns < 4096; turns++) {
		struct bs_conn *c = of_ready(n);
		bool active = false;
		int reason = 0, err = 0;
		enum read_result r;

		unlist(w, c);
		r = reader_run(&w->rd, c, &active, &reason, &err);
		if (active)
			touch(w, c);
		switch (r) {
		case READ_DONE:
			break;
		case READ_MORE:
			list_as(w, c, LISTED_READY, false);
			break;
		case READ_PARKED:
			park(w, c);
			break;
		case READ_CLOSED:
			fail_conn(w, c, reason, err);
			break;
		}
	}
}

/* Parked connections whose holders took their inbox below half. */
static void resume_parked(struct worker *w)
{
	struct list_node *n = w->parked.head, *next;

	for (; n != NULL; n = next) {
		struct bs_conn *c = of_ready(n);

		next = n->next;
		if (!atomic_load(&c->rx_parked)) {
			unlist(w, c);
			list_as(w, c, LISTED_READY, false);
		}
	}
}

/* A dial's connect deadline, when it has one. False when no timer could
 * be armed (out of memory): the caller fails the attempt. */
static bool arm_connect_deadline(struct worker *w, struct bs_conn *c)
{
	uint32_t ms = c->rd->opts.connect_timeout_ms;

	return ms == 0 || timers_arm(&w->timers, &c->rd->tm, w->now + ms) == 0;
}

/* Registers a new connection on this thread; accepted ones are open. */
static void take_conn(struct worker *w, struct bs_conn *c)
{
	int failed = c->close_errno;

	c->close_errno = 0;
	if (add_conn(w, c) != 0)
		fail_conn(w, c, BS_ESYS, errno);
	else if (failed != 0) /* refused inside bs_dial itself */
		fail_conn(w, c, BS_ECONNREFUSED, 0);
	else if (!instance_running(w->bs))
		close_conn(w, c, BS_ESHUTDOWN, 0);
	else if (!c->dialled)
		life_opened(w->bs, c, &w->rd.wake);
	else if (!arm_connect_deadline(w, c))
		fail_conn(w, c, BS_ENOMEM, 0);
}

/* A reconnecting dial's retry is due: a new socket and connect, unless
 * it was asked to close, or its events wait too many to add more. */
static void retry(struct worker *w, struct bs_conn *c)
{
	struct redial *rd = c->rd;
	int closing, failed = 0, fd;
	bool room;

	atomic_store(&rd->poke, false); /* what a poke asked for happens now */
	pthread_mutex_lock(&c->lock);
	closing = c->close_reason;
	room = redial_room(rd);
	pthread_mutex_unlock(&c->lock);
	if (closing != 0 || !instance_running(w->bs)) {
		close_conn(w, c, closing ? closing : BS_ESHUTDOWN, 0);
		return;
	}
	if (!room) { /* taken events make room; look again later */
		if (timers_arm(&w->timers, &rd->tm, w->now + redial_delay(rd)) != 0)
			close_conn(w, c, BS_ENOMEM, 0);
		return;
	}
	stat_add_shared(&w->bs->dial_retries, 1);
	fd = dial_socket(w->bs, &rd->addr, &failed);
	if (fd < 0) {
		go_down(w, c, BS_ESYS, errno); /* e.g. no descriptor left */
		return;
	}
	life_redial(w->bs, c, fd);
	unlist(w, c);
	c->idle_stamp = w->now;
	atomic_store_explicit(&c->last_active, w->now, memory_order_relaxed);
	list_append(&w->idle, &c->idle_node);
	pthread_mutex_lock(&c->lock);
	if (io_watch(c, true, true) != 0)
		failed = failed ? failed : errno;
	pthread_mutex_unlock(&c->lock);
	if (failed != 0)
		fail_conn(w, c, connect_reason(failed), connect_reason(failed) == BS_ESYS ? failed : 0);
	else if (!arm_connect_deadline(w, c))
		fail_conn(w, c, BS_ENOMEM, 0);
}

/* Timers due: retries, and connects that took too long. */
static void run_timers(struct worker *w)
{
	struct timer *t;

	for (unsigned n = 0; n < 4096 && (t = timers_pop_due(&w->timers, w->now)) != NULL; n++) {
		struct redial *rd = (struct redial *)(void *)((char *)t - offsetof(struct redial, tm));
		struct bs_conn *c = rd->c;

		if (conn_state(c) == CONN_DOWN)
			retry(w, c);
		else if (conn_state(c) == CONN_CONNECTING)
			fail_conn(w, c, BS_ETIMEDOUT, 0);
	}
}

/* Dials that are down and were asked to retry now (bs_redial) or to close
 * (bs_send_close): their timer is due now. */
static void run_pokes(struct worker *w)
{
	for (struct list_node *n = w->down.head, *next; n != NULL; n = next) {
		struct bs_conn *c = of_ready(n);

		next = n->next;
		if (!atomic_exchange(&c->rd->poke, false))
			continue;
		pthread_mutex_lock(&c->lock);
		if (c->close_reason == 0)
			c->rd->retries = 0; /* bs_redial: a fresh run */
		pthread_mutex_unlock(&c->lock);
		if (timers_arm(&w->timers, &c->rd->tm, w->now) != 0)
			close_conn(w, c, BS_ENOMEM, 0);
	}
}

static void adopt_new(struct worker *w)
{
	ck_stack_entry_t *e = io_adopted(&w->io), *next;

	for (; e != NULL; e = next) {
		next = e->next;
		take_conn(w, (struct bs_conn *)(void *)((char *)e -
							offsetof(struct bs_conn, adopt_entry)));
	}
}

static void on_wake(struct worker *w)
{
	io_woken(&w->io);
	adopt_new(w);
	if (atomic_exchange(&w->io.resume, false))
		resume_parked(w);
}

static void on_listener(struct worker *w, struct listener *l)
{
	struct bs_conn *mine[ACCEPT_BATCH];
	unsigned n = 0;

	listener_accept(w->bs, &w->io, &w->ls, l, w->now, mine, &n);
	for (unsigned i = 0; i < n; i++)
		take_conn(w, mine[i]);
}

/* ---- timers and shutdown ------------------------------------------------ */

static void expire_idle(struct worker *w, uint32_t now)
{
	uint32_t timeout = w->bs->cfg.idle_timeout_ms;
	struct list_node *n;

	while ((n = w->idle.head) != NULL) {
		struct bs_conn *c = list_entry(n, struct bs_conn, idle_node);
		uint32_t last = atomic_load_explicit(&c->last_active, memory_order_relaxed);

		if (!ms_elapsed(now, c->idle_stamp, timeout))
			break;
		/* Busy in the library's own lists, or active since stamped. */
		if (c->listed != LISTED_NONE || !ms_elapsed(now, last, timeout)) {
			list_remove(&w->idle, n);
			c->idle_stamp = c->listed != LISTED_NONE ? now : last;
			list_append(&w->idle, n);
			if (w->idle.head == n)
				break;
			continue;
		}
		stat_add(&w->io.st.idle_timeouts, 1);
		close_conn(w, c, BS_ETIMEDOUT, 0);
	}
}

static void scan_holds(struct worker *w, uint32_t now)
{
	struct bs *bs = w->bs;
	bs_id_t ids[8];
	uint32_t ms[8];
	unsigned n;

	if (bs->cfg.hold_warn_ms == 0 || w->io.index != 0 ||
	    !ms_elapsed(now, w->last_scan, HOLD_SCAN_MS))
		return;
	w->last_scan = now;
	n = hold_scan(&bs->holds, now, bs->cfg.hold_warn_ms, ids, ms, 8);
	for (unsigned i = 0; i < n; i++) {
		char id[BS_ID_STRLEN];
		stat_add_shared(&bs->holds_stuck, 1);
		log_msg(&bs->log, BS_LOG_WARN, "connection %s held for %u ms without a receive",
			bs_id_format(ids[i], id), ms[i]);
	}
}

static void close_all(struct worker *w, bool force)
{
	struct list_node *n = w->idle.head, *next;

	for (; n != NULL; n = next) {
		struct bs_conn *c = list_entry(n, struct bs_conn, idle_node);

		next = n->next;
		if (force)
			close_conn(w, c, BS_ESHUTDOWN, 0);
		else
			begin_close(w, c, BS_ESHUTDOWN);
	}
	while (w->down.head != NULL) /* dials between sockets: nothing to send */
		close_conn(w, of_ready(w->down.head), BS_ESHUTDOWN, 0);
}

static int poll_timeout(struct worker *w)
{
	uint32_t due;
	int t = -1;

	if (w->ready.head != NULL)
		return 0;
	if (atomic_load(&w->bs->phase) != PHASE_RUN)
		return 10;
	if (w->ls.paused)
		t = 100;
	if (w->bs->cfg.idle_timeout_ms) {
		uint32_t i = w->bs->cfg.idle_timeout_ms / 4;
		int it = i < 5 ? 5 : i > 1000 ? 1000 : (int)i;
		t = t < 0 || it < t ? it : t;
	}
	if (w->bs->cfg.hold_warn_ms && w->io.index == 0)
		t = t < 0 || HOLD_SCAN_MS < t ? HOLD_SCAN_MS : t;
	if (timers_next(&w->timers, &due)) {
		/* +1: the coarse clock must have passed the deadline. */
		int32_t left = (int32_t)(due - clock_ms()) + 1;
		int tt = left < 0 ? 0 : left;
		t = t < 0 || tt < t ? tt : t;
	}
	return t;
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
		return epoll_wait(w->io.epfd, evs, EPOLL_BATCH, timeout);
	start = clock_ns();
	if (w->poll_ns != 0) {
		do {
			n = epoll_wait(w->io.epfd, evs, EPOLL_BATCH, 0);
			if (n != 0)
				return n;
			sched_yield();
		} while (clock_ns() - start < w->poll_ns);
	}
	n = epoll_wait(w->io.epfd, evs, EPOLL_BATCH, timeout);
	slept = clock_ns() - start;
	if (slept > max)
		w->poll_ns = w->poll_ns / 2 < POLL_START_NS ? 0 : w->poll_ns / 2;
	else if (w->poll_ns < max)
		w->poll_ns = w->poll_ns == 0 ? POLL_START_NS : 2 * w->poll_ns;
	if (w->poll_ns > max)
		w->poll_ns = max;
	return n;
}

static void dispatch(struct worker *w, struct epoll_event *evs, int n)
{
	for (int i = 0; i < n; i++) {
		uintptr_t tag = evs[i].data.u64 & TAG_MASK;
		void *p = (void *)(uintptr_t)(evs[i].data.u64 & ~(uint64_t)TAG_MASK);

		if (tag == TAG_CONN)
			on_conn_event(w, p, evs[i].events);
		else if (tag == TAG_LISTENER)
			on_listener(w, p);
		else
			on_wake(w);
	}
}

/* Acts on the shutdown phase; true when the loop ends. */
static bool follow_phase(struct worker *w)
{
	int phase = atomic_load(&w->bs->phase);

	if (phase >= PHASE_DRAIN && !w->stop_begun) {
		w->stop_begun = true;
		listener_drop_closing(w->bs, &w->io, &w->ls);
		close_all(w, false);
	}
	if (phase >= PHASE_FORCE)
		close_all(w, true);
	if (phase >= PHASE_DRAIN)
		sched_wake_all(&w->bs->sched); /* receivers re-check for the end */
	if (phase >= PHASE_EXIT) {
		adopt_new(w);
		close_all(w, true);
		return true;
	}
	return false;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bs *bs = w->bs;
	struct epoll_event evs[EPOLL_BATCH];
	int n = 0;
	bool done;

	do {
		n = wait_events(w, evs, n > 0);
		w->now = clock_ms();
		atomic_store_explicit(&bs->now_ms, w->now, memory_order_relaxed);
		dispatch(w, evs, n);
		/* After this turn's events: none can name a dropped listener. */
		listener_drop_closing(bs, &w->io, &w->ls);
		run_ready(w);
		if (atomic_exchange(&w->io.poked, false))
			run_pokes(w);
		run_timers(w);
		if (w->ls.paused && ms_elapsed(w->now, w->ls.retry_ms, 100))
			listener_resume(bs, &w->io, &w->ls);
		if (bs->cfg.idle_timeout_ms)
			expire_idle(w, w->now);
		scan_holds(w, w->now);
		atomic_store_explicit(&w->io.st.paused_reads, w->parked.count,
				      memory_order_relaxed);
		done = follow_phase(w);
		sched_wake(&bs->sched, w->rd.wake);
		w->rd.wake = 0;
	} while (!done);
	return NULL;
}

/* ---- setup -------------------------------------------------------------- */

static int worker_init(struct bs *bs, struct worker *w, unsigned index)
{
	int r = io_init(&w->io, index);

	w->bs = bs; /* set even on failure: io_init left its descriptors to free */
	w->now = w->last_scan = clock_ms();
	w->rd.sched = &bs->sched;
	w->rd.backlog = bs->cfg.recv_backlog_bytes;
	w->rd.st = &w->io.st;
	w->rd.undelivered = &bs->undelivered;
	timers_init(&w->timers);
	return r;
}

static void free_worker(struct worker *w)
{
	if (w->bs == NULL)
		return; /* never initialised */
	reader_free(&w->rd);
	timers_free(&w->timers);
	io_free(&w->io);
}

int workers_start(struct bs *bs, unsigned nworkers)
{
	int r = 0;

	bs->workers = calloc(nworkers, sizeof(*bs->workers));
	if (bs->workers == NULL)
		return BS_ENOMEM;
	/* Every I/O part exists (descriptors -1) before any thread runs:
	 * threads wake each other and count the others. */
	for (unsigned i = 0; i < nworkers; i++) {
		bs->workers[i].io.epfd = bs->workers[i].io.wakefd = -1;
		bs->io[i] = &bs->workers[i].io;
	}
	bs->nworkers = nworkers;
	for (unsigned i = 0; i < nworkers && r == 0; i++)
		r = worker_init(bs, &bs->workers[i], i);
	for (unsigned i = 0; i < nworkers && r == 0; i++) {
		if (pthread_create(&bs->workers[i].thread, NULL, worker_main, &bs->workers[i]) != 0)
			r = BS_ESYS;
		bs->workers[i].started = r == 0;
	}
	if (r != 0) {
		atomic_store(&bs->phase, PHASE_EXIT);
		workers_stop(bs);
	}
	return r;
}

void workers_stop(struct bs *bs)
{
	instance_wake_io(bs);
	for (unsigned i = 0; i < bs->nworkers; i++) {
		if (bs->workers[i].started)
			pthread_join(bs->workers[i].thread, NULL);
		bs->workers[i].started = false;
	}
}

void workers_free(struct bs *bs)
{
	for (unsigned i = 0; bs->workers != NULL && i < bs->nworkers; i++)
		free_worker(&bs->workers[i]);
	free(bs->workers);
	bs->workers = NULL;
	bs->nworkers = 0;
}

unsigned workers_live_sockets(struct bs *bs)
{
	unsigned n = 0;

	for (unsigned i = 0; i < bs->nworkers; i++)
		n += atomic_load_explicit(&bs->io[i]->nconns, memory_order_relaxed);
	return n;
}
