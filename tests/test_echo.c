/*
 * Echo: many connections, several threads draining each queue, every byte
 * and the per-connection order checked, exactly one open and one close per
 * id in the order the contract promises. Also the other transports (unix,
 * IPv6) and connections dialled by the library.
 */
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 10000

/* ------------------------------------------------------------------------
 * Many connections, many drainers
 *
 * Odd-numbered client connections send everything and half-close at once
 * ("fire"); even ones wait for every echo before closing. The first kind
 * makes the close event race the last messages; the second checks every
 * echoed byte.
 */
enum {
	CONNS = 100,
	DRAINERS = 4,
	CLIENT_THREADS = 2,
	ECHO_WINDOW = 16,  /* messages in flight per waiting connection */
	FIRE_WINDOW = 64,
	MIN_LEN = TU_PATTERN_MIN,
	MAX_LEN = 300,
};

/* The server's view of one id (index from the id map). */
struct conn {
	pthread_mutex_t lock;
	/* under the map lock: */
	int opens;
	uint64_t open_ord;     /* 1-based rank among recorded opens; 0 = not yet */
	bool early;            /* something for this id came before its open */
	uint64_t early_opens;  /* opens recorded at that moment */
	/* under lock: */
	long stream;           /* client connection index, from the payloads */
	uint32_t next_seq;     /* the next message to echo */
	uint32_t received;
	bs_data_t *held;       /* messages that overtook an earlier one, by seq */
	bool *present;
	int closes, close_reason;
	unsigned stale_echoes;
};

struct server {
	bs_t *bs;
	uint32_t listener;
	uint32_t msgs;             /* per connection */
	pthread_mutex_t map_lock;
	tu_idmap_t map;
	struct conn conns[CONNS];
	uint64_t opens_recorded;   /* under map_lock */
	/* set by a drainer from before it calls bs_recv_data until it has
	 * accounted for what the call returned */
	atomic_int holding[DRAINERS];
	atomic_bool stop;
	atomic_uint closes;
	atomic_uint reorders, close_races;
};

struct drainer_arg {
	struct server *srv;
	int index;
};

static bool fire_mode(uint32_t stream)
{
	return stream & 1;
}

/* The entry for id (added when new). opening records an open; otherwise an
 * event for an id whose open is not recorded yet is noted as early. */
static struct conn *conn_of(struct server *s, bs_id_t id, bool opening)
{
	pthread_mutex_lock(&s->map_lock);
	long k = tu_idmap_add(&s->map, id, NULL);
	struct conn *c = k >= 0 ? &s->conns[k] : NULL;
	if (c && opening) {
		c->opens++;
		c->open_ord = ++s->opens_recorded;
	} else if (c && c->open_ord == 0 && !c->early) {
		c->early = true;
		c->early_opens = s->opens_recorded;
	}
	pthread_mutex_unlock(&s->map_lock);
	return c;
}

static unsigned others_holding(struct server *s, int me)
{
	unsigned n = 0;
	for (int i = 0; i < DRAINERS; i++)
		if (i != me && atomic_load(&s->holding[i]))
			n++;
	return n;
}

/* Echoes one message zero-copy; the library takes the reference. */
static void echo(struct server *s, struct conn *c, bs_data_t *ev)
{
	int rc = bs_send_msg(s->bs, ev->id, ev->msg, ev->data, ev->len);
	if (rc == 0)
		return;
	bs_msg_release(ev->msg);
	/* a half-closed peer may be gone already */
	if (rc == BS_ESTALE && fire_mode((uint32_t)c->stream))
		c->stale_echoes++;
	else
		TU_CHECK(0, "echo to stream %ld: %s", c->stream, bs_err_name(rc));
}

/*
 * Accounts for one returned message. Threads cannot tell the order in which
 * the library returned two messages to two of them, but a message that
 * overtook earlier ones of its id is only legal while each earlier one is
 * still held by another drainer that has not accounted for it yet. Such
 * messages wait here and are echoed in order.
 */
