/* A connection's life. See life.h. */
#include "life.h"

#include <sys/socket.h>
#include <unistd.h>

#include "inflight.h"
#include "reader.h"
#include "redial.h"
#include "stat.h"

void life_setup(struct bs *bs, struct bs_conn *c, int fd, const bs_framing_t *f)
{
	c->fd = fd;
	c->framing = f;
	c->slow = (uint8_t)bs->cfg.slow_policy;
}

/* Queues a dial's event for the open line (sched_event follows, unlocked).
 * With c locked. */
static bool post(struct bs *bs, struct bs_conn *c, const struct redial_event *e)
{
	if (!bs->cfg.open_events || !redial_post(c->rd, e))
		return false;
	sched_event_due(c, true);
	return true;
}

void life_opened(struct bs *bs, struct bs_conn *c, unsigned *wake)
{
	struct redial *rd = c->rd;
	bool posted = false;

	pthread_mutex_lock(&c->lock);
	/* A close asked for while connecting takes effect now, after the
	 * sends queued before it. */
	atomic_store_explicit(&c->state, c->close_reason ? CONN_CLOSING : CONN_OPEN,
			      memory_order_relaxed);
	c->out_blocked = false;
	if (rd != NULL) {
		struct redial_event e = { .kind = rd->up_once ? BS_OPEN_AGAIN : BS_OPEN_FIRST,
					  .attempt = rd->retries };

		inflight_reset(&rd->fl); /* a new byte stream */
		if (rd->up_once) {
			rd->reconnects++;
			stat_add_shared(&bs->reconnects, 1);
		}
		rd->up_once = true;
		/* The new socket's frames carry a new epoch, delivered once
		 * this event is taken. */
		if (bs->cfg.open_events) {
			e.epoch = ++c->sock_epoch;
			posted = post(bs, c, &e);
		}
	}
	(void)life_flush(bs, c); /* sends queued while connecting or down; a
	                            failure reaches the I/O thread as a socket
	                            error */
	pthread_mutex_unlock(&c->lock);
	if (rd == NULL)
		sched_new(&bs->sched, c, wake);
	else if (posted)
		sched_event(&bs->sched, c, wake);
}

static void wake_send_waiters(struct bs *bs, struct bs_conn *c)
{
	if (!c->send_waiters)
		return;
	c->send_waiters = false;
	pthread_mutex_lock(&bs->send_wait_lock);
	pthread_cond_broadcast(&bs->send_wait_cond);
	pthread_mutex_unlock(&bs->send_wait_lock);
}

/* Messages found written: the connection's count and the instance's. */
static void count_written(struct bs *bs, struct bs_conn *c, const struct outq_count *done)
{
	c->written_msgs += done->msgs;
	stat_add_shared(&bs->msgs_out, done->msgs);
	stat_add_shared(&bs->bytes_out, done->payload);
}

int life_flush(struct bs *bs, struct bs_conn *c)
{
	enum conn_state st = conn_state(c);
	struct outq_count done = { 0 };
	enum outq_result r;

	if ((st != CONN_OPEN && st != CONN_CLOSING) || c->out_blocked)
		return 0;
	r = outq_write(&c->out, c->fd, &done, c->rd ? &c->rd->fl : NULL);
	if (done.writes) {
		stat_add_shared(&bs->send_writes, done.writes);
		atomic_store_explicit(&c->last_active,
				      atomic_load_explicit(&bs->now_ms, memory_order_relaxed),
				      memory_order_relaxed);
	}
	if (done.msgs) {
		count_written(bs, c, &done);
		wake_send_waiters(bs, c);
	}
	if (r != OUTQ_EMPTY) {
		/* Full: EPOLLOUT resumes. Failed: the I/O thread sees the
		 * error on the socket and closes. */
		c->out_blocked = true;
		if (!c->out_armed)
			(void)io_watch(c, false, true);
		return r == OUTQ_FULL ? 0 : BS_ESYS;
	}
	if (st == CONN_CLOSING)
		shutdown(c->fd, SHUT_RDWR); /* the I/O thread closes on EOF */
	return 0;
}

void life_request_close(struct bs *bs, struct bs_conn *c, int reason)
{
	enum conn_state st = conn_state(c);

	if (st != CONN_OPEN && st != CONN_CONNECTING && st != CONN_DOWN)
		return;
	if (c->close_reason == 0)
		c->close_reason = reason;
	if (st == CONN_CONNECTING)
		return; /* life_opened closes it once its queue is sent */
	if (st == CONN_DOWN) {
		/* No socket to send on: its I/O thread closes it now. */
		atomic_store(&c->rd->poke, true);
		atomic_store(&c->io->poked, true);
		io_wake(c->io);
		return;
	}
	atomic_store_explicit(&c->state, CONN_CLOSING, memory_order_relaxed);
	(void)life_flush(bs, c); /* a failure closes through the I/O thread */
}

void life_abort(struct bs *bs, struct bs_conn *c, int reason)
{
	struct outq_count dropped = { 0 }, written = { 0 };

	if (c->rd == NULL || !c->rd->opts.hand_back) {
		/* Frames of the front node that the socket took whole were
		 * written, not discarded. */
		outq_rewind(&c->out, c->framing, &written);
		count_written(bs, c, &written);
		outq_drop(&c->out, &dropped);
		c->unsent_msgs += dropped.msgs;
		c->unsent_bytes += dropped.payload;
	}
	wake_send_waiters(bs, c);
	c->close_reason = reason;
	atomic_store_explicit(&c->state, CONN_CLOSING, memory_order_relaxed);
	shutdown(c->fd, SHUT_RDWR); /* the I/O thread closes on EOF */
}

