/*
 * pubsub_server — a publish/subscribe server that routes by connection id.
 *
 *   pubsub_server [ADDR] [--threads N] [--slow drop|disconnect] [--queue BYTES]
 *
 * ADDR defaults to 127.0.0.1:5032 ("unix:/path" works too, port 0 picks a
 * free port; the bound address is printed). N application threads (default
 * 2) drain messages; one more thread takes close events and removes the
 * subscriptions of closed connections. --queue bounds each connection's
 * outgoing queue (default 4 MiB); --slow says what happens to a subscriber
 * whose queue is full (default disconnect). SIGINT or SIGTERM shuts down
 * gracefully and prints one line: published, delivered, dropped, slow
 * disconnects.
 *
 * Wire protocol
 *   Every message uses the default framing: a 4-byte big-endian length,
 *   then the payload. Every payload is
 *
 *       op (1 byte) | topic length T (1 byte, 1..255) | topic (T bytes) | body
 *
 *   From a client:
 *     'S'  subscribe to the topic. Answered with 'A' and the same topic
 *          once the subscription is in effect: every message published to
 *          the topic after that is delivered. Subscribing twice to one
 *          topic is one subscription (and answered again).
 *     'U'  unsubscribe; answered with 'A' and the same topic. After the
 *          'A', nothing more of that topic arrives (deliveries queued
 *          before it come before it).
 *     'P'  publish: the body is the payload. Not answered.
 *   A body after the topic of 'S' or 'U' is ignored.
 *   From the server:
 *     'M'  a delivery: the topic and the publisher's body, byte for byte.
 *     'A'  the acknowledgement of 'S' or 'U'.
 *     'E'  an error: topic length 0, body = a short reason in ASCII. Sent
 *          for an empty message, a message without a topic length byte, a
 *          topic length of 0, a topic longer than the message, and an op
 *          other than S, U or P. The connection stays open and is served
 *          on.
 *   A subscriber may hold many topics, and a publisher may subscribe too
 *   (it then receives its own messages). Each publisher's messages reach
 *   every subscriber in publish order and exactly once. Closing a
 *   connection ends its subscriptions.
 *
 *   Example, subscribe to "news" (hex): 00 00 00 06 53 04 6e 65 77 73
 *                            answer:     00 00 00 06 41 04 6e 65 77 73
 *
 * Slow subscribers
 *   A delivery that finds the subscriber's queue full (--queue) is dropped
 *   and counted (--slow drop), or the subscriber is disconnected and
 *   counted (--slow disconnect): it gets what was queued before, then the
 *   connection closes. Either way the other subscribers are not held up.
 *
 * Threads
 *   Each publisher's messages must be processed one after another, in
 *   wire order, for the per-publisher order to hold. The library hands a
 *   connection's events to one thread at a time ("holds", see the README);
 *   this server relies on that and takes no lock around receiving. The
 *   tables are safe for N threads: topics live in a hash table of striped
 *   read-write locks (publishing takes a read lock, subscribing a write
 *   lock), and each subscriber's topics in a table keyed by connection id,
 *   under striped mutexes. Lock order: a connection stripe, then a topic
 *   stripe; no library call waits on either.
 */
#include <buffstreams.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_ADDR "127.0.0.1:5032"
#define BATCH 256           /* messages taken per bs_recv_data_batch call */
#define POLL_MS 200         /* how often idle threads look at the stop flag */
#define MAX_THREADS 64
#define TOPIC_STRIPES 64u   /* powers of two */
#define TOPIC_BUCKETS 256u  /* per stripe */
#define CONN_STRIPES 64u
#define CONN_BUCKETS 256u
/* Deliveries are queued with BS_SEND_MORE and written once per batch, so a
 * subscriber that receives several messages of a batch costs one system
 * call. At most this many are queued before they are written, so the first
 * subscriber of a large fan-out does not wait for the whole batch. */
#define FLUSH_EVERY 65536u
#define FLUSH_IDS 4096u     /* distinct subscribers waiting for a flush */
#define GONE_MAX 64u        /* subscribers found gone in one delivery */

enum slow_policy { SLOW_DROP, SLOW_DISCONNECT };

static bs_t *bs;
static enum slow_policy slow = SLOW_DISCONNECT;
static atomic_bool stopping;

