/*
 * A dialled connection's own state (bs_conn.rd): its options, the address
 * to dial again, the current run of retries, the events that wait for the
 * open line (down, up again), where messages ended in the bytes written
 * (inflight.h), and the messages handed back when it closes for good.
 *
 * Threads, by field: the owning I/O thread's; under the connection's lock;
 * `poke` any thread's; `returned` written by the I/O thread before the
 * close event is queued and taken by the thread that receives it.
 */
#ifndef BS_REDIAL_H
#define BS_REDIAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "buffstreams.h"
#include "inflight.h"
#include "timers.h"

/* Events of one dial waiting to be taken. Retries wait while fewer than
 * two places are free (an attempt may add an up and a down), so that the
 * queue never overflows; downs in a row merge. */
#define REDIAL_EVENTS 8

struct redial_event {
	uint8_t kind;           /* enum bs_open_kind */
	int reason, err;
	uint32_t attempt, delay_ms;
	uint32_t epoch;         /* FIRST, AGAIN: the new connection's epoch */
	uint64_t maybe_lost;
};

struct bs_conn;

struct redial {
	bs_dial_opts_t opts;    /* user cleared: the connection holds it */
	bs_addr_t addr;         /* resolved once, by bs_dial_ex */
	struct bs_conn *c;

	/* The I/O thread's. */
	struct timer tm;        /* the next retry, or the connect deadline */
	uint64_t rng;
	uint32_t retries;       /* retries in the current run */
	uint32_t up_since;      /* clock_ms when the connection came up */
	bool up_once;           /* has been up: the next up is AGAIN */

	/* Under the connection's lock. */
	struct inflight fl;
	uint64_t maybe_lost;    /* summed over the breaks */
	uint32_t reconnects;
	struct redial_event ev[REDIAL_EVENTS];
	uint8_t ev_first, ev_n;

	_Atomic bool poke;      /* bs_redial or a close while down: act */

	bs_data_t *returned;
	size_t nreturned;
};

/* A dial's state for opts (checked already) and a; NULL when out of
 * memory. salt spreads the random states of dials made at once. */
struct redial *redial_new(const bs_dial_opts_t *opts, const bs_addr_t *a, uint64_t salt);
/* Frees rd and releases what it still hands back. NULL is a no-op. */
void redial_free(struct redial *rd);

/* Queues an event (a down merges into a down not taken yet). False when
 * there is no room, which the retry rule above prevents. Under the lock. */
bool redial_post(struct redial *rd, const struct redial_event *e);
/* Takes the oldest event. False when none. Under the lock. */
bool redial_pop(struct redial *rd, struct redial_event *out);
/* Whether an attempt may start: its events will fit. Under the lock. */
static inline bool redial_room(const struct redial *rd)
{
	return rd->ev_n + 2 <= REDIAL_EVENTS;
}

/* The delay before retry rd->retries. I/O thread. */
uint32_t redial_delay(struct redial *rd);

#endif
