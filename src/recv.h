/* What the instance needs of the receive side (recv.c). */
#ifndef BS_RECV_H
#define BS_RECV_H

#include "instance.h"

/* Ends the calling thread's holds on bs (bs_destroy's own thread). */
void recv_release_thread(struct bs *bs);
/* The instance ends: threads that held on it forget it. */
void recv_forget_instance(struct bs *bs);

#endif
