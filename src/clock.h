/*
 * The one clock of the library: CLOCK_MONOTONIC, read as coarse
 * milliseconds for timers (idle, holds, retries) and as nanoseconds where
 * an interval is short (I/O polling), plus absolute deadlines for timed
 * waits. Any thread.
 */
#ifndef BS_CLOCK_H
#define BS_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Coarse monotonic milliseconds (a wrapping 32-bit count). */
uint32_t clock_ms(void);
/* Precise monotonic nanoseconds. */
uint64_t clock_ns(void);

/* Whether `ms` passed from `since` to `now` on the wrapping millisecond
 * clock. Signed: a stamp taken by another thread may be a little ahead. */
static inline bool ms_elapsed(uint32_t now, uint32_t since, uint32_t ms)
{
	return (int32_t)(now - since) >= (int32_t)ms;
}

/* The CLOCK_MONOTONIC time timeout_ms (>= 0) from now. */
struct timespec deadline_after_ms(int timeout_ms);
/* Whether the monotonic clock has reached *deadline. */
bool deadline_passed(const struct timespec *deadline);

#endif
