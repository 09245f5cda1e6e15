/*
 * Many drainers: a client process writes numbered messages round-robin over
 * `conns` connections; library application threads drain them with
 * bs_recv_data_batch and spend `work_us` of CPU on each message, so the
 * figure is how well holds let several threads share the work while each
 * connection is still processed by one thread at a time, in wire order.
 *
 *   lib   buffstreams with `drainers` draining threads.
 *   base  the same server with one draining thread (the ratio is the
 *         speed-up of holds, not a comparison with plain sockets).
 *   ideal `drainers` plain threads doing the same work on messages that
 *         are already in memory, no sockets, no client: the most this
 *         machine gives the run at that moment (on a shared machine other
 *         processes take some of it), so lib/ideal is the library's share.
 *
 * Every message is checked: the connection's state (set with bs_set_user
 * while the main thread holds its open event) carries a busy flag, the
 * client's connection number and the next sequence number. A message that
 * finds the flag set (another thread is processing the connection), a
 * sequence number out of order, or a close event that comes before the
 * connection's last message counts as a violation; any violation fails
 * the program. The work is a calibrated loop of arithmetic, not a clock,
 * so a drainer that is descheduled does no work meanwhile.
 */
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if !BENCH_WITH_LIB
/* The base build (make bench-base) has no library: both sides need it. */
int main(void)
{
	printf("bench_drainers: both sides are the library; nothing to run without it\n");
	return 0;
}
#else
#define MAX_CONNS 1000
#define MAX_DRAINERS 64
#define MAX_CHUNK 64
#define HDR 8 /* payload starts with the connection number and sequence (be32) */

struct drainers_params {
	size_t size;        /* payload bytes, at least HDR */
	int conns;
	int drainers;       /* of the lib side; base has one */
	int batch;          /* bs_recv_data_batch max */
	int chunk;          /* messages per client write, per connection */
	double work_us;
	uint64_t work_iters; /* the calibrated loop count of work_us */
	uint64_t per_conn;
};

/* Checks failed in all runs of this process (the program's exit code). */
static uint64_t total_violations;

/* ---- the work ---- */
static _Atomic uint64_t work_sink;

/* A dependent chain of xorshift steps: the same instructions however the
 * thread is scheduled, and nothing the compiler can take away. */
