/*
 * A connection's inbox: the frames read from its socket and not yet given
 * to the application, in wire order.
 *
 * The I/O thread that owns the connection appends *segments*: runs of
 * whole, already validated frames inside one buffer (a slice of a read
 * chunk, or a private buffer with one large frame), one segment per read.
 * The thread that holds the connection (see sched.h) takes frames from the
 * front, as many as it asks for, so one read's frames can be spread over
 * several holds. The queue is ck's single-producer single-consumer FIFO:
 * holds make the consumers of one connection take turns, and each turn's
 * hand-over (a ready ring, the scheduling word) orders one consumer's work
 * before the next one's.
 *
 * The reader found every frame's payload when it cut the read into frames,
 * while the bytes were in its CPU's cache; a segment carries those
 * positions, so the holder builds its events without reading the frames'
 * headers again from another CPU. (Without them, when memory for the
 * positions ran out, the holder decodes the headers itself.)
 *
 * Segments are recycled by the producer (ck_fifo_spsc_recycle), with the
 * room for their positions, so a connection in steady state allocates
 * nothing per read.
 *
 * Each segment carries the epoch of the socket it was read from: a
 * reconnecting dial's frames from a new connection must not be taken
 * before the event that announces it (scheduler.h), so a take stops where
 * the epoch changes.
 */
#ifndef BS_INBOX_H
#define BS_INBOX_H

#include <ck_fifo.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "buffstreams.h"
#include "msg.h"

/* Where one frame's payload lies, from the first byte of its segment. */
struct frame_pos {
	uint32_t off, len;
};

struct segment {
	ck_fifo_spsc_entry_t entry;
	bs_msg_t *buf;          /* holds one reference until consumed */
	size_t off, end;        /* frames not taken yet: buf->data[off..end) */
	size_t base;            /* where the segment began: pos[] counts from it */
	struct frame_pos *pos;  /* its frames (npos of them); next: the first not
	                           taken. npos 0: decode the headers instead */
	uint32_t npos, next, cap;
	uint32_t epoch;         /* of the socket they were read from */
};

struct inbox {
	ck_fifo_spsc_t fifo;
	struct segment stub;    /* ck's initial stub; recycled like the rest */
	struct segment *cur;    /* consumer: segment being taken from */
	_Atomic size_t bytes;   /* frame bytes appended and not yet taken */
};

/* Empties a fresh inbox. No other thread may use it meanwhile. */
void inbox_init(struct inbox *in);

/* Producer (the owning I/O thread): appends the n frames at
 * buf->data[off..end), read from a socket of this epoch, taking over one
 * reference of buf. pos (may be NULL) says where their payloads lie, from
 * off. False when out of memory (the reference is then still the
 * caller's). */
bool inbox_push(struct inbox *in, bs_msg_t *buf, size_t off, size_t end, uint32_t epoch,
		const struct frame_pos *pos, uint32_t n);

/* Whether a frame is waiting (appended and not taken). Any thread; exact
 * for the consumer. A frame is counted a moment before it can be taken, so
 * inbox_take may still find nothing. Every frame has at least one byte. */
static inline bool inbox_pending(struct inbox *in)
{
	return atomic_load(&in->bytes) != 0;
}

/* Consumer: up to max frames of this epoch into ev (id and user filled
 * in), each with a reference of its buffer; stops at a frame of another
 * epoch. Returns how many; *bytes gets their frame bytes. */
size_t inbox_take(struct inbox *in, const bs_framing_t *f, bs_id_t id, void *user,
		  bs_data_t *ev, size_t max, size_t *bytes, uint32_t epoch);

/* Consumer: whether the next frame that can be taken is of this epoch.
 * False also when the next frame is counted but not linked yet. */
bool inbox_ready(struct inbox *in, uint32_t epoch);

/* Releases every frame left and frees the segments. Neither producer nor
 * consumer may use the inbox meanwhile; inbox_init makes it usable again.
 * Returns how many frames were dropped. */
size_t inbox_drop(struct inbox *in, const bs_framing_t *f);

#endif
