/* A connection's outgoing queue. See outq.h. */
#include "outq.h"

#include <errno.h>
#include <pthread.h>
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
/* Entries of a reference block: the first block of an empty queue, then
 * the later ones (16 bytes each). */
#define REFS_FIRST 32u
#define REFS_BLOCK 256u
/* Pieces one writev takes. A frame sent by reference is two (header and
 * payload): at 64 a fan-out of 1 KiB messages wrote a subscriber's queue
 * 22 deliveries at a time, at 256 about 53, with 1.1-1.2x the deliveries/s
 * (4 KiB of stack; the kernel takes up to 1024). */
#define WRITE_IOV 256

/* Runs of small pieces are copied into one per-thread buffer before a
 * write: the kernel pays for each iovec it copies from far more than a
 * copy of a 120-byte frame that a fan-out just touched costs. */
#define GATHER_BYTES (16u * 1024u)
#define GATHER_PIECE 1024u   /* pieces below this are gathered */
#define GATHER_MIN 4         /* a write of fewer pieces is left alone */

/* One frame of a reference block: a whole frame that a shared buffer holds
 * (a fan-out's), with one reference to it. */
struct out_ref {
	bs_msg_t *m;
	uint32_t len;           /* the frame's bytes: m->data[0..len) */
	uint32_t payload;
};

enum node_kind {
	NODE_PIECES,            /* one frame: header, payload by reference, trailer */
	NODE_COPY,              /* many small frames copied into data[] */
	NODE_REFS,              /* many whole frames by reference: data[] holds out_refs */
};

/* A queued byte string: see enum node_kind. */
struct out_node {
	struct out_node *next;
	bs_msg_t *msg;          /* NODE_PIECES: released once written */
	size_t sent;            /* bytes of the node already written */
	size_t start;           /* frames before this offset were counted
	                           written by a rewind (outq_rewind) */
	size_t size;            /* total bytes of the node */
	uint32_t nmsgs;         /* messages that end inside this node */
	size_t payload;         /* their payload bytes */
	uint8_t kind;           /* enum node_kind */
	uint8_t npieces;
	struct iovec piece[3];
	size_t cap;             /* NODE_COPY: bytes of data[]; NODE_REFS: out_refs */
	uint32_t nrefs;         /* NODE_REFS: out_refs in data[] */
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	uint8_t trailer;
	_Alignas(16) uint8_t data[];
};

static struct out_ref *node_refs(struct out_node *n)
{
	return (struct out_ref *)(void *)n->data;
}

static void node_free(struct out_node *n)
{
	struct out_ref *r = node_refs(n);

	bs_msg_release(n->msg);
	if (n->kind == NODE_REFS)
		for (uint32_t i = 0; i < n->nrefs; i++)
			bs_msg_release(r[i].m);
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
	if (n != NULL && n->kind == NODE_COPY && n->cap - n->size >= need && skip == 0)
		return n;
	cap = q->head == NULL ? COPY_FIRST : COPY_BLOCK;
	if (need > cap)
		cap = need;
	n = malloc(sizeof(*n) + cap);
	if (n == NULL)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->kind = NODE_COPY;
	n->cap = cap;
	n->npieces = 1;
	n->piece[0].iov_base = n->data;
	append(q, n);
	return n;
}

/* Counts one frame of `bytes` (its first `skip` written already) just
 * added to node n of q. */
static void counted(struct outq *q, struct out_node *n, size_t bytes, size_t payload,
		    size_t skip)
{
	n->sent += skip;
	n->nmsgs++;
	n->payload += payload;
	q->msgs++;
	q->payload += payload;
	atomic_store_explicit(&q->bytes, q->bytes + bytes - skip, memory_order_relaxed);
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
		n->kind = NODE_PIECES;
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
	counted(q, n, total, payload, skip);
	return 0;
}

/* The tail if it is a reference block with room for one more frame, or a
 * new one. A frame partly written starts a block of its own. */
