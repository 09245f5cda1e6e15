/*
 * Reconnecting dials, end to end: a server killed and restarted mid-stream
 * (the id stays, the backoff grows as documented, every message is written
 * or handed back, the server gets them in order without duplicates except
 * at most the counted maybe-lost ones), the order of events and messages
 * across reconnects under holds with several draining threads, 200 clients
 * that lose their server at once and spread their retries, a dial that
 * never gets an answer and gives up as configured (handing its messages
 * back), bs_redial, and sends refused while down.
 */
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 10000

/* ---- helpers ---------------------------------------------------------------- */

/* A plain listening socket on 127.0.0.1:port (0: any), SO_REUSEADDR, with
 * a receive buffer of rcvbuf bytes (0: the kernel's) for what it accepts. */
static int plain_listen(int port, int rcvbuf, int backlog)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	if (fd < 0)
		return -1;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, backlog) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* accept with a bound wait; -1 on timeout or error. */
static int accept_within(int lfd, int timeout_ms)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void addr_of_port(char *buf, size_t len, int port)
{
	snprintf(buf, len, "127.0.0.1:%d", port);
}

static void quick_opts(bs_dial_opts_t *o, uint32_t initial_ms, uint32_t max_ms)
{
	bs_dial_opts_init(o);
	o->reconnect = true;
	o->hand_back = true;
	o->backoff_initial_ms = initial_ms;
	o->backoff_max_ms = max_ms;
	o->stable_ms = 100;
}

/* The base delay of retry n, as documented. */
static double base_delay(const bs_dial_opts_t *o, uint32_t n)
{
	double d = o->backoff_initial_ms;

	for (uint32_t i = 1; i < n && d < o->backoff_max_ms; i++)
		d *= o->backoff_multiplier;
	return d < o->backoff_max_ms ? d : o->backoff_max_ms;
}

static bool delay_ok(const bs_dial_opts_t *o, uint32_t attempt, uint32_t delay)
{
	double b = base_delay(o, attempt);

	return delay + 1 >= b * (1 - o->backoff_jitter) && delay <= b * (1 + o->backoff_jitter) + 1;
}

/* Takes open events of bs into evs until `until` returns true or the
 * bound passes. Returns how many. */
static size_t take_opens(bs_t *bs, bs_open_event_t *evs, size_t max, size_t have,
			 bool (*until)(const bs_open_event_t *, size_t), int timeout_ms)
{
	uint64_t end = tu_now_ms() + (uint64_t)timeout_ms;

	while (have < max && !until(evs, have) && tu_now_ms() < end) {
		if (bs_recv_open(bs, &evs[have], 50) == 0)
			have++;
	}
	return have;
}

static const char *kind_name(int kind)
{
	return kind == BS_OPEN_FIRST ? "FIRST" : kind == BS_OPEN_AGAIN ? "AGAIN" : "DOWN";
}

/* ---- a server killed and restarted mid-stream --------------------------- */

enum { RS_N1 = 6000, RS_N2 = 4000, RS_KILL_AT = 1500, RS_MAXLEN = 200 };

struct restart {
	bs_t *cli;
	bs_id_t id;
	int lfd, port;
	_Atomic bool phase2;    /* the server is down: send the rest */
	_Atomic bool sent_all;
	_Atomic uint64_t sent;
	/* the server's view */
	uint32_t next;          /* the next message number it expects at least */
	uint64_t received, dup_or_disorder;
	bool got[RS_N1 + RS_N2];
};

static void rs_message(uint8_t *buf, size_t *len, uint32_t i)
{
	*len = tu_pattern_len(3, i, 8, RS_MAXLEN);
	tu_pattern_fill(buf, *len, 3, i);
}

static void *rs_sender(void *arg)
{
	struct restart *r = arg;
	uint8_t buf[RS_MAXLEN];
	size_t len;

	for (uint32_t i = 0; i < RS_N1 + RS_N2; i++) {
		int rc;

		if (i == RS_N1) /* the rest goes while the server is down */
			TU_CHECK(TU_WAIT_FOR(atomic_load(&r->phase2), 20000), "no phase 2");
		rs_message(buf, &len, i);
		for (int tries = 0; (rc = bs_send(r->cli, r->id, buf, len, NULL, 0, 1000)) ==
				    BS_ETIMEDOUT && tries < 20;
		     tries++)
			;
		TU_CHECK(rc == 0, "send %u: %s", i, bs_err_name(rc));
		if (rc != 0)
			break;
		atomic_fetch_add(&r->sent, 1);
	}
	atomic_store(&r->sent_all, true);
	return NULL;
}

