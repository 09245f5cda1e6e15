/*
 * nats_bridge — topics and direct messages between pub/sub nodes over NATS
 * (nats.c's public API only). nats_bridge.h says which threads call what
 * and how losses are counted; nats_envelope.h what goes on the wire.
 *
 * Inside: two tables keyed by topic. The interest table (under mu) holds
 * the topics with local subscribers and their NATS subscriptions; each
 * entry is also its subscription's closure and keeps, for the delivery
 * thread alone, the last sequence seen from every origin. The publish
 * table (under pub_mu) holds the next sequence of every topic this node
 * published on. A sequence number and the envelope's place in nats.c's
 * write buffer are taken under the same lock, so the wire carries each
 * stream in sequence order.
 */
#include "nats_bridge.h"
#include "nats_envelope.h"
#include "topic_table.h"

#include <nats/nats.h>

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

_Static_assert(BRIDGE_TOPIC_MAX == ENV_TOPIC_MAX, "one topic length limit");

#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000
#define WRITE_DEADLINE_MS 1000 /* the longest a publisher writes to a stuck socket */
#define PING_MS 5000           /* a silent link is found dead in about 15 s */
#define PINGS_OUT 3
#define CLOSE_FLUSH_MS 1000
#define CLOSE_WAIT_MS 5000
#define LOG_EVERY_MS 1000      /* gaps and async errors: at most a line a second each */

/* ------------------------------------------------------------------------
 * State
 */

/* A topic with local interest. */
struct topic {
	topic_key_t key;
	uint32_t interest;       /* local subscribers; under mu */
	natsSubscription *sub;   /* under mu; NULL until subscribing worked */
	atomic_int owners;       /* the table while listed, the subscription until complete */
	bridge_t *bridge;
	env_streams_t seen;      /* the delivery thread's */
	char subject[];          /* NUL-terminated, then the topic's bytes */
};

/* A topic this node published on. */
struct pubtopic {
	topic_key_t key;
	uint64_t seq;            /* the last one sent */
	char subject[];
};

struct dseq {
	uint16_t node;
	uint64_t seq;
};

struct bridge {
	uint16_t node;
	uint64_t epoch;
	uint64_t jitter_state;   /* the reconnect thread's */
	bridge_callbacks_t cb;
	natsConnection *nc;

	pthread_mutex_t mu;
	topic_table_t topics;

	pthread_mutex_t pub_mu;
	topic_table_t pubtopics;
	struct dseq *dseq;
	size_t ndseq, capdseq;
	uint8_t *buf;            /* the envelope being sent */
	size_t bufcap;

	natsSubscription *direct_sub;
	env_streams_t direct_seen; /* the delivery thread's */
	char direct_subject[sizeof(ENV_SUBJ_NODE) + 5];

	/* Closing waits for this: every subscription complete, and the
	 * connection's closed callback, the last one nats.c makes. */
	pthread_mutex_t life_mu;
	pthread_cond_t life_cv;
	int live_subs;
	bool closed;
	atomic_bool closing;

