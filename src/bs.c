/* The instance: configuration, lifecycle, statistics, logging, ids. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coalesce.h"
#include "reader.h"
#include "worker.h"

#define DEFAULT_MAX_CONNECTIONS 65536u
#define DEFAULT_RECV_QUEUE 16384u
#define DEFAULT_SEND_QUEUE (4u * 1024 * 1024)
#define MAX_IO_POLL_US 10000u

void bs_config_init(bs_config_t *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_connections = DEFAULT_MAX_CONNECTIONS;
	cfg->recv_queue_len = DEFAULT_RECV_QUEUE;
	cfg->send_queue_bytes = DEFAULT_SEND_QUEUE;
	bs_framing_default(&cfg->framing);
	cfg->open_events = true;
	cfg->close_events = true;
	cfg->shutdown_timeout_ms = 5000;
	cfg->io_poll_us = 100;
	cfg->tcp_nodelay = true;
	cfg->backlog = 1024;
	cfg->reuseaddr = true;
	cfg->coalesce_sends = true;
	cfg->log_level = BS_LOG_WARN;
}

uint32_t bs_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

void bs_log(struct bs *bs, int level, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	if (bs->cfg.log == NULL || level > bs->cfg.log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	bs->cfg.log(bs->cfg.log_arg, level, line);
}

static bool framing_equal(const bs_framing_t *a, const bs_framing_t *b)
{
	return a->kind == b->kind && a->width == b->width &&
	       a->little_endian == b->little_endian && a->delim == b->delim &&
	       a->keep_delim == b->keep_delim && a->max_message_size == b->max_message_size;
}

const struct endpoint *bs_endpoint(struct bs *bs, const bs_framing_t *f)
{
	struct endpoint *ep;
	bs_framing_t want;

	if (f == NULL)
		return &bs->default_ep;
	want = *f;
	if (want.max_message_size == 0)
		want.max_message_size = BS_DEFAULT_MAX_MESSAGE_SIZE;
	if (framing_equal(&want, &bs->default_ep.framing))
		return &bs->default_ep;
	pthread_mutex_lock(&bs->ep_lock);
	for (ep = bs->eps; ep != NULL; ep = ep->next)
		if (framing_equal(&ep->framing, &want))
			break;
	if (ep == NULL && (ep = calloc(1, sizeof(*ep))) != NULL) {
		ep->framing = want;
		ep->next = bs->eps;
		bs->eps = ep;
	}
	pthread_mutex_unlock(&bs->ep_lock);
	return ep;
}

static int resolve_config(bs_config_t *c)
{
	long cpus;

	if (c->framing.max_message_size == 0)
		c->framing.max_message_size = BS_DEFAULT_MAX_MESSAGE_SIZE;
	if (bs_framing_check(&c->framing) != 0)
		return BS_EINVAL;
	if (c->io_threads == 0) {
		cpus = sysconf(_SC_NPROCESSORS_ONLN);
		c->io_threads = cpus > 0 ? (unsigned)cpus : 1;
	}
	if (c->io_threads > BS_MAX_IO_THREADS)
		c->io_threads = BS_MAX_IO_THREADS;
	if (c->max_connections == 0)
		c->max_connections = DEFAULT_MAX_CONNECTIONS;
	if (c->max_connections > ID_SLOT_MASK)
		return BS_EINVAL;
	if (c->recv_queue_len == 0)
		c->recv_queue_len = DEFAULT_RECV_QUEUE;
	if (c->recv_queue_len > (1u << 26))
		return BS_EINVAL;
	if (c->send_queue_bytes == 0)
		c->send_queue_bytes = DEFAULT_SEND_QUEUE;
	if (c->backlog <= 0)
		c->backlog = 1024;
	/* Timers and idle timeouts wait while an I/O thread polls. */
	if (c->io_poll_us > MAX_IO_POLL_US)
		c->io_poll_us = MAX_IO_POLL_US;
	return 0;
}

