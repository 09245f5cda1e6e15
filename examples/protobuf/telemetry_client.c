/*
 * telemetry_client — streams protobuf Readings to telemetry_server and
 * checks every Summary that comes back.
 *
 *   telemetry_client [ADDR] [--conns N] [--count M] [--window W] [--seconds T]
 *
 * Sends M readings in total (default 10000) over N connections (default 2),
 * at most W unanswered per connection (default 32). Each reading is derived
 * from its connection and sequence number, so the expected summary can be
 * recomputed when it arrives. Exits 0 only if every summary arrived, in
 * order and correct, within T seconds (default 30).
 */
#include <buffstreams.h>
#include "telemetry.pb-c.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 64
#define RECV_WAIT_MS 10
#define MAX_SAMPLES 60      /* readings cross the 128-byte (2-byte varint) size */
#define SEND_WAIT_MS 1000

struct conn {
	bs_id_t id;
	uint64_t quota, sent, received;
};

static bs_t *bs;
static struct conn *conns;
static size_t nconns;
static uint64_t window;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reading seq of connection c. samples must hold MAX_SAMPLES values. */
static void make_reading(size_t c, uint64_t seq, char *sensor, size_t sensor_len,
			 int32_t *samples, Telemetry__Reading *r)
{
	snprintf(sensor, sensor_len, "probe-%zu", c);
	r->seq = seq;
	r->sensor = sensor;
	r->unit = (Telemetry__Unit)(1 + seq % 3);
	r->timestamp_us = (int64_t)(now_ms() * 1000);
	r->n_samples = (size_t)((seq + c) % (MAX_SAMPLES + 1));
	r->samples = samples;
	for (size_t i = 0; i < r->n_samples; i++)
		samples[i] = (int32_t)((seq * 2654435761u + i * 40503u + c) % 2000001) - 1000000;
}

static void print_close(const bs_close_event_t *ev)
{
	fprintf(stderr, "telemetry_client: connection closed early: %s%s%s\n",
		bs_strerror(ev->reason), ev->sys_errno ? ": " : "",
		ev->sys_errno ? strerror(ev->sys_errno) : "");
}

/* Packs a reading into a library buffer and queues it. 0 or an error. */
static int send_reading(size_t c)
{
	struct conn *cn = &conns[c];
	Telemetry__Reading r = TELEMETRY__READING__INIT;
	char sensor[32];
	int32_t samples[MAX_SAMPLES];
	make_reading(c, cn->sent, sensor, sizeof sensor, samples, &r);

	size_t len = telemetry__reading__get_packed_size(&r);
	void *data;
	bs_msg_t *msg = bs_msg_alloc(len, &data);
	if (!msg)
		return BS_ENOMEM;
	telemetry__reading__pack(&r, data);
	int rc = bs_send(bs, cn->id, data, len, msg, BS_SEND_MORE, 0);
	if (rc == BS_EAGAIN) { /* flush what is queued and wait for room */
		bs_flush(bs, cn->id);
		rc = bs_send(bs, cn->id, data, len, msg, 0, SEND_WAIT_MS);
	}
	if (rc) {
		bs_msg_release(msg);
		return rc;
	}
	cn->sent++;
	return 0;
}

/* Sends until connection c has a full window or nothing left to send. */
static int top_up(size_t c)
{
	struct conn *cn = &conns[c];
	bool queued = false;
	while (cn->sent < cn->quota && cn->sent - cn->received < window) {
		int rc = send_reading(c);
		bs_close_event_t cev;
		if (rc == BS_ESTALE && bs_recv_close(bs, &cev, 1000) == 0) {
			print_close(&cev); /* it closed: say why */
			return -1;
		}
		if (rc) {
			fprintf(stderr, "telemetry_client: send: %s\n", bs_strerror(rc));
			return -1;
		}
		queued = true;
	}
	if (queued)
		bs_flush(bs, cn->id);
	return 0;
}

/* Decodes a reply and compares it with the summary of the reading it
 * answers. Returns the connection's index, or -1 after saying why. */
