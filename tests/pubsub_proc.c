/* pubsub_server as a child process, and its protocol; see pubsub_proc.h.
 * The test's thread only. */
#include "pubsub_proc.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void server_path(char *buf, size_t len)
{
	const char *env = getenv("PUBSUB_SERVER");
	char exe[PATH_MAX - 32]; /* room for the rest of the path in buf */

	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return;
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = 0;
	for (int up = 0; up < 2; up++) { /* BUILD/tests/x -> BUILD */
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
	}
	snprintf(buf, len, "%s/examples/pubsub_server", exe);
}

/* Reads one line of the server's output within timeout_ms. */
static int read_line(int fd, char *buf, size_t len, int timeout_ms)
{
	size_t got = 0;
	uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;

	while (got + 1 < len) {
		uint64_t now = tu_now_ms();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
			return -1;
		ssize_t r = read(fd, buf + got, 1);
		if (r <= 0)
			return -1;
		if (buf[got] == '\n')
			break;
		got++;
	}
	buf[got] = 0;
	return 0;
}

void ps_server_start(struct ps_server *s, const char *addr, const char *threads,
		     const char *const *extra)
{
	if (ps_server_try_start(s, addr, threads, extra) != 0)
		fail_msg("pubsub_server did not start");
}

int ps_server_try_start(struct ps_server *s, const char *addr, const char *threads,
			const char *const *extra)
{
	char path[PATH_MAX], line[512];
	const char *argv[32] = { "pubsub_server", addr ? addr : "127.0.0.1:0" };
	const char *env = getenv("PUBSUB_THREADS");
	int pipefd[2], n = 2;

	if (env && *env)
		threads = env;
	if (threads) {
		argv[n++] = "--threads";
		argv[n++] = threads;
	}
	for (; extra && *extra && n < 31; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	server_path(path, sizeof path);
	assert_int_equal(access(path, X_OK), 0);
	snprintf(s->err_path, sizeof s->err_path, "/tmp/pubsub-test-err.XXXXXX");
	int errfd = mkstemp(s->err_path);
	assert_true(errfd >= 0);
	assert_int_equal(pipe(pipefd), 0);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		/* It dies with this test, whatever happens to the test. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pipefd[1], 1);
		dup2(errfd, 2);
		close(pipefd[0]);
		close(pipefd[1]);
		close(errfd);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(errfd);
	close(pipefd[1]);
	s->out = pipefd[0];
	const char *at = NULL;
	if (read_line(s->out, line, sizeof line, PS_WAIT_MS) == 0)
		at = strstr(line, "listening on ");
	if (!at || sscanf(at, "listening on %127s", s->addr) != 1) {
		ps_server_kill(s);
		return -1;
	}
	return 0;
}

static unsigned long long field(const char *line, const char *name, bool *found)
{
	const char *at = strstr(line, name);
	unsigned long long v = 0;

	*found = at && sscanf(at + strlen(name), " %llu", &v) == 1;
	return v;
}

/* Shows the server's log lines, then removes the file. */
static void forget_log(struct ps_server *s)
{
	char line[1024];
	FILE *f = fopen(s->err_path, "r");

	while (f && fgets(line, sizeof line, f))
		printf("    | %s", line);
	if (f)
		fclose(f);
	unlink(s->err_path);
}

void ps_server_stop(struct ps_server *s, struct ps_summary *sum)
{
	char line[1024];
	int st;
	bool ok = true, f;

	assert_int_equal(kill(s->pid, SIGTERM), 0);
	assert_int_equal(read_line(s->out, line, sizeof line, PS_WAIT_MS), 0);
	printf("    %s\n", line);
	assert_non_null(strstr(line, "pubsub_server: published "));
	memset(sum, 0, sizeof(*sum));
	static const struct {
		const char *name;
		size_t off;
	} local[] = {
		{ "published", offsetof(struct ps_summary, published) },
		{ "delivered", offsetof(struct ps_summary, delivered) },
		{ "dropped", offsetof(struct ps_summary, dropped) },
		{ "slow disconnects", offsetof(struct ps_summary, slow) },
		{ "(stale", offsetof(struct ps_summary, stale) },
		{ "discarded at close", offsetof(struct ps_summary, discarded) },
		{ "errors", offsetof(struct ps_summary, errors) },
		{ " direct", offsetof(struct ps_summary, direct) },
		{ "connections closed", offsetof(struct ps_summary, closed) },
	}, nats[] = {
		{ "nats: sent", offsetof(struct ps_summary, nats_sent) },
		{ "not sent", offsetof(struct ps_summary, nats_not_sent) },
		{ "received", offsetof(struct ps_summary, nats_received) },
		{ "lost", offsetof(struct ps_summary, nats_lost) },
		{ "direct stale", offsetof(struct ps_summary, direct_stale) },
		{ " disconnects", offsetof(struct ps_summary, disconnects) },
		{ "reconnects", offsetof(struct ps_summary, reconnects) },
	};
	for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
		*(unsigned long long *)((char *)sum + local[i].off) = field(line, local[i].name, &f);
		ok &= f;
	}
	const char *tail = strstr(line, "; nats: ");
	sum->nats = tail != NULL;
	for (size_t i = 0; tail && i < sizeof nats / sizeof nats[0]; i++) {
		*(unsigned long long *)((char *)sum + nats[i].off) =
			field(tail + 1, nats[i].name, &f);
		ok &= f;
	}
	if (!ok)
		fail_msg("summary line not understood: %s", line);
	assert_int_equal(waitpid(s->pid, &st, 0), s->pid);
	s->pid = -1;
	close(s->out);
	forget_log(s);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

void ps_server_kill(struct ps_server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(s->out);
		forget_log(s);
	}
	s->pid = -1;
}

bool ps_server_logged(const struct ps_server *s, const char *text)
{
	char line[1024];
	bool found = false;
	FILE *f = fopen(s->err_path, "r");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, text) != NULL;
	fclose(f);
	return found;
}

