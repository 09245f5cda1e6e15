/*
 * Return codes: each code the header documents for bs_create, bs_id_parse,
 * bs_framing_check, the frame codecs, bs_listen, bs_listener_addr and
 * bs_listen_close, provoked on purpose, and what a failed call leaves
 * behind (nothing).
 *
 * Failures the kernel rarely gives are injected: this program is linked
 * with -Wl,--wrap=calloc,--wrap=epoll_ctl (see TEST_LDFLAGS_test_api_codes
 * in the Makefile), so the library's calls reach the wrappers below, which
 * fail on request — only on the thread that asked, so the I/O threads run
 * untouched.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAIT_MS 10000

/* ---- injected failures ------------------------------------------------- */

/* The n-th calloc from now on this thread fails (0: none). */
static _Thread_local int calloc_fail_in;
/* The n-th EPOLL_CTL_ADD of a listening socket (the only EPOLLEXCLUSIVE
 * registration) from now on this thread fails with ENOSPC. */
static _Thread_local int listen_watch_fail_in;

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);

void *__wrap_calloc(size_t n, size_t size)
{
	if (calloc_fail_in > 0 && --calloc_fail_in == 0) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(n, size);
}

int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	if (listen_watch_fail_in > 0 && op == EPOLL_CTL_ADD && ev != NULL &&
	    (ev->events & EPOLLEXCLUSIVE) && --listen_watch_fail_in == 0) {
		errno = ENOSPC;
		return -1;
	}
	return __real_epoll_ctl(epfd, op, fd, ev);
}

/* ---- helpers ----------------------------------------------------------- */

static bs_framing_t framing_of(bs_framing_kind_t kind, size_t max)
{
	bs_framing_t f;

	bs_framing_default(&f);
	f.kind = kind;
	f.max_message_size = max;
	return f;
}

/* No file descriptor can be made until restore_fds: the soft limit drops
 * to the lowest free descriptor number. */
static struct rlimit saved_nofile;

static void exhaust_fds(void)
{
	struct rlimit low;
	int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);

	assert_true(probe >= 0);
	close(probe);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
	low = saved_nofile;
	low.rlim_cur = (rlim_t)probe;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
}

static void restore_fds(void)
{
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
}

/* Which of the descriptors 0..2 are open: a failed call must close none
 * of the process's own. */
static unsigned std_fds_open(void)
{
	unsigned open_fds = 0;

	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			open_fds |= 1u << fd;
	return open_fds;
}

/* ---- bs_create ---------------------------------------------------------- */

static void test_create_codes(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs = (bs_t *)&cfg, *const untouched = (bs_t *)&cfg;
	unsigned fds_before = std_fds_open();
	int failures = 0;

	/* BS_EINVAL */
	assert_int_equal(bs_create(NULL, NULL), BS_EINVAL);
	bs_config_init(&cfg);
	cfg.framing.width = 9;
	assert_int_equal(bs_create(&cfg, &bs), BS_EINVAL);
	bs_config_init(&cfg);
	cfg.framing.kind = (bs_framing_kind_t)99;
	assert_int_equal(bs_create(&cfg, &bs), BS_EINVAL);
	bs_config_init(&cfg);
	cfg.max_connections = 1u << 24;
	assert_int_equal(bs_create(&cfg, &bs), BS_EINVAL);
	bs_config_init(&cfg);
	cfg.slow_policy = 7;
	assert_int_equal(bs_create(&cfg, &bs), BS_EINVAL);
	assert_ptr_equal(bs, untouched);

	/* BS_ENOMEM: each allocation of the calling thread fails in turn
	 * until there are no more; every failure frees what came before
	 * (the leak checker of the sanitizer build sees the rest). One I/O
	 * thread: the failure of an earlier thread's setup must not reach
	 * threads that were never set up. */
	bs_config_init(&cfg);
	cfg.io_threads = 1;
	cfg.max_connections = 1024;
	for (int n = 1; n < 100; n++) {
		calloc_fail_in = n;
		int rc = bs_create(&cfg, &bs);
		bool failed_one = calloc_fail_in == 0;

		calloc_fail_in = 0;
		if (!failed_one) {
			assert_int_equal(rc, 0);
			bs_destroy(bs);
			bs = untouched;
			break;
		}
		if (rc != BS_ENOMEM)
			fail_msg("allocation %d failed: bs_create = %s", n, bs_err_name(rc));
		assert_ptr_equal(bs, untouched);
		failures++;
	}
	assert_true(failures >= 2);
	assert_int_equal(std_fds_open(), fds_before);

	/* BS_ESYS: no descriptor for the epoll set */
	exhaust_fds();
	int rc = bs_create(&cfg, &bs);
	restore_fds();
	assert_int_equal(rc, BS_ESYS);
	assert_ptr_equal(bs, untouched);
	assert_int_equal(std_fds_open(), fds_before);

	/* and with room again, it works */
	assert_int_equal(bs_create(&cfg, &bs), 0);
	bs_destroy(bs);
}

