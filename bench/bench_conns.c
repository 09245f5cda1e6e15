/*
 * Many connections echoing: a single-threaded epoll client process opens
 * `conns` connections and keeps `window` messages in flight on each until
 * every connection has had its share of round trips echoed.
 *
 *   lib       buffstreams echo server: application threads receive
 *             batches and echo each message with zero copy, one bs_send
 *             per message (the library coalesces the replies).
 *   lib-more  the same, but replies to one connection that follow each
 *             other in a batch are queued with BS_SEND_MORE and written by
 *             the last one, as an application can choose to.
 *   base      a single-threaded epoll echo server on plain non-blocking
 *             sockets (reads up to 256 KiB per wakeup, writes the whole
 *             frames back at once, queues only what the socket refused).
 */
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCRATCH (256 * 1024)

struct conns_params {
	size_t size;
	int conns;
	int window;
	int threads;      /* library application threads */
	uint64_t per_conn; /* round trips per connection */
};

/* ---- the client (the same for every server) ---- */
struct wconn {
	int fd;
	int armed_out;
	uint64_t owed;   /* bytes this connection should have written so far */
	uint64_t wrote;
	uint64_t rcvd;   /* bytes echoed back */
};

struct wclient {
	const struct conns_params *p;
	int ep;
	size_t frame;
	uint8_t *pattern; /* `window` frames back to back */
	size_t pattern_len;
};

/* Writes what is owed; arms EPOLLOUT only when the socket refuses. */
static int wconn_flush(struct wclient *w, struct wconn *c)
{
	while (c->wrote < c->owed) {
		size_t off = (size_t)(c->wrote % w->frame);
		size_t len = w->pattern_len - off;
		if (len > c->owed - c->wrote)
			len = (size_t)(c->owed - c->wrote);
		ssize_t n = write(c->fd, w->pattern + off, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return -1;
		c->wrote += (uint64_t)n;
	}
	int want = c->wrote < c->owed;
	if (want != c->armed_out) {
		struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0),
					  .data.ptr = c };
		epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->armed_out = want;
	}
	return 0;
}

/* Reads what arrived; returns 1 when the connection is complete. */
static int wconn_read(struct wclient *w, struct wconn *c, uint8_t *scratch)
{
	const struct conns_params *p = w->p;
	for (int i = 0; i < 4; i++) {
		ssize_t n = read(c->fd, scratch, SCRATCH);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return -1;
		c->rcvd += (uint64_t)n;
	}
	uint64_t done = c->rcvd / w->frame;
	uint64_t sent = c->owed / w->frame;
	uint64_t next = done + (uint64_t)p->window;
	if (next > p->per_conn)
		next = p->per_conn;
	if (next > sent)
		c->owed = next * w->frame;
	if (wconn_flush(w, c) != 0)
		return -1;
	return done == p->per_conn;
}

static int wclient_run(struct wclient *w, struct wconn *cs, double deadline)
{
	const struct conns_params *p = w->p;
	struct epoll_event evs[512];
	uint8_t *scratch = malloc(SCRATCH);
	int left = p->conns;

	if (!scratch)
		return -1;
	for (int i = 0; i < p->conns; i++) {
		uint64_t first = p->per_conn < (uint64_t)p->window ? p->per_conn
								  : (uint64_t)p->window;
		cs[i].owed = first * w->frame;
		if (wconn_flush(w, &cs[i]) != 0)
			goto fail;
	}
	while (left > 0) {
		if (bench_now() > deadline)
			goto fail;
		int n = epoll_wait(w->ep, evs, 512, 100);
		for (int i = 0; i < n; i++) {
			struct wconn *c = evs[i].data.ptr;
			int r = 0;
			if (evs[i].events & EPOLLOUT)
				r = wconn_flush(w, c);
			if (r == 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
				uint64_t before = c->rcvd / w->frame;
				r = wconn_read(w, c, scratch);
				if (r == 1 && before != p->per_conn)
					left--;
			}
			if (r < 0)
				goto fail;
		}
	}
	free(scratch);
	return 0;
fail:
	free(scratch);
	return -1;
}

