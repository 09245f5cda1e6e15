/* Helpers shared by the test programs; see util.h. */
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Running
 */

static int run_one(const struct CMUnitTest *test)
{
	tu_failures_reset();
	return _cmocka_run_group_tests(test->name, test, 1, NULL, NULL);
}

static bool selected(const char *name, int argc, char **argv)
{
	if (argc <= 1)
		return true;
	for (int i = 1; i < argc; i++)
		if (strstr(name, argv[i]))
			return true;
	return false;
}

/* With BS_TEST_BACKTRACE=1, prints every thread's stack of a hung test
 * (needs gdb). */
static void dump_stacks(pid_t pid)
{
	const char *env = getenv("BS_TEST_BACKTRACE");
	char cmd[160];

	if (!env || !*env || strcmp(env, "0") == 0)
		return;
	snprintf(cmd, sizeof(cmd),
		 "gdb -p %ld -batch -ex 'thread apply all bt 16' 2>/dev/null | grep -E '^(#|Thread)'",
		 (long)pid);
	fflush(stdout);
	if (system(cmd) == -1)
		perror("system");
}

/* Waits for a child for at most timeout_s; kills it when it overstays.
 * Returns its wait status, or -1 when it had to be killed. */
static int wait_child(pid_t pid, unsigned timeout_s)
{
	uint64_t deadline = tu_now_ms() + (uint64_t)timeout_s * 1000;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (tu_now_ms() >= deadline) {
			dump_stacks(pid);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			return -1;
		}
		tu_sleep_ms(5);
	}
}

int tu_run(const char *group, const struct CMUnitTest *tests, size_t n,
	   int argc, char **argv)
{
	const char *nofork = getenv("BS_TEST_NOFORK");
	const char *tmo = getenv("BS_TEST_TIMEOUT");
	unsigned timeout_s = tmo && atoi(tmo) > 0 ? (unsigned)atoi(tmo) : 120;
	bool fork_each = !(nofork && *nofork && strcmp(nofork, "0") != 0);
	size_t ran = 0, failed = 0;
	char failed_names[2048] = "";

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("[ %s ] scale %.2f%s\n", group, tu_scale(),
	       tu_sanitized() ? " (sanitizer build)" : "");
	for (size_t i = 0; i < n; i++) {
		int bad;

		if (!selected(tests[i].name, argc, argv))
			continue;
		ran++;
		fflush(stdout);
		fflush(stderr);
		if (!fork_each) {
			bad = run_one(&tests[i]) != 0;
		} else {
			pid_t pid = fork();
			if (pid < 0) {
				perror("fork");
				return 1;
			}
			if (pid == 0)
				exit(run_one(&tests[i]) != 0 ? 1 : 0);
			int st = wait_child(pid, timeout_s);
			/* the summary line cmocka could not print */
			if (st == -1) {
				printf("[  FAILED  ] 1 test(s): %s killed, still running "
				       "after %u s\n", tests[i].name, timeout_s);
				bad = 1;
			} else if (WIFSIGNALED(st)) {
				printf("[  FAILED  ] 1 test(s): %s crashed, signal %d (%s)\n",
				       tests[i].name, WTERMSIG(st),
				       strsignal(WTERMSIG(st)));
				bad = 1;
			} else {
				bad = WEXITSTATUS(st) != 0;
			}
		}
		if (bad) {
			failed++;
			size_t used = strlen(failed_names);
			snprintf(failed_names + used, sizeof(failed_names) - used,
				 " %s", tests[i].name);
		}
	}
	printf("[ %s ] %zu test(s) run, %zu failed%s%s\n", group, ran, failed,
	       failed ? ":" : "", failed_names);
	return failed ? 1 : 0;
}

/* ------------------------------------------------------------------------
 * Scale
 */

bool tu_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
	return true;
#else
	return false;
#endif
#else
	return false;
#endif
}

static bool tsan_build(void)
{
#if defined(__SANITIZE_THREAD__)
	return true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
	return true;
#else
	return false;
#endif
#else
	return false;
#endif
}

double tu_scale(void)
{
	const char *env = getenv("BS_TEST_SCALE");
	if (env && *env) {
		double f = strtod(env, NULL);
		if (f > 0)
			return f;
	}
	/* ASan and UBSan cost little here; TSan several times more */
	return tsan_build() ? 0.5 : 1.0;
}

