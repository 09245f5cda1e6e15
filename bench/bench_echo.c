/*
 * Echo round trip, one message in flight. The client process is a plain
 * blocking socket that writes one framed message and reads the reply, so
 * each sample is one full round trip; latency percentiles come from the
 * client, CPU from the server process.
 *
 *   lib   buffstreams; one application thread receives (bs_recv_data_batch)
 *         and echoes with zero copy (bs_send_msg of the received message).
 *   lib-poll  the same, but the application thread looks for data with
 *         timeout 0 for up to 100 µs before it waits: what a receive-side
 *         poll inside the library would give (an experiment; the library
 *         itself sleeps at once).
 *   base  a blocking socket ping-pong server thread: read, echo whole frames.
 *   zmq   (bench-peers build) ZeroMQ DEALER client -> ROUTER echo thread.
 */
#include "bench.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#if BENCH_WITH_ZMQ
#include <zmq.h>
#endif

struct echo_params {
	size_t size;
	uint64_t rtts;   /* timed round trips */
	uint64_t warmup; /* untimed ones first */
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Percentiles of the samples (µs) into m->v: p50, p99, p999, mean; v[4] is
 * the wall time of the whole exchange. */
static void rtt_stats(double *us, uint64_t n, double wall, struct ctl *m)
{
	double sum = 0;
	qsort(us, (size_t)n, sizeof(*us), cmp_double);
	for (uint64_t i = 0; i < n; i++)
		sum += us[i];
	m->v[0] = us[(size_t)(0.50 * (double)(n - 1))];
	m->v[1] = us[(size_t)(0.99 * (double)(n - 1))];
	m->v[2] = us[(size_t)(0.999 * (double)(n - 1))];
	m->v[3] = sum / (double)n;
	m->v[4] = wall;
}

/* ---- the client (the same for lib and base) ---- */
static void echo_client(void *arg, int rfd, int wfd)
{
	const struct echo_params *p = arg;
	size_t frame = p->size + 4;
	uint8_t *out = malloc(frame), *in = malloc(frame);
	double *us = malloc(sizeof(double) * (size_t)p->rtts);
	struct ctl m = { .kind = CTL_FAIL };
	int fd = -1;

	if (!out || !in || !us || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	frames_fill(out, 1, p->size);
	fd = sock_connect(m.port);
	ctl_send(wfd, fd < 0 ? CTL_FAIL : CTL_READY, 0, 0);
	if (fd < 0 || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	m.kind = CTL_FAIL;
	double deadline = bench_now() + bopt.run_limit_s, start = bench_now();
	for (uint64_t i = 0; i < p->warmup + p->rtts; i++) {
		double t = bench_now();
		if (write_all(fd, out, frame) != 0 || read_full(fd, in, frame) != 0 ||
		    memcmp(in, out, frame) != 0 || t > deadline)
			goto out;
		if (i >= p->warmup)
			us[i - p->warmup] = (bench_now() - t) * 1e6;
	}
	rtt_stats(us, p->rtts, bench_now() - start, &m);
	m.kind = CTL_DONE;
	m.n = p->warmup + p->rtts;
out:
	if (fd >= 0)
		close(fd);
	ctl_sendv(wfd, &m);
	free(out);
	free(in);
	free(us);
}

/* Server CPU and the client's figures into the metrics. */
static void fill_metrics(const struct ctl *m, double cpu, double *out)
{
	out[0] = m->v[0];
	out[1] = m->v[1];
	out[2] = m->v[2];
	out[3] = m->v[3];
	out[4] = (double)m->n / m->v[4];
	out[5] = cpu;
	out[6] = cpu > 0 ? (double)m->n / cpu : 0;
}

/* Common run skeleton: the server has been started and listens on port;
 * hand the port over, wait for the connection, time the exchange. */
static int drive(struct bench_child *c, int port, double *out)
{
	struct ctl m;
	double c0;
	if (ctl_send(c->wfd, CTL_PORT, port, 0) != 0 ||
	    ctl_recv(c->rfd, &m, bopt.run_limit_s) != 0)
		return -1;
	c0 = bench_cpu();
	if (ctl_send(c->wfd, CTL_GO, 0, 0) != 0 ||
	    ctl_recv(c->rfd, &m, 2 * bopt.run_limit_s) != 0)
		return -1;
	fill_metrics(&m, bench_cpu() - c0, out);
	return 0;
}

/* ---- baseline: blocking ping-pong server ---- */
struct pingpong {
	int lfd;
	int fd;
	size_t cap;
};

static void *pingpong_main(void *a)
{
	struct pingpong *s = a;
	uint8_t *buf = malloc(s->cap);
	size_t have = 0;

	s->fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	while (buf && s->fd >= 0) {
		ssize_t n = read(s->fd, buf + have, s->cap - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		size_t off = 0;
		while (have - off >= 4) {
			size_t len = be32_load(buf + off);
			if (len + 4 > s->cap)
				goto out; /* larger than the point's frame size */
			if (have - off < 4 + len)
				break;
			off += 4 + len;
		}
		if (off && write_all(s->fd, buf, off) != 0)
			break;
		memmove(buf, buf + off, have - off);
		have -= off;
	}
out:
	free(buf);
	return NULL;
}

static int echo_base(const void *pp, double *out)
{
	const struct echo_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct pingpong s = { .fd = -1, .cap = 2 * (p->size + 4) + 65536 };
	pthread_t th;
	int port, rc = -1;

	if (child_start(&c, echo_client, (void *)p) != 0)
		return -1;
	s.lfd = sock_listen(&port);
	if (s.lfd >= 0 && pthread_create(&th, NULL, pingpong_main, &s) == 0) {
		rc = drive(&c, port, out);
		/* wakes accept or read if the client never came or never left */
		shutdown(s.lfd, SHUT_RDWR);
		if (child_reap(&c, 5) != 0)
			rc = -1;
		if (s.fd >= 0)
			shutdown(s.fd, SHUT_RDWR);
		pthread_join(th, NULL);
	}
	if (s.fd >= 0)
		close(s.fd);
	if (s.lfd >= 0)
		close(s.lfd);
	child_reap(&c, 5);
	return rc;
}

/* ---- library: receive a batch, echo each message with zero copy ---- */
#if BENCH_WITH_LIB
static int echo_lib_run(const void *pp, double *out, int poll_us)
{
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct bench_lib_echo e = { .bs = NULL, .poll_us = poll_us };
	pthread_t th;
	int port, rc = -1;

	if (child_start(&c, echo_client, (void *)pp) != 0)
		return -1;
	if (bench_lib_listen(&e.bs, &port, 0, 0) == 0 &&
	    pthread_create(&th, NULL, bench_lib_echo_main, &e) == 0) {
		rc = drive(&c, port, out);
		if (child_reap(&c, 5) != 0)
			rc = -1;
		atomic_store(&e.stop, 1);
		pthread_join(th, NULL);
		if (atomic_load(&e.send_errors))
			rc = -1;
	}
	child_reap(&c, 5);
	bs_destroy(e.bs);
	return rc;
}

static int echo_lib(const void *pp, double *out)
{
	return echo_lib_run(pp, out, 0);
}

static int echo_lib_poll(const void *pp, double *out)
{
	return echo_lib_run(pp, out, 100);
}
#endif

/* ---- ZeroMQ DEALER -> ROUTER ---- */
#if BENCH_WITH_ZMQ
static void zmq_echo_client(void *arg, int rfd, int wfd)
{
	const struct echo_params *p = arg;
	uint8_t *out = malloc(p->size), *in = malloc(p->size);
	double *us = malloc(sizeof(double) * (size_t)p->rtts);
	struct ctl m = { .kind = CTL_FAIL };
	void *ctx = NULL, *s = NULL;
	char ep[64];
	int tmo = (int)(bopt.run_limit_s * 1000);

	if (!out || !in || !us || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	memset(out, 7, p->size);
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", m.port);
	ctx = zmq_ctx_new();
	s = zmq_socket(ctx, ZMQ_DEALER);
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof(tmo));
	int ok = zmq_connect(s, ep) == 0;
	ctl_send(wfd, ok ? CTL_READY : CTL_FAIL, 0, 0);
	if (!ok || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	m.kind = CTL_FAIL;
	double start = bench_now();
	for (uint64_t i = 0; i < p->warmup + p->rtts; i++) {
		double t = bench_now();
		if (zmq_send(s, out, p->size, 0) < 0 ||
		    zmq_recv(s, in, p->size, 0) != (int)p->size)
			goto out;
		if (i >= p->warmup)
			us[i - p->warmup] = (bench_now() - t) * 1e6;
	}
	rtt_stats(us, p->rtts, bench_now() - start, &m);
	m.kind = CTL_DONE;
	m.n = p->warmup + p->rtts;
out:
	if (s) {
		int zero = 0;
		zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
		zmq_close(s);
	}
	if (ctx)
		zmq_ctx_term(ctx);
	ctl_sendv(wfd, &m);
	free(out);
	free(in);
	free(us);
}

struct zmq_router {
	void *s;
	_Atomic int stop;
};

static void *zmq_router_main(void *a)
{
	struct zmq_router *r = a;
	zmq_msg_t id, body;
	zmq_msg_init(&id);
	zmq_msg_init(&body);
	while (!atomic_load(&r->stop)) {
		if (zmq_msg_recv(&id, r->s, 0) < 0)
			continue; /* timeout: look at stop */
		if (zmq_msg_recv(&body, r->s, 0) < 0 ||
		    zmq_msg_send(&id, r->s, ZMQ_SNDMORE) < 0 ||
		    zmq_msg_send(&body, r->s, 0) < 0)
			break;
	}
	zmq_msg_close(&id);
	zmq_msg_close(&body);
	return NULL;
}

static int echo_zmq(const void *pp, double *out)
{
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct zmq_router r = { .s = NULL };
	void *ctx;
	char ep[128];
	size_t eplen = sizeof(ep);
	int rc = -1, tmo = 50;
	pthread_t th;

	if (child_start(&c, zmq_echo_client, (void *)pp) != 0)
		return -1;
	ctx = zmq_ctx_new();
	r.s = zmq_socket(ctx, ZMQ_ROUTER);
	zmq_setsockopt(r.s, ZMQ_RCVTIMEO, &tmo, sizeof(tmo));
	if (zmq_bind(r.s, "tcp://127.0.0.1:*") == 0 &&
	    zmq_getsockopt(r.s, ZMQ_LAST_ENDPOINT, ep, &eplen) == 0 &&
	    pthread_create(&th, NULL, zmq_router_main, &r) == 0) {
		rc = drive(&c, addr_port(ep), out);
		if (child_reap(&c, 5) != 0)
			rc = -1;
		atomic_store(&r.stop, 1);
		pthread_join(th, NULL);
	}
	child_reap(&c, 5);
	int zero = 0;
	zmq_setsockopt(r.s, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_close(r.s);
	zmq_ctx_term(ctx);
	return rc;
}
#endif

static const struct bench_impl impls[] = {
#if BENCH_WITH_LIB
	{ "lib", echo_lib },
	{ "lib-poll", echo_lib_poll },
#endif
	{ "base", echo_base },
#if BENCH_WITH_ZMQ
	{ "zmq", echo_zmq },
#endif
};

static const struct metric metrics[] = {
	{ "p50_us", "p50_us", 1 },
	{ "p99_us", "p99_us", 1 },
	{ "p999_us", "p999_us", 1 },
	{ "mean_us", "mean_us", 0 },
	{ "rtt_per_s", "rtt/s", 0 },
	{ "cpu_s", "cpu_s", 0 },
	{ "msgs_per_cpu_s", "msgs/cpu_s", 1 },
};

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_echo [options]\n"
		"  --sizes LIST       payload sizes (default 110)\n"
		"  --rtts N           timed round trips per run (default 20000, quick 4000)\n%s",
		bench_common_usage);
	exit(2);
}

int main(int argc, char **argv)
{
	long sizes[BENCH_MAX_LIST] = { 110 };
	int nsizes = 1;
	long rtts = 0;

	bench_init();
	for (int i = 1; i < argc; i++) {
		int r = bench_parse_common(argc, argv, &i);
		if (r < 0)
			usage();
		if (r > 0)
			continue;
		if (i + 1 >= argc)
			usage();
		if (!strcmp(argv[i], "--sizes"))
			nsizes = bench_parse_list(argv[++i], sizes, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--rtts"))
			rtts = atol(argv[++i]);
		else
			usage();
		if (nsizes < 1)
			usage();
	}
	if (rtts <= 0)
		rtts = bopt.quick ? 4000 : 20000;
	/* one round trip wakes a thread on each side, and whether the two
	 * land on one vCPU or two moves p50 by 3x on this kind of machine:
	 * more, shorter runs make the median a fair draw of placements */
	if (!bopt.runs)
		bopt.runs = bopt.quick ? 5 : 7;
	for (int s = 0; s < nsizes; s++) {
		struct echo_params p = { .size = (size_t)sizes[s],
					 .rtts = (uint64_t)rtts,
					 .warmup = (uint64_t)rtts / 20 + 10 };
		char point[64];
		if (sizes[s] < 1)
			usage();
		snprintf(point, sizeof(point), "size=%zu inflight=1", p.size);
		bench_point("echo", point, metrics, 7, impls,
			    (int)(sizeof(impls) / sizeof(impls[0])), &p,
			    s == 0 ? "ratio > 1 for latency means the library is slower" : NULL);
	}
	return 0;
}
