/*
 * Reconnect backoff: how long a dial waits before its n-th retry in a row,
 * as gRPC's connection backoff computes it: the initial delay grown by the
 * multiplier per retry, capped at the maximum, then moved at random by up
 * to the jitter fraction either way, so that many clients that lost one
 * server spread their retries instead of arriving together.
 *
 * Pure: no clock, no shared state; the caller keeps the random state. Any
 * thread.
 */
#ifndef BS_BACKOFF_H
#define BS_BACKOFF_H

#include <stdint.h>

#include "buffstreams.h"

/* A random state seeded from the kernel's entropy, mixed with salt so that
 * two states made at once differ even where getrandom is unavailable. */
uint64_t backoff_seed(uint64_t salt);

/* The delay in ms before retry n (n >= 1) under o's backoff fields;
 * advances *rng. */
uint32_t backoff_delay(const bs_dial_opts_t *o, uint32_t n, uint64_t *rng);

/* 0 when o's fields are in their documented ranges, else BS_EINVAL. */
int backoff_check(const bs_dial_opts_t *o);

#endif
