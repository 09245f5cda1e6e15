/*
 * The NATS bridge (examples/nats_bridge.c) against a real nats-server on a
 * free loopback port, which each test starts and always stops: topic
 * interest counted into NATS subscriptions (checked in the server's own
 * /subsz listing), a publish reaching the other node exactly once and never
 * its own, order over many messages, direct messages, any topic bytes,
 * malformed and out-of-sequence envelopes, a bridge opened before its
 * server, and the server killed and restarted mid-stream with every loss
 * counted exactly.
 */
#include "util.h"

#include "nats_bridge.h"
#include "natsd.h"

#include <nats/nats.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 10000
#define QUIET_MS 300 /* how long nothing more must arrive */

/* ------------------------------------------------------------------------
 * nats-server, one per test (tests/natsd.h)
 */
static struct natsd g_natsd = { .pid = -1 };

static void natsd_stop_at_exit(void)
{
	natsd_stop(&g_natsd);
}

static int setup(void **state)
{
	g_natsd = (struct natsd){ .pid = -1 };
	atexit(natsd_stop_at_exit);
	if (natsd_start(&g_natsd) != 0)
		return -1;
	*state = &g_natsd;
	return 0;
}

static int teardown(void **state)
{
	natsd_stop(&g_natsd);
	return 0;
}

/*
 * The bs.* subjects the server holds subscriptions on, sorted, one per
 * line, from its monitoring endpoint. 0 or -1.
 */
