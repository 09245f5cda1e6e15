/*
 * pubsub_topics — the pub/sub server's routing table: each topic (a byte
 * string of 1..255 bytes) to the connection ids of its subscribers, and
 * each connection's own list of its topics, so that a close ends them all.
 *
 * Threads: any number at once. Topics live in a hash table split into
 * stripes, each under a read-write lock: a fan-out reads a stripe,
 * subscribing and unsubscribing write it. A connection's list (ps_subs_t)
 * belongs to whoever processes that connection's events; with
 * buffstreams' connection holds that is one thread at a time, so the list
 * has no lock of its own. A topic exists while it has subscribers.
 *
 * The table is keyed by id on purpose: an id is a plain number that stays
 * valid to store anywhere, and a send to an id that has closed fails with
 * BS_ESTALE instead of reaching another connection, so a subscriber that
 * closed is harmless until its close event removes it.
 */
#ifndef PUBSUB_TOPICS_H
#define PUBSUB_TOPICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <buffstreams.h>

#define PS_TOPIC_MAX 255

typedef struct ps_topics ps_topics_t;
struct ps_topic;

/* One connection's topics. Zero-initialised is empty. */
typedef struct ps_subs {
	uint32_t n, cap;
	struct ps_topic **v;
} ps_subs_t;

/*
 * Called when a topic gets its first subscriber (first true; the value
 * returned is kept as the topic's tag, see ps_topics_subscribe) and when
 * it loses its last one (first false; the value is ignored). It runs under
 * the topic's stripe lock, so the calls for one topic are in order and
 * never overlap; it must not call ps_topics_*.
 */
typedef uint64_t (*ps_interest_fn)(void *ctx, const uint8_t *name, size_t len, bool first);

/* interest may be NULL. 0, or -1 out of memory. */
int ps_topics_create(ps_interest_fn interest, void *ctx, ps_topics_t **out);
/* Frees the table and any topic left (the interest callback is not
 * called). No other call may run or follow. NULL is a no-op. */
void ps_topics_destroy(ps_topics_t *t);

/*
 * Subscribes id, whose list is subs, to the topic. Returns 1 when it was
 * new, 0 when id had it already, -1 out of memory (nothing changed).
 * *tag (may be NULL) receives the topic's tag.
 */
int ps_topics_subscribe(ps_topics_t *t, ps_subs_t *subs, bs_id_t id, const uint8_t *name,
			size_t len, uint64_t *tag);

/* Ends id's subscription to the topic; a topic it does not hold is a
 * no-op. */
void ps_topics_unsubscribe(ps_topics_t *t, ps_subs_t *subs, bs_id_t id, const uint8_t *name,
			   size_t len);

/* Ends every subscription of id and frees the list's memory. */
void ps_topics_unsubscribe_all(ps_topics_t *t, ps_subs_t *subs, bs_id_t id);

/*
 * Calls fn with the topic's subscribers (n > 0, unordered) while their
 * stripe is read-locked: fn must not subscribe or unsubscribe, and should
 * not wait. Returns false, without calling fn, when the topic has none.
 */
typedef void (*ps_fanout_fn)(void *ctx, const bs_id_t *ids, size_t n);
bool ps_topics_fanout(ps_topics_t *t, const uint8_t *name, size_t len, ps_fanout_fn fn,
		      void *ctx);

#endif /* PUBSUB_TOPICS_H */
