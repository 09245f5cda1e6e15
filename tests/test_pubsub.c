/*
 * examples/pubsub_server end to end: each test starts the server program
 * on a free port, talks its protocol over plain sockets and checks every
 * answer and delivery exactly, then stops it with SIGTERM and checks the
 * counts of its summary line.
 *
 * The server runs with its default 2 draining threads, and the order
 * tests again with 4 (PUBSUB_THREADS in the environment sets another
 * count for every test): the library's connection holds keep each
 * publisher's messages in order however many threads drain them.
 *
 * The server binary is found beside this program's build directory
 * (BUILD/tests/test_pubsub -> BUILD/examples/pubsub_server), or at
 * $PUBSUB_SERVER.
 */
#include "util.h"
#include "pubsub_proc.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 10000
#define FRAME_MAX 65536

/* Threads of the server for the current test: NULL is its default. */
static const char *g_threads;

static void server_start(struct ps_server *s, const char *const *extra)
{
	ps_server_start(s, NULL, g_threads, extra);
}

/* ------------------------------------------------------------------------
 * Acknowledgements, unsubscribe, double subscribe, a publisher that also
 * subscribes. One publisher's messages are processed in order, so a
 * delivery on a "barrier" topic proves that nothing published before it
 * is still on its way.
 */
static void test_acks_and_unsubscribe(void **state)
{
	struct ps_server s;
	struct ps_summary sum;
	(void)state;

	server_start(&s, NULL);
	int sub = ps_client(s.addr), pub = ps_client(s.addr);
	ps_subscribe(sub, "news");
	ps_subscribe(sub, "news");   /* one subscription, answered again */
	ps_subscribe(sub, "barrier");
	ps_publish(pub, "news", "one");
	ps_publish(pub, "barrier", "b1");
	ps_expect(sub, 'M', "news", "one"); /* once, not twice */
	ps_expect(sub, 'M', "barrier", "b1");

	ps_command(sub, 'U', "news", NULL, 0);
	ps_expect(sub, 'A', "news", "");
	ps_command(sub, 'U', "never-subscribed", NULL, 0);
	ps_expect(sub, 'A', "never-subscribed", "");
	ps_publish(pub, "news", "two");       /* nobody listens any more */
	ps_publish(pub, "barrier", "b2");
	ps_expect(sub, 'M', "barrier", "b2");

	/* A publisher that subscribes gets its own messages. */
	ps_subscribe(pub, "self");
	ps_publish(pub, "self", "me");
	ps_expect(pub, 'M', "self", "me");
	ps_subscribe(sub, "self");
	ps_publish(pub, "self", "both");
	ps_expect(pub, 'M', "self", "both");
	ps_expect(sub, 'M', "self", "both");

	/* A body after the topic of S or U is ignored. */
	ps_command(sub, 'S', "extra", "ignored", 7);
	ps_expect(sub, 'A', "extra", "");
	ps_publish(pub, "extra", "x");
	ps_expect(sub, 'M', "extra", "x");

	close(sub);
	close(pub);
	ps_server_stop(&s, &sum);
	assert_int_equal(sum.published, 7);
	assert_int_equal(sum.delivered, 7); /* one, b1, b2, me, both twice, x */
	assert_int_equal(sum.dropped, 0);
	assert_int_equal(sum.slow, 0);
}

/* ------------------------------------------------------------------------
 * Malformed commands get E with a reason; the connection and the server
 * go on serving.
 */
