/*
 * A connection's life, as one state machine (enum conn_state in conn.h):
 *
 *   CONNECTING --connected--> OPEN --request_close--> CLOSING
 *        |  ^                  |                        |
 *        |  +---redial---+     |                        |
 *        |             DOWN <--+--down (a reconnecting dial's break)
 *        |               |
 *        +---------------+----close---------------------+--> CLOSED --finish--> FREE
 *
 *   opened   (I/O thread) the socket is up: OPEN, and the open event joins
 *            the line (a dial's: its FIRST or AGAIN event);
 *   request_close (any thread, under the lock) bs_send_close, shutdown or
 *            a slow consumer: CLOSING; queued sends go first, then the
 *            socket is shut down and its EOF closes it; a dial that is
 *            down is asked to close at once;
 *   down     (I/O thread) a reconnecting dial's socket broke or an attempt
 *            failed: the socket is closed, the queue rewound to a frame
 *            boundary and kept, what may be lost is counted, and the DOWN
 *            event queued; the I/O thread retries later (redial);
 *   redial   (I/O thread) a new socket for a dial that is down;
 *   close    (I/O thread) for good: the socket is closed and what is still
 *            queued is handed back (hand_back dials) or dropped and
 *            counted; the close event follows the connection's last
 *            message and event;
 *   finish   (whoever delivers the last event) the slot is freed and the
 *            id dies.
 *
 * life_flush writes a connection's queue, under its lock, from any thread.
 */
#ifndef BS_LIFE_H
#define BS_LIFE_H

#include "instance.h"

/* Fills in a new slot's socket and framing, as configured. */
void life_setup(struct bs *bs, struct bs_conn *c, int fd, const bs_framing_t *f);

/* The socket is up (accepted, or a dial's connect completed). I/O thread. */
void life_opened(struct bs *bs, struct bs_conn *c, unsigned *wake);

/* Writes what is queued; with c locked. Once the queue is empty and c is
 * CLOSING the socket is shut down. Returns 0 (written, or waiting for
 * EPOLLOUT) or BS_ESYS when the socket failed (its close event follows). */
int life_flush(struct bs *bs, struct bs_conn *c);

/* OPEN -> CLOSING with reason; with c locked. A connecting one records the
 * reason and becomes CLOSING when it is up (life_opened); a dial that is
 * down records it and wakes its I/O thread, which closes it. */
void life_request_close(struct bs *bs, struct bs_conn *c, int reason);

/* A slow consumer: drops what is queued (counted as unsent; a hand_back
 * dial keeps it to hand back), shuts the socket down and closes with
 * reason; with c locked, c OPEN. */
void life_abort(struct bs *bs, struct bs_conn *c, int reason);

/* A reconnecting dial's socket broke (or its attempt failed: then
 * CONNECTING or already DOWN) and retry `attempt` follows in delay ms:
 * DOWN, as described above. I/O thread, with c off its lists. */
void life_down(struct bs *bs, struct bs_conn *c, int reason, int err, uint32_t attempt,
	       uint32_t delay, unsigned *wake);

/* DOWN -> CONNECTING on the new socket fd. I/O thread. */
void life_redial(struct bs *bs, struct bs_conn *c, int fd);

/* Closes c for good (any state but FREE/CLOSED). reason BS_EOF or
 * BS_ESHUTDOWN yields to a reason asked for earlier. I/O thread, with c
 * off its lists. */
void life_close(struct bs *bs, struct bs_conn *c, int reason, int err, unsigned *wake);

/* The last event of c was delivered: frees the slot. Any thread. */
void life_finish(struct bs *bs, struct bs_conn *c);

#endif
