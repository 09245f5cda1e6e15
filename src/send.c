/*
 * bs_send*: framing a message and writing or queueing it.
 *
 * Write before queueing: when nothing is queued and the socket is not
 * known to be full, the sending thread writes the frame itself (one writev
 * of header, payload and trailer) and nothing is allocated. Otherwise the
 * frame joins the connection's queue (outq.h), bounded by send_queue_bytes;
 * what happens when it is full is the connection's slow-consumer policy.
 *
 * Coalescing follows holds: a thread that holds the connection (it was
 * given one of its events and has not called bs_recv_* since) only queues,
 * and its next receive writes all its answers in one system call; sends
 * from other threads are written at once, unless BS_SEND_MORE defers them
 * for as long as the sender's receives find work (recv.c says when they
 * go), so that a fan-out writes each subscriber many deliveries at once.
 * The 64 KiB bound and a full deferred list write at once either way.
 *
 * Any thread. Every step on a connection is under its lock.
 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "clock.h"
#include "framing.h"
#include "inflight.h"
#include "life.h"
#include "recv.h"
#include "redial.h"
#include "stat.h"

/* A holder's queued answers are written at the latest at this many bytes. */
#define HOLD_FLUSH_BYTES (64u * 1024u)

/* Locks and returns c if id is still its live id; else NULL with *err set
 * to BS_ESTALE, BS_EDOWN (to queue: a dial with no connection up that
 * refuses sends then), or BS_ESHUTDOWN once shutdown has begun. */
static struct bs_conn *lock_conn(struct bs *bs, bs_id_t id, bool queue, int *err)
{
	struct bs_conn *c = table_lock(&bs->table, id);
	enum conn_state st;

	*err = BS_ESTALE;
	if (c == NULL)
		goto stale;
	st = conn_state(c);
	if (!instance_running(bs))
		*err = BS_ESHUTDOWN;
	else if (st == CONN_OPEN)
		return c;
	else if ((st == CONN_CONNECTING || st == CONN_DOWN) && c->close_reason == 0) {
		if (!queue || c->rd == NULL || c->rd->opts.queue_while_down)
			return c; /* queued until a connection is up */
		*err = BS_EDOWN;
	}
	pthread_mutex_unlock(&c->lock);
stale:
	if (*err == BS_ESTALE)
		stat_add_shared(&bs->sends_stale, 1);
	return NULL;
}

/* lock_conn for a send. */
static struct bs_conn *lock_live(struct bs *bs, bs_id_t id, int *err)
{
	return lock_conn(bs, id, true, err);
}

static bool room(struct bs *bs, struct bs_conn *c, size_t total)
{
	/* One frame larger than the bound may go when the queue is empty. */
	return outq_empty(&c->out) || c->out.bytes + total <= bs->cfg.send_queue_bytes;
}

/* Waits, with c locked, until `total` more bytes fit in c's queue, or
 * applies c's policy. Returns 0 with c locked, or an error with c unlocked. */
static int make_room(struct bs *bs, struct bs_conn **cp, bs_id_t id, size_t total,
		     size_t payload, int timeout_ms)
{
	struct timespec deadline;
	struct bs_conn *c = *cp;
	int r = 0, err;

	if (timeout_ms > 0)
		deadline = deadline_after_ms(timeout_ms);
	while (!room(bs, c, total)) {
		/* Frames that only wait for their hold to end can go now. */
		if (!c->out_blocked && conn_state(c) == CONN_OPEN) {
			if (life_flush(bs, c) != 0) {
				pthread_mutex_unlock(&c->lock);
				return BS_ESTALE; /* the socket failed: it is closing */
			}
			if (room(bs, c, total))
				break;
		}
		if (c->slow == BS_SLOW_DROP) {
			c->dropped_msgs++;
			c->dropped_bytes += payload;
			pthread_mutex_unlock(&c->lock);
			stat_add_shared(&bs->msgs_dropped, 1);
			return BS_EDROPPED;
		}
		if (c->slow == BS_SLOW_DISCONNECT) {
			life_abort(bs, c, BS_ESLOW);
			pthread_mutex_unlock(&c->lock);
			stat_add_shared(&bs->slow_disconnects, 1);
			return BS_ESLOW;
		}
		if (timeout_ms == 0 || r == ETIMEDOUT) {
			pthread_mutex_unlock(&c->lock);
			stat_add_shared(&bs->sends_refused, 1);
			return timeout_ms == 0 ? BS_EAGAIN : BS_ETIMEDOUT;
		}
		c->send_waiters = true;
		pthread_mutex_unlock(&c->lock);
		/* No frames stay deferred while this thread sleeps. */
		recv_flush_more(bs);
		pthread_mutex_lock(&bs->send_wait_lock);
		c = table_lookup(&bs->table, id);
		if (c != NULL && atomic_load(&c->out.bytes) + total > bs->cfg.send_queue_bytes)
			r = timeout_ms < 0 ? pthread_cond_wait(&bs->send_wait_cond, &bs->send_wait_lock)
					   : pthread_cond_timedwait(&bs->send_wait_cond,
								    &bs->send_wait_lock, &deadline);
		pthread_mutex_unlock(&bs->send_wait_lock);
		c = lock_live(bs, id, &err);
		*cp = c;
		if (c == NULL)
			return err;
	}
	return 0;
}

