/* bs_dial: non-blocking connect; the I/O thread finishes it. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

int bs_dial(bs_t *bs, const char *addr, const bs_framing_t *framing, bs_id_t *id)
{
	const struct endpoint *ep;
	struct bs_conn *c;
	struct worker *w;
	bs_addr_t a;
	int fd, r, failed = 0;

	if (bs == NULL || addr == NULL || id == NULL ||
	    (framing != NULL && bs_framing_check(framing) != 0))
		return BS_EINVAL;
	if (atomic_load(&bs->phase) != PHASE_RUN)
		return BS_ESHUTDOWN;
	r = addr_parse(addr, &a);
	if (r != 0)
		return r;
	ep = bs_endpoint(bs, framing);
	if (ep == NULL)
		return BS_ENOMEM;
	fd = addr_socket(&a);
	if (fd < 0)
		return BS_ESYS;
	addr_tune(fd, a.sa.ss_family, &bs->cfg);
	if (connect(fd, (struct sockaddr *)&a.sa, a.len) != 0) {
		failed = errno;
		if (failed == EINPROGRESS || failed == EAGAIN)
			failed = 0;
		else if (failed != ECONNREFUSED && failed != ENOENT) {
			r = failed == EADDRNOTAVAIL || failed == ENETUNREACH ? BS_EADDR : BS_ESYS;
			close(fd);
			return r;
		}
	}
	/* Refused at once (a Unix socket nobody listens on) still gets its
	 * close event from the I/O thread: the id is the caller's to watch. */
	c = table_alloc(&bs->table);
	if (c == NULL) {
		close(fd);
		return BS_ELIMIT;
	}
	w = worker_next(bs);
	c->fd = fd;
	c->ep = ep;
	c->dialled = 1;
	c->worker = w;
	c->close_errno = failed; /* the I/O thread reports it */
	atomic_store_explicit(&c->state, CONN_CONNECTING, memory_order_relaxed);
	atomic_fetch_add_explicit(&bs->conns_dialled, 1, memory_order_relaxed);
	*id = atomic_load(&c->id);
	worker_adopt(w, c);
	return 0;
}