static struct out_node *refs_block(struct outq *q, size_t skip)
{
	struct out_node *n = q->tail;
	size_t cap;

	if (n != NULL && n->kind == NODE_REFS && n->nrefs < n->cap && skip == 0)
		return n;
	cap = q->head == NULL ? REFS_FIRST : REFS_BLOCK;
	n = malloc(sizeof(*n) + cap * sizeof(struct out_ref));
	if (n == NULL)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->kind = NODE_REFS;
	n->cap = cap;
	append(q, n);
	return n;
}

int outq_push_ref(struct outq *q, bs_msg_t *m, size_t len, size_t payload, size_t skip)
{
	struct out_node *n;

	if (len > UINT32_MAX)
		return BS_EMSGSIZE;
	n = refs_block(q, skip);
	if (n == NULL)
		return BS_ENOMEM;
	node_refs(n)[n->nrefs++] = (struct out_ref){ m, (uint32_t)len, (uint32_t)payload };
	n->size += len;
	counted(q, n, len, payload, skip);
	return 0;
}

static int refs_iov(struct out_node *n, struct iovec *iov, int room)
{
	const struct out_ref *r = node_refs(n);
	size_t skip = n->sent;
	int k = 0;

	for (uint32_t i = 0; i < n->nrefs && k < room; i++) {
		if (skip >= r[i].len) {
			skip -= r[i].len;
			continue;
		}
		iov[k].iov_base = r[i].m->data + skip;
		iov[k++].iov_len = r[i].len - skip;
		skip = 0;
	}
	return k;
}