/* Records the frames of buf[0..n) that are whole; returns the bytes used. */
static size_t rs_record(struct restart *r, const uint8_t *buf, size_t n)
{
	size_t off = 0;

	while (n - off >= 4) {
		size_t len = (size_t)buf[off] << 24 | (size_t)buf[off + 1] << 16 |
			     (size_t)buf[off + 2] << 8 | buf[off + 3];
		uint32_t s, q;

		if (n - off - 4 < len)
			break;
		if (tu_pattern_check(buf + off + 4, len, &s, &q) != 0 || s != 3 ||
		    q >= RS_N1 + RS_N2) {
			tu_fail_(__FILE__, __LINE__, "corrupt frame at %zu", off);
			return n;
		}
		if (q < r->next || r->got[q])
			r->dup_or_disorder++;
		r->got[q] = true;
		r->next = q + 1;
		r->received++;
		off += 4 + len;
	}
	return off;
}

/* Waits until the socket's receive queue stops growing: the peer cannot
 * send more (its window is closed, or it has nothing left). */
static int settled_inq(int fd)
{
	int last = -1, inq = 0;

	for (int i = 0; i < 200; i++) {
		tu_sleep_ms(25);
		if (ioctl(fd, SIOCINQ, &inq) != 0)
			return -1;
		if (inq == last)
			return inq;
		last = inq;
	}
	return inq;
}

static void *rs_server(void *arg)
{
	struct restart *r = arg;
	tu_reader_t rd;
	const uint8_t *m;
	uint8_t *peek;
	struct linger lg = { 1, 0 };
	int fd, inq;
	long n;

	/* Phase 1: read RS_KILL_AT messages, then stop reading. */
	fd = accept_within(r->lfd, WAIT_MS);
	TU_CHECK(fd >= 0, "no first connection");
	if (fd < 0)
		return NULL;
	tu_reader_init(&rd, fd, 1 << 16);
	while (r->received < RS_KILL_AT && (n = tu_reader_recv(&rd, &m, WAIT_MS)) >= 0)
		rs_record(r, m - 4, (size_t)n + 4);
	TU_CHECK(r->received == RS_KILL_AT, "phase 1 read %llu", (unsigned long long)r->received);

	/* The kill: the listener goes, then the connection is reset. What the
	 * kernel received is taken first (peeked: the window stays shut), so
	 * that nothing the client could count as delivered is lost here. */
	close(r->lfd);
	inq = settled_inq(fd);
	peek = malloc((size_t)inq + tu_reader_pending(&rd) + 1);
	memcpy(peek, rd.buf + rd.start, tu_reader_pending(&rd));
	n = recv(fd, peek + tu_reader_pending(&rd), (size_t)inq, MSG_PEEK | MSG_DONTWAIT);
	rs_record(r, peek, tu_reader_pending(&rd) + (size_t)(n > 0 ? n : 0));
	free(peek);
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd); /* RST */
	tu_reader_free(&rd);
	atomic_store(&r->phase2, true);

	/* Down for a while: the client's retries are refused meanwhile. */
	tu_sleep_ms(300);
	r->lfd = plain_listen(r->port, 0, 16);
	TU_CHECK(r->lfd >= 0, "listen again on %d: %s", r->port, strerror(errno));
	fd = accept_within(r->lfd, WAIT_MS);
	TU_CHECK(fd >= 0, "no second connection");
	if (fd < 0)
		return NULL;
	tu_reader_init(&rd, fd, 1 << 16);
	while ((n = tu_reader_recv(&rd, &m, WAIT_MS)) >= 0)
		rs_record(r, m - 4, (size_t)n + 4);
	TU_CHECK(n == TU_EOF, "phase 2 ended with %ld", n);
	tu_reader_free(&rd);
	close(fd);
	return NULL;
}

static bool never(const bs_open_event_t *ev, size_t n)
{
	(void)ev;
	(void)n;
	return false;
}