	atomic_uint_fast64_t published, publish_failed, received, gaps_lost,
		dropped, disconnects, reconnects, ntopics;
	atomic_uint_fast64_t failed_in_outage; /* publish_failed since the link went down */
	atomic_uint_fast64_t gap_log_ms, gaps_unlogged, err_log_ms;
	atomic_bool node_clash_warned;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void blog(bridge_t *b, enum bridge_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void blog(bridge_t *b, enum bridge_log_level lvl, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!b->cb.on_log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	b->cb.on_log(b->cb.ctx, lvl, line);
}

/* True at most once per LOG_EVERY_MS for one *last stamp. */
static bool log_due(atomic_uint_fast64_t *last)
{
	uint64_t now = now_ms(), prev = atomic_load(last);

	return (prev == 0 || now - prev >= LOG_EVERY_MS) &&
	       atomic_compare_exchange_strong(last, &prev, now);
}

static int map_status(natsStatus s)
{
	switch (s) {
	case NATS_OK:
		return 0;
	case NATS_MAX_PAYLOAD:
		return BS_EMSGSIZE;
	case NATS_NO_MEMORY:
		return BS_ENOMEM;
	case NATS_TIMEOUT:
		return BS_ETIMEDOUT;
	case NATS_CONNECTION_CLOSED:
	case NATS_CONNECTION_DISCONNECTED:
	case NATS_NOT_YET_CONNECTED:
	case NATS_INSUFFICIENT_BUFFER:
	case NATS_IO_ERROR:
		return BS_EAGAIN;
	default:
		return BS_ESYS;
	}
}

/* ------------------------------------------------------------------------
 * Receiving
 */
static void log_gap(bridge_t *b, const env_t *e, const char *subject,
		    uint64_t first)
{
	if (!log_due(&b->gap_log_ms)) {
		atomic_fetch_add(&b->gaps_unlogged, 1);
		return;
	}
	uint64_t more = atomic_exchange(&b->gaps_unlogged, 0);
	char also[64] = "";
	if (more)
		snprintf(also, sizeof(also), " and %" PRIu64 " more gap(s) before", more);
	blog(b, BRIDGE_LOG_WARN,
	     "nats: lost %" PRIu64 " message(s) from node %u on %.80s (sequence %" PRIu64
	     "..%" PRIu64 ")%s; %" PRIu64 " lost in all",
	     e->seq - first, e->node, subject, first, e->seq - 1, also,
	     (uint64_t)atomic_load(&b->gaps_lost));
}

/* Whether an envelope of a stream is passed on; counts what it shows lost. */
static bool stream_accept(bridge_t *b, env_streams_t *s, const env_t *e,
			  const char *subject)
{
	uint64_t lost;

	if (e->node == b->node) {
		/* NATS no-echo keeps our own messages away, so this is another
		 * process configured with our node number. */
		atomic_fetch_add(&b->dropped, 1);
		if (e->epoch != b->epoch && !atomic_exchange(&b->node_clash_warned, true))
			blog(b, BRIDGE_LOG_WARN,
			     "nats: another process publishes as node %u; its messages "
			     "are dropped (every node needs its own number)", b->node);
		return false;
	}
	switch (env_stream_check(s, e, &lost)) {
	case ENV_REPEAT:
		atomic_fetch_add(&b->dropped, 1);
		return false;
	case ENV_GAP:
		atomic_fetch_add(&b->gaps_lost, lost);
		log_gap(b, e, subject, e->seq - lost);
		return true;
	default:
		return true;
	}
}

/* The message's envelope, or false (counted dropped). */
static bool msg_decode(bridge_t *b, const natsMsg *msg, uint8_t kind, env_t *e)
{
	int n = natsMsg_GetDataLength(msg);

	if (n >= 0 && env_decode((const uint8_t *)natsMsg_GetData(msg), (size_t)n, kind, e))
		return true;
	atomic_fetch_add(&b->dropped, 1);
	return false;
}

static void on_topic_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
			 void *closure)
{
	struct topic *t = closure;
	bridge_t *b = t->bridge;
	env_t e;

	if (!atomic_load(&b->closing) && msg_decode(b, msg, ENV_TOPIC, &e) &&
	    stream_accept(b, &t->seen, &e, t->subject)) {
		atomic_fetch_add(&b->received, 1);
		if (b->cb.on_topic_message)
			b->cb.on_topic_message(b->cb.ctx, t->key.bytes, t->key.len, e.node,
					       e.seq, e.id1, e.payload, e.len);
	}
	natsMsg_Destroy(msg);
}

static void on_direct_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
			  void *closure)
{
	bridge_t *b = closure;
	env_t e;

	if (!atomic_load(&b->closing) && msg_decode(b, msg, ENV_DIRECT, &e) &&
	    stream_accept(b, &b->direct_seen, &e, b->direct_subject)) {
		atomic_fetch_add(&b->received, 1);
		if (b->cb.on_direct)
			b->cb.on_direct(b->cb.ctx, e.id1, e.id2, e.payload, e.len);
	}
	natsMsg_Destroy(msg);
}

/* ------------------------------------------------------------------------
 * Subscriptions and their lifetime
 */
