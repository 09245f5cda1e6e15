/* What the instance needs of the receive side (recv.c). */
#ifndef BS_RECV_H
#define BS_RECV_H

#include "instance.h"

/* Ends the calling thread's holds on bs (bs_destroy's own thread). */
void recv_release_thread(struct bs *bs);
/* Writes the calling thread's BS_SEND_MORE frames on bs now, keeping its
 * holds: before it waits outside bs_recv_* (a send waiting for room). Not
 * under a connection's lock. */
void recv_flush_more(struct bs *bs);
/* Before a BS_SEND_MORE send (not under a connection's lock): makes sure
 * the calling thread's record is registered with bs, so that its
 * receives, bs_release or exit write the deferred frames, even when it
 * never received from bs. False when the record serves another instance:
 * the send is then written at once. */
bool recv_enlist_sender(struct bs *bs);
/* The instance ends: threads that held on it forget it. */
void recv_forget_instance(struct bs *bs);

#endif