static void take(struct server *s, int me, bs_data_t *ev)
{
	uint32_t stream, seq;
	struct conn *c = conn_of(s, ev->id, false);

	if (!c) {
		TU_CHECK(0, "data for more ids than connections");
		bs_msg_release(ev->msg);
		return;
	}
	if (tu_pattern_check(ev->data, ev->len, &stream, &seq) != 0 ||
	    stream >= CONNS || seq >= s->msgs ||
	    ev->len != tu_pattern_len(stream, seq, MIN_LEN, MAX_LEN)) {
		TU_CHECK(0, "corrupt message of %zu bytes", ev->len);
		bs_msg_release(ev->msg);
		return;
	}

	pthread_mutex_lock(&c->lock);
	if (c->stream < 0)
		c->stream = stream;
	TU_CHECK(c->stream == (long)stream, "one id carries streams %ld and %u",
		 c->stream, stream);
	if (c->stream != (long)stream || seq < c->next_seq || c->present[seq]) {
		TU_CHECK(0, "stream %u: message %u returned twice", stream, seq);
		bs_msg_release(ev->msg);
	} else if (seq == c->next_seq) {
		echo(s, c, ev);
		c->next_seq++;
		while (c->next_seq < s->msgs && c->present[c->next_seq]) {
			c->present[c->next_seq] = false;
			echo(s, c, &c->held[c->next_seq]);
			c->next_seq++;
		}
	} else {
		unsigned missing = 0;
		for (uint32_t q = c->next_seq; q < seq; q++)
			missing += !c->present[q];
		unsigned others = others_holding(s, me);
		TU_CHECK(missing <= others,
			 "stream %u: message %u returned while %u earlier ones were "
			 "not returned yet (only %u other drainers busy)",
			 stream, seq, missing, others);
		c->held[seq] = *ev;
		c->present[seq] = true;
		atomic_fetch_add(&s->reorders, 1);
	}
	c->received++;
	pthread_mutex_unlock(&c->lock);
}

static void *drainer_main(void *arg)
{
	struct drainer_arg *d = arg;
	struct server *s = d->srv;

	while (!atomic_load(&s->stop)) {
		bs_data_t ev;
		atomic_store(&s->holding[d->index], 1);
		int rc = bs_recv_data(s->bs, &ev, 50);
		if (rc == 0)
			take(s, d->index, &ev);
		atomic_store(&s->holding[d->index], 0);
		if (rc != 0 && rc != BS_ETIMEDOUT) {
			TU_CHECK(0, "bs_recv_data: %s", bs_err_name(rc));
			break;
		}
	}
	return NULL;
}

static void *opener_main(void *arg)
{
	struct server *s = arg;

	while (!atomic_load(&s->stop)) {
		bs_open_event_t ev;
		int rc = bs_recv_open(s->bs, &ev, 50);
		if (rc == BS_ETIMEDOUT)
			continue;
		if (rc != 0) {
			TU_CHECK(0, "bs_recv_open: %s", bs_err_name(rc));
			break;
		}
		TU_CHECK(!ev.dialled && ev.listener == s->listener &&
				 tu_sockaddr_port(&ev.peer) > 0,
			 "open event: dialled %d listener %u", ev.dialled, ev.listener);
		TU_CHECK(conn_of(s, ev.id, true) != NULL, "more opens than connections");
	}
	return NULL;
}

static void *closer_main(void *arg)
{
	struct server *s = arg;

	while (!atomic_load(&s->stop)) {
		bs_close_event_t ev;
		int rc = bs_recv_close(s->bs, &ev, 50);
		if (rc == BS_ETIMEDOUT)
			continue;
		if (rc != 0) {
			TU_CHECK(0, "bs_recv_close: %s", bs_err_name(rc));
			break;
		}
		struct conn *c = conn_of(s, ev.id, false);
		if (!c) {
			TU_CHECK(0, "close for more ids than connections");
			continue;
		}
		pthread_mutex_lock(&c->lock);
		/* a message returned before this close is either accounted for
		 * or still held by a drainer */
		uint32_t missing = s->msgs - c->received;
		unsigned busy = others_holding(s, -1);
		TU_CHECK(missing <= busy,
			 "close of stream %ld returned with %u of its messages not "
			 "returned yet (%u drainers busy)", c->stream, missing, busy);
		if (missing)
			atomic_fetch_add(&s->close_races, 1);
		c->closes++;
		c->close_reason = ev.reason;
		if (c->stream >= 0 && !fire_mode((uint32_t)c->stream))
			TU_CHECK(ev.unsent_msgs == 0 && ev.unsent_bytes == 0,
				 "stream %ld closed with %llu unsent", c->stream,
				 (unsigned long long)ev.unsent_msgs);
		pthread_mutex_unlock(&c->lock);
		atomic_fetch_add(&s->closes, 1);
	}
	return NULL;
}

