/*
 * Ingest: a plain-socket client process sends 4-byte big-endian framed
 * messages as fast as it can (256 KiB writes) over one or more
 * connections; the server counts and releases them.
 *
 *   lib   buffstreams; `threads` application threads drain with
 *         bs_recv_data_batch and release every message.
 *   base  one blocking reader per connection that reads 256 KiB chunks and
 *         walks the frame headers in place (no handoff, no copy).
 *   sink  a reader that does nothing but read, 4 MiB at a time, and count
 *         bytes: what a reader with no work of its own takes from this
 *         client. (Smaller reads made it slower than base here: a reader
 *         that always keeps up reads a little at a time and is woken for
 *         each write.)
 *
 * client_busy is the client's CPU time over its sending time: near 1, the
 * one sending thread ran flat out and the sender, not the reader, set the
 * pace.
 *   zmq   (bench-peers build) ZeroMQ PUSH -> PULL, one receiving thread.
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

#define CHUNK (256 * 1024)
#define SINK_READ (4 * 1024 * 1024)

struct ingest_params {
	size_t size;
	int conns;
	int threads;
	uint64_t per_conn; /* messages per connection */
};

/* The moment the last message arrived, taken by whichever thread saw it. */
struct finish {
	_Atomic int remaining;
	double t1, c1;
};

static void finish_one(struct finish *f)
{
	double t = bench_now(), c = bench_cpu();
	if (atomic_fetch_sub(&f->remaining, 1) == 1) {
		f->t1 = t;
		f->c1 = c;
	}
}

static void fill_metrics(const struct ingest_params *p, double t0, double c0,
			 const struct finish *f, const struct ctl *done, double *out)
{
	double msgs = (double)p->per_conn * p->conns;
	double wall = f->t1 - t0, cpu = f->c1 - c0;
	out[0] = msgs / wall;
	out[1] = msgs * (double)p->size / wall / 1e6;
	out[2] = cpu;
	out[3] = cpu > 0 ? msgs / cpu : 0;
	out[4] = wall;
	out[5] = done->v[1] > 0 ? done->v[0] / done->v[1] : 0;
}

/* ---- the client (the same for every server) ---- */
struct sender {
	int fd;
	const uint8_t *buf;
	size_t frames_per_buf;
	size_t frame;
	uint64_t count;
	int err;
};

static void *sender_main(void *a)
{
	struct sender *s = a;
	uint64_t left = s->count;
	while (left) {
		size_t k = left < s->frames_per_buf ? (size_t)left : s->frames_per_buf;
		if (write_all(s->fd, s->buf, k * s->frame) != 0) {
			s->err = errno;
			break;
		}
		left -= k;
	}
	return NULL;
}

static void ingest_client(void *arg, int rfd, int wfd)
{
	const struct ingest_params *p = arg;
	size_t frame = p->size + 4;
	size_t nf = CHUNK / frame ? CHUNK / frame : 1;
	uint8_t *buf = malloc(nf * frame);
	struct sender s[64];
	pthread_t th[64];
	struct ctl m;
	int n = p->conns, fail = 0;

	if (!buf || n > 64 || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	frames_fill(buf, nf, p->size);
	for (int i = 0; i < n; i++) {
		s[i] = (struct sender){ .fd = sock_connect(m.port), .buf = buf,
					.frames_per_buf = nf, .frame = frame,
					.count = p->per_conn };
		if (s[i].fd < 0)
			fail = 1;
	}
	ctl_send(wfd, fail ? CTL_FAIL : CTL_READY, 0, 0);
	if (fail || ctl_recv(rfd, &m, bopt.run_limit_s) != 0 || m.kind != CTL_GO)
		goto out;
	double t0 = bench_now(), c0 = bench_cpu();
	for (int i = 0; i < n; i++)
		pthread_create(&th[i], NULL, sender_main, &s[i]);
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		fail |= s[i].err != 0;
	}
	/* the CPU and time of sending, taken before the sockets close */
	struct ctl done = { .kind = fail ? CTL_FAIL : CTL_DONE,
			    .v = { bench_cpu() - c0, bench_now() - t0 } };
	for (int i = 0; i < n; i++)
		close(s[i].fd);
	ctl_sendv(wfd, &done);
out:
	free(buf);
}