static void stop_workers(struct bs *bs, unsigned started)
{
	atomic_store(&bs->phase, PHASE_EXIT);
	for (unsigned i = 0; i < started; i++)
		worker_wake(&bs->workers[i]);
	for (unsigned i = 0; i < started; i++)
		worker_join(&bs->workers[i]);
}

static void free_instance(struct bs *bs)
{
	struct endpoint *ep, *next;

	for (unsigned i = 0; bs->workers && i < bs->nworkers; i++)
		worker_free(&bs->workers[i]);
	for (unsigned i = 0; i < BS_MAX_LISTENERS; i++) {
		struct listener *l = atomic_load(&bs->listeners[i]);
		if (l != NULL) {
			close(l->fd);
			free(l);
		}
	}
	for (ep = bs->eps; ep != NULL; ep = next) {
		next = ep->next;
		free(ep);
	}
	free(bs->workers);
	events_free(bs);
	table_destroy(&bs->table);
	pthread_mutex_destroy(&bs->ep_lock);
	pthread_mutex_destroy(&bs->send_wait_lock);
	pthread_cond_destroy(&bs->send_wait_cond);
	free(bs);
}

int bs_create(const bs_config_t *cfg, bs_t **out)
{
	struct bs *bs;
	unsigned i;
	int r;

	if (out == NULL)
		return BS_EINVAL;
	bs = calloc(1, sizeof(*bs));
	if (bs == NULL)
		return BS_ENOMEM;
	if (cfg != NULL)
		bs->cfg = *cfg;
	else
		bs_config_init(&bs->cfg);
	pthread_mutex_init(&bs->ep_lock, NULL);
	pthread_mutex_init(&bs->send_wait_lock, NULL);
	pthread_cond_init(&bs->send_wait_cond, NULL);
	r = resolve_config(&bs->cfg);
	if (r == 0)
		r = table_init(&bs->table, bs->cfg.max_connections, bs->cfg.node);
	if (r != 0) {
		pthread_mutex_destroy(&bs->ep_lock);
		pthread_mutex_destroy(&bs->send_wait_lock);
		pthread_cond_destroy(&bs->send_wait_cond);
		free(bs);
		return r;
	}
	bs->default_ep.framing = bs->cfg.framing;
	atomic_store(&bs->now_ms, bs_now_ms());
	r = events_init(bs);
	bs->nworkers = bs->cfg.io_threads;
	bs->workers = r ? NULL : calloc(bs->nworkers, sizeof(*bs->workers));
	if (bs->workers == NULL) {
		bs->nworkers = 0;
		free_instance(bs);
		return r ? r : BS_ENOMEM;
	}
	for (i = 0; i < bs->nworkers; i++) {
		r = worker_start(bs, &bs->workers[i], i);
		if (r != 0)
			break;
	}
	if (r != 0) {
		/* The failed one has no thread; free what it opened. */
		stop_workers(bs, i);
		free_instance(bs);
		return r;
	}
	coalesce_register(bs);
	*out = bs;
	return 0;
}

void bs_shutdown(bs_t *bs)
{
	int expected = PHASE_RUN;

	if (bs == NULL || !atomic_compare_exchange_strong(&bs->phase, &expected, PHASE_DRAIN))
		return;
	listeners_close_all(bs);
	events_wake_all(bs);
}

unsigned bs_live_sockets(struct bs *bs)
{
	unsigned n = 0;
	for (unsigned i = 0; i < bs->nworkers; i++)
		n += atomic_load_explicit(&bs->workers[i].nconns, memory_order_relaxed);
	return n;
}

/* Waits until no socket is left or `ms` passed. */
static void wait_sockets_closed(struct bs *bs, uint32_t ms)
{
	uint32_t start = bs_now_ms();

	while (bs_live_sockets(bs) != 0 && bs_now_ms() - start < ms)
		usleep(1000);
}

static void wait_calls_left(struct bs *bs, uint32_t ms)
{
	uint32_t start = bs_now_ms();

	while (atomic_load(&bs->in_calls) != 0 && bs_now_ms() - start < ms) {
		events_wake_all(bs);
		usleep(1000);
	}
}

