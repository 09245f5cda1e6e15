/* Reconnect backoff. See backoff.h. */
#include "backoff.h"

#include <sys/random.h>
#include <time.h>

/* splitmix64: a full-period generator whose every output is well mixed,
 * enough for spreading retries (nothing here needs to be unpredictable). */
static uint64_t next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t backoff_seed(uint64_t salt)
{
	uint64_t r = 0;
	struct timespec ts;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r)) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
	}
	r ^= salt;
	return next(&r);
}

uint32_t backoff_delay(const bs_dial_opts_t *o, uint32_t n, uint64_t *rng)
{
	double d = o->backoff_initial_ms, u;

	/* Grown step by step and capped as soon as it passes the maximum, so
	 * that a long run of retries cannot overflow. */
	for (uint32_t i = 1; i < n && d < o->backoff_max_ms; i++)
		d *= o->backoff_multiplier;
	if (d > o->backoff_max_ms)
		d = o->backoff_max_ms;
	/* u in [-1, 1): 53 random bits, as a double holds them. */
	u = (double)(next(rng) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
	d += d * o->backoff_jitter * u;
	if (d < 0)
		d = 0;
	if (d > BS_DIAL_MAX_MS)
		d = BS_DIAL_MAX_MS;
	return (uint32_t)(d + 0.5); /* rounded; no libm for one call */
}

int backoff_check(const bs_dial_opts_t *o)
{
	/* The comparisons are written so that NaN fails them too. */
	if (o->backoff_initial_ms < 1 || o->backoff_initial_ms > BS_DIAL_MAX_MS ||
	    o->backoff_max_ms < o->backoff_initial_ms || o->backoff_max_ms > BS_DIAL_MAX_MS ||
	    !(o->backoff_multiplier >= 1.0 && o->backoff_multiplier <= 1000.0) ||
	    !(o->backoff_jitter >= 0.0 && o->backoff_jitter < 1.0) ||
	    o->stable_ms > BS_DIAL_MAX_MS || o->connect_timeout_ms > BS_DIAL_MAX_MS)
		return BS_EINVAL;
	return 0;
}
