/*
 * pubsub_server nodes bridged by a real nats-server (started on a free
 * loopback port by each test and always stopped): publishers and
 * subscribers on both nodes, every message of a subscriber's topics
 * exactly once and in each publisher's order; NATS interest from a
 * topic's first local subscriber to its last; direct messages across the
 * nodes and to a stale id of the other node; nats-server killed and
 * restarted mid-stream, local delivery going on and the cross-node loss
 * counted exactly; two processes sharing one port with --reuseport.
 *
 * Needs nats-server and a pubsub_server built with libnats-dev (mk/nats.mk
 * leaves this test out otherwise).
 */
#include "util.h"

#include "natsd.h"
#include "pubsub_proc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 10000
#define QUIET_MS 300

static struct natsd g_natsd = { .pid = -1 };

static void natsd_stop_at_exit(void)
{
	natsd_stop(&g_natsd);
}

static int setup(void **state)
{
	(void)state;
	g_natsd = (struct natsd){ .pid = -1 };
	atexit(natsd_stop_at_exit);
	return natsd_start(&g_natsd);
}

static int teardown(void **state)
{
	(void)state;
	natsd_stop(&g_natsd);
	return 0;
}

/* Node n of the cluster, on addr (NULL: a free port), more arguments
 * after (NULL-ended, may be NULL). */
static void node_start(struct ps_server *s, unsigned n, const char *addr,
		       const char *const *more)
{
	char num[16];
	const char *argv[16] = { "--node", num, "--nats", g_natsd.url };
	int k = 4;

	snprintf(num, sizeof num, "%u", n);
	for (; more && *more && k < 15; more++)
		argv[k++] = *more;
	argv[k] = NULL;
	ps_server_start(s, addr, NULL, argv);
}

/* The node number in the first four hex digits of an id. */
static unsigned id_node(const char hex[17])
{
	unsigned n = 0;

	assert_int_equal(sscanf(hex, "%4x", &n), 1);
	return n;
}

/* Reads the next delivery on topic (any body) into body (NUL-ended). */
static void next_delivery(int fd, const char *topic, char *body, size_t cap)
{
	uint8_t got[PS_FRAME_MAX];
	size_t tlen = strlen(topic);
	long n = tu_recv_frame(fd, got, sizeof got, WAIT_MS);

	if (n < (long)(2 + tlen) || got[0] != 'M' || got[1] != tlen ||
	    memcmp(got + 2, topic, tlen) != 0)
		fail_msg("expected a delivery on %s, got %ld bytes: %c", topic, n,
			 n > 0 ? got[0] : '?');
	size_t blen = (size_t)n - 2 - tlen;
	assert_true(blen < cap);
	memcpy(body, got + 2 + tlen, blen);
	body[blen] = 0;
}

static void expect_quiet(int fd)
{
	assert_false(tu_readable(fd, 0));
}

/* ------------------------------------------------------------------------
 * Two nodes, publishers and subscribers on both: every subscriber gets
 * every message of its topics exactly once, in each publisher's order.
 */
enum { TOPICS = 3, SUBS_PER_NODE = 6, PUBS_PER_NODE = 2, MSGS = 150 };

struct sub {
	int fd;
	int topic;            /* -1: every topic */
	int next[2 * PUBS_PER_NODE]; /* the next q of each publisher */
};

/* The next q >= from of topic t (or of any topic when t < 0). */
static int next_q(int t, int from)
{
	if (t < 0)
		return from;
	while (from % TOPICS != t)
		from++;
	return from;
}

