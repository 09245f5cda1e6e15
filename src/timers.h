/*
 * An I/O thread's timers: a binary min-heap of deadlines on the wrapping
 * millisecond clock (clock.h), each timer embedded in what it times, so
 * that arming again, cancelling and popping the earliest are O(log n) and
 * nothing is allocated per timer (the heap's array grows, never shrinks).
 *
 * Deadlines must lie within 2^31 ms of each other (callers keep them
 * within BS_DIAL_MAX_MS of now). The owning I/O thread only.
 */
#ifndef BS_TIMERS_H
#define BS_TIMERS_H

#include <stdbool.h>
#include <stdint.h>

struct timer {
	uint32_t due;     /* clock_ms deadline */
	uint32_t index;   /* position in the heap + 1; 0 = not armed */
};

struct timers {
	struct timer **v;
	uint32_t n, cap;
};

void timers_init(struct timers *t);
void timers_free(struct timers *t);

static inline bool timer_armed(const struct timer *e)
{
	return e->index != 0;
}

/* Arms e for due, or moves it there when armed. 0 or BS_ENOMEM (e is then
 * left as it was). */
int timers_arm(struct timers *t, struct timer *e, uint32_t due);
/* Disarms e; nothing when it is not armed. */
void timers_cancel(struct timers *t, struct timer *e);
/* Disarms and returns the earliest timer due at now, or NULL. */
struct timer *timers_pop_due(struct timers *t, uint32_t now);
/* The earliest deadline: true and *due, or false when none is armed. */
bool timers_next(const struct timers *t, uint32_t *due);

#endif
