/*
 * A ck ring of pointers with many producers and many consumers, whose
 * producers never spin on one another.
 *
 * ck's MPMC enqueue makes each producer wait, spinning, until every
 * producer that reserved a slot before it has published its entry. One
 * preempted between the two steps stalls all the others, and when the
 * machine has fewer CPUs than runnable threads the spinners take the CPU
 * it needs to finish: four draining threads were seen spinning so for
 * tens of seconds on a busy 2-CPU machine. Here producers take a mutex
 * instead, which sleeps, and enqueue as ck's single producer; consumers
 * still dequeue without a lock (ck's MC dequeue, which the single-producer
 * enqueue is made for). The mutex is held for one enqueue and nothing is
 * taken inside it, so it may be taken under any other lock.
 *
 * Any thread.
 */
#ifndef BS_RING_H
#define BS_RING_H

#include <ck_ring.h>
#include <pthread.h>
#include <stdbool.h>

struct mp_ring {
	ck_ring_t ring;
	ck_ring_buffer_t *buf;
	pthread_mutex_t push_lock;
};

/* buf has size entries (a power of two); the ring holds size - 1. */
static inline void mp_ring_init(struct mp_ring *r, ck_ring_buffer_t *buf, unsigned size)
{
	ck_ring_init(&r->ring, size);
	r->buf = buf;
	pthread_mutex_init(&r->push_lock, NULL);
}

static inline void mp_ring_destroy(struct mp_ring *r)
{
	pthread_mutex_destroy(&r->push_lock);
}

/* False when the ring is full. */
static inline bool mp_ring_push(struct mp_ring *r, void *entry)
{
	bool ok;

	pthread_mutex_lock(&r->push_lock);
	ok = ck_ring_enqueue_spmc(&r->ring, r->buf, entry);
	pthread_mutex_unlock(&r->push_lock);
	return ok;
}

/* False when the ring is empty. */
static inline bool mp_ring_pop(struct mp_ring *r, void **entry)
{
	return ck_ring_dequeue_spmc(&r->ring, r->buf, entry);
}

static inline unsigned mp_ring_size(struct mp_ring *r)
{
	return ck_ring_size(&r->ring);
}

#endif