/*
 * The end of a socket, under c's lock: the half-written frame is rewound,
 * the frames found written whole are counted, and when the socket broke
 * a dial learns how many of the messages written to it may be lost.
 * Returns that count (0 when the socket never carried anything) and
 * closes the socket.
 */
static uint64_t end_socket(struct bs *bs, struct bs_conn *c, bool broke)
{
	struct outq_count written = { 0 };
	struct redial *rd = c->rd;
	enum conn_state st = conn_state(c);
	uint64_t lost = 0;

	outq_rewind(&c->out, c->framing, &written);
	count_written(bs, c, &written);
	if (broke && rd != NULL && (st == CONN_OPEN || st == CONN_CLOSING) && c->fd >= 0) {
		inflight_completed(&rd->fl, written.msgs);
		lost = inflight_maybe_lost(&rd->fl,
					   inflight_unacked_at_break(c->fd, rd->addr.sa.ss_family));
		inflight_reset(&rd->fl);
		rd->maybe_lost += lost;
		stat_add_shared(&bs->msgs_maybe_lost, lost);
	}
	if (c->fd >= 0)
		close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
	c->out_blocked = c->out_armed = false;
	return lost;
}

void life_down(struct bs *bs, struct bs_conn *c, int reason, int err, uint32_t attempt,
	       uint32_t delay, unsigned *wake)
{
	struct redial_event e = { .kind = BS_OPEN_DOWN, .reason = reason, .err = err,
				  .attempt = attempt, .delay_ms = delay };
	bool had_socket, posted;
	struct io *io = c->io;

	pthread_mutex_lock(&c->lock);
	had_socket = c->fd >= 0;
	e.maybe_lost = end_socket(bs, c, true);
	atomic_store_explicit(&c->state, CONN_DOWN, memory_order_relaxed);
	posted = post(bs, c, &e);
	pthread_mutex_unlock(&c->lock);

	reader_drop_rx(c); /* a frame cut off by the break is lost with it */
	c->hup = false;
	atomic_store(&c->rx_parked, false); /* off the parked list already */
	if (had_socket)
		atomic_store_explicit(&io->nconns, io->nconns - 1, memory_order_relaxed);
	if (posted)
		sched_event(&bs->sched, c, wake);
}

void life_redial(struct bs *bs, struct bs_conn *c, int fd)
{
	(void)bs;
	pthread_mutex_lock(&c->lock);
	c->fd = fd;
	atomic_store_explicit(&c->state, CONN_CONNECTING, memory_order_relaxed);
	pthread_mutex_unlock(&c->lock);
	atomic_store_explicit(&c->io->nconns, c->io->nconns + 1, memory_order_relaxed);
}

/* What is left queued at the end: handed back, or dropped and counted.
 * With c locked, its queue rewound. */
static void settle_queue(struct bs *bs, struct bs_conn *c)
{
	struct redial *rd = c->rd;
	struct outq_count dropped = { 0 };

	if (rd != NULL && rd->opts.hand_back && bs->cfg.close_events && !outq_empty(&c->out) &&
	    outq_hand_back(&c->out, c->framing, conn_id(c),
			   atomic_load_explicit(&c->user, memory_order_relaxed), &rd->returned,
			   &rd->nreturned) == 0) {
		stat_add_shared(&bs->msgs_returned, rd->nreturned);
		return;
	}
	outq_drop(&c->out, &dropped); /* also when out of memory to hand back */
	c->unsent_msgs += dropped.msgs;
	c->unsent_bytes += dropped.payload;
}

void life_close(struct bs *bs, struct bs_conn *c, int reason, int err, unsigned *wake)
{
	struct io *io = c->io;
	bool had_socket, broke;

	pthread_mutex_lock(&c->lock);
	/* The socket broke, rather than closed as asked (a close asked for
	 * ends with our own shutdown's EOF; a local reason is no break):
	 * what was written to it may be lost. */
	broke = reason == BS_EOF ? c->close_reason == 0
		: reason == BS_ESYS || reason == BS_EPROTO || reason == BS_EMSGSIZE ||
			  reason == BS_ENOMEM;
	/* A close the application or shutdown asked for keeps its reason
	 * when it completes by EOF or by force. */
	if ((reason == BS_EOF || reason == BS_ESHUTDOWN) && c->close_reason != 0)
		reason = c->close_reason;
	had_socket = c->fd >= 0;
	(void)end_socket(bs, c, broke);
	atomic_store_explicit(&c->state, CONN_CLOSED, memory_order_relaxed);
	settle_queue(bs, c);
	wake_send_waiters(bs, c);
	c->close_reason = reason;
	c->close_errno = err;
	pthread_mutex_unlock(&c->lock);

	reader_drop_rx(c);
	stat_add(&io->st.closed, 1);
	stat_add(&io->st.unsent_msgs, c->unsent_msgs);
	if (had_socket)
		atomic_store_explicit(&io->nconns, io->nconns - 1, memory_order_relaxed);
	if (sched_closed(&bs->sched, c, wake))
		life_finish(bs, c);
}

void life_finish(struct bs *bs, struct bs_conn *c)
{
	table_free(&bs->table, c);
}
