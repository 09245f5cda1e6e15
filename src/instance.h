/*
 * The instance: what every layer from the connection life upwards shares.
 * Each part is owned by its module; this header only gathers them.
 */
#ifndef BS_INSTANCE_H
#define BS_INSTANCE_H

#include <pthread.h>
#include <stdatomic.h>

#include "buffstreams.h"
#include "conn.h"
#include "endpoint.h"
#include "hold.h"
#include "log.h"
#include "poller.h"
#include "scheduler.h"

#define BS_MAX_LISTENERS 64
#define BS_MAX_IO_THREADS 64 /* one bit each in a listener's dropped_by */

/* Shutdown advances through these; I/O threads act on each. */
enum bs_phase {
	PHASE_RUN = 0,
	PHASE_DRAIN,  /* bs_shutdown: no new connections, flush, then close */
	PHASE_FORCE,  /* deadline passed: close whatever is left */
	PHASE_EXIT,   /* I/O threads leave their loops */
	PHASE_DEAD,   /* bs_recv_* return BS_ESHUTDOWN whatever is queued */
};

struct listener;
struct worker;

struct bs {
	bs_config_t cfg;
	struct logger log;
	struct endpoints eps;
	struct conn_table table;
	struct sched sched;
	struct hold_registry holds;

	unsigned nworkers;
	struct worker *workers;
	struct io *io[BS_MAX_IO_THREADS];
	_Atomic unsigned next_io;       /* round-robin placement */

	pthread_mutex_t listen_lock;    /* the listener table */
	_Atomic(struct listener *) listeners[BS_MAX_LISTENERS];
	_Atomic unsigned listeners_closing; /* marked closing, not yet freed */
	uint32_t listener_gen_base;     /* listener ids, under listen_lock: */
	uint32_t listener_ids_issued;   /*   see listener.c */

	_Atomic int phase;              /* enum bs_phase */
	_Atomic unsigned in_calls;      /* threads inside bs_recv_* */
	_Atomic uint32_t now_ms;        /* coarse clock, advanced by I/O threads */

	pthread_mutex_t send_wait_lock; /* senders waiting for queue room */
	pthread_cond_t send_wait_cond;  /* on CLOCK_MONOTONIC */

	/* Counters bumped by any thread. */
	_Atomic uint64_t conns_dialled, msgs_out, bytes_out, sends_refused, sends_stale,
		send_writes, msgs_dropped, slow_disconnects, holds_stuck, undelivered,
		dial_retries, reconnects, msgs_maybe_lost, msgs_returned;
};

/* Wakes every I/O thread (phase and listener changes). Any thread. */
static inline void instance_wake_io(struct bs *bs)
{
	for (unsigned i = 0; i < bs->nworkers; i++)
		io_wake(bs->io[i]);
}

/* The I/O thread the next new connection goes to. Any thread. */
static inline struct io *instance_next_io(struct bs *bs)
{
	return bs->io[atomic_fetch_add_explicit(&bs->next_io, 1, memory_order_relaxed) %
		      bs->nworkers];
}

static inline bool instance_running(struct bs *bs)
{
	return atomic_load(&bs->phase) == PHASE_RUN;
}

#endif
