/*
 * Message buffers: reference-counted byte buffers (bs_msg_t).
 *
 * Two kinds share one layout. A *chunk* is a 256 KiB read buffer that an I/O
 * thread fills from many sockets; every message read into it is a slice
 * that holds one reference, so the bytes are never copied after read(). A
 * *private* buffer holds one frame that did not fit in a chunk, or a
 * message the application allocated to send without copying.
 *
 * Chunks use a biased count so that the I/O thread, which hands out up to
 * thousands of references per read, pays no atomic operation per message:
 * a chunk starts at MSG_BIAS; the thread counts what it handed out locally
 * and settles once, when it retires the chunk (msg_chunk_retire).
 */
#ifndef BS_MSG_H
#define BS_MSG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffstreams.h"

#define MSG_CHUNK_SIZE (256u * 1024u)
#define MSG_BIAS (1L << 40)

struct bs_msg {
	atomic_long refs;
	size_t cap;        /* bytes in data[] */
	bool pooled;       /* a chunk: recycled through the chunk cache */
	_Alignas(16) uint8_t data[];
};

/* A new chunk whose count is MSG_BIAS. NULL when out of memory. */
bs_msg_t *msg_chunk_new(void);
/* Settles a chunk's biased count after `given` references were handed out;
 * frees it if none is left. Called once per chunk by the thread that
 * filled it. */
void msg_chunk_retire(bs_msg_t *chunk, long given);

/* A private buffer with one reference. NULL when out of memory. */
bs_msg_t *msg_new(size_t cap);
/* Grows a private buffer that nobody else references (refs == 1). */
bs_msg_t *msg_grow(bs_msg_t *m, size_t cap);

/* Drops n references at once; frees the buffer when they were the last. */
void msg_release_n(bs_msg_t *m, long n);

static inline void msg_ref_add(bs_msg_t *m, long n)
{
	atomic_fetch_add_explicit(&m->refs, n, memory_order_relaxed);
}

#endif