int ps_client(const char *addr)
{
	int fd = tu_connect(addr);
	assert_true(fd >= 0);
	return fd;
}

void ps_command(int fd, char op, const char *topic, const void *body, size_t blen)
{
	static uint8_t buf[PS_FRAME_MAX];
	size_t tlen = strlen(topic);

	assert_true(2 + tlen + blen <= sizeof buf);
	buf[0] = (uint8_t)op;
	buf[1] = (uint8_t)tlen;
	memcpy(buf + 2, topic, tlen);
	if (blen)
		memcpy(buf + 2 + tlen, body, blen);
	assert_int_equal(tu_send_frame(fd, buf, 2 + tlen + blen), 0);
}

void ps_expect(int fd, char op, const char *topic, const char *body)
{
	static uint8_t want[PS_FRAME_MAX], got[PS_FRAME_MAX];
	size_t tlen = strlen(topic), blen = strlen(body);

	want[0] = (uint8_t)op;
	want[1] = (uint8_t)tlen;
	memcpy(want + 2, topic, tlen);
	memcpy(want + 2 + tlen, body, blen);
	long n = tu_recv_frame(fd, got, sizeof got, PS_WAIT_MS);
	if (n != (long)(2 + tlen + blen) || memcmp(got, want, (size_t)n) != 0)
		fail_msg("expected %c \"%s\" \"%s\", got %ld bytes: %c %.*s", op, topic, body, n,
			 n > 0 ? got[0] : '?', n > 2 ? (int)n - 2 : 0, (const char *)got + 2);
}

void ps_subscribe(int fd, const char *topic)
{
	ps_command(fd, 'S', topic, NULL, 0);
	ps_expect(fd, 'A', topic, "");
}

void ps_publish(int fd, const char *topic, const char *body)
{
	ps_command(fd, 'P', topic, body, strlen(body));
}

void ps_identify(int fd, char hex[17])
{
	uint8_t got[64];

	ps_command(fd, 'I', "?", NULL, 0);
	long n = tu_recv_frame(fd, got, sizeof got, PS_WAIT_MS);
	assert_int_equal(n, 2 + 16);
	assert_int_equal(got[0], 'I');
	assert_int_equal(got[1], 16);
	memcpy(hex, got + 2, 16);
	hex[16] = 0;
	for (int i = 0; i < 16; i++)
		assert_non_null(strchr("0123456789abcdef", hex[i]));
}
