/* A connection's outgoing queue. See outq.h. */
#include "outq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"
#include "msg.h"

#define COPY_BLOCK (16u * 1024u)
/* The first block of an empty queue: most queues hold a few replies. */
#define COPY_FIRST 2048u
/* A zero-copy payload up to this size is copied into the copy block
 * instead: a memcpy costs less than a node allocated and freed, and many
 * small frames then leave in one iovec. */
#define COPY_SMALL 512u
/* Pieces one writev takes. A frame sent by reference is two (header and
 * payload): at 64 a fan-out of 1 KiB messages wrote a subscriber's queue
 * 22 deliveries at a time, at 256 about 53, with 1.1-1.2x the deliveries/s
 * (4 KiB of stack; the kernel takes up to 1024). */
#define WRITE_IOV 256

/* A queued byte string: up to three pieces (header, payload, trailer), or a
 * copy block that many small frames append to. */
struct out_node {
	struct out_node *next;
	bs_msg_t *msg;          /* released once written; NULL for copy blocks */
	size_t sent;            /* bytes of the node already written */
	size_t start;           /* frames before this offset were counted
	                           written by a rewind (outq_rewind) */
	size_t size;            /* total bytes of the node */
	uint32_t nmsgs;         /* messages that end inside this node */
	size_t payload;         /* their payload bytes */
	uint8_t npieces;
	struct iovec piece[3];
	size_t cap;             /* copy blocks: capacity of data[] */
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	uint8_t trailer;
	_Alignas(16) uint8_t data[];
};

static void node_free(struct out_node *n)
{
	bs_msg_release(n->msg);
	free(n);
}

static void append(struct outq *q, struct out_node *n)
{
	n->next = NULL;
	if (q->tail)
		q->tail->next = n;
	else
		q->head = n;
	q->tail = n;
}

static struct out_node *copy_block(struct outq *q, size_t need, size_t skip)
{
	struct out_node *n = q->tail;
	size_t cap;

	/* A frame partly written starts a block of its own: `sent` counts
	 * from the start of a node. */
	if (n != NULL && n->msg == NULL && n->cap - n->size >= need && skip == 0)
		return n;
	cap = q->head == NULL ? COPY_FIRST : COPY_BLOCK;
	if (need > cap)
		cap = need;
	n = malloc(sizeof(*n) + cap);
	if (n == NULL)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->cap = cap;
	n->npieces = 1;
	n->piece[0].iov_base = n->data;
	append(q, n);
	return n;
}