static void life_add(bridge_t *b, int d)
{
	pthread_mutex_lock(&b->life_mu);
	b->live_subs += d;
	pthread_cond_broadcast(&b->life_cv);
	pthread_mutex_unlock(&b->life_mu);
}

static void topic_put(struct topic *t)
{
	if (atomic_fetch_sub(&t->owners, 1) == 1) {
		env_streams_free(&t->seen);
		free(t);
	}
}

/* nats.c: the subscription is closed and its handler has returned for
 * the last time. */
static void on_topic_done(void *closure)
{
	struct topic *t = closure;
	bridge_t *b = t->bridge;

	topic_put(t);
	life_add(b, -1);
}

static void on_direct_done(void *closure)
{
	life_add(closure, -1);
}

/*
 * Subscribes t (mu held). While the link is down nats.c only records the
 * subscription and sends it on reconnect, with all the others it holds;
 * so this fails only for want of memory (or once closing): the interest
 * stays and the next ref or (re)connect tries again.
 */
static int topic_subscribe(bridge_t *b, struct topic *t)
{
	natsSubscription *sub = NULL;
	natsStatus s = natsConnection_Subscribe(&sub, b->nc, t->subject, on_topic_msg, t);

	if (s != NATS_OK) {
		blog(b, BRIDGE_LOG_WARN, "nats: cannot subscribe to %.80s now (%s); will retry",
		     t->subject, natsStatus_GetText(s));
		return map_status(s);
	}
	atomic_fetch_add(&t->owners, 1);
	life_add(b, 1);
	if (natsSubscription_SetOnCompleteCB(sub, on_topic_done, t) != NATS_OK) {
		/* Closed already, which only closing the connection does: a
		 * handler may still run, so t keeps the subscription's share
		 * for good. */
		life_add(b, -1);
		natsSubscription_Destroy(sub);
		return BS_EAGAIN;
	}
	t->sub = sub;
	return 0;
}

/*
 * An entry of size bytes whose tail, from subject on, holds topic p[0..n)'s
 * subject and then its bytes, to which key points.
 */
static void *entry_new(size_t size, size_t subject_at, const uint8_t *p, size_t n,
		       uint32_t h)
{
	char subject[ENV_SUBJ_MAX];
	size_t slen = env_topic_subject(subject, p, n) + 1;
	uint8_t *e = calloc(1, size + slen + n);

	if (!e)
		return NULL;
	memcpy(e + subject_at, subject, slen);
	memcpy(e + subject_at + slen, p, n);
	*(topic_key_t *)e = (topic_key_t){ NULL, h, (uint8_t)n, e + subject_at + slen };
	return e;
}

static struct topic *topic_new(bridge_t *b, const uint8_t *p, size_t n, uint32_t h)
{
	struct topic *t = entry_new(sizeof(*t), offsetof(struct topic, subject), p, n, h);

	if (t) {
		t->bridge = b;
		atomic_init(&t->owners, 1);
	}
	return t;
}

int bridge_topic_ref(bridge_t *b, const void *topic, size_t topic_len)
{
	if (!b || !topic || topic_len == 0 || topic_len > BRIDGE_TOPIC_MAX)
		return BS_EINVAL;
	uint32_t h = topic_hash(topic, topic_len);

	pthread_mutex_lock(&b->mu);
	struct topic *t = (struct topic *)topic_table_find(&b->topics, topic, topic_len, h);
	if (!t) {
		t = topic_new(b, topic, topic_len, h);
		if (!t) {
			pthread_mutex_unlock(&b->mu);
			return BS_ENOMEM;
		}
		topic_table_insert(&b->topics, &t->key);
		atomic_fetch_add(&b->ntopics, 1);
	}
	t->interest++;
	if (!t->sub)
		(void)topic_subscribe(b, t);
	pthread_mutex_unlock(&b->mu);
	return 0;
}

