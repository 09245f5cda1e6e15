/*
 * The send path, shared by application threads and the I/O thread, always
 * under the connection's lock.
 *
 * Write before queueing: when nothing is queued and the socket is not known
 * to be full, the sending thread writes the frame itself (one writev of
 * header, payload and trailer) and nothing is allocated. Otherwise the frame
 * joins the connection's queue: small copied frames share copy blocks, a
 * zero-copy frame keeps its message reference; the I/O thread writes the
 * queue when EPOLLOUT says the peer has read. The queue is bounded by
 * send_queue_bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "coalesce.h"
#include "framing.h"
#include "worker.h"

#define COPY_BLOCK (16u * 1024u)
/* The first block of an empty queue: most queues hold a few replies. */
#define COPY_FIRST 2048u
/* A queued zero-copy message up to this size is copied into the copy block
 * instead: a memcpy costs less than a node allocated and freed, and many
 * small frames then leave in one iovec. */
#define COPY_SMALL 512u
#define FLUSH_IOV 64

/* ---- the queue ---------------------------------------------------------- */

static void node_free(struct out_node *n)
{
	bs_msg_release(n->msg);
	free(n);
}

static struct out_node *copy_block_new(size_t need, size_t block)
{
	size_t cap = need > block ? need : block;
	struct out_node *n = malloc(sizeof(*n) + cap);

	if (n == NULL)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->cap = cap;
	n->npieces = 1;
	n->piece[0].iov_base = n->data;
	return n;
}

static void queue_append(struct bs_conn *c, struct out_node *n)
{
	n->next = NULL;
	if (c->out_tail)
		c->out_tail->next = n;
	else
		c->out_head = n;
	c->out_tail = n;
}

/* Queues a copy of the frame pieces, skipping the first `skip` bytes that
 * were already written. */
static int queue_copy(struct bs_conn *c, const struct iovec *iov, int cnt, size_t total,
		      size_t payload, size_t skip)
{
	struct out_node *n = c->out_tail;

	if (n == NULL || n->msg != NULL || n->cap - n->size < total || skip) {
		n = copy_block_new(total, c->out_head == NULL ? COPY_FIRST : COPY_BLOCK);
		if (n == NULL)
			return BS_ENOMEM;
		queue_append(c, n);
	}
	for (int i = 0; i < cnt; i++) {
		memcpy(n->data + n->size, iov[i].iov_base, iov[i].iov_len);
		n->size += iov[i].iov_len;
	}
	n->piece[0].iov_len = n->size;
	n->sent += skip;
	n->nmsgs++;
	n->payload += payload;
	return 0;
}

/* Queues a zero-copy frame: header and trailer live in the node. */
static int queue_ref(struct bs_conn *c, bs_msg_t *msg, const uint8_t *hdr, size_t hlen,
		     const void *data, size_t len, size_t tlen, uint8_t trailer, size_t skip)
{
	struct out_node *n = malloc(sizeof(*n));

	if (n == NULL)
		return BS_ENOMEM;
	memset(n, 0, sizeof(*n));
	memcpy(n->hdr, hdr, hlen);
	n->trailer = trailer;
	n->msg = msg;
	n->piece[0] = (struct iovec){ n->hdr, hlen };
	n->piece[1] = (struct iovec){ (void *)data, len };
	n->piece[2] = (struct iovec){ &n->trailer, tlen };
	n->npieces = 3;
	n->size = hlen + len + tlen;
	n->sent = skip;
	n->nmsgs = 1;
	n->payload = len;
	queue_append(c, n);
	return 0;
}

