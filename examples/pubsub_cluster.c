/*
 * pubsub_cluster — a pub/sub node's side of the NATS bridge: the inbound
 * queue and its delivery thread, the answer queue and its round-trip
 * thread (see pubsub_cluster.h). Any thread but nats.c's and ours calls
 * in; the ops run on ours.
 *
 * Locks: in_mu (inbound queue), ans_mu (answers); neither is held while
 * calling out, nor taken inside the other. The bridge's interest calls run
 * under the topic table's stripe lock, which the bridge never waits on.
 */
#include "pubsub_cluster.h"

#ifdef PUBSUB_NATS

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "nats_bridge.h"

#define IN_BYTES_MAX (16u << 20) /* copied messages waiting for delivery */
#define RUN_MAX 256              /* taken from the queue at once */
/* on_idle once the queue is empty, or after this many messages: a write
 * costs the kernel as much as dozens of small deliveries, so each
 * subscriber's frames wait while more come (as the library's BS_SEND_MORE
 * frames wait while a receiving thread has work), but not for ever. */
#define IDLE_EVERY 1024
#define ROUND_TRIP_MS 2000       /* a flush waits at most this long */

struct inmsg {
	struct inmsg *next;
	bool direct;
	uint8_t tlen;
	bs_id_t target, sender;
	size_t len;
	uint8_t bytes[];             /* topic (tlen), then body (len) */
};

struct answer {
	struct answer *next;
	void *answer;
};

struct ps_cluster {
	ps_cluster_ops_t ops;
	bridge_t *bridge;

	pthread_mutex_t in_mu;
	pthread_cond_t in_ready, in_room;
	struct inmsg *in_head, **in_tail;
	size_t in_bytes;
	bool in_stop;
	pthread_t deliverer;

	pthread_mutex_t ans_mu;
	pthread_cond_t ans_ready;
	struct answer *ans_head, **ans_tail;
	bool ans_stop;
	pthread_t answerer;

	/* Tags: a topic made at epoch e is certain once a round trip that
	 * began after it succeeded (confirmed >= e). */
	atomic_uint_fast64_t epoch, confirmed;
	atomic_uint_fast64_t copy_failed; /* lost here: out of memory */
};

/* ---- inbound ---------------------------------------------------------------- */

/* nats.c's delivery thread: copy, queue, and wait while the queue is full. */
static void in_push(ps_cluster_t *c, bool direct, const uint8_t *topic, size_t tlen,
		    bs_id_t target, bs_id_t sender, const void *body, size_t len)
{
	struct inmsg *m = malloc(sizeof(*m) + tlen + len);

	if (!m) {
		/* The sender's next message shows no gap: count it here. */
		atomic_fetch_add(&c->copy_failed, 1);
		return;
	}
	m->next = NULL;
	m->direct = direct;
	m->tlen = (uint8_t)tlen;
	m->target = target;
	m->sender = sender;
	m->len = len;
	if (tlen)
		memcpy(m->bytes, topic, tlen);
	if (len)
		memcpy(m->bytes + tlen, body, len);
	pthread_mutex_lock(&c->in_mu);
	while (c->in_bytes > IN_BYTES_MAX && !c->in_stop)
		pthread_cond_wait(&c->in_room, &c->in_mu);
	*c->in_tail = m;
	c->in_tail = &m->next;
	c->in_bytes += sizeof(*m) + tlen + len;
	pthread_cond_signal(&c->in_ready);
	pthread_mutex_unlock(&c->in_mu);
}

static void on_topic_message(void *ctx, const uint8_t *topic, size_t topic_len,
			     uint16_t origin_node, uint64_t origin_seq,
			     bs_id_t origin_publisher, const void *payload, size_t len)
{
	(void)origin_node;
	(void)origin_seq;
	in_push(ctx, false, topic, topic_len, 0, origin_publisher, payload, len);
}

static void on_direct_message(void *ctx, bs_id_t target_id, bs_id_t sender_id,
			      const void *payload, size_t len)
{
	in_push(ctx, true, NULL, 0, target_id, sender_id, payload, len);
}

static void on_bridge_log(void *ctx, enum bridge_log_level level, const char *line)
{
	ps_cluster_t *c = ctx;

	if (c->ops.on_log)
		c->ops.on_log(c->ops.ctx, level == BRIDGE_LOG_WARN, line);
}

