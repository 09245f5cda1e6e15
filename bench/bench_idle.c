/*
 * Idle connections: a client process opens as many connections as the
 * descriptor limit allows and leaves them idle. The server reports its
 * resident memory per connection (VmRSS before and after), the accept rate
 * (first connect to last connection taken) and the CPU it burns while every
 * connection sits idle.
 *
 *   lib   buffstreams with open events on; the application takes every open
 *         event (the connection counts as accepted when its event is returned).
 *   base  a plain epoll server: accept4, a small per-connection record,
 *         EPOLLIN registration.
 */
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

struct idle_params {
	int conns;
	double idle_s; /* how long to watch the idle server's CPU */
};

/* ---- the client (the same for both servers) ---- */
static void idle_client(void *arg, int rfd, int wfd)
{
	const struct idle_params *p = arg;
	int *fds = calloc((size_t)p->conns, sizeof(int));
	double deadline = bench_now() + bopt.run_limit_s;
	struct ctl m;
	int n = 0;

	if (!fds || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	double t0 = bench_now();
	for (; n < p->conns; n++) {
		if (connect_window((uint64_t)n, 256, deadline) != 0)
			break;
		fds[n] = sock_connect_from(m.port, n);
		if (fds[n] < 0)
			break;
	}
	m.kind = n == p->conns ? CTL_READY : CTL_FAIL;
	m.v[0] = bench_now() - t0;
	ctl_sendv(wfd, &m);
	ctl_recv(rfd, &m, 2 * bopt.run_limit_s); /* hold them until told */
out:
	for (int i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
}

/* The server side's figures, measured the same way for both. */
struct idle_probe {
	long rss0;
	double t0, c0;
};

static void probe_start(struct idle_probe *pr)
{
	pr->rss0 = bench_rss_kb();
	pr->t0 = bench_now();
	pr->c0 = bench_cpu();
}

/* Called once the server holds every connection. */
static void probe_finish(const struct idle_params *p, const struct idle_probe *pr,
			 double *out)
{
	double t1 = bench_now(), c1 = bench_cpu();
	long rss1 = bench_rss_kb();
	bench_sleep(p->idle_s);
	double c2 = bench_cpu();
	out[0] = (double)(rss1 - pr->rss0) * 1024.0 / p->conns;
	out[1] = p->conns / (t1 - pr->t0);
	out[2] = (c1 - pr->c0) * 1e6 / p->conns;
	out[3] = (c2 - c1) * 1e3 / p->idle_s;
	out[4] = (double)rss1 / 1024.0;
}

/* ---- baseline: plain epoll server ---- */
struct pconn {
	int fd;
	uint32_t flags;
	void *rbuf; /* a read buffer would hang here once data arrives */
};

struct pserver {
	int lfd, ep;
	int done_fd;    /* written once `target` connections are held */
	size_t target;
	_Atomic int stop;
	struct pconn **conns;
	size_t n, cap;
};

static void pserver_accept(struct pserver *s)
{
	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (s->n == s->cap) {
			size_t nc = s->cap ? 2 * s->cap : 1024;
			struct pconn **t = realloc(s->conns, nc * sizeof(*t));
			if (!t) {
				close(fd);
				continue;
			}
			s->conns = t;
			s->cap = nc;
		}
		struct pconn *c = calloc(1, sizeof(*c));
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		if (!c || epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
		s->conns[s->n++] = c;
		atomic_fetch_add(&bshared->accepted, 1);
		if (s->n == s->target) {
			uint64_t one = 1;
			if (write(s->done_fd, &one, sizeof(one)) < 0)
				return;
		}
	}
}

static void *pserver_main(void *a)
{
	struct pserver *s = a;
	struct epoll_event evs[256];
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
	char buf[512];

	epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &lev);
	while (!atomic_load(&s->stop)) {
		int n = epoll_wait(s->ep, evs, 256, 50);
		for (int i = 0; i < n; i++) {
			struct pconn *c = evs[i].data.ptr;
			if (!c) {
				pserver_accept(s);
				continue;
			}
			/* idle peers send nothing; EOF or data: just drain */
			ssize_t r = read(c->fd, buf, sizeof(buf));
			if (r == 0 || (r < 0 && errno != EAGAIN))
				epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
		}
	}
	return NULL;
}

static int idle_base(const void *pp, double *out)
{
	const struct idle_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct pserver s = { .lfd = -1, .ep = -1, .target = (size_t)p->conns };
	struct idle_probe pr;
	pthread_t th;
	int port, rc = -1, running = 0;
	double deadline = bench_now() + bopt.run_limit_s;
	struct ctl m;

	atomic_store(&bshared->accepted, 0);
	if (child_start(&c, idle_client, (void *)p) != 0)
		return -1;
	s.lfd = sock_listen(&port);
	s.ep = epoll_create1(EPOLL_CLOEXEC);
	s.done_fd = eventfd(0, EFD_CLOEXEC);
	if (s.lfd < 0 || s.ep < 0 || s.done_fd < 0 || sock_nonblock(s.lfd) != 0 ||
	    pthread_create(&th, NULL, pserver_main, &s) != 0)
		goto out;
	running = 1;
	bench_sleep(0.01);
	probe_start(&pr);
	if (ctl_send(c.wfd, CTL_PORT, port, 0) != 0)
		goto out;
	/* sleep until the server thread holds them all */
	struct pollfd pfd = { .fd = s.done_fd, .events = POLLIN };
	if (poll(&pfd, 1, (int)((deadline - bench_now()) * 1000)) != 1)
		goto out;
	probe_finish(p, &pr, out);
	if (ctl_recv(c.rfd, &m, bopt.run_limit_s) == 0)
		rc = 0;
out:
	if (child_reap(&c, 10) != 0)
		rc = -1;
	if (running) {
		atomic_store(&s.stop, 1);
		pthread_join(th, NULL);
	}
	for (size_t i = 0; i < s.n; i++) {
		close(s.conns[i]->fd);
		free(s.conns[i]);
	}
	free(s.conns);
	if (s.ep >= 0)
		close(s.ep);
	if (s.lfd >= 0)
		close(s.lfd);
	if (s.done_fd >= 0)
		close(s.done_fd);
	return rc;
}

/* ---- library ---- */
#if BENCH_WITH_LIB
static int idle_lib(const void *pp, double *out)
{
	const struct idle_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct idle_probe pr;
	bs_t *bs = NULL;
	int port, rc = -1;
	double deadline = bench_now() + bopt.run_limit_s;
	struct ctl m;

	atomic_store(&bshared->accepted, 0);
	if (child_start(&c, idle_client, (void *)p) != 0)
		return -1;
	if (bench_lib_listen(&bs, &port, 1, 0) != 0)
		goto out;
	bench_sleep(0.01);
	probe_start(&pr);
	if (ctl_send(c.wfd, CTL_PORT, port, 0) != 0)
		goto out;
	for (int n = 0; n < p->conns; n++) {
		bs_open_event_t ev;
		int ms = (int)((deadline - bench_now()) * 1000);
		if (ms <= 0 || bs_recv_open(bs, &ev, ms) != 0)
			goto out;
		atomic_fetch_add(&bshared->accepted, 1);
	}
	/* no hold outlives the open loop (this thread receives nothing else) */
	bs_release(bs);
	probe_finish(p, &pr, out);
	if (ctl_recv(c.rfd, &m, bopt.run_limit_s) == 0)
		rc = 0;
out:
	if (child_reap(&c, 10) != 0)
		rc = -1;
	bs_destroy(bs);
	return rc;
}
#endif

/* Memory is read from VmRSS: every run starts from a fresh process image so
 * heap pages a previous run left resident do not hide this run's growth. */
#if BENCH_WITH_LIB
static int idle_lib_fresh(const void *p, double *out)
{
	return bench_run_isolated(idle_lib, p, out);
}
#endif

static int idle_base_fresh(const void *p, double *out)
{
	return bench_run_isolated(idle_base, p, out);
}

static const struct bench_impl impls[] = {
#if BENCH_WITH_LIB
	{ "lib", idle_lib_fresh },
#endif
	{ "base", idle_base_fresh },
};

static const struct metric metrics[] = {
	{ "bytes_per_conn", "B/conn", 1 },
	{ "accepts_per_s", "accepts/s", 1 },
	{ "accept_cpu_us", "cpu_us/acc", 1 },
	{ "idle_cpu_ms_per_s", "idle_ms/s", 0 },
	{ "rss_mb", "rss_MB", 0 },
};

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_idle [options]\n"
		"  --conns N          idle connections (default: fd limit - 1000)\n"
		"  --idle S           seconds of idle CPU measured (default 1, quick 0.5)\n%s",
		bench_common_usage);
	exit(2);
}