static void conns_client(void *arg, int rfd, int wfd)
{
	const struct conns_params *p = arg;
	struct wclient w = { .p = p, .frame = p->size + 4 };
	struct wconn *cs = calloc((size_t)p->conns, sizeof(*cs));
	struct ctl m = { .kind = CTL_FAIL };
	double deadline = bench_now() + bopt.run_limit_s;
	int n = 0;

	w.pattern_len = w.frame * (size_t)p->window;
	w.pattern = malloc(w.pattern_len);
	w.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!cs || !w.pattern || w.ep < 0 || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	frames_fill(w.pattern, (size_t)p->window, p->size);
	for (; n < p->conns; n++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &cs[n] };
		if (connect_window((uint64_t)n, 256, deadline) != 0)
			break;
		cs[n].fd = sock_connect_from(m.port, n);
		if (cs[n].fd < 0)
			break;
		sock_nonblock(cs[n].fd);
		epoll_ctl(w.ep, EPOLL_CTL_ADD, cs[n].fd, &ev);
	}
	m.kind = CTL_FAIL;
	ctl_send(wfd, n == p->conns ? CTL_READY : CTL_FAIL, 0, 0);
	if (n != p->conns || ctl_recv(rfd, &m, bopt.run_limit_s) != 0)
		goto out;
	double t0 = bench_now();
	m.kind = CTL_FAIL;
	if (wclient_run(&w, cs, t0 + bopt.run_limit_s) == 0) {
		m.kind = CTL_DONE;
		m.n = p->per_conn * (uint64_t)p->conns;
		m.v[0] = bench_now() - t0;
	}
out:
	/* report first: closing thousands of sockets is not part of the run */
	ctl_sendv(wfd, &m);
	for (int i = 0; i < n; i++)
		close(cs[i].fd);
	free(cs);
	free(w.pattern);
	if (w.ep >= 0)
		close(w.ep);
}

/* Connect phase, timed exchange, metrics: the same for every server. */
static int drive(struct bench_child *c, int port, void (*tick)(void *),
		 void *arg, double *out)
{
	struct ctl m;
	if (ctl_send(c->wfd, CTL_PORT, port, 0) != 0 ||
	    ctl_recv_ticking(c->rfd, &m, bopt.run_limit_s, tick, arg) != 0)
		return -1;
	double t0 = bench_now(), c0 = bench_cpu();
	if (ctl_send(c->wfd, CTL_GO, 0, 0) != 0 ||
	    ctl_recv(c->rfd, &m, 2 * bopt.run_limit_s) != 0)
		return -1;
	double wall = bench_now() - t0, cpu = bench_cpu() - c0;
	out[0] = (double)m.n / wall;
	out[1] = cpu;
	out[2] = cpu > 0 ? (double)m.n / cpu : 0;
	out[3] = wall;
	out[4] = m.v[0];
	return 0;
}

/* ---- baseline: single-threaded epoll echo server ---- */
struct econn {
	int fd;
	uint8_t *carry; /* a partial frame, waiting for the rest */
	size_t carry_len, carry_cap;
	uint8_t *out;   /* whole frames the socket refused */
	size_t out_len, out_cap;
};

struct eserver {
	int lfd, ep;
	_Atomic int stop;
	uint8_t *scratch;
	struct econn **byfd; /* open connections, to close what is left */
	long nfd;
};

static int append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p,
		  size_t n)
{
	if (*len + n > *cap) {
		size_t nc = *cap ? *cap : 256;
		while (nc < *len + n)
			nc *= 2;
		uint8_t *b = realloc(*buf, nc);
		if (!b)
			return -1;
		*buf = b;
		*cap = nc;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	return 0;
}

static void econn_close(struct eserver *s, struct econn *c)
{
	s->byfd[c->fd] = NULL;
	epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->carry);
	free(c->out);
	free(c);
}