static long check_reply(const bs_data_t *ev)
{
	Telemetry__Summary *s = telemetry__summary__unpack(NULL, ev->len, ev->data);
	if (!s) {
		fprintf(stderr, "telemetry_client: reply is not a Summary\n");
		return -1;
	}
	long c = -1;
	size_t idx;
	if (sscanf(s->sensor, "probe-%zu", &idx) != 1 || idx >= nconns ||
	    conns[idx].id != ev->id) {
		fprintf(stderr, "telemetry_client: reply for sensor '%s' on the wrong "
			"connection\n", s->sensor);
		goto out;
	}
	struct conn *cn = &conns[idx];
	if (s->seq != cn->received || s->seq >= cn->sent) {
		fprintf(stderr, "telemetry_client: %s: got summary %" PRIu64
			", expected %" PRIu64 "\n", s->sensor, s->seq, cn->received);
		goto out;
	}

	Telemetry__Reading r = TELEMETRY__READING__INIT;
	char sensor[32];
	int32_t samples[MAX_SAMPLES];
	make_reading(idx, s->seq, sensor, sizeof sensor, samples, &r);
	int64_t sum = 0;
	int32_t min = 0, max = 0;
	for (size_t i = 0; i < r.n_samples; i++) {
		sum += samples[i];
		min = i == 0 || samples[i] < min ? samples[i] : min;
		max = i == 0 || samples[i] > max ? samples[i] : max;
	}
	if (strcmp(s->sensor, sensor) || s->count != r.n_samples || s->sum != sum ||
	    s->min != min || s->max != max) {
		fprintf(stderr, "telemetry_client: %s summary %" PRIu64 " is wrong: "
			"count %u sum %" PRId64 " min %d max %d, expected count %zu "
			"sum %" PRId64 " min %d max %d\n", s->sensor, s->seq, s->count,
			s->sum, s->min, s->max, r.n_samples, sum, min, max);
		goto out;
	}
	cn->received++;
	c = (long)idx;
out:
	telemetry__summary__free_unpacked(s, NULL);
	return c;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v == 0 || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:5032";
	uint64_t n = 2, count = 10000, seconds = 30;

	window = 32;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
		int bad;
		if (a[0] != '-' && i == 1) {
			addr = a;
			continue;
		}
		if (!strcmp(a, "--conns"))
			bad = parse_u64(v, 10000, &n);
		else if (!strcmp(a, "--count"))
			bad = parse_u64(v, 100000000, &count);
		else if (!strcmp(a, "--window"))
			bad = parse_u64(v, 100000, &window);
		else if (!strcmp(a, "--seconds"))
			bad = parse_u64(v, 86400, &seconds);
		else
			bad = -1;
		if (bad) {
			fprintf(stderr, "usage: telemetry_client [ADDR] [--conns N] "
				"[--count M] [--window W] [--seconds T]\n");
			return 2;
		}
		i++;
	}
	nconns = (size_t)n;
	signal(SIGPIPE, SIG_IGN);

	conns = calloc(nconns, sizeof *conns);
	if (!conns) {
		fprintf(stderr, "telemetry_client: out of memory\n");
		return 1;
	}
	bs_config_t cfg;
	bs_config_init(&cfg);
	cfg.framing.kind = BS_FRAMING_VARINT;
	cfg.open_events = false; /* a failed dial still gives a close event */
	int rc = bs_create(&cfg, &bs);
	if (rc) {
		fprintf(stderr, "telemetry_client: bs_create: %s\n", bs_strerror(rc));
		free(conns);
		return 1;
	}

	int status = 1;
	uint64_t start = now_ms(), deadline = start + seconds * 1000, done = 0;
	for (size_t c = 0; c < nconns; c++) {
		conns[c].quota = count / nconns + (c < count % nconns);
		rc = bs_dial(bs, addr, NULL, &conns[c].id);
		if (rc) {
			fprintf(stderr, "telemetry_client: dial %s: %s\n", addr, bs_strerror(rc));
			goto out;
		}
		/* Sends may be queued before the connection is up. */
		if (top_up(c))
			goto out;
	}

	bs_data_t ev[BATCH];
	bs_close_event_t cev;
	while (done < count) {
		int got = bs_recv_data_batch(bs, ev, BATCH, RECV_WAIT_MS);
		long c = 0;
		for (int i = 0; i < got; i++) {
			if (c >= 0)
				c = check_reply(&ev[i]);
			if (c >= 0) {
				done++;
				if (top_up((size_t)c))
					c = -1;
			}
			bs_msg_release(ev[i].msg);
		}
		if (c < 0)
			goto out;
		if (got < 0 && got != BS_ETIMEDOUT) {
			fprintf(stderr, "telemetry_client: receive: %s\n", bs_strerror(got));
			goto out;
		}
		if (bs_recv_close(bs, &cev, 0) == 0) {
			print_close(&cev);
			goto out;
		}
		if (now_ms() > deadline) {
			fprintf(stderr, "telemetry_client: timed out with %" PRIu64 " of %"
				PRIu64 " summaries\n", done, count);
			goto out;
		}
	}

	/* All answered: close, and expect our own close back for each. */
	for (size_t c = 0; c < nconns; c++)
		bs_send_close(bs, conns[c].id);
	size_t closed = 0;
	while (closed < nconns && now_ms() <= deadline) {
		if (bs_recv_close(bs, &cev, RECV_WAIT_MS) != 0)
			continue;
		if (cev.reason != BS_ECLOSED && !(cev.reason == BS_EOF && cev.unsent_msgs == 0)) {
			fprintf(stderr, "telemetry_client: close: %s\n", bs_strerror(cev.reason));
			goto out;
		}
		closed++;
	}
	if (closed < nconns) {
		fprintf(stderr, "telemetry_client: connections did not close in time\n");
		goto out;
	}
	printf("telemetry_client: %" PRIu64 " readings over %zu connections, all %"
	       PRIu64 " summaries correct, %.3f s\n", count, nconns, done,
	       (double)(now_ms() - start) / 1000.0);
	status = 0;
out:
	bs_destroy(bs);
	free(conns);
	return status;
}
