/* The instance: configuration, lifecycle, statistics and id text. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "listener.h"
#include "recv.h"
#include "stat.h"
#include "worker.h"

#define DEFAULT_MAX_CONNECTIONS 65536u
#define DEFAULT_RECV_BACKLOG (1024u * 1024u)
#define DEFAULT_SEND_QUEUE (4u * 1024 * 1024)
#define DEFAULT_HOLD_BATCH 64u
#define MAX_IO_POLL_US 10000u
/* A busy thread's BS_SEND_MORE frames wait at most this long (recv.c).
 * Measured on the 100-topic pub/sub load (2 CPUs, shared): a full batch of
 * 256 publishes, 10 deliveries each, takes 2 ms or more there, so a 2 ms
 * bound wrote after nearly every batch (4.5-6 deliveries per write, about
 * 4 before); at 10 ms running dry decides most writes: 9 per write. */
#define DEFAULT_SEND_MORE_US 10000u
#define MAX_SEND_MORE_US 1000000u

void bs_config_init(bs_config_t *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_connections = DEFAULT_MAX_CONNECTIONS;
	cfg->recv_backlog_bytes = DEFAULT_RECV_BACKLOG;
	cfg->send_queue_bytes = DEFAULT_SEND_QUEUE;
	bs_framing_default(&cfg->framing);
	cfg->open_events = true;
	cfg->close_events = true;
	cfg->hold_batch = DEFAULT_HOLD_BATCH;
	cfg->hold_warn_ms = 1000;
	cfg->send_more_us = DEFAULT_SEND_MORE_US;
	cfg->shutdown_timeout_ms = 5000;
	cfg->io_poll_us = 100;
	cfg->recv_poll_us = 100;
	cfg->tcp_nodelay = true;
	cfg->backlog = 1024;
	cfg->reuseaddr = true;
	cfg->slow_policy = BS_SLOW_REFUSE;
	cfg->log_level = BS_LOG_WARN;
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
	if (c->recv_backlog_bytes == 0)
		c->recv_backlog_bytes = DEFAULT_RECV_BACKLOG;
	if (c->send_queue_bytes == 0)
		c->send_queue_bytes = DEFAULT_SEND_QUEUE;
	if (c->hold_batch == 0)
		c->hold_batch = DEFAULT_HOLD_BATCH;
	if (c->slow_policy < BS_SLOW_REFUSE || c->slow_policy > BS_SLOW_DISCONNECT)
		return BS_EINVAL;
	if (c->backlog <= 0)
		c->backlog = 1024;
	/* Timers and idle timeouts wait while an I/O thread polls. */
	if (c->io_poll_us > MAX_IO_POLL_US)
		c->io_poll_us = MAX_IO_POLL_US;
	if (c->recv_poll_us > MAX_IO_POLL_US)
		c->recv_poll_us = MAX_IO_POLL_US;
	/* Deferred frames must not wait unboundedly for a busy thread. */
	if (c->send_more_us > MAX_SEND_MORE_US)
		c->send_more_us = MAX_SEND_MORE_US;
	return 0;
}

static void free_instance(struct bs *bs)
{
	workers_free(bs);
	listeners_free(bs);
	sched_free(&bs->sched);
	table_destroy(&bs->table);
	endpoints_free(&bs->eps);
	pthread_mutex_destroy(&bs->listen_lock);
	pthread_mutex_destroy(&bs->send_wait_lock);
	pthread_cond_destroy(&bs->send_wait_cond);
	free(bs);
}

