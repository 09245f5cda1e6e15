/*
 * Fan-out: one message published to every subscriber. A client process
 * holds the subscriber sockets (epoll) and reports each round once every
 * subscriber has received it; the server publishes the next round then.
 *
 *   lib   buffstreams: one bs_msg_alloc'd buffer per round, bs_msg_ref'd
 *         and handed to bs_send_msg once per subscriber id.
 *   base  a loop of writev(header, payload) over the same sockets.
 *
 * Server and subscribers are separate processes, so each holds one
 * descriptor per subscriber; the count is lowered to fit RLIMIT_NOFILE.
 */
#include "bench.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define WARMUP_ROUNDS 2

struct fanout_params {
	size_t size;
	int subs;
	int rounds; /* timed rounds, after WARMUP_ROUNDS untimed ones */
};

/* ---- the subscribers (the same for both servers) ---- */
struct sub {
	int fd;
	uint64_t rcvd;
};

static int subs_connect(const struct fanout_params *p, int port, struct sub *s,
			int ep, double deadline)
{
	for (int i = 0; i < p->subs; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &s[i] };
		if (connect_window((uint64_t)i, 256, deadline) != 0)
			return i;
		s[i].fd = sock_connect_from(port, i);
		if (s[i].fd < 0)
			return i;
		sock_nonblock(s[i].fd);
		epoll_ctl(ep, EPOLL_CTL_ADD, s[i].fd, &ev);
	}
	return p->subs;
}

/* Reads until every subscriber holds `rounds` messages in all. */
static int subs_read(const struct fanout_params *p, int ep, uint8_t *scratch,
		     uint64_t *frames, uint64_t want, double deadline)
{
	struct epoll_event evs[1024];
	size_t frame = p->size + 4;
	while (*frames < want) {
		if (bench_now() > deadline)
			return -1;
		int n = epoll_wait(ep, evs, 1024, 100);
		for (int i = 0; i < n; i++) {
			struct sub *s = evs[i].data.ptr;
			ssize_t r = read(s->fd, scratch, 65536);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0)
				return -1;
			uint64_t before = s->rcvd / frame;
			s->rcvd += (uint64_t)r;
			*frames += s->rcvd / frame - before;
		}
	}
	return 0;
}