int bridge_topic_unref(bridge_t *b, const void *topic, size_t topic_len)
{
	if (!b || !topic || topic_len == 0 || topic_len > BRIDGE_TOPIC_MAX)
		return BS_EINVAL;
	uint32_t h = topic_hash(topic, topic_len);

	pthread_mutex_lock(&b->mu);
	struct topic *t = (struct topic *)topic_table_find(&b->topics, topic, topic_len, h);
	if (!t) {
		pthread_mutex_unlock(&b->mu);
		return BS_EINVAL;
	}
	if (--t->interest > 0) {
		pthread_mutex_unlock(&b->mu);
		return 0;
	}
	topic_table_remove(&b->topics, &t->key);
	atomic_fetch_sub(&b->ntopics, 1);
	natsSubscription *sub = t->sub;
	t->sub = NULL;
	pthread_mutex_unlock(&b->mu);
	/* Outside mu: a new ref of the topic meanwhile makes a new
	 * subscription with its own sid, which this UNSUB does not touch. */
	if (sub) {
		natsSubscription_Unsubscribe(sub);
		natsSubscription_Destroy(sub);
	}
	topic_put(t);
	return 0;
}

/* ------------------------------------------------------------------------
 * Publishing
 */

/*
 * Sends one envelope with the stream's next sequence (pub_mu held). The
 * sequence is used only when nats.c took the message, so a refused one
 * leaves no gap behind: it is counted once, here.
 */
static int send_env(bridge_t *b, const char *subject, uint64_t *seq, uint8_t kind,
		    bs_id_t id1, bs_id_t id2, const void *payload, size_t len)
{
	size_t hdr = env_header_len(kind);

	if (len > (size_t)INT_MAX - hdr)
		return BS_EMSGSIZE;
	/* Down: fail now rather than fill nats.c's reconnect buffer with
	 * messages sent after the other nodes may have missed their
	 * predecessors anyway. */
	if (natsConnection_Status(b->nc) != NATS_CONN_STATUS_CONNECTED)
		return BS_EAGAIN;
	if (b->bufcap < hdr + len) {
		size_t cap = b->bufcap ? b->bufcap : 1024;
		while (cap < hdr + len)
			cap *= 2;
		uint8_t *nb = realloc(b->buf, cap);
		if (!nb)
			return BS_ENOMEM;
		b->buf = nb;
		b->bufcap = cap;
	}
	env_t e = { .kind = kind, .node = b->node, .epoch = b->epoch, .seq = *seq + 1,
		    .id1 = id1, .id2 = id2 };
	env_encode(b->buf, &e);
	if (len)
		memcpy(b->buf + hdr, payload, len);
	int rc = map_status(natsConnection_Publish(b->nc, subject, b->buf, (int)(hdr + len)));
	if (rc == 0)
		(*seq)++;
	return rc;
}

static int count_send(bridge_t *b, int rc)
{
	if (rc == 0) {
		atomic_fetch_add(&b->published, 1);
		return 0;
	}
	atomic_fetch_add(&b->publish_failed, 1);
	if (rc == BS_EAGAIN && atomic_fetch_add(&b->failed_in_outage, 1) == 0)
		blog(b, BRIDGE_LOG_WARN,
		     "nats: link down, messages to other nodes are lost and counted "
		     "(publish_failed) until it is back");
	return rc;
}

int bridge_publish(bridge_t *b, const void *topic, size_t topic_len,
		   bs_id_t publisher, const void *payload, size_t len)
{
	if (!b || !topic || topic_len == 0 || topic_len > BRIDGE_TOPIC_MAX ||
	    (!payload && len))
		return BS_EINVAL;
	uint32_t h = topic_hash(topic, topic_len);
	int rc;

	pthread_mutex_lock(&b->pub_mu);
	struct pubtopic *t = (struct pubtopic *)topic_table_find(&b->pubtopics, topic, topic_len, h);
	if (!t) {
		t = entry_new(sizeof(*t), offsetof(struct pubtopic, subject), topic,
			      topic_len, h);
		if (!t) {
			pthread_mutex_unlock(&b->pub_mu);
			return count_send(b, BS_ENOMEM);
		}
		topic_table_insert(&b->pubtopics, &t->key);
	}
	rc = send_env(b, t->subject, &t->seq, ENV_TOPIC, publisher, 0, payload, len);
	pthread_mutex_unlock(&b->pub_mu);
	return count_send(b, rc);
}

