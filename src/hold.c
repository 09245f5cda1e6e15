/* Holding threads' records. See hold.h. */
#include "hold.h"

#include <pthread.h>
#include <stdlib.h>

#include "clock.h"
#include "conn.h"
#include "grow.h"

static _Thread_local struct holder self;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct holder *hold_self(void)
{
	return &self;
}

void hold_lock(void)
{
	pthread_mutex_lock(&lock);
}

void hold_unlock(void)
{
	pthread_mutex_unlock(&lock);
}

void hold_register(struct hold_registry *reg, struct holder *h)
{
	h->next = reg->list;
	reg->list = h;
	atomic_store_explicit(&h->reg, reg, memory_order_relaxed);
}

void hold_unregister(struct holder *h)
{
	struct hold_registry *reg = atomic_load_explicit(&h->reg, memory_order_relaxed);

	if (reg == NULL)
		return;
	for (struct holder **p = &reg->list; *p != NULL; p = &(*p)->next) {
		if (*p == h) {
			*p = h->next;
			break;
		}
	}
	atomic_store_explicit(&h->reg, NULL, memory_order_relaxed);
	h->n = 0;
}

void hold_registry_close(struct hold_registry *reg)
{
	for (struct holder *h = reg->list; h != NULL; h = h->next)
		atomic_store_explicit(&h->reg, NULL, memory_order_relaxed);
	reg->list = NULL;
}

void hold_add(struct holder *h, struct bs_conn *c, uint32_t now)
{
	if (h->n == 0) {
		atomic_store_explicit(&h->first, conn_id(c), memory_order_relaxed);
		atomic_store_explicit(&h->reported, false, memory_order_relaxed);
		/* 0 means "holds nothing" to the scan. */
		atomic_store_explicit(&h->since, now ? now : 1, memory_order_relaxed);
	}
	c->hold_index = h->n;
	h->h[h->n++] = (struct held){ .c = c, .sent = false };
	atomic_store_explicit(&c->holder, h, memory_order_relaxed);
}

void hold_clear(struct holder *h)
{
	atomic_store_explicit(&h->since, 0, memory_order_relaxed);
	h->n = 0;
}

bool hold_more_room(struct holder *h, uint32_t max)
{
	bs_id_t *more = grow_to(h->more, &h->more_cap, h->nmore + 1, sizeof(*more),
				HOLD_MORE_FIRST, max);

	if (more == NULL)
		return false;
	h->more = more;
	return true;
}

void hold_more_free(struct holder *h)
{
	free(h->more);
	h->more = NULL;
	h->more_cap = h->nmore = 0;
}

unsigned hold_scan(struct hold_registry *reg, uint32_t now, uint32_t ms, bs_id_t *ids,
		   uint32_t *held_ms, unsigned max)
{
	unsigned n = 0;

	hold_lock();
	for (struct holder *h = reg->list; h != NULL && n < max; h = h->next) {
		uint32_t since = atomic_load_explicit(&h->since, memory_order_relaxed);

		if (since == 0 || !ms_elapsed(now, since, ms) ||
		    atomic_exchange_explicit(&h->reported, true, memory_order_relaxed))
			continue;
		ids[n] = atomic_load_explicit(&h->first, memory_order_relaxed);
		held_ms[n++] = now - since;
	}
	hold_unlock();
	return n;
}