/* ---- ids and framings --------------------------------------------------- */

static void test_id_parse_codes(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "x", "12g4", " 1", "1 ", "-1", "0x10", "12345678901234567",
	};
	bs_id_t id = 77;

	assert_int_equal(bs_id_parse(NULL, &id), BS_EINVAL);
	assert_int_equal(bs_id_parse("1", NULL), BS_EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = bs_id_parse(bad[i], &id);
		if (rc != BS_EINVAL)
			fail_msg("bs_id_parse(\"%s\") = %s", bad[i], bs_err_name(rc));
	}
	assert_int_equal(id, 77);
	assert_int_equal(bs_id_parse("1234567890abcdef", &id), 0);
	assert_true(id == 0x1234567890abcdefull);
	assert_int_equal(bs_id_parse("FFFFFFFFFFFFFFFF", &id), 0);
	assert_true(id == UINT64_MAX);
}

static void test_framing_check_codes(void **state)
{
	(void)state;
	bs_framing_t f;

	assert_int_equal(bs_framing_check(NULL), BS_EINVAL);
	for (unsigned w = 0; w <= 9; w++) {
		f = framing_of(BS_FRAMING_FIXED, 0);
		f.width = (uint8_t)w;
		assert_int_equal(bs_framing_check(&f), w >= 1 && w <= 8 ? 0 : BS_EINVAL);
	}
	f = framing_of((bs_framing_kind_t)4, 0);
	assert_int_equal(bs_framing_check(&f), BS_EINVAL);
	for (int k = BS_FRAMING_FIXED; k <= BS_FRAMING_DELIM; k++) {
		f = framing_of((bs_framing_kind_t)k, SIZE_MAX - 17);
		assert_int_equal(bs_framing_check(&f), 0);
		f.max_message_size = SIZE_MAX - 16;
		assert_int_equal(bs_framing_check(&f), BS_EINVAL);
	}
	/* fields of other framings are not judged */
	f = framing_of(BS_FRAMING_VARINT, 0);
	f.width = 0;
	assert_int_equal(bs_framing_check(&f), 0);
}

