/*
 * Listeners: bs_listen, accepting, and closing.
 *
 * Every I/O thread watches every listening socket with EPOLLEXCLUSIVE, so
 * one thread wakes per incoming burst; accepted connections are placed on
 * the I/O threads round-robin. A listener is closed by the I/O threads:
 * each drops it from its epoll set, and the last one closes the socket, so
 * no thread can accept on a descriptor number that was already reused.
 */
#ifndef BS_LISTENER_H
#define BS_LISTENER_H

#include "instance.h"

/* One I/O thread's view of the listeners: those it stopped watching for a
 * while because accept ran out of descriptors or memory. */
struct listen_state {
	uint64_t paused;        /* bit per listener slot */
	uint32_t retry_ms;      /* when they were paused */
};

#define ACCEPT_BATCH 64

/* Accepts up to ACCEPT_BATCH connections on l. Those placed on this I/O
 * thread are returned in mine[] (*nmine): the caller registers them and
 * queues their open events. I/O thread. */
void listener_accept(struct bs *bs, struct io *io, struct listen_state *ls,
		     struct listener *l, uint32_t now, struct bs_conn **mine, unsigned *nmine);
/* Watches the paused listeners again (after 100 ms). I/O thread. */
void listener_resume(struct bs *bs, struct io *io, struct listen_state *ls);
/* Drops listeners marked closing from this thread's epoll set; the last
 * thread to do so closes and frees them. I/O thread. */
void listener_drop_closing(struct bs *bs, struct io *io, struct listen_state *ls);
/* Marks every listener closing (shutdown). Any thread. */
void listeners_close_all(struct bs *bs);
/* Frees what is left at bs_destroy. */
void listeners_free(struct bs *bs);

#endif