static void work(uint64_t iters, uint64_t seed)
{
	uint64_t x = seed | 1;
	for (uint64_t i = 0; i < iters; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	atomic_store_explicit(&work_sink, x, memory_order_relaxed);
}

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Loop count of one µs of this thread's CPU time: the fastest of several
 * trials, as interference only ever slows a trial down. */
static double calibrate_iters_per_us(void)
{
	const uint64_t n = 2000000;
	double best = 1e9;
	work(n / 10, 1); /* warm up: frequency, caches */
	for (int t = 0; t < 9; t++) {
		double c0 = thread_cpu();
		work(n, (uint64_t)t);
		double us = (thread_cpu() - c0) * 1e6;
		if (us > 0 && us < best)
			best = us;
	}
	return (double)n / best;
}

/* ---- the client (the same for both sides) ---- */

/* Writes all of buf within the deadline (the sockets have a send timeout,
 * so a server that stopped reading cannot block the client for ever). */
static int write_until(int fd, const uint8_t *buf, size_t len, double deadline)
{
	while (len) {
		ssize_t w = write(fd, buf, len);
		if (w < 0) {
			if ((errno == EAGAIN || errno == EINTR) && bench_now() < deadline)
				continue;
			return -1;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static void drainers_client(void *arg, int rfd, int wfd)
{
	const struct drainers_params *p = arg;
	size_t frame = p->size + 4;
	uint8_t *buf = calloc((size_t)p->chunk, frame);
	int fds[MAX_CONNS];
	struct ctl m = { .kind = CTL_FAIL };
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	int n = 0;

	if (!buf || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	frames_fill(buf, (size_t)p->chunk, p->size);
	for (; n < p->conns; n++) {
		fds[n] = sock_connect(m.port);
		if (fds[n] < 0)
			break;
		setsockopt(fds[n], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	ctl_send(wfd, n == p->conns ? CTL_READY : CTL_FAIL, 0, 0);
	if (n != p->conns || ctl_recv(rfd, &m, bopt.run_limit_s) != 0 || m.kind != CTL_GO)
		goto out;
	m.kind = CTL_FAIL;
	double t0 = bench_now(), deadline = t0 + bopt.run_limit_s;
	/* round-robin: `chunk` messages to each connection in turn */
	for (uint64_t seq = 0; seq < p->per_conn; seq += (uint64_t)p->chunk) {
		size_t k = p->per_conn - seq < (uint64_t)p->chunk ? (size_t)(p->per_conn - seq)
								  : (size_t)p->chunk;
		for (int i = 0; i < n; i++) {
			for (size_t j = 0; j < k; j++) {
				be32_store(buf + j * frame + 4, (uint32_t)i);
				be32_store(buf + j * frame + 8, (uint32_t)(seq + j));
			}
			if (write_until(fds[i], buf, k * frame, deadline) != 0)
				goto out;
		}
	}
	m.kind = CTL_DONE;
	m.n = p->per_conn * (uint64_t)n;
	m.v[0] = bench_now() - t0;
	ctl_sendv(wfd, &m);
	/* the server says when it has processed everything: only then close,
	 * so that every close event follows the connection's last message */
	ctl_recv(rfd, &m, 2 * bopt.run_limit_s);
	m.kind = 0;
out:
	if (m.kind == CTL_FAIL)
		ctl_sendv(wfd, &m);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	free(buf);
}

/* ---- the library server ---- */
/* One connection's state, reached through its user value. Only the holder
 * touches it; the fields are atomics (relaxed) only so that a broken hold
 * shows up as a count instead of undefined behaviour. */
struct cstate {
	_Atomic int busy;
	_Atomic uint32_t client_conn; /* UINT32_MAX until the first message */
	_Atomic uint32_t next_seq;
	_Atomic uint64_t count;
	_Atomic int closed;
};

struct drain {
	const struct drainers_params *p;
	bs_t *bs;
	uint64_t total;
	double deadline;
	_Atomic uint64_t processed;
	_Atomic int stop;
	_Atomic uint64_t concurrent, out_of_order, unknown;
	double t1, c1; /* when the last message was processed */
};

static void process(struct drain *d, const bs_data_t *ev)
{
	struct cstate *st = ev->user;
	if (st == NULL || ev->len != d->p->size) {
		atomic_fetch_add(&d->unknown, 1);
		return;
	}
	if (atomic_exchange(&st->busy, 1) != 0)
		atomic_fetch_add(&d->concurrent, 1);
	uint32_t conn = be32_load(ev->data), seq = be32_load(ev->data + 4);
	uint32_t mine = atomic_load_explicit(&st->client_conn, memory_order_relaxed);
	uint32_t want = atomic_load_explicit(&st->next_seq, memory_order_relaxed);
	if (mine == UINT32_MAX)
		atomic_store_explicit(&st->client_conn, conn, memory_order_relaxed);
	else if (mine != conn)
		atomic_fetch_add(&d->unknown, 1);
	if (seq != want)
		atomic_fetch_add(&d->out_of_order, 1);
	atomic_store_explicit(&st->next_seq, seq + 1, memory_order_relaxed);
	work(d->p->work_iters, seq);
	atomic_fetch_add_explicit(&st->count, 1, memory_order_relaxed);
	atomic_store(&st->busy, 0);
}

static void *drainer_main(void *a)
{
	struct drain *d = a;
	bs_data_t ev[BS_RECV_BATCH_MAX];
	size_t max = (size_t)d->p->batch;

	while (!atomic_load(&d->stop)) {
		int n = bs_recv_data_batch(d->bs, ev, max, 50);
		if (n > 0) {
			for (int i = 0; i < n; i++)
				process(d, &ev[i]);
			bs_data_release(ev, (size_t)n);
			uint64_t before = atomic_fetch_add(&d->processed, (uint64_t)n);
			if (before < d->total && before + (uint64_t)n >= d->total) {
				d->t1 = bench_now();
				d->c1 = bench_cpu();
				atomic_store(&d->stop, 1);
			}
		} else if (n != BS_ETIMEDOUT && n != BS_EAGAIN) {
			break;
		} else if (bench_now() > d->deadline) {
			atomic_store(&d->stop, 1);
		}
	}
	/* what this thread still holds goes to the others at once */
	bs_release(d->bs);
	return NULL;
}

/* Close events: one per connection, each after its last message. */
static uint64_t check_closes(bs_t *bs, const struct drainers_params *p)
{
	uint64_t bad = 0;
	for (int i = 0; i < p->conns; i++) {
		bs_close_event_t ev;
		if (bs_recv_close(bs, &ev, (int)(bopt.run_limit_s * 1000)) != 0)
			return bad + (uint64_t)(p->conns - i);
		struct cstate *st = ev.user;
		if (st == NULL || atomic_fetch_add(&st->closed, 1) != 0 ||
		    atomic_load(&st->busy) ||
		    atomic_load(&st->count) != p->per_conn)
			bad++;
	}
	return bad;
}

static int drainers_run(const struct drainers_params *p, int drainers, double *out)
{
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct cstate *st = calloc((size_t)p->conns, sizeof(*st));
	struct drain *d = calloc(1, sizeof(*d));
	pthread_t th[MAX_DRAINERS];
	bs_t *bs = NULL;
	int port, rc = -1, started = 0;
	uint64_t violations = 0;
	double t0, c0;
	struct ctl m;

	if (!st || !d || child_start(&c, drainers_client, (void *)p) != 0) {
		free(st);
		free(d);
		return -1;
	}
	if (bench_lib_listen(&bs, &port, 1, 1) != 0 ||
	    ctl_send(c.wfd, CTL_PORT, port, 0) != 0)
		goto out;
	for (int i = 0; i < p->conns; i++) {
		bs_open_event_t oev;
		atomic_init(&st[i].client_conn, UINT32_MAX);
		if (bs_recv_open(bs, &oev, (int)(bopt.run_limit_s * 1000)) != 0 ||
		    bs_set_user(bs, oev.id, &st[i]) != 0)
			goto out;
	}
	/* the last open event's connection must not stay held by this thread */
	bs_release(bs);
	if (ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0 || m.kind != CTL_READY)
		goto out;
	d->p = p;
	d->bs = bs;
	d->total = p->per_conn * (uint64_t)p->conns;
	d->deadline = bench_now() + bopt.run_limit_s;
	for (; started < drainers && started < MAX_DRAINERS; started++)
		if (pthread_create(&th[started], NULL, drainer_main, d) != 0)
			break;
	t0 = bench_now();
	c0 = bench_cpu();
	if (started != drainers || ctl_send(c.wfd, CTL_GO, 0, 0) != 0)
		goto out;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	started = 0;
	/* the client's report of its writes */
	if (atomic_load(&d->processed) != d->total ||
	    ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0 || m.kind != CTL_DONE)
		goto out;
	ctl_send(c.wfd, CTL_STOP, 0, 0);
	violations = atomic_load(&d->concurrent) + atomic_load(&d->out_of_order) +
		     atomic_load(&d->unknown) + check_closes(bs, p);
	total_violations += violations;
	if (violations)
		fprintf(stderr, "  violations: concurrent %llu, out of order %llu, "
			"foreign %llu, closes %llu\n",
			(unsigned long long)atomic_load(&d->concurrent),
			(unsigned long long)atomic_load(&d->out_of_order),
			(unsigned long long)atomic_load(&d->unknown),
			(unsigned long long)(violations - atomic_load(&d->concurrent) -
					     atomic_load(&d->out_of_order) -
					     atomic_load(&d->unknown)));
	double wall = d->t1 - t0, cpu = d->c1 - c0, msgs = (double)d->total;
	out[0] = msgs / wall;
	out[1] = cpu;
	out[2] = cpu > 0 ? msgs / cpu : 0;
	out[3] = wall;
	out[4] = msgs * p->work_us * 1e-6 / wall; /* CPUs' worth of work done */
	out[5] = m.v[0];
	out[6] = (double)violations;
	rc = 0;
out:
	atomic_store(&d->stop, 1);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (child_reap(&c, 5) != 0)
		rc = -1;
	bs_destroy(bs);
	free(st);
	free(d);
	return rc;
}

static int drainers_lib(const void *pp, double *out)
{
	const struct drainers_params *p = pp;
	return drainers_run(p, p->drainers, out);
}

static int drainers_one(const void *pp, double *out)
{
	return drainers_run(pp, 1, out);
}

/* ---- the ceiling: the same work, no I/O ---- */
struct ideal {
	const struct drainers_params *p;
	uint64_t total;
	_Atomic uint64_t next;
};

static void *ideal_main(void *a)
{
	struct ideal *w = a;
	uint64_t step = (uint64_t)w->p->batch;
	for (;;) {
		uint64_t i = atomic_fetch_add(&w->next, step);
		if (i >= w->total)
			break;
		for (uint64_t j = i; j < i + step && j < w->total; j++)
			work(w->p->work_iters, j);
	}
	return NULL;
}

static int drainers_ideal(const void *pp, double *out)
{
	const struct drainers_params *p = pp;
	struct ideal w = { .p = p, .total = p->per_conn * (uint64_t)p->conns };
	pthread_t th[MAX_DRAINERS];
	int started = 0;
	double t0 = bench_now(), c0 = bench_cpu();

	for (; started < p->drainers; started++)
		if (pthread_create(&th[started], NULL, ideal_main, &w) != 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (started != p->drainers)
		return -1;
	double wall = bench_now() - t0, cpu = bench_cpu() - c0, msgs = (double)w.total;
	out[0] = msgs / wall;
	out[1] = cpu;
	out[2] = cpu > 0 ? msgs / cpu : 0;
	out[3] = wall;
	out[4] = msgs * p->work_us * 1e-6 / wall;
	out[5] = 0;
	out[6] = 0;
	return 0;
}

static const struct bench_impl impls[] = {
	{ "lib", drainers_lib },
	{ "base", drainers_one },
	{ "ideal", drainers_ideal },
};

static const struct metric metrics[] = {
	{ "msgs_per_s", "msgs/s", 1 },
	{ "cpu_s", "cpu_s", 0 },
	{ "msgs_per_cpu_s", "msgs/cpu_s", 1 },
	{ "wall_s", "wall_s", 0 },
	{ "work_cpus", "work_cpus", 0 },
	{ "client_s", "client_s", 0 },
	{ "violations", "violations", 0 },
};

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_drainers [options]\n"
		"  --conns N          connections (default 100, at most %d)\n"
		"  --drainers LIST    draining threads of the lib side (default 4;\n"
		"                     the base side has 1)\n"
		"  --batch LIST       bs_recv_data_batch max (default 16)\n"
		"  --work-us X        CPU work per message in µs (default 20)\n"
		"  --size N           payload bytes (default 110, at least %d)\n"
		"  --chunk N          messages per client write (default 8)\n"
		"  --msgs N           messages per connection (default 2000, quick 500)\n%s",
		MAX_CONNS, HDR, bench_common_usage);
	exit(2);
}

int main(int argc, char **argv)
{
	long drainers[BENCH_MAX_LIST] = { 4 }, batch[BENCH_MAX_LIST] = { 16 };
	int nd = 1, nb = 1;
	long conns = 100, size = 110, chunk = 8, msgs = 0;
	double work_us = 20;

	bench_init();
	for (int i = 1; i < argc; i++) {
		int r = bench_parse_common(argc, argv, &i);
		if (r < 0)
			usage();
		if (r > 0)
			continue;
		if (i + 1 >= argc)
			usage();
		if (!strcmp(argv[i], "--conns"))
			conns = atol(argv[++i]);
		else if (!strcmp(argv[i], "--drainers"))
			nd = bench_parse_list(argv[++i], drainers, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--batch"))
			nb = bench_parse_list(argv[++i], batch, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--work-us"))
			work_us = atof(argv[++i]);
		else if (!strcmp(argv[i], "--size"))
			size = atol(argv[++i]);
		else if (!strcmp(argv[i], "--chunk"))
			chunk = atol(argv[++i]);
		else if (!strcmp(argv[i], "--msgs"))
			msgs = atol(argv[++i]);
		else
			usage();
		if (nd < 1 || nb < 1 || conns < 1 || conns > MAX_CONNS || size < HDR ||
		    chunk < 1 || chunk > MAX_CHUNK || work_us < 0)
			usage();
	}
	for (int i = 0; i < nd; i++)
		if (drainers[i] < 1 || drainers[i] > MAX_DRAINERS)
			usage();
	for (int i = 0; i < nb; i++)
		if (batch[i] < 1 || batch[i] > BS_RECV_BATCH_MAX)
			usage();
	if (msgs <= 0)
		msgs = bopt.quick ? 500 : 2000;
	if (!bopt.runs)
		bopt.runs = bopt.quick ? 3 : 5;

	double per_us = calibrate_iters_per_us();
	uint64_t iters = (uint64_t)(per_us * work_us + 0.5);
	char note[160];
	snprintf(note, sizeof(note),
		 "base = the same server with 1 drainer; work = %llu loop steps "
		 "(%.1f per µs of CPU, calibrated)",
		 (unsigned long long)iters, per_us);
	for (int b = 0; b < nb; b++)
		for (int k = 0; k < nd; k++) {
			struct drainers_params p = {
				.size = (size_t)size, .conns = (int)conns,
				.drainers = (int)drainers[k], .batch = (int)batch[b],
				.chunk = (int)chunk, .work_us = work_us,
				.work_iters = iters, .per_conn = (uint64_t)msgs,
			};
			char point[128];
			snprintf(point, sizeof(point),
				 "conns=%d work_us=%g batch=%d drainers=%d", p.conns,
				 p.work_us, p.batch, p.drainers);
			bench_point("drainers", point, metrics,
				    (int)(sizeof(metrics) / sizeof(metrics[0])), impls,
				    (int)(sizeof(impls) / sizeof(impls[0])), &p, note);
		}
	if (total_violations) {
		printf("bench_drainers: %llu order or concurrency violations\n",
		       (unsigned long long)total_violations);
		return 1;
	}
	printf("  check: 0 order, concurrency or close violations in every run\n");
	return 0;
}
#endif