static void test_two_nodes_every_message_once(void **state)
{
	(void)state;
	struct ps_server n1, n2;
	struct ps_summary s1, s2;
	struct sub subs[2 * SUBS_PER_NODE + 2];
	int pubs[2 * PUBS_PER_NODE], nsubs = 0;
	char topic[8], body[64];

	node_start(&n1, 1, NULL, NULL);
	node_start(&n2, 2, NULL, NULL);
	const char *addr[2] = { n1.addr, n2.addr };
	for (int node = 0; node < 2; node++)
		for (int i = 0; i < SUBS_PER_NODE; i++) {
			struct sub *s = &subs[nsubs++];
			s->fd = ps_client(addr[node]);
			s->topic = i % TOPICS;
			snprintf(topic, sizeof topic, "t%d", s->topic);
			ps_subscribe(s->fd, topic);
		}
	/* one subscriber of every topic on node 1; on node 2 a publisher
	 * that subscribes too */
	struct sub *all = &subs[nsubs++];
	all->fd = ps_client(n1.addr);
	all->topic = -1;
	for (int t = 0; t < TOPICS; t++) {
		snprintf(topic, sizeof topic, "t%d", t);
		ps_subscribe(all->fd, topic);
	}
	for (int k = 0; k < 2 * PUBS_PER_NODE; k++)
		pubs[k] = ps_client(addr[k % 2]);
	struct sub *self = &subs[nsubs++];
	self->fd = pubs[1];
	self->topic = 0;
	ps_subscribe(self->fd, "t0");
	for (int i = 0; i < nsubs; i++)
		for (int k = 0; k < 2 * PUBS_PER_NODE; k++)
			subs[i].next[k] = next_q(subs[i].topic, 0);

	/* publishers interleaved, message q on topic q mod TOPICS */
	for (int q = 0; q < MSGS; q++)
		for (int k = 0; k < 2 * PUBS_PER_NODE; k++) {
			snprintf(topic, sizeof topic, "t%d", q % TOPICS);
			snprintf(body, sizeof body, "%d:%d", k, q);
			ps_publish(pubs[k], topic, body);
		}

	for (int i = 0; i < nsubs; i++) {
		struct sub *s = &subs[i];
		int want = (s->topic < 0 ? MSGS : MSGS / TOPICS) * 2 * PUBS_PER_NODE;
		for (int got = 0; got < want; got++) {
			uint8_t m[PS_FRAME_MAX];
			long n = tu_recv_frame(s->fd, m, sizeof m, WAIT_MS);
			int k, q, t;
			if (n < 5 || m[0] != 'M' || m[1] != 2 || m[2] != 't')
				fail_msg("subscriber %d: %d of %d, then %ld bytes", i, got, want, n);
			t = m[3] - '0';
			memcpy(body, m + 4, (size_t)n - 4);
			body[n - 4] = 0;
			assert_int_equal(sscanf(body, "%d:%d", &k, &q), 2);
			assert_true(k >= 0 && k < 2 * PUBS_PER_NODE);
			if (q != s->next[k] || t != q % TOPICS || (s->topic >= 0 && t != s->topic))
				fail_msg("subscriber %d (topic %d): from publisher %d got %d on t%d, "
					 "expected %d", i, s->topic, k, q, t, s->next[k]);
			s->next[k] = next_q(s->topic, q + 1);
		}
	}
	tu_sleep_ms(QUIET_MS);
	for (int i = 0; i < nsubs; i++)
		expect_quiet(subs[i].fd); /* exactly once: nothing more */
	for (int i = 0; i < nsubs; i++)
		if (subs[i].fd != pubs[1])
			close(subs[i].fd);
	for (int k = 0; k < 2 * PUBS_PER_NODE; k++)
		close(pubs[k]);
	ps_server_stop(&n1, &s1);
	ps_server_stop(&n2, &s2);
	assert_true(s1.nats && s2.nats);
	assert_int_equal(s1.published, PUBS_PER_NODE * MSGS);
	assert_int_equal(s2.published, PUBS_PER_NODE * MSGS);
	assert_int_equal(s1.nats_sent, PUBS_PER_NODE * MSGS);
	assert_int_equal(s2.nats_sent, PUBS_PER_NODE * MSGS);
	/* each node has interest in every topic: it gets all of the other's */
	assert_int_equal(s1.nats_received, PUBS_PER_NODE * MSGS);
	assert_int_equal(s2.nats_received, PUBS_PER_NODE * MSGS);
	assert_int_equal(s1.nats_not_sent + s1.nats_lost + s2.nats_not_sent + s2.nats_lost, 0);
	/* node 1: 6 subscribers of one topic and one of all, of 600 messages */
	assert_int_equal(s1.delivered, SUBS_PER_NODE * 200 + 600);
	assert_int_equal(s2.delivered, SUBS_PER_NODE * 200 + 200);
}