/* ---- plain-socket clients ---- */

struct client_conn {
	int fd;
	tu_reader_t rd;
	uint32_t stream, sent, echoed;
	bool shut, done;
};

struct client_arg {
	const char *addr;
	uint32_t first, count, msgs;
	uint64_t bytes_sent;
	atomic_bool *abort;   /* the test gave up waiting */
	atomic_bool finished;
};

/* Sends what the window allows, in one write. */
static void top_up(struct client_conn *c, uint32_t msgs, uint8_t *buf,
		   uint64_t *bytes)
{
	uint32_t window = fire_mode(c->stream) ? FIRE_WINDOW : ECHO_WINDOW;
	size_t used = 0;

	while (c->sent < msgs && c->sent - c->echoed < window) {
		size_t len = tu_pattern_len(c->stream, c->sent, MIN_LEN, MAX_LEN);
		tu_frame_header(buf + used, len);
		tu_pattern_fill(buf + used + 4, len, c->stream, c->sent);
		used += len + 4;
		*bytes += len;
		c->sent++;
	}
	if (used && tu_write_all(c->fd, buf, used) != 0) {
		TU_CHECK(0, "client %u: write: %s", c->stream, strerror(errno));
		c->done = true;
	}
	if (!c->done && fire_mode(c->stream) && c->sent == msgs && !c->shut) {
		shutdown(c->fd, SHUT_WR);
		c->shut = true;
	}
}

/* Reads what arrived; returns false once the connection is finished. */
static bool take_echoes(struct client_conn *c, uint32_t msgs)
{
	long f = tu_reader_fill(&c->rd);
	const uint8_t *p;
	size_t len;
	int k;

	while ((k = tu_reader_next(&c->rd, &p, &len)) == 1) {
		uint32_t s, q;
		bool ok = tu_pattern_check(p, len, &s, &q) == 0 && s == c->stream &&
			  q == c->echoed &&
			  len == tu_pattern_len(s, q, MIN_LEN, MAX_LEN);
		TU_CHECK(ok, "client %u: echo %u wrong (len %zu)", c->stream, c->echoed, len);
		if (!ok)
			return false;
		c->echoed++;
	}
	TU_CHECK(k == 0, "client %u: frame too large", c->stream);
	if (k != 0)
		return false;
	if (!fire_mode(c->stream) && c->echoed == msgs)
		return false;
	if (f == TU_EOF || f == TU_ERROR) {
		/* the half-closed side may see its connection end (its last
		 * echoes racing the close); the other side must not */
		TU_CHECK(fire_mode(c->stream) && c->shut,
			 "client %u: connection ended after %u of %u echoes (%s)",
			 c->stream, c->echoed, msgs, f == TU_EOF ? "EOF" : strerror(errno));
		return false;
	}
	return true;
}

static void *client_main(void *arg)
{
	struct client_arg *a = arg;
	struct client_conn *cs = calloc(a->count, sizeof(*cs));
	struct pollfd *pfds = calloc(a->count, sizeof(*pfds));
	uint32_t *which = calloc(a->count, sizeof(*which));
	uint8_t *buf = malloc((size_t)FIRE_WINDOW * (MAX_LEN + 4));
	uint32_t active = 0;

	TU_CHECK(cs && pfds && which && buf, "out of memory");
	if (!cs || !pfds || !which || !buf)
		goto out;
	for (uint32_t i = 0; i < a->count; i++) {
		struct client_conn *c = &cs[i];
		c->stream = a->first + i;
		c->fd = tu_connect(a->addr);
		TU_CHECK(c->fd >= 0, "connect: %s", strerror(errno));
		if (c->fd < 0) {
			c->done = true;
			continue;
		}
		tu_reader_init(&c->rd, c->fd, 1 << 16);
		active++;
	}

	while (active > 0) {
		if (atomic_load(a->abort)) {
			for (uint32_t i = 0; i < a->count; i++)
				if (!cs[i].done)
					printf("      stuck client %u: sent %u, echoes %u%s\n",
					       cs[i].stream, cs[i].sent, cs[i].echoed,
					       cs[i].shut ? ", half-closed" : "");
			break;
		}
		nfds_t n = 0;
		for (uint32_t i = 0; i < a->count; i++) {
			struct client_conn *c = &cs[i];
			if (c->done)
				continue;
			top_up(c, a->msgs, buf, &a->bytes_sent);
			if (c->done) {
				active--;
				close(c->fd);
				c->fd = -1;
				continue;
			}
			pfds[n].fd = c->fd;
			pfds[n].events = POLLIN;
			pfds[n].revents = 0;
			which[n++] = i;
		}
		if (n == 0 || poll(pfds, n, 1000) <= 0)
			continue;
		for (nfds_t k = 0; k < n; k++) {
			struct client_conn *c = &cs[which[k]];
			if (pfds[k].revents && !take_echoes(c, a->msgs)) {
				c->done = true;
				active--;
				close(c->fd);
				c->fd = -1;
			}
		}
	}
out:
	for (uint32_t i = 0; cs && i < a->count; i++) {
		if (cs[i].fd >= 0)
			close(cs[i].fd);
		tu_reader_free(&cs[i].rd);
	}
	free(cs);
	free(pfds);
	free(which);
	free(buf);
	atomic_store(&a->finished, true);
	return NULL;
}

