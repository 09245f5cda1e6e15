/*
 * Counters. A counter written by one thread only is bumped with a relaxed
 * load and store (no locked instruction); readers sum them at any time.
 * Counters that several threads bump use atomic_fetch_add.
 */
#ifndef BS_STAT_H
#define BS_STAT_H

#include <stdatomic.h>
#include <stdint.h>

static inline void stat_add(_Atomic uint64_t *s, uint64_t n)
{
	atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline void stat_add_shared(_Atomic uint64_t *s, uint64_t n)
{
	atomic_fetch_add_explicit(s, n, memory_order_relaxed);
}

static inline uint64_t stat_get(_Atomic uint64_t *s)
{
	return atomic_load_explicit(s, memory_order_relaxed);
}

#endif