long tu_scaled(long n, long min)
{
	long v = (long)((double)n * tu_scale());
	return v < min ? min : v;
}

/* ------------------------------------------------------------------------
 * Time
 */

uint64_t tu_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tu_now_ms(void)
{
	return tu_now_ns() / 1000000u;
}

void tu_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------------
 * Failures
 */

static atomic_uint failures;

void tu_fail_(const char *file, int line, const char *fmt, ...)
{
	unsigned n = atomic_fetch_add(&failures, 1) + 1;
	if (n > 20) /* the first ones say what went wrong */
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s:%d: check failed: %s\n", file, line, msg);
}

unsigned tu_failures(void)
{
	return atomic_load(&failures);
}

void tu_failures_reset(void)
{
	atomic_store(&failures, 0);
}

/* ------------------------------------------------------------------------
 * Plain sockets
 */

/* Parses addr into *ss. 0 or -1. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		size_t n = strlen(addr + 5);
		if (n == 0 || n >= sizeof(un->sun_path))
			return -1;
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, addr + 5, n + 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		return 0;
	}

	char host[256];
	const char *colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	long port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535)
		return -1;

	if (host[0] == '[') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		size_t hl = strlen(host);
		if (hl < 3 || host[hl - 1] != ']')
			return -1;
		host[hl - 1] = '\0';
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
			return -1;
		*len = sizeof(*s6);
		return 0;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		*len = sizeof(*s4);
		return 0;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int tu_socket_for(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_addr(addr, &ss, &len) < 0)
		return -1;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = 20 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

int tu_connect_fd(int fd, const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_addr(addr, &ss, &len) < 0)
		return -1;
	while (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		if (errno != EINTR)
			return -1;
	}
	if (ss.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return 0;
}

int tu_connect_opts(const char *addr, int rcvbuf, int sndbuf)
{
	int fd = tu_socket_for(addr);
	if (fd < 0)
		return -1;
	if (rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (sndbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (tu_connect_fd(fd, addr) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int tu_connect(const char *addr)
{
	return tu_connect_opts(addr, 0, 0);
}

int tu_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

void tu_frame_header(uint8_t hdr[4], size_t n)
{
	hdr[0] = (uint8_t)(n >> 24);
	hdr[1] = (uint8_t)(n >> 16);
	hdr[2] = (uint8_t)(n >> 8);
	hdr[3] = (uint8_t)n;
}

size_t tu_frame(uint8_t *out, const void *p, size_t n)
{
	tu_frame_header(out, n);
	if (n)
		memcpy(out + 4, p, n);
	return n + 4;
}

int tu_send_frame(int fd, const void *p, size_t n)
{
	uint8_t hdr[4];
	tu_frame_header(hdr, n);
	struct iovec iov[2] = { { hdr, 4 }, { (void *)(uintptr_t)p, n } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	size_t total = n + 4, done = 0;

	while (done < total) {
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)w;
		/* advance the iovecs past what was written */
		size_t adv = (size_t)w;
		while (adv > 0 && mh.msg_iovlen > 0) {
			if (adv >= mh.msg_iov[0].iov_len) {
				adv -= mh.msg_iov[0].iov_len;
				mh.msg_iov++;
				mh.msg_iovlen--;
			} else {
				mh.msg_iov[0].iov_base = (uint8_t *)mh.msg_iov[0].iov_base + adv;
				mh.msg_iov[0].iov_len -= adv;
				adv = 0;
			}
		}
	}
	return 0;
}

/* Reads exactly n bytes before deadline (ms). n read, or TU_TIMEOUT,
 * TU_EOF (nothing read at all) or TU_ERROR (error or EOF part way). */
static long read_exact(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
	size_t got = 0;
	while (got < n) {
		uint64_t now = tu_now_ms();
		if (now >= deadline)
			return got ? TU_ERROR : TU_TIMEOUT;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, (int)(deadline - now));
		if (pr < 0 && errno != EINTR)
			return TU_ERROR;
		if (pr <= 0)
			continue;
		ssize_t r = recv(fd, p + got, n - got, MSG_DONTWAIT);
		if (r == 0)
			return got ? TU_ERROR : TU_EOF;
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return TU_ERROR;
		}
		got += (size_t)r;
	}
	return (long)got;
}

