/*
 * nats_bridge — carries a pub/sub server's topics and direct messages
 * between nodes over NATS (nats.c, Debian libnats-dev), so that several
 * servers act as one without a broker of their own.
 *
 * What goes over NATS (nats_envelope.h has it byte by byte)
 *   Topic T is the subject "bs.t.<hex of T>": any byte string of 1..255
 *   bytes becomes one valid subject token. Direct messages to node N go to
 *   "bs.node.<N>", to which node N subscribes for its whole life. Every
 *   message travels in a small envelope: origin node, origin epoch (drawn
 *   at random by each bridge_open), sequence, the publisher's connection id
 *   (or, direct, the target's and the sender's), payload. The sequence
 *   counts from 1 per (origin, epoch) and per stream: one stream per topic,
 *   and one per target node for direct messages. So a receiver can see
 *   that messages of a stream it listens to went missing, and how many.
 *
 * Threads
 *   bridge_* calls are made by the server's application threads (any
 *   number, concurrently), never by buffstreams' I/O threads, and never
 *   wait for a NATS round trip — except bridge_flush and bridge_close, which
 *   say so. bridge_publish and bridge_direct queue into nats.c's write
 *   buffer; only when that buffer is full do they write to the NATS socket
 *   themselves (back-pressure), for at most the write deadline (1 s).
 *   The message callbacks run on nats.c's delivery thread, one message at
 *   a time, in the order the NATS connection received them: per origin
 *   publisher, across topics and direct messages, in publish order. A
 *   callback must not wait long: what waits behind it is dropped by nats.c
 *   beyond 65536 messages (or 64 MiB) per subscription, and counted lost.
 *
 * When NATS goes away
 *   nats.c reconnects for ever (exponential backoff from 100 ms to 2 s,
 *   with jitter) and resends every live subscription; the bridge subscribes
 *   afresh any topic whose subscription could not be made. While the link
 *   is down, bridge_publish and bridge_direct fail at once (BS_EAGAIN) and
 *   count publish_failed, rather than piling up in nats.c's reconnect
 *   buffer to be sent after other nodes may have missed them anyway. What
 *   was in flight when the link broke shows up at the receivers as
 *   sequence gaps, counted in gaps_lost. Both are reported through on_log.
 *
 * Losses are counted from the first message a node received of a stream:
 * what an origin sent before that (before this node listened, or lost
 * before it ever got one) is not known to be missing.
 *
 * The bridge uses nats.c's public API only. It asks for nats.c's
 * process-wide delivery pool of one thread (the order promise above relies
 * on it; a process that raised it elsewhere keeps per-topic order only).
 *
 * Licensed under the Apache License, Version 2.0.
 */
#ifndef NATS_BRIDGE_H
#define NATS_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <buffstreams.h>

#define BRIDGE_TOPIC_MAX 255

typedef struct bridge bridge_t;

enum bridge_log_level { BRIDGE_LOG_INFO = 0, BRIDGE_LOG_WARN = 1 };

/*
 * The server's side. Every pointer passed in is valid only during the
 * call. Any of them may be NULL (that kind of message is then counted
 * received and discarded). They run on nats.c's threads; on_log also on
 * the threads calling bridge_*, sometimes under the bridge's locks, so it
 * must not call bridge_* itself. The message callbacks may call any
 * bridge_* but bridge_flush and bridge_close, and bs_send_* of course.
 */
typedef struct bridge_callbacks {
	void *ctx;
	/* A message published on another node on a topic with local
	 * interest. origin_publisher is the publisher's connection id on its
	 * node; origin_seq its place in the origin's stream of this topic. */
	void (*on_topic_message)(void *ctx, const uint8_t *topic, size_t topic_len,
				 uint16_t origin_node, uint64_t origin_seq,
				 bs_id_t origin_publisher, const void *payload,
				 size_t len);
	/* A direct message for target_id, a connection of this node (the
	 * id may be stale by now: the server checks). */
	void (*on_direct)(void *ctx, bs_id_t target_id, bs_id_t sender_id,
			  const void *payload, size_t len);
	/* One line, no newline: link changes, losses, misconfiguration. */
	void (*on_log)(void *ctx, enum bridge_log_level level, const char *line);
} bridge_callbacks_t;