/* ---- baseline: read 256 KiB, walk the headers in place ---- */
struct reader {
	int fd;
	bool walk;              /* false: count bytes only (sink) */
	uint64_t want, got;
	size_t size;
	double deadline;
	struct finish *fin;
};

static void *reader_main(void *a)
{
	struct reader *r = a;
	size_t cap = r->walk ? CHUNK : SINK_READ;
	uint8_t *buf = malloc(cap);
	size_t have = 0;
	uint64_t bytes = 0;
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };

	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (buf && r->got < r->want) {
		ssize_t n = read(r->fd, buf + have, cap - have);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR) &&
			    bench_now() < r->deadline)
				continue;
			break;
		}
		if (!r->walk) {
			bytes += (uint64_t)n;
			r->got = bytes / (r->size + 4);
			continue;
		}
		have += (size_t)n;
		size_t off = 0;
		while (have - off >= 4) {
			size_t len = be32_load(buf + off);
			if (have - off < 4 + len)
				break;
			if (len != r->size)
				goto out; /* not the stream that was sent */
			off += 4 + len;
			r->got++;
		}
		/* keep the partial frame at the front (less than one frame) */
		memmove(buf, buf + off, have - off);
		have -= off;
	}
out:
	if (r->got == r->want)
		finish_one(r->fin);
	free(buf);
	return NULL;
}

static int accept_n(int lfd, int *fds, int n, double deadline)
{
	for (int i = 0; i < n; i++) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		if (poll(&pfd, 1, (int)((deadline - bench_now()) * 1000)) <= 0)
			return -1;
		fds[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fds[i] < 0)
			return -1;
	}
	return 0;
}