int main(int argc, char **argv)
{
	long conns = 0, nofile;
	double idle_s = 0;

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
		else if (!strcmp(argv[i], "--idle"))
			idle_s = atof(argv[++i]);
		else
			usage();
	}
	if (idle_s <= 0)
		idle_s = bopt.quick ? 0.5 : 1.0;
	nofile = bench_raise_nofile();

	/* one descriptor per connection in each process; keep 1000 spare for
	 * the library's own descriptors and stay inside the local port range */
	long fit = nofile - 1000, ports = bench_port_range() - 2000;
	char note[256], point[64];
	if (ports < fit)
		fit = ports;
	if (conns <= 0 || conns > fit) {
		snprintf(note, sizeof(note),
			 "%ld idle connections%s: RLIMIT_NOFILE=%ld per process (client in "
			 "its own process), %ld local ports; idle_cpu in ms per s",
			 fit, conns > fit ? " (lowered)" : "", nofile, ports + 2000);
		conns = fit;
	} else {
		snprintf(note, sizeof(note), "%ld idle connections; idle_cpu in ms per s",
			 conns);
	}
	if (conns < 1)
		usage();
	struct idle_params p = { .conns = (int)conns, .idle_s = idle_s };
	snprintf(point, sizeof(point), "conns=%d", p.conns);
	bench_point("idle", point, metrics, 5, impls,
		    (int)(sizeof(impls) / sizeof(impls[0])), &p, note);
	return 0;
}
