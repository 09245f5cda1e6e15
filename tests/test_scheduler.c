/*
 * The ready-connection scheduler (src/scheduler.c) on its own: which line
 * a connection joins at each step, that it is in at most one line and held
 * by at most one thread at a time, and — with an I/O thread appending and
 * several threads taking — that every frame is taken once, in order, with
 * no two threads holding one connection at once.
 */
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "framing.h"
#include "msg.h"
#include "scheduler.h"

static bs_framing_t framing;

static void conn_init(struct bs_conn *c, bs_id_t id)
{
	memset(c, 0, sizeof(*c));
	atomic_init(&c->id, id);
	inbox_init(&c->in);
	c->framing = &framing;
}

/* Appends frames carrying the numbers first..first+n-1 (4 bytes each). */
static void append(struct bs_conn *c, uint32_t first, uint32_t n)
{
	/* Some segments carry the frames' positions, as the reader gives
	 * them; the others are decoded by the taker. */
	bool with_pos = (first / 4) % 2 == 0;
	struct frame_pos pos[64];
	bs_msg_t *m = msg_new(n * 8);

	assert_non_null(m);
	assert_true(n <= 64);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t v = first + i;
		tu_frame_header(m->data + 8 * i, 4);
		memcpy(m->data + 8 * i + 4, &v, 4);
		pos[i] = (struct frame_pos){ 8 * i + 4, 4 };
	}
	assert_true(inbox_push(&c->in, m, 0, n * 8, 0, with_pos ? pos : NULL, n));
}

static size_t take_all(struct bs_conn *c, uint32_t *first)
{
	bs_data_t ev[64];
	size_t bytes, n = inbox_take(&c->in, &framing, conn_id(c), NULL, ev, 64, &bytes, 0);

	if (n > 0)
		memcpy(first, ev[0].data, 4);
	bs_data_release(ev, n);
	return n;
}

static void setup(struct sched *s, bool open_events, bool close_events)
{
	bs_framing_default(&framing);
	framing.max_message_size = BS_DEFAULT_MAX_MESSAGE_SIZE;
	assert_int_equal(sched_init(s, 16, open_events, close_events), 0);
}

static void test_lines_in_order_of_events(void **state)
{
	(void)state;
	struct sched s;
	struct bs_conn c;
	unsigned wake = 0;
	uint32_t first;

	setup(&s, true, true);
	conn_init(&c, 1);
	sched_new(&s, &c, &wake);
	assert_int_equal(wake, 1u << EV_OPEN);
	append(&c, 0, 3);
	sched_data(&s, &c, &wake); /* the open is due: data waits behind it */
	assert_null(sched_take(&s, EV_DATA));
	assert_ptr_equal(sched_take(&s, EV_OPEN), &c);
	assert_null(sched_take(&s, EV_OPEN));
	append(&c, 3, 2);
	sched_data(&s, &c, &wake); /* held: nothing joins a line */
	assert_int_equal(sched_queued(&s, EV_DATA), 0);
	assert_false(sched_release(&s, &c));
	assert_int_equal(sched_queued(&s, EV_DATA), 1);
	assert_ptr_equal(sched_take(&s, EV_DATA), &c);
	assert_int_equal(take_all(&c, &first), 5);
	assert_int_equal(first, 0);
	/* emptied: release leaves it idle; new data brings it back once */
	assert_false(sched_release(&s, &c));
	assert_int_equal(sched_queued(&s, EV_DATA), 0);
	append(&c, 5, 1);
	sched_data(&s, &c, &wake);
	append(&c, 6, 1);
	sched_data(&s, &c, &wake);
	assert_int_equal(sched_queued(&s, EV_DATA), 1);
	/* closed while queued: the close comes after the data */
	assert_false(sched_closed(&s, &c, &wake));
	assert_int_equal(sched_queued(&s, EV_CLOSE), 0);
	assert_ptr_equal(sched_take(&s, EV_DATA), &c);
	assert_int_equal(take_all(&c, &first), 2);
	assert_int_equal(first, 5);
	assert_false(sched_release(&s, &c));
	assert_ptr_equal(sched_take(&s, EV_CLOSE), &c);
	assert_int_equal(sched_queued(&s, EV_OPEN) + sched_queued(&s, EV_DATA) +
				 sched_queued(&s, EV_CLOSE), 0);
	inbox_drop(&c.in, &framing);
	sched_free(&s);
}

