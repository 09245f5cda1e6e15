/*
 * The instance and its I/O threads: the structures every core file shares.
 *
 * Threads and ownership, in one place:
 *   - An I/O thread (struct worker) owns its epoll set, its read chunk, its
 *     connection lists and the read side of its connections. It is the only
 *     producer of its data ring.
 *   - Application threads consume the data rings, the open ring and the
 *     close ring, and send through a connection's lock.
 *   - A connection's socket is closed by its I/O thread under the
 *     connection's lock, so a sender holding the lock never writes to a
 *     reused descriptor.
 */
#ifndef BS_CORE_H
#define BS_CORE_H

#include <ck_ec.h>
#include <ck_ring.h>
#include <ck_stack.h>
#include <pthread.h>
#include <stdatomic.h>

#include "addr.h"
#include "buffstreams.h"
#include "conn.h"
#include "msg.h"

CK_RING_PROTOTYPE(data, bs_data)

#define BS_MAX_LISTENERS 64
#define BS_MAX_IO_THREADS 64 /* one bit each in a listener's dropped_by */

/* How a connection frames messages. One per distinct framing, shared by
 * every connection that uses it, alive until bs_destroy: a connection can
 * outlive the listener that accepted it. */
struct endpoint {
	bs_framing_t framing;   /* max_message_size resolved */
	struct endpoint *next;
};

struct listener {
	const struct endpoint *ep;
	uint32_t id;            /* generation << 6 | slot, see listener.c */
	int fd;
	bs_addr_t addr;
	_Atomic bool active;    /* accepting: every I/O thread watches it */
	_Atomic bool closing;
	uint64_t dropped_by;    /* I/O threads that dropped it (bit each);
	                           under ep_lock */
};

/* Counters written by one thread each: plain relaxed stores, summed on read. */
struct worker_stats {
	_Atomic uint64_t msgs_in, bytes_in, read_pauses, frames_rejected,
		idle_timeouts, accept_errors, accepted, closed, unsent_msgs;
	_Atomic uint64_t paused_reads;
};

struct conn_list {
	struct bs_conn *head, *tail;
	uint32_t count;
};

struct worker {
	struct bs *bs;
	unsigned index;
	pthread_t thread;
	int epfd, wakefd;
	_Atomic bool wake_pending;  /* an eventfd write is on its way */
	_Atomic bool rx_paused;     /* ring was full: wake me when half empty */
	_Atomic bool open_returned; /* some GATE_READ_WAIT connection may go */
	ck_ring_t ring;             /* data events, this thread the producer */
	struct bs_data *ring_buf;
	uint32_t ring_cap;          /* a power of two */
	uint32_t ring_limit;        /* recv_queue_len: events queued at most */
	ck_stack_t adopt;           /* new connections handed to this thread */

	/* Owned by the thread. */
	bs_msg_t *chunk;
	uint32_t chunk_used;
	long chunk_given;
	struct conn_list ready;     /* bytes to read */
	struct conn_list waiting;   /* bytes waiting for their open event */
	struct bs_conn *lru_head, *lru_tail;     /* by last activity */
	_Atomic uint32_t nconns;
	bool stop_begun;
	uint64_t listeners_paused;  /* bit per listener slot */
	uint32_t accept_retry_ms;
	bool pushed;                /* data events queued this round */
	uint32_t now;               /* this thread's clock, read once a turn */
	uint64_t poll_ns;           /* how long to poll before sleeping, see
	                               wait_events */
	struct worker_stats st;
};

/* Shutdown advances through these; I/O threads act on each. */
enum bs_phase {
	PHASE_RUN = 0,
	PHASE_DRAIN,  /* bs_shutdown: no new connections, flush, then close */
	PHASE_FORCE,  /* deadline passed: close whatever is left */
	PHASE_EXIT,   /* I/O threads leave their loops */
	PHASE_DEAD,   /* bs_recv_* return BS_ESHUTDOWN whatever is queued */
};