static void test_malformed_commands(void **state)
{
	struct ps_server s;
	struct ps_summary sum;
	static const struct {
		const char *bytes;
		size_t len;
		const char *reason;
	} bad[] = {
		{ "", 0, "empty message" },
		{ "S", 1, "no topic length" },
		{ "S\0", 2, "topic length 0" },
		{ "P\0body", 6, "topic length 0" },
		{ "S\005abc", 5, "topic longer than message" },
		{ "P\377x", 3, "topic longer than message" },
		{ "X\001t", 3, "unknown op" },
		{ "M\001tbody", 7, "unknown op" },
		{ "A\001t", 3, "unknown op" },
		{ "E\000", 2, "topic length 0" },
	};
	(void)state;

	server_start(&s, NULL);
	int fd = ps_client(s.addr), other = ps_client(s.addr);
	ps_subscribe(other, "t");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(tu_send_frame(fd, bad[i].bytes, bad[i].len), 0);
		ps_expect(fd, 'E', "", bad[i].reason);
	}
	/* The same connection is served on, and so is everyone else. */
	ps_subscribe(fd, "t");
	ps_publish(fd, "t", "still here");
	ps_expect(fd, 'M', "t", "still here");
	ps_expect(other, 'M', "t", "still here");

	close(fd);
	close(other);
	ps_server_stop(&s, &sum);
	assert_int_equal(sum.published, 1);
	assert_int_equal(sum.delivered, 2);
}

/* ------------------------------------------------------------------------
 * Identify and direct messages on one node: 'I' gives the connection's id
 * in hex, 'D' to it delivers 'M' with the sender's id; a malformed, stale
 * or foreign id gets 'E', and the connection goes on.
 */

static void test_identify_and_direct(void **state)
{
	struct ps_server s;
	struct ps_summary sum;
	char a_id[17], b_id[17], gone_id[17], foreign[17];
	(void)state;

	server_start(&s, NULL);
	int a = ps_client(s.addr), b = ps_client(s.addr), gone = ps_client(s.addr);
	ps_identify(a, a_id);
	ps_identify(b, b_id);
	ps_identify(gone, gone_id);
	assert_true(strcmp(a_id, b_id) != 0);

	ps_command(a, 'D', b_id, "hello b", 7);
	ps_expect(b, 'M', a_id, "hello b");
	ps_command(b, 'D', a_id, "", 0);      /* an empty body is a message too */
	ps_expect(a, 'M', b_id, "");
	ps_command(a, 'D', a_id, "me", 2);    /* to itself */
	ps_expect(a, 'M', a_id, "me");
	/* fewer digits are the same id: leading zeros may go */
	const char *short_b = b_id;
	while (*short_b == '0' && short_b[1])
		short_b++;
	ps_command(a, 'D', short_b, "short", 5);
	ps_expect(b, 'M', a_id, "short");

	ps_command(a, 'D', "xyz", "x", 1);
	ps_expect(a, 'E', "", "bad id");
	ps_command(a, 'D', "0123456789abcdef0", "x", 1); /* 17 digits */
	ps_expect(a, 'E', "", "bad id");
	/* node 7 is not this one, and there is no cluster to reach it */
	snprintf(foreign, sizeof foreign, "0007%s", b_id + 4);
	ps_command(a, 'D', foreign, "x", 1);
	ps_expect(a, 'E', "", "unknown id");
	close(gone);
	/* once the server has seen it go, its id is stale for ever (until
	 * then a message to it is taken, and counted delivered) */
	int taken = 0;
	for (int tries = 0;; tries++) {
		uint8_t got[FRAME_MAX];
		ps_command(a, 'D', gone_id, "x", 1);
		long n = tu_recv_frame(a, got, sizeof got, 50);
		if (n == TU_TIMEOUT) {
			taken++;
		} else {
			assert_true(n == 2 + 10 && got[0] == 'E' && !memcmp(got + 2, "unknown id", 10));
			break;
		}
		assert_true(tries < 200);
	}
	/* and the connection goes on */
	ps_command(a, 'D', b_id, "still", 5);
	ps_expect(b, 'M', a_id, "still");

	close(a);
	close(b);
	ps_server_stop(&s, &sum);
	assert_int_equal(sum.published, 0);
	assert_int_equal(sum.delivered, 5 + taken);
	assert_int_equal(sum.direct, 5 + taken);
}

/* ------------------------------------------------------------------------
 * Fan-out to 1000 subscribers: every message exactly once, in publish
 * order, on every subscriber.
 */
enum { FAN_SUBS = 1000 };