/* The summary. delivered counts deliveries the library accepted; stale
 * counts sends to subscribers that had closed, before their close event
 * removed them. */
static atomic_uint_fast64_t n_published, n_delivered, n_dropped, n_slow,
	n_stale, n_errors, n_closed;

/* ------------------------------------------------------------------------
 * Topics: name -> subscriber ids. Publishing reads a stripe, subscribing
 * and cleaning up write it. A topic exists while it has subscribers.
 */
struct topic {
	struct topic *next;  /* in its bucket */
	uint32_t hash;
	uint32_t nsubs, cap;
	bs_id_t *subs;       /* unordered */
	uint8_t len;
	uint8_t name[];      /* len bytes */
};

struct topic_stripe {
	pthread_rwlock_t lock;
	struct topic *bucket[TOPIC_BUCKETS];
} __attribute__((aligned(64)));

static struct topic_stripe topics[TOPIC_STRIPES];

static uint32_t topic_hash(const uint8_t *name, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ name[i]) * 16777619u;
	return h;
}

static struct topic_stripe *topic_stripe(uint32_t hash)
{
	return &topics[hash & (TOPIC_STRIPES - 1)];
}

static struct topic **topic_slot(struct topic_stripe *st, uint32_t hash,
				 const uint8_t *name, size_t len)
{
	struct topic **p = &st->bucket[(hash / TOPIC_STRIPES) & (TOPIC_BUCKETS - 1)];
	for (; *p; p = &(*p)->next)
		if ((*p)->hash == hash && (*p)->len == len && !memcmp((*p)->name, name, len))
			break;
	return p;
}

/* Removes id from t (stripe write-locked); frees t when it was the last. */
static void topic_remove_locked(struct topic_stripe *st, struct topic *t, bs_id_t id)
{
	for (uint32_t i = 0; i < t->nsubs; i++) {
		if (t->subs[i] == id) {
			t->subs[i] = t->subs[--t->nsubs];
			break;
		}
	}
	if (t->nsubs > 0)
		return;
	struct topic **p = topic_slot(st, t->hash, t->name, t->len);
	*p = t->next;
	free(t->subs);
	free(t);
}

/* ------------------------------------------------------------------------
 * Subscribers: connection id -> its topics, so that a close removes them.
 * Invariant (under both locks): id is in t->subs exactly when t is in the
 * topics of id's entry. Publishers that never subscribe have no entry.
 * The table is a lookup by id only because an event carries nothing else
 * of the connection; a per-connection user value in the events would hold
 * the entry directly (conn_stripe/conn_slot are the only lookups).
 */
struct conn {
	struct conn *next;
	bs_id_t id;
	uint32_t n, cap;
	struct topic **topics;
};

struct conn_stripe {
	pthread_mutex_t lock;
	struct conn *bucket[CONN_BUCKETS];
} __attribute__((aligned(64)));

static struct conn_stripe conns[CONN_STRIPES];

static uint64_t id_hash(bs_id_t id)
{
	return (id * 0x9e3779b97f4a7c15ull) >> 32;
}

static struct conn_stripe *conn_stripe(bs_id_t id)
{
	return &conns[id_hash(id) & (CONN_STRIPES - 1)];
}

static struct conn **conn_slot(struct conn_stripe *st, bs_id_t id)
{
	struct conn **p = &st->bucket[(id_hash(id) / CONN_STRIPES) & (CONN_BUCKETS - 1)];
	while (*p && (*p)->id != id)
		p = &(*p)->next;
	return p;
}