static void test_restart_mid_stream(void **state)
{
	(void)state;
	static struct restart r;
	bs_open_event_t evs[64];
	bs_close_event_t cev;
	bs_dial_opts_t o;
	bs_config_t cfg;
	pthread_t snd, srv;
	char addr[64];
	size_t nev = 0, downs = 0;
	uint64_t lost = 0, missing = 0;
	uint32_t last_attempt = 0;

	memset(&r, 0, sizeof(r));
	/* Small buffers on both sides: the kill finds frames in every place,
	 * in the kernels, in the queue, and one cut in the middle. */
	r.lfd = plain_listen(0, 32768, 16);
	assert_true(r.lfd >= 0);
	r.port = tu_local_port(r.lfd);
	addr_of_port(addr, sizeof(addr), r.port);
	tu_config(&cfg);
	cfg.sndbuf = 32768;
	assert_int_equal(bs_create(&cfg, &r.cli), 0);
	quick_opts(&o, 50, 400);
	o.user = &r;
	assert_int_equal(bs_dial_ex(r.cli, addr, NULL, &o, &r.id), 0);
	assert_int_equal(pthread_create(&srv, NULL, rs_server, &r), 0);
	assert_int_equal(pthread_create(&snd, NULL, rs_sender, &r), 0);

	/* Events until everything is sent, then the close. */
	while (!atomic_load(&r.sent_all) && nev < 64)
		if (bs_recv_open(r.cli, &evs[nev], 50) == 0)
			nev++;
	pthread_join(snd, NULL);
	assert_int_equal(tu_failures(), 0);
	/* Up again and the queue written: then the close sends nothing more
	 * (a close while down would hand the queue back at once). */
	for (uint64_t end = tu_now_ms() + WAIT_MS; tu_now_ms() < end;) {
		bs_conn_info_t info;
		assert_int_equal(bs_conn_info(r.cli, r.id, &info), 0);
		if (info.connected && info.queued_msgs == 0)
			break;
		if (nev < 64 && bs_recv_open(r.cli, &evs[nev], 20) == 0)
			nev++;
	}
	assert_int_equal(bs_send_close(r.cli, r.id), 0);
	nev = take_opens(r.cli, evs, 64, nev, never, 300);
	assert_int_equal(bs_recv_close(r.cli, &cev, WAIT_MS), 0);
	pthread_join(srv, NULL);
	close(r.lfd);
	assert_int_equal(tu_failures(), 0);

	/* FIRST, DOWN (the reset), DOWN... (refused retries, perhaps merged),
	 * AGAIN; all with the one id and its user value. */
	assert_true(nev >= 3);
	assert_int_equal(evs[0].kind, BS_OPEN_FIRST);
	assert_int_equal(evs[0].attempt, 0);
	for (size_t i = 0; i < nev; i++) {
		assert_int_equal(evs[i].id, r.id);
		assert_ptr_equal(evs[i].user, &r);
		assert_true(evs[i].dialled);
		assert_int_equal(tu_sockaddr_port(&evs[i].peer), r.port);
		printf("      event %zu: %s attempt %u delay %u ms reason %s maybe_lost %llu\n", i,
		       kind_name(evs[i].kind), evs[i].attempt, evs[i].delay_ms,
		       bs_err_name(evs[i].reason), (unsigned long long)evs[i].maybe_lost_msgs);
	}
	/* A DOWN not taken before the next failure is merged into: it then
	 * tells the latest attempt and reason, and the sum of what may be
	 * lost. The break itself is retry 1's; the refusals come after. */
	for (size_t i = 1; i + 1 < nev; i++) {
		assert_int_equal(evs[i].kind, BS_OPEN_DOWN);
		assert_true(evs[i].attempt > last_attempt);
		assert_true(delay_ok(&o, evs[i].attempt, evs[i].delay_ms));
		if (evs[i].attempt == 1)
			assert_true(evs[i].reason == BS_EOF || evs[i].reason == BS_ESYS);
		else
			assert_int_equal(evs[i].reason, BS_ECONNREFUSED);
		last_attempt = evs[i].attempt;
		lost += evs[i].maybe_lost_msgs;
		downs++;
	}
	assert_true(downs >= 1);
	assert_true(evs[1].maybe_lost_msgs > 0); /* the break's count is in the first */
	assert_int_equal(evs[nev - 1].kind, BS_OPEN_AGAIN);
	/* down for 300 ms: the retries at about 50, 130, 260 ms were refused */
	assert_true(evs[nev - 1].attempt >= 3);

	/* Every message sent was written (the last connection took the
	 * rest); none was handed back or dropped. */
	assert_int_equal(cev.id, r.id);
	assert_int_equal(cev.reason, BS_ECLOSED);
	assert_int_equal(atomic_load(&r.sent), RS_N1 + RS_N2);
	assert_int_equal(cev.written_msgs + cev.nreturned + cev.unsent_msgs, RS_N1 + RS_N2);
	assert_int_equal(cev.written_msgs, RS_N1 + RS_N2);
	assert_int_equal(cev.nreturned, 0);
	assert_null(cev.returned);
	assert_int_equal(cev.reconnects, 1);
	assert_int_equal(cev.maybe_lost_msgs, lost);
	assert_int_equal(tu_stats(r.cli).reconnects, 1);
	assert_int_equal(tu_stats(r.cli).msgs_maybe_lost, lost);
	assert_int_equal(tu_stats(r.cli).dial_retries, evs[nev - 1].attempt);

	/* The server: in order, no duplicates; what it lacks is at most what
	 * the client counted as maybe lost. */
	assert_int_equal(r.dup_or_disorder, 0);
	for (uint32_t i = 0; i < RS_N1 + RS_N2; i++)
		missing += !r.got[i];
	printf("      sent %u, server got %llu, missing %llu, maybe lost %llu\n", RS_N1 + RS_N2,
	       (unsigned long long)r.received, (unsigned long long)missing,
	       (unsigned long long)lost);
	assert_int_equal(r.received + missing, RS_N1 + RS_N2);
	assert_true(missing <= lost);
	bs_close_event_release(&cev);
	bs_destroy(r.cli);
}