static int ingest_readers(const struct ingest_params *p, bool walk, double *out)
{
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct finish fin = { .remaining = p->conns };
	struct reader r[64];
	pthread_t th[64];
	int fds[64], port, lfd = -1, rc = -1, started = 0;
	double deadline = bench_now() + bopt.run_limit_s, t0, c0;
	struct ctl m;

	for (int i = 0; i < p->conns; i++)
		fds[i] = -1;
	if (child_start(&c, ingest_client, (void *)p) != 0)
		return -1;
	lfd = sock_listen(&port);
	if (lfd < 0 || ctl_send(c.wfd, CTL_PORT, port, 0) != 0 ||
	    accept_n(lfd, fds, p->conns, deadline) != 0 ||
	    ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	for (int i = 0; i < p->conns; i++) {
		r[i] = (struct reader){ .fd = fds[i], .walk = walk, .want = p->per_conn,
					.size = p->size, .deadline = deadline,
					.fin = &fin };
		pthread_create(&th[i], NULL, reader_main, &r[i]);
		started++;
	}
	t0 = bench_now();
	c0 = bench_cpu();
	ctl_send(c.wfd, CTL_GO, 0, 0);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	started = 0;
	if (atomic_load(&fin.remaining) != 0 ||
	    ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	fill_metrics(p, t0, c0, &fin, &m, out);
	rc = 0;
out:
	for (int i = 0; i < p->conns; i++)
		if (fds[i] >= 0)
			shutdown(fds[i], SHUT_RDWR);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < p->conns; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (lfd >= 0)
		close(lfd);
	if (child_reap(&c, 5) != 0)
		rc = -1;
	return rc;
}

static int ingest_base(const void *pp, double *out)
{
	return ingest_readers(pp, true, out);
}

static int ingest_sink(const void *pp, double *out)
{
	return ingest_readers(pp, false, out);
}

/* ---- library: application threads drain with bs_recv_data_batch ---- */
#if BENCH_WITH_LIB
struct drain {
	bs_t *bs;
	uint64_t total;
	size_t size;
	_Atomic uint64_t got;
	_Atomic int stop;
	_Atomic int bad;
	double deadline;
	struct finish fin;
};

static void *drain_main(void *a)
{
	struct drain *d = a;
	bs_data_t ev[256];

	while (!atomic_load(&d->stop)) {
		int n = bs_recv_data_batch(d->bs, ev, 256, 100);
		if (n > 0) {
			for (int i = 0; i < n; i++)
				if (ev[i].len != d->size)
					atomic_store(&d->bad, 1);
			bs_data_release(ev, (size_t)n);
			uint64_t before = atomic_fetch_add(&d->got, (uint64_t)n);
			if (before < d->total && before + (uint64_t)n >= d->total) {
				finish_one(&d->fin);
				atomic_store(&d->stop, 1);
			}
		} else if (n != BS_ETIMEDOUT && n != BS_EAGAIN) {
			break;
		} else if (bench_now() > d->deadline) {
			atomic_store(&d->stop, 1);
		}
	}
	return NULL;
}

static int ingest_lib(const void *pp, double *out)
{
	const struct ingest_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct drain *d = calloc(1, sizeof(*d));
	pthread_t th[64];
	bs_t *bs = NULL;
	int port, rc = -1, started = 0;
	double t0, c0;
	struct ctl m;

	if (!d || child_start(&c, ingest_client, (void *)p) != 0) {
		free(d);
		return -1;
	}
	if (bench_lib_listen(&bs, &port, 1, 1) != 0 ||
	    ctl_send(c.wfd, CTL_PORT, port, 0) != 0)
		goto out;
	for (int i = 0; i < p->conns; i++) {
		bs_open_event_t oev;
		if (bs_recv_open(bs, &oev, (int)(bopt.run_limit_s * 1000)) != 0)
			goto out;
	}
	/* this thread holds the last connection it received an open event
	 * of until its next receive: let the drainers have it */
	bs_release(bs);
	if (ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	d->bs = bs;
	d->total = p->per_conn * (uint64_t)p->conns;
	d->size = p->size;
	d->deadline = bench_now() + bopt.run_limit_s;
	d->fin.remaining = 1;
	for (int i = 0; i < p->threads && i < 64; i++, started++)
		pthread_create(&th[i], NULL, drain_main, d);
	t0 = bench_now();
	c0 = bench_cpu();
	ctl_send(c.wfd, CTL_GO, 0, 0);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	started = 0;
	if (atomic_load(&d->got) != d->total || atomic_load(&d->bad) ||
	    ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	fill_metrics(p, t0, c0, &d->fin, &m, out);
	rc = 0;
out:
	atomic_store(&d->stop, 1);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (child_reap(&c, 5) != 0)
		rc = -1;
	bs_destroy(bs);
	free(d);
	return rc;
}
#endif

/* ---- ZeroMQ PUSH/PULL ---- */
#if BENCH_WITH_ZMQ
static void zmq_client(void *arg, int rfd, int wfd)
{
	const struct ingest_params *p = arg;
	struct ctl m;
	char ep[64];
	uint8_t *buf = malloc(p->size);
	void *ctx = NULL, *s = NULL;
	int fail = 1;

	if (!buf || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	memset(buf, 7, p->size);
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", m.port);
	ctx = zmq_ctx_new();
	s = zmq_socket(ctx, ZMQ_PUSH);
	/* one message first, so the connection is up before the clock starts */
	if (zmq_connect(s, ep) != 0 || zmq_send(s, buf, p->size, 0) < 0)
		goto out;
	ctl_send(wfd, CTL_READY, 0, 0);
	if (ctl_recv(rfd, &m, bopt.run_limit_s) != 0 || m.kind != CTL_GO)
		goto out;
	for (uint64_t i = 0; i < p->per_conn; i++)
		if (zmq_send(s, buf, p->size, 0) < 0)
			goto out;
	fail = 0;
out:
	if (s)
		zmq_close(s); /* lingers until everything is sent */
	if (ctx)
		zmq_ctx_term(ctx);
	ctl_send(wfd, fail ? CTL_FAIL : CTL_DONE, 0, 0);
	free(buf);
}

static int ingest_zmq(const void *pp, double *out)
{
	const struct ingest_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct finish fin = { .remaining = 1 };
	void *ctx = NULL, *s = NULL;
	char ep[128];
	size_t eplen = sizeof(ep);
	int rc = -1, tmo = 200;
	uint64_t got = 0;
	double t0, c0, deadline = bench_now() + bopt.run_limit_s;
	zmq_msg_t msg;
	struct ctl m;

	if (p->conns != 1 || p->threads != 1)
		return 1; /* one PULL socket, one receiving thread */
	if (child_start(&c, zmq_client, (void *)p) != 0)
		return -1;
	ctx = zmq_ctx_new();
	s = zmq_socket(ctx, ZMQ_PULL);
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof(tmo));
	zmq_msg_init(&msg);
	if (zmq_bind(s, "tcp://127.0.0.1:*") != 0 ||
	    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &eplen) != 0 ||
	    ctl_send(c.wfd, CTL_PORT, addr_port(ep), 0) != 0 ||
	    ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0 ||
	    zmq_msg_recv(&msg, s, 0) < 0)
		goto out;
	t0 = bench_now();
	c0 = bench_cpu();
	ctl_send(c.wfd, CTL_GO, 0, 0);
	while (got < p->per_conn && bench_now() < deadline) {
		if (zmq_msg_recv(&msg, s, 0) < 0) {
			if (zmq_errno() == EAGAIN || zmq_errno() == EINTR)
				continue;
			break;
		}
		got++;
	}
	if (got != p->per_conn)
		goto out;
	finish_one(&fin);
	if (ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	fill_metrics(p, t0, c0, &fin, &m, out);
	rc = 0;
out:
	zmq_msg_close(&msg);
	if (s)
		zmq_close(s);
	if (ctx)
		zmq_ctx_term(ctx);
	if (child_reap(&c, 5) != 0)
		rc = -1;
	return rc;
}
#endif

static const struct bench_impl impls[] = {
#if BENCH_WITH_LIB
	{ "lib", ingest_lib },
#endif
	{ "base", ingest_base },
	{ "sink", ingest_sink },
#if BENCH_WITH_ZMQ
	{ "zmq", ingest_zmq },
#endif
};

static const struct metric metrics[] = {
	{ "msgs_per_s", "msgs/s", 1 },
	{ "mb_per_s", "MB/s", 0 },
	{ "cpu_s", "cpu_s", 0 },
	{ "msgs_per_cpu_s", "msgs/cpu_s", 1 },
	{ "wall_s", "wall_s", 0 },
	{ "client_busy", "client_busy", 0 },
};

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_ingest [options]\n"
		"  --sizes LIST       payload sizes (default 110,1024,16384)\n"
		"  --conns LIST       connections (default 1; at most 64)\n"
		"  --threads LIST     library draining threads (default 1)\n"
		"  --mbytes N         payload MiB per run (default 3072, quick 1024)\n"
		"  --msgs N           at most this many messages per run\n"
		"                     (default 30000000, quick 10000000)\n%s",
		bench_common_usage);
	exit(2);
}

int main(int argc, char **argv)
{
	long sizes[BENCH_MAX_LIST] = { 110, 1024, 16384 }, conns[BENCH_MAX_LIST] = { 1 },
	     threads[BENCH_MAX_LIST] = { 1 };
	int nsizes = 3, nconns = 1, nthreads = 1;
	long mbytes = 0, maxmsgs = 0;

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
		else if (!strcmp(argv[i], "--conns"))
			nconns = bench_parse_list(argv[++i], conns, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--threads"))
			nthreads = bench_parse_list(argv[++i], threads, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--mbytes"))
			mbytes = atol(argv[++i]);
		else if (!strcmp(argv[i], "--msgs"))
			maxmsgs = atol(argv[++i]);
		else
			usage();
		if (nsizes < 1 || nconns < 1 || nthreads < 1)
			usage();
	}
	if (!mbytes)
		mbytes = bopt.quick ? 1024 : 3072;
	if (!maxmsgs)
		maxmsgs = bopt.quick ? 10000000 : 30000000;

	for (int a = 0; a < nconns; a++)
		for (int t = 0; t < nthreads; t++)
			for (int s = 0; s < nsizes; s++) {
				struct ingest_params p = {
					.size = (size_t)sizes[s],
					.conns = (int)conns[a],
					.threads = (int)threads[t],
				};
				uint64_t total = (uint64_t)mbytes * 1024 * 1024 / (p.size + 4);
				char point[128];
				if (p.conns < 1 || p.conns > 64 || p.threads < 1 ||
				    p.threads > 64 || sizes[s] < 1)
					usage();
				if (total > (uint64_t)maxmsgs)
					total = (uint64_t)maxmsgs;
				p.per_conn = total / (uint64_t)p.conns;
				if (!p.per_conn)
					p.per_conn = 1;
				snprintf(point, sizeof(point), "size=%zu conns=%d threads=%d",
					 p.size, p.conns, p.threads);
				bench_point("ingest", point, metrics, 6, impls,
					    (int)(sizeof(impls) / sizeof(impls[0])), &p, NULL);
			}
	return 0;
}
