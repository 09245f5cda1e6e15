/*
 * echo_client — load generator and checker for echo_server.
 *
 *   echo_client [ADDR] --conns N --count M --size S --window W [--seconds T]
 *
 * Dials N connections to ADDR (default 127.0.0.1:5031) and sends M messages
 * of S bytes in total, spread evenly over them, keeping at most W unanswered
 * messages per connection. Each message carries its connection's index, a
 * per-connection sequence number and its send time, then a pattern derived
 * from all three, so every echoed byte and the per-connection order can be
 * checked. Prints progress on stderr and, at the end, throughput and
 * latency percentiles. Exits 0 only when every echo came back intact and in
 * order within T seconds (default 60).
 */
#include <buffstreams.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEADER_LEN 24 /* conn index, seq, send time (ns): 3 x u64, little-endian */
#define BATCH 256
#define RECV_WAIT_MS 10
#define PROGRESS_NS 500000000ull
#define CLOSE_WAIT_NS 10000000000ull /* for the closes after the run */
#define DEFAULT_MAX (8u << 20) /* max_message_size 0 means this */

struct conn {
	bs_id_t id;
	uint64_t quota;    /* messages this connection sends in total */
	uint64_t sent;     /* next sequence number to send */
	uint64_t received; /* next sequence number expected back */
	bool dirty;        /* listed in dirty[] */
};

static bs_t *bs;
static struct conn *conns;
static size_t nconns;
static size_t msg_size;
static uint64_t window;
static uint8_t *sendbuf;

/* Connections that may have room in their window, to top up. */
static uint32_t *dirty;
static size_t ndirty;

static uint64_t *lat_ns; /* one sample per echo, preallocated */
static uint64_t nlat;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint8_t pattern(uint32_t conn, uint64_t seq, size_t i)
{
	return (uint8_t)(i * 131u + seq * 7u + conn * 13u + (i >> 8));
}

/* Writes message seq of connection c into buf (msg_size bytes). */
static void fill(uint8_t *buf, uint32_t c, uint64_t seq, uint64_t t)
{
	put64(buf, c);
	put64(buf + 8, seq);
	put64(buf + 16, t);
	for (size_t i = HEADER_LEN; i < msg_size; i++)
		buf[i] = pattern(c, seq, i);
}

static void mark_dirty(uint32_t c)
{
	if (!conns[c].dirty) {
		conns[c].dirty = true;
		dirty[ndirty++] = c;
	}
}

/* Reports a close event; any close before the end is an error. */
static void report_close(const bs_close_event_t *ev)
{
	char idbuf[BS_ID_STRLEN];
	fprintf(stderr, "echo_client: connection %s closed early: %s",
		bs_id_format(ev->id, idbuf), bs_strerror(ev->reason));
	if (ev->sys_errno)
		fprintf(stderr, " (%s)", strerror(ev->sys_errno));
	fprintf(stderr, "\n");
}

/*
 * Sends until each dirty connection's window is full or its quota is
 * reached. Messages are queued with BS_SEND_MORE and written by one flush
 * per connection. A connection whose send queue is full stays dirty.
 */
static int top_up(uint64_t *in_flight)
{
	size_t keep = 0;

	for (size_t k = 0; k < ndirty; k++) {
		uint32_t c = dirty[k];
		struct conn *cn = &conns[c];
		bool queued = false, full = false;

		while (cn->sent < cn->quota && cn->sent - cn->received < window) {
			fill(sendbuf, c, cn->sent, now_ns());
			int rc = bs_send(bs, cn->id, sendbuf, msg_size, NULL, BS_SEND_MORE, 0);
			if (rc == BS_EAGAIN) {
				full = true;
				break;
			}
			bs_close_event_t cev;
			if (rc == BS_ESTALE && bs_recv_close(bs, &cev, 1000) == 0) {
				report_close(&cev); /* it closed: say why */
				return -1;
			}
			if (rc) {
				fprintf(stderr, "echo_client: send on connection %u: %s\n",
					c, bs_strerror(rc));
				return -1;
			}
			cn->sent++;
			(*in_flight)++;
			queued = true;
		}
		if (queued)
			bs_flush(bs, cn->id);
		cn->dirty = full;
		if (full)
			dirty[keep++] = c;
	}
	ndirty = keep;
	return 0;
}