void bs_destroy(bs_t *bs)
{
	if (bs == NULL)
		return;
	/* Other threads' held-back replies are left to the shutdown flush. */
	coalesce_unregister(bs);
	bs_shutdown(bs);
	wait_sockets_closed(bs, bs->cfg.shutdown_timeout_ms);
	atomic_store(&bs->phase, PHASE_FORCE);
	for (unsigned i = 0; i < bs->nworkers; i++)
		worker_wake(&bs->workers[i]);
	wait_sockets_closed(bs, 1000);
	stop_workers(bs, bs->nworkers);
	/* Receivers may drain what is queued, then get BS_ESHUTDOWN... */
	wait_calls_left(bs, 100);
	/* ...and whoever still waits (for events that cannot come) too. */
	atomic_store(&bs->phase, PHASE_DEAD);
	wait_calls_left(bs, UINT32_MAX);
	free_instance(bs);
}

void bs_stats(bs_t *bs, bs_stats_t *o)
{
	memset(o, 0, sizeof(*o));
	if (bs == NULL)
		return;
	for (unsigned i = 0; i < bs->nworkers; i++) {
		struct worker *w = &bs->workers[i];
		struct worker_stats *s = &w->st;
		o->conns_open += atomic_load_explicit(&w->nconns, memory_order_relaxed);
		o->conns_accepted += atomic_load_explicit(&s->accepted, memory_order_relaxed);
		o->conns_closed += atomic_load_explicit(&s->closed, memory_order_relaxed);
		o->msgs_in += atomic_load_explicit(&s->msgs_in, memory_order_relaxed);
		o->bytes_in += atomic_load_explicit(&s->bytes_in, memory_order_relaxed);
		o->read_pauses += atomic_load_explicit(&s->read_pauses, memory_order_relaxed);
		o->paused_reads += atomic_load_explicit(&s->paused_reads, memory_order_relaxed);
		o->frames_rejected += atomic_load_explicit(&s->frames_rejected, memory_order_relaxed);
		o->idle_timeouts += atomic_load_explicit(&s->idle_timeouts, memory_order_relaxed);
		o->accept_errors += atomic_load_explicit(&s->accept_errors, memory_order_relaxed);
		o->unsent_msgs += atomic_load_explicit(&s->unsent_msgs, memory_order_relaxed);
		o->data_queue_depth += ck_ring_size(&w->ring);
	}
	o->conns_dialled = atomic_load_explicit(&bs->conns_dialled, memory_order_relaxed);
	o->msgs_out = atomic_load_explicit(&bs->msgs_out, memory_order_relaxed);
	o->bytes_out = atomic_load_explicit(&bs->bytes_out, memory_order_relaxed);
	o->sends_refused = atomic_load_explicit(&bs->sends_refused, memory_order_relaxed);
	o->sends_stale = atomic_load_explicit(&bs->sends_stale, memory_order_relaxed);
	o->send_writes = atomic_load_explicit(&bs->send_writes, memory_order_relaxed);
	o->open_queue_depth = ck_ring_size(&bs->open_ring);
	o->close_queue_depth = ck_ring_size(&bs->close_ring);
}

/* ---- ids ------------------------------------------------------------------ */

char *bs_id_format(bs_id_t id, char buf[BS_ID_STRLEN])
{
	snprintf(buf, BS_ID_STRLEN, "%016" PRIx64, id);
	return buf;
}

int bs_id_parse(const char *text, bs_id_t *id)
{
	uint64_t v = 0;
	size_t n;

	if (text == NULL || id == NULL)
		return BS_EINVAL;
	for (n = 0; text[n] != '\0'; n++) {
		char ch = text[n];
		int d = ch >= '0' && ch <= '9' ? ch - '0'
			: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
			: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
		if (d < 0 || n >= 16)
			return BS_EINVAL;
		v = v << 4 | (uint64_t)d;
	}
	if (n == 0)
		return BS_EINVAL;
	*id = v;
	return 0;
}

uint16_t bs_id_node(bs_id_t id)
{
	return (uint16_t)(id >> 48);
}