static void test_fanout_1000(void **state)
{
	struct ps_server s;
	struct ps_summary sum;
	static int fds[FAN_SUBS];
	static tu_reader_t rd[FAN_SUBS];
	static uint32_t next[FAN_SUBS];
	uint32_t msgs = (uint32_t)tu_scaled(200, 50);
	(void)state;

	server_start(&s, NULL);
	for (int i = 0; i < FAN_SUBS; i++) {
		fds[i] = ps_client(s.addr);
		ps_command(fds[i], 'S', "fan", NULL, 0);
	}
	for (int i = 0; i < FAN_SUBS; i++) {
		ps_expect(fds[i], 'A', "fan", "");
		tu_reader_init(&rd[i], fds[i], FRAME_MAX);
	}
	int pub = ps_client(s.addr);
	for (uint32_t q = 0; q < msgs; q++) {
		uint8_t body[64];
		size_t len = tu_pattern_len(7, q, TU_PATTERN_MIN, sizeof body);
		tu_pattern_fill(body, len, 7, q);
		ps_command(pub, 'P', "fan", body, len);
	}

	/* Read everything, checking each delivery as it comes. */
	uint64_t deadline = tu_now_ms() + 60000;
	size_t done = 0;
	static struct pollfd pfd[FAN_SUBS];
	while (done < FAN_SUBS && tu_now_ms() < deadline) {
		nfds_t n = 0;
		for (int i = 0; i < FAN_SUBS; i++)
			if (next[i] < msgs)
				pfd[n++] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		if (poll(pfd, n, 1000) <= 0)
			continue;
		for (nfds_t k = 0; k < n; k++) {
			if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			int i = 0;
			while (fds[i] != pfd[k].fd)
				i++;
			assert_true(tu_reader_fill(&rd[i]) > 0);
			const uint8_t *m;
			size_t len;
			int r;
			while ((r = tu_reader_next(&rd[i], &m, &len)) == 1) {
				uint32_t st, q;
				assert_true(len >= 5 && m[0] == 'M' && m[1] == 3 && !memcmp(m + 2, "fan", 3));
				assert_int_equal(tu_pattern_check(m + 5, len - 5, &st, &q), 0);
				assert_int_equal(st, 7);
				assert_int_equal(q, next[i]); /* exactly once, in order */
				next[i]++;
				if (next[i] == msgs)
					done++;
			}
			assert_int_equal(r, 0);
		}
	}
	assert_int_equal(done, FAN_SUBS);
	for (int i = 0; i < FAN_SUBS; i++) {
		assert_int_equal(tu_reader_pending(&rd[i]), 0);
		tu_reader_free(&rd[i]);
		close(fds[i]);
	}
	close(pub);
	ps_server_stop(&s, &sum);
	assert_int_equal(sum.published, msgs);
	assert_int_equal(sum.delivered, (unsigned long long)msgs * FAN_SUBS);
	assert_int_equal(sum.dropped, 0);
}

/* ------------------------------------------------------------------------
 * A subscriber that stops reading, beside healthy ones. The publisher
 * keeps at most WINDOW messages ahead of the healthy subscribers, so that
 * only the stalled one can fill its queue (--queue 65536).
 */
enum { HEALTHY = 10, WINDOW = 16, BODY = 2000 };

struct stall_run {
	uint32_t msgs;           /* published while stalled */
	uint32_t stalled_got;    /* deliveries the stalled one read afterwards */
	bool stalled_eof;        /* ... and then its connection ended */
	bool stalled_in_order;   /* increasing numbers, each at most once */
	bool stalled_prefix;     /* exactly 0, 1, 2... without a gap */
};

/* Reads one healthy delivery and checks it is number q. */
static void expect_numbered(tu_reader_t *r, uint32_t q)
{
	const uint8_t *m;
	uint32_t st, got;
	long n = tu_reader_recv(r, &m, WAIT_MS);
	assert_int_equal(n, 2 + 1 + BODY);
	assert_true(m[0] == 'M' && m[1] == 1 && m[2] == 's');
	assert_int_equal(tu_pattern_check(m + 3, BODY, &st, &got), 0);
	assert_int_equal(got, q);
}

