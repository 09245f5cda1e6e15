/*
 * What other threads may do to an I/O thread: its epoll set (watch a
 * connection or a listener), its wake-up, and the hand-over of new
 * connections. The loop itself is worker.c.
 *
 * Wake-ups go through one eventfd, written only when no wake-up is already
 * on its way (wake_pending), so a burst of requests costs one write and one
 * epoll return.
 */
#ifndef BS_POLLER_H
#define BS_POLLER_H

#include <ck_stack.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct bs_conn;

/* epoll tags in the low bits of the event's data (pointers are aligned). */
#define TAG_CONN 0u
#define TAG_LISTENER 1u
#define TAG_WAKE 2u
#define TAG_MASK 3u

/* Counters an I/O thread writes, summed by bs_stats. */
struct io_stats {
	_Atomic uint64_t msgs_in, bytes_in, read_pauses, frames_rejected, idle_timeouts,
		accept_errors, accepted, closed, unsent_msgs, paused_reads;
};

struct io {
	unsigned index;
	int epfd, wakefd;
	_Atomic bool wake_pending;  /* an eventfd write is on its way */
	_Atomic bool resume;        /* a parked connection may be read again */
	_Atomic bool poked;         /* a dial that is down was asked to retry
	                               or to close (redial.h poke) */
	ck_stack_t adopt;           /* new connections handed to this thread */
	_Atomic uint32_t nconns;    /* sockets open on this thread */
	struct io_stats st;
};

/* 0 or BS_ESYS. */
int io_init(struct io *io, unsigned index);
void io_free(struct io *io);

/* Wakes the thread. Any thread. */
void io_wake(struct io *io);
/* The thread's side of a wake-up: drains the eventfd. I/O thread. */
void io_woken(struct io *io);
/* Hands a new connection to the thread. Any thread. */
void io_adopt(struct io *io, struct bs_conn *c);
/* The connections handed over since the last call. I/O thread. */
ck_stack_entry_t *io_adopted(struct io *io);

/*
 * Watches c's socket for input, and for output when `out`. EPOLLOUT is
 * asked for only while a connect is in progress or a send waits for room:
 * a socket with it in its mask wakes its thread at every ACK. 0 or BS_ESYS.
 * add: first registration. Under c's lock, or before c is published.
 */
int io_watch(struct bs_conn *c, bool add, bool out);
/* Watches a listening socket (EPOLLEXCLUSIVE), or stops. 0 or BS_ESYS. */
int io_watch_listener(struct io *io, int fd, void *listener, bool on);

#endif
