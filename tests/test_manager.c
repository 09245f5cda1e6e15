/*
 * The Manager (bs_manager_*): 8 threads writing to 4 addresses at once
 * (one connection per address, dialled once, every message in order on
 * the right listener), closing a listener by address and listening on the
 * same port again, closing a writer by address (the entry goes, a later
 * write dials anew), a writer that outlives its server's restart with the
 * same id, Go BuffStreams framing, and the documented codes.
 */
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 10000

enum { THREADS = 8, ADDRS = 4, MAXLEN = 160 };

struct writers {
	bs_manager_t *m;
	char addr[ADDRS][BS_ADDR_STRLEN];
	uint32_t per;           /* messages per thread and address */
	int index;
};

struct writer_arg {
	struct writers *w;
	int t;
};

static void *writer_main(void *arg)
{
	struct writer_arg *a = arg;
	struct writers *w = a->w;
	uint8_t buf[MAXLEN];

	for (uint32_t q = 0; q < w->per; q++) {
		for (int k = 0; k < ADDRS; k++) {
			uint32_t s = (uint32_t)(a->t * ADDRS + k);
			size_t len = tu_pattern_len(s, q, 8, MAXLEN);
			int rc;

			tu_pattern_fill(buf, len, s, q);
			for (int tries = 0; (rc = bs_manager_write(w->m, w->addr[k], buf, len)) ==
					    BS_EAGAIN && tries < 10000;
			     tries++)
				tu_sleep_ms(1);
			TU_CHECK(rc == 0, "write %u to %s: %s", q, w->addr[k], bs_err_name(rc));
		}
	}
	return NULL;
}

static void test_eight_threads_four_addresses(void **state)
{
	(void)state;
	static struct writers w;
	static uint32_t next[THREADS * ADDRS];
	struct writer_arg args[THREADS];
	pthread_t th[THREADS];
	bs_manager_t *sm;
	bs_t *srv, *cli;
	bs_config_t cfg;
	bs_id_t conn_of[ADDRS] = { 0 };
	size_t nl, nw;
	uint64_t got = 0, total;

	memset(&w, 0, sizeof(w));
	memset(next, 0, sizeof(next));
	w.per = (uint32_t)tu_scaled(2000, 200);
	total = (uint64_t)w.per * THREADS * ADDRS;
	tu_config(&cfg);
	cfg.close_events = false;
	assert_int_equal(bs_create(&cfg, &srv), 0);
	assert_int_equal(bs_manager_create(srv, NULL, NULL, &sm), 0);
	for (int k = 0; k < ADDRS; k++)
		assert_int_equal(bs_manager_listen(sm, "127.0.0.1:0", w.addr[k], BS_ADDR_STRLEN), 0);
	assert_int_equal(bs_manager_count(sm, &nl, &nw), 0);
	assert_int_equal(nl, ADDRS);
	assert_int_equal(nw, 0);

	tu_config(&cfg);
	cfg.open_events = false;
	assert_int_equal(bs_create(&cfg, &cli), 0);
	assert_int_equal(bs_manager_create(cli, NULL, NULL, &w.m), 0);
	for (int t = 0; t < THREADS; t++) {
		args[t] = (struct writer_arg){ &w, t };
		assert_int_equal(pthread_create(&th[t], NULL, writer_main, &args[t]), 0);
	}

	/* The server: every stream in order, each on its address's listener
	 * and connection; one connection per address. */
	for (uint64_t end = tu_now_ms() + 60000; got < total && tu_now_ms() < end;) {
		bs_open_event_t oev;
		bs_data_t ev[64];
		int n;

		while (bs_recv_open(srv, &oev, 0) == 0) {
			char b[BS_ADDR_STRLEN];
			int k = -1;

			/* which address: the accepting listener's */
			assert_int_equal(bs_listener_addr(srv, oev.listener, b, sizeof(b)), 0);
			for (int i = 0; i < ADDRS; i++)
				if (strcmp(b, w.addr[i]) == 0)
					k = i;
			assert_true(k >= 0);
			assert_int_equal(conn_of[k], 0); /* one connection per address */
			conn_of[k] = oev.id;
		}
		n = bs_recv_data_batch(srv, ev, 64, 20);
		for (int i = 0; i < n; i++) {
			uint32_t s, q;
			assert_int_equal(tu_pattern_check(ev[i].data, ev[i].len, &s, &q), 0);
			assert_true(s < THREADS * ADDRS);
			assert_int_equal(ev[i].id, conn_of[s % ADDRS]);
			assert_int_equal(q, next[s]);
			next[s]++;
			got++;
		}
		bs_data_release(ev, n > 0 ? (size_t)n : 0);
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	assert_int_equal(tu_failures(), 0);
	assert_int_equal(got, total);
	for (int s = 0; s < THREADS * ADDRS; s++)
		assert_int_equal(next[s], w.per);
	assert_int_equal(bs_manager_count(w.m, &nl, &nw), 0);
	assert_int_equal(nw, ADDRS);
	assert_int_equal(tu_stats(cli).conns_dialled, ADDRS);

	/* Every writer closes with everything written. */
	for (int k = 0; k < ADDRS; k++) {
		bs_id_t id;
		bs_close_event_t cev;
		assert_int_equal(bs_manager_writer(w.m, w.addr[k], &id), 0);
		assert_int_equal(bs_manager_close_writer(w.m, w.addr[k]), 0);
		assert_int_equal(bs_recv_close(cli, &cev, WAIT_MS), 0);
		assert_int_equal(cev.reason, BS_ECLOSED);
		assert_int_equal(cev.written_msgs, (uint64_t)w.per * THREADS);
		assert_int_equal(cev.nreturned, 0);
		bs_close_event_release(&cev);
	}
	assert_int_equal(bs_manager_count(w.m, &nl, &nw), 0);
	assert_int_equal(nw, 0);
	bs_manager_destroy(w.m);
	bs_manager_destroy(sm);
	bs_destroy(cli);
	bs_destroy(srv);
}

/* Receives one data event of bs and checks its payload. */
static void expect_msg(bs_t *bs, const char *text, bs_id_t *from)
{
	bs_data_t ev;

	assert_int_equal(bs_recv_data(bs, &ev, WAIT_MS), 0);
	assert_int_equal(ev.len, strlen(text));
	assert_memory_equal(ev.data, text, ev.len);
	if (from != NULL)
		*from = ev.id;
	bs_data_release(&ev, 1);
}

static int port_of(const char *addr)
{
	return atoi(strrchr(addr, ':') + 1);
}

/* Whether a plain listener can take the port (SO_REUSEADDR, as bs does:
 * connections of the old listener may still use the port). */
static bool port_free(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	bool ok;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 1) == 0;
	close(fd);
	return ok;
}