static void test_frame_decode_codes(void **state)
{
	(void)state;
	bs_framing_t fixed = framing_of(BS_FRAMING_FIXED, 16);
	bs_framing_t varint = framing_of(BS_FRAMING_VARINT, 16);
	bs_framing_t bsv2 = framing_of(BS_FRAMING_BUFFSTREAMS, 255);
	bs_framing_t delim = framing_of(BS_FRAMING_DELIM, 4);
	bs_framing_t bad = framing_of(BS_FRAMING_FIXED, 16);
	static const uint8_t whole[] = { 0, 0, 0, 2, 'h', 'i' };
	static const uint8_t too_big[] = { 0, 0, 0, 17 };
	static const uint8_t long_varint[] = { 0x80, 0x80, 0x80, 0x80, 0x80,
					       0x80, 0x80, 0x80, 0x80, 0x80, 0x01 };
	static const uint8_t non_minimal[] = { 0x80, 0x00 };
	static const uint8_t negative[] = { 0x03, 0x00 };
	static const uint8_t no_delim[] = "abcde";
	bs_frame_t fr;

	bad.width = 0;
	assert_int_equal(bs_frame_decode(&fixed, whole, sizeof(whole), &fr), 1);
	assert_int_equal(fr.payload_len, 2);
	assert_int_equal(bs_frame_decode(&fixed, whole, 5, &fr), 0);
	assert_int_equal(fr.header_len, 4);
	assert_int_equal(bs_frame_decode(&fixed, whole, 3, &fr), 0);
	assert_int_equal(fr.header_len, 0);
	assert_int_equal(bs_frame_decode(&fixed, NULL, 0, &fr), 0);

	assert_int_equal(bs_frame_decode(&fixed, too_big, sizeof(too_big), &fr), BS_EMSGSIZE);
	assert_int_equal(bs_frame_decode(&delim, no_delim, 5, &fr), BS_EMSGSIZE);
	assert_int_equal(bs_frame_decode(&delim, no_delim, 4, &fr), 0);

	assert_int_equal(bs_frame_decode(&varint, long_varint, sizeof(long_varint), &fr),
			 BS_EPROTO);
	assert_int_equal(bs_frame_decode(&varint, non_minimal, sizeof(non_minimal), &fr),
			 BS_EPROTO);
	assert_int_equal(bs_frame_decode(&bsv2, negative, sizeof(negative), &fr), BS_EPROTO);

	assert_int_equal(bs_frame_decode(&fixed, whole, sizeof(whole), NULL), BS_EINVAL);
	assert_int_equal(bs_frame_decode(NULL, whole, sizeof(whole), &fr), BS_EINVAL);
	assert_int_equal(bs_frame_decode(&bad, whole, sizeof(whole), &fr), BS_EINVAL);
	assert_int_equal(bs_frame_decode(&fixed, NULL, 1, &fr), BS_EINVAL);
}

static void test_frame_encode_codes(void **state)
{
	(void)state;
	bs_framing_t fixed1 = framing_of(BS_FRAMING_FIXED, 1000);
	bs_framing_t bsv2 = framing_of(BS_FRAMING_BUFFSTREAMS, 255);
	bs_framing_t delim = framing_of(BS_FRAMING_DELIM, 8);
	bs_framing_t bad = framing_of((bs_framing_kind_t)99, 0);
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	size_t tl = 7;

	fixed1.width = 1;
	assert_int_equal(bs_frame_encode(&fixed1, 255, hdr, NULL), 1);
	assert_int_equal(hdr[0], 255);
	assert_int_equal(bs_frame_encode(&bsv2, 110, hdr, &tl), 2);
	assert_int_equal(tl, 0);
	assert_int_equal(bs_frame_encode(&delim, 8, hdr, &tl), 0);
	assert_int_equal(tl, 1);

	assert_int_equal(bs_frame_encode(&fixed1, 256, hdr, NULL), BS_EMSGSIZE);
	assert_int_equal(bs_frame_encode(&bsv2, 256, hdr, NULL), BS_EMSGSIZE);
	assert_int_equal(bs_frame_encode(&delim, 9, hdr, &tl), BS_EMSGSIZE);

	assert_int_equal(bs_frame_encode(NULL, 1, hdr, NULL), BS_EINVAL);
	assert_int_equal(bs_frame_encode(&bad, 1, hdr, NULL), BS_EINVAL);
	assert_int_equal(bs_frame_encode(&fixed1, 1, NULL, NULL), BS_EINVAL);
	assert_int_equal(bs_frame_encode(&delim, 1, hdr, NULL), BS_EINVAL);
}

static void test_frame_check_payload_codes(void **state)
{
	(void)state;
	bs_framing_t fixed = framing_of(BS_FRAMING_FIXED, 4);
	bs_framing_t delim = framing_of(BS_FRAMING_DELIM, 4);
	bs_framing_t bad = framing_of(BS_FRAMING_FIXED, 0);

	bad.width = 9;
	assert_int_equal(bs_frame_check_payload(&fixed, "abcd", 4), 0);
	assert_int_equal(bs_frame_check_payload(&fixed, NULL, 0), 0);
	assert_int_equal(bs_frame_check_payload(&delim, "a\nb", 3), BS_EPROTO);
	assert_int_equal(bs_frame_check_payload(&fixed, "abcde", 5), BS_EMSGSIZE);
	assert_int_equal(bs_frame_check_payload(&delim, "abcde", 5), BS_EMSGSIZE);
	assert_int_equal(bs_frame_check_payload(NULL, "a", 1), BS_EINVAL);
	assert_int_equal(bs_frame_check_payload(&bad, "a", 1), BS_EINVAL);
	assert_int_equal(bs_frame_check_payload(&fixed, NULL, 1), BS_EINVAL);
}

