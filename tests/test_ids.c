/*
 * Connection ids: text form, node bits, and stale-safety — an id that is 0,
 * made up, closed, whose slot was reused, or from another instance is
 * refused with BS_ESTALE at once and never reaches another connection.
 * Listener ids likewise: a closed listener's id never closes or names the
 * listener that took its place.
 */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 10000

/* Every way of sending to id fails with BS_ESTALE; returns how many calls
 * were made that count as sends. */
static unsigned expect_all_stale(bs_t *bs, bs_id_t id)
{
	static const char text[] = "must never arrive";
	char idbuf[BS_ID_STRLEN];

	bs_id_format(id, idbuf);
	int rc = bs_send_data(bs, id, text, sizeof(text));
	TU_CHECK(rc == BS_ESTALE, "bs_send_data(%s) = %s", idbuf, bs_err_name(rc));
	rc = bs_send(bs, id, text, sizeof(text), NULL, 0, 0);
	TU_CHECK(rc == BS_ESTALE, "bs_send(%s) = %s", idbuf, bs_err_name(rc));
	/* even a caller willing to wait is told at once */
	uint64_t t0 = tu_now_ms();
	rc = bs_send(bs, id, text, sizeof(text), NULL, 0, 5000);
	TU_CHECK(rc == BS_ESTALE, "bs_send(%s, 5 s) = %s", idbuf, bs_err_name(rc));
	TU_CHECK(tu_now_ms() - t0 < 1000, "bs_send to a stale id waited");

	void *data;
	bs_msg_t *msg = bs_msg_alloc(sizeof(text), &data);
	TU_CHECK(msg != NULL, "bs_msg_alloc");
	if (msg) {
		memcpy(data, text, sizeof(text));
		rc = bs_send_msg(bs, id, msg, data, sizeof(text));
		TU_CHECK(rc == BS_ESTALE, "bs_send_msg(%s) = %s", idbuf, bs_err_name(rc));
		/* on error the caller still owns msg */
		bs_msg_release(msg);
	}
	rc = bs_flush(bs, id);
	TU_CHECK(rc == BS_ESTALE, "bs_flush(%s) = %s", idbuf, bs_err_name(rc));
	rc = bs_send_close(bs, id);
	TU_CHECK(rc == BS_ESTALE, "bs_send_close(%s) = %s", idbuf, bs_err_name(rc));
	return 4;
}

/* Each client first reads exactly the message the test sends to its own
 * id now: nothing sent to a stale id got in before it. */
static void expect_routing_intact(bs_t *bs, const int *fds, const bs_id_t *ids,
				  int n)
{
	for (int i = 0; i < n; i++) {
		uint8_t msg[64];
		size_t len = tu_pattern_len(7, (uint32_t)i, 16, sizeof(msg));
		tu_pattern_fill(msg, len, 7, (uint32_t)i);
		int rc = bs_send_data(bs, ids[i], msg, len);
		TU_CHECK(rc == 0, "send to live id %d: %s", i, bs_err_name(rc));
	}
	for (int i = 0; i < n; i++) {
		uint8_t buf[256];
		uint32_t s, q;
		long len = tu_recv_frame(fds[i], buf, sizeof(buf), WAIT_MS);
		TU_CHECK(len > 0 && tu_pattern_check(buf, (size_t)len, &s, &q) == 0 &&
				 s == 7 && q == (uint32_t)i,
			 "client %d read the wrong first message (len %ld)", i, len);
	}
}

static void test_format_parse_round_trip(void **state)
{
	(void)state;
	uint64_t rnd = 42;
	bs_id_t samples[64] = { 1, 0xffffffffffffffffull, 0x0001000000000001ull,
				0x00000000ff000001ull, 0x123456789abcdef0ull };
	for (size_t i = 5; i < 64; i++)
		samples[i] = tu_rand(&rnd) | 1;

	for (size_t i = 0; i < 64; i++) {
		char buf[BS_ID_STRLEN];
		memset(buf, 'x', sizeof(buf));
		assert_ptr_equal(bs_id_format(samples[i], buf), buf);
		assert_int_equal(strlen(buf), 16);
		for (int k = 0; k < 16; k++)
			assert_true((buf[k] >= '0' && buf[k] <= '9') ||
				    (buf[k] >= 'a' && buf[k] <= 'f'));
		char want[32];
		snprintf(want, sizeof(want), "%016llx", (unsigned long long)samples[i]);
		assert_string_equal(buf, want);

		bs_id_t back = 0;
		assert_int_equal(bs_id_parse(buf, &back), 0);
		assert_int_equal(back, samples[i]);
	}

	/* 1 to 16 digits are accepted */
	bs_id_t id = 0;
	assert_int_equal(bs_id_parse("1", &id), 0);
	assert_int_equal(id, 1);
	assert_int_equal(bs_id_parse("abc", &id), 0);
	assert_int_equal(id, 0xabc);

	/* anything else is not an id */
	static const char *const bad[] = { "", "12345678901234567", "xyz", "12g4",
					   "-1", " 1", "1 ", "0x10" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		id = 77;
		assert_int_equal(bs_id_parse(bad[i], &id), BS_EINVAL);
	}
}