/* What the server knows when the clients stop making progress. */
static void report_stall(struct server *s)
{
	bs_stats_t st = tu_stats(s->bs);
	printf("      stalled: conns_open %llu msgs_in %llu msgs_out %llu "
	       "data_queue_depth %llu ready_conns %llu paused_reads %llu open_queue_depth %llu "
	       "holds_stuck %llu\n",
	       (unsigned long long)st.conns_open, (unsigned long long)st.msgs_in,
	       (unsigned long long)st.msgs_out, (unsigned long long)st.data_queue_depth,
	       (unsigned long long)st.ready_conns, (unsigned long long)st.paused_reads,
	       (unsigned long long)st.open_queue_depth, (unsigned long long)st.holds_stuck);
	pthread_mutex_lock(&s->map_lock);
	size_t n = s->map.count;
	pthread_mutex_unlock(&s->map_lock);
	for (size_t i = 0; i < n; i++) {
		struct conn *c = &s->conns[i];
		pthread_mutex_lock(&c->lock);
		if (c->closes == 0 && c->received < s->msgs)
			printf("      server side of stream %ld: %u received, %u echoed "
			       "in order, open recorded %d\n", c->stream, c->received,
			       c->next_seq, c->open_ord != 0);
		pthread_mutex_unlock(&c->lock);
	}
}

