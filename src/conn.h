/*
 * A connection slot and the table that maps ids to slots.
 *
 * Ids: node (16 bits) | generation (24) | slot (24). Lookup is one array
 * index and a compare. A slot's generation advances on every reuse and
 * starts at a random base per instance, so an id of a closed connection,
 * of another instance or of an earlier run does not match the slot's
 * current id. Slots are reused in FIFO order, so one slot's generation
 * wraps only after 2^24 reuses of *every* slot.
 *
 * Slot memory is never freed while the instance lives (pages of slots are
 * allocated on demand and published once), so any thread may look a slot
 * up and read its atomic id without a lock; it then takes the slot's lock
 * and checks the id again before touching anything else.
 *
 * Who owns which fields is marked below: the connection's I/O thread, its
 * holder (sched.h), or its lock.
 */
#ifndef BS_CONN_H
#define BS_CONN_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <ck_ring.h>
#include <ck_stack.h>

#include "buffstreams.h"
#include "inbox.h"
#include "list.h"
#include "outq.h"
#include "ring.h"

#define ID_SLOT_BITS 24
#define ID_GEN_BITS 24
#define ID_SLOT_MASK ((1u << ID_SLOT_BITS) - 1)
#define ID_GEN_MASK ((1u << ID_GEN_BITS) - 1)
#define TABLE_PAGE_SHIFT 10
#define TABLE_PAGE_SLOTS (1u << TABLE_PAGE_SHIFT)

/* The life of a connection's socket; the transitions are in life.c. */
enum conn_state {
	CONN_FREE = 0,
	CONN_CONNECTING,  /* dialled, connect() in progress */
	CONN_OPEN,
	CONN_CLOSING,     /* bs_send_close or shutdown: queued sends go, then
	                     the socket is shut down and closes on its EOF */
	CONN_CLOSED,      /* socket closed; events may still be delivered */
	CONN_DOWN,        /* a reconnecting dial between two sockets: no
	                     socket, a retry is due (life.h) */
};

struct redial;

struct io;

struct bs_conn {
	_Atomic uint64_t id;            /* 0 while the slot is free */
	uint32_t gen;
	uint32_t slot;
	_Atomic uint8_t state;          /* enum conn_state; changed under lock */
	int fd;                         /* closed under lock */
	struct io *io;                  /* the I/O thread that owns the socket */
	const bs_framing_t *framing;    /* interned (endpoint.h) */
	_Atomic(void *) user;           /* the application's value */
	struct redial *rd;              /* dials: their own state (redial.h);
	                                   NULL for accepted connections */

	/* Delivery (sched.h, recv.c). */
	_Atomic uint32_t sched;
	_Atomic(const void *) holder;   /* the holding thread's record */
	uint32_t hold_index;            /* the holder's: its entry for c */
	uint32_t rx_epoch;              /* the holder's: the epoch whose frames
	                                   are delivered (the last up event
	                                   taken); see inbox.h */
	struct inbox in;

	/* Send side: under lock. */
	pthread_mutex_t lock;
	struct outq out;
	bool out_blocked;               /* the socket was full: EPOLLOUT resumes */
	bool out_armed;                 /* EPOLLOUT is in the socket's epoll mask */
	bool send_waiters;              /* a sender waits for room */
	bool more_listed;               /* in a thread's BS_SEND_MORE list */
	uint8_t slow;                   /* enum bs_slow_policy */
	uint64_t dropped_msgs, dropped_bytes;
	uint64_t written_msgs;          /* written whole to a socket */

	/* Read side: the I/O thread's. rx holds bytes read but not yet cut
	 * into frames: one incomplete frame, in a private buffer. */
	bs_msg_t *rx;
	size_t rx_off, rx_end;
	bool rx_private;
	bool hup;                       /* epoll reported EOF or an error: read
	                                   on until read() says so */
	uint32_t sock_epoch;            /* the socket's epoch, which its frames
	                                   carry: a reconnecting dial's grows
	                                   with each up event */
	_Atomic bool rx_parked;         /* not read: its backlog is too long */

	/* The I/O thread's lists. */
	struct list_node ready_node;    /* ready or parked list */
	uint8_t listed;                 /* which one, see worker.c */
	struct list_node idle_node;     /* by last activity */
	uint32_t idle_stamp;            /* when put at the idle list's tail */
	_Atomic uint32_t last_active;   /* coarse ms; senders store it too */
	ck_stack_entry_t adopt_entry;   /* handed to the I/O thread */

	/* Event payloads, written before the event is queued. */
	uint32_t listener;
	uint8_t dialled;
	socklen_t peer_len;
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer;
	int close_reason, close_errno;
	uint64_t unsent_msgs, unsent_bytes;
};

struct conn_table {
	_Atomic(struct bs_conn *) *pages;
	uint32_t nslots, npages;
	_Atomic uint32_t fresh;          /* slots never used yet: [fresh, nslots) */
	struct mp_ring free_ring;        /* recycled slot numbers + 1, FIFO */
	uint32_t gen_base;
	uint16_t node;
	_Atomic uint32_t in_use;
};

int table_init(struct conn_table *t, uint32_t max_conns, uint16_t node);
/* Frees every slot page, and what the inboxes and queues still hold. */
void table_destroy(struct conn_table *t);

/* A free slot with a new id, state CONN_FREE: the caller sets it up.
 * NULL when every slot is in use. Any thread. */
struct bs_conn *table_alloc(struct conn_table *t);
/* Returns a slot whose last event was delivered; its id dies. Any thread. */
void table_free(struct conn_table *t, struct bs_conn *c);

/* The slot an id names while that id is current, else NULL. Lock-free. */
static inline struct bs_conn *table_lookup(struct conn_table *t, bs_id_t id)
{
	uint32_t slot = (uint32_t)(id & ID_SLOT_MASK);
	struct bs_conn *page;

	if (id == 0 || slot >= t->nslots || (uint16_t)(id >> 48) != t->node)
		return NULL;
	page = atomic_load_explicit(&t->pages[slot >> TABLE_PAGE_SHIFT],
				    memory_order_acquire);
	if (page == NULL)
		return NULL;
	page += slot & (TABLE_PAGE_SLOTS - 1);
	if (atomic_load_explicit(&page->id, memory_order_acquire) != id)
		return NULL;
	return page;
}

/* Locks and returns the slot id names while id is current, else NULL. */
struct bs_conn *table_lock(struct conn_table *t, bs_id_t id);

static inline bs_id_t conn_id(struct bs_conn *c)
{
	return atomic_load_explicit(&c->id, memory_order_relaxed);
}

static inline enum conn_state conn_state(struct bs_conn *c)
{
	return (enum conn_state)atomic_load_explicit(&c->state, memory_order_relaxed);
}

#endif