/* ------------------------------------------------------------------------
 * A node listens on NATS to a topic while it has local subscribers: from
 * the first one's A on, and no more once the last one's unsubscribe is
 * answered. A direct message across is the barrier: each node's NATS
 * connection keeps its order, so what a node sent before it is in effect
 * at the NATS server when it arrives.
 */
static void test_interest_follows_subscribers(void **state)
{
	(void)state;
	struct ps_server n1, n2;
	struct ps_summary s1, s2;
	char x_id[17], y_id[17];

	node_start(&n1, 1, NULL, NULL);
	node_start(&n2, 2, NULL, NULL);
	int x = ps_client(n1.addr), y = ps_client(n2.addr);
	ps_identify(x, x_id);
	ps_identify(y, y_id);

	ps_subscribe(x, "solo");             /* node 1 subscribes on NATS */
	ps_publish(y, "solo", "one");
	ps_expect(x, 'M', "solo", "one");
	ps_command(x, 'U', "solo", NULL, 0); /* and unsubscribes */
	ps_expect(x, 'A', "solo", "");
	ps_command(x, 'D', y_id, "barrier", 7);
	ps_expect(y, 'M', x_id, "barrier");
	ps_publish(y, "solo", "two");        /* nobody listens on node 1 */
	ps_command(y, 'D', x_id, "back", 4);
	ps_expect(x, 'M', y_id, "back");
	ps_subscribe(x, "solo");             /* once more */
	ps_publish(y, "solo", "three");
	ps_expect(x, 'M', "solo", "three");  /* not "two" */
	tu_sleep_ms(QUIET_MS);
	expect_quiet(x);
	expect_quiet(y);

	close(x);
	close(y);
	ps_server_stop(&n1, &s1);
	ps_server_stop(&n2, &s2);
	/* node 1 got one, back, three from NATS; never two */
	assert_int_equal(s1.nats_received, 3);
	assert_int_equal(s2.nats_received, 1);
	assert_int_equal(s2.nats_sent, 4);
}

/* ------------------------------------------------------------------------
 * Direct messages across the nodes, and to an id of the other node that
 * has gone: that node counts it stale; the sender's stream goes on.
 */
static void test_direct_across_nodes(void **state)
{
	(void)state;
	struct ps_server n1, n2;
	struct ps_summary s1, s2;
	char a_id[17], b_id[17], c_id[17], body[64];

	node_start(&n1, 1, NULL, NULL);
	node_start(&n2, 2, NULL, NULL);
	int a = ps_client(n1.addr), b = ps_client(n2.addr), c = ps_client(n2.addr);
	ps_identify(a, a_id);
	ps_identify(b, b_id);
	ps_identify(c, c_id);
	assert_int_equal(id_node(a_id), 1);
	assert_int_equal(id_node(b_id), 2);
	assert_int_equal(id_node(c_id), 2);

	ps_command(a, 'D', b_id, "to b", 4);
	ps_expect(b, 'M', a_id, "to b");
	ps_command(b, 'D', a_id, "to a", 4);
	ps_expect(a, 'M', b_id, "to a");
	for (int q = 0; q < 50; q++) { /* in order */
		snprintf(body, sizeof body, "n%d", q);
		ps_command(a, 'D', b_id, body, strlen(body));
	}
	for (int q = 0; q < 50; q++) {
		snprintf(body, sizeof body, "n%d", q);
		ps_expect(b, 'M', a_id, body);
	}

	/* c leaves; once node 2 knows it, c's id is stale there (until then
	 * a message to it is taken, and counted delivered) */
	close(c);
	int taken = 0;
	for (int tries = 0;; tries++) {
		uint8_t got[64];
		ps_command(b, 'D', c_id, "x", 1);
		long n = tu_recv_frame(b, got, sizeof got, 50);
		if (n == TU_TIMEOUT) {
			taken++;
		} else {
			assert_true(n == 2 + 10 && got[0] == 'E' && !memcmp(got + 2, "unknown id", 10));
			break;
		}
		assert_true(tries < 200);
	}
	/* from node 1 it crosses NATS and is counted stale there, not
	 * answered; what follows in a's stream still arrives */
	ps_command(a, 'D', c_id, "to the gone one", 15);
	ps_command(a, 'D', b_id, "after", 5);
	ps_expect(b, 'M', a_id, "after");
	tu_sleep_ms(QUIET_MS);
	expect_quiet(a);
	expect_quiet(b);

	close(a);
	close(b);
	ps_server_stop(&n1, &s1);
	ps_server_stop(&n2, &s2);
	assert_int_equal(s2.direct_stale, 1);
	assert_int_equal(s1.direct_stale, 0);
	assert_int_equal(s1.nats_sent, 1 + 50 + 1 + 1);
	assert_int_equal(s2.nats_received, 1 + 50 + 1 + 1);
	assert_int_equal(s2.nats_sent, 1);
	assert_int_equal(s1.direct, 1);  /* delivered on node 1 */
	assert_int_equal(s2.direct, 52 + taken);
}

