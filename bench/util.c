/* Benchmark harness: clocks, client processes, sockets, runs, reporting. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct bench_opts bopt = {
	.quick = 0, .runs = 0, .impls = NULL, .curve = NULL,
	.run_limit_s = 30.0, .io_threads = 0, .io_poll_us = -1, .recv_poll_us = -1,
};
struct bench_shared *bshared;

const char bench_common_usage[] =
	"  --quick            smaller counts (bench-quick)\n"
	"  --runs N           runs per implementation and point (default 3;\n"
	"                     bench_echo 7, quick 5)\n"
	"  --impls a,b        implementations to run (default: all built in)\n"
	"  --curve NAME       tag the BENCH lines as points of a scaling curve\n"
	"  --limit S          wall-clock bound of one run in seconds (default 30)\n"
	"  --io-threads N     library I/O threads (default: library default)\n"
	"  --io-poll-us N     library I/O threads' poll before sleeping (default:\n"
	"                     library default)\n"
	"  --recv-poll-us N   library receives' poll before sleeping (default:\n"
	"                     library default)\n"
	"  --hold-batch N     library hold_batch: most messages of one connection\n"
	"                     per receive (default: library default)\n"
	"  --pin              server process on CPU 0, client process on CPU 1\n"
	"                     (default: the scheduler places both)\n";

/* Binds the calling thread (and what it starts later) to one CPU, if the
 * machine has two or more. */
static void pin_to(int cpu)
{
	cpu_set_t set;
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

void bench_init(void)
{
	void *p = mmap(NULL, sizeof(*bshared), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	bshared = p;
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* lets a profiler attach (perf record -p) before anything happens */
	const char *d = getenv("BENCH_START_DELAY");
	if (d && atof(d) > 0)
		bench_sleep(atof(d));
}

int bench_parse_list(const char *s, long *out, int max)
{
	int n = 0;
	while (*s) {
		char *end;
		long v = strtol(s, &end, 10);
		if (end == s || n == max)
			return -1;
		/* "16k" / "64K" for sizes */
		if (*end == 'k' || *end == 'K') {
			v *= 1024;
			end++;
		}
		out[n++] = v;
		if (*end == ',')
			end++;
		else if (*end)
			return -1;
		s = end;
	}
	return n;
}

int bench_parse_common(int argc, char **argv, int *i)
{
	const char *a = argv[*i];
	const char *val = *i + 1 < argc ? argv[*i + 1] : NULL;

	if (!strcmp(a, "--quick")) {
		bopt.quick = 1;
		return 1;
	}
	if (!strcmp(a, "--pin")) {
		/* still single-threaded: every thread started later inherits it */
		bopt.pin = 1;
		pin_to(0);
		return 1;
	}
	if (!val)
		return 0;
	if (!strcmp(a, "--runs")) {
		bopt.runs = atoi(val);
		if (bopt.runs < 1 || bopt.runs > BENCH_MAX_RUNS)
			return -1;
	} else if (!strcmp(a, "--impls")) {
		bopt.impls = val;
	} else if (!strcmp(a, "--curve")) {
		bopt.curve = val;
	} else if (!strcmp(a, "--limit")) {
		bopt.run_limit_s = atof(val);
		if (bopt.run_limit_s <= 0)
			return -1;
	} else if (!strcmp(a, "--io-threads")) {
		bopt.io_threads = (unsigned)atoi(val);
	} else if (!strcmp(a, "--io-poll-us")) {
		bopt.io_poll_us = atoi(val);
	} else if (!strcmp(a, "--recv-poll-us")) {
		bopt.recv_poll_us = atoi(val);
	} else if (!strcmp(a, "--hold-batch")) {
		bopt.hold_batch = (unsigned)atoi(val);
	} else {
		return 0;
	}
	(*i)++;
	return 1;
}

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

long bench_rss_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

long bench_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return (long)rl.rlim_cur;
}

long bench_port_range(void)
{
	long lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%ld %ld", &lo, &hi) != 2) {
			lo = 32768;
			hi = 60999;
		}
		fclose(f);
	}
	return hi - lo + 1;
}