int bridge_direct(bridge_t *b, uint16_t target_node, bs_id_t target_id,
		  bs_id_t sender_id, const void *payload, size_t len)
{
	if (!b || target_node == b->node || (!payload && len))
		return BS_EINVAL;
	char subject[sizeof(ENV_SUBJ_NODE) + 5];
	struct dseq *d = NULL;
	int rc;

	snprintf(subject, sizeof(subject), ENV_SUBJ_NODE "%u", target_node);
	pthread_mutex_lock(&b->pub_mu);
	for (size_t i = 0; i < b->ndseq && !d; i++)
		if (b->dseq[i].node == target_node)
			d = &b->dseq[i];
	if (!d) {
		if (b->ndseq == b->capdseq) {
			size_t cap = b->capdseq ? b->capdseq * 2 : 8;
			struct dseq *v = realloc(b->dseq, cap * sizeof(*v));
			if (!v) {
				pthread_mutex_unlock(&b->pub_mu);
				return count_send(b, BS_ENOMEM);
			}
			b->dseq = v;
			b->capdseq = cap;
		}
		d = &b->dseq[b->ndseq++];
		*d = (struct dseq){ target_node, 0 };
	}
	rc = send_env(b, subject, &d->seq, ENV_DIRECT, target_id, sender_id, payload, len);
	pthread_mutex_unlock(&b->pub_mu);
	return count_send(b, rc);
}

int bridge_flush(bridge_t *b, int timeout_ms)
{
	if (!b || timeout_ms <= 0)
		return BS_EINVAL;
	if (natsConnection_Status(b->nc) != NATS_CONN_STATUS_CONNECTED)
		return BS_EAGAIN;
	return map_status(natsConnection_FlushTimeout(b->nc, timeout_ms));
}

void bridge_stats(bridge_t *b, bridge_stats_t *out)
{
	*out = (bridge_stats_t){
		.published = atomic_load(&b->published),
		.publish_failed = atomic_load(&b->publish_failed),
		.received = atomic_load(&b->received),
		.gaps_lost = atomic_load(&b->gaps_lost),
		.dropped = atomic_load(&b->dropped),
		.disconnects = atomic_load(&b->disconnects),
		.reconnects = atomic_load(&b->reconnects),
		.topics = atomic_load(&b->ntopics),
		.connected = natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED,
	};
}

/* ------------------------------------------------------------------------
 * The link (nats.c's callback thread)
 */

/* Connected, first or again. nats.c has resent every subscription it
 * holds; those it could not take are made now. */
static void link_up(bridge_t *b, bool again)
{
	size_t held = 0, made = 0, failed = 0;
	char url[256] = "";

	if (atomic_load(&b->closing))
		return;
	if (again)
		atomic_fetch_add(&b->reconnects, 1);
	pthread_mutex_lock(&b->mu);
	TOPIC_TABLE_FOREACH(&b->topics, k) {
		struct topic *t = (struct topic *)k;
		if (t->sub)
			held++;
		else if (topic_subscribe(b, t) == 0)
			made++;
		else
			failed++;
	}
	pthread_mutex_unlock(&b->mu);
	natsConnection_GetConnectedUrl(b->nc, url, sizeof(url));
	uint64_t lost = atomic_exchange(&b->failed_in_outage, 0);
	if (!again && lost == 0 && held + made + failed == 0) {
		blog(b, BRIDGE_LOG_INFO, "nats: connected to %s as node %u", url, b->node);
		return;
	}
	blog(b, BRIDGE_LOG_INFO,
	     "nats: %s %s as node %u: %zu topic(s) resubscribed, %zu subscribed afresh, "
	     "%zu still failing; %" PRIu64 " message(s) not published while down",
	     again ? "reconnected to" : "connected to", url, b->node, held, made, failed,
	     lost);
}

static void on_connected(natsConnection *nc, void *closure)
{
	link_up(closure, false);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	link_up(closure, true);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
	bridge_t *b = closure;

	if (atomic_load(&b->closing))
		return;
	atomic_fetch_add(&b->disconnects, 1);
	blog(b, BRIDGE_LOG_WARN, "nats: link lost; reconnecting");
}