/* plain: I/O threads sleep at once. */
static void echo_many_connections(bool plain)
{
	static struct server s;
	bs_config_t cfg;
	char addr[128];
	pthread_t drainers[DRAINERS], opener, closer, clients[CLIENT_THREADS];
	struct drainer_arg dargs[DRAINERS];
	static struct client_arg cargs[CLIENT_THREADS];
	static atomic_bool abort_clients;
	uint64_t t0 = tu_now_ms();

	memset(&s, 0, sizeof(s));
	s.msgs = (uint32_t)tu_scaled(1000, 20);
	tu_config(&cfg);
	if (plain)
		cfg.io_poll_us = 0;
	assert_int_equal(tu_server(&cfg, NULL, &s.bs, &s.listener, addr, sizeof(addr)), 0);
	pthread_mutex_init(&s.map_lock, NULL);
	assert_int_equal(tu_idmap_init(&s.map, CONNS), 0);
	for (int i = 0; i < CONNS; i++) {
		struct conn *c = &s.conns[i];
		pthread_mutex_init(&c->lock, NULL);
		c->stream = -1;
		c->held = calloc(s.msgs, sizeof(*c->held));
		c->present = calloc(s.msgs, sizeof(*c->present));
		assert_non_null(c->held);
		assert_non_null(c->present);
	}

	assert_int_equal(pthread_create(&opener, NULL, opener_main, &s), 0);
	assert_int_equal(pthread_create(&closer, NULL, closer_main, &s), 0);
	for (int i = 0; i < DRAINERS; i++) {
		dargs[i] = (struct drainer_arg){ &s, i };
		assert_int_equal(pthread_create(&drainers[i], NULL, drainer_main, &dargs[i]), 0);
	}
	for (int i = 0; i < CLIENT_THREADS; i++) {
		cargs[i] = (struct client_arg){ .addr = addr, .msgs = s.msgs,
			.first = (uint32_t)(i * CONNS / CLIENT_THREADS),
			.count = CONNS / CLIENT_THREADS, .abort = &abort_clients };
		assert_int_equal(pthread_create(&clients[i], NULL, client_main, &cargs[i]), 0);
	}

	/* bounded: when the clients stall, say where, then stop them */
	bool clients_done = TU_WAIT_FOR(atomic_load(&cargs[0].finished) &&
					       atomic_load(&cargs[1].finished),
				       60000);
	if (!clients_done)
		report_stall(&s);
	atomic_store(&abort_clients, true);
	uint64_t bytes = 0;
	for (int i = 0; i < CLIENT_THREADS; i++) {
		pthread_join(clients[i], NULL);
		bytes += cargs[i].bytes_sent;
	}
	TU_CHECK(clients_done, "clients stalled");
	bool all_closed = TU_WAIT_FOR(atomic_load(&s.closes) >= CONNS, 30000);
	atomic_store(&s.stop, true);
	pthread_join(opener, NULL);
	pthread_join(closer, NULL);
	for (int i = 0; i < DRAINERS; i++)
		pthread_join(drainers[i], NULL);

	unsigned stale = 0, early = 0;
	bool seen_stream[CONNS] = { false };
	for (size_t i = 0; i < s.map.count; i++) {
		struct conn *c = &s.conns[i];
		stale += c->stale_echoes;
		TU_CHECK(c->opens == 1 && c->closes == 1,
			 "stream %ld: %d opens, %d closes", c->stream, c->opens, c->closes);
		TU_CHECK(c->stream >= 0 && !seen_stream[c->stream],
			 "ids and client connections do not pair up (stream %ld)", c->stream);
		if (c->stream >= 0)
			seen_stream[c->stream] = true;
		TU_CHECK(c->received == s.msgs && c->next_seq == s.msgs,
			 "stream %ld: %u messages returned, %u in order, of %u",
			 c->stream, c->received, c->next_seq, s.msgs);
		TU_CHECK(c->close_reason == BS_EOF, "stream %ld: close reason %s",
			 c->stream, bs_err_name(c->close_reason));
		/* data or close before the open: legal only if the open was
		 * already returned and being recorded, i.e. the very next one */
		if (c->early) {
			early++;
			TU_CHECK(c->open_ord == c->early_opens + 1,
				 "stream %ld: data or close returned before its open "
				 "(open ranked %llu, %llu opens recorded at the time)",
				 c->stream, (unsigned long long)c->open_ord,
				 (unsigned long long)c->early_opens);
		}
		for (uint32_t q = 0; q < s.msgs; q++)
			if (c->present[q])
				bs_msg_release(c->held[q].msg);
	}
	printf("      %u msgs x %d conns in %llu ms; %u overtaking returns, %u "
	       "closes racing a drainer, %u opens racing, %u echoes after close\n",
	       s.msgs, CONNS, (unsigned long long)(tu_now_ms() - t0),
	       atomic_load(&s.reorders), atomic_load(&s.close_races), early, stale);

	assert_true(all_closed);
	assert_int_equal(s.map.count, CONNS);
	assert_int_equal(tu_failures(), 0);

	/* nothing else is queued */
	bs_open_event_t oev;
	bs_data_t dev;
	bs_close_event_t cev;
	assert_int_equal(bs_recv_open(s.bs, &oev, 0), BS_EAGAIN);
	assert_int_equal(bs_recv_data(s.bs, &dev, 0), BS_EAGAIN);
	assert_int_equal(bs_recv_close(s.bs, &cev, 0), BS_EAGAIN);

	TU_ASSERT_STAT(s.bs, conns_accepted, CONNS);
	TU_ASSERT_STAT(s.bs, conns_closed, CONNS);
	TU_ASSERT_STAT(s.bs, conns_open, 0);
	TU_ASSERT_STAT(s.bs, msgs_in, (uint64_t)CONNS * s.msgs);
	TU_ASSERT_STAT(s.bs, bytes_in, bytes);
	TU_ASSERT_STAT(s.bs, data_queue_depth, 0);

	bs_destroy(s.bs);
	for (int i = 0; i < CONNS; i++) {
		free(s.conns[i].held);
		free(s.conns[i].present);
		pthread_mutex_destroy(&s.conns[i].lock);
	}
	tu_idmap_free(&s.map);
	pthread_mutex_destroy(&s.map_lock);
}