/* ---- events and messages in order across reconnects, under holds -------- */

enum { OR_CONNS = 3, OR_MSGS = 2000, OR_DRAINERS = 4, OR_LOG = OR_CONNS * (OR_MSGS + 2) + 8 };

struct order {
	bs_t *cli;
	bs_id_t id;
	int lfd;
	_Atomic bool closed;
	/* The connection's log: appended only by the thread that holds it. */
	int32_t log[OR_LOG];
	size_t nlog;
	_Atomic size_t seen_again;
};

#define LOG_FIRST (-1)
#define LOG_DOWN (-2)
#define LOG_AGAIN (-3)
#define LOG_CLOSE (-4)

static void or_log(struct order *o, int32_t v)
{
	if (o->nlog < OR_LOG)
		o->log[o->nlog] = v;
	o->nlog++;
}

static void *or_drainer(void *arg)
{
	struct order *o = arg;
	uint64_t end = tu_now_ms() + 30000;

	while (!atomic_load(&o->closed) && tu_now_ms() < end) {
		bs_data_t ev[16];
		bs_open_event_t oev;
		bs_close_event_t cev;
		int n = bs_recv_data_batch(o->cli, ev, 1 + (size_t)(tu_now_ns() % 16), 2);

		for (int i = 0; i < n; i++) {
			uint32_t s, q;
			TU_CHECK(tu_pattern_check(ev[i].data, ev[i].len, &s, &q) == 0, "corrupt");
			or_log(o, (int32_t)(s * OR_MSGS + q));
		}
		bs_data_release(ev, n > 0 ? (size_t)n : 0);
		if (bs_recv_open(o->cli, &oev, 0) == 0) {
			or_log(o, oev.kind == BS_OPEN_FIRST ? LOG_FIRST
				  : oev.kind == BS_OPEN_DOWN ? LOG_DOWN : LOG_AGAIN);
			if (oev.kind == BS_OPEN_AGAIN)
				atomic_fetch_add(&o->seen_again, 1);
		}
		if (bs_recv_close(o->cli, &cev, 0) == 0) {
			or_log(o, LOG_CLOSE);
			bs_close_event_release(&cev);
			atomic_store(&o->closed, true);
		}
	}
	return NULL;
}

static void test_order_across_reconnects(void **state)
{
	(void)state;
	static struct order o;
	pthread_t th[OR_DRAINERS];
	bs_dial_opts_t opts;
	bs_config_t cfg;
	char addr[64];
	uint8_t buf[256];
	size_t k = 0;
	int fd;

	memset(&o, 0, sizeof(o));
	o.lfd = plain_listen(0, 0, 16);
	assert_true(o.lfd >= 0);
	addr_of_port(addr, sizeof(addr), tu_local_port(o.lfd));
	tu_config(&cfg);
	cfg.hold_batch = 7; /* many holds, many threads */
	assert_int_equal(bs_create(&cfg, &o.cli), 0);
	quick_opts(&opts, 20, 100);
	assert_int_equal(bs_dial_ex(o.cli, addr, NULL, &opts, &o.id), 0);
	for (int i = 0; i < OR_DRAINERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, or_drainer, &o), 0);

	/* Each connection: the server sends OR_MSGS messages of its own
	 * stream and ends it; the client reads them, sees the end, and comes
	 * back on the next. */
	for (uint32_t c = 0; c <= OR_CONNS; c++) {
		fd = accept_within(o.lfd, WAIT_MS);
		assert_true(fd >= 0);
		if (c == OR_CONNS) {
			/* The last connection: the client closes it. */
			assert_true(TU_WAIT_FOR(atomic_load(&o.seen_again) == OR_CONNS, WAIT_MS));
			assert_int_equal(bs_send_close(o.cli, o.id), 0);
			assert_int_equal(tu_wait_eof(fd, WAIT_MS), 1);
			close(fd);
			break;
		}
		for (uint32_t q = 0; q < OR_MSGS; q++) {
			size_t len = tu_pattern_len(c, q, 8, sizeof(buf));
			tu_pattern_fill(buf, len, c, q);
			assert_int_equal(tu_send_frame(fd, buf, len), 0);
		}
		shutdown(fd, SHUT_WR);
		assert_int_equal(tu_wait_eof(fd, WAIT_MS), 1);
		close(fd);
	}
	for (int i = 0; i < OR_DRAINERS; i++)
		pthread_join(th[i], NULL);
	close(o.lfd);
	assert_int_equal(tu_failures(), 0);

	/* FIRST, stream 0, DOWN, AGAIN, stream 1, DOWN, AGAIN, stream 2,
	 * DOWN, AGAIN, CLOSE: one thread at a time, in order. */
	assert_int_equal(o.nlog, 1 + OR_CONNS * (OR_MSGS + 2) + 1);
	assert_int_equal(o.log[k++], LOG_FIRST);
	for (uint32_t c = 0; c < OR_CONNS; c++) {
		for (uint32_t q = 0; q < OR_MSGS; q++)
			assert_int_equal(o.log[k++], (int32_t)(c * OR_MSGS + q));
		assert_int_equal(o.log[k++], LOG_DOWN);
		assert_int_equal(o.log[k++], LOG_AGAIN);
	}
	assert_int_equal(o.log[k], LOG_CLOSE);
	bs_destroy(o.cli);
}

