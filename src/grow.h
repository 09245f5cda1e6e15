/*
 * Growing an array that doubles: the one rule for the library's
 * growable arrays (a thread's deferred sends, a reader's frame positions,
 * an inbox segment's copy of them). Pure; any thread, on its own arrays.
 */
#ifndef BS_GROW_H
#define BS_GROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Returns arr (perhaps moved) with room for at least `need` elements of
 * `size` bytes, its room in *cap: from `first` (or more), doubling, never
 * past `max`. NULL when need exceeds max or memory ran out; arr and *cap
 * are then unchanged and still good.
 */
static inline void *grow_to(void *arr, uint32_t *cap, uint32_t need, size_t size,
			    uint32_t first, uint32_t max)
{
	uint32_t c = *cap ? *cap : first;
	void *p;

	if (need <= *cap)
		return arr;
	if (need > max)
		return NULL;
	while (c < need)
		c = c > max / 2 ? max : 2 * c;
	if (c > max)
		c = max;
	p = realloc(arr, (size_t)c * size);
	if (p != NULL)
		*cap = c;
	return p;
}

#endif