int bs_create(const bs_config_t *cfg, bs_t **out)
{
	pthread_condattr_t ca;
	struct bs *bs;
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
	r = resolve_config(&bs->cfg);
	if (r != 0) {
		free(bs);
		return r;
	}
	bs->log = (struct logger){ bs->cfg.log, bs->cfg.log_arg, bs->cfg.log_level };
	endpoints_init(&bs->eps, &bs->cfg.framing);
	pthread_mutex_init(&bs->listen_lock, NULL);
	pthread_mutex_init(&bs->send_wait_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are monotonic */
	pthread_cond_init(&bs->send_wait_cond, &ca);
	pthread_condattr_destroy(&ca);
	atomic_store(&bs->now_ms, clock_ms());
	r = table_init(&bs->table, bs->cfg.max_connections, bs->cfg.node);
	if (r == 0)
		r = sched_init(&bs->sched, bs->cfg.max_connections, bs->cfg.open_events,
			       bs->cfg.close_events);
	if (r == 0)
		r = workers_start(bs, bs->cfg.io_threads);
	if (r != 0) {
		free_instance(bs);
		return r;
	}
	*out = bs;
	return 0;
}

void bs_shutdown(bs_t *bs)
{
	int expected = PHASE_RUN;

	if (bs == NULL || !atomic_compare_exchange_strong(&bs->phase, &expected, PHASE_DRAIN))
		return;
	listeners_close_all(bs);
	sched_wake_all(&bs->sched);
}

/* Waits until no socket is left or `ms` passed. */
static void wait_sockets_closed(struct bs *bs, uint32_t ms)
{
	uint32_t start = clock_ms();

	while (workers_live_sockets(bs) != 0 && !ms_elapsed(clock_ms(), start, ms))
		usleep(1000);
}

static void wait_calls_left(struct bs *bs, uint32_t ms)
{
	uint32_t start = clock_ms();

	while (atomic_load(&bs->in_calls) != 0 && !ms_elapsed(clock_ms(), start, ms)) {
		sched_wake_all(&bs->sched);
		usleep(1000);
	}
}

void bs_destroy(bs_t *bs)
{
	if (bs == NULL)
		return;
	/* What this thread holds and queued goes out with the rest. */
	recv_release_thread(bs);
	bs_shutdown(bs);
	wait_sockets_closed(bs, bs->cfg.shutdown_timeout_ms);
	atomic_store(&bs->phase, PHASE_FORCE);
	instance_wake_io(bs);
	wait_sockets_closed(bs, 1000);
	atomic_store(&bs->phase, PHASE_EXIT);
	workers_stop(bs);
	/* Receivers may drain what is queued, then get BS_ESHUTDOWN... */
	wait_calls_left(bs, 100);
	/* ...and whoever still waits (for events that cannot come) too. */
	atomic_store(&bs->phase, PHASE_DEAD);
	wait_calls_left(bs, UINT32_MAX);
	recv_forget_instance(bs);
	free_instance(bs);
}

void bs_stats(bs_t *bs, bs_stats_t *o)
{
	memset(o, 0, sizeof(*o));
	if (bs == NULL)
		return;
	for (unsigned i = 0; i < bs->nworkers; i++) {
		struct io *io = bs->io[i];
		struct io_stats *s = &io->st;

		o->conns_open += atomic_load_explicit(&io->nconns, memory_order_relaxed);
		o->conns_accepted += stat_get(&s->accepted);
		o->conns_closed += stat_get(&s->closed);
		o->msgs_in += stat_get(&s->msgs_in);
		o->bytes_in += stat_get(&s->bytes_in);
		o->read_pauses += stat_get(&s->read_pauses);
		o->paused_reads += stat_get(&s->paused_reads);
		o->frames_rejected += stat_get(&s->frames_rejected);
		o->idle_timeouts += stat_get(&s->idle_timeouts);
		o->accept_errors += stat_get(&s->accept_errors);
		o->unsent_msgs += stat_get(&s->unsent_msgs);
	}
	o->conns_dialled = stat_get(&bs->conns_dialled);
	o->msgs_out = stat_get(&bs->msgs_out);
	o->bytes_out = stat_get(&bs->bytes_out);
	o->sends_refused = stat_get(&bs->sends_refused);
	o->sends_stale = stat_get(&bs->sends_stale);
	o->send_writes = stat_get(&bs->send_writes);
	o->msgs_dropped = stat_get(&bs->msgs_dropped);
	o->slow_disconnects = stat_get(&bs->slow_disconnects);
	o->holds_stuck = stat_get(&bs->holds_stuck);
	o->dial_retries = stat_get(&bs->dial_retries);
	o->reconnects = stat_get(&bs->reconnects);
	o->msgs_maybe_lost = stat_get(&bs->msgs_maybe_lost);
	o->msgs_returned = stat_get(&bs->msgs_returned);
	o->data_queue_depth = stat_get(&bs->undelivered);
	o->open_queue_depth = sched_queued(&bs->sched, EV_OPEN);
	o->close_queue_depth = sched_queued(&bs->sched, EV_CLOSE);
	o->ready_conns = sched_queued(&bs->sched, EV_DATA);
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
