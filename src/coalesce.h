/*
 * Reply coalescing: replies to a connection are held back while the thread
 * that sends them still has messages of that connection to answer, and go
 * out together in one write. See coalesce.c.
 */
#ifndef BS_COALESCE_H
#define BS_COALESCE_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"

struct bs;

/* Most messages one receive call returns, so that every run of them is
 * remembered. */
#define COALESCE_MAX_TAKE 256u

/* Keeps the live-instance list for coalesce_settle_any; bs_create and the
 * start of bs_destroy. */
void coalesce_register(struct bs *bs);
void coalesce_unregister(struct bs *bs);

/* Entering a receive call on bs: writes what this thread's previous
 * receive left held back, and forgets it. */
void coalesce_settle(struct bs *bs);

/* This thread was just given n messages of connection id (one run of a
 * batch); took_last: its dequeue emptied the connection's gate. */
void coalesce_took(struct bs *bs, bs_id_t id, uint32_t n, bool took_last);

/* In a send of `total` bytes to c (locked, current id `id`): whether the
 * frame should wait in the queue for the replies that follow it. */
bool coalesce_hold(struct bs *bs, struct bs_conn *c, bs_id_t id, size_t total);

#endif