static void test_node_bits(void **state)
{
	(void)state;
	bs_config_t scfg, ccfg;
	bs_t *srv, *cli;
	uint32_t lis;
	char addr[128];

	tu_config(&scfg);
	scfg.node = 0x1234;
	assert_int_equal(tu_server(&scfg, NULL, &srv, &lis, addr, sizeof(addr)), 0);
	tu_config(&ccfg);
	ccfg.node = 0xabc;
	assert_int_equal(bs_create(&ccfg, &cli), 0);

	/* accepted from a plain socket */
	int fd;
	bs_id_t plain_id;
	assert_int_equal(tu_open_clients(srv, addr, lis, 1, &fd, &plain_id, WAIT_MS), 0);
	assert_int_equal(bs_id_node(plain_id), 0x1234);

	/* dialled by another instance, and accepted here */
	bs_id_t dial_id = 0;
	assert_int_equal(bs_dial(cli, addr, NULL, &dial_id), 0);
	assert_int_not_equal(dial_id, 0);
	assert_int_equal(bs_id_node(dial_id), 0xabc);

	bs_open_event_t ev;
	assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
	assert_int_equal(ev.id, dial_id);
	assert_true(ev.dialled);
	assert_int_equal(bs_recv_open(srv, &ev, WAIT_MS), 0);
	assert_false(ev.dialled);
	assert_int_equal(bs_id_node(ev.id), 0x1234);
	assert_int_not_equal(ev.id, plain_id);

	/* the node survives the text form */
	char buf[BS_ID_STRLEN];
	bs_id_t back;
	assert_int_equal(bs_id_parse(bs_id_format(ev.id, buf), &back), 0);
	assert_int_equal(bs_id_node(back), 0x1234);

	close(fd);
	bs_destroy(cli);
	bs_destroy(srv);
}

static void test_zero_and_made_up_ids_are_stale(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fds[2];
	bs_id_t ids[2];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 2, fds, ids, WAIT_MS), 0);

	unsigned sends = expect_all_stale(bs, 0);

	/* made-up ids, including ones that differ from a live id only in
	 * the bits above the slot, or only in the node */
	uint64_t rnd = 0x5eed;
	for (int i = 0; i < 1000; i++) {
		bs_id_t id = tu_rand(&rnd);
		if (i < 24)
			id = ids[i & 1] ^ (1ull << (24 + i));
		else if (i < 40)
			id = ids[i & 1] ^ (1ull << (48 + (i - 24)));
		if (id == 0 || id == ids[0] || id == ids[1])
			continue;
		sends += expect_all_stale(bs, id);
	}
	assert_int_equal(tu_failures(), 0);
	bs_stats_t st = tu_stats(bs);
	assert_true(st.sends_stale >= sends);

	/* the live connections got nothing from all that */
	expect_routing_intact(bs, fds, ids, 2);
	assert_int_equal(tu_failures(), 0);

	close(fds[0]);
	close(fds[1]);
	bs_destroy(bs);
}

static void test_closed_id_is_stale(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fds[2];
	bs_id_t ids[2];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 2, fds, ids, WAIT_MS), 0);

	/* closed by the peer */
	close(fds[0]);
	assert_int_equal(tu_expect_close(bs, ids[0], BS_EOF, true, NULL, WAIT_MS), 0);
	expect_all_stale(bs, ids[0]);

	/* closed locally */
	assert_int_equal(bs_send_close(bs, ids[1]), 0);
	expect_all_stale(bs, ids[1]);
	assert_int_equal(tu_wait_eof(fds[1], WAIT_MS), 1);
	assert_int_equal(tu_expect_close(bs, ids[1], BS_ECLOSED, true, NULL, WAIT_MS), 0);
	expect_all_stale(bs, ids[1]);
	assert_int_equal(tu_failures(), 0);

	close(fds[1]);
	bs_destroy(bs);
}