/* Checks one echo; returns 0 or -1 after saying what is wrong. */
static int check(const bs_data_t *ev, uint64_t now)
{
	const uint8_t *p = ev->data;

	if (ev->len != msg_size) {
		fprintf(stderr, "echo_client: echo of %zu bytes, expected %zu\n",
			ev->len, msg_size);
		return -1;
	}
	uint64_t c = get64(p), seq = get64(p + 8);
	if (c >= nconns || conns[c].id != ev->id) {
		fprintf(stderr, "echo_client: echo on the wrong connection\n");
		return -1;
	}
	struct conn *cn = &conns[c];
	if (seq != cn->received || seq >= cn->sent) {
		fprintf(stderr, "echo_client: connection %" PRIu64 ": got message %"
			PRIu64 ", expected %" PRIu64 "\n", c, seq, cn->received);
		return -1;
	}
	for (size_t i = HEADER_LEN; i < msg_size; i++) {
		if (p[i] != pattern((uint32_t)c, seq, i)) {
			fprintf(stderr, "echo_client: connection %" PRIu64 " message %"
				PRIu64 ": byte %zu differs\n", c, seq, i);
			return -1;
		}
	}
	cn->received++;
	lat_ns[nlat++] = now - get64(p + 16);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* The q-quantile of the sorted samples, in microseconds. */
static double quantile_us(double q)
{
	if (nlat == 0)
		return 0;
	size_t i = (size_t)(q * (double)(nlat - 1) + 0.5);
	return (double)lat_ns[i] / 1000.0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: echo_client [ADDR] --conns N --count M --size S --window W [--seconds T]\n"
		"  ADDR       host:port or unix:/path (default 127.0.0.1:5031)\n"
		"  --conns    connections (default 1)\n"
		"  --count    messages in total (default 100000)\n"
		"  --size     bytes per message, at least %d (default 110)\n"
		"  --window   unanswered messages per connection (default 64)\n"
		"  --seconds  give up after this long (default 60)\n", HEADER_LEN);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:5031";
	uint64_t n = 1, count = 100000, size = 110, seconds = 60;
	bool tty = isatty(2);

	window = 64;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;
		if (a[0] != '-') {
			if (i != 1)
				usage();
			addr = a;
			continue;
		}
		if (!v)
			usage();
		if (!strcmp(a, "--conns"))
			bad = parse_u64(v, 1, 1000000, &n);
		else if (!strcmp(a, "--count"))
			bad = parse_u64(v, 1, 1000000000, &count);
		else if (!strcmp(a, "--size"))
			bad = parse_u64(v, HEADER_LEN, 1 << 30, &size);
		else if (!strcmp(a, "--window"))
			bad = parse_u64(v, 1, 1000000, &window);
		else if (!strcmp(a, "--seconds"))
			bad = parse_u64(v, 1, 86400, &seconds);
		else
			usage();
		if (bad)
			usage();
		i++;
	}
	nconns = (size_t)n;
	msg_size = (size_t)size;
	signal(SIGPIPE, SIG_IGN);

	conns = calloc(nconns, sizeof *conns);
	dirty = calloc(nconns, sizeof *dirty);
	lat_ns = malloc(count * sizeof *lat_ns);
	sendbuf = malloc(msg_size);
	bs_data_t *ev = malloc(BATCH * sizeof *ev);
	if (!conns || !dirty || !lat_ns || !sendbuf || !ev) {
		fprintf(stderr, "echo_client: out of memory\n");
		return 1;
	}

	/* Room for a whole window per connection, so that sends are only
	 * refused when the server falls behind, not by configuration. */
	bs_config_t cfg;
	bs_config_init(&cfg);
	if (msg_size > (cfg.framing.max_message_size ? cfg.framing.max_message_size
						      : DEFAULT_MAX))
		cfg.framing.max_message_size = msg_size;
	size_t want = (size_t)window * (msg_size + BS_FRAME_HEADER_MAX);
	if (cfg.send_queue_bytes < want)
		cfg.send_queue_bytes = want;
	int rc = bs_create(&cfg, &bs);
	if (rc) {
		fprintf(stderr, "echo_client: bs_create: %s\n", bs_strerror(rc));
		return 1;
	}

	int status = 1;
	uint64_t t0 = now_ns(), deadline = t0 + seconds * 1000000000ull;
	uint64_t opened = 0, in_flight = 0, done = 0;

	for (size_t c = 0; c < nconns; c++) {
		conns[c].quota = count / nconns + (c < count % nconns);
		rc = bs_dial(bs, addr, NULL, &conns[c].id);
		if (rc) {
			fprintf(stderr, "echo_client: dial %s: %s\n", addr, bs_strerror(rc));
			goto out;
		}
	}

	/* Wait until every connection is up, so that the clock measures
	 * messages only. A failed dial shows up as a close event. */
	while (opened < nconns) {
		bs_open_event_t oev;
		bs_close_event_t cev;
		if (now_ns() > deadline) {
			fprintf(stderr, "echo_client: only %" PRIu64 " of %zu connections "
				"opened in time\n", opened, nconns);
			goto out;
		}
		if (bs_recv_close(bs, &cev, 0) == 0) {
			report_close(&cev);
			goto out;
		}
		if (bs_recv_open(bs, &oev, RECV_WAIT_MS) == 0)
			opened++;
	}

	uint64_t start = now_ns(), next_progress = start + PROGRESS_NS;
	for (size_t c = 0; c < nconns; c++)
		mark_dirty((uint32_t)c);

	if (top_up(&in_flight))
		goto out;
	while (done < count) {
		int got = bs_recv_data_batch(bs, ev, BATCH, RECV_WAIT_MS);
		uint64_t now = now_ns();
		for (int i = 0; i < got; i++) {
			if (check(&ev[i], now)) {
				for (int j = i; j < got; j++)
					bs_msg_release(ev[j].msg);
				goto out;
			}
			uint32_t c = (uint32_t)get64(ev[i].data);
			bs_msg_release(ev[i].msg);
			in_flight--;
			done++;
			mark_dirty(c);
		}
		if (got < 0 && got != BS_ETIMEDOUT) {
			fprintf(stderr, "echo_client: receive: %s\n", bs_strerror(got));
			goto out;
		}
		if (top_up(&in_flight))
			goto out;

		bs_close_event_t cev;
		if (bs_recv_close(bs, &cev, 0) == 0) {
			report_close(&cev);
			goto out;
		}
		if (now > deadline) {
			fprintf(stderr, "%secho_client: timed out after %" PRIu64 " s with %"
				PRIu64 " of %" PRIu64 " echoes (%" PRIu64 " in flight)\n",
				tty ? "\n" : "", seconds, done, count, in_flight);
			goto out;
		}
		if (now >= next_progress) {
			double s = (double)(now - start) / 1e9;
			fprintf(stderr, "%s%10" PRIu64 " msgs  %10.0f msgs/s  %7" PRIu64
				" in flight%s", tty ? "\r" : "", done, (double)done / s,
				in_flight, tty ? "" : "\n");
			next_progress = now + PROGRESS_NS;
		}
	}
	if (tty)
		fprintf(stderr, "\n");

	double secs = (double)(now_ns() - start) / 1e9;
	qsort(lat_ns, nlat, sizeof *lat_ns, cmp_u64);
	printf("messages   %" PRIu64 " x %zu bytes over %zu connections\n", done,
	       msg_size, nconns);
	printf("seconds    %.3f\n", secs);
	printf("msgs/s     %.0f\n", (double)done / secs);
	printf("MB/s       %.1f (echoed payload)\n", (double)done * (double)msg_size / secs / 1e6);
	printf("latency    p50 %.0f us  p99 %.0f us  p999 %.0f us\n",
	       quantile_us(0.50), quantile_us(0.99), quantile_us(0.999));
	fflush(stdout);

	/* Close gracefully and wait for every close event: a reason other
	 * than our own close means the server went away first. */
	for (size_t c = 0; c < nconns; c++)
		bs_send_close(bs, conns[c].id);
	status = 0;
	uint64_t close_deadline = now_ns() + CLOSE_WAIT_NS;
	for (size_t closed = 0; closed < nconns;) {
		bs_close_event_t cev;
		rc = bs_recv_close(bs, &cev, RECV_WAIT_MS);
		if (rc == 0) {
			closed++;
			if (cev.reason != BS_ECLOSED && cev.reason != BS_EOF) {
				report_close(&cev);
				status = 1;
			}
		} else if (rc != BS_ETIMEDOUT || now_ns() > close_deadline) {
			fprintf(stderr, "echo_client: %zu connections did not close in time\n",
				nconns - closed);
			status = 1;
			break;
		}
		/* Echoes cannot arrive any more, but drain the queue so close
		 * events are not held behind it. */
		int got = bs_recv_data_batch(bs, ev, BATCH, 0);
		for (int i = 0; i < got; i++)
			bs_msg_release(ev[i].msg);
	}
out:
	bs_destroy(bs);
	free(ev);
	free(sendbuf);
	free(lat_ns);
	free(dirty);
	free(conns);
	return status;
}