/* ---- bs_listen ---------------------------------------------------------- */

/* Nothing came of the failed calls: no connection, no event. */
static void assert_nothing_happened(bs_t *bs)
{
	bs_open_event_t ev;

	assert_int_equal(bs_recv_open(bs, &ev, 0), BS_EAGAIN);
	assert_int_equal(tu_stats(bs).conns_open, 0);
}

static void test_listen_codes(void **state)
{
	(void)state;
	enum { MAX_LISTENERS = 64 };
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis = 77, ids[MAX_LISTENERS];
	char path[108], unix_addr[128], addr[BS_ADDR_STRLEN], tcp_addr[BS_ADDR_STRLEN];
	bs_framing_t bad = framing_of(BS_FRAMING_FIXED, 0), other;
	struct stat st;

	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &bs), 0);
	tu_unix_path(path, sizeof(path), "codes");
	snprintf(unix_addr, sizeof(unix_addr), "unix:%s", path);

	/* BS_EINVAL */
	bad.width = 0;
	assert_int_equal(bs_listen(NULL, "127.0.0.1:0", NULL, &lis), BS_EINVAL);
	assert_int_equal(bs_listen(bs, NULL, NULL, &lis), BS_EINVAL);
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, NULL), BS_EINVAL);
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", &bad, &lis), BS_EINVAL);

	/* BS_EADDR */
	assert_int_equal(bs_listen(bs, "127.0.0.1", NULL, &lis), BS_EADDR);
	assert_int_equal(bs_listen(bs, "unix:", NULL, &lis), BS_EADDR);

	/* BS_ESYS from bind, errno saying why */
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, &ids[0]), 0);
	assert_int_equal(bs_listener_addr(bs, ids[0], tcp_addr, sizeof(tcp_addr)), 0);
	errno = 0;
	assert_int_equal(bs_listen(bs, tcp_addr, NULL, &lis), BS_ESYS);
	assert_int_equal(errno, EADDRINUSE);
	assert_int_equal(bs_listen_close(bs, ids[0]), 0);

	/* BS_ESYS when an I/O thread cannot watch the socket: the first, or
	 * the second after the first took it. Undone each time: the path
	 * is gone, the port free again, nothing was accepted. */
	for (int k = 1; k <= 2; k++) {
		listen_watch_fail_in = k;
		errno = 0;
		assert_int_equal(bs_listen(bs, unix_addr, NULL, &lis), BS_ESYS);
		assert_int_equal(errno, ENOSPC);
		assert_int_equal(listen_watch_fail_in, 0);
		assert_int_equal(stat(path, &st), -1);
		assert_true(tu_connect(unix_addr) < 0);

		listen_watch_fail_in = k;
		assert_int_equal(bs_listen(bs, tcp_addr, NULL, &lis), BS_ESYS);
		assert_int_equal(listen_watch_fail_in, 0);
		assert_true(tu_connect(tcp_addr) < 0);
	}
	assert_int_equal(lis, 77);
	assert_nothing_happened(bs);
	/* the same addresses work now */
	assert_int_equal(bs_listen(bs, unix_addr, NULL, &ids[0]), 0);
	assert_int_equal(bs_listen(bs, tcp_addr, NULL, &ids[1]), 0);
	assert_int_equal(bs_listen_close(bs, ids[0]), 0);
	assert_int_equal(bs_listen_close(bs, ids[1]), 0);

	/* BS_ENOMEM: the listener, or the interned framing it needs */
	calloc_fail_in = 1;
	assert_int_equal(bs_listen(bs, unix_addr, NULL, &lis), BS_ENOMEM);
	other = framing_of(BS_FRAMING_VARINT, 1000);
	calloc_fail_in = 2;
	assert_int_equal(bs_listen(bs, unix_addr, &other, &lis), BS_ENOMEM);
	assert_int_equal(calloc_fail_in, 0);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(lis, 77);

	/* BS_ELIMIT: 64 open at once; the 65th leaves nothing bound */
	for (int i = 0; i < MAX_LISTENERS; i++)
		assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, &ids[i]), 0);
	assert_int_equal(bs_listen(bs, unix_addr, NULL, &lis), BS_ELIMIT);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(lis, 77);
	assert_int_equal(bs_listen_close(bs, ids[MAX_LISTENERS - 1]), 0);
	assert_int_equal(bs_listen(bs, unix_addr, NULL, &ids[MAX_LISTENERS - 1]), 0);
	assert_int_equal(bs_listener_addr(bs, ids[MAX_LISTENERS - 1], addr, sizeof(addr)), 0);
	assert_string_equal(addr, unix_addr);
	assert_nothing_happened(bs);

	/* BS_ESHUTDOWN */
	bs_shutdown(bs);
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, &lis), BS_ESHUTDOWN);
	assert_int_equal(lis, 77);
	bs_destroy(bs);
}

