/*
 * The read path. An I/O thread reads every socket into one shared 256 KiB
 * chunk; the whole frames of a read are appended to the connection's inbox
 * as one segment that points into the chunk, so received bytes are never
 * copied. An incomplete frame at the end moves to a private buffer so the
 * chunk can be reused; the rest of that frame is then read straight into
 * it, so a large message is copied at most once, however it is split. A
 * private buffer grows with the bytes that actually arrived, never to the
 * size a header merely announces, so a hostile header costs nothing.
 *
 * Backpressure is per connection: once a connection's inbox holds more
 * than the bound, it is not read again until its holders have taken it
 * below half, and TCP pushes back on that peer alone.
 */
#include "reader.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "framing.h"
#include "grow.h"
#include "stat.h"

/* A chunk with less room than this is retired rather than read into. */
#define CHUNK_MIN_ROOM (32u * 1024u)
/* A private buffer grows by at least this, and at least doubles. */
#define PRIVATE_STEP (16u * 1024u)

static void give_refs(struct reader *r, bs_msg_t *m, unsigned n)
{
	if (m == r->chunk)
		r->chunk_given += n;
	else
		msg_ref_add(m, n);
}

void reader_retire_chunk(struct reader *r)
{
	if (r->chunk == NULL)
		return;
	msg_chunk_retire(r->chunk, r->chunk_given);
	r->chunk = NULL;
	r->chunk_given = 0;
	r->chunk_used = 0;
}

void reader_free(struct reader *r)
{
	reader_retire_chunk(r);
	free(r->pos);
	r->pos = NULL;
	r->pos_cap = 0;
}

/* Room for position n; false when there is none (the read's frames then
 * go without positions). */
static bool pos_room(struct reader *r, uint32_t n)
{
	struct frame_pos *pos = n < UINT32_MAX ? grow_to(r->pos, &r->pos_cap, n + 1,
							 sizeof(*pos), 1024, UINT32_MAX)
					       : NULL;

	if (pos == NULL)
		return false;
	r->pos = pos;
	return true;
}

static bool chunk_ready(struct reader *r)
{
	if (r->chunk != NULL && MSG_CHUNK_SIZE - r->chunk_used >= CHUNK_MIN_ROOM)
		return true;
	reader_retire_chunk(r);
	r->chunk = msg_chunk_new();
	return r->chunk != NULL;
}

void reader_drop_rx(struct bs_conn *c)
{
	bs_msg_release(c->rx);
	c->rx = NULL;
	c->rx_off = c->rx_end = 0;
	c->rx_private = false;
}

