/*
 * pubsub_server — a publish/subscribe server that routes by connection id.
 *
 *   pubsub_server [ADDR] [--threads N] [--slow drop|disconnect] [--queue BYTES]
 *                 [--batch N] [--node N] [--reuseport] [--nats URL]
 *
 * ADDR defaults to 127.0.0.1:5032 ("unix:/path" works too, port 0 picks a
 * free port; the bound address is printed). N application threads (default
 * 2) drain messages, in batches of up to --batch messages (default 256).
 * --queue bounds each connection's outgoing queue (default 4 MiB); --slow
 * says what happens to a subscriber whose queue is full (default
 * disconnect). --node sets the node number carried by every connection id
 * (default 0), --reuseport lets several processes listen on one port (the
 * kernel spreads connections over them), and --nats URL joins the nodes
 * of a cluster through a NATS server (it needs --node, a number of its
 * own per process; built when libnats-dev is installed). SIGINT or
 * SIGTERM shuts down gracefully and prints one line: published,
 * delivered, dropped, slow disconnects, then, in parentheses, more counts
 * and, with --nats, what crossed the link and what it lost.
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
 *          the topic after that is delivered, on any node of the cluster.
 *          Subscribing twice to one topic is one subscription (and
 *          answered again).
 *     'U'  unsubscribe; answered with 'A' and the same topic. After the
 *          'A', nothing more of that topic arrives (deliveries queued
 *          before it come before it).
 *     'P'  publish: the body is the payload. Not answered.
 *     'I'  identify: answered with 'I' whose topic is the connection's id,
 *          16 lowercase hex digits. The topic sent is ignored.
 *     'D'  direct: the topic is a connection id in hex (1..16 digits, as
 *          'I' gives it), the body the payload. The target receives 'M'
 *          whose topic is the sender's id in hex. A target of another node
 *          is reached through NATS; that node delivers it, or counts it
 *          stale. Not answered, but by 'E' for an id that is stale or
 *          unknown here, malformed, or of a node that cannot be reached.
 *   A body after the topic of 'S', 'U' or 'I' is ignored.
 *   From the server:
 *     'M'  a delivery: the topic and the publisher's body, byte for byte
 *          (for a direct message: the sender's id and the body).
 *     'A'  the acknowledgement of 'S' or 'U'.
 *     'I'  the answer to 'I'.
 *     'E'  an error: topic length 0, body = a short reason in ASCII. Sent
 *          for an empty message, a message without a topic length byte, a
 *          topic length of 0, a topic longer than the message, an op
 *          other than S, U, P, I or D, and a 'D' that cannot be delivered.
 *          The connection stays open and is served on.
 *   A subscriber may hold many topics, and a publisher may subscribe too
 *   (it then receives its own messages). Each publisher's messages reach
 *   every subscriber in publish order and exactly once, on every node.
 *   Closing a connection ends its subscriptions.
 *
 *   Example, subscribe to "news" (hex): 00 00 00 06 53 04 6e 65 77 73
 *                            answer:     00 00 00 06 41 04 6e 65 77 73
 *
 * Slow subscribers
 *   When a connection first subscribes, its slow-consumer policy becomes
 *   --slow: a delivery that finds its queue full is dropped and counted
 *   (drop), or the subscriber is disconnected at once, its queue
 *   discarded, and counted (disconnect). The other subscribers are not
 *   held up either way. Deliveries that come from other nodes go the same
 *   way.
 *
 * Threads
 *   The library gives a connection's events to one thread at a time, in
 *   order ("holds"), so each publisher's messages are processed one after
 *   another by whichever thread holds it; this server takes no lock around
 *   receiving. A connection's state (its list of topics) lives in its user
 *   value: made by the open thread, changed only by its holder, freed by
 *   the close thread, so it has no lock. The topic table
 *   (pubsub_topics.h) is safe for any number of threads.
 *   A fan-out is one bs_send_many with BS_SEND_MORE: the frames wait in
 *   the subscribers' queues while this thread's receives keep finding
 *   work (bounded by the library), then each subscriber's frames go in
 *   one system call.
 *   With --nats, a local publish is delivered locally first, then handed
 *   to NATS by the thread that holds the publisher, so its order holds
 *   across nodes; what comes from NATS is delivered by the cluster's own
 *   thread (pubsub_cluster.h), never by the library's I/O threads.
 */