/* Adds the unwritten part of n to iov; returns how many entries it used. */
static int node_iov(struct out_node *n, struct iovec *iov, int room)
{
	size_t skip = n->sent;
	int k = 0;

	if (n->kind == NODE_REFS)
		return refs_iov(n, iov, room);
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

static pthread_key_t gather_key;
static pthread_once_t gather_once = PTHREAD_ONCE_INIT;

static void gather_init(void)
{
	(void)pthread_key_create(&gather_key, free);
}

/* This thread's gather buffer, made on first use; NULL when out of memory
 * (then nothing is gathered). */
static uint8_t *gather_buffer(void)
{
	uint8_t *b;

	pthread_once(&gather_once, gather_init);
	b = pthread_getspecific(gather_key);
	if (b == NULL && (b = malloc(GATHER_BYTES)) != NULL &&
	    pthread_setspecific(gather_key, b) != 0) {
		free(b);
		b = NULL;
	}
	return b;
}

/* Copies each run of small pieces of iov[0..cnt) into buf, the run then
 * one piece; returns the new count. The bytes are the same, in order. */
static int gather(struct iovec *iov, int cnt, uint8_t *buf)
{
	size_t used = 0;
	int out = 0;
	bool in_run = false;

	for (int i = 0; i < cnt; i++) {
		size_t l = iov[i].iov_len;

		if (l >= GATHER_PIECE || used + l > GATHER_BYTES) {
			iov[out++] = iov[i];
			in_run = false;
			continue;
		}
		memcpy(buf + used, iov[i].iov_base, l);
		if (in_run)
			iov[out - 1].iov_len += l;
		else
			iov[out++] = (struct iovec){ buf + used, l };
		used += l;
		in_run = true;
	}
	return out;
}

enum outq_result outq_write(struct outq *q, int fd, struct outq_count *done,
			    struct inflight *fl)
{
	uint8_t *buf = NULL;

	while (q->head != NULL) {
		struct iovec iov[WRITE_IOV];
		uint64_t msgs = done->msgs;
		int cnt = 0;
		ssize_t n;

		for (struct out_node *p = q->head; p && cnt < WRITE_IOV - 2; p = p->next)
			cnt += node_iov(p, iov + cnt, WRITE_IOV - cnt);
		if (cnt >= GATHER_MIN && (buf != NULL || (buf = gather_buffer()) != NULL))
			cnt = gather(iov, cnt, buf);
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

/* Frames of a reference block that end in (start, sent]: written whole
 * since the last rewind. Returns the offset where the last of them ends. */
static size_t refs_written(struct out_node *h, uint32_t *whole, size_t *payload)
{
	const struct out_ref *r = node_refs(h);
	size_t at = 0, off = h->start;

	for (uint32_t i = 0; i < h->nrefs && at + r[i].len <= h->sent; i++) {
		at += r[i].len;
		if (at > h->start) {
			(*whole)++;
			*payload += r[i].payload;
			off = at;
		}
	}
	return off;
}

/* A copy block's frames that end in (start, sent], found by decoding. */
static size_t copy_written(struct out_node *h, const bs_framing_t *g, uint32_t *whole,
			   size_t *payload)
{
	size_t off = h->start;
	bs_frame_t fr;

	while (frame_decode_any(g, h->data + off, h->size - off, &fr) > 0) {
		size_t len = fr.header_len + fr.payload_len + fr.trailer_len;
		if (off + len > h->sent)
			break;
		off += len;
		*payload += fr.payload_len;
		(*whole)++;
	}
	return off;
}

void outq_rewind(struct outq *q, const bs_framing_t *f, struct outq_count *written)
{
	struct out_node *h = q->head;
	bs_framing_t g = as_queued(f);
	uint32_t whole = 0;
	size_t off, back, payload = 0;

	if (h == NULL || h->sent == h->start)
		return;
	/* A frame by pieces is one frame: back to its start. Blocks go back
	 * to the last frame boundary at or before sent. */
	off = h->kind == NODE_COPY   ? copy_written(h, &g, &whole, &payload)
	      : h->kind == NODE_REFS ? refs_written(h, &whole, &payload)
				     : h->start;
	h->nmsgs -= whole;
	h->payload -= payload;
	q->msgs -= whole;
	q->payload -= payload;
	written->msgs += whole;
	written->payload += payload;
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

/* Hands the frames of reference block h from h->start on to ev[*k...),
 * each with the reference the block held. */
static void refs_back(struct out_node *h, const bs_framing_t *g, bs_id_t id, void *user,
		      bs_data_t *ev, size_t *k)
{
	struct out_ref *r = node_refs(h);
	size_t at = 0;

	for (uint32_t i = 0; i < h->nrefs; at += r[i].len, i++) {
		bs_frame_t fr;

		if (at < h->start)
			continue; /* written whole; node_free releases it */
		if (frame_decode_any(g, r[i].m->data, r[i].len, &fr) <= 0)
			fr = (bs_frame_t){ .header_len = r[i].len - r[i].payload,
					   .payload_len = r[i].payload }; /* cannot happen: queued whole */
		ev[(*k)++] = (bs_data_t){ .id = id, .data = r[i].m->data + fr.header_len,
					  .len = fr.payload_len, .msg = r[i].m, .user = user };
		r[i].m = NULL;
	}
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
	/* Copy blocks first, so that a failure leaves the queue whole; the
	 * frames held by reference keep their places (msg NULL) and then only
	 * hand their references over. */
	for (struct out_node *h = q->head; h != NULL; h = h->next) {
		if (h->kind != NODE_COPY) {
			k += h->nmsgs;
		} else if (block_back(h, &g, id, user, ev, &k) != 0) {
			bs_data_release(ev, k);
			free(ev);
			return BS_ENOMEM;
		}
	}
	for (struct out_node *h = q->head; h != NULL; h = h->next) {
		if (h->kind == NODE_COPY)
			continue;
		while (ev[i].msg != NULL) /* the blocks' messages before it */
			i++;
		if (h->kind == NODE_REFS) {
			refs_back(h, &g, id, user, ev, &i);
			continue;
		}
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