void bench_sleep(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- sockets ---- */
int sock_listen(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(fd, 4096) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

int sock_connect(int port)
{
	return sock_connect_from(port, -1);
}

int sock_connect_from(int port, int i)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (i >= 0) {
		/* Linux gives connect() the even half of the port range first
		 * and scans it linearly once that fills up (about 14,000
		 * connections), which makes connect the bottleneck; every
		 * source address has its own ports, and 127/8 is all local. */
		struct sockaddr_in src = { .sin_family = AF_INET };
		src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % 64));
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
			close(fd);
			return -1;
		}
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int sock_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len) {
		ssize_t r = read(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

int addr_port(const char *addr)
{
	const char *c = strrchr(addr, ':');
	return c ? atoi(c + 1) : -1;
}

void frames_fill(uint8_t *buf, size_t n, size_t size)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *f = buf + i * (size + 4);
		be32_store(f, (uint32_t)size);
		for (size_t j = 0; j < size; j++)
			f[4 + j] = (uint8_t)(i + j);
	}
}

int connect_window(uint64_t started, uint64_t window, double deadline)
{
	while (started >= atomic_load(&bshared->accepted) + window) {
		if (bench_now() > deadline)
			return -1;
		bench_sleep(50e-6);
	}
	return 0;
}

/* ---- client processes ---- */
int child_start(struct bench_child *c, void (*fn)(void *arg, int rfd, int wfd),
		void *arg)
{
	int down[2], up[2];
	pid_t parent = getpid();

	if (pipe2(down, O_CLOEXEC) != 0)
		return -1;
	if (pipe2(up, O_CLOEXEC) != 0) {
		close(down[0]);
		close(down[1]);
		return -1;
	}
	fflush(NULL);
	c->pid = fork();
	if (c->pid < 0) {
		close(down[0]);
		close(down[1]);
		close(up[0]);
		close(up[1]);
		return -1;
	}
	if (c->pid == 0) {
		/* a name of its own, so profiles can tell client from server */
		prctl(PR_SET_NAME, "bench-client");
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		close(down[1]);
		close(up[0]);
		alarm((unsigned)(2 * bopt.run_limit_s) + 10);
		if (bopt.pin)
			pin_to(1);
		fn(arg, down[0], up[1]);
		_exit(0);
	}
	close(down[0]);
	close(up[1]);
	c->wfd = down[1];
	c->rfd = up[0];
	return 0;
}

int ctl_sendv(int fd, const struct ctl *m)
{
	return write_all(fd, m, sizeof(*m));
}

int ctl_send(int fd, int kind, int port, uint64_t n)
{
	struct ctl m = { .kind = kind, .port = port, .n = n };
	return ctl_sendv(fd, &m);
}

int ctl_recv(int fd, struct ctl *m, double timeout_s)
{
	char *p = (char *)m;
	size_t got = 0;
	double deadline = bench_now() + timeout_s;

	while (got < sizeof(*m)) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		double left = deadline - bench_now();
		if (left <= 0)
			return -1;
		int pr = poll(&pfd, 1, (int)(left * 1000) + 1);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return -1;
		ssize_t r = read(fd, p + got, sizeof(*m) - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return m->kind == CTL_FAIL ? -1 : 0;
}

int ctl_recv_ticking(int fd, struct ctl *m, double timeout_s,
		     void (*tick)(void *), void *arg)
{
	double deadline = bench_now() + timeout_s;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (tick)
			tick(arg);
		int pr = poll(&pfd, 1, 1);
		if (pr > 0)
			return ctl_recv(fd, m, deadline - bench_now());
		if (pr < 0 && errno != EINTR)
			return -1;
		if (bench_now() > deadline)
			return -1;
	}
}

int child_reap(struct bench_child *c, double timeout_s)
{
	int status = 0;
	double deadline = bench_now() + timeout_s;

	if (c->wfd >= 0)
		close(c->wfd);
	if (c->rfd >= 0)
		close(c->rfd);
	c->wfd = c->rfd = -1;
	if (c->pid <= 0)
		return 0;
	for (;;) {
		pid_t r = waitpid(c->pid, &status, WNOHANG);
		if (r == c->pid)
			break;
		if (r < 0)
			return -1;
		if (bench_now() > deadline) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &status, 0);
			c->pid = 0;
			return -1;
		}
		bench_sleep(1e-3);
	}
	c->pid = 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int bench_run_isolated(bench_run_fn fn, const void *params, double *out)
{
	struct { int rc; double v[BENCH_MAX_METRICS]; } r = { .rc = -1 };
	int fds[2], status;
	struct pollfd pfd;

	if (pipe2(fds, O_CLOEXEC) != 0)
		return -1;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		r.rc = fn(params, r.v);
		_exit(write_all(fds[1], &r, sizeof(r)) == 0 ? 0 : 1);
	}
	close(fds[1]);
	pfd = (struct pollfd){ .fd = fds[0], .events = POLLIN };
	if (poll(&pfd, 1, (int)(3 * bopt.run_limit_s * 1000) + 30000) != 1 ||
	    read_full(fds[0], &r, sizeof(r)) != 0) {
		kill(pid, SIGKILL);
		r.rc = -1;
	}
	close(fds[0]);
	waitpid(pid, &status, 0);
	if (r.rc == 0)
		memcpy(out, r.v, sizeof(r.v));
	return r.rc;
}