#include <buffstreams.h>

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pubsub_cluster.h"
#include "pubsub_topics.h"

#define DEFAULT_ADDR "127.0.0.1:5032"
#define POLL_MS 200         /* how often idle threads look at the stop flag */
#define MAX_THREADS 64
#define REASON_MAX 64       /* the longest 'E' body */

static bs_t *bs;
static ps_topics_t *topics;
static ps_cluster_t *cluster;   /* NULL without --nats */
static int slow_policy = BS_SLOW_DISCONNECT;
static uint16_t node;
static size_t batch_max = BS_RECV_BATCH_MAX;
static atomic_bool stopping;

/* The summary. delivered counts deliveries the library accepted;
 * discarded, what it threw away unsent when connections closed; stale,
 * deliveries to subscribers that had closed before their close event
 * removed them. */
static atomic_uint_fast64_t n_published, n_delivered, n_dropped, n_slow, n_stale, n_errors,
	n_closed, n_discarded, n_direct, n_direct_stale;

/* ------------------------------------------------------------------------
 * Connections
 */
struct conn {
	ps_subs_t subs;         /* the holder's */
	bool slow_set;          /* the holder's: --slow is in force */
	atomic_uint pending;    /* answers waiting for a NATS round trip */
	atomic_uint refs;       /* one until the close event, one per such answer */
	bs_id_t id;
	struct conn *prev, *next; /* in `all` */
};

/* Every connection's state, so that what is left at exit can be freed:
 * the close events of connections still open then never come. Touched at
 * open and close only; never searched. */
static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER;
static struct conn *all;

static void conn_put(struct conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) == 1)
		free(c);
}

/* Counts what a send's result says; true when it was taken. */
static bool count_send(int rc)
{
	switch (rc) {
	case 0:
		return true;
	case BS_EDROPPED:
		atomic_fetch_add(&n_dropped, 1);
		break;
	case BS_ESLOW:
		atomic_fetch_add(&n_slow, 1);
		break;
	case BS_ESTALE:
		atomic_fetch_add(&n_stale, 1);
		break;
	default: /* refused (a queue full under the refuse policy),
		  * shutting down, out of memory */
		atomic_fetch_add(&n_errors, 1);
		break;
	}
	return false;
}

/* ------------------------------------------------------------------------
 * Answers
 */
struct answer {
	struct conn *c;
	size_t len;
	uint8_t frame[];
};

static size_t frame_fill(uint8_t *out, uint8_t op, const uint8_t *topic, size_t tlen,
			 const void *body, size_t blen)
{
	out[0] = op;
	out[1] = (uint8_t)tlen;
	if (tlen)
		memcpy(out + 2, topic, tlen);
	if (blen)
		memcpy(out + 2 + tlen, body, blen);
	return 2 + tlen + blen;
}

/* The answer thread (pubsub_cluster.h): a round trip made it due. */
static void answer_due(void *ctx, void *arg)
{
	struct answer *a = arg;
	struct conn *c = a->c;

	(void)count_send(bs_send_data(bs, c->id, a->frame, a->len));
	atomic_fetch_sub(&c->pending, 1);
	conn_put(c);
	free(a);
}

/*
 * Answers c (id): op | topic | body. With after_round_trip, or while an
 * earlier answer of c waits for one, it goes through the cluster's answer
 * thread, so that c's answers keep their order.
 */