bool reader_may_resume(const struct reader *r, struct bs_conn *c)
{
	return atomic_load(&c->in.bytes) <= r->backlog / 2;
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
	size_t limit = total ? total : frame_limit(c->framing);
	bs_msg_t *m;

	if (want > limit)
		want = limit;
	if (c->rx_private && c->rx_off == 0) {
		/* Nothing was taken from it yet: grow in place if full. */
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

/* Appends rx[from..to) (whole frames, n of them, their payloads at
 * r->pos when with_pos) to c's inbox. */
static bool deliver(struct reader *r, struct bs_conn *c, size_t from, size_t to, unsigned n,
		    uint64_t payload, bool with_pos)
{
	if (n == 0)
		return true;
	give_refs(r, c->rx, 1);
	/* Counted before a holder can take (and subtract) them. */
	atomic_fetch_add_explicit(r->undelivered, n, memory_order_relaxed);
	if (!inbox_push(&c->in, c->rx, from, to, c->sock_epoch, with_pos ? r->pos : NULL, n)) {
		atomic_fetch_sub_explicit(r->undelivered, n, memory_order_relaxed);
		if (c->rx == r->chunk)
			r->chunk_given--;
		else
			bs_msg_release(c->rx);
		return false;
	}
	stat_add(&r->st->msgs_in, n);
	stat_add(&r->st->bytes_in, payload);
	sched_data(r->sched, c, &r->wake);
	return true;
}

/*
 * Cuts the frames in c's rx window and appends them to its inbox. Returns
 * READ_DONE when the window is empty or holds one incomplete frame (then
 * in a private buffer), READ_CLOSED on a bad frame or lack of memory.
 */
static enum read_result parse_rx(struct reader *r, struct bs_conn *c, int *reason)
{
	const bs_framing_t *f = c->framing;
	const bool be32 = frame_is_be32(f);
	const size_t max = f->max_message_size;
	const uint8_t *data = c->rx->data;
	size_t start = c->rx_off, off = start, end = c->rx_end;
	unsigned n = 0;
	uint64_t payload = 0;
	bs_frame_t fr;
	int rc = 1;
	/* Positions fit in 32 bits from the start: a chunk is 256 KiB, and a
	 * private buffer holds one frame. */
	bool with_pos = end - start <= UINT32_MAX;

	/* The window lives in locals while frames are cut from it, and each
	 * frame's payload is noted while its header is in this CPU's cache. */
	while (off < end) {
		rc = be32 ? frame_decode_be32(data + off, end - off, max, &fr)
			  : frame_decode_any(f, data + off, end - off, &fr);
		if (rc <= 0)
			break;
		if (with_pos && (with_pos = pos_room(r, n)))
			r->pos[n] = (struct frame_pos){ (uint32_t)(off - start + fr.header_len),
							(uint32_t)fr.payload_len };
		payload += fr.payload_len;
		off += fr.header_len + fr.payload_len + fr.trailer_len;
		n++;
	}
	if (!deliver(r, c, start, off, n, payload, with_pos)) {
		*reason = BS_ENOMEM;
		return READ_CLOSED;
	}
	c->rx_off = off;
	if (rc < 0) {
		stat_add(&r->st->frames_rejected, 1);
		*reason = rc;
		return READ_CLOSED;
	}
	if (off == end) {
		reader_drop_rx(c);
		return READ_DONE;
	}
	if (!keep_partial(c, fr.header_len ? fr.header_len + fr.payload_len + fr.trailer_len : 0)) {
		*reason = BS_ENOMEM;
		return READ_CLOSED;
	}
	return READ_DONE;
}

/* How many more bytes the incomplete frame in a private rx can take now. */
static size_t private_room(struct bs_conn *c, size_t *frame_rest)
{
	bs_frame_t fr;
	size_t have = c->rx_end - c->rx_off;

	*frame_rest = 0;
	if (frame_decode(c->framing, c->rx->data + c->rx_off, have, &fr) == 0 &&
	    fr.header_len != 0)
		*frame_rest = fr.header_len + fr.payload_len + fr.trailer_len - have;
	return c->rx->cap - c->rx_end;
}

enum read_result reader_run(struct reader *r, struct bs_conn *c, bool *active, int *reason,
			    int *err)
{
	struct iovec iov[2];
	int niov = 0;
	size_t want = 0, frame_rest = 0, to_private = 0;
	ssize_t n, got;
	enum read_result res;

	*err = 0;
	if (atomic_load(&c->in.bytes) > r->backlog)
		return READ_PARKED;
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
		if (!chunk_ready(r)) {
			*reason = BS_ENOMEM;
			return READ_CLOSED;
		}
		iov[niov].iov_base = r->chunk->data + r->chunk_used;
		iov[niov++].iov_len = MSG_CHUNK_SIZE - r->chunk_used;
		want += MSG_CHUNK_SIZE - r->chunk_used;
	}

	/* One read per turn (at most a chunk), so one busy socket cannot
	 * starve the others. */
	do
		n = readv(c->fd, iov, niov);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return READ_DONE;
		*reason = BS_ESYS;
		*err = errno;
		return READ_CLOSED;
	}
	if (n == 0) {
		*reason = BS_EOF;
		return READ_CLOSED;
	}
	got = n;
	*active = true;

	if (c->rx_private) {
		size_t k = (size_t)n < to_private ? (size_t)n : to_private;
		c->rx_end += k;
		n -= (ssize_t)k;
		res = parse_rx(r, c, reason);
		if (res != READ_DONE)
			return res;
		if (c->rx != NULL && n > 0) {
			/* Cannot happen: the private part took exactly the
			 * frame's rest. Treat it as a broken stream. */
			*reason = BS_EPROTO;
			return READ_CLOSED;
		}
	}
	if (n > 0) {
		c->rx = r->chunk;
		give_refs(r, r->chunk, 1);
		c->rx_off = r->chunk_used;
		c->rx_end = r->chunk_used + (size_t)n;
		c->rx_private = false;
		r->chunk_used += (uint32_t)n;
		res = parse_rx(r, c, reason);
		if (res != READ_DONE)
			return res;
	}
	if (atomic_load(&c->in.bytes) > r->backlog)
		return READ_PARKED;
	/* A short read drained the socket: the next edge brings more. Not so
	 * for an EOF that came with these bytes: read on to see it. */
	return (size_t)got >= want || c->hup ? READ_MORE : READ_DONE;
}