static void on_closed(natsConnection *nc, void *closure)
{
	bridge_t *b = closure;

	pthread_mutex_lock(&b->life_mu);
	b->closed = true;
	pthread_cond_broadcast(&b->life_cv);
	pthread_mutex_unlock(&b->life_mu);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
		     void *closure)
{
	bridge_t *b = closure;

	/* A slow consumer's dropped messages show up as gaps as well. */
	if (log_due(&b->err_log_ms))
		blog(b, BRIDGE_LOG_WARN, "nats: %s%s%.80s", natsStatus_GetText(err),
		     sub ? " on " : "", sub ? natsSubscription_GetSubject(sub) : "");
}

/* Exponential backoff with up to 25 % jitter, so that many nodes coming
 * back after one server restart do not reconnect in step. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
	bridge_t *b = closure;
	int shift = attempts > 1 ? (attempts - 1 < 5 ? attempts - 1 : 5) : 0;
	int64_t d = (int64_t)RECONNECT_MIN_MS << shift;

	if (d > RECONNECT_MAX_MS)
		d = RECONNECT_MAX_MS;
	b->jitter_state ^= b->jitter_state << 13;
	b->jitter_state ^= b->jitter_state >> 7;
	b->jitter_state ^= b->jitter_state << 17;
	return d + (int64_t)(b->jitter_state % (uint64_t)(d / 4 + 1));
}

/* ------------------------------------------------------------------------
 * Opening and closing
 */
static uint64_t random_epoch(const void *salt)
{
	uint64_t e = 0;

	if (getrandom(&e, sizeof(e), GRND_NONBLOCK) != (ssize_t)sizeof(e)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		e = ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15u) ^ (uint64_t)ts.tv_sec ^
		    ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)salt;
	}
	return e ? e : 1;
}

static natsStatus set_options(natsOptions *o, bridge_t *b, const char *url)
{
	char name[48];
	natsStatus s;

	snprintf(name, sizeof(name), "buffstreams node %u", b->node);
	if ((s = natsOptions_SetURL(o, url)) != NATS_OK)
		return s;
	/* Each option below is checked by nats.c for its range only. */
	natsOptions_SetName(o, name);
	natsOptions_SetNoEcho(o, true);
	natsOptions_SetAllowReconnect(o, true);
	natsOptions_SetMaxReconnect(o, -1); /* for ever */
	natsOptions_SetCustomReconnectDelay(o, reconnect_delay, b);
	natsOptions_SetRetryOnFailedConnect(o, true, on_connected, b);
	natsOptions_SetDisconnectedCB(o, on_disconnected, b);
	natsOptions_SetReconnectedCB(o, on_reconnected, b);
	natsOptions_SetClosedCB(o, on_closed, b);
	natsOptions_SetErrorHandler(o, on_error, b);
	natsOptions_SetPingInterval(o, PING_MS);
	natsOptions_SetMaxPingsOut(o, PINGS_OUT);
	natsOptions_SetWriteDeadline(o, WRITE_DEADLINE_MS);
	/* One delivery thread for every subscription: messages reach the
	 * callbacks in the order the connection received them, and the
	 * thread count does not grow with the topics. */
	return natsOptions_UseGlobalMessageDelivery(o, true);
}

static void bridge_free(bridge_t *b)
{
	topic_key_t *k;

	while ((k = topic_table_pop(&b->pubtopics)))
		free(k);
	topic_table_free(&b->pubtopics);
	topic_table_free(&b->topics);
	free(b->dseq);
	free(b->buf);
	env_streams_free(&b->direct_seen);
	pthread_mutex_destroy(&b->mu);
	pthread_mutex_destroy(&b->pub_mu);
	pthread_mutex_destroy(&b->life_mu);
	pthread_cond_destroy(&b->life_cv);
	free(b);
}

/* nats.c's refusal as one of our codes. */
static int open_error(natsStatus s)
{
	int rc = map_status(s);

	if (s == NATS_INVALID_ARG)
		return BS_EADDR;
	return rc == BS_ENOMEM ? BS_ENOMEM : BS_ESYS;
}