/* Closes n clients from their side and collects their n close events. */
static void close_all(bs_t *bs, int *fds, const bs_id_t *ids, int n)
{
	tu_idmap_t live;
	assert_int_equal(tu_idmap_init(&live, (size_t)n), 0);
	for (int i = 0; i < n; i++) {
		tu_idmap_add(&live, ids[i], NULL);
		close(fds[i]);
	}
	bool seen[1024] = { false };
	assert_true(n <= 1024);
	for (int i = 0; i < n; i++) {
		bs_close_event_t ev;
		assert_int_equal(bs_recv_close(bs, &ev, WAIT_MS), 0);
		long k = tu_idmap_find(&live, ev.id);
		assert_true(k >= 0);
		assert_false(seen[k]);
		seen[k] = true;
		assert_int_equal(ev.reason, BS_EOF);
	}
	tu_idmap_free(&live);
}

static void test_stale_after_slot_reuse(void **state)
{
	(void)state;
	/* a small table, so that new connections must take the slots of
	 * closed ones */
	enum { LIMIT = 64, N = 48, ROUNDS = 5 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	static bs_id_t old_ids[N * ROUNDS];
	int nold = 0, reused_slots = 0;

	tu_config(&cfg);
	cfg.io_threads = 1;
	cfg.max_connections = LIMIT;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);

	for (int round = 0; round < ROUNDS; round++) {
		int fds[LIMIT];
		bs_id_t ids[LIMIT];
		int n = round == ROUNDS - 1 ? LIMIT : N;

		assert_int_equal(tu_open_clients(bs, addr, lis, n, fds, ids, WAIT_MS), 0);
		for (int i = 0; i < n; i++) {
			for (int k = 0; k < nold; k++) {
				assert_int_not_equal(ids[i], old_ids[k]);
				/* informative only: ids are opaque */
				if ((ids[i] & 0xffffff) == (old_ids[k] & 0xffffff))
					reused_slots++;
			}
		}
		/* every id that ever closed stays dead */
		for (int k = 0; k < nold; k++)
			expect_all_stale(bs, old_ids[k]);
		assert_int_equal(tu_failures(), 0);

		/* and nothing sent to them reached the new connections */
		for (int i = 0; i < n; i++)
			assert_false(tu_readable(fds[i], i == 0 ? 100 : 0));
		expect_routing_intact(bs, fds, ids, n);
		assert_int_equal(tu_failures(), 0);

		if (round == ROUNDS - 1) {
			for (int i = 0; i < n; i++)
				close(fds[i]);
			break;
		}
		close_all(bs, fds, ids, n);
		memcpy(old_ids + nold, ids, sizeof(bs_id_t) * (size_t)n);
		nold += n;
	}
	printf("      %d (new id, old id) pairs share a slot number\n", reused_slots);
	bs_destroy(bs);
}

static void test_id_of_other_instance_is_stale(void **state)
{
	(void)state;
	enum { N = 8 };
	bs_config_t cfg;
	bs_t *a, *b;
	uint32_t la, lb;
	char aaddr[128], baddr[128];
	int afds[N], bfds[N];
	bs_id_t aids[N], bids[N];

	/* same configuration, same node: nothing but the instance differs */
	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &a, &la, aaddr, sizeof(aaddr)), 0);
	assert_int_equal(tu_server(&cfg, NULL, &b, &lb, baddr, sizeof(baddr)), 0);
	assert_int_equal(tu_open_clients(a, aaddr, la, N, afds, aids, WAIT_MS), 0);
	assert_int_equal(tu_open_clients(b, baddr, lb, N, bfds, bids, WAIT_MS), 0);

	for (int i = 0; i < N; i++) {
		for (int k = 0; k < N; k++)
			assert_int_not_equal(aids[i], bids[k]);
		expect_all_stale(b, aids[i]);
		expect_all_stale(a, bids[i]);
	}
	assert_int_equal(tu_failures(), 0);
	for (int i = 0; i < N; i++) {
		assert_false(tu_readable(afds[i], 0));
		assert_false(tu_readable(bfds[i], 0));
	}
	expect_routing_intact(a, afds, aids, N);
	expect_routing_intact(b, bfds, bids, N);
	assert_int_equal(tu_failures(), 0);

	/* an instance that has gone, like an earlier run of the process */
	for (int i = 0; i < N; i++) {
		close(afds[i]);
		close(bfds[i]);
	}
	bs_destroy(a);
	bs_t *c;
	uint32_t lc;
	char caddr[128];
	int cfds[N];
	bs_id_t cids[N];
	assert_int_equal(tu_server(&cfg, NULL, &c, &lc, caddr, sizeof(caddr)), 0);
	assert_int_equal(tu_open_clients(c, caddr, lc, N, cfds, cids, WAIT_MS), 0);
	for (int i = 0; i < N; i++) {
		for (int k = 0; k < N; k++)
			assert_int_not_equal(cids[i], aids[k]);
		expect_all_stale(c, aids[i]);
	}
	assert_int_equal(tu_failures(), 0);
	expect_routing_intact(c, cfds, cids, N);
	assert_int_equal(tu_failures(), 0);

	for (int i = 0; i < N; i++)
		close(cfds[i]);
	bs_destroy(c);
	bs_destroy(b);
}