/* ---- 200 clients lose their server at once -------------------------------- */

enum { SP_CLIENTS = 200 };

struct arrivals {
	bs_t *srv;
	uint64_t t0;
	uint32_t ms[SP_CLIENTS];
	unsigned n;
};

/* The new server's open events, and when each came. */
static void *sp_watch(void *arg)
{
	struct arrivals *a = arg;

	for (uint64_t end = tu_now_ms() + WAIT_MS; a->n < SP_CLIENTS && tu_now_ms() < end;) {
		bs_open_event_t ev;
		if (bs_recv_open(a->srv, &ev, 50) == 0)
			a->ms[a->n++] = (uint32_t)(tu_now_ms() - a->t0);
	}
	return NULL;
}

static void test_retries_spread(void **state)
{
	(void)state;
	static bs_id_t ids[SP_CLIENTS], sids[SP_CLIENTS];
	static uint32_t delay[SP_CLIENTS];
	static unsigned per_ms[2048];
	static struct arrivals arr;
	bs_t *srv, *cli;
	bs_config_t cfg;
	bs_dial_opts_t o;
	pthread_t watch;
	uint32_t lis, lo = UINT32_MAX, hi = 0, alo = UINT32_MAX, ahi = 0;
	unsigned distinct = 0, most = 0, ups = 0, downs = 0;
	char addr[BS_ADDR_STRLEN];

	tu_config(&cfg);
	cfg.close_events = false;
	assert_int_equal(tu_server(&cfg, NULL, &srv, &lis, addr, sizeof(addr)), 0);
	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	quick_opts(&o, 500, 1000); /* retry 1 in 400..600 ms */
	for (int i = 0; i < SP_CLIENTS; i++)
		assert_int_equal(bs_dial_ex(cli, addr, NULL, &o, &ids[i]), 0);
	for (int i = 0; i < SP_CLIENTS; i++) {
		bs_open_event_t ev;
		assert_int_equal(bs_recv_open(srv, &ev, WAIT_MS), 0);
		sids[i] = ev.id;
		assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
		assert_int_equal(ev.kind, BS_OPEN_FIRST);
	}
	/* The server goes, with all its connections at once, and listens on
	 * its port again at once (in the same instance: no thread to stop
	 * and start, so it listens long before the first retry). */
	assert_int_equal(bs_listen_close(srv, lis), 0);
	for (int i = 0; i < SP_CLIENTS; i++)
		assert_int_equal(bs_send_close(srv, sids[i]), 0);
	assert_int_equal(bs_listen(srv, addr, NULL, &lis), 0);
	memset(&arr, 0, sizeof(arr));
	arr.srv = srv;
	arr.t0 = tu_now_ms();
	assert_int_equal(pthread_create(&watch, NULL, sp_watch, &arr), 0);
	for (uint64_t end = tu_now_ms() + WAIT_MS;
	     (downs < SP_CLIENTS || ups < SP_CLIENTS) && tu_now_ms() < end;) {
		bs_open_event_t ev;
		if (bs_recv_open(cli, &ev, 50) != 0)
			continue;
		for (int i = 0; i < SP_CLIENTS; i++) {
			if (ids[i] != ev.id)
				continue;
			if (ev.kind == BS_OPEN_DOWN) {
				TU_CHECK(ev.attempt == 1 && ev.reason == BS_EOF &&
					 delay_ok(&o, 1, ev.delay_ms),
					 "down: attempt %u reason %s delay %u", ev.attempt,
					 bs_err_name(ev.reason), ev.delay_ms);
				delay[i] = ev.delay_ms;
				downs++;
			} else {
				TU_CHECK(ev.kind == BS_OPEN_AGAIN && ev.attempt == 1,
					 "up: kind %d attempt %u", ev.kind, ev.attempt);
				ups++;
			}
		}
	}
	pthread_join(watch, NULL);
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(downs, SP_CLIENTS);
	assert_int_equal(ups, SP_CLIENTS);
	assert_int_equal(arr.n, SP_CLIENTS);
	for (int i = 0; i < SP_CLIENTS; i++) {
		lo = delay[i] < lo ? delay[i] : lo;
		hi = delay[i] > hi ? delay[i] : hi;
		if (per_ms[delay[i]]++ == 0)
			distinct++;
		most = per_ms[delay[i]] > most ? per_ms[delay[i]] : most;
		alo = arr.ms[i] < alo ? arr.ms[i] : alo;
		ahi = arr.ms[i] > ahi ? arr.ms[i] : ahi;
	}
	printf("      retry delays %u..%u ms, %u distinct, at most %u in one ms; "
	       "the server saw them come back from %u to %u ms\n", lo, hi, distinct, most, alo, ahi);
	/* The band is 400..600 ms: they spread over it, not bunched. */
	assert_true(hi - lo >= 150);
	assert_true(distinct >= 60);
	assert_true(most <= 15);
	bs_destroy(cli);
	bs_destroy(srv);
}