int bridge_open(const char *url, uint16_t node, const bridge_callbacks_t *cb,
		bridge_t **out)
{
	natsOptions *opts = NULL;
	natsStatus s;

	if (!url || !cb || !out)
		return BS_EINVAL;
	bridge_t *b = calloc(1, sizeof(*b));
	if (!b)
		return BS_ENOMEM;
	b->node = node;
	b->cb = *cb;
	b->epoch = random_epoch(b);
	b->jitter_state = b->epoch;
	pthread_mutex_init(&b->mu, NULL);
	pthread_mutex_init(&b->pub_mu, NULL);
	pthread_mutex_init(&b->life_mu, NULL);
	pthread_cond_init(&b->life_cv, NULL);
	snprintf(b->direct_subject, sizeof(b->direct_subject), ENV_SUBJ_NODE "%u", node);
	if (topic_table_init(&b->topics) || topic_table_init(&b->pubtopics)) {
		bridge_free(b);
		return BS_ENOMEM;
	}

	if ((s = nats_Open(-1)) != NATS_OK ||
	    (s = nats_SetMessageDeliveryPoolSize(1)) != NATS_OK ||
	    (s = natsOptions_Create(&opts)) != NATS_OK ||
	    (s = set_options(opts, b, url)) != NATS_OK ||
	    ((s = natsConnection_Connect(&b->nc, opts)) != NATS_OK &&
	     s != NATS_NOT_YET_CONNECTED)) {
		blog(b, BRIDGE_LOG_WARN, "nats: cannot connect to %s: %s", url,
		     natsStatus_GetText(s));
		natsOptions_Destroy(opts);
		bridge_free(b);
		return open_error(s);
	}
	natsOptions_Destroy(opts);
	if (s == NATS_NOT_YET_CONNECTED)
		blog(b, BRIDGE_LOG_WARN, "nats: %s not reachable yet; trying in the background",
		     url);

	s = natsConnection_Subscribe(&b->direct_sub, b->nc, b->direct_subject,
				     on_direct_msg, b);
	if (s == NATS_OK) {
		life_add(b, 1);
		if ((s = natsSubscription_SetOnCompleteCB(b->direct_sub, on_direct_done, b)) !=
		    NATS_OK)
			life_add(b, -1);
	}
	if (s != NATS_OK) {
		blog(b, BRIDGE_LOG_WARN, "nats: cannot subscribe to %s: %s", b->direct_subject,
		     natsStatus_GetText(s));
		bridge_close(b);
		return open_error(s);
	}
	if (natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED)
		link_up(b, false);
	*out = b;
	return 0;
}

void bridge_close(bridge_t *b)
{
	topic_key_t *k;

	if (!b)
		return;
	atomic_store(&b->closing, true);
	for (;;) {
		pthread_mutex_lock(&b->mu);
		k = topic_table_pop(&b->topics);
		struct topic *t = (struct topic *)k;
		natsSubscription *sub = t ? t->sub : NULL;
		if (t)
			t->sub = NULL;
		pthread_mutex_unlock(&b->mu);
		if (!t)
			break;
		if (sub) {
			natsSubscription_Unsubscribe(sub);
			natsSubscription_Destroy(sub);
		}
		topic_put(t);
	}
	atomic_store(&b->ntopics, 0);
	natsSubscription_Unsubscribe(b->direct_sub);
	natsSubscription_Destroy(b->direct_sub);
	if (natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED)
		natsConnection_FlushTimeout(b->nc, CLOSE_FLUSH_MS);
	natsConnection_Close(b->nc);

	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += CLOSE_WAIT_MS / 1000;
	int wrc = 0;
	pthread_mutex_lock(&b->life_mu);
	while ((b->live_subs > 0 || !b->closed) && wrc == 0)
		wrc = pthread_cond_timedwait(&b->life_cv, &b->life_mu, &until);
	bool quiet = b->live_subs == 0 && b->closed;
	pthread_mutex_unlock(&b->life_mu);
	natsConnection_Destroy(b->nc);
	/* Not quiet in time: a callback may still come, so b stays. */
	if (quiet)
		bridge_free(b);
}