static void stall_run(const char *policy, struct stall_run *out, struct ps_summary *sum)
{
	const char *const args[] = { "--slow", policy, "--queue", "65536", NULL };
	struct ps_server s;
	tu_reader_t healthy[HEALTHY], stalled;
	uint8_t body[BODY];

	server_start(&s, args);
	/* A small receive buffer, so that the stall reaches the server soon. */
	int sfd = tu_connect_opts(s.addr, 4096, 0);
	assert_true(sfd >= 0);
	ps_subscribe(sfd, "s");
	for (int i = 0; i < HEALTHY; i++) {
		int fd = ps_client(s.addr);
		ps_subscribe(fd, "s");
		tu_reader_init(&healthy[i], fd, FRAME_MAX);
	}
	int pub = ps_client(s.addr);

	/* 4000 x 2000 B: far more than the queue and the socket buffers. */
	out->msgs = 4000;
	for (uint32_t q = 0; q < out->msgs; q++) {
		tu_pattern_fill(body, BODY, 1, q);
		ps_command(pub, 'P', "s", body, BODY);
		if (q % WINDOW == WINDOW - 1 || q == out->msgs - 1)
			for (int i = 0; i < HEALTHY; i++)
				for (uint32_t k = q - q % WINDOW; k <= q; k++)
					expect_numbered(&healthy[i], k);
	}

	/* The stalled one reads now: what it was left, then either more
	 * deliveries (drop) or the end of the stream (disconnect). */
	tu_reader_init(&stalled, sfd, FRAME_MAX);
	out->stalled_got = 0;
	out->stalled_in_order = out->stalled_prefix = true;
	out->stalled_eof = false;
	int64_t last = -1;
	for (;;) {
		const uint8_t *m;
		uint32_t st, q;
		long n = tu_reader_recv(&stalled, &m, 1000);
		if (n == TU_EOF || n == TU_ERROR) {
			out->stalled_eof = true;
			break;
		}
		if (n == TU_TIMEOUT)
			break;
		assert_int_equal(n, 2 + 1 + BODY);
		assert_int_equal(tu_pattern_check(m + 3, BODY, &st, &q), 0);
		out->stalled_in_order &= (int64_t)q > last;
		out->stalled_prefix &= (int64_t)q == last + 1;
		last = q;
		out->stalled_got++;
	}

	/* One more message: the healthy ones get it; a stalled subscriber
	 * that was kept gets it too, now that it reads. */
	tu_pattern_fill(body, BODY, 1, out->msgs);
	ps_command(pub, 'P', "s", body, BODY);
	for (int i = 0; i < HEALTHY; i++) {
		expect_numbered(&healthy[i], out->msgs);
		close(healthy[i].fd);
		tu_reader_free(&healthy[i]);
	}
	if (!out->stalled_eof) {
		expect_numbered(&stalled, out->msgs);
		out->stalled_got++;
	}
	tu_reader_free(&stalled);
	close(sfd);
	close(pub);
	ps_server_stop(&s, sum);
	assert_int_equal(sum->published, out->msgs + 1);
}

static void test_stalled_subscriber_drop(void **state)
{
	struct stall_run r;
	struct ps_summary sum;
	(void)state;

	stall_run("drop", &r, &sum);
	assert_false(r.stalled_eof);          /* kept */
	assert_true(r.stalled_in_order);
	assert_true(r.stalled_got < r.msgs);  /* some were dropped... */
	assert_int_equal(sum.dropped, r.msgs + 1 - r.stalled_got); /* ...and counted */
	assert_int_equal(sum.slow, 0);
	assert_int_equal(sum.discarded, 0);
	assert_int_equal(sum.delivered, (unsigned long long)HEALTHY * (r.msgs + 1) + r.stalled_got);
}