/* ---- a dial that never gets an answer ------------------------------------------ */

static void test_gives_up(void **state)
{
	(void)state;
	enum { QUEUED = 5 };
	bs_open_event_t evs[8];
	bs_close_event_t cev;
	bs_dial_opts_t o;
	bs_config_t cfg;
	bs_t *cli;
	bs_id_t id;
	char addr[64];
	int lfd, filler[4], nfill = 0;
	size_t nev = 0;
	uint64_t t0;

	/* A listener whose backlog is full and that never accepts: the
	 * kernel drops further SYNs, so a connect neither succeeds nor
	 * fails. */
	lfd = plain_listen(0, 0, 0);
	assert_true(lfd >= 0);
	addr_of_port(addr, sizeof(addr), tu_local_port(lfd));
	for (int i = 0; i < 4; i++) {
		int fd = tu_socket_for(addr);
		struct timeval tv = { .tv_usec = 200000 };
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (tu_connect_fd(fd, addr) != 0) {
			close(fd);
			break;
		}
		filler[nfill++] = fd;
	}
	assert_true(nfill >= 1 && nfill < 4);

	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	quick_opts(&o, 50, 1000);
	o.connect_timeout_ms = 150;
	o.max_retries = 2;
	t0 = tu_now_ms();
	assert_int_equal(bs_dial_ex(cli, addr, NULL, &o, &id), 0);
	for (uint32_t i = 0; i < QUEUED; i++) {
		char m[16];
		snprintf(m, sizeof(m), "queued %u", i);
		assert_int_equal(bs_send_data(cli, id, m, strlen(m)), 0);
	}
	/* The close comes after the open events: take both. */
	for (uint64_t end = tu_now_ms() + WAIT_MS; tu_now_ms() < end;) {
		if (nev < 8 && bs_recv_open(cli, &evs[nev], 20) == 0)
			nev++;
		if (bs_recv_close(cli, &cev, 0) == 0)
			break;
	}
	assert_int_equal(cev.id, id);

	/* Three attempts of 150 ms each, two retries announced, then the
	 * end: the reason of the last failure, the messages handed back. */
	assert_true(tu_now_ms() - t0 >= 3 * 150 - 20);
	assert_true(nev >= 1 && nev <= 2); /* two, unless merged */
	for (size_t i = 0; i < nev; i++) {
		assert_int_equal(evs[i].kind, BS_OPEN_DOWN);
		assert_int_equal(evs[i].reason, BS_ETIMEDOUT);
		assert_int_equal(evs[i].maybe_lost_msgs, 0);
		assert_true(delay_ok(&o, evs[i].attempt, evs[i].delay_ms));
	}
	assert_int_equal(evs[nev - 1].attempt, 2);
	assert_int_equal(cev.id, id);
	assert_int_equal(cev.reason, BS_ETIMEDOUT);
	assert_int_equal(cev.written_msgs, 0);
	assert_int_equal(cev.unsent_msgs, 0);
	assert_int_equal(cev.reconnects, 0);
	assert_int_equal(cev.nreturned, QUEUED);
	for (uint32_t i = 0; i < QUEUED; i++) {
		char m[16];
		snprintf(m, sizeof(m), "queued %u", i);
		assert_int_equal(cev.returned[i].id, id);
		assert_int_equal(cev.returned[i].len, strlen(m));
		assert_memory_equal(cev.returned[i].data, m, strlen(m));
	}
	bs_close_event_release(&cev);
	assert_null(cev.returned);
	assert_int_equal(cev.nreturned, 0);
	bs_close_event_release(&cev); /* twice: nothing */
	bs_close_event_release(NULL);
	assert_int_equal(tu_stats(cli).dial_retries, 2);
	assert_int_equal(tu_stats(cli).msgs_returned, QUEUED);
	assert_int_equal(bs_send_data(cli, id, "x", 1), BS_ESTALE);
	bs_destroy(cli);
	for (int i = 0; i < nfill; i++)
		close(filler[i]);
	close(lfd);
}