long tu_recv_frame(int fd, void *buf, size_t cap, int timeout_ms)
{
	uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
	uint8_t hdr[4];
	long r = read_exact(fd, hdr, 4, deadline);
	if (r < 0)
		return r;
	size_t n = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 |
		   (size_t)hdr[2] << 8 | hdr[3];
	if (n > cap)
		return TU_ERROR;
	if (n == 0)
		return 0;
	/* the header has arrived: the payload must follow, so allow it the
	 * time left and a little more */
	r = read_exact(fd, buf, n, deadline > tu_now_ms() + 1000 ? deadline
							       : tu_now_ms() + 1000);
	if (r < 0)
		return TU_ERROR;
	return (long)n;
}

bool tu_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int r;
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	return r > 0;
}

int tu_wait_eof(int fd, int timeout_ms)
{
	if (!tu_readable(fd, timeout_ms))
		return 0;
	char c;
	ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r == 0 || (r < 0 && errno != EAGAIN))
		return 1;
	return r > 0 ? -1 : 0;
}

void tu_reader_init(tu_reader_t *r, int fd, size_t cap)
{
	r->fd = fd;
	r->buf = malloc(cap);
	r->start = r->end = 0;
	r->cap = r->buf ? cap : 0;
}

void tu_reader_free(tu_reader_t *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = r->start = r->end = 0;
}

size_t tu_reader_pending(const tu_reader_t *r)
{
	return r->end - r->start;
}

int tu_reader_next(tu_reader_t *r, const uint8_t **msg, size_t *len)
{
	size_t avail = r->end - r->start;
	if (avail < 4)
		return 0;
	const uint8_t *h = r->buf + r->start;
	size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
	if (n + 4 > r->cap)
		return TU_ERROR;
	if (avail < n + 4)
		return 0;
	*msg = h + 4;
	*len = n;
	r->start += n + 4;
	return 1;
}

long tu_reader_fill(tu_reader_t *r)
{
	/* keep the unread bytes at the start, so a frame can use all of cap */
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
	}
	if (r->end == r->cap) {
		errno = EMSGSIZE;
		return TU_ERROR;
	}
	for (;;) {
		ssize_t n = recv(r->fd, r->buf + r->end, r->cap - r->end, MSG_DONTWAIT);
		if (n > 0) {
			r->end += (size_t)n;
			return n;
		}
		if (n == 0)
			return TU_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return TU_TIMEOUT;
		return TU_ERROR;
	}
}

long tu_reader_recv(tu_reader_t *r, const uint8_t **msg, int timeout_ms)
{
	uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		size_t len;
		int k = tu_reader_next(r, msg, &len);
		if (k == 1)
			return (long)len;
		if (k < 0)
			return TU_ERROR;
		uint64_t now = tu_now_ms();
		if (now >= deadline)
			return TU_TIMEOUT;
		if (!tu_readable(r->fd, (int)(deadline - now)))
			continue;
		long f = tu_reader_fill(r);
		if (f == TU_EOF)
			return r->end > r->start ? TU_ERROR : TU_EOF;
		if (f == TU_ERROR)
			return TU_ERROR;
	}
}

int tu_sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return -1;
}

int tu_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	return tu_sockaddr_port(&ss);
}

void tu_unix_path(char *buf, size_t len, const char *tag)
{
	static atomic_uint counter;
	snprintf(buf, len, "/tmp/bs-test-%ld-%s-%u.sock", (long)getpid(), tag,
		 atomic_fetch_add(&counter, 1));
}

bool tu_have_ipv6_loopback(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	bool ok = bind(fd, (struct sockaddr *)&s6, sizeof(s6)) == 0;
	close(fd);
	return ok;
}

int tu_closed_port(int *fd)
{
	*fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*fd < 0)
		return -1;
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	s4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(*fd, (struct sockaddr *)&s4, sizeof(s4)) < 0) {
		close(*fd);
		*fd = -1;
		return -1;
	}
	return tu_local_port(*fd);
}

/* ------------------------------------------------------------------------
 * Library helpers
 */

void tu_config(bs_config_t *cfg)
{
	bs_config_init(cfg);
	cfg->io_threads = 2;
}

