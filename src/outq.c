/* A connection's outgoing queue. See outq.h. */
#include "outq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

#define COPY_BLOCK (16u * 1024u)
/* The first block of an empty queue: most queues hold a few replies. */
#define COPY_FIRST 2048u
/* A zero-copy payload up to this size is copied into the copy block
 * instead: a memcpy costs less than a node allocated and freed, and many
 * small frames then leave in one iovec. */
#define COPY_SMALL 512u
#define WRITE_IOV 64

/* A queued byte string: up to three pieces (header, payload, trailer), or a
 * copy block that many small frames append to. */
struct out_node {
	struct out_node *next;
	bs_msg_t *msg;          /* released once written; NULL for copy blocks */
	size_t sent;            /* bytes of the node already written */
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

enum outq_result outq_write(struct outq *q, int fd, struct outq_count *done)
{
	while (q->head != NULL) {
		struct iovec iov[WRITE_IOV];
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
		consume(q, (size_t)n, done);
	}
	return OUTQ_EMPTY;
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
