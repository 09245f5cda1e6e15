/*
 * The I/O threads: each runs one loop over its epoll set (edge-triggered):
 * accept, read, flush queued sends on EPOLLOUT, time out idle connections,
 * and close. Started and stopped by the instance (bs.c).
 */
#ifndef BS_WORKER_H
#define BS_WORKER_H

#include "instance.h"

/* Allocates and starts nworkers threads into bs->workers and bs->io. On
 * failure the threads started are stopped and freed again. 0, BS_ENOMEM or
 * BS_ESYS. */
int workers_start(struct bs *bs, unsigned nworkers);
/* Joins the threads (after PHASE_EXIT). Receivers may still look at the
 * I/O threads' counters and wake them: their memory stays. */
void workers_stop(struct bs *bs);
/* Frees what the threads left, once no bs_* call runs any more. */
void workers_free(struct bs *bs);
/* Sockets open on all I/O threads. Any thread. */
unsigned workers_live_sockets(struct bs *bs);

#endif
