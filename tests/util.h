/*
 * Helpers shared by the test programs: a runner that forks each test,
 * plain-socket clients speaking the default framing (4-byte big-endian
 * length), a server starter, a deterministic payload pattern, an id map,
 * time helpers and failure reporting that works from any thread.
 *
 * cmocka's assert_* must only run on the thread that runs the test. Worker
 * threads of a test report with TU_CHECK instead; the test asserts
 * tu_failures() == 0 after joining them.
 */
#ifndef BS_TEST_UTIL_H
#define BS_TEST_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <sys/types.h>
#include <cmocka.h>

#include "buffstreams.h"

/* ---- running ------------------------------------------------------------
 * Runs each test in its own child process (as libuv does), so a crash, a
 * hang or a failed assertion that leaves threads behind cannot affect the
 * next test. Arguments on the command line select tests by substring.
 * Environment: BS_TEST_NOFORK=1 runs in-process (for a debugger);
 * BS_TEST_TIMEOUT=seconds bounds each test (default 120); BS_TEST_BACKTRACE=1
 * prints the stacks of a test that overstays (with gdb).
 * Returns the process exit status: 0 when every selected test passed.
 */
int tu_run(const char *group, const struct CMUnitTest *tests, size_t n,
	   int argc, char **argv);
#define TU_RUN(group, tests, argc, argv) \
	tu_run((group), (tests), sizeof(tests) / sizeof((tests)[0]), (argc), (argv))

/* ---- load scale -----------------------------------------------------------
 * 1.0 by default; 0.5 under ThreadSanitizer; BS_TEST_SCALE=<factor>
 * overrides (e.g. 0.1 for a quick run on a loaded machine).
 */
double tu_scale(void);
/* n scaled, never below min. */
long tu_scaled(long n, long min);
bool tu_sanitized(void);

/* ---- time ------------------------------------------------------------------ */
uint64_t tu_now_ns(void);
uint64_t tu_now_ms(void);
void tu_sleep_ms(unsigned ms);

/*
 * Evaluates cond until it holds or timeout_ms passed; yields the last value.
 * A bounded wait for a condition the test cannot be told about otherwise
 * (a counter in bs_stats, a flag set by another thread).
 */
#define TU_WAIT_FOR(cond, timeout_ms)                                        \
	__extension__({                                                      \
		uint64_t tu_deadline_ = tu_now_ms() + (uint64_t)(timeout_ms); \
		bool tu_ok_;                                                 \
		while (!(tu_ok_ = (cond)) && tu_now_ms() < tu_deadline_)     \
			tu_sleep_ms(1);                                      \
		tu_ok_;                                                      \
	})

/*
 * Waits (bounded) for a statistic to reach a value, then asserts it: the
 * I/O threads update counters and gauges a moment after the events that
 * the test observes.
 */
#define TU_ASSERT_STAT(bs, field, expected)                                  \
	do {                                                                 \
		uint64_t tu_want_ = (uint64_t)(expected);                    \
		(void)TU_WAIT_FOR(tu_stats(bs).field == tu_want_, 5000);     \
		assert_int_equal(tu_stats(bs).field, tu_want_);              \
	} while (0)