static void test_events_off(void **state)
{
	(void)state;
	struct sched s;
	struct bs_conn c;
	unsigned wake = 0;
	uint32_t first;

	setup(&s, false, false);
	conn_init(&c, 2);
	sched_new(&s, &c, &wake);
	assert_int_equal(wake, 0);
	append(&c, 0, 1);
	sched_data(&s, &c, &wake);
	assert_int_equal(wake, 1u << EV_DATA);
	assert_ptr_equal(sched_take(&s, EV_DATA), &c);
	/* closed while held: its release finishes it */
	assert_false(sched_closed(&s, &c, &wake));
	assert_int_equal(take_all(&c, &first), 1);
	assert_true(sched_release(&s, &c));
	inbox_drop(&c.in, &framing); /* as table_free does */
	/* closed while idle and empty: the I/O thread finishes it at once */
	conn_init(&c, 3);
	sched_new(&s, &c, &wake);
	assert_true(sched_closed(&s, &c, &wake));
	inbox_drop(&c.in, &framing);
	sched_free(&s);
}

/* ---- concurrent takers ------------------------------------------------- */

enum { CONNS = 8, TAKERS = 3 };

struct shared {
	struct sched s;
	struct bs_conn c[CONNS];
	atomic_int holders[CONNS];
	uint32_t next[CONNS];      /* by the holder only: holds order it */
	uint32_t per_conn;
	atomic_uint taken;
	atomic_bool stop;
};

static void *producer_main(void *arg)
{
	struct shared *sh = arg;
	unsigned wake = 0;

	for (uint32_t v = 0; v < sh->per_conn; v += 4) {
		for (int k = 0; k < CONNS; k++) {
			uint32_t n = sh->per_conn - v < 4 ? sh->per_conn - v : 4;
			append(&sh->c[k], v, n);
			sched_data(&sh->s, &sh->c[k], &wake);
		}
		sched_wake(&sh->s, wake);
		wake = 0;
	}
	return NULL;
}

static void *taker_main(void *arg)
{
	struct shared *sh = arg;
	bs_data_t ev[3];

	while (!atomic_load(&sh->stop)) {
		struct bs_conn *c = sched_take(&sh->s, EV_DATA);
		size_t bytes, n;
		int k;

		if (c == NULL)
			continue;
		k = (int)(c - sh->c);
		TU_CHECK(atomic_fetch_add(&sh->holders[k], 1) == 0, "connection %d held twice", k);
		n = inbox_take(&c->in, &framing, conn_id(c), NULL, ev, 3, &bytes, 0);
		for (size_t i = 0; i < n; i++) {
			uint32_t v;
			memcpy(&v, ev[i].data, 4);
			TU_CHECK(v == sh->next[k], "connection %d: %u after %u", k, v, sh->next[k]);
			sh->next[k] = v + 1;
		}
		bs_data_release(ev, n);
		atomic_fetch_add(&sh->taken, (unsigned)n);
		atomic_fetch_sub(&sh->holders[k], 1);
		TU_CHECK(!sched_release(&sh->s, c), "finished without a close");
	}
	return NULL;
}

static void test_concurrent_takers(void **state)
{
	(void)state;
	static struct shared sh;
	pthread_t prod, takers[TAKERS];

	memset(&sh, 0, sizeof(sh));
	sh.per_conn = (uint32_t)tu_scaled(20000, 2000);
	setup(&sh.s, false, true);
	for (int k = 0; k < CONNS; k++) {
		unsigned wake = 0;
		conn_init(&sh.c[k], (bs_id_t)k + 1);
		sched_new(&sh.s, &sh.c[k], &wake);
	}
	for (int i = 0; i < TAKERS; i++)
		assert_int_equal(pthread_create(&takers[i], NULL, taker_main, &sh), 0);
	assert_int_equal(pthread_create(&prod, NULL, producer_main, &sh), 0);
	pthread_join(prod, NULL);
	assert_true(TU_WAIT_FOR(atomic_load(&sh.taken) == CONNS * sh.per_conn, 30000));
	atomic_store(&sh.stop, true);
	for (int i = 0; i < TAKERS; i++)
		pthread_join(takers[i], NULL);
	assert_int_equal(tu_failures(), 0);
	for (int k = 0; k < CONNS; k++) {
		assert_int_equal(sh.next[k], sh.per_conn);
		assert_false(inbox_pending(&sh.c[k].in));
		inbox_drop(&sh.c[k].in, &framing);
	}
	sched_free(&sh.s);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines_in_order_of_events),
		cmocka_unit_test(test_events_off),
		cmocka_unit_test(test_concurrent_takers),
	};
	return TU_RUN("scheduler", tests, argc, argv);
}
