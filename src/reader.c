/*
 * The read path. An I/O thread reads every socket into one shared 256 KiB
 * chunk; complete frames become data events that point into the chunk, so
 * received bytes are never copied. What cannot become an event at once
 * stays in the connection's rx window:
 *   - complete frames waiting for room in the data ring (a slice of the
 *     chunk; the socket is not read again until they are queued), or
 *   - one incomplete frame, moved to a private buffer so the chunk can be
 *     reused; the rest of that frame is then read straight into it, so a
 *     large message is copied at most once, however it is split.
 * A private buffer grows with the bytes that actually arrived, never to the
 * size a header merely announces, so a hostile header costs nothing.
 */
#include "reader.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "framing.h"
#include "worker.h"
#include "tsan.h"

/* A chunk with less room than this is retired rather than read into. */
#define CHUNK_MIN_ROOM (32u * 1024u)
/* Events queued together: one reservation of ring slots, one publication. */
#define PUSH_BATCH 64
/* A private buffer grows by at least this, and at least doubles. */
#define PRIVATE_STEP (16u * 1024u)

static void give_refs(struct worker *w, bs_msg_t *m, unsigned n)
{
	if (m == w->chunk)
		w->chunk_given += n;
	else
		msg_ref_add(m, n);
}

void reader_retire_chunk(struct worker *w)
{
	if (w->chunk == NULL)
		return;
	msg_chunk_retire(w->chunk, w->chunk_given);
	w->chunk = NULL;
	w->chunk_given = 0;
	w->chunk_used = 0;
}

static bool chunk_ready(struct worker *w)
{
	if (w->chunk != NULL && MSG_CHUNK_SIZE - w->chunk_used >= CHUNK_MIN_ROOM)
		return true;
	reader_retire_chunk(w);
	w->chunk = msg_chunk_new();
	return w->chunk != NULL;
}

void reader_drop_rx(struct bs_conn *c)
{
	bs_msg_release(c->rx);
	c->rx = NULL;
	c->rx_off = c->rx_end = 0;
	c->rx_private = false;
}

static uint32_t ring_room(struct worker *w)
{
	unsigned size = ck_ring_size(&w->ring);
	return size < w->ring_limit ? w->ring_limit - size : 0;
}

/*
 * Events are built where they are queued: in the ring's own slots, and
 * published with one store of its producer tail per batch (ck's
 * single-producer enqueue, _ck_ring_enqueue_sp, reads the consumers' head
 * and stores the tail for every event, and each store takes the cache line
 * the consumers poll away from them). ThreadSanitizer builds stage the
 * batch and queue it through ck's own enqueue, whose accesses the
 * suppressions cover.
 */
#ifdef BS_TSAN
static _Thread_local struct bs_data stage[PUSH_BATCH];
#endif

/* Where up to *n (> 0 on return, else the ring is full) events go. */
static struct bs_data *ring_reserve(struct worker *w, unsigned *n)
{
	unsigned room = ring_room(w);
#ifdef BS_TSAN
	*n = room < PUSH_BATCH ? room : PUSH_BATCH;
	return stage;
#else
	unsigned at = w->ring.p_tail & w->ring.mask;
	unsigned contiguous = w->ring_cap - at;

	*n = room < contiguous ? room : contiguous;
	if (*n > PUSH_BATCH)
		*n = PUSH_BATCH;
	return &w->ring_buf[at];
#endif
}

/* Queues the n events built at ev (from ring_reserve), slices of c->rx
 * with one reference each and `bytes` of payload in all. Counts them in the
 * gate first, so a consumer that dequeues one can never bring the count
 * below what is queued. */
static void push_batch(struct worker *w, struct bs_conn *c, struct bs_data *ev, unsigned n,
		       uint64_t bytes)
{
	if (n == 0)
		return;
	give_refs(w, c->rx, n);
	atomic_fetch_add_explicit(&c->gate, n, memory_order_relaxed);
	tsan_release(&w->ring);
#ifdef BS_TSAN
	for (unsigned i = 0; i < n; i++)
		ck_ring_enqueue_spmc_data(&w->ring, w->ring_buf, &ev[i]);
#else
	(void)ev;
	ck_pr_fence_store();
	ck_pr_store_uint(&w->ring.p_tail, w->ring.p_tail + n);
#endif
	stat_add(&w->st.msgs_in, n);
	stat_add(&w->st.bytes_in, bytes);
	w->pushed = true;
}

static size_t frame_limit(const bs_framing_t *f)
{
	return f->max_message_size + BS_FRAME_HEADER_MAX + 1;
}

/*
 * Keeps the incomplete frame at rx[rx_off..rx_end) in a private buffer with
 * room for at least one more byte. `total` is the frame's size when known.
 */
static bool keep_partial(struct bs_conn *c, size_t total)
{
	size_t have = c->rx_end - c->rx_off;
	size_t want = have + PRIVATE_STEP > 2 * have ? have + PRIVATE_STEP : 2 * have;
	size_t limit = total ? total : frame_limit(&c->ep->framing);
	bs_msg_t *m;

	if (want > limit)
		want = limit;
	if (c->rx_private && c->rx_off == 0) {
		/* Nothing was sliced from it yet: grow in place if full. */
		if (c->rx->cap > have)
			return true;
		m = msg_grow(c->rx, want);
		if (m == NULL)
			return false;
		c->rx = m;
		return true;
	}
	m = msg_new(want);
	if (m == NULL)
		return false;
	memcpy(m->data, c->rx->data + c->rx_off, have);
	bs_msg_release(c->rx);
	c->rx = m;
	c->rx_off = 0;
	c->rx_end = have;
	c->rx_private = true;
	return true;
}