/* ---- reporting ---- */
void bench_note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

static int impl_selected(const char *name)
{
	const char *s = bopt.impls;
	size_t n = strlen(name);
	if (!s)
		return 1;
	while (*s) {
		const char *e = strchr(s, ',');
		size_t l = e ? (size_t)(e - s) : strlen(s);
		if (l == n && !strncmp(s, name, n))
			return 1;
		if (!e)
			break;
		s = e + 1;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	if (n == 0)
		return NAN;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Three significant digits with k/M/G for the table. */
static const char *fmt_num(char *buf, double v)
{
	static const char *suf[] = { "", "k", "M", "G", "T" };
	int i = 0;
	if (isnan(v))
		return "-";
	while (fabs(v) >= 999.5 && i < 4) {
		v /= 1000;
		i++;
	}
	if (fabs(v) >= 99.95)
		snprintf(buf, 16, "%.0f%s", v, suf[i]);
	else if (fabs(v) >= 9.995)
		snprintf(buf, 16, "%.1f%s", v, suf[i]);
	else if (fabs(v) >= 0.9995 || i)
		snprintf(buf, 16, "%.2f%s", v, suf[i]);
	else
		snprintf(buf, 16, "%.3g", v);
	return buf;
}

struct impl_result {
	const char *name;
	int ok;
	int skipped; /* runs where the point does not apply to it */
	int runs;
	double med[BENCH_MAX_METRICS];
	double spread; /* (max - min) / median of the first metric */
};

static void print_header(const char *scenario, const struct metric *m, int nm)
{
	static char last[256];
	char key[256];
	int off = snprintf(key, sizeof(key), "%s", scenario);
	for (int k = 0; k < nm && off < (int)sizeof(key); k++)
		off += snprintf(key + off, sizeof(key) - (size_t)off, ",%s", m[k].key);
	if (!strcmp(key, last))
		return;
	snprintf(last, sizeof(last), "%s", key);
	printf("\n== %s\n%-40s %-8s", scenario, "point", "impl");
	for (int k = 0; k < nm; k++)
		printf(" %10s", m[k].head);
	printf(" %7s", "spread");
	for (int k = 0; k < nm; k++)
		if (m[k].ratio_col)
			printf(" %9.9s", m[k].head);
	printf("\n%-40s %-8s", "", "");
	for (int k = 0; k < nm; k++)
		printf(" %10s", "");
	printf(" %7s", "");
	for (int k = 0; k < nm; k++)
		if (m[k].ratio_col)
			printf(" %9s", "/base");
	printf("\n");
}

static void print_result(const char *scenario, const char *point,
			 const struct metric *m, int nm,
			 const struct impl_result *r, const struct impl_result *base)
{
	char b[32];
	if (!r->ok) {
		printf("%-40s %-8s FAILED (no run completed)\n", point, r->name);
		printf("BENCH scenario=%s %s%s%s impl=%s runs=0/%d status=failed\n",
		       scenario, point, bopt.curve ? " curve=" : "",
		       bopt.curve ? bopt.curve : "", r->name, r->runs);
		return;
	}
	printf("%-40s %-8s", point, r->name);
	for (int k = 0; k < nm; k++)
		printf(" %10s", fmt_num(b, r->med[k]));
	printf(" %6.0f%%", r->spread * 100);
	for (int k = 0; k < nm; k++)
		if (m[k].ratio_col)
			printf(" %9.3f", base && base->ok ? r->med[k] / base->med[k] : NAN);
	printf("\n");

	printf("BENCH scenario=%s %s%s%s impl=%s runs=%d/%d", scenario, point,
	       bopt.curve ? " curve=" : "", bopt.curve ? bopt.curve : "",
	       r->name, r->ok, r->runs);
	for (int k = 0; k < nm; k++)
		printf(" %s=%.6g", m[k].key, r->med[k]);
	if (base && base->ok) {
		printf(" ratio=%.4f", r->med[0] / base->med[0]);
		for (int k = 0; k < nm; k++)
			printf(" ratio_%s=%.4f", m[k].key, r->med[k] / base->med[k]);
	}
	printf(" spread=%.3f\n", r->spread);
}

void bench_point(const char *scenario, const char *point_in,
		 const struct metric *m, int nm, const struct bench_impl *impls,
		 int ni, const void *params, const char *note)
{
	char point[256];
	snprintf(point, sizeof(point), "%s%s", point_in, bopt.pin ? " pinned=1" : "");
	static double vals[8][BENCH_MAX_RUNS][BENCH_MAX_METRICS];
	struct impl_result res[8];
	int sel[8], ns = 0, runs = bopt.runs ? bopt.runs : 3;

	for (int i = 0; i < ni && ns < 8; i++)
		if (impl_selected(impls[i].name))
			sel[ns++] = i;
	memset(res, 0, sizeof(res));

	for (int r = 0; r < runs; r++) {
		for (int k = 0; k < ns; k++) {
			int s = r % 2 ? ns - 1 - k : k;
			const struct bench_impl *im = &impls[sel[s]];
			double out[BENCH_MAX_METRICS] = { 0 };
			fprintf(stderr, "  [%s %s impl=%s run %d/%d]\n", scenario,
				point, im->name, r + 1, runs);
			int rc = im->run(params, out);
			if (rc > 0) {
				res[s].skipped++;
				continue;
			}
			if (rc != 0) {
				fprintf(stderr, "  run failed: %s %s impl=%s\n",
					scenario, point, im->name);
				continue;
			}
			memcpy(vals[s][res[s].ok++], out, sizeof(out));
		}
	}

	print_header(scenario, m, nm);
	const struct impl_result *base = NULL;
	for (int s = 0; s < ns; s++) {
		struct impl_result *r = &res[s];
		double col[BENCH_MAX_RUNS];
		r->name = impls[sel[s]].name;
		r->runs = runs;
		for (int k = 0; k < nm; k++) {
			for (int j = 0; j < r->ok; j++)
				col[j] = vals[s][j][k];
			r->med[k] = median(col, r->ok);
			if (k == 0 && r->ok)
				r->spread = r->med[0] != 0
						    ? (col[r->ok - 1] - col[0]) / fabs(r->med[0])
						    : 0;
		}
		if (!strcmp(r->name, "base"))
			base = r;
	}
	for (int s = 0; s < ns; s++)
		if (res[s].skipped < runs)
			print_result(scenario, point, m, nm, &res[s], base);
	if (note)
		printf("  note: %s\n", note);
}

#if BENCH_WITH_LIB
int bench_lib_listen(bs_t **bs, int *port, int open_events, int close_events)
{
	bs_config_t cfg;
	uint32_t l;
	char addr[128];

	bs_config_init(&cfg);
	cfg.io_threads = bopt.io_threads;
	if (bopt.io_poll_us >= 0)
		cfg.io_poll_us = (uint32_t)bopt.io_poll_us;
	if (bopt.recv_poll_us >= 0)
		cfg.recv_poll_us = (uint32_t)bopt.recv_poll_us;
	if (bopt.hold_batch)
		cfg.hold_batch = bopt.hold_batch;
	cfg.open_events = open_events;
	cfg.close_events = close_events;
	cfg.shutdown_timeout_ms = 1000;
	if (bs_create(&cfg, bs) != 0)
		return -1;
	if (bs_listen(*bs, "127.0.0.1:0", NULL, &l) != 0 ||
	    bs_listener_addr(*bs, l, addr, sizeof(addr)) != 0 ||
	    (*port = addr_port(addr)) <= 0) {
		bs_destroy(*bs);
		*bs = NULL;
		return -1;
	}
	return 0;
}

void *bench_lib_echo_main(void *arg)
{
	struct bench_lib_echo *e = arg;
	bs_data_t ev[256];

	while (!atomic_load(&e->stop)) {
		int n = BS_EAGAIN;
		if (e->poll_us > 0) {
			double until = bench_now() + e->poll_us * 1e-6;
			while ((n = bs_recv_data_batch(e->bs, ev, 256, 0)) == BS_EAGAIN &&
			       bench_now() < until)
				sched_yield();
		}
		if (n == BS_EAGAIN)
			n = bs_recv_data_batch(e->bs, ev, 256, 50);
		if (n == BS_ETIMEDOUT || n == BS_EAGAIN)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			/* with more: while the next message in the batch is for
			 * the same connection, only queue; the last one writes */
			unsigned fl = e->more && i + 1 < n && ev[i + 1].id == ev[i].id
					      ? BS_SEND_MORE : 0;
			if (bs_send(e->bs, ev[i].id, ev[i].data, ev[i].len, ev[i].msg,
				    fl, 0) != 0) {
				bs_msg_release(ev[i].msg);
				atomic_fetch_add(&e->send_errors, 1);
			}
		}
	}
	return NULL;
}
#endif
