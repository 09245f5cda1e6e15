/*
 * A connection's life, as one state machine (enum conn_state in conn.h):
 *
 *   CONNECTING --connected--> OPEN --request_close--> CLOSING
 *        |                     |                        |
 *        +--------------------close---------------------+--> CLOSED --finish--> FREE
 *
 *   opened   (I/O thread) the socket is up: OPEN, and the open event joins
 *            the line;
 *   request_close (any thread, under the lock) bs_send_close, shutdown or
 *            a slow consumer: CLOSING; queued sends go first, then the
 *            socket is shut down and its EOF closes it;
 *   close    (I/O thread) the socket is closed and what is still queued
 *            to send is dropped and counted; the close event follows the
 *            connection's last message;
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
 * reason and becomes CLOSING when it is up (life_opened). */
void life_request_close(struct bs *bs, struct bs_conn *c, int reason);

/* A slow consumer: drops what is queued (counted as unsent), shuts the
 * socket down and closes with reason; with c locked, c OPEN. */
void life_abort(struct bs *bs, struct bs_conn *c, int reason);

/* Closes c's socket (any state but FREE/CLOSED). reason BS_EOF or
 * BS_ESHUTDOWN yields to a reason asked for earlier. I/O thread, with c
 * off its lists. */
void life_close(struct bs *bs, struct bs_conn *c, int reason, int err, unsigned *wake);

/* The last event of c was delivered: frees the slot. Any thread. */
void life_finish(struct bs *bs, struct bs_conn *c);

#endif