static void test_close_by_address(void **state)
{
	(void)state;
	bs_manager_t *sm, *cm;
	bs_t *srv, *cli;
	bs_config_t cfg;
	bs_close_event_t cev;
	bs_id_t id, id2, from;
	char bound[BS_ADDR_STRLEN], again[BS_ADDR_STRLEN];
	size_t nl, nw;
	int fd;

	tu_config(&cfg);
	cfg.open_events = false;
	cfg.close_events = false;
	assert_int_equal(bs_create(&cfg, &srv), 0);
	assert_int_equal(bs_manager_create(srv, NULL, NULL, &sm), 0);
	assert_int_equal(bs_manager_listen(sm, "127.0.0.1:0", bound, sizeof(bound)), 0);
	assert_int_equal(bs_manager_listen(sm, bound, NULL, 0), BS_EINVAL); /* listening already */
	tu_config(&cfg);
	cfg.open_events = false;
	assert_int_equal(bs_create(&cfg, &cli), 0);
	assert_int_equal(bs_manager_create(cli, NULL, NULL, &cm), 0);

	/* Lazily dialled, then reused. */
	assert_int_equal(bs_manager_writer(cm, bound, &id), BS_ESTALE);
	assert_int_equal(bs_manager_write(cm, bound, "one", 3), 0);
	assert_int_equal(bs_manager_writer(cm, bound, &id), 0);
	assert_int_equal(bs_manager_dial(cm, bound, &id2), 0);
	assert_int_equal(id2, id);
	assert_int_equal(bs_manager_write(cm, bound, "two", 3), 0);
	expect_msg(srv, "one", &from);
	expect_msg(srv, "two", NULL);

	/* The listener by address: its port is free when the call returns,
	 * the manager forgets it, new connections are refused. */
	assert_int_equal(bs_manager_close_listener(sm, bound), 0);
	assert_int_equal(bs_manager_count(sm, &nl, NULL), 0);
	assert_int_equal(nl, 0);
	assert_int_equal(bs_manager_close_listener(sm, bound), BS_ESTALE);
	fd = tu_connect(bound);
	assert_true(fd < 0);
	assert_true(port_free(port_of(bound)));
	/* ... and it listens on that very port again. */
	assert_int_equal(bs_manager_listen(sm, bound, again, sizeof(again)), 0);
	assert_string_equal(again, bound);
	fd = tu_connect(bound);
	assert_true(fd >= 0);
	close(fd);

	/* The accepted connection outlived its listener: writes still go. */
	assert_int_equal(bs_manager_write(cm, bound, "three", 5), 0);
	expect_msg(srv, "three", &id2);
	assert_int_equal(id2, from);

	/* The writer by address: the entry goes, the connection closes with
	 * what was queued sent, and a later write dials anew. */
	assert_int_equal(bs_manager_close_writer(cm, bound), 0);
	assert_int_equal(bs_manager_count(cm, NULL, &nw), 0);
	assert_int_equal(nw, 0);
	assert_int_equal(bs_manager_writer(cm, bound, &id2), BS_ESTALE);
	assert_int_equal(bs_manager_close_writer(cm, bound), BS_ESTALE);
	assert_int_equal(bs_recv_close(cli, &cev, WAIT_MS), 0);
	assert_int_equal(cev.id, id);
	assert_int_equal(cev.reason, BS_ECLOSED);
	assert_int_equal(cev.written_msgs, 3);
	assert_int_equal(bs_send_data(cli, id, "x", 1), BS_ESTALE);
	assert_int_equal(bs_manager_write(cm, bound, "four", 4), 0);
	assert_int_equal(bs_manager_writer(cm, bound, &id2), 0);
	assert_int_not_equal(id2, id);
	expect_msg(srv, "four", &from);

	/* Codes. */
	assert_int_equal(bs_manager_create(NULL, NULL, NULL, &cm), BS_EINVAL);
	assert_int_equal(bs_manager_create(cli, NULL, NULL, NULL), BS_EINVAL);
	assert_int_equal(bs_manager_write(NULL, bound, "x", 1), BS_EINVAL);
	assert_int_equal(bs_manager_write(cm, NULL, "x", 1), BS_EINVAL);
	assert_int_equal(bs_manager_write(cm, bound, NULL, 1), BS_EINVAL);
	assert_int_equal(bs_manager_write(cm, "no such address", "x", 1), BS_EADDR);
	assert_int_equal(bs_manager_listen(sm, "no such address", NULL, 0), BS_EADDR);
	assert_int_equal(bs_manager_listen(sm, "127.0.0.1:0", again, 4), BS_EMSGSIZE);
	assert_int_equal(bs_manager_close_listener(NULL, bound), BS_EINVAL);
	assert_int_equal(bs_manager_close_writer(cm, NULL), BS_EINVAL);
	assert_int_equal(bs_manager_count(NULL, &nl, &nw), BS_EINVAL);
	bs_manager_destroy(NULL);
	{
		bs_dial_opts_t bad;
		bs_manager_t *m2;
		bs_dial_opts_init(&bad);
		bad.backoff_jitter = 2;
		assert_int_equal(bs_manager_create(cli, NULL, &bad, &m2), BS_EINVAL);
	}
	bs_manager_destroy(cm);
	bs_manager_destroy(sm); /* closes its listeners: both ports free */
	assert_true(port_free(port_of(bound)));
	bs_destroy(cli);
	bs_destroy(srv);
}

