/*
 * Every framing over real sockets: one instance listens with several
 * framings at once (one per port), another dials each with the same
 * framing; messages go both ways intact. Then a plain socket sends each
 * listener a frame that is bad for its codec: only that connection closes,
 * with the reason in its close event and a count in the stats.
 */
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 10000

struct codec_case {
	const char *name;
	bs_framing_t f;
	/* a frame this codec must reject, and the reason */
	uint8_t bad[12];
	size_t bad_len;
	int reason;
};

static void fill_cases(struct codec_case *cs)
{
	bs_framing_t f;

	bs_framing_default(&f);
	f.kind = BS_FRAMING_FIXED;
	f.width = 2;
	f.little_endian = true;
	f.max_message_size = 1000;
	cs[0] = (struct codec_case){ "fixed2le", f, { 0xe9, 0x03 }, 2, BS_EMSGSIZE }; /* 1001 */

	bs_framing_default(&f);
	f.kind = BS_FRAMING_VARINT;
	f.max_message_size = 1 << 16;
	/* eleven continuation bytes: longer than any 64-bit varint */
	cs[1] = (struct codec_case){ "varint", f,
				     { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80 },
				     11, BS_EPROTO };

	bs_framing_default(&f);
	f.kind = BS_FRAMING_BUFFSTREAMS;
	f.max_message_size = 4096; /* 3-byte header, as Go's default */
	/* zig-zag 3 = -2: a negative length, which crashes the Go reader */
	cs[2] = (struct codec_case){ "buffstreams", f, { 0x03, 0x00, 0x00 }, 3, BS_EPROTO };

	bs_framing_default(&f);
	f.kind = BS_FRAMING_DELIM;
	f.delim = '\n';
	f.keep_delim = false;
	f.max_message_size = 8;
	/* nine bytes and no delimiter: over the maximum */
	cs[3] = (struct codec_case){ "delim", f, "123456789", 9, BS_EMSGSIZE };
}

enum { NCASES = 4 };

static void test_every_codec_end_to_end(void **state)
{
	(void)state;
	struct codec_case cs[NCASES];
	bs_config_t cfg;
	bs_t *srv, *cli;
	uint32_t lis[NCASES];
	char addr[NCASES][BS_ADDR_STRLEN];
	bs_id_t dial[NCASES], acc[NCASES];

	fill_cases(cs);
	tu_config(&cfg);
	assert_int_equal(bs_create(&cfg, &srv), 0);
	assert_int_equal(bs_create(&cfg, &cli), 0);
	for (int i = 0; i < NCASES; i++) {
		assert_int_equal(bs_listen(srv, "127.0.0.1:0", &cs[i].f, &lis[i]), 0);
		assert_int_equal(bs_listener_addr(srv, lis[i], addr[i], sizeof(addr[i])), 0);
		assert_int_equal(bs_dial(cli, addr[i], &cs[i].f, &dial[i]), 0);
	}
	/* opens on both sides; map each accepted id to its listener */
	for (int k = 0; k < NCASES; k++) {
		bs_open_event_t ev;
		assert_int_equal(bs_recv_open(srv, &ev, WAIT_MS), 0);
		for (int i = 0; i < NCASES; i++)
			if (ev.listener == lis[i])
				acc[i] = ev.id;
		assert_int_equal(bs_recv_open(cli, &ev, WAIT_MS), 0);
	}

	/* each direction, several sizes up to each codec's maximum */
	for (int i = 0; i < NCASES; i++) {
		size_t max = cs[i].f.max_message_size;
		size_t sizes[] = { 0, 1, 7, max / 2, max };
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			uint8_t msg[1 << 16];
			bs_data_t d;
			size_t len = sizes[s] < sizeof(msg) ? sizes[s] : sizeof(msg);

			for (size_t b = 0; b < len; b++)
				msg[b] = (uint8_t)('a' + (b + s) % 26); /* never '\n' */
			assert_int_equal(bs_send_data(cli, dial[i], msg, len), 0);
			assert_int_equal(bs_recv_data(srv, &d, WAIT_MS), 0);
			if (d.id != acc[i] || d.len != len || memcmp(d.data, msg, len) != 0)
				fail_msg("%s: %zu-byte message changed on the way", cs[i].name, len);
			/* and back, zero copy */
			assert_int_equal(bs_send_msg(srv, d.id, d.msg, d.data, d.len), 0);
			assert_int_equal(bs_recv_data(cli, &d, WAIT_MS), 0);
			assert_int_equal(d.id, dial[i]);
			assert_int_equal(d.len, len);
			assert_memory_equal(d.data, msg, len);
			bs_msg_release(d.msg);
		}
		/* over the maximum fails at the call, nothing is sent */
		static uint8_t big[1 << 17];
		assert_int_equal(bs_send_data(cli, dial[i], big, max + 1), BS_EMSGSIZE);
	}
	/* the delimiter cannot be inside a delimited message */
	assert_int_equal(bs_send_data(cli, dial[3], "a\nb", 3), BS_EPROTO);

	/* a bad frame per codec, from a plain socket: only it closes */
	for (int i = 0; i < NCASES; i++) {
		bs_open_event_t ev;
		bs_close_event_t cev;
		int fd = tu_connect(addr[i]);

		assert_true(fd >= 0);
		assert_int_equal(bs_recv_open(srv, &ev, WAIT_MS), 0);
		assert_int_equal(tu_write_all(fd, cs[i].bad, cs[i].bad_len), 0);
		assert_int_equal(bs_recv_close(srv, &cev, WAIT_MS), 0);
		if (cev.id != ev.id || cev.reason != cs[i].reason)
			fail_msg("%s: close reason %s, expected %s", cs[i].name,
				 bs_err_name(cev.reason), bs_err_name(cs[i].reason));
		assert_int_equal(tu_wait_eof(fd, WAIT_MS), 1);
		close(fd);
		TU_ASSERT_STAT(srv, frames_rejected, (uint64_t)i + 1);
	}
	/* the good connections still work */
	for (int i = 0; i < NCASES; i++) {
		bs_data_t d;
		assert_int_equal(bs_send_data(cli, dial[i], "still", 5), 0);
		assert_int_equal(bs_recv_data(srv, &d, WAIT_MS), 0);
		assert_int_equal(d.id, acc[i]);
		assert_memory_equal(d.data, "still", 5);
		bs_msg_release(d.msg);
	}
	bs_destroy(cli);
	bs_destroy(srv);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_codec_end_to_end),
	};
	return TU_RUN("codecs-net", tests, argc, argv);
}
