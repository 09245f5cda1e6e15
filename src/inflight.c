/* The messages in flight on a socket. See inflight.h. */
#include "inflight.h"

#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* The first marks' spacing: small enough that a bound on a lightly used
 * connection is close to exact. */
#define STEP_FIRST 4096u
/* A Unix stream socket's sender may pass its SO_SNDBUF by one buffer. */
#define UNIX_OVERSHOOT (64u * 1024u)

void inflight_reset(struct inflight *f)
{
	memset(f, 0, sizeof(*f));
	f->step = STEP_FIRST;
}

static struct inflight_mark *mark_at(struct inflight *f, unsigned i)
{
	return &f->mark[(f->first + i) % INFLIGHT_MARKS];
}

/* Room for one more mark: drop those that the peer acknowledged, or thin
 * them out. */
static void make_room(struct inflight *f, int fd)
{
	int q = 0;
	uint64_t acked = 0;
	unsigned keep = 0;

	if (ioctl(fd, SIOCOUTQ, &q) == 0 && q >= 0 && (uint64_t)q <= f->bytes)
		acked = f->bytes - (uint64_t)q;
	while (f->n > 0 && mark_at(f, 0)->bytes <= acked) {
		f->base = *mark_at(f, 0);
		f->first = (uint8_t)((f->first + 1) % INFLIGHT_MARKS);
		f->n--;
	}
	if (f->n < INFLIGHT_MARKS)
		return;
	/* All unacknowledged: keep every second mark, newest included. */
	for (unsigned i = 1; i < f->n; i += 2)
		f->mark[keep++] = *mark_at(f, i);
	f->first = 0;
	f->n = (uint8_t)keep;
	f->step *= 2;
}

void inflight_wrote(struct inflight *f, int fd, uint64_t bytes, uint64_t msgs)
{
	uint64_t last;

	f->bytes += bytes;
	f->msgs += msgs;
	last = f->n ? mark_at(f, f->n - 1u)->bytes : f->base.bytes;
	if (f->bytes - last < f->step)
		return;
	if (f->n == INFLIGHT_MARKS)
		make_room(f, fd);
	f->mark[(f->first + f->n) % INFLIGHT_MARKS] = (struct inflight_mark){ f->bytes, f->msgs };
	f->n++;
}

uint64_t inflight_maybe_lost(const struct inflight *f, uint64_t unacked)
{
	uint64_t acked = unacked < f->bytes ? f->bytes - unacked : 0;

	if (unacked == 0)
		return 0; /* everything reached the peer's kernel */
	for (unsigned i = f->n; i-- > 0;) {
		const struct inflight_mark *m = &f->mark[(f->first + i) % INFLIGHT_MARKS];
		if (m->bytes <= acked)
			return f->msgs - m->msgs;
	}
	if (f->base.bytes <= acked)
		return f->msgs - f->base.msgs;
	return f->msgs; /* before anything known: all of them */
}

uint64_t inflight_unacked_at_break(int fd, int family)
{
	int v = 0;
	socklen_t len = sizeof(v);

	if (family == AF_UNIX) {
		if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &len) != 0 || v < 0)
			return UINT64_MAX;
		return (uint64_t)v + UNIX_OVERSHOOT;
	}
	if (ioctl(fd, SIOCOUTQ, &v) != 0 || v < 0)
		return UINT64_MAX; /* unknown: everything may be lost */
	return (uint64_t)v;
}
