/*
 * Which messages a broken connection may have lost. The kernel tells how
 * many of the bytes written to a socket it still holds unacknowledged
 * (SIOCOUTQ); turning that into messages needs to know where messages
 * ended in the byte stream. This keeps a few marks (bytes written so far,
 * messages completed so far) as writes happen, at least `step` bytes
 * apart: a message whose end is after the last mark at or before the
 * acknowledged point is counted as maybe lost. The count is an upper
 * bound: a mark may lag the truth (the messages of a copy or reference
 * block count when the block is written whole), never lead it.
 *
 * Memory is fixed: when the marks are full, those behind the acknowledged
 * point are dropped; if none is, every other mark is and the step doubles,
 * so the bound grows coarser instead of the memory larger.
 *
 * No locking of its own: the connection's lock guards it.
 */
#ifndef BS_INFLIGHT_H
#define BS_INFLIGHT_H

#include <stdint.h>

#define INFLIGHT_MARKS 16

struct inflight_mark {
	uint64_t bytes, msgs;
};

struct inflight {
	uint64_t bytes, msgs;          /* written to this socket in all */
	struct inflight_mark base;     /* at or before every unacknowledged byte */
	uint64_t step;                 /* least bytes between two marks */
	uint8_t first, n;
	struct inflight_mark mark[INFLIGHT_MARKS];
};

/* A new socket: nothing written yet. */
void inflight_reset(struct inflight *f);

/* bytes were written to fd, completing msgs messages. */
void inflight_wrote(struct inflight *f, int fd, uint64_t bytes, uint64_t msgs);

/* Messages found complete later than written (a rewind counts the whole
 * frames of a half-written block): the total grows, the marks do not. */
static inline void inflight_completed(struct inflight *f, uint64_t msgs)
{
	f->msgs += msgs;
}

/* Of the messages written, how many end in the last `unacked` bytes. */
uint64_t inflight_maybe_lost(const struct inflight *f, uint64_t unacked);

/* At a break: the bytes written to fd (of this family) that may not have
 * reached the peer. TCP: what the kernel holds unacknowledged; a Unix
 * socket: SO_SNDBUF plus one buffer, the most its peer may have held
 * unread (the kernel forgets them when the peer closes). */
uint64_t inflight_unacked_at_break(int fd, int family);

#endif
