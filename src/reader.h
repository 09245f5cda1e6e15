/* The read path of an I/O thread: socket bytes -> frames -> data events. */
#ifndef BS_READER_H
#define BS_READER_H

#include "core.h"

enum read_result {
	READ_DONE,    /* socket drained (or waiting for its open event) */
	READ_MORE,    /* read budget used up; the socket may hold more */
	READ_PAUSED,  /* the data ring is full; bytes kept in c->rx */
	READ_CLOSED,  /* the connection was closed; c must not be touched */
};

/* Reads and parses one budget's worth from c. I/O thread only. */
enum read_result reader_run(struct worker *w, struct bs_conn *c);
/* Drops the chunk this I/O thread reads into. */
void reader_retire_chunk(struct worker *w);
/* Drops c's unparsed bytes. */
void reader_drop_rx(struct bs_conn *c);

#endif
