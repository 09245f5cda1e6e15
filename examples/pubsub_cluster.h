/*
 * pubsub_cluster — one pub/sub server node's side of a cluster bridged by
 * NATS (nats_bridge.h carries the messages; this wires it into a server).
 *
 * Two threads of its own keep NATS waits away from buffstreams' I/O
 * threads and from the server's draining threads:
 *   - the delivery thread: what arrives from other nodes is copied into a
 *     bounded queue by nats.c's callback and delivered by this thread, in
 *     the order NATS delivered it; once the queue runs dry, or after
 *     1024 messages, ops->on_idle lets the server write what it deferred
 *     (BS_SEND_MORE, then bs_release). A full queue (16 MiB) makes the
 *     callback wait, so nats.c's own bound applies and what it drops
 *     shows up as counted gaps;
 *   - the answer thread: an answer that may only go once the NATS server
 *     has a subscription (the 'A' of a subscribe that gave a topic its
 *     first local subscriber) is queued with ps_cluster_defer; the thread
 *     waits for one round trip that covers every subscription made so far,
 *     then hands the answers back (ops->on_answer), in the order they
 *     were queued. While NATS is down the round trip fails at once and
 *     the answers go anyway: the local subscription is in effect.
 *
 * Topic interest is counted by the server's topic table (pubsub_topics.h):
 * ps_cluster_interest is its interest callback, so NATS is subscribed on a
 * topic's first local subscriber and unsubscribed on its last. The value
 * it returns for a first subscriber is the topic's tag:
 * ps_cluster_confirmed(tag) says whether a round trip since has made the
 * NATS subscription certain.
 *
 * Any thread may call ps_cluster_* (never from ops callbacks but
 * ps_cluster_stats), except ps_cluster_open and ps_cluster_close.
 * Built only with libnats-dev (PUBSUB_NATS defined); without it,
 * ps_cluster_open fails with BS_EDISABLED and nothing else may be called.
 */
#ifndef PUBSUB_CLUSTER_H
#define PUBSUB_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <buffstreams.h>

typedef struct ps_cluster ps_cluster_t;

typedef struct ps_cluster_ops {
	void *ctx;
	/* On the delivery thread: a message published on another node. */
	void (*on_topic)(void *ctx, const uint8_t *topic, size_t tlen, const uint8_t *body,
			 size_t len);
	/* On the delivery thread: a direct message for target, a connection
	 * of this node (stale, maybe), from sender on another node. */
	void (*on_direct)(void *ctx, bs_id_t target, bs_id_t sender, const uint8_t *body,
			  size_t len);
	/* On the delivery thread, when the two above ran dry (or after 1024
	 * of them). */
	void (*on_idle)(void *ctx);
	/* On the answer thread (or in ps_cluster_close): an answer given to
	 * ps_cluster_defer, now due. */
	void (*on_answer)(void *ctx, void *answer);
	/* A line about the link (reconnects, losses); any thread. */
	void (*on_log)(void *ctx, bool warning, const char *line);
} ps_cluster_ops_t;

typedef struct ps_cluster_stats {
	uint64_t published;   /* messages handed to NATS (topic and direct) */
	uint64_t not_sent;    /* not handed over: link down, buffer full */
	uint64_t received;    /* messages of other nodes delivered to this one */
	uint64_t lost;        /* messages of other nodes seen missing (gaps) */
	uint64_t disconnects, reconnects;
	bool connected;
} ps_cluster_stats_t;

/* Whether this build has the NATS side (libnats-dev was there). */
bool ps_cluster_built(void);

/* Connects as node `node` (see bridge_open) and starts the two threads.
 * 0 and *out, or BS_EINVAL, BS_EADDR, BS_ENOMEM, BS_ESYS, BS_EDISABLED
 * (built without NATS). */
int ps_cluster_open(const char *url, uint16_t node, const ps_cluster_ops_t *ops,
		    ps_cluster_t **out);

/* Hands every answer still queued to on_answer, closes the bridge (no
 * callback runs after) and stops the threads. Call once no other
 * ps_cluster_* call runs or can follow. NULL is a no-op. */
void ps_cluster_close(ps_cluster_t *c);

/* The topic table's interest callback (ctx is the cluster). */
uint64_t ps_cluster_interest(void *ctx, const uint8_t *topic, size_t len, bool first);
/* Whether the NATS server is known to have the subscription of a topic
 * whose first local subscriber got this tag. */
bool ps_cluster_confirmed(ps_cluster_t *c, uint64_t tag);
/* Queues answer for on_answer after the next round trip. 0 or BS_ENOMEM
 * (the caller then answers itself). */
int ps_cluster_defer(ps_cluster_t *c, void *answer);

/* bridge_publish and bridge_direct (their returns). */
int ps_cluster_publish(ps_cluster_t *c, const uint8_t *topic, size_t tlen, bs_id_t publisher,
		       const void *body, size_t len);
int ps_cluster_direct(ps_cluster_t *c, bs_id_t target, bs_id_t sender, const void *body,
		      size_t len);

void ps_cluster_stats(ps_cluster_t *c, ps_cluster_stats_t *out);

#endif /* PUBSUB_CLUSTER_H */