int tu_server(const bs_config_t *cfg, const char *bind_addr, bs_t **bs,
	      uint32_t *listener, char *addr, size_t addrlen)
{
	int rc = bs_create(cfg, bs);
	if (rc != 0) {
		fprintf(stderr, "bs_create: %s\n", bs_err_name(rc));
		return rc;
	}
	rc = bs_listen(*bs, bind_addr ? bind_addr : "127.0.0.1:0", NULL, listener);
	if (rc == 0)
		rc = bs_listener_addr(*bs, *listener, addr, addrlen);
	if (rc != 0) {
		fprintf(stderr, "bs_listen / bs_listener_addr: %s\n", bs_err_name(rc));
		bs_destroy(*bs);
		*bs = NULL;
	}
	return rc;
}

int tu_open_clients(bs_t *bs, const char *addr, uint32_t listener, int n,
		    int *fds, bs_id_t *ids, int timeout_ms)
{
	uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;

	for (int i = 0; i < n; i++) {
		ids[i] = 0;
		fds[i] = tu_connect(addr);
		if (fds[i] < 0) {
			fprintf(stderr, "connect %s: %s\n", addr, strerror(errno));
			while (i-- > 0)
				close(fds[i]);
			return -1;
		}
	}
	for (int got = 0; got < n; got++) {
		bs_open_event_t ev;
		uint64_t now = tu_now_ms();
		int rc = bs_recv_open(bs, &ev, now < deadline ? (int)(deadline - now) : 0);
		if (rc != 0) {
			fprintf(stderr, "bs_recv_open after %d of %d opens: %s\n",
				got, n, bs_err_name(rc));
			return -1;
		}
		int port = tu_sockaddr_port(&ev.peer), match = -1;
		for (int i = 0; i < n; i++)
			if (tu_local_port(fds[i]) == port)
				match = i;
		if (match < 0 || ids[match] != 0 || ev.dialled ||
		    ev.listener != listener || ev.id == 0) {
			fprintf(stderr,
				"unexpected open event: id %llx port %d listener %u dialled %d\n",
				(unsigned long long)ev.id, port, ev.listener, ev.dialled);
			return -1;
		}
		ids[match] = ev.id;
	}
	/* The test thread acts on these connections as any thread would,
	 * not as their holder: its sends go out at once. */
	bs_release(bs);
	return 0;
}

int tu_expect_data(bs_t *bs, bs_id_t id, const void *p, size_t len,
		   int timeout_ms)
{
	bs_data_t ev;
	int rc = bs_recv_data(bs, &ev, timeout_ms);
	if (rc != 0) {
		fprintf(stderr, "bs_recv_data: %s (expected %zu bytes for %llx)\n",
			bs_err_name(rc), len, (unsigned long long)id);
		return -1;
	}
	int ok = ev.id == id && ev.len == len && (len == 0 || memcmp(ev.data, p, len) == 0);
	if (!ok)
		fprintf(stderr, "data event: id %llx len %zu, expected id %llx len %zu%s\n",
			(unsigned long long)ev.id, ev.len, (unsigned long long)id, len,
			ev.len == len ? " (bytes differ)" : "");
	bs_msg_release(ev.msg);
	bs_release(bs); /* as in tu_open_clients */
	return ok ? 0 : -1;
}

int tu_expect_close(bs_t *bs, bs_id_t id, int reason, bool check_unsent,
		    bs_close_event_t *out, int timeout_ms)
{
	bs_close_event_t ev;
	int rc = bs_recv_close(bs, &ev, timeout_ms);
	if (rc != 0) {
		fprintf(stderr, "bs_recv_close: %s (expected %llx, %s)\n",
			bs_err_name(rc), (unsigned long long)id, bs_err_name(reason));
		return -1;
	}
	if (out)
		*out = ev;
	if (ev.id != id || ev.reason != reason ||
	    (check_unsent && (ev.unsent_msgs || ev.unsent_bytes))) {
		fprintf(stderr,
			"close event: id %llx reason %s errno %d unsent %llu/%llu B; "
			"expected id %llx reason %s\n",
			(unsigned long long)ev.id, bs_err_name(ev.reason), ev.sys_errno,
			(unsigned long long)ev.unsent_msgs,
			(unsigned long long)ev.unsent_bytes, (unsigned long long)id,
			bs_err_name(reason));
		return -1;
	}
	return 0;
}

bs_stats_t tu_stats(bs_t *bs)
{
	bs_stats_t st;
	memset(&st, 0, sizeof(st));
	bs_stats(bs, &st);
	return st;
}