/* ---- the retry count starts again only after a stable connection --------- */

struct flapper {
	int lfd;
	int quick;              /* connections closed at once */
	int stable_ms;          /* then one kept this long */
};

static void *flap_main(void *arg)
{
	struct flapper *f = arg;

	for (int i = 0; i <= f->quick; i++) {
		int fd = accept_within(f->lfd, WAIT_MS);
		TU_CHECK(fd >= 0, "connection %d not made", i);
		if (fd < 0)
			return NULL;
		if (i == f->quick)
			tu_sleep_ms((unsigned)f->stable_ms);
		close(fd);
	}
	return NULL;
}

static void test_backoff_resets_when_stable(void **state)
{
	(void)state;
	struct flapper f = { .quick = 3, .stable_ms = 600 };
	bs_open_event_t evs[16];
	bs_dial_opts_t o;
	bs_config_t cfg;
	pthread_t th;
	bs_t *cli;
	bs_id_t id;
	char addr[64];
	size_t n = 0;
	/* FIRST, then per quick one DOWN and AGAIN, then the stable one's
	 * DOWN and AGAIN */
	const int want = 1 + 2 * f.quick + 2;

	f.lfd = plain_listen(0, 0, 16);
	assert_true(f.lfd >= 0);
	addr_of_port(addr, sizeof(addr), tu_local_port(f.lfd));
	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	quick_opts(&o, 20, 2000);
	o.stable_ms = 300;
	assert_int_equal(pthread_create(&th, NULL, flap_main, &f), 0);
	assert_int_equal(bs_dial_ex(cli, addr, NULL, &o, &id), 0);
	for (uint64_t end = tu_now_ms() + WAIT_MS; n < (size_t)want && tu_now_ms() < end;)
		if (bs_recv_open(cli, &evs[n], 50) == 0)
			n++;
	pthread_join(th, NULL);
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(n, want);
	assert_int_equal(evs[0].kind, BS_OPEN_FIRST);
	/* Connections that drop at once do not reset the count: the
	 * retries grow, 1, 2, 3, each one's delay with it. */
	for (int i = 0; i < f.quick; i++) {
		bs_open_event_t *down = &evs[1 + 2 * i], *up = &evs[2 + 2 * i];
		assert_int_equal(down->kind, BS_OPEN_DOWN);
		assert_int_equal(down->reason, BS_EOF);
		assert_int_equal(down->attempt, (uint32_t)i + 1);
		assert_true(delay_ok(&o, down->attempt, down->delay_ms));
		assert_int_equal(up->kind, BS_OPEN_AGAIN);
		assert_int_equal(up->attempt, (uint32_t)i + 1);
	}
	/* One that stayed up longer than stable_ms does: retry 1 again. */
	assert_int_equal(evs[want - 2].kind, BS_OPEN_DOWN);
	assert_int_equal(evs[want - 2].attempt, 1);
	assert_true(delay_ok(&o, 1, evs[want - 2].delay_ms));
	assert_int_equal(evs[want - 1].kind, BS_OPEN_AGAIN);
	bs_destroy(cli);
	close(f.lfd);
}

/* ---- bs_redial, sends refused while down, a close while down ---------------- */