/* ---- failures from any thread ------------------------------------------- */
void tu_fail_(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
unsigned tu_failures(void);
void tu_failures_reset(void);

#define TU_CHECK(cond, ...)                                          \
	do {                                                         \
		if (!(cond))                                         \
			tu_fail_(__FILE__, __LINE__, __VA_ARGS__);   \
	} while (0)

/* ---- plain-socket clients -------------------------------------------------- */
enum { TU_TIMEOUT = -1, TU_EOF = -2, TU_ERROR = -3 };

/* Blocking connect to "127.0.0.1:port", "[::1]:port" or "unix:/path".
 * rcvbuf/sndbuf > 0 set the socket buffers before connecting. Sends time
 * out after 20 s so that no test can block for ever. fd or -1. */
int tu_connect(const char *addr);
int tu_connect_opts(const char *addr, int rcvbuf, int sndbuf);
/* A socket for addr's family, not connected yet; and its connect. */
int tu_socket_for(const char *addr);
int tu_connect_fd(int fd, const char *addr);

/* Writes everything (blocking). 0 or -1. Never raises SIGPIPE. */
int tu_write_all(int fd, const void *p, size_t n);
/* Writes the 4-byte big-endian header of an n-byte payload into hdr. */
void tu_frame_header(uint8_t hdr[4], size_t n);
/* Frames p[0..n) into out (n + 4 bytes); returns n + 4. */
size_t tu_frame(uint8_t *out, const void *p, size_t n);
/* Sends one framed message. 0 or -1. */
int tu_send_frame(int fd, const void *p, size_t n);
/* Reads one framed message into buf (unbuffered: reads the exact bytes).
 * Returns its length, TU_TIMEOUT (nothing complete in time), TU_EOF (the
 * stream ended at a frame boundary) or TU_ERROR (error, reset, a frame
 * cut short or larger than cap). */
long tu_recv_frame(int fd, void *buf, size_t cap, int timeout_ms);
/* True when fd becomes readable (data, EOF or error) within timeout_ms. */
bool tu_readable(int fd, int timeout_ms);
/* Waits for the end of the stream, discarding nothing: 1 EOF or reset,
 * 0 timeout, -1 data arrived instead. */
int tu_wait_eof(int fd, int timeout_ms);

/* Buffered reader for many frames. */
typedef struct tu_reader {
	int fd;
	uint8_t *buf;
	size_t start, end, cap;
} tu_reader_t;

void tu_reader_init(tu_reader_t *r, int fd, size_t cap);
void tu_reader_free(tu_reader_t *r);
/* The next frame already buffered: 1 (and *msg, *len), 0 none, TU_ERROR
 * when it cannot fit in cap. *msg stays valid until the next call. */
int tu_reader_next(tu_reader_t *r, const uint8_t **msg, size_t *len);
/* One non-blocking read: bytes read (> 0), TU_EOF, TU_TIMEOUT (nothing to
 * read now) or TU_ERROR (errno set; ECONNRESET is an error). */
long tu_reader_fill(tu_reader_t *r);
/* Waits at most timeout_ms for the next frame: its length (*msg set),
 * TU_TIMEOUT, TU_EOF (clean end between frames) or TU_ERROR. */
long tu_reader_recv(tu_reader_t *r, const uint8_t **msg, int timeout_ms);
/* Bytes buffered but not yet returned as frames. */
size_t tu_reader_pending(const tu_reader_t *r);

/* Port of a bound socket / of an address; -1 when it has none. */
int tu_local_port(int fd);
int tu_sockaddr_port(const struct sockaddr_storage *ss);
/* A unique unix socket path under /tmp for this process. */
void tu_unix_path(char *buf, size_t len, const char *tag);
/* True when the kernel has an IPv6 loopback to bind to. */
bool tu_have_ipv6_loopback(void);
/* A loopback TCP port with nothing listening, kept reserved while *fd is
 * open (bound, not listening). Port or -1. */
int tu_closed_port(int *fd);

/* ---- library helpers ------------------------------------------------------ */

/* bs_config_init, plus what every test wants (two I/O threads). */
void tu_config(bs_config_t *cfg);
/*
 * bs_create(cfg), then a listener on bind_addr (NULL: "127.0.0.1:0") whose
 * bound address is written to addr. 0, or the failing call's code (nothing
 * is left running).
 */
int tu_server(const bs_config_t *cfg, const char *bind_addr, bs_t **bs,
	      uint32_t *listener, char *addr, size_t addrlen);
/*
 * Connects n plain clients to addr (TCP) and waits for their n open events.
 * fds[i] and ids[i] belong to the same connection (matched by port); each
 * open event must say accepted by listener. 0, or -1 with a diagnostic.
 */
int tu_open_clients(bs_t *bs, const char *addr, uint32_t listener, int n,
		    int *fds, bs_id_t *ids, int timeout_ms);
/* Receives the next data event and checks it is id carrying exactly
 * p[0..len); releases it. 0 or -1 with a diagnostic. */
int tu_expect_data(bs_t *bs, bs_id_t id, const void *p, size_t len,
		   int timeout_ms);
/* Receives the next close event and checks its id and reason (and that it
 * reports nothing unsent when check_unsent). 0 or -1 with a diagnostic.
 * *ev (may be NULL) receives the event. */
int tu_expect_close(bs_t *bs, bs_id_t id, int reason, bool check_unsent,
		    bs_close_event_t *ev, int timeout_ms);
bs_stats_t tu_stats(bs_t *bs);

/* ---- payload pattern ----------------------------------------------------- *
 * A message of stream s, number q is [s: 4 bytes BE][q: 4 bytes BE][bytes
 * derived from s, q and the length], so any corruption, truncation or
 * misrouting shows.
 */
#define TU_PATTERN_MIN 8
/* A deterministic length in [min, max] for message q of stream s. */
size_t tu_pattern_len(uint32_t s, uint32_t q, size_t min, size_t max);
void tu_pattern_fill(uint8_t *p, size_t len, uint32_t s, uint32_t q);
/* 0 and *s, *q when p[0..len) is a pattern message, else -1. */
int tu_pattern_check(const uint8_t *p, size_t len, uint32_t *s, uint32_t *q);

uint64_t tu_rand(uint64_t *state);

/* ---- id map: bs_id_t -> dense index (0, 1, 2... in order of insertion) --- *
 * Not synchronised; callers lock.
 */
typedef struct tu_idmap {
	bs_id_t *keys;
	long *vals;
	size_t cap, count, max;
} tu_idmap_t;

int tu_idmap_init(tu_idmap_t *m, size_t max_entries);
void tu_idmap_free(tu_idmap_t *m);
/* Index of id, or -1. */
long tu_idmap_find(const tu_idmap_t *m, bs_id_t id);
/* Index of id, adding it when new (*added, may be NULL, tells); -1 full. */
long tu_idmap_add(tu_idmap_t *m, bs_id_t id, bool *added);

/* ---- threads ----------------------------------------------------------- */
pid_t tu_gettid(void);
/* True when the thread is asleep in the kernel (state S or D). */
bool tu_thread_sleeping(pid_t tid);

#endif /* BS_TEST_UTIL_H */