/* ---- bs_listener_addr and bs_listen_close ------------------------------ */

static void test_listener_addr_codes(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs, *other;
	uint32_t lis, other_lis;
	char addr[BS_ADDR_STRLEN], small[8];
	size_t len;

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	len = strlen(addr);

	assert_int_equal(bs_listener_addr(NULL, lis, addr, sizeof(addr)), BS_EINVAL);
	assert_int_equal(bs_listener_addr(bs, lis, NULL, sizeof(addr)), BS_EINVAL);

	assert_int_equal(bs_listener_addr(bs, 0, addr, sizeof(addr)), BS_ESTALE);
	assert_int_equal(bs_listener_addr(bs, lis ^ 0x40, addr, sizeof(addr)), BS_ESTALE);
	assert_int_equal(bs_listener_addr(bs, lis + 1, addr, sizeof(addr)), BS_ESTALE);
	assert_int_equal(bs_create(&cfg, &other), 0);
	assert_int_equal(bs_listen(other, "127.0.0.1:0", NULL, &other_lis), 0);
	assert_int_not_equal(other_lis, lis);
	assert_int_equal(bs_listener_addr(bs, other_lis, addr, sizeof(addr)), BS_ESTALE);
	bs_destroy(other);

	/* the text and its NUL must fit */
	assert_int_equal(bs_listener_addr(bs, lis, small, sizeof(small)), BS_EMSGSIZE);
	assert_int_equal(bs_listener_addr(bs, lis, addr, len), BS_EMSGSIZE);
	assert_int_equal(bs_listener_addr(bs, lis, addr, 0), BS_EMSGSIZE);
	assert_int_equal(bs_listener_addr(bs, lis, addr, len + 1), 0);
	assert_int_equal(strlen(addr), len);

	assert_int_equal(bs_listen_close(bs, lis), 0);
	assert_int_equal(bs_listener_addr(bs, lis, addr, sizeof(addr)), BS_ESTALE);
	bs_destroy(bs);
}

/* The log hook blocks the I/O thread that calls it (once), until told. */
static atomic_int hook_entered, hook_release;

static void blocking_log(void *arg, int level, const char *message)
{
	int expected = 0;

	(void)arg;
	(void)level;
	(void)message;
	if (!atomic_compare_exchange_strong(&hook_entered, &expected, 1))
		return;
	for (int i = 0; i < 60000 && !atomic_load(&hook_release); i++)
		usleep(1000);
}