static void test_redial_now(void **state)
{
	(void)state;
	bs_open_event_t ev;
	bs_close_event_t cev;
	bs_dial_opts_t o;
	bs_config_t cfg;
	bs_t *cli;
	bs_id_t id, plain;
	char addr[64];
	int rfd, port, fd;
	uint64_t t0;

	port = tu_closed_port(&rfd); /* bound, not listening: refused */
	assert_true(port > 0);
	addr_of_port(addr, sizeof(addr), port);
	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	quick_opts(&o, 10000, 20000); /* a long wait, that bs_redial cuts */
	o.queue_while_down = false;
	assert_int_equal(bs_dial_ex(cli, addr, NULL, &o, &id), 0);
	assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
	assert_int_equal(ev.kind, BS_OPEN_DOWN);
	assert_int_equal(ev.reason, BS_ECONNREFUSED);
	assert_int_equal(ev.attempt, 1);
	assert_true(ev.delay_ms >= 8000);
	assert_int_equal(bs_send_data(cli, id, "no", 2), BS_EDOWN);
	assert_int_equal(tu_stats(cli).sends_stale, 0);

	assert_int_equal(listen(rfd, 4), 0);
	t0 = tu_now_ms();
	assert_int_equal(bs_redial(cli, id), 0);
	assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
	assert_int_equal(ev.kind, BS_OPEN_FIRST); /* up for the first time */
	assert_true(tu_now_ms() - t0 < 5000);      /* not after the 10 s */
	assert_int_equal(bs_redial(cli, id), BS_EAGAIN);
	assert_int_equal(bs_release(cli), 0); /* the open event's hold */
	fd = accept_within(rfd, WAIT_MS);
	assert_true(fd >= 0);
	assert_int_equal(bs_send_data(cli, id, "yes", 3), 0);
	{
		uint8_t b[8];
		assert_int_equal(tu_recv_frame(fd, b, sizeof(b), WAIT_MS), 3);
		assert_memory_equal(b, "yes", 3);
	}
	/* Down again (the server resets); queued sends are refused, a close
	 * while down is at once. */
	{
		struct linger lg = { 1, 0 };
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		close(rfd);
	}
	assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
	assert_int_equal(ev.kind, BS_OPEN_DOWN);
	assert_int_equal(bs_send_data(cli, id, "no", 2), BS_EDOWN);
	{
		bs_conn_info_t info;
		assert_int_equal(bs_conn_info(cli, id, &info), 0);
		assert_false(info.connected);
		assert_int_equal(info.written_msgs, 1);
	}
	assert_int_equal(bs_send_close(cli, id), 0);
	assert_int_equal(bs_recv_close(cli, &cev, WAIT_MS), 0);
	assert_int_equal(cev.reason, BS_ECLOSED);
	assert_int_equal(cev.written_msgs, 1);
	assert_int_equal(cev.nreturned, 0);
	assert_int_equal(bs_redial(cli, id), BS_ESTALE);

	/* Not a reconnecting dial; not an id; no instance. */
	assert_int_equal(bs_dial(cli, addr, NULL, &plain), 0);
	assert_int_equal(bs_redial(cli, plain), BS_EINVAL);
	assert_int_equal(bs_redial(cli, 12345), BS_ESTALE);
	assert_int_equal(bs_redial(NULL, id), BS_EINVAL);
	/* Options outside their ranges. */
	o.backoff_initial_ms = 0;
	assert_int_equal(bs_dial_ex(cli, addr, NULL, &o, &id), BS_EINVAL);
	bs_destroy(cli);
}

/* A close while down hands the queue back; a plain dial keeps its old
 * behaviour (only a close event when refused, nothing handed back). */
static void test_close_while_down(void **state)
{
	(void)state;
	bs_open_event_t ev;
	bs_close_event_t cev;
	bs_dial_opts_t o;
	bs_config_t cfg;
	bs_t *cli;
	bs_id_t id;
	char addr[64];
	int rfd, port, rc;

	port = tu_closed_port(&rfd);
	assert_true(port > 0);
	addr_of_port(addr, sizeof(addr), port);
	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	quick_opts(&o, 5000, 5000);
	assert_int_equal(bs_dial_ex(cli, addr, NULL, &o, &id), 0);
	assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
	assert_int_equal(ev.kind, BS_OPEN_DOWN);
	assert_int_equal(bs_send_data(cli, id, "one", 3), 0);
	assert_int_equal(bs_send_data(cli, id, "two", 3), 0);
	assert_int_equal(bs_send_close(cli, id), 0);
	assert_int_equal(bs_send_data(cli, id, "late", 4), BS_ESTALE);
	assert_int_equal(bs_recv_close(cli, &cev, WAIT_MS), 0);
	assert_int_equal(cev.reason, BS_ECLOSED);
	assert_int_equal(cev.nreturned, 2);
	assert_memory_equal(cev.returned[0].data, "one", 3);
	assert_memory_equal(cev.returned[1].data, "two", 3);
	bs_close_event_release(&cev);

	bs_dial_opts_init(&o); /* no reconnect, no hand-back */
	assert_int_equal(bs_dial_ex(cli, addr, NULL, &o, &id), 0);
	rc = bs_send_data(cli, id, "one", 3); /* unless refused already */
	assert_true(rc == 0 || rc == BS_ESTALE);
	assert_int_equal(bs_recv_close(cli, &cev, WAIT_MS), 0);
	assert_int_equal(cev.reason, BS_ECONNREFUSED);
	assert_int_equal(cev.unsent_msgs, rc == 0);
	assert_int_equal(cev.nreturned, 0);
	assert_int_equal(bs_recv_open(cli, &ev, 0), BS_EAGAIN); /* no event but the close */
	bs_destroy(cli);
	close(rfd);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restart_mid_stream),
		cmocka_unit_test(test_order_across_reconnects),
		cmocka_unit_test(test_retries_spread),
		cmocka_unit_test(test_gives_up),
		cmocka_unit_test(test_backoff_resets_when_stable),
		cmocka_unit_test(test_redial_now),
		cmocka_unit_test(test_close_while_down),
	};
	return TU_RUN("reconnect", tests, argc, argv);
}