static void answer(struct conn *c, bs_id_t id, uint8_t op, const uint8_t *topic, size_t tlen,
		   const char *body, bool after_round_trip)
{
	size_t blen = body ? strlen(body) : 0;
	uint8_t buf[2 + PS_TOPIC_MAX + REASON_MAX];

	if (cluster && c && (after_round_trip || atomic_load(&c->pending) > 0)) {
		struct answer *a = malloc(sizeof(*a) + 2 + tlen + blen);
		if (a) {
			a->c = c;
			a->len = frame_fill(a->frame, op, topic, tlen, body, blen);
			atomic_fetch_add(&c->refs, 1);
			atomic_fetch_add(&c->pending, 1);
			if (ps_cluster_defer(cluster, a) == 0)
				return;
			atomic_fetch_sub(&c->pending, 1);
			atomic_fetch_sub(&c->refs, 1);
			free(a);
		}
	}
	(void)count_send(bs_send_data(bs, id, buf, frame_fill(buf, op, topic, tlen, body, blen)));
}

/* ------------------------------------------------------------------------
 * Delivery
 */

/* What a delivering thread keeps between calls. */
struct worker {
	pthread_t thread;
	int *results;        /* one per subscriber of the widest fan-out */
	size_t cap;
	uint8_t *scratch;    /* a direct message being framed */
	size_t scratch_cap;
};

struct fan {
	struct worker *w;
	const uint8_t *topic, *body;
	size_t tlen, blen;
};

/*
 * The fan-out of one publish (a ps_topics_fanout callback): one buffer
 * holding 'M' | topic | body, to every subscriber with one call. Each
 * subscriber's queue keeps the frame (a reference, or a copy when it is
 * small); BS_SEND_MORE leaves it there until this thread runs out of work
 * (a receive that finds nothing, or the library's bounds) or calls
 * bs_release, and then all of a subscriber's frames are written at once.
 */