static void *deliverer_main(void *arg)
{
	ps_cluster_t *c = arg;
	size_t since_idle = 0;

	for (;;) {
		pthread_mutex_lock(&c->in_mu);
		while (!c->in_head && !c->in_stop)
			pthread_cond_wait(&c->in_ready, &c->in_mu);
		if (!c->in_head) {
			pthread_mutex_unlock(&c->in_mu);
			return NULL;
		}
		/* A run at most, so that the lock is held briefly. */
		struct inmsg *run = c->in_head, *last = run;
		size_t n = 1, bytes = sizeof(*run) + run->tlen + run->len;
		while (last->next && n < RUN_MAX) {
			last = last->next;
			bytes += sizeof(*last) + last->tlen + last->len;
			n++;
		}
		c->in_head = last->next;
		if (!c->in_head)
			c->in_tail = &c->in_head;
		last->next = NULL;
		c->in_bytes -= bytes;
		pthread_cond_broadcast(&c->in_room);
		bool stop = c->in_stop, dry = c->in_head == NULL;
		pthread_mutex_unlock(&c->in_mu);

		for (struct inmsg *m = run, *next; m; m = next) {
			next = m->next;
			if (!stop && m->direct && c->ops.on_direct)
				c->ops.on_direct(c->ops.ctx, m->target, m->sender, m->bytes + m->tlen,
						 m->len);
			else if (!stop && !m->direct && c->ops.on_topic)
				c->ops.on_topic(c->ops.ctx, m->bytes, m->tlen, m->bytes + m->tlen,
						m->len);
			free(m);
		}
		since_idle += n;
		if ((dry || since_idle >= IDLE_EVERY) && c->ops.on_idle) {
			c->ops.on_idle(c->ops.ctx);
			since_idle = 0;
		}
	}
}

/* ---- answers ---------------------------------------------------------------- */

static void *answerer_main(void *arg)
{
	ps_cluster_t *c = arg;

	for (;;) {
		pthread_mutex_lock(&c->ans_mu);
		while (!c->ans_head && !c->ans_stop)
			pthread_cond_wait(&c->ans_ready, &c->ans_mu);
		struct answer *list = c->ans_head;
		c->ans_head = NULL;
		c->ans_tail = &c->ans_head;
		bool stop = c->ans_stop;
		pthread_mutex_unlock(&c->ans_mu);
		if (!list && stop)
			return NULL;

		/* One round trip covers every subscription handed to nats.c
		 * before it began: those of every topic tagged up to e. */
		uint64_t e = atomic_fetch_add(&c->epoch, 1);
		if (!stop && bridge_flush(c->bridge, ROUND_TRIP_MS) == 0)
			atomic_store(&c->confirmed, e);
		for (struct answer *a = list, *next; a; a = next) {
			next = a->next;
			c->ops.on_answer(c->ops.ctx, a->answer);
			free(a);
		}
	}
}

int ps_cluster_defer(ps_cluster_t *c, void *answer)
{
	struct answer *a = malloc(sizeof(*a));

	if (!a)
		return BS_ENOMEM;
	a->next = NULL;
	a->answer = answer;
	pthread_mutex_lock(&c->ans_mu);
	*c->ans_tail = a;
	c->ans_tail = &a->next;
	pthread_cond_signal(&c->ans_ready);
	pthread_mutex_unlock(&c->ans_mu);
	return 0;
}

uint64_t ps_cluster_interest(void *ctx, const uint8_t *topic, size_t len, bool first)
{
	ps_cluster_t *c = ctx;

	if (!first) {
		(void)bridge_topic_unref(c->bridge, topic, len);
		return 0;
	}
	/* A failed ref is retried by the bridge on reconnect; the tag still
	 * makes the first answer wait for one round trip. */
	(void)bridge_topic_ref(c->bridge, topic, len);
	return atomic_load(&c->epoch);
}

bool ps_cluster_confirmed(ps_cluster_t *c, uint64_t tag)
{
	return tag <= atomic_load(&c->confirmed);
}

/* ---- sending ---------------------------------------------------------------- */

int ps_cluster_publish(ps_cluster_t *c, const uint8_t *topic, size_t tlen, bs_id_t publisher,
		       const void *body, size_t len)
{
	return bridge_publish(c->bridge, topic, tlen, publisher, body, len);
}

int ps_cluster_direct(ps_cluster_t *c, bs_id_t target, bs_id_t sender, const void *body,
		      size_t len)
{
	return bridge_direct(c->bridge, bs_id_node(target), target, sender, body, len);
}

