/*
 * bs_dial, bs_dial_ex and bs_redial: a non-blocking connect that the I/O
 * thread completes, and for a reconnecting dial the state its I/O thread
 * retries with (redial.h). See dial.h.
 */
#include "dial.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "clock.h"
#include "life.h"
#include "redial.h"

void bs_dial_opts_init(bs_dial_opts_t *o)
{
	memset(o, 0, sizeof(*o));
	o->backoff_initial_ms = 1000;
	o->backoff_multiplier = 1.6;
	o->backoff_max_ms = 120000;
	o->backoff_jitter = 0.2;
	o->stable_ms = 5000;
	o->connect_timeout_ms = 20000;
	o->queue_while_down = true;
}

int dial_socket(struct bs *bs, const bs_addr_t *a, int *failed)
{
	int fd = addr_socket(a);

	*failed = 0;
	if (fd < 0)
		return -1;
	addr_tune(fd, a->sa.ss_family, &bs->cfg);
	if (connect(fd, (const struct sockaddr *)&a->sa, a->len) != 0 && errno != EINPROGRESS &&
	    errno != EAGAIN)
		*failed = errno;
	return fd;
}

int bs_dial_ex(bs_t *bs, const char *addr, const bs_framing_t *framing,
	       const bs_dial_opts_t *opts, bs_id_t *id)
{
	bs_dial_opts_t dflt;
	const bs_framing_t *f;
	struct redial *rd;
	struct bs_conn *c;
	bs_addr_t a;
	int fd, r, failed = 0;

	if (opts == NULL) {
		bs_dial_opts_init(&dflt);
		opts = &dflt;
	}
	if (bs == NULL || addr == NULL || id == NULL ||
	    (framing != NULL && bs_framing_check(framing) != 0) || backoff_check(opts) != 0)
		return BS_EINVAL;
	if (!instance_running(bs))
		return BS_ESHUTDOWN;
	r = addr_parse(addr, &a);
	if (r != 0)
		return r;
	f = endpoint_intern(&bs->eps, framing);
	if (f == NULL)
		return BS_ENOMEM;
	rd = redial_new(opts, &a, clock_ns() ^ (uint64_t)(uintptr_t)id);
	if (rd == NULL)
		return BS_ENOMEM;
	fd = dial_socket(bs, &a, &failed);
	if (fd < 0) {
		redial_free(rd);
		return BS_ESYS;
	}
	if (failed != 0 && failed != ECONNREFUSED && failed != ENOENT) {
		r = failed == EADDRNOTAVAIL || failed == ENETUNREACH ? BS_EADDR : BS_ESYS;
		close(fd);
		redial_free(rd);
		errno = failed;
		return r;
	}
	/* Refused at once (a Unix socket nobody listens on) still gets its
	 * events from the I/O thread: the id is the caller's to watch. */
	c = table_alloc(&bs->table);
	if (c == NULL) {
		close(fd);
		redial_free(rd);
		return BS_ELIMIT;
	}
	life_setup(bs, c, fd, f);
	c->dialled = 1;
	c->close_errno = failed; /* the I/O thread reports it */
	/* The peer is the address dialled, for every connection of the id;
	 * a Unix socket's path does not fit the slot: its family says it. */
	c->peer_len = a.len <= sizeof(c->peer) ? a.len : (socklen_t)sizeof(sa_family_t);
	memcpy(&c->peer, &a.sa, c->peer_len);
	atomic_store_explicit(&c->user, opts->user, memory_order_relaxed);
	atomic_store_explicit(&c->state, CONN_CONNECTING, memory_order_relaxed);
	rd->c = c;
	pthread_mutex_lock(&c->lock);
	c->rd = rd;
	pthread_mutex_unlock(&c->lock);
	atomic_fetch_add_explicit(&bs->conns_dialled, 1, memory_order_relaxed);
	*id = conn_id(c);
	io_adopt(instance_next_io(bs), c);
	return 0;
}

int bs_dial(bs_t *bs, const char *addr, const bs_framing_t *framing, bs_id_t *id)
{
	return bs_dial_ex(bs, addr, framing, NULL, id);
}

int bs_redial(bs_t *bs, bs_id_t id)
{
	struct bs_conn *c;
	struct io *io;
	int r;

	if (bs == NULL)
		return BS_EINVAL;
	c = table_lock(&bs->table, id);
	if (c == NULL)
		return BS_ESTALE;
	io = c->io;
	if (c->rd == NULL || !c->rd->opts.reconnect)
		r = BS_EINVAL;
	else if (!instance_running(bs))
		r = BS_ESHUTDOWN;
	else if (c->close_reason != 0 || conn_state(c) == CONN_CLOSING ||
		 conn_state(c) == CONN_CLOSED)
		r = BS_ESTALE;
	else if (conn_state(c) != CONN_DOWN)
		r = BS_EAGAIN;
	else {
		atomic_store(&c->rd->poke, true);
		r = 0;
	}
	pthread_mutex_unlock(&c->lock);
	if (r == 0) {
		atomic_store(&io->poked, true);
		io_wake(io);
	}
	return r;
}
