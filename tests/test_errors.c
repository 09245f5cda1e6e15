/*
 * Errors: codes and their names, oversize messages in both directions, bad
 * addresses, the connection limit, and running out of file descriptors
 * while clients connect.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define WAIT_MS 10000

static void test_error_names(void **state)
{
	(void)state;
#define CHECK_ERR_(name, code, text)                              \
	assert_int_equal(BS_##name, code);                        \
	assert_string_equal(bs_err_name(BS_##name), #name);       \
	assert_string_equal(bs_strerror(BS_##name), text);
	BS_ERRNO_MAP(CHECK_ERR_)
#undef CHECK_ERR_
	assert_string_equal(bs_strerror(-12345), "unknown error");
	assert_string_equal(bs_strerror(12345), "unknown error");
	assert_non_null(bs_err_name(-12345));
}

/* ------------------------------------------------------------------------
 * Oversize messages
 */
enum { MAX = 1024 };

static void test_oversize_send(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	static uint8_t big[MAX + 1], back[MAX + 1];
	int fd;
	bs_id_t id;

	tu_config(&cfg);
	cfg.framing.max_message_size = MAX;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &fd, &id, WAIT_MS), 0);

	tu_pattern_fill(big, sizeof(big), 9, 1);
	assert_int_equal(bs_send_data(bs, id, big, MAX + 1), BS_EMSGSIZE);
	assert_int_equal(bs_send(bs, id, big, MAX + 1, NULL, 0, 1000), BS_EMSGSIZE);
	void *data;
	bs_msg_t *msg = bs_msg_alloc(MAX + 1, &data);
	assert_non_null(msg);
	memcpy(data, big, MAX + 1);
	assert_int_equal(bs_send_msg(bs, id, msg, data, MAX + 1), BS_EMSGSIZE);
	bs_msg_release(msg); /* still ours after the error */

	/* nothing went out; the connection is fine and takes the maximum */
	bs_stats_t st = tu_stats(bs);
	assert_int_equal(st.msgs_out, 0);
	assert_int_equal(st.bytes_out, 0);
	assert_false(tu_readable(fd, 100));
	tu_pattern_fill(big, MAX, 9, 2);
	assert_int_equal(bs_send_data(bs, id, big, MAX), 0);
	assert_int_equal(tu_recv_frame(fd, back, sizeof(back), WAIT_MS), MAX);
	assert_memory_equal(back, big, MAX);
	assert_false(tu_readable(fd, 100));
	TU_ASSERT_STAT(bs, msgs_out, 1);

	close(fd);
	bs_destroy(bs);
}

static void test_oversize_frame_closes_only_that_connection(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fds[2];
	bs_id_t ids[2];
	static uint8_t msg[MAX], back[MAX];

	tu_config(&cfg);
	cfg.framing.max_message_size = MAX;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 2, fds, ids, WAIT_MS), 0);

	/* a good message, then a header announcing one byte too many */
	static const char good[] = "fine";
	assert_int_equal(tu_send_frame(fds[0], good, sizeof(good)), 0);
	uint8_t bad[4 + 16];
	tu_frame_header(bad, MAX + 1);
	memset(bad + 4, 0, 16);
	assert_int_equal(tu_write_all(fds[0], bad, sizeof(bad)), 0);

	assert_int_equal(tu_expect_data(bs, ids[0], good, sizeof(good), WAIT_MS), 0);
	assert_int_equal(tu_expect_close(bs, ids[0], BS_EMSGSIZE, false, NULL, WAIT_MS), 0);
	TU_ASSERT_STAT(bs, frames_rejected, 1);
	assert_int_equal(tu_wait_eof(fds[0], WAIT_MS), 1);
	assert_int_equal(bs_send_data(bs, ids[0], good, sizeof(good)), BS_ESTALE);

	/* the other connection carries the largest message both ways */
	tu_pattern_fill(msg, MAX, 4, 0);
	assert_int_equal(tu_send_frame(fds[1], msg, MAX), 0);
	assert_int_equal(tu_expect_data(bs, ids[1], msg, MAX, WAIT_MS), 0);
	assert_int_equal(bs_send_data(bs, ids[1], msg, MAX), 0);
	assert_int_equal(tu_recv_frame(fds[1], back, sizeof(back), WAIT_MS), MAX);
	assert_memory_equal(back, msg, MAX);
	TU_ASSERT_STAT(bs, frames_rejected, 1);
	TU_ASSERT_STAT(bs, conns_open, 1);

	close(fds[0]);
	close(fds[1]);
	assert_int_equal(tu_expect_close(bs, ids[1], BS_EOF, true, NULL, WAIT_MS), 0);
	bs_destroy(bs);
}