static void test_stalled_subscriber_disconnect(void **state)
{
	struct stall_run r;
	struct ps_summary sum;
	(void)state;

	stall_run("disconnect", &r, &sum);
	assert_true(r.stalled_eof);           /* disconnected... */
	assert_true(r.stalled_prefix);        /* ...after what was queued before */
	assert_true(r.stalled_got < r.msgs);
	assert_int_equal(sum.slow, 1);
	assert_int_equal(sum.dropped, 0);
	/* The disconnect discards its queue at once, counted; what the
	 * socket had taken before still reached it. */
	assert_true(sum.discarded > 0);
	assert_int_equal(sum.delivered - sum.discarded,
			 (unsigned long long)HEALTHY * (r.msgs + 1) + r.stalled_got);
}

/* ------------------------------------------------------------------------
 * Subscribers that leave mid-stream are removed; their ids, stale now, are
 * never delivered to, not even to the connections that come after them.
 */
static void test_subscribers_leave(void **state)
{
	struct ps_server s;
	struct ps_summary sum;
	int subs[5];
	(void)state;

	server_start(&s, NULL);
	for (int i = 0; i < 5; i++) {
		subs[i] = ps_client(s.addr);
		ps_subscribe(subs[i], "l");
	}
	int pub = ps_client(s.addr);
	char body[32];
	for (int q = 0; q < 10; q++) {
		snprintf(body, sizeof body, "m%d", q);
		ps_publish(pub, "l", body);
	}
	for (int i = 0; i < 5; i++)
		for (int q = 0; q < 10; q++) {
			snprintf(body, sizeof body, "m%d", q);
			ps_expect(subs[i], 'M', "l", body);
		}
	/* One leaves cleanly, one with a reset. */
	close(subs[0]);
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(subs[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(subs[1]);

	/* Newcomers may get the departed ones' slots; they did not subscribe
	 * to "l" and must not see its messages. */
	int fresh[4];
	for (int i = 0; i < 4; i++)
		fresh[i] = ps_client(s.addr);
	for (int q = 10; q < 20; q++) {
		snprintf(body, sizeof body, "m%d", q);
		ps_publish(pub, "l", body);
	}
	for (int i = 2; i < 5; i++)
		for (int q = 10; q < 20; q++) {
			snprintf(body, sizeof body, "m%d", q);
			ps_expect(subs[i], 'M', "l", body);
		}
	for (int i = 0; i < 4; i++) {
		ps_subscribe(fresh[i], "barrier");
		ps_publish(pub, "barrier", "b");
		ps_expect(fresh[i], 'M', "barrier", "b"); /* and nothing of "l" first */
	}

	for (int i = 2; i < 5; i++)
		close(subs[i]);
	for (int i = 0; i < 4; i++)
		close(fresh[i]);
	close(pub);
	ps_server_stop(&s, &sum);
	assert_int_equal(sum.published, 24);
	/* Sends to the two that left either found them gone (stale) or were
	 * accepted before the server noticed; never more than 20 of them. */
	assert_true(sum.delivered >= 50 + 30 + 1 + 2 + 3 + 4 &&
		    sum.delivered <= 50 + 30 + 20 + 1 + 2 + 3 + 4);
	assert_true(sum.stale <= 20);
}

/* The tests that depend on order, with more threads than CPUs. */
static void test_acks_and_unsubscribe_4_threads(void **state)
{
	g_threads = "4";
	test_acks_and_unsubscribe(state);
}

static void test_fanout_1000_4_threads(void **state)
{
	g_threads = "4";
	test_fanout_1000(state);
}

static void test_subscribers_leave_4_threads(void **state)
{
	g_threads = "4";
	test_subscribers_leave(state);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_acks_and_unsubscribe),
		cmocka_unit_test(test_malformed_commands),
		cmocka_unit_test(test_fanout_1000),
		cmocka_unit_test(test_stalled_subscriber_drop),
		cmocka_unit_test(test_stalled_subscriber_disconnect),
		cmocka_unit_test(test_subscribers_leave),
		cmocka_unit_test(test_identify_and_direct),
		cmocka_unit_test(test_acks_and_unsubscribe_4_threads),
		cmocka_unit_test(test_fanout_1000_4_threads),
		cmocka_unit_test(test_subscribers_leave_4_threads),
	};
	signal(SIGPIPE, SIG_IGN);
	return TU_RUN("pubsub", tests, argc, argv);
}