static void test_listen_close_codes(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis, lis2;
	char addr[BS_ADDR_STRLEN];
	int fd;

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);

	assert_int_equal(bs_listen_close(NULL, lis), BS_EINVAL);
	assert_int_equal(bs_listen_close(bs, 0), BS_ESTALE);
	assert_int_equal(bs_listen_close(bs, lis + 1), BS_ESTALE);
	assert_int_equal(bs_listen_close(bs, lis), 0);
	assert_int_equal(bs_listen_close(bs, lis), BS_ESTALE);

	/* bs_shutdown closes every listener */
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", NULL, &lis), 0);
	bs_shutdown(bs);
	assert_int_equal(bs_listen_close(bs, lis), BS_ESTALE);
	bs_destroy(bs);

	/* BS_ETIMEDOUT: the only I/O thread is stuck in the log hook, called
	 * as accept runs out of descriptors. */
	tu_config(&cfg);
	cfg.io_threads = 1;
	cfg.log = blocking_log;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	fd = tu_socket_for(addr);
	assert_true(fd >= 0);
	exhaust_fds();
	int connected = tu_connect_fd(fd, addr);
	bool entered = TU_WAIT_FOR(atomic_load(&hook_entered), WAIT_MS);
	restore_fds();
	assert_int_equal(connected, 0);
	assert_true(entered);

	assert_int_equal(bs_listen_close(bs, lis), BS_ETIMEDOUT);
	/* closed all the same */
	assert_int_equal(bs_listen_close(bs, lis), BS_ESTALE);
	assert_int_equal(bs_listener_addr(bs, lis, addr, sizeof(addr)), BS_ESTALE);
	assert_int_equal(bs_listen(bs, addr, NULL, &lis2), BS_ESYS);

	/* once the thread is back, the socket closes: the port is free */
	atomic_store(&hook_release, 1);
	assert_true(TU_WAIT_FOR(bs_listen(bs, addr, NULL, &lis2) == 0, WAIT_MS));
	assert_int_equal(bs_listen_close(bs, lis2), 0);
	assert_int_equal(tu_stats(bs).conns_accepted, 0);
	close(fd);
	bs_destroy(bs);
}

/* ---- sending --------------------------------------------------------------- */

static void test_send_codes(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];
	int fd;
	bs_id_t id;
	static uint8_t big[70000];
	bs_framing_t delim = framing_of(BS_FRAMING_DELIM, 64);

	tu_config(&cfg);
	cfg.framing.max_message_size = 1 << 20;
	cfg.send_queue_bytes = 64 * 1024;
	cfg.sndbuf = 4096;
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	fd = tu_connect_opts(addr, 4096, 0);
	assert_true(fd >= 0);
	bs_open_event_t oev;
	assert_int_equal(bs_recv_open(bs, &oev, 10000), 0);
	id = oev.id;
	assert_int_equal(bs_release(bs), 0);

	/* BS_EINVAL */
	assert_int_equal(bs_send(NULL, id, "x", 1, NULL, 0, 0), BS_EINVAL);
	assert_int_equal(bs_send(bs, id, NULL, 1, NULL, 0, 0), BS_EINVAL);
	assert_int_equal(bs_send_msg(bs, id, NULL, "x", 1), BS_EINVAL);
	assert_int_equal(bs_flush(NULL, id), BS_EINVAL);
	assert_int_equal(bs_send_close(NULL, id), BS_EINVAL);
	assert_int_equal(bs_send_many(bs, NULL, 1, NULL, "x", 1, 0, NULL), BS_EINVAL);
	assert_int_equal(bs_conn_set_slow(bs, id, -1), BS_EINVAL);
	assert_int_equal(bs_conn_info(NULL, id, NULL), BS_EINVAL);
	assert_int_equal(bs_set_user(NULL, id, NULL), BS_EINVAL);
	/* BS_ESTALE */
	assert_int_equal(bs_send_data(bs, id ^ (1ull << 30), "x", 1), BS_ESTALE);
	assert_int_equal(bs_flush(bs, 0), BS_ESTALE);
	assert_int_equal(bs_send_close(bs, 12345), BS_ESTALE);
	assert_int_equal(bs_conn_set_slow(bs, 0, BS_SLOW_DROP), BS_ESTALE);
	/* BS_EMSGSIZE, BS_EPROTO (a delimiter inside a DELIM payload) */
	assert_int_equal(bs_send_data(bs, id, big, (1 << 20) + 1), BS_EMSGSIZE);
	uint32_t dlis;
	char daddr[128];
	assert_int_equal(bs_listen(bs, "127.0.0.1:0", &delim, &dlis), 0);
	assert_int_equal(bs_listener_addr(bs, dlis, daddr, sizeof(daddr)), 0);
	int dfd = tu_connect(daddr);
	assert_true(dfd >= 0);
	assert_int_equal(bs_recv_open(bs, &oev, 10000), 0);
	assert_int_equal(bs_release(bs), 0);
	char withnl[] = { 'a', '\n', 'b' };
	assert_int_equal(bs_send_data(bs, oev.id, withnl, sizeof(withnl)), BS_EPROTO);
	/* BS_EAGAIN, then BS_ETIMEDOUT: the peer does not read */
	int rc = 0;
	for (int i = 0; i < 1000 && rc == 0; i++)
		rc = bs_send_data(bs, id, big, sizeof(big) / 4);
	assert_int_equal(rc, BS_EAGAIN);
	assert_int_equal(bs_send(bs, id, big, sizeof(big) / 4, NULL, 0, 50), BS_ETIMEDOUT);
	/* BS_EDROPPED and BS_ESLOW by policy */
	assert_int_equal(bs_conn_set_slow(bs, id, BS_SLOW_DROP), 0);
	assert_int_equal(bs_send_data(bs, id, big, sizeof(big) / 4), BS_EDROPPED);
	assert_int_equal(bs_conn_set_slow(bs, id, BS_SLOW_DISCONNECT), 0);
	assert_int_equal(bs_send_data(bs, id, big, sizeof(big) / 4), BS_ESLOW);
	assert_int_equal(bs_send_data(bs, id, "x", 1), BS_ESTALE); /* closing now */
	bs_close_event_t cev;
	assert_int_equal(bs_recv_close(bs, &cev, 10000), 0);
	assert_int_equal(cev.reason, BS_ESLOW);
	/* BS_ESHUTDOWN */
	bs_shutdown(bs);
	assert_int_equal(bs_send_data(bs, oev.id, "x", 1), BS_ESHUTDOWN);
	assert_int_equal(bs_flush(bs, oev.id), BS_ESHUTDOWN);
	assert_int_equal(bs_send_close(bs, oev.id), BS_ESHUTDOWN);
	close(fd);
	close(dfd);
	bs_destroy(bs);
}