/* ------------------------------------------------------------------------
 * Addresses and limits
 */
static void test_bad_addresses(void **state)
{
	(void)state;
	bs_t *bs;
	uint32_t lis = 77, lis2;
	bs_id_t id = 77;
	char addr[128], longpath[300];

	assert_int_equal(bs_create(NULL, &bs), 0);
	memset(longpath, 'a', sizeof(longpath));
	memcpy(longpath, "unix:/tmp/", 10);
	longpath[sizeof(longpath) - 1] = '\0';

	static const char *const bad[] = { "", "nonsense", "127.0.0.1", "127.0.0.1:",
					   "127.0.0.1:99999", "127.0.0.1:-1",
					   "[::1", "unix:" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = bs_listen(bs, bad[i], NULL, &lis);
		if (rc != BS_EADDR)
			fail_msg("bs_listen(\"%s\") = %s", bad[i], bs_err_name(rc));
		rc = bs_dial(bs, bad[i], NULL, &id);
		if (rc != BS_EADDR)
			fail_msg("bs_dial(\"%s\") = %s", bad[i], bs_err_name(rc));
	}
	assert_int_equal(bs_listen(bs, longpath, NULL, &lis), BS_EADDR);
	assert_int_equal(bs_dial(bs, longpath, NULL, &id), BS_EADDR);
	assert_int_equal(lis, 77);
	assert_int_equal(id, 77);

	/* a port in use */
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, &lis), 0);
	assert_int_equal(bs_listener_addr(bs, lis, addr, sizeof(addr)), 0);
	assert_int_equal(bs_listen(bs, addr, NULL, &lis2), BS_ESYS);

	/* listener handles */
	assert_int_equal(bs_listener_addr(bs, lis, addr, 5), BS_EMSGSIZE);
	assert_int_equal(bs_listener_addr(bs, lis + 1000, addr, sizeof(addr)), BS_ESTALE);
	assert_int_equal(bs_listen_close(bs, lis + 1000), BS_ESTALE);
	assert_int_equal(bs_listen_close(bs, lis), 0);
	assert_int_equal(bs_listener_addr(bs, lis, addr, sizeof(addr)), BS_ESTALE);

	/* failed calls left nothing behind */
	bs_stats_t st = tu_stats(bs);
	assert_int_equal(st.conns_open, 0);
	bs_close_event_t ev;
	assert_int_equal(bs_recv_close(bs, &ev, 0), BS_EAGAIN);
	bs_destroy(bs);
}

static void test_dial_limit(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *srv, *cli;
	uint32_t lis;
	char addr[128];
	bs_id_t ids[3];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &srv, &lis, addr, sizeof(addr)), 0);
	cfg.max_connections = 2;
	assert_int_equal(bs_create(&cfg, &cli), 0);

	assert_int_equal(bs_dial(cli, addr, NULL, &ids[0]), 0);
	assert_int_equal(bs_dial(cli, addr, NULL, &ids[1]), 0);
	ids[2] = 77;
	assert_int_equal(bs_dial(cli, addr, NULL, &ids[2]), BS_ELIMIT);
	assert_int_equal(ids[2], 77);
	for (int i = 0; i < 2; i++) {
		bs_open_event_t ev;
		assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
		assert_true(ev.id == ids[0] || ev.id == ids[1]);
	}

	/* a connection counts until its close event has been taken */
	assert_int_equal(bs_send_close(cli, ids[0]), 0);
	assert_int_equal(tu_expect_close(cli, ids[0], BS_ECLOSED, true, NULL, WAIT_MS), 0);
	assert_true(TU_WAIT_FOR(bs_dial(cli, addr, NULL, &ids[2]) == 0, 2000));
	bs_open_event_t ev;
	assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
	assert_int_equal(ev.id, ids[2]);

	bs_destroy(cli);
	bs_destroy(srv);
}

/* ------------------------------------------------------------------------
 * Out of file descriptors
 */