static void fanout_client(void *arg, int rfd, int wfd)
{
	const struct fanout_params *p = arg;
	struct sub *s = calloc((size_t)p->subs, sizeof(*s));
	uint8_t *scratch = malloc(65536);
	int ep = epoll_create1(EPOLL_CLOEXEC), n = 0;
	double deadline = bench_now() + bopt.run_limit_s;
	uint64_t frames = 0;
	struct ctl m;

	if (!s || !scratch || ep < 0 || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	n = subs_connect(p, m.port, s, ep, deadline);
	ctl_send(wfd, n == p->subs ? CTL_READY : CTL_FAIL, 0, 0);
	if (n != p->subs)
		goto out;
	deadline = bench_now() + bopt.run_limit_s;
	for (int r = 0; r < p->rounds + WARMUP_ROUNDS; r++) {
		uint64_t want = (uint64_t)p->subs * (uint64_t)(r + 1);
		if (subs_read(p, ep, scratch, &frames, want, deadline) != 0 ||
		    frames != want) {
			ctl_send(wfd, CTL_FAIL, 0, 0);
			goto out;
		}
		ctl_send(wfd, CTL_ROUND, 0, (uint64_t)r);
	}
	/* every subscriber got exactly one copy of every round */
	for (int i = 0; i < n; i++)
		if (s[i].rcvd != (uint64_t)(p->rounds + WARMUP_ROUNDS) * (p->size + 4))
			ctl_send(wfd, CTL_FAIL, 0, 0);
	ctl_send(wfd, CTL_DONE, 0, 0);
	ctl_recv(rfd, &m, bopt.run_limit_s); /* until the server is done */
out:
	for (int i = 0; i < n; i++)
		close(s[i].fd);
	free(s);
	free(scratch);
	if (ep >= 0)
		close(ep);
}

/* ---- rounds, timed the same way for both servers ---- */
typedef int (*publish_fn)(void *srv, const struct fanout_params *p, int round);

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int run_rounds(struct bench_child *c, const struct fanout_params *p,
		      publish_fn publish, void *srv, double *out)
{
	double deliver[256], send[256], total = 0, c0 = 0;
	struct ctl m;
	int nr = p->rounds < 256 ? p->rounds : 256;

	for (int r = 0; r < nr + WARMUP_ROUNDS; r++) {
		int k = r - WARMUP_ROUNDS;
		if (k == 0)
			c0 = bench_cpu();
		double t0 = bench_now();
		if (publish(srv, p, r) != 0)
			return -1;
		double t1 = bench_now();
		if (ctl_recv(c->rfd, &m, bopt.run_limit_s) != 0 ||
		    m.kind != CTL_ROUND || m.n != (uint64_t)r)
			return -1;
		if (k >= 0) {
			send[k] = (t1 - t0) * 1e3;
			deliver[k] = (bench_now() - t0) * 1e3;
			total += deliver[k] / 1e3;
		}
	}
	double cpu = bench_cpu() - c0;
	if (ctl_recv(c->rfd, &m, bopt.run_limit_s) != 0 || m.kind != CTL_DONE)
		return -1;
	qsort(deliver, (size_t)nr, sizeof(double), cmp_double);
	qsort(send, (size_t)nr, sizeof(double), cmp_double);
	double msgs = (double)p->subs * nr;
	out[0] = deliver[nr / 2];
	out[1] = send[nr / 2];
	out[2] = msgs / total;
	out[3] = cpu;
	out[4] = cpu > 0 ? msgs / cpu : 0;
	return 0;
}

/* ---- baseline: writev to each socket ---- */
struct base_srv {
	int *fds;
	uint8_t *payload;
};

static int base_publish(void *srv, const struct fanout_params *p, int round)
{
	struct base_srv *b = srv;
	uint8_t hdr[4];
	be32_store(hdr, (uint32_t)p->size);
	memset(b->payload, round, p->size);
	for (int i = 0; i < p->subs; i++) {
		struct iovec iov[2] = { { hdr, 4 }, { b->payload, p->size } };
		ssize_t n = writev(b->fds[i], iov, 2);
		if (n < 0)
			return -1;
		/* a blocking socket writes all unless interrupted */
		if ((size_t)n < 4 + p->size) {
			size_t done = (size_t)n;
			if (done < 4 && write_all(b->fds[i], hdr + done, 4 - done) != 0)
				return -1;
			size_t pd = done > 4 ? done - 4 : 0;
			if (write_all(b->fds[i], b->payload + pd, p->size - pd) != 0)
				return -1;
		}
	}
	return 0;
}

static int fanout_base(const void *pp, double *out)
{
	const struct fanout_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct base_srv b = { .fds = calloc((size_t)p->subs, sizeof(int)),
			      .payload = malloc(p->size) };
	int port, lfd = -1, n = 0, rc = -1;
	double deadline = bench_now() + bopt.run_limit_s;
	struct ctl m;

	atomic_store(&bshared->accepted, 0);
	if (!b.fds || !b.payload || child_start(&c, fanout_client, (void *)p) != 0)
		goto out;
	lfd = sock_listen(&port);
	if (lfd < 0 || ctl_send(c.wfd, CTL_PORT, port, 0) != 0)
		goto out;
	for (; n < p->subs; n++) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		if (poll(&pfd, 1, (int)((deadline - bench_now()) * 1000)) <= 0)
			goto out;
		b.fds[n] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (b.fds[n] < 0)
			goto out;
		atomic_fetch_add(&bshared->accepted, 1);
	}
	if (ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	rc = run_rounds(&c, p, base_publish, &b, out);
out:
	if (child_reap(&c, 10) != 0)
		rc = -1;
	for (int i = 0; i < n; i++)
		close(b.fds[i]);
	if (lfd >= 0)
		close(lfd);
	free(b.fds);
	free(b.payload);
	return rc;
}

/* ---- library: one shared buffer, one reference per subscriber ---- */
#if BENCH_WITH_LIB
struct lib_srv {
	bs_t *bs;
	bs_id_t *ids;
};

static int lib_publish(void *srv, const struct fanout_params *p, int round)
{
	struct lib_srv *l = srv;
	void *data;
	bs_msg_t *msg = bs_msg_alloc(p->size, &data);
	int rc = 0;
	if (!msg)
		return -1;
	memset(data, round, p->size);
	for (int i = 0; i < p->subs; i++) {
		bs_msg_ref(msg);
		if (bs_send_msg(l->bs, l->ids[i], msg, data, p->size) != 0) {
			bs_msg_release(msg);
			rc = -1;
		}
	}
	bs_msg_release(msg);
	return rc;
}

static int fanout_lib(const void *pp, double *out)
{
	const struct fanout_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct lib_srv l = { .ids = calloc((size_t)p->subs, sizeof(bs_id_t)) };
	int port, rc = -1;
	double deadline = bench_now() + bopt.run_limit_s;
	struct ctl m;

	atomic_store(&bshared->accepted, 0);
	if (!l.ids || child_start(&c, fanout_client, (void *)p) != 0)
		goto out;
	if (bench_lib_listen(&l.bs, &port, 1, 0) != 0 ||
	    ctl_send(c.wfd, CTL_PORT, port, 0) != 0)
		goto out;
	for (int n = 0; n < p->subs; n++) {
		bs_open_event_t ev;
		int ms = (int)((deadline - bench_now()) * 1000);
		if (ms <= 0 || bs_recv_open(l.bs, &ev, ms) != 0)
			goto out;
		l.ids[n] = ev.id;
		atomic_fetch_add(&bshared->accepted, 1);
	}
	/* end the hold of the last open event: a holder's sends wait for the
	 * hold to end, and this thread does not receive again */
	bs_release(l.bs);
	if (ctl_recv(c.rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	rc = run_rounds(&c, p, lib_publish, &l, out);
out:
	if (child_reap(&c, 10) != 0)
		rc = -1;
	bs_destroy(l.bs);
	free(l.ids);
	return rc;
}
#endif

static const struct bench_impl impls[] = {
#if BENCH_WITH_LIB
	{ "lib", fanout_lib },
#endif
	{ "base", fanout_base },
};

static const struct metric metrics[] = {
	{ "deliver_ms", "deliver_ms", 1 },
	{ "send_ms", "send_ms", 1 },
	{ "msgs_per_s", "msgs/s", 0 },
	{ "cpu_s", "cpu_s", 0 },
	{ "msgs_per_cpu_s", "msgs/cpu_s", 1 },
};

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_fanout [options]\n"
		"  --subs LIST        subscribers (default 10000, lowered to the fd limit)\n"
		"  --size N           payload bytes (default 110)\n"
		"  --rounds N         timed publishes per run (default 20, quick 8)\n%s",
		bench_common_usage);
	exit(2);
}

int main(int argc, char **argv)
{
	long subs[BENCH_MAX_LIST] = { 10000 };
	int nsubs = 1;
	long size = 110, rounds = 0, nofile;

	bench_init();
	for (int i = 1; i < argc; i++) {
		int r = bench_parse_common(argc, argv, &i);
		if (r < 0)
			usage();
		if (r > 0)
			continue;
		if (i + 1 >= argc)
			usage();
		if (!strcmp(argv[i], "--subs"))
			nsubs = bench_parse_list(argv[++i], subs, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--size"))
			size = atol(argv[++i]);
		else if (!strcmp(argv[i], "--rounds"))
			rounds = atol(argv[++i]);
		else
			usage();
		if (nsubs < 1 || size < 1)
			usage();
	}
	if (rounds <= 0)
		rounds = bopt.quick ? 8 : 20;
	if (rounds > 256)
		rounds = 256;
	nofile = bench_raise_nofile();

	for (int k = 0; k < nsubs; k++) {
		struct fanout_params p = { .size = (size_t)size, .subs = (int)subs[k],
					   .rounds = (int)rounds };
		char point[96], note[256];
		/* 200 descriptors spare for the listener, epoll, I/O threads */
		long fit = nofile - 200, ports = bench_port_range() - 1000;
		if (ports < fit)
			fit = ports;
		if (p.subs > fit) {
			snprintf(note, sizeof(note),
				 "subscribers lowered from %d to %ld to fit RLIMIT_NOFILE=%ld "
				 "(server and subscribers are separate processes, one fd each)",
				 p.subs, fit, nofile);
			p.subs = (int)fit;
		} else {
			snprintf(note, sizeof(note),
				 "%d subscribers; RLIMIT_NOFILE=%ld per process, server and "
				 "subscribers in separate processes (one fd each side)",
				 p.subs, nofile);
		}
		if (p.subs < 1)
			usage();
		snprintf(point, sizeof(point), "subs=%d size=%zu", p.subs, p.size);
		bench_point("fanout", point, metrics, 5, impls,
			    (int)(sizeof(impls) / sizeof(impls[0])), &p, note);
	}
	return 0;
}