/* ------------------------------------------------------------------------
 * Payload pattern
 */

uint64_t tu_rand(uint64_t *state)
{
	/* xorshift64* */
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

static uint64_t mix(uint64_t x)
{
	/* splitmix64 finaliser */
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

size_t tu_pattern_len(uint32_t s, uint32_t q, size_t min, size_t max)
{
	if (min < TU_PATTERN_MIN)
		min = TU_PATTERN_MIN;
	if (max <= min)
		return min;
	return min + (size_t)(mix((uint64_t)s << 32 | q) % (max - min + 1));
}

static void pattern_bytes(uint8_t *p, size_t n, uint32_t s, uint32_t q,
			  size_t len)
{
	uint64_t st = mix(((uint64_t)s << 32 | q) ^ ((uint64_t)len * 0x100000001b3ull));
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = tu_rand(&st);
		size_t k = n - i < 8 ? n - i : 8;
		memcpy(p + i, &v, k);
	}
}

void tu_pattern_fill(uint8_t *p, size_t len, uint32_t s, uint32_t q)
{
	p[0] = (uint8_t)(s >> 24);
	p[1] = (uint8_t)(s >> 16);
	p[2] = (uint8_t)(s >> 8);
	p[3] = (uint8_t)s;
	p[4] = (uint8_t)(q >> 24);
	p[5] = (uint8_t)(q >> 16);
	p[6] = (uint8_t)(q >> 8);
	p[7] = (uint8_t)q;
	pattern_bytes(p + 8, len - 8, s, q, len);
}

int tu_pattern_check(const uint8_t *p, size_t len, uint32_t *s, uint32_t *q)
{
	if (len < TU_PATTERN_MIN)
		return -1;
	uint32_t ss = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	uint32_t qq = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
	size_t n = len - 8;
	uint8_t small[512], *want = n <= sizeof(small) ? small : malloc(n);
	if (!want)
		return -1;
	pattern_bytes(want, n, ss, qq, len);
	int bad = memcmp(want, p + 8, n) != 0;
	if (want != small)
		free(want);
	if (bad)
		return -1;
	if (s)
		*s = ss;
	if (q)
		*q = qq;
	return 0;
}

/* ------------------------------------------------------------------------
 * Id map (open addressing; ids are never 0, so 0 marks a free slot)
 */

int tu_idmap_init(tu_idmap_t *m, size_t max_entries)
{
	size_t cap = 16;
	while (cap < max_entries * 2)
		cap <<= 1;
	m->keys = calloc(cap, sizeof(*m->keys));
	m->vals = calloc(cap, sizeof(*m->vals));
	m->cap = cap;
	m->count = 0;
	m->max = max_entries;
	if (!m->keys || !m->vals) {
		tu_idmap_free(m);
		return -1;
	}
	return 0;
}

void tu_idmap_free(tu_idmap_t *m)
{
	free(m->keys);
	free(m->vals);
	m->keys = NULL;
	m->vals = NULL;
	m->cap = m->count = 0;
}

static size_t idmap_slot(const tu_idmap_t *m, bs_id_t id)
{
	size_t i = (size_t)mix(id) & (m->cap - 1);
	while (m->keys[i] != 0 && m->keys[i] != id)
		i = (i + 1) & (m->cap - 1);
	return i;
}

long tu_idmap_find(const tu_idmap_t *m, bs_id_t id)
{
	if (id == 0 || !m->cap)
		return -1;
	size_t i = idmap_slot(m, id);
	return m->keys[i] == id ? m->vals[i] : -1;
}

long tu_idmap_add(tu_idmap_t *m, bs_id_t id, bool *added)
{
	if (added)
		*added = false;
	if (id == 0 || !m->cap)
		return -1;
	size_t i = idmap_slot(m, id);
	if (m->keys[i] == id)
		return m->vals[i];
	if (m->count >= m->max)
		return -1;
	m->keys[i] = id;
	m->vals[i] = (long)m->count++;
	if (added)
		*added = true;
	return m->vals[i];
}

/* ------------------------------------------------------------------------
 * Threads
 */

pid_t tu_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

bool tu_thread_sleeping(pid_t tid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", (long)tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *paren = strrchr(buf, ')');
	if (!paren || paren[1] != ' ')
		return false;
	return paren[2] == 'S' || paren[2] == 'D';
}