int outq_push(struct outq *q, const struct iovec *iov, int cnt, size_t payload,
	      bs_msg_t **msg, size_t skip)
{
	size_t total = 0;
	struct out_node *n;

	for (int i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	if (msg != NULL && *msg != NULL && payload > COPY_SMALL) {
		n = malloc(sizeof(*n));
		if (n == NULL)
			return BS_ENOMEM;
		memset(n, 0, sizeof(*n));
		memcpy(n->hdr, iov[0].iov_base, iov[0].iov_len);
		if (cnt > 2 && iov[2].iov_len)
			n->trailer = *(const uint8_t *)iov[2].iov_base;
		n->msg = *msg;
		*msg = NULL;
		n->piece[0] = (struct iovec){ n->hdr, iov[0].iov_len };
		n->piece[1] = iov[1];
		n->piece[2] = (struct iovec){ &n->trailer, cnt > 2 ? iov[2].iov_len : 0 };
		n->npieces = 3;
		n->size = total;
		append(q, n);
	} else {
		n = copy_block(q, total, skip);
		if (n == NULL)
			return BS_ENOMEM;
		for (int i = 0; i < cnt; i++) {
			memcpy(n->data + n->size, iov[i].iov_base, iov[i].iov_len);
			n->size += iov[i].iov_len;
		}
		n->piece[0].iov_len = n->size;
	}
	n->sent += skip;
	n->nmsgs++;
	n->payload += payload;
	q->msgs++;
	q->payload += payload;
	atomic_store_explicit(&q->bytes, q->bytes + total - skip, memory_order_relaxed);
	return 0;
}

/* Adds the unwritten part of n to iov; returns how many entries it used. */
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

/* Removes `n` written bytes from the front. */
static void consume(struct outq *q, size_t n, struct outq_count *done)
{
	atomic_store_explicit(&q->bytes, q->bytes - n, memory_order_relaxed);
	while (n > 0) {
		struct out_node *h = q->head;
		size_t rest = h->size - h->sent;

		if (n < rest) {
			h->sent += n;
			break;
		}
		n -= rest;
		done->msgs += h->nmsgs;
		done->payload += h->payload;
		q->msgs -= h->nmsgs;
		q->payload -= h->payload;
		q->head = h->next;
		if (q->head == NULL)
			q->tail = NULL;
		node_free(h);
	}
}

enum outq_result outq_write(struct outq *q, int fd, struct outq_count *done,
			    struct inflight *fl)
{
	while (q->head != NULL) {
		struct iovec iov[WRITE_IOV];
		uint64_t msgs = done->msgs;
		int cnt = 0;
		ssize_t n;

		for (struct out_node *p = q->head; p && cnt < WRITE_IOV - 2; p = p->next)
			cnt += node_iov(p, iov + cnt, WRITE_IOV - cnt);
		n = writev(fd, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? OUTQ_FULL : OUTQ_FAILED;
		}
		done->writes++;
		done->bytes += (uint64_t)n;
		consume(q, (size_t)n, done);
		if (fl != NULL)
			inflight_wrote(fl, fd, (uint64_t)n, done->msgs - msgs);
	}
	return OUTQ_EMPTY;
}

/* The framing as the queue holds it: a delimiter is a trailer, never part
 * of the payload. */
static bs_framing_t as_queued(const bs_framing_t *f)
{
	bs_framing_t g = *f;

	g.keep_delim = false;
	return g;
}

void outq_rewind(struct outq *q, const bs_framing_t *f, struct outq_count *written)
{
	struct out_node *h = q->head;
	bs_framing_t g = as_queued(f);
	size_t off, back;

	if (h == NULL || h->sent == h->start)
		return;
	off = h->start;
	if (h->msg == NULL) {
		/* A copy block: find the last frame boundary at or before sent. */
		uint32_t whole = 0;
		size_t payload = 0;
		bs_frame_t fr;

		while (frame_decode_any(&g, h->data + off, h->size - off, &fr) > 0) {
			size_t len = fr.header_len + fr.payload_len + fr.trailer_len;
			if (off + len > h->sent)
				break;
			off += len;
			payload += fr.payload_len;
			whole++;
		}
		h->nmsgs -= whole;
		h->payload -= payload;
		q->msgs -= whole;
		q->payload -= payload;
		written->msgs += whole;
		written->payload += payload;
	}
	back = h->sent - off;
	h->sent = h->start = off;
	atomic_store_explicit(&q->bytes, q->bytes + back, memory_order_relaxed);
}

/* The messages of copy block h from h->sent on, sharing one new buffer. */
static int block_back(struct out_node *h, const bs_framing_t *g, bs_id_t id, void *user,
		      bs_data_t *ev, size_t *k)
{
	size_t len = h->size - h->sent, off = 0, first = *k;
	bs_msg_t *m = msg_new(len ? len : 1);
	bs_frame_t fr;

	if (m == NULL)
		return BS_ENOMEM;
	memcpy(m->data, h->data + h->sent, len);
	/* At most nmsgs: the caller kept that many places for the block. */
	while (*k - first < h->nmsgs && off < len &&
	       frame_decode_any(g, m->data + off, len - off, &fr) > 0) {
		ev[(*k)++] = (bs_data_t){ .id = id, .data = m->data + off + fr.header_len,
					  .len = fr.payload_len, .msg = m, .user = user };
		off += fr.header_len + fr.payload_len + fr.trailer_len;
	}
	if (*k == first)
		bs_msg_release(m); /* cannot happen: a queued block holds a frame */
	else
		msg_ref_add(m, (long)(*k - first) - 1);
	return 0;
}

int outq_hand_back(struct outq *q, const bs_framing_t *f, bs_id_t id, void *user,
		   bs_data_t **out, size_t *n)
{
	bs_framing_t g = as_queued(f);
	struct outq_count none = { 0 };
	bs_data_t *ev;
	size_t k = 0, i = 0;

	*out = NULL;
	*n = 0;
	if (q->msgs == 0)
		return 0;
	ev = calloc(q->msgs, sizeof(*ev));
	if (ev == NULL)
		return BS_ENOMEM;
	/* Copy blocks first, so that a failure leaves the queue whole; a
	 * zero-copy node keeps a place (msg NULL) and then only hands its
	 * reference over. */
	for (struct out_node *h = q->head; h != NULL; h = h->next) {
		if (h->msg != NULL) {
			k++;
		} else if (block_back(h, &g, id, user, ev, &k) != 0) {
			bs_data_release(ev, k);
			free(ev);
			return BS_ENOMEM;
		}
	}
	for (struct out_node *h = q->head; h != NULL; h = h->next) {
		if (h->msg == NULL)
			continue;
		while (ev[i].msg != NULL) /* the blocks' messages before it */
			i++;
		ev[i] = (bs_data_t){ .id = id, .data = h->piece[1].iov_base,
				     .len = h->piece[1].iov_len, .msg = h->msg, .user = user };
		h->msg = NULL;
	}
	*out = ev;
	*n = k;
	q->msgs = 0; /* handed back, not dropped: nothing left to count */
	q->payload = 0;
	outq_drop(q, &none);
	return 0;
}

void outq_drop(struct outq *q, struct outq_count *dropped)
{
	dropped->msgs += q->msgs;
	dropped->payload += q->payload;
	while (q->head != NULL) {
		struct out_node *h = q->head;
		q->head = h->next;
		node_free(h);
	}
	q->tail = NULL;
	q->msgs = 0;
	q->payload = 0;
	atomic_store_explicit(&q->bytes, 0, memory_order_relaxed);
}