/* A writer whose server restarts keeps its id; what was written while it
 * was down arrives, in Go BuffStreams framing. */
static void test_writer_survives_restart(void **state)
{
	(void)state;
	bs_framing_t f;
	bs_dial_opts_t o;
	bs_manager_t *sm, *cm;
	bs_t *srv, *cli;
	bs_config_t cfg;
	bs_id_t id, id2;
	char bound[BS_ADDR_STRLEN];

	bs_framing_default(&f);
	f.kind = BS_FRAMING_BUFFSTREAMS;
	f.max_message_size = 4096; /* Go's default MaxMessageSize */
	tu_config(&cfg);
	cfg.open_events = cfg.close_events = false;
	assert_int_equal(bs_create(&cfg, &srv), 0);
	assert_int_equal(bs_manager_create(srv, &f, NULL, &sm), 0);
	assert_int_equal(bs_manager_listen(sm, "127.0.0.1:0", bound, sizeof(bound)), 0);
	tu_config(&cfg);
	cfg.open_events = false;
	assert_int_equal(bs_create(&cfg, &cli), 0);
	bs_dial_opts_init(&o);
	o.reconnect = o.hand_back = true;
	o.backoff_initial_ms = 20;
	o.backoff_max_ms = 100;
	assert_int_equal(bs_manager_create(cli, &f, &o, &cm), 0);
	assert_int_equal(bs_manager_write(cm, bound, "before", 6), 0);
	expect_msg(srv, "before", NULL);
	assert_int_equal(bs_manager_writer(cm, bound, &id), 0);

	/* The server goes away entirely and comes back on the same port. */
	bs_manager_destroy(sm);
	bs_destroy(srv);
	assert_true(TU_WAIT_FOR(({
		bs_conn_info_t i;
		bs_conn_info(cli, id, &i) == 0 && !i.connected;
	}), WAIT_MS));
	assert_int_equal(bs_manager_write(cm, bound, "while down", 10), 0);
	tu_config(&cfg);
	cfg.open_events = cfg.close_events = false;
	assert_int_equal(bs_create(&cfg, &srv), 0);
	assert_int_equal(bs_manager_create(srv, &f, NULL, &sm), 0);
	assert_int_equal(bs_manager_listen(sm, bound, NULL, 0), 0);
	expect_msg(srv, "while down", NULL);
	assert_int_equal(bs_manager_write(cm, bound, "after", 5), 0);
	expect_msg(srv, "after", NULL);
	assert_int_equal(bs_manager_writer(cm, bound, &id2), 0);
	assert_int_equal(id2, id);
	bs_manager_destroy(cm);
	bs_manager_destroy(sm);
	bs_destroy(cli);
	bs_destroy(srv);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_eight_threads_four_addresses),
		cmocka_unit_test(test_close_by_address),
		cmocka_unit_test(test_writer_survives_restart),
	};
	return TU_RUN("manager", tests, argc, argv);
}