/* Adds the subscription; 0, or -1 when out of memory. */
static int subscribe(bs_id_t id, const uint8_t *name, size_t len)
{
	struct conn_stripe *cs = conn_stripe(id);
	uint32_t h = topic_hash(name, len);
	struct topic_stripe *ts = topic_stripe(h);
	int rc = -1;

	pthread_mutex_lock(&cs->lock);
	struct conn **cp = conn_slot(cs, id), *c = *cp;
	if (!c) {
		c = calloc(1, sizeof *c);
		if (!c)
			goto out;
		c->id = id;
		*cp = c;
	}
	pthread_rwlock_wrlock(&ts->lock);
	struct topic **tp = topic_slot(ts, h, name, len), *t = *tp;
	if (t) {
		for (uint32_t i = 0; i < c->n; i++)
			if (c->topics[i] == t) {
				rc = 0; /* already subscribed */
				goto unlock;
			}
	} else {
		t = calloc(1, sizeof *t + len);
		if (!t)
			goto unlock;
		t->hash = h;
		t->len = (uint8_t)len;
		memcpy(t->name, name, len);
		*tp = t;
	}
	if (t->nsubs == t->cap) {
		uint32_t cap = t->cap ? 2 * t->cap : 4;
		bs_id_t *s = realloc(t->subs, cap * sizeof *s);
		if (!s)
			goto undo;
		t->subs = s;
		t->cap = cap;
	}
	if (c->n == c->cap) {
		uint32_t cap = c->cap ? 2 * c->cap : 4;
		struct topic **l = realloc(c->topics, cap * sizeof *l);
		if (!l)
			goto undo;
		c->topics = l;
		c->cap = cap;
	}
	t->subs[t->nsubs++] = id;
	c->topics[c->n++] = t;
	rc = 0;
	goto unlock;
undo:
	if (t->nsubs == 0)
		topic_remove_locked(ts, t, id);
unlock:
	pthread_rwlock_unlock(&ts->lock);
	if (c->n == 0) { /* nothing to remember about this connection */
		*conn_slot(cs, id) = c->next;
		free(c->topics);
		free(c);
	}
out:
	pthread_mutex_unlock(&cs->lock);
	return rc;
}

/* Ends one subscription of id, or all of them (name NULL). Unknown ids and
 * topics are no-ops, so a close and a stale send may both call it. */
static void unsubscribe(bs_id_t id, const uint8_t *name, size_t len)
{
	struct conn_stripe *cs = conn_stripe(id);
	uint32_t h = name ? topic_hash(name, len) : 0;

	pthread_mutex_lock(&cs->lock);
	struct conn **cp = conn_slot(cs, id), *c = *cp;
	for (uint32_t i = 0; c && i < c->n;) {
		struct topic *t = c->topics[i];
		if (name && (t->hash != h || t->len != len || memcmp(t->name, name, len))) {
			i++;
			continue;
		}
		struct topic_stripe *ts = topic_stripe(t->hash);
		pthread_rwlock_wrlock(&ts->lock);
		topic_remove_locked(ts, t, id);
		pthread_rwlock_unlock(&ts->lock);
		c->topics[i] = c->topics[--c->n];
	}
	if (c && c->n == 0) {
		*cp = c->next;
		free(c->topics);
		free(c);
	}
	pthread_mutex_unlock(&cs->lock);
}