static void fan_out(void *ctx, const bs_id_t *ids, size_t n)
{
	struct fan *f = ctx;
	struct worker *w = f->w;
	size_t len = 2 + f->tlen + f->blen;
	void *p;
	bs_msg_t *msg = bs_msg_alloc(len, &p);

	if (!msg) {
		atomic_fetch_add(&n_errors, n);
		return;
	}
	frame_fill(p, 'M', f->topic, f->tlen, f->body, f->blen);
	if (w->cap < n) {
		int *r = realloc(w->results, n * sizeof(*r));
		if (r) {
			w->results = r;
			w->cap = n;
		}
	}
	int *results = w->cap >= n ? w->results : NULL;
	int ok = bs_send_many(bs, ids, n, msg, p, len, BS_SEND_MORE, results);
	if (ok < 0) {
		atomic_fetch_add(&n_errors, n);
		return;
	}
	atomic_fetch_add_explicit(&n_delivered, (uint64_t)ok, memory_order_relaxed);
	if ((size_t)ok == n)
		return;
	if (!results) {
		atomic_fetch_add(&n_errors, n - (size_t)ok);
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (results[i] != 0)
			(void)count_send(results[i]);
}

static void deliver(struct worker *w, const uint8_t *topic, size_t tlen, const uint8_t *body,
		    size_t blen)
{
	struct fan f = { w, topic, body, tlen, blen };

	(void)ps_topics_fanout(topics, topic, tlen, fan_out, &f);
}

/* 'M' | sender's id in hex | body to target, a connection of this node.
 * Returns the send's result. */
static int deliver_direct(struct worker *w, bs_id_t target, bs_id_t sender, const uint8_t *body,
			  size_t blen)
{
	char hex[BS_ID_STRLEN];
	size_t len = 2 + (BS_ID_STRLEN - 1) + blen;

	if (w->scratch_cap < len) {
		uint8_t *s = realloc(w->scratch, len);
		if (!s)
			return BS_ENOMEM;
		w->scratch = s;
		w->scratch_cap = len;
	}
	bs_id_format(sender, hex);
	frame_fill(w->scratch, 'M', (const uint8_t *)hex, BS_ID_STRLEN - 1, body, blen);
	int rc = bs_send(bs, target, w->scratch, len, NULL, BS_SEND_MORE, 0);
	if (rc == 0) {
		atomic_fetch_add(&n_delivered, 1);
		atomic_fetch_add(&n_direct, 1);
	} else if (rc != BS_ESTALE) {
		(void)count_send(rc);
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * Requests
 */

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
	switch (ev->data[0]) {
	case 'P': case 'S': case 'U': case 'I': case 'D':
		return NULL;
	default:
		return "unknown op";
	}
}

static void direct(struct worker *w, struct conn *c, const bs_data_t *ev, const uint8_t *name,
		   size_t tlen)
{
	const uint8_t *body = name + tlen;
	size_t blen = ev->len - 2 - tlen;
	char hex[BS_ID_STRLEN];
	bs_id_t target;

	if (tlen >= BS_ID_STRLEN) {
		answer(c, ev->id, 'E', NULL, 0, "bad id", false);
		return;
	}
	memcpy(hex, name, tlen);
	hex[tlen] = 0;
	if (bs_id_parse(hex, &target) != 0) {
		answer(c, ev->id, 'E', NULL, 0, "bad id", false);
		return;
	}
	if (bs_id_node(target) == node) {
		if (deliver_direct(w, target, ev->id, body, blen) == BS_ESTALE)
			answer(c, ev->id, 'E', NULL, 0, "unknown id", false);
		return;
	}
	if (!cluster) {
		answer(c, ev->id, 'E', NULL, 0, "unknown id", false);
		return;
	}
	/* Counted by the bridge when it fails (not sent). */
	if (ps_cluster_direct(cluster, target, ev->id, body, blen) != 0)
		answer(c, ev->id, 'E', NULL, 0, "node unreachable", false);
}

static void handle(struct worker *w, const bs_data_t *ev)
{
	struct conn *c = ev->user;
	const uint8_t *p = ev->data, *name = p + 2;
	const char *why = malformed(ev);

	if (!c)
		return; /* its state could not be made: it is being closed */
	if (why) {
		answer(c, ev->id, 'E', NULL, 0, why, false);
		return;
	}
	size_t tlen = p[1];
	switch (p[0]) {
	case 'P':
		atomic_fetch_add_explicit(&n_published, 1, memory_order_relaxed);
		deliver(w, name, tlen, name + tlen, ev->len - 2 - tlen);
		/* Counted by the bridge when it fails (not sent). */
		if (cluster)
			(void)ps_cluster_publish(cluster, name, tlen, ev->id, name + tlen,
						 ev->len - 2 - tlen);
		return;
	case 'S': {
		uint64_t tag = 0;
		if (!c->slow_set) {
			/* Before the first delivery can find it. */
			(void)bs_conn_set_slow(bs, ev->id, slow_policy);
			c->slow_set = true;
		}
		if (ps_topics_subscribe(topics, &c->subs, ev->id, name, tlen, &tag) < 0)
			answer(c, ev->id, 'E', NULL, 0, "out of memory", false);
		else
			answer(c, ev->id, 'A', name, tlen, NULL,
			       cluster && !ps_cluster_confirmed(cluster, tag));
		return;
	}
	case 'U':
		ps_topics_unsubscribe(topics, &c->subs, ev->id, name, tlen);
		answer(c, ev->id, 'A', name, tlen, NULL, false);
		return;
	case 'I': {
		char hex[BS_ID_STRLEN];
		answer(c, ev->id, 'I', (const uint8_t *)bs_id_format(ev->id, hex),
		       BS_ID_STRLEN - 1, NULL, false);
		return;
	}
	default: /* 'D' */
		direct(w, c, ev, name, tlen);
		return;
	}
}

/* ------------------------------------------------------------------------
 * What comes from the other nodes (the cluster's delivery thread)
 */
static struct worker from_nats;

static void remote_topic(void *ctx, const uint8_t *topic, size_t tlen, const uint8_t *body,
			 size_t len)
{
	deliver(&from_nats, topic, tlen, body, len);
}

static void remote_direct(void *ctx, bs_id_t target, bs_id_t sender, const uint8_t *body,
			  size_t len)
{
	if (bs_id_node(target) != node || deliver_direct(&from_nats, target, sender, body, len) ==
						     BS_ESTALE)
		atomic_fetch_add(&n_direct_stale, 1);
}

/* The frames deferred with BS_SEND_MORE go now. */
static void remote_idle(void *ctx)
{
	bs_release(bs);
}

static void remote_log(void *ctx, bool warning, const char *line)
{
	fprintf(stderr, "pubsub_server: %s%s\n", warning ? "warning: " : "", line);
}

/* ------------------------------------------------------------------------
 * Threads
 */
static void *data_thread(void *arg)
{
	struct worker *w = arg;
	bs_data_t ev[BS_RECV_BATCH_MAX];

	pthread_setname_np(pthread_self(), "ps-data");
	for (;;) {
		/* This call also ends the holds of the last batch: the
		 * deliveries and answers it queued are written now. */
		int n = bs_recv_data_batch(bs, ev, batch_max, POLL_MS);
		for (int i = 0; i < n; i++)
			handle(w, &ev[i]);
		if (n > 0)
			bs_data_release(ev, (size_t)n);
		if (n == BS_ESHUTDOWN)
			break;
		if (n == BS_ETIMEDOUT && atomic_load(&stopping))
			break;
		if (n < 0 && n != BS_ETIMEDOUT) {
			fprintf(stderr, "pubsub_server: bs_recv_data_batch: %s\n", bs_strerror(n));
			break;
		}
	}
	bs_release(bs);
	return NULL;
}

/* A connection's state is made while its open event is held, before any
 * of its messages can be processed. */
static void *open_thread(void *arg)
{
	bs_open_event_t oev;

	pthread_setname_np(pthread_self(), "ps-open");
	for (;;) {
		int rc = bs_recv_open(bs, &oev, POLL_MS);
		if (rc == 0) {
			struct conn *c = calloc(1, sizeof(*c));
			if (!c) {
				bs_send_close(bs, oev.id);
				continue;
			}
			c->id = oev.id;
			atomic_init(&c->refs, 1);
			pthread_mutex_lock(&all_mu);
			c->next = all;
			if (all)
				all->prev = c;
			all = c;
			pthread_mutex_unlock(&all_mu);
			(void)bs_set_user(bs, oev.id, c);
		} else if (rc == BS_ESHUTDOWN || (rc == BS_ETIMEDOUT && atomic_load(&stopping))) {
			break;
		} else if (rc != BS_ETIMEDOUT) {
			fprintf(stderr, "pubsub_server: bs_recv_open: %s\n", bs_strerror(rc));
			break;
		}
	}
	return NULL;
}

/* A close event is the last of its id: its subscriptions and state end
 * here. */
static void *close_thread(void *arg)
{
	bs_close_event_t cev;

	pthread_setname_np(pthread_self(), "ps-close");
	for (;;) {
		int rc = bs_recv_close(bs, &cev, POLL_MS);
		if (rc == 0) {
			struct conn *c = cev.user;
			atomic_fetch_add(&n_closed, 1);
			atomic_fetch_add(&n_discarded, cev.unsent_msgs);
			if (!c)
				continue;
			ps_topics_unsubscribe_all(topics, &c->subs, cev.id);
			pthread_mutex_lock(&all_mu);
			if (c->prev)
				c->prev->next = c->next;
			else
				all = c->next;
			if (c->next)
				c->next->prev = c->prev;
			pthread_mutex_unlock(&all_mu);
			conn_put(c);
		} else if (rc == BS_ESHUTDOWN || (rc == BS_ETIMEDOUT && atomic_load(&stopping))) {
			break;
		} else if (rc != BS_ETIMEDOUT) {
			fprintf(stderr, "pubsub_server: bs_recv_close: %s\n", bs_strerror(rc));
			break;
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------------
 * main
 */
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
		"                     [--batch N] [--node N] [--reuseport] [--nats URL]\n"
		"  ADDR         host:port or unix:/path (default " DEFAULT_ADDR ")\n"
		"  --threads    threads that drain messages (default 2)\n"
		"  --slow       what a full subscriber queue means (default disconnect)\n"
		"  --queue      bytes queued per connection at most (default 4194304)\n"
		"  --batch      messages one thread takes at once, 1..256 (default 256)\n"
		"  --node       node number in every connection id, 0..65535 (default 0)\n"
		"  --reuseport  share the port with other processes (SO_REUSEPORT)\n"
		"  --nats       join a cluster through this NATS server (needs --node)%s\n",
		ps_cluster_built() ? "" : "\n               (not in this build: it needs libnats-dev)");
	exit(2);
}

static void print_summary(const bs_stats_t *st, const ps_cluster_stats_t *cs)
{
	printf("pubsub_server: published %" PRIuFAST64 ", delivered %" PRIuFAST64
	       ", dropped %" PRIuFAST64 ", slow disconnects %" PRIuFAST64
	       " (stale %" PRIuFAST64 ", discarded at close %" PRIuFAST64 ", errors %" PRIuFAST64
	       ", direct %" PRIuFAST64 ", connections closed %" PRIuFAST64
	       ", socket writes %" PRIu64 ")",
	       atomic_load(&n_published), atomic_load(&n_delivered), atomic_load(&n_dropped),
	       atomic_load(&n_slow), atomic_load(&n_stale), atomic_load(&n_discarded),
	       atomic_load(&n_errors), atomic_load(&n_direct), atomic_load(&n_closed),
	       st->send_writes);
	if (cs)
		printf("; nats: sent %" PRIu64 ", not sent %" PRIu64 ", received %" PRIu64
		       ", lost %" PRIu64 ", direct stale %" PRIuFAST64 ", disconnects %" PRIu64
		       ", reconnects %" PRIu64,
		       cs->published, cs->not_sent, cs->received, cs->lost,
		       atomic_load(&n_direct_stale), cs->disconnects, cs->reconnects);
	printf("\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *addr = DEFAULT_ADDR, *nats_url = NULL;
	unsigned long long nthreads = 2, queue = 4u << 20, batch = BS_RECV_BATCH_MAX, num = 0;
	bool have_node = false, reuseport = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (!strcmp(a, "--threads") && more) {
			if (parse_uint(argv[++i], MAX_THREADS, &nthreads) || nthreads == 0)
				usage();
		} else if (!strcmp(a, "--queue") && more) {
			if (parse_uint(argv[++i], SIZE_MAX, &queue) || queue == 0)
				usage();
		} else if (!strcmp(a, "--batch") && more) {
			if (parse_uint(argv[++i], BS_RECV_BATCH_MAX, &batch) || batch == 0)
				usage();
		} else if (!strcmp(a, "--node") && more) {
			if (parse_uint(argv[++i], UINT16_MAX, &num))
				usage();
			have_node = true;
		} else if (!strcmp(a, "--nats") && more) {
			nats_url = argv[++i];
		} else if (!strcmp(a, "--reuseport")) {
			reuseport = true;
		} else if (!strcmp(a, "--slow") && more) {
			i++;
			if (!strcmp(argv[i], "drop"))
				slow_policy = BS_SLOW_DROP;
			else if (!strcmp(argv[i], "disconnect"))
				slow_policy = BS_SLOW_DISCONNECT;
			else
				usage();
		} else if (a[0] == '-' || i != 1) {
			usage();
		} else {
			addr = a;
		}
	}
	if (nats_url && !have_node) {
		fprintf(stderr, "pubsub_server: --nats needs --node: every process of a cluster "
				"has a number of its own\n");
		return 2;
	}
	node = (uint16_t)num;
	batch_max = (size_t)batch;

	/* Block the stop signals before any thread starts, the library's and
	 * nats.c's included, so that only sigwait below receives them. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Every batch fills and empties the subscribers' queues: megabytes
	 * allocated and freed again at once. Handing them back to the kernel
	 * each time costs a page fault per page on the next batch; keep them. */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);

	bs_config_t cfg;
	bs_config_init(&cfg);
	cfg.send_queue_bytes = (size_t)queue;
	cfg.node = node;
	cfg.reuseport = reuseport;
	/* One hold takes as many messages of a publisher as a batch may: the
	 * more publishes a batch carries, the more deliveries each
	 * subscriber's write carries. */
	cfg.hold_batch = (uint32_t)batch;

	int rc = bs_create(&cfg, &bs);
	if (rc) {
		fprintf(stderr, "pubsub_server: bs_create: %s\n", bs_strerror(rc));
		return 1;
	}
	if (nats_url) {
		ps_cluster_ops_t ops = {
			.on_topic = remote_topic,
			.on_direct = remote_direct,
			.on_idle = remote_idle,
			.on_answer = answer_due,
			.on_log = remote_log,
		};
		rc = ps_cluster_open(nats_url, node, &ops, &cluster);
		if (rc) {
			fprintf(stderr, "pubsub_server: --nats %s: %s\n", nats_url,
				rc == BS_EDISABLED ? "built without NATS (install libnats-dev)"
						   : bs_strerror(rc));
			bs_destroy(bs);
			return rc == BS_EDISABLED ? 2 : 1;
		}
	}
	if (ps_topics_create(cluster ? ps_cluster_interest : NULL, cluster, &topics) != 0) {
		fprintf(stderr, "pubsub_server: out of memory\n");
		ps_cluster_close(cluster);
		bs_destroy(bs);
		return 1;
	}
	uint32_t listener;
	char bound[BS_ADDR_STRLEN];
	rc = bs_listen(bs, addr, NULL, &listener);
	if (rc == 0)
		rc = bs_listener_addr(bs, listener, bound, sizeof bound);
	if (rc) {
		fprintf(stderr, "pubsub_server: listen on %s: %s\n", addr,
			rc == BS_ESYS ? strerror(errno) : bs_strerror(rc));
		ps_cluster_close(cluster);
		bs_destroy(bs);
		ps_topics_destroy(topics);
		return 1;
	}

	struct worker *workers = calloc(nthreads, sizeof *workers);
	pthread_t opener, closer;
	size_t started = 0;
	bool opener_started = workers && pthread_create(&opener, NULL, open_thread, NULL) == 0;
	bool closer_started = opener_started &&
			      pthread_create(&closer, NULL, close_thread, NULL) == 0;
	bool ok = closer_started;
	while (ok && started < nthreads) {
		ok = pthread_create(&workers[started].thread, NULL, data_thread,
				    &workers[started]) == 0;
		started += ok;
	}
	if (ok) {
		printf("pubsub_server: listening on %s with %llu threads, slow subscribers: %s, "
		       "queue %llu bytes, node %u%s%s\n", bound, nthreads,
		       slow_policy == BS_SLOW_DROP ? "drop" : "disconnect", queue, node,
		       nats_url ? ", nats " : "", nats_url ? nats_url : "");
		fflush(stdout);
		int sig;
		sigwait(&sigs, &sig);
	} else {
		fprintf(stderr, "pubsub_server: cannot start threads\n");
	}

	/* Stop accepting, flush and close every connection; the threads see
	 * BS_ESHUTDOWN once their queues are drained (or time out) and are
	 * joined before the cluster closes and bs_destroy runs, since neither
	 * may overlap the calls they make. */
	atomic_store(&stopping, true);
	bs_shutdown(bs);
	for (size_t i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);
	if (opener_started)
		pthread_join(opener, NULL);
	if (closer_started)
		pthread_join(closer, NULL);
	ps_cluster_stats_t cs;
	bool clustered = cluster != NULL;
	if (clustered)
		ps_cluster_stats(cluster, &cs);
	ps_cluster_close(cluster);
	cluster = NULL;
	bs_stats_t st;
	bs_stats(bs, &st);
	bs_destroy(bs);

	/* Connections still open at the end had no close event. */
	for (struct conn *c = all, *next; c; c = next) {
		next = c->next;
		free(c->subs.v);
		free(c);
	}
	ps_topics_destroy(topics);
	for (size_t i = 0; i < started; i++) {
		free(workers[i].results);
		free(workers[i].scratch);
	}
	free(workers);
	free(from_nats.results);
	free(from_nats.scratch);

	print_summary(&st, clustered ? &cs : NULL);
	return ok ? 0 : 1;
}