/* ------------------------------------------------------------------------
 * Listener ids
 */

/* A plain client connects to addr; the open event names listener lis. */
static void expect_accepted_by(bs_t *bs, const char *addr, uint32_t lis)
{
	bs_open_event_t ev;
	int fd = tu_connect(addr);

	assert_true(fd >= 0);
	assert_int_equal(bs_recv_open(bs, &ev, WAIT_MS), 0);
	assert_false(ev.dialled);
	assert_int_equal(ev.listener, lis);
	close(fd);
	assert_int_equal(tu_expect_close(bs, ev.id, BS_EOF, true, NULL, WAIT_MS), 0);
}

/*
 * One listener closed and opened again many times (so the same slot is
 * reused every time): each new id is new, and every earlier id is refused
 * with BS_ESTALE by bs_listen_close and bs_listener_addr without touching
 * the listener that is open now.
 */
static void test_listener_id_stale_after_reuse(void **state)
{
	(void)state;
	enum { ROUNDS = 500 };
	static uint32_t ids[ROUNDS];
	bs_config_t cfg;
	bs_t *bs, *other;
	char addr[BS_ADDR_STRLEN];
	uint32_t other_lis;

	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &bs), 0);
	for (int i = 0; i < ROUNDS; i++) {
		assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, &ids[i]), 0);
		assert_int_not_equal(ids[i], 0);
		for (int k = 0; k < i; k++) {
			if (ids[k] == ids[i])
				fail_msg("round %d: id %x was handed out in round %d",
					 i, ids[i], k);
			assert_int_equal(bs_listen_close(bs, ids[k]), BS_ESTALE);
			assert_int_equal(bs_listener_addr(bs, ids[k], addr, sizeof(addr)),
					 BS_ESTALE);
		}
		/* the open one survived all of that and still accepts */
		assert_int_equal(bs_listener_addr(bs, ids[i], addr, sizeof(addr)), 0);
		if (i % 50 == 0 || i == ROUNDS - 1)
			expect_accepted_by(bs, addr, ids[i]);
		assert_int_equal(bs_listen_close(bs, ids[i]), 0);
		assert_int_equal(bs_listen_close(bs, ids[i]), BS_ESTALE);
	}
	TU_ASSERT_STAT(bs, conns_accepted, ROUNDS / 50 + 1);

	/* another instance's listener ids mean nothing here, and back */
	assert_int_equal(bs_create(&cfg, &other), 0);
	assert_int_equal(bs_listen(other, "127.0.0.1:0", NULL, &other_lis), 0);
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, &ids[0]), 0);
	assert_int_not_equal(other_lis, ids[0]);
	assert_int_equal(bs_listen_close(bs, other_lis), BS_ESTALE);
	assert_int_equal(bs_listen_close(other, ids[0]), BS_ESTALE);
	assert_int_equal(bs_listener_addr(other, other_lis, addr, sizeof(addr)), 0);
	expect_accepted_by(other, addr, other_lis);
	assert_int_equal(bs_listener_addr(bs, ids[0], addr, sizeof(addr)), 0);
	expect_accepted_by(bs, addr, ids[0]);
	bs_destroy(other);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_parse_round_trip),
		cmocka_unit_test(test_node_bits),
		cmocka_unit_test(test_zero_and_made_up_ids_are_stale),
		cmocka_unit_test(test_closed_id_is_stale),
		cmocka_unit_test(test_stale_after_slot_reuse),
		cmocka_unit_test(test_id_of_other_instance_is_stale),
		cmocka_unit_test(test_listener_id_stale_after_reuse),
	};
	return TU_RUN("ids", tests, argc, argv);
}
