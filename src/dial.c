/* bs_dial: a non-blocking connect that the I/O thread completes. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "life.h"

int bs_dial(bs_t *bs, const char *addr, const bs_framing_t *framing, bs_id_t *id)
{
	const bs_framing_t *f;
	struct bs_conn *c;
	bs_addr_t a;
	int fd, r, failed = 0;

	if (bs == NULL || addr == NULL || id == NULL ||
	    (framing != NULL && bs_framing_check(framing) != 0))
		return BS_EINVAL;
	if (!instance_running(bs))
		return BS_ESHUTDOWN;
	r = addr_parse(addr, &a);
	if (r != 0)
		return r;
	f = endpoint_intern(&bs->eps, framing);
	if (f == NULL)
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
	life_setup(bs, c, fd, f);
	c->dialled = 1;
	c->close_errno = failed; /* the I/O thread reports it */
	atomic_store_explicit(&c->state, CONN_CONNECTING, memory_order_relaxed);
	atomic_fetch_add_explicit(&bs->conns_dialled, 1, memory_order_relaxed);
	*id = conn_id(c);
	io_adopt(instance_next_io(bs), c);
	return 0;
}