/* ------------------------------------------------------------------------
 * nats-server killed and restarted mid-stream on its port: the local
 * subscriber gets every message all along; the remote one gets a part, in
 * order, and what it misses is counted: not sent by node 1 while the link
 * was down, or seen lost by node 2.
 */
static void publish_numbered(int pub, int from, int n)
{
	char body[32];

	for (int q = from; q < from + n; q++) {
		snprintf(body, sizeof body, "%d", q);
		ps_publish(pub, "s", body);
	}
}

/* Reads the local subscriber's from..from+n-1, in order. */
static void expect_numbered(int fd, int from, int n)
{
	char body[32];

	for (int q = from; q < from + n; q++) {
		next_delivery(fd, "s", body, sizeof body);
		if (atoi(body) != q)
			fail_msg("expected %d, got %s", q, body);
	}
}

static void test_nats_restart_mid_stream(void **state)
{
	(void)state;
	struct ps_server n1, n2;
	struct ps_summary s1, s2;
	char body[32];
	int next = 0, remote = 0, last_remote = -1;

	node_start(&n1, 1, NULL, NULL);
	node_start(&n2, 2, NULL, NULL);
	int pub = ps_client(n1.addr), local = ps_client(n1.addr), far = ps_client(n2.addr);
	ps_subscribe(local, "s");
	ps_subscribe(far, "s");

	/* up */
	publish_numbered(pub, next, 200);
	expect_numbered(local, next, 200);
	for (int q = next; q < next + 200; q++) {
		next_delivery(far, "s", body, sizeof body);
		assert_int_equal(atoi(body), q);
		last_remote = q;
		remote++;
	}
	next += 200;

	/* in full flow, then the bus dies under it */
	publish_numbered(pub, next, 300);
	natsd_stop(&g_natsd);
	expect_numbered(local, next, 300);
	next += 300;
	assert_true(TU_WAIT_FOR(ps_server_logged(&n1, "link lost") &&
					ps_server_logged(&n2, "link lost"),
				WAIT_MS));

	/* down: local delivery goes on */
	publish_numbered(pub, next, 300);
	expect_numbered(local, next, 300);
	next += 300;

	/* back on the same port: probe until the far side gets one again */
	assert_int_equal(natsd_start(&g_natsd), 0);
	uint64_t until = tu_now_ms() + WAIT_MS;
	bool back = false;
	while (!back && tu_now_ms() < until) {
		publish_numbered(pub, next, 1);
		expect_numbered(local, next, 1);
		next++;
		while (tu_readable(far, 20)) {
			next_delivery(far, "s", body, sizeof body);
			int q = atoi(body);
			assert_true(q > last_remote); /* in order, never twice */
			last_remote = q;
			remote++;
			back = q >= 800;
		}
	}
	assert_true(back);
	/* and everything after that arrives */
	publish_numbered(pub, next, 200);
	expect_numbered(local, next, 200);
	for (int q = next; q < next + 200; q++) {
		next_delivery(far, "s", body, sizeof body);
		assert_true(atoi(body) > last_remote);
		last_remote = atoi(body);
		remote++;
	}
	assert_int_equal(last_remote, next + 199);
	next += 200;
	tu_sleep_ms(QUIET_MS);
	expect_quiet(far);
	expect_quiet(local);
	/* the losses were logged */
	assert_true(ps_server_logged(&n1, "not published while down"));

	close(pub);
	close(local);
	close(far);
	ps_server_stop(&n1, &s1);
	ps_server_stop(&n2, &s2);
	printf("    published %d, far side got %d; node 1 not sent %llu, node 2 saw lost "
	       "%llu\n", next, remote, s1.nats_not_sent, s2.nats_lost);
	assert_int_equal(s1.published, next);
	assert_int_equal(s1.nats_sent + s1.nats_not_sent, next);
	assert_true(s1.nats_not_sent >= 300);        /* the whole outage at least */
	assert_int_equal(s2.nats_received, remote);
	assert_int_equal(s2.nats_received + s2.nats_lost, s1.nats_sent);
	assert_int_equal(s1.nats_not_sent + s2.nats_lost, next - remote);
	assert_int_equal(s1.reconnects, 1);
	assert_int_equal(s2.reconnects, 1);
	assert_int_equal(s1.delivered, next);        /* the local subscriber: all */
}

