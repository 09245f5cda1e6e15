/*
 * Pub/sub load generator and checker, shared by examples/pubsub_client
 * (its load mode) and the bench-pubsub driver (bench/pubsub_load_main.c).
 *
 * One thread drives every connection through plain non-blocking sockets
 * and epoll, whatever the server: our pubsub_server, nats-server or
 * redis-server. Only the protocol codec (struct ps_proto) differs, so the
 * client side costs the same for all three and a comparison measures the
 * servers. Not thread-safe: one run at a time per process.
 *
 * Each publish carries its publisher, its topic, its sequence number among
 * that publisher's messages to that topic, and its send time (PS_HDR
 * bytes), then a pattern of the publisher. Every delivery is checked: the
 * right topic, intact, and exactly the next message of its publisher, so
 * that each subscriber sees every message of its topic exactly once and in
 * each publisher's order.
 */
#ifndef PUBSUB_LOAD_H
#define PUBSUB_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PS_HDR 24          /* publisher, topic (u32), seq, time ns (u64), LE */
#define PS_CMD_MAX 1024    /* bytes a hello or publish header may take */

/* ---- protocols ---------------------------------------------------------- */
enum ps_ev_kind {
	PS_EV_NONE,   /* something to skip (INFO, +OK, a publish count) */
	PS_EV_ACK,    /* the server confirmed the connection's hello */
	PS_EV_MSG,    /* a delivery: topic and body */
	PS_EV_ERROR,  /* the server reports an error: body is its text */
	PS_EV_PING,   /* the server asks for proto->pong */
};

struct ps_event {
	int kind;
	const uint8_t *topic, *body;
	size_t tlen, len;
};

struct ps_proto {
	const char *name;
	/* What a connection sends first, into out (PS_CMD_MAX bytes): for a
	 * subscriber (topic != NULL) its subscription and what makes the
	 * server confirm it once in effect; for a publisher whatever makes the
	 * server confirm the connection is ready, or nothing. A non-empty
	 * hello is answered by exactly one PS_EV_ACK. Returns its length. */
	size_t (*hello)(uint8_t *out, const char *topic, size_t tlen);
	/* The bytes before a publish's body of len bytes (PS_CMD_MAX at most);
	 * pub_tail (pub_tail_len bytes) follows the body. */
	size_t (*pub_head)(uint8_t *out, const char *topic, size_t tlen, size_t len);
	const char *pub_tail;
	size_t pub_tail_len;
	/* The next event at the start of buf[0..len): the bytes it takes
	 * (> 0) with *ev set, 0 when more bytes are needed, -1 on bytes that
	 * are not the protocol. *ev points into buf. */
	long (*parse)(const uint8_t *buf, size_t len, struct ps_event *ev);
	const char *pong; /* answer to PS_EV_PING (NULL: none) */
};

extern const struct ps_proto ps_proto_bs;    /* bench/pubsub_bs.c */
extern const struct ps_proto ps_proto_nats;  /* bench/pubsub_nats.c */
extern const struct ps_proto ps_proto_redis; /* bench/pubsub_redis.c */

/* ---- runs --------------------------------------------------------------- */
struct ps_load_opts {
	const char *addr;            /* host:port, [v6]:port or unix:/path, or
	                                several, comma-separated: subscriber i
	                                connects to the (i mod n)th */
	const char *pub_addr;        /* the same for the publishers; NULL: addr */
	const struct ps_proto *proto;
	unsigned publishers, subscribers, topics;
	unsigned stalled;            /* subscribers 0..stalled-1 stop reading */
	double stall_after;          /* ... this many seconds into the run */
	double rate;                 /* messages/s per publisher; 0 = as the window allows */
	uint64_t window;             /* messages per publisher not yet received
	                                by every healthy subscriber of theirs */
	uint64_t count;              /* messages per publisher at most */
	double seconds;              /* publishing time at most */
	size_t size;                 /* body bytes, at least PS_HDR */
	bool progress;               /* live progress line on stderr */
	const char *tag;             /* prefix of messages */
};

/* Fills *o with the defaults (1 publisher, 10 subscribers, 1 topic, window
 * 64, 2 s, 110 B, as fast as the window allows). */
void ps_load_defaults(struct ps_load_opts *o);

struct ps_load_result {
	uint64_t published;          /* messages */
	uint64_t expected;           /* deliveries owed to healthy subscribers */
	uint64_t delivered;          /* of those, received in order, intact */
	uint64_t missing, duplicate, corrupt, misrouted;
	uint64_t server_errors;      /* error replies from the server */
	uint64_t closed_early;       /* healthy connections the server closed */
	double seconds;              /* first publish to last healthy delivery */
	double deliveries_per_s;
	double p50_us, p99_us, p999_us, max_us; /* healthy deliveries */
	uint64_t stalled_received;   /* deliveries the stalled ones got in all */
	uint64_t stalled_bad;        /* of those, duplicates or out of order */
	unsigned stalled_closed;     /* stalled subscribers disconnected */
	bool ok;                     /* every healthy delivery exactly once, in order */
};

/* Connects, subscribes, publishes for o->seconds (or o->count), waits a
 * bounded time for the last deliveries, reads what the stalled subscribers
 * were left, closes everything. 0 with *r filled (see r->ok), or -1 when
 * the run could not be set up (said on stderr). */
int ps_load_run(const struct ps_load_opts *o, struct ps_load_result *r);

/* The human-readable summary, then one line "RESULT key=value ...". */
void ps_load_report(FILE *f, const struct ps_load_opts *o, const struct ps_load_result *r);

/*
 * The command line shared by pubsub_client load and pubsub_load:
 *   ADDR --publishers P --subscribers S --topics K --rate R --seconds N
 *   --size B [--window W] [--count C] [--stalled N] [--stall-after S]
 *   [--expect-stalled open|closed] [--pub-addr ADDR] [--quiet] [--proto NAME]
 * argv[0] is ADDR. protos (NULL-terminated) are the protocols --proto may
 * name; the first is the default. Returns the exit status: 0 when every
 * check passed, 1 when one failed, 2 on bad usage.
 */
int ps_load_main(const char *prog, int argc, char **argv,
		 const struct ps_proto *const *protos);

#endif