static void test_accept_survives_emfile(void **state)
{
	(void)state;
	enum { PENDING = 4, FILLERS_MAX = 4096 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int efd, pending[PENDING];
	bs_id_t eid;
	static int fillers[FILLERS_MAX];
	int nfill = 0;
	struct rlimit old, low;

	tu_config(&cfg);
	cfg.io_threads = 1;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(tu_open_clients(bs, addr, lis, 1, &efd, &eid, WAIT_MS), 0);
	for (int i = 0; i < PENDING; i++) {
		pending[i] = tu_socket_for(addr);
		assert_true(pending[i] >= 0);
	}

	/* no descriptor left below the limit */
	int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(base >= 0);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	int probe = dup(base);
	assert_true(probe >= 0);
	close(probe);
	low = old;
	low.rlim_cur = (rlim_t)probe + 16;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	int fd;
	while (nfill < FILLERS_MAX && (fd = dup(base)) >= 0)
		fillers[nfill++] = fd;
	int full_errno = errno;

	/* clients connect; the kernel completes them; accept fails */
	int connected = 0;
	for (int i = 0; i < PENDING; i++)
		connected += tu_connect_fd(pending[i], addr) == 0;
	bool errors_seen = TU_WAIT_FOR(tu_stats(bs).accept_errors > 0, WAIT_MS);

	/* the library keeps working meanwhile */
	static const char ping[] = "still here";
	char buf[64];
	int send_rc = bs_send_data(bs, eid, ping, sizeof(ping));
	long got = tu_recv_frame(efd, buf, sizeof(buf), WAIT_MS);
	int echo_rc = tu_send_frame(efd, ping, sizeof(ping));
	int data_rc = tu_expect_data(bs, eid, ping, sizeof(ping), WAIT_MS);
	bs_open_event_t oev;
	int open_rc = bs_recv_open(bs, &oev, 0);
	uint64_t errors = tu_stats(bs).accept_errors;

	/* room again: first give the descriptors back, then the limit */
	for (int i = 0; i < nfill; i++)
		close(fillers[i]);
	int restored = setrlimit(RLIMIT_NOFILE, &old);
	close(base);

	printf("      %d fillers (%s), %llu accept errors while full\n", nfill,
	       strerror(full_errno), (unsigned long long)errors);
	assert_int_equal(restored, 0);
	assert_int_equal(full_errno, EMFILE);
	assert_int_equal(connected, PENDING);
	assert_true(errors_seen);
	assert_int_equal(send_rc, 0);
	assert_int_equal(got, (long)sizeof(ping));
	assert_memory_equal(buf, ping, sizeof(ping));
	assert_int_equal(echo_rc, 0);
	assert_int_equal(data_rc, 0);
	assert_int_equal(open_rc, BS_EAGAIN);

	/* the clients that waited are accepted now and work */
	bs_id_t ids[PENDING] = { 0 };
	for (int n = 0; n < PENDING; n++) {
		assert_int_equal(bs_recv_open(bs, &oev, WAIT_MS), 0);
		int k = -1;
		for (int i = 0; i < PENDING; i++)
			if (tu_local_port(pending[i]) == tu_sockaddr_port(&oev.peer))
				k = i;
		assert_true(k >= 0);
		assert_int_equal(ids[k], 0);
		ids[k] = oev.id;
	}
	for (int i = 0; i < PENDING; i++) {
		uint8_t m[64], back[64];
		size_t len = tu_pattern_len(8, (uint32_t)i, 8, sizeof(m));
		tu_pattern_fill(m, len, 8, (uint32_t)i);
		assert_int_equal(tu_send_frame(pending[i], m, len), 0);
		assert_int_equal(tu_expect_data(bs, ids[i], m, len, WAIT_MS), 0);
		assert_int_equal(bs_send_data(bs, ids[i], m, len), 0);
		assert_int_equal(tu_recv_frame(pending[i], back, sizeof(back), WAIT_MS), (long)len);
		assert_memory_equal(back, m, len);
	}
	TU_ASSERT_STAT(bs, conns_accepted, PENDING + 1);

	for (int i = 0; i < PENDING; i++)
		close(pending[i]);
	close(efd);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_names),
		cmocka_unit_test(test_oversize_send),
		cmocka_unit_test(test_oversize_frame_closes_only_that_connection),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_dial_limit),
		cmocka_unit_test(test_accept_survives_emfile),
	};
	return TU_RUN("errors", tests, argc, argv);
}
