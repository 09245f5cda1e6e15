/*
 * Shared harness of the benchmark programs: clocks and CPU time, client
 * processes, plain-socket helpers, interleaved runs and reporting.
 *
 * Every scenario runs its server side in this process (library or plain
 * sockets) and its load in a forked client process that is identical for
 * every implementation, so getrusage(RUSAGE_SELF) measures the server only.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifndef BENCH_WITH_LIB
#define BENCH_WITH_LIB 1
#endif
#ifndef BENCH_WITH_ZMQ
#define BENCH_WITH_ZMQ 0
#endif

#if BENCH_WITH_LIB
#include "buffstreams.h"

/* A library instance with the benchmark's settings (bopt.io_threads,
 * io_poll_us, hold_batch, a 1 s shutdown deadline) listening on 127.0.0.1:0. 0 or -1. */
int bench_lib_listen(bs_t **bs, int *port, int open_events, int close_events);

/* A library echo server thread: receives batches and sends each message
 * back with zero copy until stop is set. With more, the replies to one
 * connection within a batch leave in one write (BS_SEND_MORE). With
 * poll_us, it looks with timeout 0 (yielding between looks) for up to that
 * long before it waits, as a receive-side poll in the library would. */
struct bench_lib_echo {
	bs_t *bs;
	int more;
	int poll_us;
	_Atomic int stop;
	_Atomic uint64_t send_errors;
};
void *bench_lib_echo_main(void *arg);
#endif

#define BENCH_MAX_RUNS 15
#define BENCH_MAX_METRICS 12
#define BENCH_MAX_LIST 16

/* Options every program understands (see bench_parse_common). */
struct bench_opts {
	int quick;            /* smaller counts, fewer points */
	int runs;             /* runs per implementation per point */
	const char *impls;    /* comma list of implementations to run */
	const char *curve;    /* tag added to BENCH lines of a scaling curve */
	double run_limit_s;   /* wall-clock bound of one run */
	unsigned io_threads;  /* library I/O threads (0 = library default) */
	int io_poll_us;       /* library I/O threads' poll (-1 = library default) */
	int recv_poll_us;     /* library receives' poll (-1 = library default) */
	unsigned hold_batch;  /* library hold_batch (0 = library default) */
	int pin;              /* server on CPU 0, client on CPU 1 (off by default);
	                         points then carry pinned=1 */
};
extern struct bench_opts bopt;

/* State shared with the client processes (an anonymous shared mapping). */
struct bench_shared {
	_Atomic uint64_t accepted;  /* connections the server has taken */
};
extern struct bench_shared *bshared;

/* Sets up the shared page, ignores SIGPIPE, line-buffers stdout. */
void bench_init(void);

/* Parses one common option at argv[*i] (advancing *i past its value).
 * Returns 1 if it was one, 0 if not, -1 on a bad value. */
int bench_parse_common(int argc, char **argv, int *i);
/* Usage text of the common options. */
extern const char bench_common_usage[];
/* Parses "1,2,4" into out[]; returns the count or -1. */
int bench_parse_list(const char *s, long *out, int max);

double bench_now(void);       /* CLOCK_MONOTONIC seconds */
double bench_cpu(void);       /* user+sys seconds of this process */
long bench_rss_kb(void);      /* VmRSS from /proc/self/status, -1 if unknown */
long bench_raise_nofile(void); /* soft RLIMIT_NOFILE raised to hard; returns it */
long bench_port_range(void);  /* size of the local ephemeral port range */
void bench_sleep(double s);

/* ---- plain sockets (blocking unless said) ---- */
int sock_listen(int *port);          /* 127.0.0.1, port 0, backlog 4096 */
int sock_connect(int port);          /* 127.0.0.1:port with TCP_NODELAY */
/* The same from source address 127.0.0.(2 + i % 64), for clients that
 * open thousands of connections. */
int sock_connect_from(int port, int i);
int sock_nonblock(int fd);
int write_all(int fd, const void *buf, size_t len);
int read_full(int fd, void *buf, size_t len); /* 0, or -1 on EOF/error */
int addr_port(const char *addr);     /* port of "host:port", or -1 */

static inline uint32_t be32_load(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline void be32_store(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Fills buf with n frames of size payload bytes (4-byte big-endian length). */
void frames_fill(uint8_t *buf, size_t n, size_t size);

/* Waits until fewer than `window` connects are ahead of what the server has
 * accepted, so the listen backlog never overflows (a dropped SYN costs 1 s).
 * Returns 0, or -1 when the deadline passes. */
int connect_window(uint64_t started, uint64_t window, double deadline);

/* ---- client processes ----
 * A fixed-size control message travels both ways over a pair of pipes. */
struct ctl {
	int32_t kind;
	int32_t port;
	uint64_t n;
	double v[6];
};
enum { CTL_PORT = 1, CTL_GO, CTL_READY, CTL_DONE, CTL_ROUND, CTL_STOP, CTL_FAIL };

struct bench_child {
	pid_t pid;
	int wfd; /* parent -> child */
	int rfd; /* child -> parent */
};

/* Forks; the child runs fn(arg, rfd, wfd) and exits. The parent must be
 * single-threaded here. The child dies with its parent and after
 * 2 x run_limit_s in any case. */
int child_start(struct bench_child *c, void (*fn)(void *arg, int rfd, int wfd),
		void *arg);
int ctl_send(int fd, int kind, int port, uint64_t n);
int ctl_sendv(int fd, const struct ctl *m);
/* Reads one message within timeout_s; 0 or -1 (timeout, EOF, error). */
int ctl_recv(int fd, struct ctl *m, double timeout_s);
/* ctl_recv that calls tick(arg) about every millisecond while it waits. */
int ctl_recv_ticking(int fd, struct ctl *m, double timeout_s,
		     void (*tick)(void *), void *arg);
/* Closes the pipes and reaps the child, killing it after timeout_s. */
int child_reap(struct bench_child *c, double timeout_s);

/* ---- runs and reporting ---- */
struct metric {
	const char *key;    /* name in the BENCH line */
	const char *head;   /* table column heading */
	int ratio_col;      /* also print library/baseline for this one */
};

/* One run of one implementation at one point: fills out[0..nm) and
 * returns 0; returns -1 when the run failed, 1 when the point does not
 * apply to this implementation (it is then left out of the table). */
typedef int (*bench_run_fn)(const void *params, double *out);

/* Runs fn in a forked copy of this process and returns its result, so
 * that what one run leaves resident (freed heap, pools, descriptors) cannot
 * flatter or burden the next. Call from a single-threaded process. */
int bench_run_isolated(bench_run_fn fn, const void *params, double *out);

struct bench_impl {
	const char *name;
	bench_run_fn run;
};

/* Runs every selected implementation bopt.runs times, interleaved (the
 * order flips every round so drift hits both sides alike), then prints the
 * table rows and one BENCH line per implementation with medians and the
 * ratios against the implementation named "base". point is a list of
 * key=value words; note (may be NULL) is printed under the rows. */
void bench_point(const char *scenario, const char *point,
		 const struct metric *m, int nm, const struct bench_impl *impls,
		 int ni, const void *params, const char *note);

/* Plain printf to stdout and stderr, used for notes. */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