/* Counters since bridge_open; consistent each, not with each other. */
typedef struct bridge_stats {
	uint64_t published;      /* envelopes handed to NATS (topic and direct) */
	uint64_t publish_failed; /* not sent: link down, buffer full, too large */
	uint64_t received;       /* envelopes of other nodes passed to the callbacks */
	uint64_t gaps_lost;      /* messages of other nodes seen missing in their sequences */
	uint64_t dropped;        /* envelopes not passed on: malformed, from this
				  * node number, or repeated */
	uint64_t disconnects;    /* times the link went down */
	uint64_t reconnects;     /* times it came back */
	uint64_t topics;         /* topics with local interest now */
	bool connected;          /* the link is up now */
} bridge_stats_t;

/*
 * Connects to url (nats.c's form: "nats://127.0.0.1:4222", or several,
 * comma-separated) as node number `node` (bs_config_t.node) and subscribes
 * to the node's direct subject. Waits at most for one connect attempt
 * (about 2 s); when the server cannot be reached yet, it still succeeds and
 * keeps trying in the background (stats.connected tells). cb is copied.
 * Returns 0 and *out, or BS_EINVAL (NULL argument), BS_EADDR (url not
 * understood), BS_ENOMEM, BS_ESYS (nats.c refused otherwise; on_log says
 * why).
 */
int bridge_open(const char *url, uint16_t node, const bridge_callbacks_t *cb,
		bridge_t **out);

/*
 * Unsubscribes everything, sends what is buffered (waiting at most 1 s for
 * the server to confirm), closes the connection and waits (at most 5 s)
 * until no callback runs any more or can. No other bridge_* call on b may
 * run concurrently or follow. NULL is a no-op. Blocks: never from a
 * callback.
 */
void bridge_close(bridge_t *b);

/*
 * Local interest in a topic (1..255 bytes). The first ref subscribes on
 * NATS, the last unref unsubscribes; neither waits for the server. While
 * the link is down nats.c keeps the change and sends it on reconnect. A
 * subscription nats.c cannot make (out of memory) is retried on the next
 * ref and on reconnect: the interest is recorded and the call succeeds.
 * Returns 0, BS_EINVAL (length, or unref without ref), BS_ENOMEM.
 */
int bridge_topic_ref(bridge_t *b, const void *topic, size_t topic_len);
int bridge_topic_unref(bridge_t *b, const void *topic, size_t topic_len);

/*
 * Publishes a message of publisher (a connection id of this node) on a
 * topic to the other nodes with interest in it. Returns 0 (handed to
 * NATS), or, counted in publish_failed: BS_EAGAIN (link down, or nats.c's
 * buffer full), BS_EMSGSIZE (larger than the server's max_payload less the
 * envelope), BS_ENOMEM; and BS_EINVAL (topic length; not counted).
 */
int bridge_publish(bridge_t *b, const void *topic, size_t topic_len,
		   bs_id_t publisher, const void *payload, size_t len);

/*
 * Sends payload from sender_id (a connection of this node) to target_id, a
 * connection of target_node, which must be another node. Same returns as
 * bridge_publish; BS_EINVAL also for target_node equal to this node. A
 * message to a node that is not listening is lost without a count.
 */
int bridge_direct(bridge_t *b, uint16_t target_node, bs_id_t target_id,
		  bs_id_t sender_id, const void *payload, size_t len);

/*
 * Waits until the NATS server has processed everything sent before
 * (subscriptions, unsubscriptions, messages): one round trip, at most
 * timeout_ms. For startup, shutdown and tests: it blocks. Returns 0,
 * BS_ETIMEDOUT, BS_EAGAIN (link down), BS_EINVAL (timeout_ms <= 0).
 */
int bridge_flush(bridge_t *b, int timeout_ms);

/* A snapshot of the counters. Any thread. */
void bridge_stats(bridge_t *b, bridge_stats_t *out);

#endif /* NATS_BRIDGE_H */