static int natsd_subjects(const struct natsd *d, char *out, size_t cap)
{
	char addr[64], req[128];
	static char resp[1 << 20];
	size_t n = 0;

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", d->mport);
	int fd = tu_connect(addr);
	if (fd < 0)
		return -1;
	snprintf(req, sizeof(req),
		 "GET /subsz?subs=1&limit=100000 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
	if (tu_write_all(fd, req, strlen(req)) != 0) {
		close(fd);
		return -1;
	}
	for (;;) {
		if (!tu_readable(fd, 5000) || n + 1 >= sizeof(resp))
			break;
		ssize_t r = read(fd, resp + n, sizeof(resp) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	resp[n] = '\0';

	const char *subj[1024];
	size_t lens[1024], count = 0;
	for (const char *p = resp; (p = strstr(p, "\"subject\"")) && count < 1024;) {
		p = strchr(p + 9, '"');
		if (!p)
			break;
		const char *end = strchr(++p, '"');
		if (!end)
			break;
		if (strncmp(p, "bs.", 3) == 0) {
			subj[count] = p;
			lens[count++] = (size_t)(end - p);
		}
		p = end + 1;
	}
	for (size_t i = 1; i < count; i++) /* insertion sort: few */
		for (size_t j = i; j > 0; j--) {
			size_t m = lens[j] < lens[j - 1] ? lens[j] : lens[j - 1];
			int c = memcmp(subj[j - 1], subj[j], m);
			if (c < 0 || (c == 0 && lens[j - 1] <= lens[j]))
				break;
			const char *ts = subj[j];
			size_t tl = lens[j];
			subj[j] = subj[j - 1];
			lens[j] = lens[j - 1];
			subj[j - 1] = ts;
			lens[j - 1] = tl;
		}
	size_t used = 0;
	out[0] = '\0';
	for (size_t i = 0; i < count; i++)
		used += (size_t)snprintf(out + used, used < cap ? cap - used : 0, "%.*s\n",
					 (int)lens[i], subj[i]);
	return used < cap ? 0 : -1;
}

static void topic_subject(char *out, const void *topic, size_t len)
{
	const uint8_t *p = topic;

	out += sprintf(out, "bs.t.");
	for (size_t i = 0; i < len; i++)
		out += sprintf(out, "%02x", p[i]);
}

/* Waits (bounded) until the server's bs.* subscriptions are exactly want
 * (sorted, one per line), then asserts it. */
static void expect_subjects(const char *want)
{
	static char got[1 << 16];

	(void)TU_WAIT_FOR(natsd_subjects(&g_natsd, got, sizeof(got)) == 0 &&
				  strcmp(got, want) == 0,
			  3000);
	if (strcmp(got, want) != 0)
		fail_msg("server subscriptions:\n%s-- expected:\n%s", got, want);
}

/* ------------------------------------------------------------------------
 * A node's receiving side, as the server would see it
 */
struct rec {
	uint8_t topic[BRIDGE_TOPIC_MAX];
	size_t topic_len;
	uint16_t origin;
	uint64_t seq;
	bs_id_t publisher, target;
	bool direct;
	uint32_t s, q; /* the payload's pattern */
	size_t len;
};

struct node {
	bridge_t *br;
	uint16_t num;
	pthread_mutex_t mu;
	struct rec *recs;
	size_t n, cap;
	atomic_uint warns, lines;
	char last_warn[512];
};

static void record(struct node *nd, const struct rec *r)
{
	pthread_mutex_lock(&nd->mu);
	if (nd->n == nd->cap) {
		size_t cap = nd->cap ? nd->cap * 2 : 1024;
		struct rec *v = realloc(nd->recs, cap * sizeof(*v));
		TU_CHECK(v != NULL, "out of memory");
		if (!v) {
			pthread_mutex_unlock(&nd->mu);
			return;
		}
		nd->recs = v;
		nd->cap = cap;
	}
	nd->recs[nd->n++] = *r;
	pthread_mutex_unlock(&nd->mu);
}

static void on_topic(void *ctx, const uint8_t *topic, size_t topic_len,
		     uint16_t origin_node, uint64_t origin_seq, bs_id_t publisher,
		     const void *payload, size_t len)
{
	struct node *nd = ctx;
	struct rec r = { .topic_len = topic_len, .origin = origin_node,
			 .seq = origin_seq, .publisher = publisher, .len = len };

	TU_CHECK(topic_len >= 1 && topic_len <= BRIDGE_TOPIC_MAX, "topic length %zu",
		 topic_len);
	memcpy(r.topic, topic, topic_len < sizeof(r.topic) ? topic_len : sizeof(r.topic));
	TU_CHECK(tu_pattern_check(payload, len, &r.s, &r.q) == 0,
		 "node %u: corrupt payload of %zu bytes", nd->num, len);
	record(nd, &r);
}

static void on_direct(void *ctx, bs_id_t target, bs_id_t sender, const void *payload,
		      size_t len)
{
	struct node *nd = ctx;
	struct rec r = { .direct = true, .origin = bs_id_node(sender), .publisher = sender,
			 .target = target, .len = len };

	TU_CHECK(tu_pattern_check(payload, len, &r.s, &r.q) == 0,
		 "node %u: corrupt direct payload of %zu bytes", nd->num, len);
	record(nd, &r);
}

static void on_log(void *ctx, enum bridge_log_level level, const char *line)
{
	struct node *nd = ctx;

	atomic_fetch_add(&nd->lines, 1);
	if (level == BRIDGE_LOG_WARN) {
		pthread_mutex_lock(&nd->mu);
		snprintf(nd->last_warn, sizeof(nd->last_warn), "%s", line);
		pthread_mutex_unlock(&nd->mu);
		atomic_fetch_add(&nd->warns, 1);
	}
	printf("    [node %u] %s\n", nd->num, line);
}

static void node_open_url(struct node *nd, uint16_t num, const char *url)
{
	bridge_callbacks_t cb = { .ctx = nd, .on_topic_message = on_topic,
				  .on_direct = on_direct, .on_log = on_log };

	memset(nd, 0, sizeof(*nd));
	nd->num = num;
	pthread_mutex_init(&nd->mu, NULL);
	assert_int_equal(bridge_open(url, num, &cb, &nd->br), 0);
}

static void node_open(struct node *nd, uint16_t num)
{
	node_open_url(nd, num, g_natsd.url);
	assert_int_equal(bridge_flush(nd->br, WAIT_MS), 0);
}

static void node_close(struct node *nd)
{
	bridge_close(nd->br);
	nd->br = NULL;
	free(nd->recs);
	pthread_mutex_destroy(&nd->mu);
}

static size_t node_count(struct node *nd)
{
	pthread_mutex_lock(&nd->mu);
	size_t n = nd->n;
	pthread_mutex_unlock(&nd->mu);
	return n;
}

static bridge_stats_t stats(struct node *nd)
{
	bridge_stats_t st;

	bridge_stats(nd->br, &st);
	return st;
}

/* Waits until nd has n records, then a moment more to see that no more
 * come; asserts exactly n. */
static void expect_count(struct node *nd, size_t n)
{
	(void)TU_WAIT_FOR(node_count(nd) >= n, WAIT_MS);
	tu_sleep_ms(QUIET_MS);
	if (node_count(nd) != n)
		fail_msg("node %u received %zu messages, expected %zu", nd->num,
			 node_count(nd), n);
}

static bs_id_t make_id(uint16_t node, uint32_t slot)
{
	return (uint64_t)node << 48 | (uint64_t)1 << 24 | slot;
}

/* Publishes message q of pattern stream s on topic. */
static int publish(struct node *nd, const char *topic, uint32_t s, uint32_t q)
{
	uint8_t p[256];
	size_t len = tu_pattern_len(s, q, TU_PATTERN_MIN, sizeof(p));

	tu_pattern_fill(p, len, s, q);
	return bridge_publish(nd->br, topic, strlen(topic), make_id(nd->num, s), p, len);
}

static int direct(struct node *nd, uint16_t to, uint32_t s, uint32_t q)
{
	uint8_t p[256];
	size_t len = tu_pattern_len(s, q, TU_PATTERN_MIN, sizeof(p));

	tu_pattern_fill(p, len, s, q);
	return bridge_direct(nd->br, to, make_id(to, q), make_id(nd->num, s), p, len);
}

static bool rec_topic_is(const struct rec *r, const char *topic)
{
	return !r->direct && r->topic_len == strlen(topic) &&
	       memcmp(r->topic, topic, r->topic_len) == 0;
}

/* ------------------------------------------------------------------------
 * Tests
 */

static void test_topic_refcount(void **state)
{
	struct node n2;
	char want[1024], subj[600];

	node_open(&n2, 2);
	expect_subjects("bs.node.2\n");

	assert_int_equal(bridge_topic_ref(n2.br, "alpha", 5), 0);
	assert_int_equal(bridge_topic_ref(n2.br, "alpha", 5), 0);
	assert_int_equal(bridge_topic_ref(n2.br, "beta", 4), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	assert_int_equal(stats(&n2).topics, 2);
	/* alpha, beta: 616c706861, 62657461 */
	expect_subjects("bs.node.2\nbs.t.616c706861\nbs.t.62657461\n");

	assert_int_equal(bridge_topic_unref(n2.br, "alpha", 5), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	expect_subjects("bs.node.2\nbs.t.616c706861\nbs.t.62657461\n");
	assert_int_equal(bridge_topic_unref(n2.br, "alpha", 5), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	expect_subjects("bs.node.2\nbs.t.62657461\n");
	assert_int_equal(stats(&n2).topics, 1);
	assert_int_equal(bridge_topic_unref(n2.br, "alpha", 5), BS_EINVAL);
	assert_int_equal(bridge_topic_unref(n2.br, "beta", 4), 0);
	assert_int_equal(bridge_topic_ref(n2.br, "", 0), BS_EINVAL);
	char big[BRIDGE_TOPIC_MAX + 1] = { 0 };
	assert_int_equal(bridge_topic_ref(n2.br, big, sizeof(big)), BS_EINVAL);
	assert_int_equal(bridge_topic_ref(n2.br, big, sizeof(big) - 1), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	topic_subject(subj, big, sizeof(big) - 1);
	snprintf(want, sizeof(want), "bs.node.2\n%s\n", subj);
	expect_subjects(want);
	assert_int_equal(bridge_topic_unref(n2.br, big, sizeof(big) - 1), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	expect_subjects("bs.node.2\n");
	assert_int_equal(stats(&n2).topics, 0);
	node_close(&n2);
}

/* Several threads count interest in the same topics at once; each also
 * keeps one ref of its own topic. */
struct refworker {
	bridge_t *br;
	int index, rounds;
};

static void *ref_main(void *arg)
{
	struct refworker *w = arg;
	char own[16], shared[16];
	uint64_t rnd = (uint64_t)w->index + 1;

	snprintf(own, sizeof(own), "own%d", w->index);
	TU_CHECK(bridge_topic_ref(w->br, own, strlen(own)) == 0, "ref own");
	for (int i = 0; i < w->rounds; i++) {
		snprintf(shared, sizeof(shared), "s%u", (unsigned)(tu_rand(&rnd) % 6));
		TU_CHECK(bridge_topic_ref(w->br, shared, strlen(shared)) == 0, "ref");
		TU_CHECK(bridge_topic_ref(w->br, shared, strlen(shared)) == 0, "ref");
		TU_CHECK(bridge_topic_unref(w->br, shared, strlen(shared)) == 0, "unref");
		TU_CHECK(bridge_topic_unref(w->br, shared, strlen(shared)) == 0, "unref");
	}
	return NULL;
}

static void test_topic_refcount_threads(void **state)
{
	enum { THREADS = 4 };
	struct node n2;
	pthread_t th[THREADS];
	struct refworker w[THREADS];

	node_open(&n2, 2);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct refworker){ n2.br, i, (int)tu_scaled(2000, 200) };
		assert_int_equal(pthread_create(&th[i], NULL, ref_main, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	assert_int_equal(stats(&n2).topics, THREADS);
	/* own0..own3: 6f776e30.. */
	expect_subjects("bs.node.2\nbs.t.6f776e30\nbs.t.6f776e31\nbs.t.6f776e32\n"
			"bs.t.6f776e33\n");
	node_close(&n2);
}

static void test_publish_once_never_echoed(void **state)
{
	enum { N1 = 100, N2 = 50 };
	struct node n1, n2;

	node_open(&n1, 1);
	node_open(&n2, 2);
	assert_int_equal(bridge_topic_ref(n1.br, "news", 4), 0);
	assert_int_equal(bridge_topic_ref(n2.br, "news", 4), 0);
	assert_int_equal(bridge_topic_ref(n1.br, "solo", 4), 0);
	assert_int_equal(bridge_flush(n1.br, WAIT_MS), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);

	for (uint32_t q = 0; q < N1; q++)
		assert_int_equal(publish(&n1, "news", 1, q), 0);
	for (uint32_t q = 0; q < N2; q++)
		assert_int_equal(publish(&n2, "news", 2, q), 0);
	/* only node 1 listens to solo: node 2's publish reaches it, node 1's
	 * own goes nowhere */
	assert_int_equal(publish(&n1, "solo", 3, 0), 0);
	assert_int_equal(publish(&n2, "solo", 4, 0), 0);
	/* nobody listens to void */
	assert_int_equal(publish(&n2, "void", 5, 0), 0);

	expect_count(&n2, N1);
	expect_count(&n1, N2 + 1);
	for (size_t i = 0; i < n2.n; i++) {
		const struct rec *r = &n2.recs[i];
		assert_true(rec_topic_is(r, "news"));
		assert_int_equal(r->origin, 1);
		assert_int_equal(r->publisher, make_id(1, 1));
		assert_int_equal(r->s, 1);
		assert_int_equal(r->q, i);
		assert_int_equal(r->seq, i + 1);
	}
	for (size_t i = 0; i < N2; i++) {
		const struct rec *r = &n1.recs[i];
		assert_true(rec_topic_is(r, "news"));
		assert_int_equal(r->origin, 2);
		assert_int_equal(r->q, i);
	}
	assert_true(rec_topic_is(&n1.recs[N2], "solo"));
	assert_int_equal(n1.recs[N2].origin, 2);
	assert_int_equal(n1.recs[N2].s, 4);

	bridge_stats_t s1 = stats(&n1), s2 = stats(&n2);
	assert_int_equal(s1.published, N1 + 1);
	assert_int_equal(s2.published, N2 + 2);
	assert_int_equal(s1.received, N2 + 1);
	assert_int_equal(s2.received, N1);
	assert_int_equal(s1.gaps_lost + s2.gaps_lost + s1.dropped + s2.dropped, 0);
	assert_int_equal(s1.publish_failed + s2.publish_failed, 0);
	assert_true(s1.connected && s2.connected);
	assert_int_equal(tu_failures(), 0);
	node_close(&n1);
	node_close(&n2);
}

/* Another process with the same node number: its envelopes are not ours,
 * though they say so, and are dropped with a warning. */
static void test_same_node_number_dropped(void **state)
{
	struct node a, b;

	node_open(&a, 1);
	node_open(&b, 1);
	assert_int_equal(bridge_topic_ref(b.br, "x", 1), 0);
	assert_int_equal(bridge_flush(b.br, WAIT_MS), 0);
	for (uint32_t q = 0; q < 10; q++)
		assert_int_equal(publish(&a, "x", 1, q), 0);
	assert_int_equal(bridge_flush(a.br, WAIT_MS), 0);
	(void)TU_WAIT_FOR(stats(&b).dropped == 10, WAIT_MS);
	expect_count(&b, 0);
	assert_int_equal(stats(&b).dropped, 10);
	assert_int_equal(stats(&b).received, 0);
	assert_true(atomic_load(&b.warns) >= 1);
	assert_non_null(strstr(b.last_warn, "node 1"));
	node_close(&a);
	node_close(&b);
}

/*
 * Many messages on three topics from four publishers: node 2 gets them
 * exactly in publish order (one connection, one delivery thread), each
 * topic's sequence without a hole.
 */
static void test_order_many(void **state)
{
	static const char *topics[] = { "t0", "t1", "t2" };
	const uint32_t n = (uint32_t)tu_scaled(10000, 2000);
	struct node n1, n2;

	node_open(&n1, 1);
	node_open(&n2, 2);
	for (int i = 0; i < 3; i++)
		assert_int_equal(bridge_topic_ref(n2.br, topics[i], 2), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);

	for (uint32_t q = 0; q < n; q++)
		assert_int_equal(publish(&n1, topics[q % 3], q % 4, q), 0);
	assert_int_equal(bridge_flush(n1.br, WAIT_MS), 0);
	expect_count(&n2, n);

	uint64_t seq[3] = { 0, 0, 0 };
	for (uint32_t q = 0; q < n; q++) {
		const struct rec *r = &n2.recs[q];
		if (r->q != q)
			fail_msg("message %u arrived where %u was due", r->q, q);
		assert_true(rec_topic_is(r, topics[q % 3]));
		assert_int_equal(r->s, q % 4);
		assert_int_equal(r->publisher, make_id(1, q % 4));
		assert_int_equal(r->origin, 1);
		assert_int_equal(r->seq, ++seq[q % 3]);
		assert_int_equal(r->len, tu_pattern_len(q % 4, q, TU_PATTERN_MIN, 256));
	}
	bridge_stats_t s2 = stats(&n2);
	assert_int_equal(stats(&n1).published, n);
	assert_int_equal(s2.received, n);
	assert_int_equal(s2.gaps_lost + s2.dropped, 0);
	assert_int_equal(tu_failures(), 0);
	node_close(&n1);
	node_close(&n2);
}

static void test_direct_messages(void **state)
{
	const uint32_t n = (uint32_t)tu_scaled(1000, 200);
	struct node n1, n2;

	node_open(&n1, 1);
	node_open(&n2, 2);
	for (uint32_t q = 0; q < n; q++)
		assert_int_equal(direct(&n1, 2, 7, q), 0);
	for (uint32_t q = 0; q < 10; q++)
		assert_int_equal(direct(&n2, 1, 8, q), 0);
	/* to itself: the server delivers locally, never over NATS */
	assert_int_equal(direct(&n1, 1, 7, 0), BS_EINVAL);
	/* to a node nobody runs: handed to NATS, lost there */
	assert_int_equal(direct(&n1, 3, 7, 0), 0);

	expect_count(&n2, n);
	expect_count(&n1, 10);
	for (uint32_t q = 0; q < n; q++) {
		const struct rec *r = &n2.recs[q];
		assert_true(r->direct);
		assert_int_equal(r->target, make_id(2, q));
		assert_int_equal(r->publisher, make_id(1, 7));
		assert_int_equal(r->s, 7);
		assert_int_equal(r->q, q);
	}
	for (uint32_t q = 0; q < 10; q++) {
		assert_true(n1.recs[q].direct);
		assert_int_equal(n1.recs[q].target, make_id(1, q));
		assert_int_equal(n1.recs[q].publisher, make_id(2, 8));
	}
	assert_int_equal(stats(&n1).published, n + 1);
	assert_int_equal(stats(&n2).received, n);
	assert_int_equal(stats(&n2).gaps_lost, 0);
	assert_int_equal(tu_failures(), 0);
	node_close(&n1);
	node_close(&n2);
}

/* Every byte value, and the longest topic, cross as they are. */
static void test_any_topic_bytes(void **state)
{
	struct node n1, n2;
	uint8_t one[1], longest[BRIDGE_TOPIC_MAX], p[32];
	static const char *odd[] = { "a.b", "a.*", "a.>", "a b", "bs.node.2", "\r\n" };

	node_open(&n1, 1);
	node_open(&n2, 2);
	memset(longest, '.', sizeof(longest));
	for (int c = 0; c < 256; c++) {
		one[0] = (uint8_t)c;
		assert_int_equal(bridge_topic_ref(n2.br, one, 1), 0);
	}
	assert_int_equal(bridge_topic_ref(n2.br, longest, sizeof(longest)), 0);
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		assert_int_equal(bridge_topic_ref(n2.br, odd[i], strlen(odd[i])), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);

	uint32_t q = 0;
	for (int c = 0; c < 256; c++, q++) {
		one[0] = (uint8_t)c;
		tu_pattern_fill(p, sizeof(p), 1, q);
		assert_int_equal(bridge_publish(n1.br, one, 1, 1, p, sizeof(p)), 0);
	}
	tu_pattern_fill(p, sizeof(p), 1, q++);
	assert_int_equal(bridge_publish(n1.br, longest, sizeof(longest), 1, p, sizeof(p)), 0);
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++, q++) {
		tu_pattern_fill(p, sizeof(p), 1, q);
		assert_int_equal(bridge_publish(n1.br, odd[i], strlen(odd[i]), 1, p, sizeof(p)),
				 0);
	}
	assert_int_equal(bridge_publish(n1.br, longest, 0, 1, p, sizeof(p)), BS_EINVAL);
	assert_int_equal(bridge_publish(n1.br, longest, BRIDGE_TOPIC_MAX + 1, 1, p, 8),
			 BS_EINVAL);

	expect_count(&n2, q);
	for (uint32_t i = 0; i < q; i++) {
		const struct rec *r = &n2.recs[i];
		assert_int_equal(r->q, i);
		assert_int_equal(r->seq, 1);
		if (i < 256) {
			assert_int_equal(r->topic_len, 1);
			assert_int_equal(r->topic[0], i);
		} else if (i == 256) {
			assert_int_equal(r->topic_len, sizeof(longest));
			assert_memory_equal(r->topic, longest, sizeof(longest));
		} else {
			assert_true(rec_topic_is(r, odd[i - 257]));
		}
	}
	/* "bs.node.2" as a topic is no direct message */
	assert_int_equal(stats(&n2).dropped, 0);
	assert_int_equal(tu_failures(), 0);
	node_close(&n1);
	node_close(&n2);
}

/* An envelope, as another node would send it. */
static int raw_publish(natsConnection *nc, const char *subject, int kind, uint16_t node,
		       uint64_t epoch, uint64_t seq, uint32_t q)
{
	uint8_t p[64] = { 1, (uint8_t)kind, (uint8_t)(node >> 8), (uint8_t)node };

	for (int i = 0; i < 8; i++) {
		p[4 + i] = (uint8_t)(epoch >> (56 - 8 * i));
		p[12 + i] = (uint8_t)(seq >> (56 - 8 * i));
	}
	size_t hdr = kind == 'T' ? 28 : 36;
	tu_pattern_fill(p + hdr, 16, 9, q);
	return natsConnection_Publish(nc, subject, p, (int)(hdr + 16)) == NATS_OK ? 0 : -1;
}

/*
 * Malformed envelopes are dropped; sequences are checked per origin and
 * epoch: a hole is counted lost, a repeat dropped, a new epoch (the origin
 * restarted) starts afresh.
 */
static void test_envelopes_checked(void **state)
{
	struct node n2;
	natsConnection *nc = NULL;
	char subj[16];

	node_open(&n2, 2);
	assert_int_equal(bridge_topic_ref(n2.br, "g", 1), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	topic_subject(subj, "g", 1);
	assert_int_equal(natsConnection_ConnectTo(&nc, g_natsd.url), NATS_OK);

	static const uint8_t bad_version[40] = { 2, 'T' }, bad_kind[40] = { 1, 'D' },
			     zero_seq[40] = { 1, 'T', 0, 7 };
	assert_int_equal(natsConnection_Publish(nc, subj, NULL, 0), NATS_OK);
	assert_int_equal(natsConnection_Publish(nc, subj, bad_version, 27), NATS_OK);
	assert_int_equal(natsConnection_Publish(nc, subj, bad_version, 40), NATS_OK);
	assert_int_equal(natsConnection_Publish(nc, subj, bad_kind, 40), NATS_OK);
	assert_int_equal(natsConnection_Publish(nc, subj, zero_seq, 40), NATS_OK);
	assert_int_equal(natsConnection_Publish(nc, "bs.node.2", zero_seq, 40), NATS_OK);
	/* node 7, epoch 5: 1 2 5 (2 lost) 5 (repeat) 6; epoch 6: 1 */
	assert_int_equal(raw_publish(nc, subj, 'T', 7, 5, 1, 0), 0);
	assert_int_equal(raw_publish(nc, subj, 'T', 7, 5, 2, 1), 0);
	assert_int_equal(raw_publish(nc, subj, 'T', 7, 5, 5, 2), 0);
	assert_int_equal(raw_publish(nc, subj, 'T', 7, 5, 5, 3), 0);
	assert_int_equal(raw_publish(nc, subj, 'T', 7, 5, 6, 4), 0);
	assert_int_equal(raw_publish(nc, subj, 'T', 7, 6, 1, 5), 0);
	/* node 8 has its own sequence; direct messages theirs: 10 then 12 */
	assert_int_equal(raw_publish(nc, subj, 'T', 8, 5, 3, 6), 0);
	assert_int_equal(raw_publish(nc, "bs.node.2", 'D', 7, 5, 10, 7), 0);
	assert_int_equal(raw_publish(nc, "bs.node.2", 'D', 7, 5, 12, 8), 0);
	assert_int_equal(natsConnection_FlushTimeout(nc, WAIT_MS), NATS_OK);

	expect_count(&n2, 8);
	static const uint32_t want_q[] = { 0, 1, 2, 4, 5, 6, 7, 8 };
	static const uint64_t want_seq[] = { 1, 2, 5, 6, 1, 3, 0, 0 };
	for (int i = 0; i < 8; i++) {
		assert_int_equal(n2.recs[i].q, want_q[i]);
		if (!n2.recs[i].direct)
			assert_int_equal(n2.recs[i].seq, want_seq[i]);
	}
	bridge_stats_t s = stats(&n2);
	assert_int_equal(s.received, 8);
	assert_int_equal(s.gaps_lost, 2 + 1);
	assert_int_equal(s.dropped, 6 + 1);
	assert_int_equal(tu_failures(), 0);
	natsConnection_Destroy(nc);
	node_close(&n2);
}

/* A bridge opened before its server: it fails publishes (counted), keeps
 * the interest, and connects when the server comes. */
static void test_open_before_server(void **state)
{
	struct node n1, n2;

	natsd_stop(&g_natsd); /* the setup's server: this test starts its own, later */
	node_open_url(&n1, 1, g_natsd.url);
	assert_false(stats(&n1).connected);
	assert_int_equal(bridge_topic_ref(n1.br, "x", 1), 0);
	assert_int_equal(publish(&n1, "x", 1, 0), BS_EAGAIN);
	assert_int_equal(direct(&n1, 2, 1, 0), BS_EAGAIN);
	assert_int_equal(stats(&n1).publish_failed, 2);
	assert_int_equal(bridge_flush(n1.br, 100), BS_EAGAIN);

	assert_int_equal(natsd_start(&g_natsd), 0);
	assert_true(TU_WAIT_FOR(stats(&n1).connected, WAIT_MS));
	node_open(&n2, 2);
	assert_int_equal(bridge_flush(n1.br, WAIT_MS), 0);
	expect_subjects("bs.node.1\nbs.node.2\nbs.t.78\n");
	assert_int_equal(publish(&n2, "x", 2, 0), 0);
	expect_count(&n1, 1);
	assert_int_equal(n1.recs[0].s, 2);
	assert_int_equal(stats(&n1).reconnects, 0);
	assert_int_equal(tu_failures(), 0);
	node_close(&n1);
	node_close(&n2);
}

struct flow {
	uint32_t q;        /* the next message */
	uint32_t refused;  /* BS_EAGAIN: link down */
	uint32_t last_topic, last_direct; /* the last ones NATS took */
};

/* Publishes n messages on node 1: every tenth a direct message to node 2,
 * the others on "stream". */
static void stream_phase(struct node *n1, struct flow *f, uint32_t n)
{
	for (uint32_t end = f->q + n; f->q < end; f->q++) {
		bool d = f->q % 10 == 9;
		int rc = d ? direct(n1, 2, 1, f->q) : publish(n1, "stream", 1, f->q);
		if (rc == BS_EAGAIN)
			f->refused++;
		else if (rc != 0)
			TU_CHECK(0, "publish %u: %s", f->q, bs_err_name(rc));
		else if (d)
			f->last_direct = f->q;
		else
			f->last_topic = f->q;
	}
}

/*
 * nats-server killed mid-stream and restarted on the same port: both
 * bridges reconnect and resubscribe (also to what changed meanwhile), and
 * what node 1 published is exactly what node 2 received plus what node 2
 * counted lost.
 */
static void test_server_restart(void **state)
{
	const uint32_t n = (uint32_t)tu_scaled(4000, 1000);
	struct node n1, n2;
	struct flow f = { 0 };

	node_open(&n1, 1);
	node_open(&n2, 2);
	assert_int_equal(bridge_topic_ref(n2.br, "stream", 6), 0);
	assert_int_equal(bridge_topic_ref(n2.br, "keep", 4), 0);
	assert_int_equal(bridge_topic_ref(n2.br, "gone", 4), 0);
	assert_int_equal(bridge_topic_ref(n1.br, "back", 4), 0);
	assert_int_equal(bridge_flush(n1.br, WAIT_MS), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);

	/* Node 2 counts losses from the first message it got of each
	 * stream on: what was before is nobody's loss, and lost is lost. */
	stream_phase(&n1, &f, 100);
	(void)TU_WAIT_FOR(node_count(&n2) == 100, WAIT_MS);
	assert_int_equal(node_count(&n2), 100);

	/* in full flow, then the server dies under it */
	stream_phase(&n1, &f, n);
	natsd_stop(&g_natsd);
	assert_true(TU_WAIT_FOR(stats(&n1).disconnects == 1 && stats(&n2).disconnects == 1,
				WAIT_MS));
	assert_false(stats(&n1).connected);

	/* down: refused at once, counted */
	uint32_t before = f.refused;
	stream_phase(&n1, &f, 500);
	assert_int_equal(f.refused - before, 500);
	assert_int_equal(bridge_topic_unref(n2.br, "gone", 4), 0);
	assert_int_equal(bridge_topic_ref(n2.br, "late", 4), 0);

	assert_int_equal(natsd_start(&g_natsd), 0);
	assert_true(TU_WAIT_FOR(stats(&n1).connected && stats(&n2).connected &&
					stats(&n1).reconnects == 1 &&
					stats(&n2).reconnects == 1,
				WAIT_MS));
	assert_int_equal(bridge_flush(n1.br, WAIT_MS), 0);
	assert_int_equal(bridge_flush(n2.br, WAIT_MS), 0);
	/* back, keep, late, stream; never gone */
	expect_subjects("bs.node.1\nbs.node.2\nbs.t.6261636b\nbs.t.6b656570\n"
			"bs.t.6c617465\nbs.t.73747265616d\n");

	stream_phase(&n1, &f, n);
	assert_int_equal(publish(&n1, "keep", 2, 0), 0);
	assert_int_equal(publish(&n1, "late", 3, 0), 0);
	assert_int_equal(publish(&n1, "gone", 4, 0), 0);
	assert_int_equal(publish(&n2, "back", 5, 0), 0);
	assert_int_equal(bridge_flush(n1.br, WAIT_MS), 0);
	assert_int_equal(tu_failures(), 0);

	/* "gone" has no listener left: the one message node 2 cannot account for */
	bridge_stats_t s1 = stats(&n1), s2;
	(void)TU_WAIT_FOR((s2 = stats(&n2), s2.received + s2.gaps_lost == s1.published - 1),
			  WAIT_MS);
	tu_sleep_ms(QUIET_MS);
	s1 = stats(&n1);
	s2 = stats(&n2);
	printf("    published %llu, refused %llu; node 2 received %llu, counted lost %llu, "
	       "dropped %llu\n",
	       (unsigned long long)s1.published, (unsigned long long)s1.publish_failed,
	       (unsigned long long)s2.received, (unsigned long long)s2.gaps_lost,
	       (unsigned long long)s2.dropped);
	assert_int_equal(s1.published + s1.publish_failed, 100 + 2 * n + 500 + 3);
	assert_int_equal(s1.publish_failed, f.refused);
	assert_true(s1.publish_failed >= 500);
	assert_int_equal(s1.published - 1, s2.received + s2.gaps_lost);
	assert_true(s2.gaps_lost > 0);
	assert_int_equal(s2.dropped, 0);
	assert_int_equal(node_count(&n2), s2.received);

	/* each stream in order, nothing twice; keep and late once, gone never */
	uint32_t last_topic = 0, last_direct = 0, keep = 0, late = 0;
	bool first_t = true, first_d = true;
	for (size_t i = 0; i < n2.n; i++) {
		const struct rec *r = &n2.recs[i];
		if (rec_topic_is(r, "stream")) {
			assert_true(first_t || r->q > last_topic);
			first_t = false;
			last_topic = r->q;
		} else if (r->direct) {
			assert_true(first_d || r->q > last_direct);
			first_d = false;
			last_direct = r->q;
		} else if (rec_topic_is(r, "keep")) {
			keep++;
		} else if (rec_topic_is(r, "late")) {
			late++;
		} else {
			fail_msg("node 2 got a message on %.*s", (int)r->topic_len, r->topic);
		}
	}
	assert_int_equal(keep, 1);
	assert_int_equal(late, 1);
	/* the last of each stream came through, so no loss is left uncounted */
	assert_int_equal(last_topic, f.last_topic);
	assert_int_equal(last_direct, f.last_direct);
	expect_count(&n1, 1);
	assert_true(rec_topic_is(&n1.recs[0], "back"));
	assert_true(atomic_load(&n2.warns) >= 1);
	assert_int_equal(tu_failures(), 0);
	node_close(&n1);
	node_close(&n2);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_topic_refcount, setup, teardown),
		cmocka_unit_test_setup_teardown(test_topic_refcount_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_once_never_echoed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_node_number_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_direct_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_any_topic_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_envelopes_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_before_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_restart, setup, teardown),
	};
	return TU_RUN("nats_bridge", tests, argc, argv);
}