/* Remembers that this thread (me) queued BS_SEND_MORE frames to c; the
 * first of a run starts the clock of its bounds (recv.c). A connection
 * already listed (by this thread or another) is written with that list.
 * False when me's list is full: the caller writes at once. */
static bool defer_more(struct bs *bs, struct holder *me, struct bs_conn *c, bs_id_t id)
{
	if (c->more_listed)
		return true;
	if (!hold_more_room(me, bs->cfg.max_connections))
		return false;
	if (me->nmore == 0) {
		me->more_events = 0;
		me->more_since = clock_ns();
	}
	c->more_listed = true;
	me->more[me->nmore++] = id;
	return true;
}

/* A message framed for one framing: header, payload, trailer. A fan-out
 * frames once and sends the same frame to every id of that framing. */
struct frame {
	const bs_framing_t *f;  /* what it was framed for */
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	struct iovec iov[3];
	int cnt;
	size_t total, payload;
	/* A fan-out's whole frame in one shared buffer (iov[0] is all of
	 * it), or NULL; a queue that keeps the frame takes one of the
	 * flat_refs references the sender holds for the ids still to go. */
	bs_msg_t *flat;
	long flat_refs;
};

/* Frames data[0..len) for f. 0, BS_EMSGSIZE or BS_EPROTO. */
static int frame_for(struct frame *fr, const bs_framing_t *f, const void *data, size_t len)
{
	size_t tlen = 0;
	int hlen = frame_encode_any(f, len, fr->hdr, &tlen);

	if (hlen < 0)
		return hlen;
	if (f->kind == BS_FRAMING_DELIM && len != 0 && memchr(data, f->delim, len) != NULL)
		return BS_EPROTO; /* it would end the frame early */
	fr->f = f;
	fr->payload = len;
	fr->total = (size_t)hlen + len + tlen;
	fr->iov[0] = (struct iovec){ fr->hdr, (size_t)hlen };
	fr->iov[1] = (struct iovec){ (void *)data, len };
	fr->iov[2] = (struct iovec){ (void *)&f->delim, tlen };
	fr->cnt = tlen ? 3 : 2;
	fr->flat = NULL;
	fr->flat_refs = 0;
	return 0;
}

/*
 * Writes or queues a framed message to c (locked, live). When msg is not
 * NULL the queue may take over *msg (then NULL) instead of copying. me is
 * the calling thread's record. Returns 0 or an error; c is unlocked either
 * way.
 */
static int send_framed(struct bs *bs, struct holder *me, struct bs_conn *c, bs_id_t id,
		       struct frame *fr, bs_msg_t **msg, unsigned flags, int timeout_ms)
{
	size_t done = 0;
	bool holder, defer;
	int r;

	r = make_room(bs, &c, id, fr->total, fr->payload, timeout_ms);
	if (r != 0)
		return r;
	holder = atomic_load_explicit(&c->holder, memory_order_relaxed) == me;
	defer = holder || ((flags & BS_SEND_MORE) && defer_more(bs, me, c, id));