static void test_echo_many_connections(void **state)
{
	(void)state;
	echo_many_connections(false);
}

static void test_echo_many_connections_plain(void **state)
{
	(void)state;
	echo_many_connections(true);
}

/* ------------------------------------------------------------------------
 * Transports and dialled connections
 */

/* n messages from the plain client to the server and back. */
static void echo_round_trip(bs_t *bs, bs_id_t id, int fd, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint8_t msg[256], back[256];
		size_t len = tu_pattern_len(3, i, MIN_LEN, sizeof(msg));
		tu_pattern_fill(msg, len, 3, i);
		assert_int_equal(tu_send_frame(fd, msg, len), 0);
		assert_int_equal(tu_expect_data(bs, id, msg, len, WAIT_MS), 0);
		assert_int_equal(bs_send_data(bs, id, msg, len), 0);
		assert_int_equal(tu_recv_frame(fd, back, sizeof(back), WAIT_MS), (long)len);
		assert_memory_equal(back, msg, len);
	}
}

static void dial_message(uint8_t *buf, size_t *len, uint32_t dir, uint32_t i)
{
	*len = tu_pattern_len(dir, i, MIN_LEN, 200);
	tu_pattern_fill(buf, *len, dir, i);
}

/*
 * cli dials srv's listener at addr (cli may be srv). Messages sent before
 * the connection is up are delivered; both directions work; closing from
 * the dialling side gives BS_ECLOSED there and BS_EOF at the listener.
 */
static void check_dial(bs_t *srv, uint32_t lis, const char *addr, bs_t *cli,
		       int family)
{
	enum { EARLY = 10 };
	bool same = srv == cli;
	bs_id_t cid = 0, sid = 0;
	uint8_t msg[256];
	size_t len;

	assert_int_equal(bs_dial(cli, addr, NULL, &cid), 0);
	assert_int_not_equal(cid, 0);
	for (uint32_t i = 0; i < EARLY; i++) {
		dial_message(msg, &len, 1, i);
		assert_int_equal(bs_send_data(cli, cid, msg, len), 0);
	}

	for (int n = 0; n < (same ? 2 : 1); n++) {
		bs_open_event_t ev;
		assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
		if (ev.dialled) {
			assert_int_equal(ev.id, cid);
			assert_int_equal(ev.listener, 0);
			assert_int_equal(ev.peer.ss_family, family);
		} else {
			assert_true(same);
			assert_int_equal(ev.listener, lis);
			sid = ev.id;
		}
	}
	if (!same) {
		bs_open_event_t ev;
		assert_int_equal(bs_recv_open(srv, &ev, WAIT_MS), 0);
		assert_false(ev.dialled);
		assert_int_equal(ev.listener, lis);
		assert_int_equal(ev.peer.ss_family, family);
		sid = ev.id;
	}
	assert_int_not_equal(sid, 0);
	assert_int_not_equal(sid, cid);

	for (uint32_t i = 0; i < EARLY; i++) {
		dial_message(msg, &len, 1, i);
		assert_int_equal(tu_expect_data(srv, sid, msg, len, WAIT_MS), 0);
	}
	for (uint32_t i = 0; i < EARLY; i++) {
		dial_message(msg, &len, 2, i);
		assert_int_equal(bs_send_data(srv, sid, msg, len), 0);
		assert_int_equal(tu_expect_data(cli, cid, msg, len, WAIT_MS), 0);
	}

	assert_int_equal(bs_send_close(cli, cid), 0);
	assert_int_equal(bs_send_data(cli, cid, msg, len), BS_ESTALE);
	if (same) {
		bool got_c = false, got_s = false;
		for (int n = 0; n < 2; n++) {
			bs_close_event_t ev;
			assert_int_equal(bs_recv_close(srv, &ev, WAIT_MS), 0);
			if (ev.id == cid) {
				assert_false(got_c);
				assert_int_equal(ev.reason, BS_ECLOSED);
				got_c = true;
			} else {
				assert_int_equal(ev.id, sid);
				assert_false(got_s);
				assert_int_equal(ev.reason, BS_EOF);
				got_s = true;
			}
		}
	} else {
		assert_int_equal(tu_expect_close(cli, cid, BS_ECLOSED, true, NULL, WAIT_MS), 0);
		assert_int_equal(tu_expect_close(srv, sid, BS_EOF, true, NULL, WAIT_MS), 0);
	}
	assert_int_equal(bs_send_data(srv, sid, msg, len), BS_ESTALE);
}

