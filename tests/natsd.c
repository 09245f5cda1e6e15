/* nats-server for the tests; see natsd.h. The test's thread only. */
#include "natsd.h"

#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

const char *natsd_binary(void)
{
	static char found[512];
	const char *env = getenv("BS_NATS_SERVER");
	const char *path = getenv("PATH");

	if (env && *env)
		return env;
	if (path) {
		char dirs[4096];
		snprintf(dirs, sizeof(dirs), "%s", path);
		for (char *save, *d = strtok_r(dirs, ":", &save); d;
		     d = strtok_r(NULL, ":", &save)) {
			snprintf(found, sizeof(found), "%s/nats-server", d);
			if (access(found, X_OK) == 0)
				return found;
		}
	}
	/* Debian installs it in sbin, often not on a user's PATH. */
	return access("/usr/sbin/nats-server", X_OK) == 0 ? "/usr/sbin/nats-server"
							  : "nats-server";
}

static int free_port(void)
{
	int fd, port = tu_closed_port(&fd);

	if (fd >= 0)
		close(fd);
	return port;
}

bool natsd_port_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

void natsd_stop(struct natsd *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	d->pid = -1;
}

int natsd_start(struct natsd *d)
{
	bool pick = d->port == 0;

	for (int attempt = 0; attempt < 5; attempt++) {
		if (pick) {
			d->port = free_port();
			d->mport = free_port();
		}
		snprintf(d->url, sizeof(d->url), "nats://127.0.0.1:%d", d->port);
		char port[16], mport[16];
		snprintf(port, sizeof(port), "%d", d->port);
		snprintf(mport, sizeof(mport), "%d", d->mport);
		const char *bin = natsd_binary();
		bool quiet = !getenv("BS_TEST_VERBOSE");
		pid_t parent = getpid();
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			/* Only async-signal-safe calls here: the test's threads
			 * may hold locks at the fork. It dies with the test,
			 * whatever ends it. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
			int null = quiet ? open("/dev/null", O_WRONLY) : -1;
			if (null >= 0) {
				dup2(null, STDOUT_FILENO);
				dup2(null, STDERR_FILENO);
			}
			execl(bin, "nats-server", "-a", "127.0.0.1", "-p", port, "-m", mport,
			      (char *)NULL);
			_exit(127);
		}
		d->pid = pid;
		uint64_t until = tu_now_ms() + 5000;
		while (tu_now_ms() < until) {
			if (waitpid(pid, NULL, WNOHANG) == pid) {
				d->pid = -1;
				break;
			}
			if (natsd_port_accepts(d->port) && natsd_port_accepts(d->mport))
				return 0;
			tu_sleep_ms(10);
		}
		natsd_stop(d);
		if (!pick)
			tu_sleep_ms(200); /* the same port: let it come free */
	}
	fprintf(stderr, "cannot start %s on 127.0.0.1:%d\n", natsd_binary(), d->port);
	return -1;
}
