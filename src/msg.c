/* Message buffers and the process-wide chunk cache. See msg.h. */
#include "msg.h"
#include "ring.h"
#include "tsan.h"

#include <pthread.h>
#include <stdlib.h>

/*
 * Chunks are larger than glibc's mmap threshold, so malloc/free of each one
 * would map and unmap 256 KiB — page faults on every read buffer. A small
 * cache (ring.h: taking never locks) keeps recently freed chunks. It is
 * process-wide because messages may outlive the instance that read them.
 */
#define CHUNK_CACHE_SLOTS 64

static struct mp_ring chunk_cache;
static ck_ring_buffer_t chunk_cache_buf[CHUNK_CACHE_SLOTS];
static pthread_once_t chunk_cache_once = PTHREAD_ONCE_INIT;

static void chunk_cache_init(void)
{
	mp_ring_init(&chunk_cache, chunk_cache_buf, CHUNK_CACHE_SLOTS);
}

bs_msg_t *msg_new(size_t cap)
{
	bs_msg_t *m = malloc(sizeof(*m) + cap);
	if (m == NULL)
		return NULL;
	m->cap = cap;
	m->pooled = false;
	atomic_init(&m->refs, 1);
	return m;
}

bs_msg_t *msg_grow(bs_msg_t *m, size_t cap)
{
	bs_msg_t *n = realloc(m, sizeof(*m) + cap);
	if (n == NULL)
		return NULL;
	n->cap = cap;
	return n;
}

bs_msg_t *msg_chunk_new(void)
{
	void *p = NULL;
	bs_msg_t *m;

	pthread_once(&chunk_cache_once, chunk_cache_init);
	if (mp_ring_pop(&chunk_cache, &p)) {
		tsan_acquire(&chunk_cache);
		m = p;
	} else {
		m = msg_new(MSG_CHUNK_SIZE);
		if (m == NULL)
			return NULL;
		m->pooled = true;
	}
	atomic_store_explicit(&m->refs, MSG_BIAS, memory_order_relaxed);
	return m;
}

static void msg_free(bs_msg_t *m)
{
	if (m->pooled) {
		pthread_once(&chunk_cache_once, chunk_cache_init);
		tsan_release(&chunk_cache);
		if (mp_ring_push(&chunk_cache, m))
			return;
	}
	free(m);
}

void msg_chunk_retire(bs_msg_t *chunk, long given)
{
	long left = atomic_fetch_add_explicit(&chunk->refs, given - MSG_BIAS,
					      memory_order_acq_rel) + given - MSG_BIAS;
	if (left == 0)
		msg_free(chunk);
}

bs_msg_t *bs_msg_alloc(size_t len, void **data)
{
	bs_msg_t *m = msg_new(len);
	if (m != NULL && data != NULL)
		*data = m->data;
	return m;
}

bs_msg_t *bs_msg_ref(bs_msg_t *msg)
{
	msg_ref_add(msg, 1);
	return msg;
}

void msg_release_n(bs_msg_t *msg, long n)
{
	/* acq_rel: the last releaser must see every write to the buffer. */
	if (atomic_fetch_sub_explicit(&msg->refs, n, memory_order_acq_rel) == n)
		msg_free(msg);
}

void bs_msg_release(bs_msg_t *msg)
{
	if (msg != NULL)
		msg_release_n(msg, 1);
}

void bs_data_release(bs_data_t *ev, size_t n)
{
	/* Messages read together share a chunk: one atomic step per run. */
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && ev[j].msg == ev[i].msg)
			j++;
		if (ev[i].msg != NULL)
			msg_release_n(ev[i].msg, (long)(j - i));
		i = j;
	}
}