static void tables_init(void)
{
	pthread_rwlockattr_t attr;

	/* A steady stream of publishes must not starve subscribe. */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (unsigned i = 0; i < TOPIC_STRIPES; i++)
		pthread_rwlock_init(&topics[i].lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	for (unsigned i = 0; i < CONN_STRIPES; i++)
		pthread_mutex_init(&conns[i].lock, NULL);
}

/* Frees what connections still open at exit left behind. */
static void tables_free(void)
{
	for (unsigned i = 0; i < CONN_STRIPES; i++)
		for (unsigned b = 0; b < CONN_BUCKETS; b++)
			while (conns[i].bucket[b])
				unsubscribe(conns[i].bucket[b]->id, NULL, 0);
}

/* ------------------------------------------------------------------------
 * Delivery
 */

/* What one draining thread keeps between its receive calls. */
struct worker {
	pthread_t thread;
	uint32_t unflushed;            /* deliveries queued since the last flush */
	uint32_t nflush;
	bs_id_t flush[FLUSH_IDS];      /* subscribers with deliveries queued */
	uint16_t slot[2 * FLUSH_IDS];  /* index into flush + 1; 0 = free */
};

/*
 * Writes every queued delivery of this thread. The set is emptied by
 * clearing, from each id's home slot, the run of used slots up to the next
 * free one: a run is cleared whole by the first id that enters it, so no
 * used slot is left behind, and the cost is that of the ids, not of the
 * whole slot array.
 */
static void flush_all(struct worker *w)
{
	for (uint32_t i = 0; i < w->nflush; i++) {
		bs_id_t id = w->flush[i];
		bs_flush(bs, id); /* BS_ESTALE when it closed meanwhile: fine */
		for (uint32_t s = (uint32_t)id_hash(id) & (2 * FLUSH_IDS - 1);;
		     s = (s + 1) & (2 * FLUSH_IDS - 1)) {
			if (w->slot[s] == 0)
				break;
			w->slot[s] = 0;
		}
	}
	w->nflush = 0;
	w->unflushed = 0;
}

/* Remembers that id has a delivery queued. */
static void flush_later(struct worker *w, bs_id_t id)
{
	uint32_t s = (uint32_t)id_hash(id) & (2 * FLUSH_IDS - 1);
	for (; w->slot[s]; s = (s + 1) & (2 * FLUSH_IDS - 1))
		if (w->flush[w->slot[s] - 1] == id)
			return;
	w->flush[w->nflush++] = id;
	w->slot[s] = (uint16_t)w->nflush;
	if (w->nflush == FLUSH_IDS)
		flush_all(w);
}

/* A subscriber's queue is full: apply --slow. True when it is gone. */
static bool slow_subscriber(bs_id_t id, uint64_t *dropped, uint64_t *disconnected)
{
	if (slow == SLOW_DROP) {
		(*dropped)++;
		return false;
	}
	/* Already closing (BS_ESTALE) when another thread got here first. */
	if (bs_send_close(bs, id) == 0)
		(*disconnected)++;
	return true;
}

/*
 * Sends one delivery to every subscriber of the topic: one shared buffer
 * (msg, holding data[0..len)), one reference per subscriber, no copy. The
 * caller keeps its own reference. Subscribers found closed or disconnected
 * here are removed once the topic's lock is released.
 *
 * This is the whole fan-out, in one place on purpose: a library call that
 * sends one message to many ids with one result each would replace the
 * loop, and a per-connection slow-consumer policy set when a subscriber
 * first subscribes would replace slow_subscriber(); the counting stays.
 */
static void deliver(struct worker *w, const uint8_t *name, size_t tlen,
		    bs_msg_t *msg, const void *data, size_t len)
{
	uint32_t h = topic_hash(name, tlen);
	struct topic_stripe *ts = topic_stripe(h);
	uint64_t sent = 0, dropped = 0, disconnected = 0, stale = 0, errors = 0;
	bs_id_t gone[GONE_MAX];
	size_t ngone = 0;

	pthread_rwlock_rdlock(&ts->lock);
	struct topic *t = *topic_slot(ts, h, name, tlen);
	for (uint32_t i = 0; t && i < t->nsubs; i++) {
		bs_id_t id = t->subs[i];
		int rc = bs_send(bs, id, data, len, bs_msg_ref(msg), BS_SEND_MORE, 0);
		if (rc == 0) {
			sent++;
			flush_later(w, id);
			continue;
		}
		bs_msg_release(msg); /* the reference the send did not take */
		bool remove = false;
		if (rc == BS_EAGAIN) {
			remove = slow_subscriber(id, &dropped, &disconnected);
		} else if (rc == BS_ESTALE) {
			stale++;
			remove = true;
		} else {
			errors++; /* shutting down, or out of memory */
		}
		if (remove && ngone < GONE_MAX)
			gone[ngone++] = id;
	}
	pthread_rwlock_unlock(&ts->lock);

	for (size_t i = 0; i < ngone; i++)
		unsubscribe(gone[i], NULL, 0);
	atomic_fetch_add_explicit(&n_delivered, sent, memory_order_relaxed);
	if (dropped | disconnected | stale | errors) {
		atomic_fetch_add(&n_dropped, dropped);
		atomic_fetch_add(&n_slow, disconnected);
		atomic_fetch_add(&n_stale, stale);
		atomic_fetch_add(&n_errors, errors);
	}
	w->unflushed += (uint32_t)sent;
	if (w->unflushed >= FLUSH_EVERY)
		flush_all(w);
}

/* ------------------------------------------------------------------------
 * Requests
 */

/* Answers the sender: op, then the topic (or none), then body. */
static void reply(bs_id_t id, uint8_t op, const uint8_t *name, size_t tlen,
		  const char *body)
{
	uint8_t buf[2 + 255 + 64];
	size_t blen = body ? strlen(body) : 0;

	buf[0] = op;
	buf[1] = (uint8_t)tlen;
	if (tlen)
		memcpy(buf + 2, name, tlen);
	if (blen)
		memcpy(buf + 2 + tlen, body, blen);
	int rc = bs_send_data(bs, id, buf, 2 + tlen + blen);
	if (rc == BS_EAGAIN) {
		uint64_t dropped = 0, disconnected = 0;
		if (slow_subscriber(id, &dropped, &disconnected))
			unsubscribe(id, NULL, 0);
		atomic_fetch_add(&n_dropped, dropped);
		atomic_fetch_add(&n_slow, disconnected);
	} else if (rc == BS_ESTALE) {
		/* It closed: its close event may have been handled before this
		 * subscription was added, so remove it here. */
		unsubscribe(id, NULL, 0);
	}
}

/* Why a message is malformed, or NULL when it is not. */
static const char *malformed(const bs_data_t *ev)
{
	if (ev->len == 0)
		return "empty message";
	if (ev->len == 1)
		return "no topic length";
	if (ev->data[1] == 0)
		return "topic length 0";
	if (2u + ev->data[1] > ev->len)
		return "topic longer than message";
	if (ev->data[0] != 'P' && ev->data[0] != 'S' && ev->data[0] != 'U')
		return "unknown op";
	return NULL;
}

static void handle(struct worker *w, const bs_data_t *ev)
{
	const uint8_t *p = ev->data, *name = p + 2;
	const char *why = malformed(ev);

	if (why) {
		reply(ev->id, 'E', NULL, 0, why);
		return;
	}
	size_t tlen = p[1];
	switch (p[0]) {
	case 'P': {
		/* The delivery differs from the publish in its first byte. The
		 * received buffer is the library's and read-only, so the message
		 * is copied once into a buffer of its own, which every
		 * subscriber's queue then shares. It also keeps a slow
		 * subscriber from pinning a whole pooled read chunk. */
		void *copy;
		bs_msg_t *msg = bs_msg_alloc(ev->len, &copy);
		atomic_fetch_add_explicit(&n_published, 1, memory_order_relaxed);
		if (!msg) {
			atomic_fetch_add(&n_errors, 1);
			return;
		}
		memcpy(copy, p, ev->len);
		((uint8_t *)copy)[0] = 'M';
		deliver(w, name, tlen, msg, copy, ev->len);
		bs_msg_release(msg);
		return;
	}
	case 'S':
		if (subscribe(ev->id, name, tlen) == 0)
			reply(ev->id, 'A', name, tlen, NULL);
		else
			reply(ev->id, 'E', NULL, 0, "out of memory");
		return;
	default: /* 'U' */
		unsubscribe(ev->id, name, tlen);
		reply(ev->id, 'A', name, tlen, NULL);
		return;
	}
}

/* ------------------------------------------------------------------------
 * Threads
 */

static void *data_thread(void *arg)
{
	struct worker *w = arg;
	bs_data_t ev[BATCH];

	for (;;) {
		int n = bs_recv_data_batch(bs, ev, BATCH, POLL_MS);
		for (int i = 0; i < n; i++)
			handle(w, &ev[i]);
		if (n > 0)
			bs_data_release(ev, (size_t)n);
		flush_all(w);
		if (n == BS_ESHUTDOWN)
			break;
		if (n == BS_ETIMEDOUT && atomic_load(&stopping))
			break;
		if (n < 0 && n != BS_ETIMEDOUT) {
			fprintf(stderr, "pubsub_server: bs_recv_data_batch: %s\n", bs_strerror(n));
			break;
		}
	}
	return NULL;
}

/* A close event is the last of its id: its subscriptions end here. */
static void *close_thread(void *arg)
{
	bs_close_event_t cev;

	(void)arg;
	for (;;) {
		int rc = bs_recv_close(bs, &cev, POLL_MS);
		if (rc == 0) {
			unsubscribe(cev.id, NULL, 0);
			atomic_fetch_add(&n_closed, 1);
		} else if (rc == BS_ESHUTDOWN || (rc == BS_ETIMEDOUT && atomic_load(&stopping))) {
			break;
		} else if (rc != BS_ETIMEDOUT) {
			fprintf(stderr, "pubsub_server: bs_recv_close: %s\n", bs_strerror(rc));
			break;
		}
	}
	return NULL;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -1;
	*out = v;
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: pubsub_server [ADDR] [--threads N] [--slow drop|disconnect] [--queue BYTES]\n"
		"  ADDR     host:port or unix:/path (default " DEFAULT_ADDR ")\n"
		"  --threads  threads that drain messages (default 2)\n"
		"  --slow     what a full subscriber queue means (default disconnect)\n"
		"  --queue    bytes queued per connection at most (default 4194304)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = DEFAULT_ADDR;
	unsigned long long nthreads = 2, queue = 4u << 20;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
			if (parse_uint(argv[++i], MAX_THREADS, &nthreads) || nthreads == 0)
				usage();
		} else if (!strcmp(argv[i], "--queue") && i + 1 < argc) {
			if (parse_uint(argv[++i], SIZE_MAX, &queue) || queue == 0)
				usage();
		} else if (!strcmp(argv[i], "--slow") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "drop"))
				slow = SLOW_DROP;
			else if (!strcmp(argv[i], "disconnect"))
				slow = SLOW_DISCONNECT;
			else
				usage();
		} else if (argv[i][0] == '-' || i != 1) {
			usage();
		} else {
			addr = argv[i];
		}
	}

	/* Block the stop signals before any thread starts, the library's
	 * included, so that only sigwait below receives them. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	tables_init();

	bs_config_t cfg;
	bs_config_init(&cfg);
	cfg.send_queue_bytes = (size_t)queue;
	cfg.open_events = false; /* nothing to do when a connection opens */

	int rc = bs_create(&cfg, &bs);
	if (rc) {
		fprintf(stderr, "pubsub_server: bs_create: %s\n", bs_strerror(rc));
		return 1;
	}
	uint32_t listener;
	char bound[BS_ADDR_STRLEN];
	rc = bs_listen(bs, addr, NULL, &listener);
	if (rc == 0)
		rc = bs_listener_addr(bs, listener, bound, sizeof bound);
	if (rc) {
		fprintf(stderr, "pubsub_server: listen on %s: %s\n", addr, bs_strerror(rc));
		bs_destroy(bs);
		return 1;
	}

	struct worker *workers = calloc(nthreads, sizeof *workers);
	pthread_t closer;
	size_t started = 0;
	bool closer_started = workers && pthread_create(&closer, NULL, close_thread, NULL) == 0;
	bool ok = closer_started;
	while (ok && started < nthreads) {
		ok = pthread_create(&workers[started].thread, NULL, data_thread,
				    &workers[started]) == 0;
		started += ok;
	}
	if (ok) {
		printf("pubsub_server: listening on %s with %llu threads, slow subscribers: %s, "
		       "queue %llu bytes\n", bound, nthreads,
		       slow == SLOW_DROP ? "drop" : "disconnect", queue);
		fflush(stdout);
		int sig;
		sigwait(&sigs, &sig);
	} else {
		fprintf(stderr, "pubsub_server: cannot start threads\n");
	}

	/* Stop accepting, flush and close every connection; the threads see
	 * BS_ESHUTDOWN once their queues are drained and are joined before
	 * bs_destroy, since no bs_* call may start once it has begun. */
	atomic_store(&stopping, true);
	bs_shutdown(bs);
	if (closer_started)
		pthread_join(closer, NULL);
	for (size_t i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);
	bs_stats_t st;
	bs_stats(bs, &st);
	bs_destroy(bs);
	tables_free();
	free(workers);

	printf("pubsub_server: published %" PRIuFAST64 ", delivered %" PRIuFAST64
	       ", dropped %" PRIuFAST64 ", slow disconnects %" PRIuFAST64
	       " (stale %" PRIuFAST64 ", errors %" PRIuFAST64 ", connections closed %"
	       PRIuFAST64 ", socket writes %" PRIu64 ")\n",
	       atomic_load(&n_published), atomic_load(&n_delivered), atomic_load(&n_dropped),
	       atomic_load(&n_slow), atomic_load(&n_stale), atomic_load(&n_errors),
	       atomic_load(&n_closed), st.send_writes);
	return ok ? 0 : 1;
}