/* ------------------------------------------------------------------------
 * Two processes on one port with --reuseport: the kernel spreads the
 * connections over both, the ids say which, and NATS joins them. Without
 * --reuseport the second cannot bind.
 */
enum { SHARED_CLIENTS = 40 };

static void test_reuseport_two_processes(void **state)
{
	(void)state;
	static const char *const reuse[] = { "--reuseport", NULL };
	struct ps_server n1, n2, n3;
	struct ps_summary s1, s2;
	int fds[SHARED_CLIENTS], on[3] = { 0 }, first[3] = { -1, -1, -1 };
	char ids[SHARED_CLIENTS][17];

	node_start(&n1, 1, NULL, reuse);
	node_start(&n2, 2, n1.addr, reuse);
	assert_string_equal(n1.addr, n2.addr);
	static const char *const plain[] = { "--node", "3", NULL };
	assert_int_equal(ps_server_try_start(&n3, n1.addr, NULL, plain), -1);

	for (int i = 0; i < SHARED_CLIENTS; i++) {
		fds[i] = ps_client(n1.addr);
		ps_identify(fds[i], ids[i]);
		unsigned n = id_node(ids[i]);
		assert_true(n == 1 || n == 2);
		if (first[n] < 0)
			first[n] = i;
		on[n]++;
	}
	printf("    %d connections on node 1, %d on node 2\n", on[1], on[2]);
	/* 2^-39 that the kernel sent all of them to one */
	assert_true(on[1] > 0 && on[2] > 0);

	/* a subscriber on each, a publisher on node 1, a direct message across */
	int x = fds[first[1]], y = fds[first[2]];
	ps_subscribe(x, "shared");
	ps_subscribe(y, "shared");
	ps_publish(x, "shared", "both");
	ps_expect(x, 'M', "shared", "both");
	ps_expect(y, 'M', "shared", "both");
	ps_command(y, 'D', ids[first[1]], "hi", 2);
	ps_expect(x, 'M', ids[first[2]], "hi");

	for (int i = 0; i < SHARED_CLIENTS; i++)
		close(fds[i]);
	ps_server_stop(&n1, &s1);
	ps_server_stop(&n2, &s2);
	assert_int_equal(s1.closed + s2.closed, SHARED_CLIENTS);
	assert_int_equal(s1.nats_received + s2.nats_received, 2);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_two_nodes_every_message_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interest_follows_subscribers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_direct_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nats_restart_mid_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reuseport_two_processes, setup, teardown),
	};
	signal(SIGPIPE, SIG_IGN);
	return TU_RUN("pubsub_cluster", tests, argc, argv);
}
