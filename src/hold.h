/*
 * Holds: which connections a thread holds, and the instance's registry of
 * holding threads.
 *
 * A thread that receives an event of a connection holds it until its next
 * bs_recv_* call, bs_release, or its exit (recv.c does the releasing). The
 * record also lists the connections the thread deferred BS_SEND_MORE frames
 * to, and since when, for recv.c to decide when they are written. Each
 * thread has one record, thread-local; a record is registered with the
 * instance it receives from, so that an I/O thread can find holds that
 * last too long (hold_scan) and bs_destroy can forget the records of
 * threads that outlive it.
 *
 * Locks: the process-wide hold lock guards every registry's list and each
 * record's reg pointer; it is taken only when a thread first receives from
 * an instance, switches instances, exits, by bs_destroy and by the scan,
 * never per event. Lock order: hold lock, then a connection's lock.
 */
#ifndef BS_HOLD_H
#define BS_HOLD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buffstreams.h"

struct bs_conn;

/* One call takes at most this many connections. */
#define HOLD_MAX 256u
/* The first size of a thread's list of connections it queued BS_SEND_MORE
 * frames to and did not write yet (recv.c says when). The list doubles as
 * needed, up to the instance's max_connections: a fan-out to thousands of
 * subscribers lists every one of them (a connection is on one thread's
 * list at a time). A send that finds it full, or cannot grow it, writes at
 * once. */
#define HOLD_MORE_FIRST 256u

struct held {
	struct bs_conn *c;
	bool sent;              /* the holder queued sends to c: flush at release */
};

struct hold_registry;

struct holder {
	_Atomic(struct hold_registry *) reg;  /* instance held on; NULL: none */
	struct holder *next;                  /* in reg's list */
	unsigned n;
	struct held h[HOLD_MAX];
	_Atomic uint32_t since;               /* clock_ms of the hold; with n */
	_Atomic bs_id_t first;                /* a connection held, for the log */
	_Atomic bool reported;
	bool exit_armed;
	unsigned nmore;
	uint32_t more_cap;
	unsigned more_events;                 /* events taken since more[0] */
	uint64_t more_since;                  /* clock_ns when more[0] came */
	bs_id_t *more;                        /* malloc'd; more_cap entries */
	uint64_t poll_ns;                     /* recv.c: how long a receive looks
	                                         again before it sleeps */
};

struct hold_registry {
	struct holder *list;
};

/* This thread's record. */
struct holder *hold_self(void);

void hold_lock(void);
void hold_unlock(void);
/* Under the hold lock. */
void hold_register(struct hold_registry *reg, struct holder *h);
void hold_unregister(struct holder *h);
/* The instance ends: its records forget it. Under the hold lock. */
void hold_registry_close(struct hold_registry *reg);

/* Records that c was taken (holder only); hold_clear after releasing. */
void hold_add(struct holder *h, struct bs_conn *c, uint32_t now);
void hold_clear(struct holder *h);

/* Room for one more entry in h's BS_SEND_MORE list, growing it up to max
 * entries; false when it is full or memory is short. Holder only. */
bool hold_more_room(struct holder *h, uint32_t max);
/* Frees h's list (nmore 0). At the thread's exit. */
void hold_more_free(struct holder *h);

/* Holds on reg that began at least ms ago and were not reported yet: up
 * to max of their connection ids (and how long they lasted) are written.
 * Returns how many. Takes the hold lock. Any thread. */
unsigned hold_scan(struct hold_registry *reg, uint32_t now, uint32_t ms, bs_id_t *ids,
		   uint32_t *held_ms, unsigned max);

#endif
