/*
 * Listeners. See listener.h. Accepted connections are placed on the I/O
 * threads round-robin, since the kernel tends to wake the same thread
 * again. When accept fails for lack of descriptors or memory
 * (EMFILE, ENFILE, ENOBUFS, ENOMEM) — or the connection table is full —
 * the thread stops watching that listener for 100 ms instead of spinning;
 * pending connections wait in the kernel's backlog and are accepted once
 * resources are back.
 *
 * A listener is closed by the I/O threads: each drops it from its epoll
 * set, and the last one closes the socket, so no thread can accept on a
 * descriptor number that was already reused.
 *
 * Listener ids are stale-safe like connection ids: an id is
 * generation << 6 | slot, and every id an instance hands out has a
 * generation of its own (a count from a random base, never 0), so an id of
 * a closed listener — or of another instance — never names the listener
 * that reuses its slot. After 2^26 - 1 ids an instance refuses new
 * listeners rather than hand one out again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "life.h"
#include "listener.h"
#include "stat.h"

#define LISTENER_SLOT_BITS 6
#define LISTENER_SLOT_MASK ((1u << LISTENER_SLOT_BITS) - 1)
/* Generations 1 .. 2^26 - 1: the id's high bits, never all zero. */
#define LISTENER_GENS ((1u << (32 - LISTENER_SLOT_BITS)) - 1)
_Static_assert(BS_MAX_LISTENERS == 1u << LISTENER_SLOT_BITS,
	       "a listener id's low bits hold its slot");

/* How long bs_listen_close waits for the I/O threads, in milliseconds. */
#define CLOSE_WAIT_MS 5000

struct listener {
	const bs_framing_t *framing;
	uint32_t id;            /* generation << 6 | slot, see above */
	int fd;
	bs_addr_t addr;
	_Atomic bool active;    /* accepting: every I/O thread watches it */
	_Atomic bool closing;
	uint64_t dropped_by;    /* I/O threads that dropped it (bit each);
	                           under listen_lock */
};

static unsigned listener_slot(struct listener *l)
{
	return l->id & LISTENER_SLOT_MASK;
}

static void pause_listener(struct io *io, struct listen_state *ls, struct listener *l,
			   uint32_t now)
{
	(void)io_watch_listener(io, l->fd, l, false);
	ls->paused |= 1ull << listener_slot(l);
	ls->retry_ms = now;
}

void listener_resume(struct bs *bs, struct io *io, struct listen_state *ls)
{
	pthread_mutex_lock(&bs->listen_lock);
	for (unsigned i = 0; i < BS_MAX_LISTENERS; i++) {
		struct listener *l;
		if (!(ls->paused & (1ull << i)))
			continue;
		l = atomic_load(&bs->listeners[i]);
		ls->paused &= ~(1ull << i);
		/* Failing to watch again leaves it to the other threads. */
		if (l != NULL && !atomic_load(&l->closing))
			(void)io_watch_listener(io, l->fd, l, true);
	}
	pthread_mutex_unlock(&bs->listen_lock);
}

/* One accept: false when the loop should stop. */
static bool accept_one(struct bs *bs, struct io *io, struct listen_state *ls,
		       struct listener *l, uint32_t now, struct bs_conn **mine,
		       unsigned *nmine)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	struct bs_conn *c;
	int fd;

	if (atomic_load_explicit(&bs->table.in_use, memory_order_relaxed) >= bs->table.nslots) {
		pause_listener(io, ls, l, now);
		return false;
	}
	fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		switch (errno) {
		case EAGAIN:
		case EINTR:
			return false;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			stat_add(&io->st.accept_errors, 1);
			log_msg(&bs->log, BS_LOG_WARN, "accept: %s; pausing 100 ms", strerror(errno));
			pause_listener(io, ls, l, now);
			return false;
		default: /* ECONNABORTED and friends: that one peer is gone */
			stat_add(&io->st.accept_errors, 1);
			return true;
		}
	}
	c = table_alloc(&bs->table);
	if (c == NULL) {
		close(fd);
		stat_add(&io->st.accept_errors, 1);
		pause_listener(io, ls, l, now);
		return false;
	}
	life_setup(bs, c, fd, l->framing);
	c->listener = l->id;
	c->peer_len = len <= sizeof(c->peer) ? len : 0;
	memcpy(&c->peer, &sa, c->peer_len);
	atomic_store_explicit(&c->state, CONN_OPEN, memory_order_relaxed);
	addr_tune(fd, sa.ss_family, &bs->cfg);
	stat_add(&io->st.accepted, 1);
	/* The kernel wakes whichever thread it likes for a listener, often the
	 * same one: placing connections round-robin spreads the load. */
	c->io = instance_next_io(bs);
	if (c->io != io)
		io_adopt(c->io, c);
	else
		mine[(*nmine)++] = c;
	return true;
}