/*
 * Turns the frames in c's rx window into events. Returns READ_DONE when the
 * window is empty or holds one incomplete frame (then in a private buffer),
 * READ_PAUSED when the ring filled first, READ_CLOSED on a bad frame.
 */
static enum read_result parse_rx(struct worker *w, struct bs_conn *c)
{
	const bs_framing_t *f = &c->ep->framing;
	const bool be32 = frame_is_be32(f);
	const size_t max = f->max_message_size;
	const bs_id_t id = atomic_load_explicit(&c->id, memory_order_relaxed);
	bs_msg_t *const rx = c->rx;
	const uint8_t *data = rx->data;
	size_t off = c->rx_off, end = c->rx_end;
	struct bs_data *ev = NULL;
	unsigned n = 0, room = 0;
	uint64_t bytes = 0;
	bs_frame_t fr;
	int r;

	/* The window lives in locals while frames are cut from it, and goes
	 * back to c before anything that may look at it. */
	while (off < end) {
		if (n == room) {
			push_batch(w, c, ev, n, bytes);
			n = 0;
			bytes = 0;
			ev = ring_reserve(w, &room);
			if (room == 0) {
				c->rx_off = off;
				return READ_PAUSED;
			}
		}
		r = be32 ? frame_decode_be32(data + off, end - off, max, &fr)
			 : frame_decode_any(f, data + off, end - off, &fr);
		if (r <= 0) {
			c->rx_off = off;
			push_batch(w, c, ev, n, bytes);
			if (r < 0) {
				stat_add(&w->st.frames_rejected, 1);
				worker_close(w, c, r, 0);
				return READ_CLOSED;
			}
			if (!keep_partial(c, fr.header_len ? fr.header_len + fr.payload_len +
								     fr.trailer_len
							   : 0)) {
				worker_close(w, c, BS_ENOMEM, 0);
				return READ_CLOSED;
			}
			return READ_DONE;
		}
		ev[n++] = (struct bs_data){ .id = id, .data = data + off + fr.header_len,
					    .len = fr.payload_len, .msg = rx };
		bytes += fr.payload_len;
		off += fr.header_len + fr.payload_len + fr.trailer_len;
	}
	c->rx_off = off;
	push_batch(w, c, ev, n, bytes);
	reader_drop_rx(c);
	return READ_DONE;
}

/* How many more bytes the incomplete frame in a private rx can take now. */
static size_t private_room(struct bs_conn *c, size_t *frame_rest)
{
	bs_frame_t fr;
	size_t have = c->rx_end - c->rx_off;

	*frame_rest = 0;
	if (frame_decode(&c->ep->framing, c->rx->data + c->rx_off, have, &fr) == 0 &&
	    fr.header_len != 0)
		*frame_rest = fr.header_len + fr.payload_len + fr.trailer_len - have;
	return c->rx->cap - c->rx_end;
}

enum read_result reader_run(struct worker *w, struct bs_conn *c)
{
	struct iovec iov[2];
	int niov = 0;
	size_t want = 0, frame_rest = 0, to_private = 0;
	ssize_t n, got;
	enum read_result r;

	/* One read per turn (at most a chunk), so one busy socket cannot
	 * starve the others. Frames already read go first. */
	if (c->rx != NULL) {
		r = parse_rx(w, c);
		if (r != READ_DONE)
			return r;
	}
	if (ring_room(w) == 0)
		return READ_PAUSED;

	if (c->rx_private) {
		/* Known size: exactly the rest of the frame here, the stream
		 * after it into the chunk. Unknown size: only here. */
		size_t room = private_room(c, &frame_rest);
		bool fits = frame_rest != 0 && frame_rest <= room;
		to_private = fits ? frame_rest : room;
		iov[niov].iov_base = c->rx->data + c->rx_end;
		iov[niov++].iov_len = to_private;
		want += to_private;
		if (!fits)
			frame_rest = 0; /* the buffer grows before the stream goes on */
	}
	if (c->rx == NULL || frame_rest != 0) {
		if (!chunk_ready(w)) {
			worker_close(w, c, BS_ENOMEM, 0);
			return READ_CLOSED;
		}
		iov[niov].iov_base = w->chunk->data + w->chunk_used;
		iov[niov++].iov_len = MSG_CHUNK_SIZE - w->chunk_used;
		want += MSG_CHUNK_SIZE - w->chunk_used;
	}

	do
		n = readv(c->fd, iov, niov);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return READ_DONE;
		worker_close(w, c, BS_ESYS, errno);
		return READ_CLOSED;
	}
	if (n == 0) {
		worker_close(w, c, BS_EOF, 0);
		return READ_CLOSED;
	}
	got = n;
	worker_touch(w, c);

	if (c->rx_private) {
		size_t k = (size_t)n < to_private ? (size_t)n : to_private;
		c->rx_end += k;
		n -= (ssize_t)k;
		r = parse_rx(w, c);
		if (r != READ_DONE)
			return r;
		if (c->rx != NULL && n > 0) {
			/* Cannot happen: the private part took exactly the
			 * frame's rest. Treat it as a broken stream. */
			worker_close(w, c, BS_EPROTO, 0);
			return READ_CLOSED;
		}
	}
	if (n > 0) {
		c->rx = w->chunk;
		give_refs(w, w->chunk, 1);
		c->rx_off = w->chunk_used;
		c->rx_end = w->chunk_used + (size_t)n;
		c->rx_private = false;
		w->chunk_used += (uint32_t)n;
		r = parse_rx(w, c);
		if (r != READ_DONE)
			return r;
	}
	/* A short read drained the socket: the next edge brings more. Not so
	 * for an EOF that came with these bytes: read on to see it. */
	return (size_t)got >= want || c->hup ? READ_MORE : READ_DONE;
}
