/*
 * A connection's outgoing queue: framed messages not yet written, bounded
 * by its owner (send.c) in bytes.
 *
 * Small copied frames share copy blocks; a zero-copy frame keeps its
 * message reference and adds only its header and trailer; a whole frame
 * that a shared buffer holds (a fan-out's) takes 16 bytes of a reference
 * block. outq_write hands the kernel up to 256 iovecs per writev, each run
 * of small ones first gathered into one per-thread buffer. No locking of its own: the
 * connection's lock guards it.
 *
 * Every node starts at a frame boundary and holds whole frames (a frame
 * never spans two nodes), so the frames of a node are found again by
 * decoding it with the connection's framing: that is how a queue whose
 * socket broke is rewound to the start of its half-written frame
 * (outq_rewind) and how its messages are handed back (outq_hand_back),
 * at no cost to the write path.
 */
#ifndef BS_OUTQ_H
#define BS_OUTQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buffstreams.h"
#include "inflight.h"

struct out_node;

struct outq {
	struct out_node *head, *tail;
	_Atomic size_t bytes;   /* queued, not yet written; read unlocked as a hint */
	uint32_t msgs;          /* messages not fully written */
	size_t payload;         /* their payload bytes */
};

/* What a write or a drop took off the queue: messages and their payload
 * bytes, system calls, bytes written. */
struct outq_count {
	uint64_t msgs, payload, writes, bytes;
};

enum outq_result {
	OUTQ_EMPTY,   /* everything written */
	OUTQ_FULL,    /* the socket takes no more now (EAGAIN) */
	OUTQ_FAILED,  /* the socket failed; errno says why */
};

static inline bool outq_empty(const struct outq *q)
{
	return q->head == NULL;
}

/* Queues one frame given as iov[0..cnt) (header, payload, trailer; cnt 2
 * or 3) of which the first `skip` bytes were written already. msg, if not
 * NULL, holds the payload: a large payload is then referenced instead of
 * copied and the queue takes over the reference (*msg becomes NULL).
 * 0 or BS_ENOMEM. */
int outq_push(struct outq *q, const struct iovec *iov, int cnt, size_t payload,
	      bs_msg_t **msg, size_t skip);

/* Queues the whole frame m->data[0..len) (payload bytes of it: payload),
 * of which the first `skip` bytes were written already. On success the
 * queue keeps one reference to m that the caller gave it. 0, BS_ENOMEM or
 * BS_EMSGSIZE (a frame of 4 GiB or more). */
int outq_push_ref(struct outq *q, bs_msg_t *m, size_t len, size_t payload, size_t skip);

/* Writes from the front until the queue is empty or the socket is full.
 * fl (NULL: not kept) learns where messages ended in what was written. */
enum outq_result outq_write(struct outq *q, int fd, struct outq_count *done,
			    struct inflight *fl);

/*
 * The socket is gone: the frame at the front that was partly written is to
 * be written again from its first byte. Frames of the front node that were
 * written whole leave the queue and are counted in *written (a block's
 * messages are otherwise counted when the block is written whole). f is
 * the framing the frames were queued with.
 */
void outq_rewind(struct outq *q, const bs_framing_t *f, struct outq_count *written);

/*
 * Empties a rewound queue into a new array of its messages, in order
 * (*out, *n; NULL and 0 when it is empty): each bs_data_t's msg owns the
 * payload data[0..len), id and user are filled in. 0, or BS_ENOMEM with
 * the queue untouched.
 */
int outq_hand_back(struct outq *q, const bs_framing_t *f, bs_id_t id, void *user,
		   bs_data_t **out, size_t *n);

/* Frees everything queued; *dropped says what. */
void outq_drop(struct outq *q, struct outq_count *dropped);

#endif