static int econn_flush(struct eserver *s, struct econn *c)
{
	while (c->out_len) {
		ssize_t n = write(c->fd, c->out, c->out_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return -1;
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
	/* drained: read again, stop watching for room */
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	return epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* One read per wakeup (level-triggered), whole frames echoed at once. */
static int econn_read(struct eserver *s, struct econn *c)
{
	uint8_t *buf = s->scratch;
	size_t have = c->carry_len;
	memcpy(buf, c->carry, have);
	ssize_t n = read(c->fd, buf + have, SCRATCH - have);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0)
		return -1;
	have += (size_t)n;
	size_t off = 0;
	while (have - off >= 4) {
		size_t len = be32_load(buf + off);
		if (len > SCRATCH / 2)
			return -1; /* bigger than this server takes */
		if (have - off < 4 + len)
			break;
		off += 4 + len;
	}
	c->carry_len = 0;
	if (append(&c->carry, &c->carry_len, &c->carry_cap, buf + off, have - off))
		return -1;
	size_t w = 0;
	while (w < off) {
		ssize_t k = write(c->fd, buf + w, off - w);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN)
			break;
		if (k <= 0)
			return -1;
		w += (size_t)k;
	}
	if (w < off) {
		/* the peer is slow: keep the rest, stop reading until it drains */
		if (append(&c->out, &c->out_len, &c->out_cap, buf + w, off - w))
			return -1;
		struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
		return epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
	}
	return 0;
}

static void eserver_accept(struct eserver *s)
{
	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct econn *c = fd < s->nfd ? calloc(1, sizeof(*c)) : NULL;
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		if (!c || epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
		s->byfd[fd] = c;
		atomic_fetch_add(&bshared->accepted, 1);
	}
}

static void *eserver_main(void *a)
{
	struct eserver *s = a;
	struct epoll_event evs[512];
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };

	epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &lev);
	while (!atomic_load(&s->stop)) {
		int n = epoll_wait(s->ep, evs, 512, 50);
		for (int i = 0; i < n; i++) {
			struct econn *c = evs[i].data.ptr;
			int r = 0;
			if (!c) {
				eserver_accept(s);
				continue;
			}
			if (evs[i].events & EPOLLOUT)
				r = econn_flush(s, c);
			else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				r = econn_read(s, c);
			if (r != 0)
				econn_close(s, c);
		}
	}
	return NULL;
}

static int conns_base(const void *pp, double *out)
{
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct eserver s = { .lfd = -1, .ep = -1 };
	pthread_t th;
	int port, rc = -1;

	atomic_store(&bshared->accepted, 0);
	if (child_start(&c, conns_client, (void *)pp) != 0)
		return -1;
	s.scratch = malloc(SCRATCH);
	s.nfd = bench_raise_nofile();
	s.byfd = calloc((size_t)s.nfd, sizeof(*s.byfd));
	s.lfd = sock_listen(&port);
	s.ep = epoll_create1(EPOLL_CLOEXEC);
	if (s.scratch && s.byfd && s.lfd >= 0 && s.ep >= 0 &&
	    sock_nonblock(s.lfd) == 0 &&
	    pthread_create(&th, NULL, eserver_main, &s) == 0) {
		rc = drive(&c, port, NULL, NULL, out);
		if (child_reap(&c, 10) != 0)
			rc = -1;
		atomic_store(&s.stop, 1);
		pthread_join(th, NULL);
	}
	child_reap(&c, 5);
	for (long fd = 0; s.byfd && fd < s.nfd; fd++)
		if (s.byfd[fd])
			econn_close(&s, s.byfd[fd]);
	free(s.byfd);
	if (s.ep >= 0)
		close(s.ep);
	if (s.lfd >= 0)
		close(s.lfd);
	free(s.scratch);
	return rc;
}

/* ---- library ---- */
#if BENCH_WITH_LIB
/* Lets the client pace its connects by what the library has accepted. */
static void lib_tick(void *arg)
{
	bs_stats_t st;
	bs_stats(arg, &st);
	atomic_store(&bshared->accepted, st.conns_accepted);
}