/* Adds the unsent part of n to iov; returns how many entries it used. */
static int node_iov(const struct out_node *n, struct iovec *iov, int room)
{
	size_t skip = n->sent;
	int k = 0;

	for (int i = 0; i < n->npieces && k < room; i++) {
		size_t l = n->piece[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		iov[k].iov_base = (uint8_t *)n->piece[i].iov_base + skip;
		iov[k++].iov_len = l - skip;
		skip = 0;
	}
	return k;
}

static void wake_waiters_locked(struct bs *bs, struct bs_conn *c)
{
	if (!c->send_waiters)
		return;
	c->send_waiters = false;
	pthread_mutex_lock(&bs->send_wait_lock);
	pthread_cond_broadcast(&bs->send_wait_cond);
	pthread_mutex_unlock(&bs->send_wait_lock);
}

/* Removes `n` written bytes from the head of the queue. */
static void consume(struct bs *bs, struct bs_conn *c, size_t n)
{
	uint64_t msgs = 0, payload = 0;

	atomic_store_explicit(&c->out_bytes, c->out_bytes - n, memory_order_relaxed);
	while (n > 0) {
		struct out_node *h = c->out_head;
		size_t rest = h->size - h->sent;
		if (n < rest) {
			h->sent += n;
			break;
		}
		n -= rest;
		msgs += h->nmsgs;
		payload += h->payload;
		c->out_msgs -= h->nmsgs;
		c->out_payload -= h->payload;
		c->out_head = h->next;
		if (c->out_head == NULL)
			c->out_tail = NULL;
		node_free(h);
	}
	if (msgs) {
		atomic_fetch_add_explicit(&bs->msgs_out, msgs, memory_order_relaxed);
		atomic_fetch_add_explicit(&bs->bytes_out, payload, memory_order_relaxed);
	}
}

bool send_flush_locked(struct bs *bs, struct bs_conn *c)
{
	if (atomic_load_explicit(&c->held_back, memory_order_relaxed))
		atomic_store_explicit(&c->held_back, false, memory_order_relaxed);
	while (c->out_head != NULL) {
		struct iovec iov[FLUSH_IOV];
		int cnt = 0;
		ssize_t n;

		for (struct out_node *q = c->out_head; q && cnt < FLUSH_IOV - 2; q = q->next)
			cnt += node_iov(q, iov + cnt, FLUSH_IOV - cnt);
		n = writev(c->fd, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* Full: EPOLLOUT resumes. Failed: the I/O thread sees
			 * the error on the socket and closes. */
			c->out_blocked = true;
			worker_watch_out(c, true);
			return errno == EAGAIN || errno == EWOULDBLOCK;
		}
		atomic_fetch_add_explicit(&bs->send_writes, 1, memory_order_relaxed);
		consume(bs, c, (size_t)n);
	}
	wake_waiters_locked(bs, c);
	if (c->close_requested)
		shutdown(c->fd, SHUT_RDWR); /* the I/O thread closes on EOF */
	return true;
}

void send_drop_locked(struct bs *bs, struct bs_conn *c)
{
	c->unsent_msgs += c->out_msgs;
	c->unsent_bytes += c->out_payload;
	while (c->out_head != NULL) {
		struct out_node *h = c->out_head;
		c->out_head = h->next;
		node_free(h);
	}
	c->out_tail = NULL;
	c->out_msgs = 0;
	c->out_payload = 0;
	atomic_store_explicit(&c->held_back, false, memory_order_relaxed);
	atomic_store_explicit(&c->out_bytes, 0, memory_order_relaxed);
	wake_waiters_locked(bs, c);
}

/* ---- the public calls --------------------------------------------------- */

/* Locks and returns c if id is still its live, sendable id; else NULL with
 * *err set to BS_ESTALE, or BS_ESHUTDOWN once shutdown has begun. */
static struct bs_conn *lock_live(struct bs *bs, bs_id_t id, int *err)
{
	struct bs_conn *c = table_lookup(&bs->table, id);
	uint8_t state;

	*err = BS_ESTALE;
	if (c == NULL)
		goto stale;
	pthread_mutex_lock(&c->lock);
	state = atomic_load_explicit(&c->state, memory_order_relaxed);
	if (atomic_load_explicit(&c->id, memory_order_relaxed) == id &&
	    atomic_load_explicit(&bs->phase, memory_order_relaxed) != PHASE_RUN)
		*err = BS_ESHUTDOWN;
	else if (atomic_load_explicit(&c->id, memory_order_relaxed) == id &&
		 !c->close_requested && (state == CONN_OPEN || state == CONN_CONNECTING))
		return c;
	pthread_mutex_unlock(&c->lock);
stale:
	atomic_fetch_add_explicit(&bs->sends_stale, 1, memory_order_relaxed);
	return NULL;
}

/* Waits, with c locked, until `total` more bytes fit in c's queue. Returns
 * 0, or an error with c unlocked. */
static int wait_room(struct bs *bs, struct bs_conn **cp, bs_id_t id, size_t total,
		     int timeout_ms)
{
	struct timespec deadline;
	struct bs_conn *c = *cp;

	if (timeout_ms > 0) {
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
	}
	/* One frame larger than the bound may go when the queue is empty. */
	while (c->out_bytes != 0 && c->out_bytes + total > bs->cfg.send_queue_bytes) {
		int r = 0, err;

		/* Frames held back for coalescing can go at once. */
		if (atomic_load_explicit(&c->held_back, memory_order_relaxed) && !c->out_blocked &&
		    atomic_load_explicit(&c->state, memory_order_relaxed) == CONN_OPEN) {
			send_flush_locked(bs, c);
			continue;
		}

		if (timeout_ms == 0) {
			pthread_mutex_unlock(&c->lock);
			atomic_fetch_add_explicit(&bs->sends_refused, 1, memory_order_relaxed);
			return BS_EAGAIN;
		}
		c->send_waiters = true;
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_lock(&bs->send_wait_lock);
		if (atomic_load(&c->out_bytes) + total > bs->cfg.send_queue_bytes &&
		    atomic_load(&c->id) == id)
			r = timeout_ms < 0 ? pthread_cond_wait(&bs->send_wait_cond, &bs->send_wait_lock)
					   : pthread_cond_timedwait(&bs->send_wait_cond,
								    &bs->send_wait_lock, &deadline);
		pthread_mutex_unlock(&bs->send_wait_lock);
		c = lock_live(bs, id, &err);
		*cp = c;
		if (c == NULL)
			return err;
		if (r == ETIMEDOUT && c->out_bytes != 0 &&
		    c->out_bytes + total > bs->cfg.send_queue_bytes) {
			pthread_mutex_unlock(&c->lock);
			atomic_fetch_add_explicit(&bs->sends_refused, 1, memory_order_relaxed);
			return BS_ETIMEDOUT;
		}
	}
	return 0;
}

int bs_send(bs_t *bs, bs_id_t id, const void *data, size_t len, bs_msg_t *msg,
	    unsigned flags, int timeout_ms)
{
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	size_t tlen = 0, total, done = 0;
	struct iovec iov[3];
	const bs_framing_t *f;
	struct bs_conn *c;
	bool more;
	int hlen, r;

	if (bs == NULL || (data == NULL && len != 0))
		return BS_EINVAL;
	c = lock_live(bs, id, &r);
	if (c == NULL)
		return r;
	f = &c->ep->framing; /* checked when the endpoint was made */
	hlen = frame_encode_any(f, len, hdr, &tlen);
	if (hlen < 0) {
		r = hlen;
		goto out;
	}
	if (f->kind == BS_FRAMING_DELIM && len != 0 && memchr(data, f->delim, len) != NULL) {
		r = BS_EPROTO; /* it would end the frame early */
		goto out;
	}
	total = (size_t)hlen + len + tlen;
	iov[0] = (struct iovec){ hdr, (size_t)hlen };
	iov[1] = (struct iovec){ (void *)data, len };
	iov[2] = (struct iovec){ (void *)&f->delim, tlen };

	r = wait_room(bs, &c, id, total, timeout_ms);
	if (r != 0)
		return r;
	/* Evaluated for every send: each one answers a message it holds. */
	more = coalesce_hold(bs, c, id, total) || (flags & BS_SEND_MORE);

	if (c->out_head == NULL && !c->out_blocked && !more &&
	    atomic_load_explicit(&c->state, memory_order_relaxed) == CONN_OPEN) {
		ssize_t n;
		do
			n = writev(c->fd, iov, tlen ? 3 : 2);
		while (n < 0 && errno == EINTR);
		if ((size_t)n == total) {
			atomic_fetch_add_explicit(&bs->send_writes, 1, memory_order_relaxed);
			atomic_store_explicit(&c->last_active,
					      atomic_load_explicit(&bs->now_ms, memory_order_relaxed),
					      memory_order_relaxed);
			atomic_fetch_add_explicit(&bs->msgs_out, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&bs->bytes_out, len, memory_order_relaxed);
			pthread_mutex_unlock(&c->lock);
			bs_msg_release(msg);
			return 0;
		}
		/* Short or failed: queue the rest; EPOLLOUT (or the error)
		 * reaches the I/O thread, which carries on. */
		done = n > 0 ? (size_t)n : 0;
		c->out_blocked = true;
		worker_watch_out(c, true);
	}
	if (msg != NULL && len > COPY_SMALL) {
		r = queue_ref(c, msg, hdr, (size_t)hlen, data, len, tlen, f->delim, done);
		msg = NULL; /* the queue holds the reference now */
	} else {
		r = queue_copy(c, iov, tlen ? 3 : 2, total, len, done);
	}
	if (r != 0)
		goto out;
	c->out_msgs++;
	c->out_payload += len;
	atomic_store_explicit(&c->out_bytes, c->out_bytes + total - done, memory_order_relaxed);
	if (!more && !c->out_blocked &&
	    atomic_load_explicit(&c->state, memory_order_relaxed) == CONN_OPEN)
		send_flush_locked(bs, c);
	atomic_store_explicit(&c->last_active,
			      atomic_load_explicit(&bs->now_ms, memory_order_relaxed),
			      memory_order_relaxed);
	pthread_mutex_unlock(&c->lock);
	bs_msg_release(msg); /* copied: the caller's reference is done with */
	return 0;
out:
	pthread_mutex_unlock(&c->lock);
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

int bs_flush(bs_t *bs, bs_id_t id)
{
	struct bs_conn *c;
	int r;

	if (bs == NULL)
		return BS_EINVAL;
	c = lock_live(bs, id, &r);
	if (c == NULL)
		return r;
	if (!c->out_blocked && atomic_load_explicit(&c->state, memory_order_relaxed) == CONN_OPEN)
		send_flush_locked(bs, c);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int bs_send_close(bs_t *bs, bs_id_t id)
{
	struct bs_conn *c;
	int r;

	if (bs == NULL)
		return BS_EINVAL;
	c = lock_live(bs, id, &r);
	if (c == NULL)
		return r;
	c->close_requested = true;
	c->close_reason = BS_ECLOSED;
	/* Queued frames go first; whoever empties the queue shuts the socket
	 * down and the I/O thread closes it on EOF. */
	if (atomic_load_explicit(&c->state, memory_order_relaxed) == CONN_OPEN && !c->out_blocked)
		send_flush_locked(bs, c);
	pthread_mutex_unlock(&c->lock);
	return 0;
}
