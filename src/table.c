/* The id -> connection table. See conn.h for the id layout and the rules. */
#include "conn.h"
#include "redial.h"
#include "tsan.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static uint32_t random_base(void)
{
	uint32_t r = 0;
	static _Atomic uint32_t instances;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)time(NULL) ^ (uint32_t)(uintptr_t)&r;
	/* Two instances in one process never start from the same base. */
	r += atomic_fetch_add(&instances, 1) * 0x9e3779b9u;
	return r & ID_GEN_MASK;
}

static uint32_t pow2_at_least(uint32_t n)
{
	uint32_t p = 2;
	while (p < n)
		p <<= 1;
	return p;
}

int table_init(struct conn_table *t, uint32_t max_conns, uint16_t node)
{
	uint32_t ring;

	memset(t, 0, sizeof(*t));
	if (max_conns == 0 || max_conns > ID_SLOT_MASK)
		return BS_EINVAL;
	t->npages = (max_conns + TABLE_PAGE_SLOTS - 1) >> TABLE_PAGE_SHIFT;
	t->nslots = max_conns;
	t->node = node;
	t->gen_base = random_base();
	t->pages = calloc(t->npages, sizeof(*t->pages));
	ring = pow2_at_least(max_conns + 1);
	ck_ring_buffer_t *buf = calloc(ring, sizeof(*buf));
	if (t->pages == NULL || buf == NULL) {
		free(t->pages);
		free(buf);
		memset(t, 0, sizeof(*t)); /* table_destroy finds nothing */
		return BS_ENOMEM;
	}
	mp_ring_init(&t->free_ring, buf, ring);
	return 0;
}

void table_destroy(struct conn_table *t)
{
	for (uint32_t p = 0; p < t->npages; p++) {
		struct bs_conn *page = atomic_load(&t->pages[p]);
		if (page == NULL)
			continue;
		for (uint32_t i = 0; i < TABLE_PAGE_SLOTS; i++) {
			struct bs_conn *c = &page[i];
			struct outq_count dropped = { 0 };

			if (c->framing != NULL)
				inbox_drop(&c->in, c->framing);
			outq_drop(&c->out, &dropped);
			bs_msg_release(c->rx);
			redial_free(c->rd);
			pthread_mutex_destroy(&c->lock);
		}
		free(page);
	}
	free(t->pages);
	if (t->free_ring.buf != NULL) {
		free(t->free_ring.buf);
		mp_ring_destroy(&t->free_ring);
	}
}

static struct bs_conn *page_get(struct conn_table *t, uint32_t p)
{
	struct bs_conn *page = atomic_load_explicit(&t->pages[p], memory_order_acquire);
	struct bs_conn *expected = NULL;

	if (page != NULL)
		return page;
	page = calloc(TABLE_PAGE_SLOTS, sizeof(*page));
	if (page == NULL)
		return NULL;
	for (uint32_t i = 0; i < TABLE_PAGE_SLOTS; i++) {
		pthread_mutex_init(&page[i].lock, NULL);
		inbox_init(&page[i].in);
		page[i].gen = t->gen_base;
		page[i].slot = (p << TABLE_PAGE_SHIFT) + i;
		page[i].fd = -1;
	}
	if (!atomic_compare_exchange_strong_explicit(&t->pages[p], &expected, page,
						     memory_order_acq_rel,
						     memory_order_acquire)) {
		for (uint32_t i = 0; i < TABLE_PAGE_SLOTS; i++)
			pthread_mutex_destroy(&page[i].lock);
		free(page);
		return expected;
	}
	return page;
}

static bool take_slot(struct conn_table *t, uint32_t *slot)
{
	uint32_t f = atomic_load_explicit(&t->fresh, memory_order_relaxed);
	void *v;

	while (f < t->nslots) {
		if (atomic_compare_exchange_weak(&t->fresh, &f, f + 1)) {
			*slot = f;
			return true;
		}
	}
	if (!mp_ring_pop(&t->free_ring, &v))
		return false;
	tsan_acquire(&t->free_ring);
	*slot = (uint32_t)((uintptr_t)v - 1);
	return true;
}

struct bs_conn *table_alloc(struct conn_table *t)
{
	uint32_t slot;
	struct bs_conn *page, *c;
	uint64_t id;

	if (!take_slot(t, &slot))
		return NULL;
	page = page_get(t, slot >> TABLE_PAGE_SHIFT);
	if (page == NULL) {
		(void)mp_ring_push(&t->free_ring, (void *)(uintptr_t)(slot + 1));
		return NULL;
	}
	c = page + (slot & (TABLE_PAGE_SLOTS - 1));

	pthread_mutex_lock(&c->lock);
	c->gen = (c->gen + 1) & ID_GEN_MASK;
	if (c->gen == 0)
		c->gen = 1; /* keeps every id non-zero */
	c->fd = -1;
	c->io = NULL;
	c->framing = NULL;
	atomic_store_explicit(&c->user, NULL, memory_order_relaxed);
	c->rd = NULL;
	c->rx_epoch = c->sock_epoch = 0;
	c->written_msgs = 0;
	atomic_store_explicit(&c->sched, 0, memory_order_relaxed);
	atomic_store_explicit(&c->holder, NULL, memory_order_relaxed);
	c->out_blocked = c->out_armed = c->send_waiters = c->more_listed = false;
	c->slow = BS_SLOW_REFUSE;
	c->dropped_msgs = c->dropped_bytes = 0;
	c->rx = NULL;
	c->rx_off = c->rx_end = 0;
	c->rx_private = false;
	c->hup = false;
	atomic_store_explicit(&c->rx_parked, false, memory_order_relaxed);
	c->ready_node = c->idle_node = (struct list_node){ 0 };
	c->listed = 0;
	c->listener = 0;
	c->dialled = 0;
	c->peer_len = 0;
	c->close_reason = c->close_errno = 0;
	c->unsent_msgs = c->unsent_bytes = 0;
	atomic_store_explicit(&c->state, CONN_FREE, memory_order_relaxed);
	id = ((uint64_t)t->node << 48) | ((uint64_t)c->gen << ID_SLOT_BITS) | slot;
	atomic_store_explicit(&c->id, id, memory_order_release);
	pthread_mutex_unlock(&c->lock);
	atomic_fetch_add_explicit(&t->in_use, 1, memory_order_relaxed);
	return c;
}

struct bs_conn *table_lock(struct conn_table *t, bs_id_t id)
{
	struct bs_conn *c = table_lookup(t, id);

	if (c == NULL)
		return NULL;
	pthread_mutex_lock(&c->lock);
	if (atomic_load_explicit(&c->id, memory_order_relaxed) == id)
		return c;
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

void table_free(struct conn_table *t, struct bs_conn *c)
{
	struct redial *rd;

	/* Delivered to the end: nothing is left but recycled segments. */
	inbox_drop(&c->in, c->framing);
	pthread_mutex_lock(&c->lock);
	atomic_store_explicit(&c->id, 0, memory_order_release);
	atomic_store_explicit(&c->state, CONN_FREE, memory_order_relaxed);
	rd = c->rd; /* freed once no lock holder can see the id any more */
	c->rd = NULL;
	pthread_mutex_unlock(&c->lock);
	redial_free(rd);
	/* Capacity exceeds the slot count, so this cannot fail. */
	tsan_release(&t->free_ring);
	(void)mp_ring_push(&t->free_ring, (void *)(uintptr_t)(c->slot + 1));
	atomic_fetch_sub_explicit(&t->in_use, 1, memory_order_release);
}