static int conns_lib_run(const void *pp, double *out, int more)
{
	const struct conns_params *p = pp;
	struct bench_child c = { .pid = 0, .wfd = -1, .rfd = -1 };
	struct bench_lib_echo e = { .bs = NULL, .more = more };
	pthread_t th[64];
	int port, rc = -1, started = 0;

	atomic_store(&bshared->accepted, 0);
	if (child_start(&c, conns_client, (void *)pp) != 0)
		return -1;
	if (bench_lib_listen(&e.bs, &port, 0, 0) == 0) {
		for (; started < p->threads && started < 64; started++)
			if (pthread_create(&th[started], NULL, bench_lib_echo_main, &e) != 0)
				break;
		if (started == p->threads)
			rc = drive(&c, port, lib_tick, e.bs, out);
		if (child_reap(&c, 10) != 0)
			rc = -1;
		atomic_store(&e.stop, 1);
		for (int i = 0; i < started; i++)
			pthread_join(th[i], NULL);
		if (atomic_load(&e.send_errors))
			rc = -1;
	}
	child_reap(&c, 5);
	bs_destroy(e.bs);
	return rc;
}

static int conns_lib(const void *pp, double *out)
{
	return conns_lib_run(pp, out, 0);
}

static int conns_lib_more(const void *pp, double *out)
{
	return conns_lib_run(pp, out, 1);
}
#endif

static const struct bench_impl impls[] = {
#if BENCH_WITH_LIB
	{ "lib", conns_lib },
	{ "lib-more", conns_lib_more },
#endif
	{ "base", conns_base },
};

static const struct metric metrics[] = {
	{ "msgs_per_s", "rtt/s", 1 },
	{ "cpu_s", "cpu_s", 0 },
	{ "msgs_per_cpu_s", "msgs/cpu_s", 1 },
	{ "wall_s", "wall_s", 0 },
	{ "client_s", "client_s", 0 },
};

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_conns [options]\n"
		"  --conns LIST       connections (default 1000)\n"
		"  --window N         messages in flight per connection (default 8)\n"
		"  --size N           payload bytes (default 110)\n"
		"  --threads LIST     library application threads (default 1)\n"
		"  --msgs N           round trips per run, spread over the connections\n"
		"                     (default 300000, quick 100000; at least 2 windows each)\n%s",
		bench_common_usage);
	exit(2);
}

int main(int argc, char **argv)
{
	long conns[BENCH_MAX_LIST] = { 1000 }, threads[BENCH_MAX_LIST] = { 1 };
	int nconns = 1, nthreads = 1;
	long window = 8, size = 110, msgs = 0;
	long nofile;

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
			nconns = bench_parse_list(argv[++i], conns, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--threads"))
			nthreads = bench_parse_list(argv[++i], threads, BENCH_MAX_LIST);
		else if (!strcmp(argv[i], "--window"))
			window = atol(argv[++i]);
		else if (!strcmp(argv[i], "--size"))
			size = atol(argv[++i]);
		else if (!strcmp(argv[i], "--msgs"))
			msgs = atol(argv[++i]);
		else
			usage();
		if (nconns < 1 || nthreads < 1 || window < 1 || size < 1)
			usage();
	}
	if (msgs <= 0)
		msgs = bopt.quick ? 100000 : 300000;
	nofile = bench_raise_nofile();

	for (int t = 0; t < nthreads; t++)
		for (int a = 0; a < nconns; a++) {
			struct conns_params p = { .size = (size_t)size,
						  .conns = (int)conns[a],
						  .window = (int)window,
						  .threads = (int)threads[t] };
			char point[128], note[160];
			const char *why = NULL;
			/* server and client are separate processes: each holds
			 * one descriptor per connection */
			if (p.conns > nofile - 200) {
				snprintf(note, sizeof(note),
					 "conns reduced from %d to %ld: fd limit %ld per process",
					 p.conns, nofile - 200, nofile);
				p.conns = (int)(nofile - 200);
				why = note;
			}
			if (p.conns < 1 || p.threads < 1 || p.threads > 64)
				usage();
			p.per_conn = (uint64_t)msgs / (uint64_t)p.conns;
			if (p.per_conn < 2 * (uint64_t)window)
				p.per_conn = 2 * (uint64_t)window;
			snprintf(point, sizeof(point), "conns=%d window=%d size=%zu threads=%d",
				 p.conns, p.window, p.size, p.threads);
			bench_point("conns", point, metrics, 5, impls,
				    (int)(sizeof(impls) / sizeof(impls[0])), &p, why);
		}
	return 0;
}