static void test_dial_other_instance(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *srv, *cli;
	uint32_t lis;
	char addr[128];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &srv, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	check_dial(srv, lis, addr, cli, AF_INET);
	TU_ASSERT_STAT(cli, conns_dialled, 1);
	TU_ASSERT_STAT(cli, conns_accepted, 0);
	TU_ASSERT_STAT(srv, conns_accepted, 1);
	bs_destroy(cli);
	bs_destroy(srv);
}

static void test_dial_same_instance(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs;
	uint32_t lis;
	char addr[128];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, NULL, &bs, &lis, addr, sizeof(addr)), 0);
	check_dial(bs, lis, addr, bs, AF_INET);
	TU_ASSERT_STAT(bs, conns_dialled, 1);
	TU_ASSERT_STAT(bs, conns_accepted, 1);
	bs_destroy(bs);
}

static void test_unix_listener(void **state)
{
	(void)state;
	bs_config_t cfg;
	bs_t *bs, *cli;
	uint32_t lis;
	char path[108], bind_addr[128], addr[128];

	tu_unix_path(path, sizeof(path), "echo");
	snprintf(bind_addr, sizeof(bind_addr), "unix:%s", path);
	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, bind_addr, &bs, &lis, addr, sizeof(addr)), 0);
	assert_string_equal(addr, bind_addr);
	assert_int_equal(access(path, F_OK), 0);

	int fd = tu_connect(addr);
	assert_true(fd >= 0);
	bs_open_event_t ev;
	assert_int_equal(bs_recv_open(bs, &ev, WAIT_MS), 0);
	assert_false(ev.dialled);
	assert_int_equal(ev.listener, lis);
	assert_int_equal(ev.peer.ss_family, AF_UNIX);
	echo_round_trip(bs, ev.id, fd, 20);

	assert_int_equal(bs_create(&cfg, &cli), 0);
	check_dial(bs, lis, addr, cli, AF_UNIX);
	bs_destroy(cli);

	/* closing the listener unlinks the path and leaves the accepted
	 * connection alone */
	assert_int_equal(bs_listen_close(bs, lis), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	assert_true(tu_connect(addr) < 0);
	assert_int_equal(bs_listen_close(bs, lis), BS_ESTALE);
	echo_round_trip(bs, ev.id, fd, 5);

	close(fd);
	assert_int_equal(tu_expect_close(bs, ev.id, BS_EOF, true, NULL, WAIT_MS), 0);
	bs_destroy(bs);
}

static void test_ipv6_listener(void **state)
{
	(void)state;
	if (!tu_have_ipv6_loopback()) {
		printf("      no IPv6 loopback in this kernel\n");
		skip();
	}
	bs_config_t cfg;
	bs_t *bs, *cli;
	uint32_t lis;
	char addr[128];

	tu_config(&cfg);
	assert_int_equal(tu_server(&cfg, "[::1]:0", &bs, &lis, addr, sizeof(addr)), 0);
	assert_int_equal(strncmp(addr, "[::1]:", 6), 0);
	assert_true(atoi(addr + 6) > 0);

	int fd = tu_connect(addr);
	assert_true(fd >= 0);
	bs_open_event_t ev;
	assert_int_equal(bs_recv_open(bs, &ev, WAIT_MS), 0);
	assert_false(ev.dialled);
	assert_int_equal(ev.listener, lis);
	assert_int_equal(ev.peer.ss_family, AF_INET6);
	assert_int_equal(tu_sockaddr_port(&ev.peer), tu_local_port(fd));
	echo_round_trip(bs, ev.id, fd, 20);

	assert_int_equal(bs_create(&cfg, &cli), 0);
	check_dial(bs, lis, addr, cli, AF_INET6);
	bs_destroy(cli);

	close(fd);
	assert_int_equal(tu_expect_close(bs, ev.id, BS_EOF, true, NULL, WAIT_MS), 0);
	bs_destroy(bs);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echo_many_connections),
		cmocka_unit_test(test_echo_many_connections_plain),
		cmocka_unit_test(test_dial_other_instance),
		cmocka_unit_test(test_dial_same_instance),
		cmocka_unit_test(test_unix_listener),
		cmocka_unit_test(test_ipv6_listener),
	};
	return TU_RUN("echo", tests, argc, argv);
}
