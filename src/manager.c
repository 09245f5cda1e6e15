/*
 * The Manager: listeners and reconnecting writers by address, over the
 * public API (bs_manager_* in buffstreams.h), as Go BuffStreams' Manager.
 *
 * Two tables map address text to a listener id and to a writer's
 * connection id. A write looks its writer up under the read lock and sends
 * outside any lock of the manager's (bs_send is safe from any thread), so
 * writers to one address or to many run side by side; the write lock is
 * taken only to add, replace or remove an entry. A writer is dialled
 * under the write lock, so concurrent first writes to one address make one
 * connection (its name, if any, is resolved then).
 *
 * Any thread. It calls the public API, and backoff.h to check options.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buffstreams.h"

struct entry {
	struct entry *next;
	uint64_t id;            /* a listener id or a connection id */
	char addr[];
};

struct table {
	struct entry **b;
	size_t nb, n;
};

struct bs_manager {
	bs_t *bs;
	bool has_framing;
	bs_framing_t framing;
	bs_dial_opts_t opts;
	pthread_rwlock_t lock;
	struct table listeners, writers;
};

/* ---- the address tables ---------------------------------------------------- */

static size_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return (size_t)h;
}

static struct entry **slot(struct table *t, const char *addr)
{
	struct entry **p;

	if (t->nb == 0)
		return NULL;
	for (p = &t->b[hash(addr) & (t->nb - 1)]; *p != NULL; p = &(*p)->next)
		if (strcmp((*p)->addr, addr) == 0)
			return p;
	return p;
}

static struct entry *find(struct table *t, const char *addr)
{
	struct entry **p = slot(t, addr);

	return p ? *p : NULL;
}