struct bs {
	bs_config_t cfg;
	struct endpoint default_ep;
	pthread_mutex_t ep_lock;        /* interned endpoints, listener table */
	struct endpoint *eps;           /* interned, under ep_lock */
	_Atomic(struct listener *) listeners[BS_MAX_LISTENERS];
	_Atomic unsigned listeners_closing; /* marked closing, not yet freed */
	uint32_t listener_gen_base;     /* listener ids, under ep_lock: */
	uint32_t listener_ids_issued;   /*   see listener.c */

	struct conn_table table;
	unsigned nworkers;
	struct worker *workers;
	_Atomic unsigned next_worker;   /* round-robin placement of new connections */

	ck_ring_t open_ring, close_ring;  /* ids; room for every slot */
	ck_ring_buffer_t *open_buf, *close_buf;
	struct ck_ec32 open_ec, data_ec, close_ec;
	struct ck_ec_mode ec_mode;

	_Atomic uint32_t now_ms;        /* coarse clock, advanced by workers */
	_Atomic int phase;              /* enum bs_phase */
	_Atomic unsigned in_calls;      /* threads inside bs_recv_* */

	pthread_mutex_t send_wait_lock; /* senders waiting for queue room */
	pthread_cond_t send_wait_cond;

	_Atomic uint64_t conns_dialled, msgs_out, bytes_out, sends_refused,
		sends_stale, send_writes;

	struct bs *live_next;           /* instances alive, see coalesce.c */
};

/* ---- bs.c */
uint32_t bs_now_ms(void);
/* The shared endpoint for a framing (NULL: the default), or NULL when out
 * of memory. Any thread. */
const struct endpoint *bs_endpoint(struct bs *bs, const bs_framing_t *f);
/* Sockets open in all I/O threads. */
unsigned bs_live_sockets(struct bs *bs);
void bs_log(struct bs *bs, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Whether `ms` passed from `since` to `now`, on a wrapping millisecond
 * clock. Signed: a stamp taken by another thread may be a little ahead. */
static inline bool ms_elapsed(uint32_t now, uint32_t since, uint32_t ms)
{
	return (int32_t)(now - since) >= (int32_t)ms;
}

static inline void stat_add(_Atomic uint64_t *s, uint64_t n)
{
	atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/* ---- worker.c */
int worker_start(struct bs *bs, struct worker *w, unsigned index);
void worker_wake(struct worker *w);
void worker_join(struct worker *w);
void worker_free(struct worker *w);
/* Hands a new connection (c->worker == w) to w, from any thread. */
void worker_adopt(struct worker *w, struct bs_conn *c);
/* The I/O thread the next new connection goes to. */
struct worker *worker_next(struct bs *bs);

/* ---- events.c */
int events_init(struct bs *bs);
void events_free(struct bs *bs);
void events_push_open(struct bs *bs, struct bs_conn *c);
/* The socket of c was closed: queue its close event when the gate allows. */
void events_conn_closed(struct bs *bs, struct bs_conn *c);
/* Gives back n events of c returned to the application; true when that
 * emptied the gate (nothing of c waits in a queue any more). */
bool events_gate_release(struct bs *bs, struct bs_conn *c, uint32_t n);
void events_wake_all(struct bs *bs);

/* ---- send.c */
/* Writes what is queued; called with c->lock held. Returns false if the
 * socket failed (the I/O thread will see the error and close). */
bool send_flush_locked(struct bs *bs, struct bs_conn *c);
/* Frees what is queued, counting it as unsent; c->lock held. */
void send_drop_locked(struct bs *bs, struct bs_conn *c);

/* ---- listener.c */
void listener_accept(struct worker *w, struct listener *l);
void listener_resume(struct worker *w);
void listener_drop_closing(struct worker *w);
void listeners_close_all(struct bs *bs);

#endif
