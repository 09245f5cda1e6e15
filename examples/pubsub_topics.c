/*
 * pubsub_topics — topics to subscriber ids, striped (see pubsub_topics.h).
 * Any thread; a connection's list only by the thread processing that
 * connection's events.
 *
 * Lock order: one stripe at a time; the interest callback runs inside it
 * (the NATS bridge takes its own lock there, never ours).
 */
#include "pubsub_topics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "topic_table.h"

#define STRIPES 64u /* a power of two */

struct ps_topic {
	topic_key_t key;         /* first: the stripe's table entry */
	uint64_t tag;
	uint32_t nsubs, cap;
	bs_id_t *subs;           /* unordered */
	uint8_t name[];          /* key.len bytes */
};

struct stripe {
	pthread_rwlock_t lock;
	topic_table_t table;
} __attribute__((aligned(64)));

struct ps_topics {
	ps_interest_fn interest;
	void *ctx;
	struct stripe s[STRIPES];
};

static struct stripe *stripe_of(ps_topics_t *t, uint32_t hash)
{
	/* The table inside takes the low bits: the stripe takes high ones. */
	return &t->s[(hash >> 26) & (STRIPES - 1)];
}

int ps_topics_create(ps_interest_fn interest, void *ctx, ps_topics_t **out)
{
	pthread_rwlockattr_t attr;
	ps_topics_t *t = calloc(1, sizeof(*t));
	unsigned i;

	if (!t)
		return -1;
	t->interest = interest;
	t->ctx = ctx;
	/* A steady stream of publishes must not starve subscribers. */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (i = 0; i < STRIPES; i++) {
		if (topic_table_init(&t->s[i].table) != 0)
			break;
		pthread_rwlock_init(&t->s[i].lock, &attr);
	}
	pthread_rwlockattr_destroy(&attr);
	if (i < STRIPES) {
		while (i-- > 0) {
			topic_table_free(&t->s[i].table);
			pthread_rwlock_destroy(&t->s[i].lock);
		}
		free(t);
		return -1;
	}
	*out = t;
	return 0;
}

static void topic_free(struct ps_topic *tp)
{
	free(tp->subs);
	free(tp);
}

void ps_topics_destroy(ps_topics_t *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < STRIPES; i++) {
		topic_key_t *k;
		while ((k = topic_table_pop(&t->s[i].table)))
			topic_free((struct ps_topic *)k);
		topic_table_free(&t->s[i].table);
		pthread_rwlock_destroy(&t->s[i].lock);
	}
	free(t);
}

/* Takes id out of tp (its stripe write-locked); the last one out ends
 * the topic. */
static void remove_locked(ps_topics_t *t, struct stripe *st, struct ps_topic *tp, bs_id_t id)
{
	for (uint32_t i = 0; i < tp->nsubs; i++) {
		if (tp->subs[i] == id) {
			tp->subs[i] = tp->subs[--tp->nsubs];
			break;
		}
	}
	if (tp->nsubs > 0)
		return;
	topic_table_remove(&st->table, &tp->key);
	if (t->interest)
		(void)t->interest(t->ctx, tp->name, tp->key.len, false);
	topic_free(tp);
}

static bool same_topic(const struct ps_topic *tp, uint32_t h, const uint8_t *name, size_t len)
{
	return tp->key.hash == h && tp->key.len == len && memcmp(tp->name, name, len) == 0;
}

int ps_topics_subscribe(ps_topics_t *t, ps_subs_t *subs, bs_id_t id, const uint8_t *name,
			size_t len, uint64_t *tag)
{
	uint32_t h = topic_hash(name, len);
	struct stripe *st = stripe_of(t, h);
	struct ps_topic *tp;
	int rc = -1;

	if (subs->n == subs->cap) {
		uint32_t cap = subs->cap ? 2 * subs->cap : 4;
		struct ps_topic **v = realloc(subs->v, cap * sizeof(*v));
		if (!v)
			return -1;
		subs->v = v;
		subs->cap = cap;
	}
	/* Only this thread changes the list, and a topic in it lives while
	 * id is one of its subscribers, its name and tag unchanged since it
	 * was made: no lock needed to look. */
	for (uint32_t i = 0; i < subs->n; i++) {
		if (same_topic(subs->v[i], h, name, len)) {
			if (tag)
				*tag = subs->v[i]->tag;
			return 0;
		}
	}

	pthread_rwlock_wrlock(&st->lock);
	tp = (struct ps_topic *)topic_table_find(&st->table, name, len, h);
	bool fresh = tp == NULL;
	if (fresh) {
		tp = calloc(1, sizeof(*tp) + len);
		if (!tp)
			goto out;
		memcpy(tp->name, name, len);
		tp->key = (topic_key_t){ NULL, h, (uint8_t)len, tp->name };
	}
	if (tp->nsubs == tp->cap) {
		uint32_t cap = tp->cap ? 2 * tp->cap : 4;
		bs_id_t *v = realloc(tp->subs, cap * sizeof(*v));
		if (!v) {
			if (fresh)
				topic_free(tp);
			goto out;
		}
		tp->subs = v;
		tp->cap = cap;
	}
	if (fresh) {
		topic_table_insert(&st->table, &tp->key);
		if (t->interest)
			tp->tag = t->interest(t->ctx, name, len, true);
	}
	tp->subs[tp->nsubs++] = id;
	subs->v[subs->n++] = tp;
	if (tag)
		*tag = tp->tag;
	rc = 1;
out:
	pthread_rwlock_unlock(&st->lock);
	return rc;
}

void ps_topics_unsubscribe(ps_topics_t *t, ps_subs_t *subs, bs_id_t id, const uint8_t *name,
			   size_t len)
{
	uint32_t h = topic_hash(name, len);

	for (uint32_t i = 0; i < subs->n; i++) {
		struct ps_topic *tp = subs->v[i];
		if (!same_topic(tp, h, name, len))
			continue;
		struct stripe *st = stripe_of(t, h);
		pthread_rwlock_wrlock(&st->lock);
		remove_locked(t, st, tp, id);
		pthread_rwlock_unlock(&st->lock);
		subs->v[i] = subs->v[--subs->n];
		return;
	}
}

void ps_topics_unsubscribe_all(ps_topics_t *t, ps_subs_t *subs, bs_id_t id)
{
	for (uint32_t i = 0; i < subs->n; i++) {
		struct ps_topic *tp = subs->v[i];
		struct stripe *st = stripe_of(t, tp->key.hash);
		pthread_rwlock_wrlock(&st->lock);
		remove_locked(t, st, tp, id);
		pthread_rwlock_unlock(&st->lock);
	}
	free(subs->v);
	*subs = (ps_subs_t){ 0 };
}

bool ps_topics_fanout(ps_topics_t *t, const uint8_t *name, size_t len, ps_fanout_fn fn,
		      void *ctx)
{
	uint32_t h = topic_hash(name, len);
	struct stripe *st = stripe_of(t, h);
	struct ps_topic *tp;
	bool any = false;

	pthread_rwlock_rdlock(&st->lock);
	tp = (struct ps_topic *)topic_table_find(&st->table, name, len, h);
	if (tp && tp->nsubs > 0) {
		fn(ctx, tp->subs, tp->nsubs);
		any = true;
	}
	pthread_rwlock_unlock(&st->lock);
	return any;
}