void listener_accept(struct bs *bs, struct io *io, struct listen_state *ls,
		     struct listener *l, uint32_t now, struct bs_conn **mine, unsigned *nmine)
{
	/* Bounded, so a connection storm cannot starve established sockets. */
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		if (!atomic_load(&l->active) || atomic_load(&l->closing) || !instance_running(bs))
			return;
		if (!accept_one(bs, io, ls, l, now, mine, nmine))
			return;
	}
}

static void listener_free(struct listener *l)
{
	if (l->addr.sa.ss_family == AF_UNIX) {
		struct sockaddr_un *un = (struct sockaddr_un *)&l->addr.sa;
		unlink(un->sun_path);
	}
	close(l->fd);
	free(l);
}

/* Under listen_lock, so that no thread looks at a listener while another
 * frees it. */
void listener_drop_closing(struct bs *bs, struct io *io, struct listen_state *ls)
{
	uint64_t me = 1ull << io->index;
	uint64_t all = bs->nworkers == 64 ? ~0ull : (1ull << bs->nworkers) - 1;

	if (atomic_load_explicit(&bs->listeners_closing, memory_order_acquire) == 0)
		return;
	pthread_mutex_lock(&bs->listen_lock);
	for (unsigned i = 0; i < BS_MAX_LISTENERS; i++) {
		struct listener *l = atomic_load(&bs->listeners[i]);

		if (l == NULL || !atomic_load(&l->closing) || (l->dropped_by & me))
			continue;
		/* A paused listener is not in the set: nothing to drop. */
		if (!(ls->paused & (1ull << i)))
			(void)io_watch_listener(io, l->fd, l, false);
		ls->paused &= ~(1ull << i);
		l->dropped_by |= me;
		if (l->dropped_by == all) {
			/* Socket closed and path unlinked before the slot is
			 * cleared: bs_listen_close returns when it sees that. */
			listener_free(l);
			atomic_store(&bs->listeners[i], NULL);
			atomic_fetch_sub(&bs->listeners_closing, 1);
		}
	}
	pthread_mutex_unlock(&bs->listen_lock);
}

/* Whether the slot of id still holds the listener with that id: until the
 * last I/O thread dropped and freed it. */
static bool slot_holds(struct bs *bs, uint32_t id)
{
	struct listener *l;
	bool holds;

	pthread_mutex_lock(&bs->listen_lock);
	l = atomic_load(&bs->listeners[id & LISTENER_SLOT_MASK]);
	holds = l != NULL && l->id == id;
	pthread_mutex_unlock(&bs->listen_lock);
	return holds;
}

/* Waits at most CLOSE_WAIT_MS until the I/O threads freed the listener
 * (its socket is closed then); false when they did not in time. */
static bool wait_freed(struct bs *bs, uint32_t id)
{
	for (int i = 0; i < CLOSE_WAIT_MS; i++) {
		if (!slot_holds(bs, id))
			return true;
		usleep(1000);
	}
	return !slot_holds(bs, id);
}

static uint32_t random_base(void)
{
	static _Atomic uint32_t instances;
	uint32_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)time(NULL) ^ (uint32_t)(uintptr_t)&r;
	/* Apart even where getrandom failed and instances share a second. */
	return r + atomic_fetch_add(&instances, 1) * 0x9e3779b9u;
}

/* A new listener id for slot, never handed out before by this instance.
 * Caller holds listen_lock and has checked that ids are left. */
static uint32_t next_id(struct bs *bs, unsigned slot)
{
	uint32_t gen;

	if (bs->listener_ids_issued == 0)
		bs->listener_gen_base = random_base() % LISTENER_GENS;
	gen = 1 + (bs->listener_gen_base + bs->listener_ids_issued) % LISTENER_GENS;
	bs->listener_ids_issued++;
	return gen << LISTENER_SLOT_BITS | slot;
}

