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
 */
#ifndef BS_CONN_H
#define BS_CONN_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <ck_ring.h>
#include <ck_stack.h>

#include "buffstreams.h"

#define ID_SLOT_BITS 24
#define ID_GEN_BITS 24
#define ID_SLOT_MASK ((1u << ID_SLOT_BITS) - 1)
#define ID_GEN_MASK ((1u << ID_GEN_BITS) - 1)
#define TABLE_PAGE_SHIFT 10
#define TABLE_PAGE_SLOTS (1u << TABLE_PAGE_SHIFT)

/*
 * The gate orders a connection's events as the application observes them.
 * Low bits count events the application has not been given back yet: the
 * open event (until bs_recv_open returns it) and every queued message
 * (until bs_recv_data returns it). The close event is queued by whoever
 * brings the count to zero while GATE_CLOSED is set — the I/O thread that
 * closes, or the application thread that returns the last message — so it
 * is queued exactly once and after everything else was returned.
 */
#define GATE_PENDING_MASK 0x0fffffffu
#define GATE_OPEN_DONE 0x10000000u   /* open returned; reading may start */
#define GATE_READ_WAIT 0x20000000u   /* bytes wait for GATE_OPEN_DONE */
#define GATE_CLOSED 0x40000000u      /* socket closed; close event due */

enum conn_state {
	CONN_FREE = 0,
	CONN_CONNECTING,  /* dialled, connect() in progress */
	CONN_OPEN,
	CONN_CLOSED,      /* socket closed, close event pending or queued */
};

/* A queued outgoing byte string: up to three pieces (header, payload,
 * trailer), or a copy block that many small sends append to. */
struct out_node {
	struct out_node *next;
	bs_msg_t *msg;          /* released once sent; NULL for copy blocks */
	size_t sent;            /* bytes of the node already written */
	size_t size;            /* total bytes of the node */
	uint32_t nmsgs;         /* messages that end inside this node */
	size_t payload;         /* their payload bytes */
	uint8_t npieces;
	struct iovec piece[3];
	size_t cap;             /* copy blocks: capacity of data[] */
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	uint8_t trailer;
	_Alignas(16) uint8_t data[];
};

struct endpoint;
struct worker;

struct bs_conn {
	_Atomic uint64_t id;            /* 0 while the slot is free */
	_Atomic uint32_t gate;
	uint32_t gen;
	uint32_t slot;
	int fd;
	struct worker *worker;
	const struct endpoint *ep;      /* framing */
	_Atomic uint8_t state;          /* enum conn_state */

	/* Send side: guarded by lock. */
	pthread_mutex_t lock;
	struct out_node *out_head, *out_tail;
	_Atomic size_t out_bytes;       /* also read unlocked as a hint */
	uint32_t out_msgs;              /* queued messages, partly sent included */
	size_t out_payload;             /* their payload bytes */
	bool out_blocked;               /* waiting for EPOLLOUT */
	bool out_armed;                 /* EPOLLOUT is in the socket's epoll mask */
	bool close_requested;           /* bs_send_close or shutdown */
	bool send_waiters;              /* a sender waits for room */
	_Atomic bool held_back;         /* queued frames wait for more replies
	                                   (coalesce.c); read unlocked as a hint */

	/* Read side: the owning I/O thread only. rx holds bytes read but not
	 * yet parsed into events: a slice of a chunk (frames waiting for room
	 * in the event queue) or a private buffer with one incomplete frame. */
	bs_msg_t *rx;
	size_t rx_off, rx_end;
	bool rx_private;
	bool hup;                       /* epoll reported EOF or an error: read
	                                   on until read() says so, since no
	                                   further edge will come */

	/* Worker lists: the owning I/O thread only. */
	struct bs_conn *list_prev, *list_next; /* ready or waiting list */
	uint8_t listed;                 /* which list, see worker.c */
	struct bs_conn *lru_prev, *lru_next;
	uint32_t lru_stamp;             /* when it was put at the LRU tail */
	_Atomic uint32_t last_active;   /* coarse ms; senders store it too */
	ck_stack_entry_t adopt_entry;   /* dialled: handed to the worker */

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
	ck_ring_t free_ring;             /* recycled slot numbers + 1, FIFO */
	ck_ring_buffer_t *free_buf;
	uint32_t gen_base;
	uint16_t node;
	_Atomic uint32_t in_use;
};

int table_init(struct conn_table *t, uint32_t max_conns, uint16_t node);
void table_destroy(struct conn_table *t);

/* A free slot, locked-in with a new id, state CONN_FREE->caller sets it.
 * NULL when every slot is in use. Any thread. */
struct bs_conn *table_alloc(struct conn_table *t);
/* Returns a slot; its id dies. Any thread. */
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

/* The slot by number regardless of id (the slot must exist). */
static inline struct bs_conn *table_slot(struct conn_table *t, bs_id_t id)
{
	uint32_t slot = (uint32_t)(id & ID_SLOT_MASK);
	struct bs_conn *page = atomic_load_explicit(
		&t->pages[slot >> TABLE_PAGE_SHIFT], memory_order_acquire);
	return page + (slot & (TABLE_PAGE_SLOTS - 1));
}

#endif
