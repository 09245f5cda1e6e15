/*
 * The read path of an I/O thread: socket bytes -> whole frames -> the
 * connection's inbox. It never closes a connection itself: it says why the
 * connection must close, and the loop (worker.c) closes it.
 *
 * I/O thread only.
 */
#ifndef BS_READER_H
#define BS_READER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "poller.h"
#include "scheduler.h"

struct reader {
	bs_msg_t *chunk;            /* the read chunk, shared by all sockets */
	uint32_t chunk_used;
	long chunk_given;           /* references handed out (biased count) */
	struct sched *sched;
	unsigned wake;              /* lines to announce at the end of the turn */
	size_t backlog;             /* inbox bytes beyond which reading pauses */
	struct io_stats *st;
	_Atomic uint64_t *undelivered;
	struct frame_pos *pos;      /* the frames of one read, for the inbox */
	uint32_t pos_cap;
};

enum read_result {
	READ_DONE,    /* socket drained */
	READ_MORE,    /* read budget used up; the socket may hold more */
	READ_PARKED,  /* the inbox is over its bound: do not read until resumed */
	READ_CLOSED,  /* the connection must close: *reason, *err say why */
};

/* Reads and cuts one budget's worth from c. *active is set when bytes came. */
enum read_result reader_run(struct reader *r, struct bs_conn *c, bool *active, int *reason,
			    int *err);
/* Whether c's inbox is back under half its bound (then reading resumes). */
bool reader_may_resume(const struct reader *r, struct bs_conn *c);
/* Drops the chunk. */
void reader_retire_chunk(struct reader *r);
/* Frees what the reader keeps (the chunk, its scratch). */
void reader_free(struct reader *r);
/* Drops c's unparsed bytes. */
void reader_drop_rx(struct bs_conn *c);

#endif
