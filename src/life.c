/* A connection's life. See life.h. */
#include "life.h"

#include <sys/socket.h>
#include <unistd.h>

#include "reader.h"
#include "stat.h"

void life_setup(struct bs *bs, struct bs_conn *c, int fd, const bs_framing_t *f)
{
	c->fd = fd;
	c->framing = f;
	c->slow = (uint8_t)bs->cfg.slow_policy;
}

void life_opened(struct bs *bs, struct bs_conn *c, unsigned *wake)
{
	pthread_mutex_lock(&c->lock);
	/* A close asked for while connecting takes effect now, after the
	 * sends queued before it. */
	atomic_store_explicit(&c->state, c->close_reason ? CONN_CLOSING : CONN_OPEN,
			      memory_order_relaxed);
	c->out_blocked = false;
	(void)life_flush(bs, c); /* sends queued while connecting; a failure
	                            reaches the I/O thread as a socket error */
	pthread_mutex_unlock(&c->lock);
	sched_new(&bs->sched, c, wake);
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

int life_flush(struct bs *bs, struct bs_conn *c)
{
	enum conn_state st = conn_state(c);
	struct outq_count done = { 0 };
	enum outq_result r;

	if ((st != CONN_OPEN && st != CONN_CLOSING) || c->out_blocked)
		return 0;
	r = outq_write(&c->out, c->fd, &done);
	if (done.writes) {
		stat_add_shared(&bs->send_writes, done.writes);
		atomic_store_explicit(&c->last_active,
				      atomic_load_explicit(&bs->now_ms, memory_order_relaxed),
				      memory_order_relaxed);
	}
	if (done.msgs) {
		stat_add_shared(&bs->msgs_out, done.msgs);
		stat_add_shared(&bs->bytes_out, done.payload);
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

	if (st != CONN_OPEN && st != CONN_CONNECTING)
		return;
	if (c->close_reason == 0)
		c->close_reason = reason;
	if (st == CONN_CONNECTING)
		return; /* life_opened closes it once its queue is sent */
	atomic_store_explicit(&c->state, CONN_CLOSING, memory_order_relaxed);
	(void)life_flush(bs, c); /* a failure closes through the I/O thread */
}

void life_abort(struct bs *bs, struct bs_conn *c, int reason)
{
	struct outq_count dropped = { 0 };

	outq_drop(&c->out, &dropped);
	c->unsent_msgs += dropped.msgs;
	c->unsent_bytes += dropped.payload;
	wake_send_waiters(bs, c);
	c->close_reason = reason;
	atomic_store_explicit(&c->state, CONN_CLOSING, memory_order_relaxed);
	shutdown(c->fd, SHUT_RDWR); /* the I/O thread closes on EOF */
}

void life_close(struct bs *bs, struct bs_conn *c, int reason, int err, unsigned *wake)
{
	struct outq_count dropped = { 0 };
	struct io *io = c->io;

	pthread_mutex_lock(&c->lock);
	/* A close the application or shutdown asked for keeps its reason
	 * when it completes by EOF or by force. */
	if ((reason == BS_EOF || reason == BS_ESHUTDOWN) && c->close_reason != 0)
		reason = c->close_reason;
	atomic_store_explicit(&c->state, CONN_CLOSED, memory_order_relaxed);
	outq_drop(&c->out, &dropped);
	c->unsent_msgs += dropped.msgs;
	c->unsent_bytes += dropped.payload;
	wake_send_waiters(bs, c);
	if (c->fd >= 0)
		close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
	c->close_reason = reason;
	c->close_errno = err;
	pthread_mutex_unlock(&c->lock);

	reader_drop_rx(c);
	stat_add(&io->st.closed, 1);
	stat_add(&io->st.unsent_msgs, c->unsent_msgs);
	atomic_store_explicit(&io->nconns, io->nconns - 1, memory_order_relaxed);
	if (sched_closed(&bs->sched, c, wake))
		life_finish(bs, c);
}

void life_finish(struct bs *bs, struct bs_conn *c)
{
	table_free(&bs->table, c);
}
