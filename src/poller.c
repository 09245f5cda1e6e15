/* An I/O thread's epoll set and wake-up. See poller.h. */
#include "poller.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "tsan.h"

int io_init(struct io *io, unsigned index)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_WAKE };

	memset(io, 0, sizeof(*io));
	io->index = index;
	io->epfd = io->wakefd = -1;
	ck_stack_init(&io->adopt);
	io->epfd = epoll_create1(EPOLL_CLOEXEC);
	io->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (io->epfd < 0 || io->wakefd < 0 ||
	    epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->wakefd, &ev) != 0)
		return BS_ESYS;
	return 0;
}

void io_free(struct io *io)
{
	if (io->epfd >= 0)
		close(io->epfd);
	if (io->wakefd >= 0)
		close(io->wakefd);
	io->epfd = io->wakefd = -1;
}

void io_wake(struct io *io)
{
	uint64_t one = 1;

	if (!atomic_exchange_explicit(&io->wake_pending, true, memory_order_seq_cst))
		(void)!write(io->wakefd, &one, sizeof(one));
}

void io_woken(struct io *io)
{
	uint64_t v;

	/* Drain the eventfd before clearing the flag: the other order lets a
	 * waker write between the two, have its write swallowed by our read,
	 * and leave the flag set for good, so that no one writes again. */
	(void)!read(io->wakefd, &v, sizeof(v));
	atomic_store_explicit(&io->wake_pending, false, memory_order_seq_cst);
}

void io_adopt(struct io *io, struct bs_conn *c)
{
	c->io = io;
	tsan_release(&io->adopt);
	ck_stack_push_upmc(&io->adopt, &c->adopt_entry);
	io_wake(io);
}

ck_stack_entry_t *io_adopted(struct io *io)
{
	ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&io->adopt);

	tsan_acquire(&io->adopt);
	return e;
}

int io_watch(struct bs_conn *c, bool add, bool out)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (out ? EPOLLOUT : 0),
		.data.u64 = (uintptr_t)c | TAG_CONN,
	};

	if (epoll_ctl(c->io->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev) != 0)
		return BS_ESYS;
	c->out_armed = out;
	return 0;
}

int io_watch_listener(struct io *io, int fd, void *listener, bool on)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLEXCLUSIVE,
		.data.u64 = (uintptr_t)listener | TAG_LISTENER,
	};

	if (epoll_ctl(io->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, on ? &ev : NULL) != 0)
		return BS_ESYS;
	return 0;
}
