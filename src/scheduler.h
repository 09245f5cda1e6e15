/*
 * The scheduler of ready connections: which connection's event the next
 * bs_recv_* call gets, so that each connection's events are processed by
 * one thread at a time, in order, and no connection waits behind another.
 *
 * A connection, not a message, waits in line. Three ck rings (ring.h) hold
 * connections whose next event is an open, a data message or a close; a
 * connection is in at most one of them at a time, so each ring has room for
 * every slot and a push cannot fail. The thread that takes a connection
 * from a ring *holds* it: the connection is in no ring until the holder
 * releases it (at its next bs_recv_* call, see recv.c). Release puts it at
 * the back of the line its next event belongs to, or leaves it idle.
 *
 * One word per connection (bs_conn.sched) makes this race-free:
 *   SCHED_OWNED      in a ring or held. Whoever sets it (an I/O thread
 *                    that read data into an idle connection, or the
 *                    releasing holder that finds more) pushes it to a
 *                    ring; whoever clears it (a holder going idle) looks
 *                    at the inbox again afterwards. Both steps are
 *                    sequentially consistent read-modify-writes after
 *                    (resp. before) the inbox access, so data appended
 *                    while the holder lets go is never left unscheduled.
 *   SCHED_OPEN_DUE   the open event has not been taken yet.
 *   SCHED_CLOSE_DUE  the socket is closed; the close event follows the
 *                    inbox's last frame.
 *   SCHED_EVENT_DUE  a reconnecting dial's event (down, up: redial.h)
 *                    waits for the open line. Set and cleared under the
 *                    connection's lock, with the event queue.
 *
 * A reconnecting dial's events must stay in order with its frames: a down
 * after every frame read from the broken socket, frames of the new socket
 * after the up that announces it. Frames carry their socket's epoch
 * (inbox.h) and the holder delivers one epoch, c->rx_epoch, which taking
 * an up event advances. So with an event due, the owner sends c to the
 * data line while frames of the delivered epoch are next, else to the
 * open line. A down is queued after its socket's frames were linked, and
 * an up before its socket's first frame, by the same I/O thread: an owner
 * that sees EVENT_DUE sees every frame that must come first.
 *
 * Waiting uses ck event counts, one per ring: a consumer snapshots the
 * count, tries the ring, and sleeps only if the count did not move. I/O
 * threads bump a count once per loop turn (sched_wake), never per event.
 *
 * Threads: sched_new, sched_data, sched_event and sched_closed are the
 * owning I/O thread's; sched_event_due is called under the connection's
 * lock; sched_take and sched_release any application thread's.
 */
#ifndef BS_SCHED_H
#define BS_SCHED_H

#include <ck_ec.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ring.h"

struct bs_conn;

enum ev_kind { EV_OPEN = 0, EV_DATA, EV_CLOSE, EV_KINDS };

#define SCHED_OWNED 0x1u
#define SCHED_OPEN_DUE 0x2u
#define SCHED_CLOSE_DUE 0x4u
#define SCHED_EVENT_DUE 0x8u

struct sched {
	struct mp_ring ring[EV_KINDS];
	struct ck_ec32 ec[EV_KINDS];
	struct ck_ec_mode mode;
	bool open_events, close_events;
};

/* Rings for up to max_conns connections. 0 or BS_ENOMEM. */
int sched_init(struct sched *s, uint32_t max_conns, bool open_events, bool close_events);
void sched_free(struct sched *s);

/* A new connection is open: its open event joins the line (or, with open
 * events off, it waits idle for data). Sets bit kind of *wake for
 * sched_wake. I/O thread. */
void sched_new(struct sched *s, struct bs_conn *c, unsigned *wake);
/* Frames were appended to c's inbox. I/O thread. */
void sched_data(struct sched *s, struct bs_conn *c, unsigned *wake);
/* Marks c's event queue non-empty (the I/O thread, having queued one) or
 * empty (the holder, having taken the last). Under c's lock. */
void sched_event_due(struct bs_conn *c, bool due);
/* An event was queued for c (sched_event_due after it): c joins a line
 * unless it is owned. I/O thread, without c's lock. */
void sched_event(struct sched *s, struct bs_conn *c, unsigned *wake);
/* c's socket is closed and its close payload written. Returns true when
 * nothing more will be delivered and nobody holds c: the caller frees it.
 * I/O thread. */
bool sched_closed(struct sched *s, struct bs_conn *c, unsigned *wake);
/* Announces what sched_new/data/closed queued (bits of *wake). */
void sched_wake(struct sched *s, unsigned wake);
/* Wakes every waiting consumer (shutdown). */
void sched_wake_all(struct sched *s);

/* Takes the connection at the front of a line; the caller holds it. NULL
 * when the line is empty. Any thread. */
struct bs_conn *sched_take(struct sched *s, enum ev_kind kind);
/* Ends a hold (after an open or data event; a close event ends the
 * connection instead): c joins the line of its next event, or goes idle.
 * Returns true when c is finished (closed, all delivered, close events off)
 * and the caller frees it. Holder only. */
bool sched_release(struct sched *s, struct bs_conn *c);

/* Event counts for waiting: a snapshot, then a wait until it changes or
 * the CLOCK_MONOTONIC deadline (NULL: none) passes; 0, or -1 on timeout. */
uint32_t sched_ec_value(struct sched *s, enum ev_kind kind);
int sched_ec_wait(struct sched *s, enum ev_kind kind, uint32_t snap,
		  const struct timespec *deadline);
/* Connections waiting in a line (a gauge). */
unsigned sched_queued(struct sched *s, enum ev_kind kind);

#endif
