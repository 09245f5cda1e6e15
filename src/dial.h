/*
 * Dialling: bs_dial / bs_dial_ex make a dial's connection slot and its
 * first socket (dial.c); dial_socket makes the socket of each attempt,
 * for them and for the I/O thread's retries (worker.c).
 */
#ifndef BS_DIAL_H
#define BS_DIAL_H

#include "addr.h"
#include "instance.h"

/*
 * A non-blocking socket for a, tuned as configured, with its connect
 * started. Returns the socket, *failed set to 0 (connecting) or to the
 * errno of a connect that failed at once (the caller reports it as the
 * attempt's failure); or -1 with errno when no socket could be made. Any
 * thread; it never blocks.
 */
int dial_socket(struct bs *bs, const bs_addr_t *a, int *failed);

#endif
