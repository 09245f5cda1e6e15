/* An I/O thread's loop and the connection bookkeeping it owns. */
#ifndef BS_WORKER_H
#define BS_WORKER_H

#include "core.h"

/* epoll tags in the low bits of the event's data (pointers are aligned). */
#define TAG_CONN 0u
#define TAG_LISTENER 1u
#define TAG_WAKE 2u
#define TAG_MASK 3u

/* Closes c's socket and releases what it holds; its close event follows
 * through the gate. c must not be touched afterwards. I/O thread only. */
void worker_close(struct worker *w, struct bs_conn *c, int reason, int err);
/* Marks activity on c (moves it to the idle list's tail). I/O thread only. */
void worker_touch(struct worker *w, struct bs_conn *c);
/* Registers a new open connection with this thread. I/O thread only. */
int worker_add(struct worker *w, struct bs_conn *c);
/* Asks for EPOLLOUT on c's socket, or stops asking; c->lock held. */
void worker_watch_out(struct bs_conn *c, bool on);

#endif