/* Doubles the buckets once there are more entries than buckets. */
static bool grow(struct table *t)
{
	size_t nb = t->nb ? 2 * t->nb : 8;
	struct entry **b = calloc(nb, sizeof(*b));

	if (b == NULL)
		return false;
	for (size_t i = 0; i < t->nb; i++) {
		for (struct entry *e = t->b[i], *next; e != NULL; e = next) {
			next = e->next;
			e->next = b[hash(e->addr) & (nb - 1)];
			b[hash(e->addr) & (nb - 1)] = e;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
	return true;
}

static bool insert(struct table *t, const char *addr, uint64_t id)
{
	size_t len = strlen(addr) + 1;
	struct entry *e, **p;

	if (t->n >= t->nb && !grow(t) && t->nb == 0)
		return false; /* a full table works on; an empty one cannot */
	e = malloc(sizeof(*e) + len);
	if (e == NULL)
		return false;
	memcpy(e->addr, addr, len);
	e->id = id;
	e->next = NULL;
	p = slot(t, addr);
	*p = e;
	t->n++;
	return true;
}

/* Unlinks and returns addr's entry, or NULL. */
static struct entry *take(struct table *t, const char *addr)
{
	struct entry **p = slot(t, addr), *e;

	if (p == NULL || *p == NULL)
		return NULL;
	e = *p;
	*p = e->next;
	t->n--;
	return e;
}

/* Unlinks every entry into a list (through next). */
static struct entry *take_all(struct table *t)
{
	struct entry *all = NULL;

	for (size_t i = 0; i < t->nb; i++) {
		while (t->b[i] != NULL) {
			struct entry *e = t->b[i];
			t->b[i] = e->next;
			e->next = all;
			all = e;
		}
	}
	t->n = 0;
	return all;
}

/* ---- the manager ------------------------------------------------------------- */

int bs_manager_create(bs_t *bs, const bs_framing_t *framing, const bs_dial_opts_t *opts,
		      bs_manager_t **out)
{
	bs_manager_t *m;

	if (bs == NULL || out == NULL || (framing != NULL && bs_framing_check(framing) != 0) ||
	    (opts != NULL && backoff_check(opts) != 0))
		return BS_EINVAL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return BS_ENOMEM;
	m->bs = bs;
	if (framing != NULL) {
		m->has_framing = true;
		m->framing = *framing;
	}
	if (opts != NULL) {
		m->opts = *opts;
	} else {
		bs_dial_opts_init(&m->opts);
		m->opts.reconnect = true;
		m->opts.hand_back = true;
	}
	if (pthread_rwlock_init(&m->lock, NULL) != 0) {
		free(m);
		return BS_ENOMEM;
	}
	*out = m;
	return 0;
}

void bs_manager_destroy(bs_manager_t *m)
{
	struct entry *e, *next;

	if (m == NULL)
		return;
	pthread_rwlock_wrlock(&m->lock);
	e = take_all(&m->listeners);
	pthread_rwlock_unlock(&m->lock);
	for (; e != NULL; e = next) {
		next = e->next;
		(void)bs_listen_close(m->bs, (uint32_t)e->id);
		free(e);
	}
	pthread_rwlock_wrlock(&m->lock);
	e = take_all(&m->writers);
	pthread_rwlock_unlock(&m->lock);
	for (; e != NULL; e = next) {
		next = e->next;
		(void)bs_send_close(m->bs, e->id);
		free(e);
	}
	free(m->listeners.b);
	free(m->writers.b);
	pthread_rwlock_destroy(&m->lock);
	free(m);
}

static const bs_framing_t *framing_of(bs_manager_t *m)
{
	return m->has_framing ? &m->framing : NULL;
}

/* Whether addr names port 0: the listener is then known by its bound
 * address. */
static bool any_port(const char *addr)
{
	size_t n = strlen(addr);

	return strncmp(addr, "unix:", 5) != 0 && n >= 2 && strcmp(addr + n - 2, ":0") == 0;
}

int bs_manager_listen(bs_manager_t *m, const char *addr, char *bound, size_t len)
{
	char at[BS_ADDR_STRLEN];
	const char *key;
	uint32_t lis = 0;
	int r;

	if (m == NULL || addr == NULL)
		return BS_EINVAL;
	pthread_rwlock_wrlock(&m->lock);
	r = find(&m->listeners, addr) != NULL ? BS_EINVAL
					       : bs_listen(m->bs, addr, framing_of(m), &lis);
	if (r == 0) {
		r = bs_listener_addr(m->bs, lis, at, sizeof(at));
		key = any_port(addr) ? at : addr;
		if (r == 0 && find(&m->listeners, key) != NULL)
			r = BS_EINVAL;
		if (r == 0 && !insert(&m->listeners, key, lis))
			r = BS_ENOMEM;
		if (r != 0)
			(void)bs_listen_close(m->bs, lis); /* nothing stays bound */
	}
	pthread_rwlock_unlock(&m->lock);
	if (r != 0)
		return r;
	if (bound != NULL && len > 0) {
		size_t n = strlen(at);
		if (n >= len)
			return BS_EMSGSIZE;
		memcpy(bound, at, n + 1);
	}
	return 0;
}

int bs_manager_close_listener(bs_manager_t *m, const char *addr)
{
	struct entry *e;
	int r;

	if (m == NULL || addr == NULL)
		return BS_EINVAL;
	pthread_rwlock_wrlock(&m->lock);
	e = take(&m->listeners, addr);
	pthread_rwlock_unlock(&m->lock);
	if (e == NULL)
		return BS_ESTALE;
	r = bs_listen_close(m->bs, (uint32_t)e->id);
	free(e);
	return r;
}

/*
 * The writer of addr other than `stale` (0: any): the one in the table, or
 * a new dial that takes its place. 0 and *id, or bs_dial_ex's code.
 */
static int writer_get(bs_manager_t *m, const char *addr, bs_id_t stale, bs_id_t *id)
{
	struct entry *e;
	bs_id_t fresh;
	int r;

	pthread_rwlock_rdlock(&m->lock);
	e = find(&m->writers, addr);
	if (e != NULL && e->id != stale) {
		*id = e->id;
		pthread_rwlock_unlock(&m->lock);
		return 0;
	}
	pthread_rwlock_unlock(&m->lock);

	pthread_rwlock_wrlock(&m->lock);
	e = find(&m->writers, addr);
	if (e != NULL && e->id != stale) { /* another thread dialled first */
		*id = e->id;
		pthread_rwlock_unlock(&m->lock);
		return 0;
	}
	r = bs_dial_ex(m->bs, addr, framing_of(m), &m->opts, &fresh);
	if (r == 0 && e != NULL)
		e->id = fresh;
	else if (r == 0 && !insert(&m->writers, addr, fresh))
		r = BS_ENOMEM;
	pthread_rwlock_unlock(&m->lock);
	if (r == BS_ENOMEM && e == NULL)
		(void)bs_send_close(m->bs, fresh);
	if (r == 0)
		*id = fresh;
	return r;
}

int bs_manager_dial(bs_manager_t *m, const char *addr, bs_id_t *id)
{
	bs_id_t got;
	int r;

	if (m == NULL || addr == NULL)
		return BS_EINVAL;
	r = writer_get(m, addr, 0, &got);
	if (r == 0 && id != NULL)
		*id = got;
	return r;
}

int bs_manager_write(bs_manager_t *m, const char *addr, const void *data, size_t len)
{
	bs_id_t id;
	int r;

	if (m == NULL || addr == NULL || (data == NULL && len != 0))
		return BS_EINVAL;
	r = writer_get(m, addr, 0, &id);
	if (r != 0)
		return r;
	r = bs_send_data(m->bs, id, data, len);
	if (r != BS_ESTALE)
		return r;
	/* The writer closed for good (it gave up, or was closed): once,
	 * a new one takes its place. */
	r = writer_get(m, addr, id, &id);
	return r != 0 ? r : bs_send_data(m->bs, id, data, len);
}

int bs_manager_writer(bs_manager_t *m, const char *addr, bs_id_t *id)
{
	struct entry *e;

	if (m == NULL || addr == NULL || id == NULL)
		return BS_EINVAL;
	pthread_rwlock_rdlock(&m->lock);
	e = find(&m->writers, addr);
	if (e != NULL)
		*id = e->id;
	pthread_rwlock_unlock(&m->lock);
	return e != NULL ? 0 : BS_ESTALE;
}

int bs_manager_close_writer(bs_manager_t *m, const char *addr)
{
	struct entry *e;

	if (m == NULL || addr == NULL)
		return BS_EINVAL;
	pthread_rwlock_wrlock(&m->lock);
	e = take(&m->writers, addr);
	pthread_rwlock_unlock(&m->lock);
	if (e == NULL)
		return BS_ESTALE;
	(void)bs_send_close(m->bs, e->id); /* BS_ESTALE: it had closed already */
	free(e);
	return 0;
}

int bs_manager_count(bs_manager_t *m, size_t *listeners, size_t *writers)
{
	if (m == NULL)
		return BS_EINVAL;
	pthread_rwlock_rdlock(&m->lock);
	if (listeners != NULL)
		*listeners = m->listeners.n;
	if (writers != NULL)
		*writers = m->writers.n;
	pthread_rwlock_unlock(&m->lock);
	return 0;
}