/* ---- receiving and holds ------------------------------------------------------ */

static void test_recv_codes(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	bs_data_t ev;
	bs_open_event_t oev;
	bs_close_event_t cev;

	tu_config(&cfg);
	cfg.close_events = false;
	assert_int_equal(bs_create(&cfg, &bs), 0);
	/* BS_EINVAL */
	assert_int_equal(bs_recv_data(NULL, &ev, 0), BS_EINVAL);
	assert_int_equal(bs_recv_data_batch(bs, &ev, 0, 0), BS_EINVAL);
	assert_int_equal(bs_recv_open(bs, NULL, 0), BS_EINVAL);
	assert_int_equal(bs_recv_close(NULL, &cev, 0), BS_EINVAL);
	assert_int_equal(bs_release(NULL), BS_EINVAL);
	assert_int_equal(bs_release_id(NULL, 1), BS_EINVAL);
	/* BS_EDISABLED, BS_EAGAIN, BS_ETIMEDOUT */
	assert_int_equal(bs_recv_close(bs, &cev, 0), BS_EDISABLED);
	assert_int_equal(bs_recv_open(bs, &oev, 0), BS_EAGAIN);
	assert_int_equal(bs_recv_data(bs, &ev, 20), BS_ETIMEDOUT);
	/* BS_ESTALE: this thread holds nothing */
	assert_int_equal(bs_release_id(bs, 1), BS_ESTALE);
	assert_int_equal(bs_release(bs), 0);
	/* BS_ESHUTDOWN once drained */
	bs_shutdown(bs);
	assert_int_equal(bs_recv_data(bs, &ev, 1000), BS_ESHUTDOWN);
	assert_int_equal(bs_recv_open(bs, &oev, 1000), BS_ESHUTDOWN);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_codes),
		cmocka_unit_test(test_id_parse_codes),
		cmocka_unit_test(test_framing_check_codes),
		cmocka_unit_test(test_frame_decode_codes),
		cmocka_unit_test(test_frame_encode_codes),
		cmocka_unit_test(test_frame_check_payload_codes),
		cmocka_unit_test(test_listen_codes),
		cmocka_unit_test(test_listener_addr_codes),
		cmocka_unit_test(test_listen_close_codes),
		cmocka_unit_test(test_send_codes),
		cmocka_unit_test(test_recv_codes),
	};
	return TU_RUN("api-codes", tests, argc, argv);
}