void ps_cluster_stats(ps_cluster_t *c, ps_cluster_stats_t *out)
{
	bridge_stats_t b;

	bridge_stats(c->bridge, &b);
	*out = (ps_cluster_stats_t){
		.published = b.published,
		.not_sent = b.publish_failed,
		.received = b.received,
		.lost = b.gaps_lost + atomic_load(&c->copy_failed),
		.disconnects = b.disconnects,
		.reconnects = b.reconnects,
		.connected = b.connected,
	};
}

/* ---- life ------------------------------------------------------------------- */

bool ps_cluster_built(void)
{
	return true;
}

static void cluster_free(ps_cluster_t *c)
{
	pthread_mutex_destroy(&c->in_mu);
	pthread_cond_destroy(&c->in_ready);
	pthread_cond_destroy(&c->in_room);
	pthread_mutex_destroy(&c->ans_mu);
	pthread_cond_destroy(&c->ans_ready);
	free(c);
}

int ps_cluster_open(const char *url, uint16_t node, const ps_cluster_ops_t *ops,
		    ps_cluster_t **out)
{
	if (!url || !ops || !ops->on_answer || !out)
		return BS_EINVAL;
	ps_cluster_t *c = calloc(1, sizeof(*c));
	if (!c)
		return BS_ENOMEM;
	c->ops = *ops;
	c->in_tail = &c->in_head;
	c->ans_tail = &c->ans_head;
	atomic_init(&c->epoch, 1);
	atomic_init(&c->confirmed, 0);
	pthread_mutex_init(&c->in_mu, NULL);
	pthread_cond_init(&c->in_ready, NULL);
	pthread_cond_init(&c->in_room, NULL);
	pthread_mutex_init(&c->ans_mu, NULL);
	pthread_cond_init(&c->ans_ready, NULL);

	bridge_callbacks_t cb = {
		.ctx = c,
		.on_topic_message = on_topic_message,
		.on_direct = on_direct_message,
		.on_log = on_bridge_log,
	};
	int rc = bridge_open(url, node, &cb, &c->bridge);
	if (rc) {
		cluster_free(c);
		return rc;
	}
	if (pthread_create(&c->deliverer, NULL, deliverer_main, c) != 0) {
		bridge_close(c->bridge);
		cluster_free(c);
		return BS_ESYS;
	}
	if (pthread_create(&c->answerer, NULL, answerer_main, c) != 0) {
		pthread_mutex_lock(&c->in_mu);
		c->in_stop = true;
		pthread_cond_broadcast(&c->in_ready);
		pthread_mutex_unlock(&c->in_mu);
		pthread_join(c->deliverer, NULL);
		bridge_close(c->bridge);
		cluster_free(c);
		return BS_ESYS;
	}
	*out = c;
	return 0;
}

void ps_cluster_close(ps_cluster_t *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->ans_mu);
	c->ans_stop = true;
	pthread_cond_broadcast(&c->ans_ready);
	pthread_mutex_unlock(&c->ans_mu);
	pthread_join(c->answerer, NULL);

	/* A callback waiting for room must not hold the bridge's close up. */
	pthread_mutex_lock(&c->in_mu);
	c->in_stop = true;
	pthread_cond_broadcast(&c->in_room);
	pthread_cond_broadcast(&c->in_ready);
	pthread_mutex_unlock(&c->in_mu);
	bridge_close(c->bridge);
	pthread_join(c->deliverer, NULL);
	for (struct inmsg *m = c->in_head, *next; m; m = next) {
		next = m->next;
		free(m);
	}
	cluster_free(c);
}

#else /* built without libnats-dev */

bool ps_cluster_built(void)
{
	return false;
}

int ps_cluster_open(const char *url, uint16_t node, const ps_cluster_ops_t *ops,
		    ps_cluster_t **out)
{
	return BS_EDISABLED;
}

void ps_cluster_close(ps_cluster_t *c)
{
}

uint64_t ps_cluster_interest(void *ctx, const uint8_t *topic, size_t len, bool first)
{
	return 0;
}

bool ps_cluster_confirmed(ps_cluster_t *c, uint64_t tag)
{
	return true;
}

int ps_cluster_defer(ps_cluster_t *c, void *answer)
{
	return BS_EDISABLED;
}

int ps_cluster_publish(ps_cluster_t *c, const uint8_t *topic, size_t tlen, bs_id_t publisher,
		       const void *body, size_t len)
{
	return BS_EDISABLED;
}

int ps_cluster_direct(ps_cluster_t *c, bs_id_t target, bs_id_t sender, const void *body,
		      size_t len)
{
	return BS_EDISABLED;
}

void ps_cluster_stats(ps_cluster_t *c, ps_cluster_stats_t *out)
{
	*out = (ps_cluster_stats_t){ 0 };
}

#endif