	if (outq_empty(&c->out) && !c->out_blocked && !defer && conn_state(c) == CONN_OPEN) {
		ssize_t n;
		do
			n = writev(c->fd, fr->iov, fr->cnt);
		while (n < 0 && errno == EINTR);
		if (c->rd != NULL && n > 0)
			inflight_wrote(&c->rd->fl, c->fd, (uint64_t)n, (size_t)n == fr->total);
		if ((size_t)n == fr->total) {
			c->written_msgs++;
			atomic_store_explicit(&c->last_active,
					      atomic_load_explicit(&bs->now_ms, memory_order_relaxed),
					      memory_order_relaxed);
			pthread_mutex_unlock(&c->lock);
			stat_add_shared(&bs->send_writes, 1);
			stat_add_shared(&bs->msgs_out, 1);
			stat_add_shared(&bs->bytes_out, fr->payload);
			return 0;
		}
		/* Short or failed: queue the rest; EPOLLOUT (or the error)
		 * reaches the I/O thread, which carries on. */
		done = n > 0 ? (size_t)n : 0;
		c->out_blocked = true;
		if (!c->out_armed)
			(void)io_watch(c, false, true);
	}
	if (fr->flat != NULL) {
		r = outq_push_ref(&c->out, fr->flat, fr->total, fr->payload, done);
		fr->flat_refs -= r == 0;
	} else {
		r = outq_push(&c->out, fr->iov, fr->cnt, fr->payload, msg, done);
	}
	if (r == 0) {
		if (holder)
			me->h[c->hold_index].sent = true;
		if (!defer || c->out.bytes >= HOLD_FLUSH_BYTES)
			r = life_flush(bs, c) == 0 ? 0 : BS_ESTALE;
		atomic_store_explicit(&c->last_active,
				      atomic_load_explicit(&bs->now_ms, memory_order_relaxed),
				      memory_order_relaxed);
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

int bs_send(bs_t *bs, bs_id_t id, const void *data, size_t len, bs_msg_t *msg,
	    unsigned flags, int timeout_ms)
{
	struct bs_conn *c;
	struct frame fr;
	int r;

	if (bs == NULL || (data == NULL && len != 0))
		return BS_EINVAL;
	if ((flags & BS_SEND_MORE) && !recv_enlist_sender(bs))
		flags &= ~BS_SEND_MORE;
	c = lock_live(bs, id, &r);
	if (c == NULL)
		return r;
	r = frame_for(&fr, c->framing, data, len); /* checked when it was interned */
	if (r != 0) {
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	r = send_framed(bs, hold_self(), c, id, &fr, msg != NULL ? &msg : NULL, flags,
			timeout_ms);
	/* Written or copied: done with it. On any error, dropped by the
	 * policy included, the caller still owns it (the header says so). */
	if (r == 0)
		bs_msg_release(msg);
	return r;
}

int bs_send_data(bs_t *bs, bs_id_t id, const void *data, size_t len)
{
	return bs_send(bs, id, data, len, NULL, 0, 0);
}

int bs_send_msg(bs_t *bs, bs_id_t id, bs_msg_t *msg, const void *data, size_t len)
{
	if (msg == NULL)
		return BS_EINVAL;
	return bs_send(bs, id, data, len, msg, 0, 0);
}

/*
 * A fan-out frames the message once per framing (the ids of one listener
 * share theirs) and sends that one frame to every id. A frame up to
 * FANOUT_FLAT_MAX is laid out whole in one shared buffer, and each queue
 * that keeps it holds only a reference in a reference block (16 bytes,
 * where a copy would write every byte of the frame into every queue's
 * memory). A larger frame keeps the caller's payload by reference, with
 * the header in a node of its own per queue: above this size, copying the
 * message once costs more than a node per subscriber.
 */
#define FANOUT_FLAT_MAX (16u * 1024u)

/* Lays fr out whole in a new shared buffer holding `refs` references for
 * the queues to come. 0 or BS_ENOMEM. */
static int frame_flatten(struct frame *fr, long refs)
{
	bs_msg_t *m = msg_new(fr->total);
	size_t at = 0;

	if (m == NULL)
		return BS_ENOMEM;
	for (int k = 0; k < fr->cnt; k++) {
		memcpy(m->data + at, fr->iov[k].iov_base, fr->iov[k].iov_len);
		at += fr->iov[k].iov_len;
	}
	msg_ref_add(m, refs - 1);
	fr->iov[0] = (struct iovec){ m->data, fr->total };
	fr->cnt = 1;
	fr->flat = m;
	fr->flat_refs = refs;
	return 0;
}

/* Gives back the references no queue took. */
static void frame_settle(struct frame *fr)
{
	if (fr->flat != NULL && fr->flat_refs > 0)
		msg_release_n(fr->flat, fr->flat_refs);
	fr->flat = NULL;
	fr->f = NULL;
}

int bs_send_many(bs_t *bs, const bs_id_t *ids, size_t n, bs_msg_t *msg, const void *data,
		 size_t len, unsigned flags, int *results)
{
	struct holder *me;
	struct frame fr = { .f = NULL, .flat = NULL };
	bs_msg_t *ref = NULL;     /* a reference for the next queue to keep */
	int ok = 0;

	if (bs == NULL || (n != 0 && ids == NULL) || msg == NULL || (data == NULL && len != 0))
		return BS_EINVAL;
	if ((flags & BS_SEND_MORE) && !recv_enlist_sender(bs))
		flags &= ~BS_SEND_MORE;
	me = hold_self();
	for (size_t i = 0; i < n; i++) {
		int r;
		struct bs_conn *c = lock_live(bs, ids[i], &r);

		if (c == NULL)
			goto result;
		if (c->framing != fr.f) {
			frame_settle(&fr);
			r = frame_for(&fr, c->framing, data, len);
			if (r == 0 && fr.total <= FANOUT_FLAT_MAX)
				r = frame_flatten(&fr, (long)(n - i));
			if (r != 0) {
				fr.f = NULL;
				pthread_mutex_unlock(&c->lock);
				goto result;
			}
		}
		if (fr.flat == NULL && ref == NULL)
			ref = bs_msg_ref(msg);
		r = send_framed(bs, me, c, ids[i], &fr, fr.flat == NULL ? &ref : NULL, flags, 0);
result:
		if (r == 0)
			ok++;
		if (results != NULL)
			results[i] = r;
	}
	frame_settle(&fr);
	bs_msg_release(ref); /* NULL when the last queue took it */
	bs_msg_release(msg);
	return ok;
}

int bs_flush(bs_t *bs, bs_id_t id)
{
	struct bs_conn *c;
	int r;

	if (bs == NULL)
		return BS_EINVAL;
	c = lock_conn(bs, id, false, &r);
	if (c == NULL)
		return r;
	r = life_flush(bs, c) == 0 ? 0 : BS_ESYS;
	pthread_mutex_unlock(&c->lock);
	return r;
}

int bs_send_close(bs_t *bs, bs_id_t id)
{
	struct bs_conn *c;
	int r;

	if (bs == NULL)
		return BS_EINVAL;
	c = lock_conn(bs, id, false, &r);
	if (c == NULL)
		return r;
	/* Queued frames go first; whoever empties the queue shuts the socket
	 * down and the I/O thread closes it on EOF. */
	life_request_close(bs, c, BS_ECLOSED);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int bs_conn_set_slow(bs_t *bs, bs_id_t id, int policy)
{
	struct bs_conn *c;

	if (bs == NULL || policy < BS_SLOW_REFUSE || policy > BS_SLOW_DISCONNECT)
		return BS_EINVAL;
	c = table_lock(&bs->table, id);
	if (c == NULL)
		return BS_ESTALE;
	c->slow = (uint8_t)policy;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int bs_conn_info(bs_t *bs, bs_id_t id, bs_conn_info_t *out)
{
	struct bs_conn *c;

	if (bs == NULL || out == NULL)
		return BS_EINVAL;
	c = table_lock(&bs->table, id);
	if (c == NULL)
		return BS_ESTALE;
	*out = (bs_conn_info_t){
		.queued_bytes = c->out.bytes,
		.queued_msgs = c->out.msgs,
		.dropped_msgs = c->dropped_msgs,
		.dropped_bytes = c->dropped_bytes,
		.unread_bytes = atomic_load(&c->in.bytes),
		.slow = c->slow,
		.reading_paused = atomic_load(&c->rx_parked),
		.connected = conn_state(c) == CONN_OPEN || conn_state(c) == CONN_CLOSING,
		.written_msgs = c->written_msgs,
		.reconnects = c->rd ? c->rd->reconnects : 0,
	};
	pthread_mutex_unlock(&c->lock);
	return 0;
}