static int open_socket(struct bs *bs, const bs_addr_t *a)
{
	int one = 1, fd = addr_socket(a);

	if (fd < 0)
		return -1;
	if (bs->cfg.reuseaddr && a->sa.ss_family != AF_UNIX)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Several processes may then bind the same port; the kernel spreads
	 * new connections over them. A failure here is a failure to listen. */
	if (bs->cfg.reuseport && a->sa.ss_family != AF_UNIX &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if (a->sa.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->sa, a->len) != 0 ||
	    listen(fd, bs->cfg.backlog) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Marks l closing; the I/O threads drop it. Caller holds listen_lock. */
static void mark_closing(struct bs *bs, struct listener *l)
{
	if (!atomic_exchange(&l->closing, true))
		atomic_fetch_add(&bs->listeners_closing, 1);
}

int bs_listen(bs_t *bs, const char *addr, const bs_framing_t *framing,
	      uint32_t *listener)
{
	struct listener *l;
	unsigned slot;
	int r;

	if (bs == NULL || addr == NULL || listener == NULL ||
	    (framing != NULL && bs_framing_check(framing) != 0))
		return BS_EINVAL;
	if (atomic_load(&bs->phase) != PHASE_RUN)
		return BS_ESHUTDOWN;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return BS_ENOMEM;
	r = addr_parse(addr, &l->addr);
	if (r != 0) {
		free(l);
		return r;
	}
	l->framing = endpoint_intern(&bs->eps, framing);
	if (l->framing == NULL) {
		free(l);
		return BS_ENOMEM;
	}
	l->fd = open_socket(bs, &l->addr);
	if (l->fd < 0) {
		r = BS_ESYS; /* errno says why: EADDRINUSE, EACCES, ... */
		log_msg(&bs->log, BS_LOG_ERROR, "listen %s: %s", addr, strerror(errno));
		free(l);
		return r;
	}
	l->addr.len = sizeof(l->addr.sa);
	getsockname(l->fd, (struct sockaddr *)&l->addr.sa, &l->addr.len);

	/*
	 * Published and watched under listen_lock, so bs_shutdown cannot mark it
	 * closing and no I/O thread can free it half registered. It accepts
	 * nothing until every thread watches it: a failed registration is
	 * undone without a connection to show for it.
	 */
	pthread_mutex_lock(&bs->listen_lock);
	for (slot = 0; slot < BS_MAX_LISTENERS && atomic_load(&bs->listeners[slot]); slot++)
		;
	r = atomic_load(&bs->phase) != PHASE_RUN ? BS_ESHUTDOWN
	    : slot == BS_MAX_LISTENERS || bs->listener_ids_issued == LISTENER_GENS
		? BS_ELIMIT
		: 0;
	if (r != 0) {
		pthread_mutex_unlock(&bs->listen_lock);
		listener_free(l);
		return r;
	}
	l->id = next_id(bs, slot);
	atomic_store(&bs->listeners[slot], l);
	for (unsigned i = 0; i < bs->nworkers && r == 0; i++)
		if (io_watch_listener(bs->io[i], l->fd, l, true) != 0)
			r = BS_ESYS;
	if (r != 0) {
		int e = errno;
		uint32_t id = l->id;

		mark_closing(bs, l);
		pthread_mutex_unlock(&bs->listen_lock);
		log_msg(&bs->log, BS_LOG_ERROR, "listen %s: epoll_ctl: %s", addr, strerror(e));
		/* The I/O threads drop it from the epoll sets that took it. */
		instance_wake_io(bs);
		(void)wait_freed(bs, id);
		errno = e;
		return r;
	}
	atomic_store(&l->active, true);
	pthread_mutex_unlock(&bs->listen_lock);
	*listener = l->id;
	return 0;
}

/* The open listener with this id, or NULL. Caller holds listen_lock. */
static struct listener *find(struct bs *bs, uint32_t id)
{
	struct listener *l = atomic_load(&bs->listeners[id & LISTENER_SLOT_MASK]);

	if (l == NULL || l->id != id || atomic_load(&l->closing))
		return NULL;
	return l;
}

int bs_listener_addr(bs_t *bs, uint32_t listener, char *buf, size_t len)
{
	struct listener *l;
	int r;

	if (bs == NULL || buf == NULL)
		return BS_EINVAL;
	pthread_mutex_lock(&bs->listen_lock);
	l = find(bs, listener);
	r = l ? addr_format((const struct sockaddr *)&l->addr.sa, l->addr.len, buf, len)
	      : BS_ESTALE;
	pthread_mutex_unlock(&bs->listen_lock);
	return r;
}

int bs_listen_close(bs_t *bs, uint32_t listener)
{
	struct listener *l;

	if (bs == NULL)
		return BS_EINVAL;
	pthread_mutex_lock(&bs->listen_lock);
	l = find(bs, listener);
	if (l != NULL)
		mark_closing(bs, l);
	pthread_mutex_unlock(&bs->listen_lock);
	if (l == NULL)
		return BS_ESTALE;
	instance_wake_io(bs);
	/* Wait (bounded) until the socket is really closed, so the address
	 * can be bound again when this returns; say so when it is not. */
	return wait_freed(bs, listener) ? 0 : BS_ETIMEDOUT;
}

void listeners_close_all(struct bs *bs)
{
	pthread_mutex_lock(&bs->listen_lock);
	for (unsigned i = 0; i < BS_MAX_LISTENERS; i++) {
		struct listener *l = atomic_load(&bs->listeners[i]);
		if (l != NULL)
			mark_closing(bs, l);
	}
	pthread_mutex_unlock(&bs->listen_lock);
	instance_wake_io(bs);
}

void listeners_free(struct bs *bs)
{
	for (unsigned i = 0; i < BS_MAX_LISTENERS; i++) {
		struct listener *l = atomic_load(&bs->listeners[i]);
		if (l != NULL)
			listener_free(l);
		atomic_store(&bs->listeners[i], NULL);
	}
}
