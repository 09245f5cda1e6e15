/*
 * bscat — netcat for message streams.
 *
 *   bscat listen ADDR [options]   print every message received on ADDR
 *   bscat send ADDR [options]     send each stdin line as one message
 *   bscat send ADDR --reconnect [--failed FILE]
 *                                 the same through a reconnecting dial:
 *                                 lines handed back undelivered go to
 *                                 FILE, and the last line on stderr counts
 *                                 what became of them
 *
 * See usage() for the options. Exit status: 0 success, 1 runtime error,
 * 2 usage error.
 */
#include <buffstreams.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH 64
#define POLL_MS 100            /* how often loops look at signals and events */
#define SEND_WAIT_MS 10000     /* how long a send may wait for a slow peer */
#define WAIT_MS 10000          /* default --wait */
#define READ_CHUNK 65536
#define DEFAULT_MAX (8u << 20) /* the library's default max_message_size */
#define GO_DEFAULT_MAX 4096    /* Go BuffStreams' default MaxMessageSize */

struct opts {
	bool listen;
	const char *addr;
	bs_framing_t framing;
	bool max_set;
	bool hex;
	uint64_t count; /* 0 = no limit */
	uint64_t replies; /* send: replies to wait for before closing */
	int wait_ms;      /* send: bound on each wait for replies or the close */
	bool reconnect;   /* send: a reconnecting dial */
	const char *failed; /* send --reconnect: where handed-back lines go */
	uint32_t backoff_ms; /* send --reconnect: the first retry's delay */
	uint32_t retries;    /* send --reconnect: give up after these; 0 never */
};

static atomic_bool stop;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, true);
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: bscat listen ADDR [options]   print each message received\n"
		"       bscat send ADDR [options]     send each stdin line as a message\n"
		"\n"
		"ADDR is host:port, [v6addr]:port or unix:/path.\n"
		"\n"
		"options:\n"
		"  --framing F   fixedN, fixedNle or fixedNbe (an N-byte length, N = 1..8,\n"
		"                big-endian unless le; default fixed4), varint (protobuf\n"
		"                delimited), buffstreams (Go BuffStreams v2) or delim\n"
		"                (messages end with a newline byte)\n"
		"  --max BYTES   largest message (default 8 MiB; for fixed1/fixed2 the\n"
		"                largest length that fits; 4096 for buffstreams, as Go's\n"
		"                default, which sets the header width)\n"
		"  --count N     listen: exit after N messages; send: send at most N\n"
		"  --hex         listen: print messages as hex; send: stdin lines are\n"
		"                hex (blanks ignored)\n"
		"  --replies N   send: print replies like listen does, and wait until\n"
		"                N have come before closing\n"
		"  --wait MS     send: how long to wait for replies, and then for the\n"
		"                close to complete (default 10000)\n"
		"  --reconnect   send: reconnect when the connection breaks (backoff\n"
		"                with jitter); lines are queued while it is down\n"
		"  --failed FILE send --reconnect: write the lines handed back\n"
		"                undelivered to FILE, one per line (as given: hex\n"
		"                with --hex)\n"
		"  --backoff MS  send --reconnect: the first retry's delay (default\n"
		"                1000; then x1.6 per retry, at most 120 s)\n"
		"  --retries N   send --reconnect: give up after N failed retries in\n"
		"                a row (default 0: never)\n"
		"  --help        this text\n"
		"\n"
		"listen prints the address it is bound to on stderr (for port 0).\n"
		"send sends the lines without their newline, closes the connection\n"
		"once everything is written and waits for the close to complete;\n"
		"whatever the peer sends after that is not read. With --reconnect\n"
		"it first waits (up to --wait) for the queue to be written, reports\n"
		"each break and reconnect on stderr, and ends with the line\n"
		"  bscat: sent N written W returned R maybe_lost L\n"
		"(N lines accepted = W written to a socket + R handed back; of W, at\n"
		"most L went to a connection that broke and may not have arrived).\n"
		"Exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bscat: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'bscat --help'.\n");
	exit(2);
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -1;
	*out = v;
	return 0;
}

/* fixedN, fixedNle, fixedNbe, varint, buffstreams, delim. 0 or -1. */
static int parse_framing(const char *name, bs_framing_t *f)
{
	if (!strncmp(name, "fixed", 5) && name[5] >= '1' && name[5] <= '8') {
		const char *order = name + 6;
		if (*order && strcmp(order, "le") && strcmp(order, "be"))
			return -1;
		f->kind = BS_FRAMING_FIXED;
		f->width = (uint8_t)(name[5] - '0');
		f->little_endian = !strcmp(order, "le");
	} else if (!strcmp(name, "varint")) {
		f->kind = BS_FRAMING_VARINT;
	} else if (!strcmp(name, "buffstreams")) {
		f->kind = BS_FRAMING_BUFFSTREAMS;
	} else if (!strcmp(name, "delim")) {
		f->kind = BS_FRAMING_DELIM;
		f->delim = '\n';
		f->keep_delim = false;
	} else {
		return -1;
	}
	return 0;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	const char *pos[2];
	int npos = 0;

	memset(o, 0, sizeof *o);
	o->wait_ms = WAIT_MS;
	bs_framing_default(&o->framing);
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--hex")) {
			o->hex = true;
			continue;
		}
		if (!strcmp(a, "--reconnect")) {
			o->reconnect = true;
			continue;
		}
		if (strncmp(a, "--", 2) || !a[2]) {
			if (npos == 2)
				usage_error("unexpected argument '%s'", a);
			pos[npos++] = a;
			continue;
		}
		/* Options with a value: "--opt VALUE" or "--opt=VALUE". */
		char *v = strchr(a, '=');
		size_t nlen = v ? (size_t)(v - a) : strlen(a);
		if (v)
			v++;
		else if (i + 1 < argc)
			v = argv[++i];
		else
			usage_error("option '%s' needs a value", a);

		if (!strncmp(a, "--framing", nlen) && nlen == 9) {
			if (parse_framing(v, &o->framing))
				usage_error("unknown framing '%s'", v);
		} else if (!strncmp(a, "--max", nlen) && nlen == 5) {
			uint64_t m;
			if (parse_u64(v, &m) || m == 0 || m > SIZE_MAX)
				usage_error("bad --max '%s'", v);
			o->framing.max_message_size = (size_t)m;
			o->max_set = true;
		} else if (!strncmp(a, "--count", nlen) && nlen == 7) {
			if (parse_u64(v, &o->count) || o->count == 0)
				usage_error("bad --count '%s'", v);
		} else if (!strncmp(a, "--replies", nlen) && nlen == 9) {
			if (parse_u64(v, &o->replies))
				usage_error("bad --replies '%s'", v);
		} else if (!strncmp(a, "--wait", nlen) && nlen == 6) {
			uint64_t ms;
			if (parse_u64(v, &ms) || ms > 86400000)
				usage_error("bad --wait '%s'", v);
			o->wait_ms = (int)ms;
		} else if (!strncmp(a, "--failed", nlen) && nlen == 8) {
			if (!*v)
				usage_error("bad --failed ''");
			o->failed = v;
		} else if (!strncmp(a, "--backoff", nlen) && nlen == 9) {
			uint64_t ms;
			if (parse_u64(v, &ms) || ms == 0 || ms > BS_DIAL_MAX_MS)
				usage_error("bad --backoff '%s'", v);
			o->backoff_ms = (uint32_t)ms;
		} else if (!strncmp(a, "--retries", nlen) && nlen == 9) {
			uint64_t n;
			if (parse_u64(v, &n) || n > UINT32_MAX)
				usage_error("bad --retries '%s'", v);
			o->retries = (uint32_t)n;
		} else {
			usage_error("unknown option '%s'", a);
		}
	}
	if (npos < 1)
		usage_error("missing mode: listen or send");
	if (strcmp(pos[0], "listen") && strcmp(pos[0], "send"))
		usage_error("unknown mode '%s' (listen or send)", pos[0]);
	if (npos < 2)
		usage_error("missing address");
	o->listen = !strcmp(pos[0], "listen");
	if (o->listen && (o->replies || o->wait_ms != WAIT_MS))
		usage_error("--replies and --wait are for send");
	if (o->listen && o->reconnect)
		usage_error("--reconnect is for send");
	if (!o->reconnect && (o->failed || o->backoff_ms || o->retries))
		usage_error("--failed, --backoff and --retries go with --reconnect");
	o->addr = pos[1];

	bs_framing_t *f = &o->framing;
	if (f->max_message_size == 0)
		f->max_message_size = DEFAULT_MAX;
	if (!o->max_set && f->kind == BS_FRAMING_BUFFSTREAMS)
		f->max_message_size = GO_DEFAULT_MAX;
	if (!o->max_set && f->kind == BS_FRAMING_FIXED && f->width < 3)
		f->max_message_size = (1u << (8 * f->width)) - 1;
	if (f->kind == BS_FRAMING_FIXED && f->width < 8 &&
	    f->max_message_size >> (8 * f->width) != 0)
		usage_error("--max %zu does not fit a %u-byte length", f->max_message_size,
			    f->width);
	if (bs_framing_check(f))
		usage_error("--max too large for this framing");
}

/* Prints one message and its newline. 0 or -1 on a write error. */
static int print_msg(const uint8_t *p, size_t len, bool hex)
{
	if (hex) {
		static const char digits[] = "0123456789abcdef";
		for (size_t i = 0; i < len; i++) {
			putchar(digits[p[i] >> 4]);
			putchar(digits[p[i] & 15]);
		}
	} else if (len) {
		fwrite(p, 1, len, stdout);
	}
	putchar('\n');
	return ferror(stdout) ? -1 : 0;
}

/*
 * Prints the messages waiting (waiting up to timeout_ms for the first), as
 * long as fewer than limit (0 = no limit) have been printed. 0, or -1 on
 * an output error.
 */
static int print_batch(bs_t *bs, bool hex, uint64_t *printed, uint64_t limit,
		       int timeout_ms)
{
	bs_data_t ev[BATCH];
	int n = bs_recv_data_batch(bs, ev, BATCH, timeout_ms);
	int rc = 0;

	for (int i = 0; i < n; i++) {
		if (rc == 0 && (limit == 0 || *printed < limit)) {
			rc = print_msg(ev[i].data, ev[i].len, hex);
			++*printed;
		}
		bs_msg_release(ev[i].msg);
	}
	if (n > 0 && fflush(stdout) != 0)
		rc = -1;
	if (rc)
		fprintf(stderr, "bscat: writing output: %s\n", strerror(errno));
	return rc;
}

/*
 * Creates the instance with SIGINT and SIGTERM blocked in its threads, so
 * that they reach this thread, whose loops then stop. NULL on error.
 */
static bs_t *create(const bs_config_t *cfg)
{
	sigset_t sigs, old;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, &old);
	bs_t *bs;
	int rc = bs_create(cfg, &bs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		fprintf(stderr, "bscat: %s\n", bs_strerror(rc));
		return NULL;
	}
	return bs;
}

static int run_listen(const struct opts *o)
{
	bs_config_t cfg;
	bs_config_init(&cfg);
	cfg.framing = o->framing;
	cfg.open_events = false;
	cfg.close_events = false;

	bs_t *bs = create(&cfg);
	if (!bs)
		return 1;
	uint32_t listener;
	char bound[256];
	int rc = bs_listen(bs, o->addr, NULL, &listener);
	if (rc == 0)
		rc = bs_listener_addr(bs, listener, bound, sizeof bound);
	if (rc) {
		fprintf(stderr, "bscat: listen on %s: %s\n", o->addr, bs_strerror(rc));
		bs_destroy(bs);
		return 1;
	}
	fprintf(stderr, "bscat: listening on %s\n", bound);

	uint64_t printed = 0;
	int status = 0;
	while (!atomic_load(&stop) && (o->count == 0 || printed < o->count)) {
		if (print_batch(bs, o->hex, &printed, o->count, POLL_MS)) {
			status = 1;
			break;
		}
	}
	bs_destroy(bs);
	return status;
}

/* Says why a connection closed; true when that is a successful end. */
static bool report_close(const struct opts *o, const bs_close_event_t *ev,
			 bool closing)
{
	if (closing && (ev->reason == BS_ECLOSED ||
			(ev->reason == BS_EOF && ev->unsent_msgs == 0)))
		return true;
	fprintf(stderr, "bscat: connection to %s %s: %s", o->addr,
		closing ? "failed" : "closed early", bs_strerror(ev->reason));
	if (ev->sys_errno)
		fprintf(stderr, " (%s)", strerror(ev->sys_errno));
	if (ev->unsent_msgs)
		fprintf(stderr, "; %" PRIu64 " messages not sent", ev->unsent_msgs);
	fprintf(stderr, "\n");
	return false;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hex in place, skipping blanks. Returns the length or -1. */
static long unhex(uint8_t *s, size_t len)
{
	size_t out = 0;
	int hi = -1;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')
			continue;
		int v = hexval(s[i]);
		if (v < 0)
			return -1;
		if (hi < 0) {
			hi = v;
		} else {
			s[out++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	return hi < 0 ? (long)out : -1;
}

struct sender {
	const struct opts *o;
	bs_t *bs;
	bs_id_t id;
	uint64_t lines, sent, printed;
	bool closed;            /* the connection is closed (or given up on) */
	bool have_close;        /* the close event below has been taken */
	bs_close_event_t close;
	FILE *failed;           /* --failed */
	uint64_t written;       /* --reconnect: as last seen, before the close */
};

/* --reconnect: tells of the dial's breaks and reconnects (and takes their
 * events, which must come before its close event). */
static void report_events(struct sender *s)
{
	bs_open_event_t ev;

	if (!s->o->reconnect)
		return;
	while (bs_recv_open(s->bs, &ev, 0) == 0) {
		if (ev.kind == BS_OPEN_DOWN) {
			fprintf(stderr, "bscat: connection to %s down: %s", s->o->addr,
				bs_strerror(ev.reason));
			if (ev.sys_errno)
				fprintf(stderr, " (%s)", strerror(ev.sys_errno));
			if (ev.maybe_lost_msgs)
				fprintf(stderr, "; %" PRIu64 " lines may not have arrived",
					ev.maybe_lost_msgs);
			fprintf(stderr, "; retry %u in %u ms\n", ev.attempt, ev.delay_ms);
		} else if (ev.kind == BS_OPEN_AGAIN) {
			fprintf(stderr, "bscat: connected to %s again\n", s->o->addr);
		}
	}
	/* The events' holds end here: nothing waits for them. */
	bs_release(s->bs);
}

/*
 * Waits (boundedly) for the connection's close event, printing any replies
 * meanwhile: the close event only comes once every received message has
 * been taken. 0, or -1 after reporting an error.
 */
static int wait_close(struct sender *s, bs_close_event_t *ev)
{
	for (int waited = 0; waited <= s->o->wait_ms; waited += POLL_MS) {
		if (print_batch(s->bs, s->o->hex, &s->printed, 0, 0))
			return -1;
		report_events(s);
		if (bs_recv_close(s->bs, ev, POLL_MS) == 0) {
			s->have_close = true;
			return 0;
		}
	}
	fprintf(stderr, "bscat: connection to %s did not close in time\n", s->o->addr);
	return -1;
}

/* The connection closed before we closed it: says why. Returns 1. */
static int closed_early(struct sender *s)
{
	if (s->have_close || wait_close(s, &s->close) == 0)
		report_close(s->o, &s->close, false);
	s->closed = true;
	return 1;
}

/* Waits up to --wait for room for one line (a reconnecting dial that is
 * down queues until its bound), taking its events meanwhile. */
static int send_waiting(struct sender *s, const uint8_t *line, size_t len)
{
	int rc = BS_ETIMEDOUT;

	if (!s->o->reconnect)
		return bs_send(s->bs, s->id, line, len, NULL, 0, SEND_WAIT_MS);
	for (int waited = 0; rc == BS_ETIMEDOUT && waited <= s->o->wait_ms; waited += POLL_MS) {
		report_events(s);
		rc = bs_send(s->bs, s->id, line, len, NULL, 0, POLL_MS);
	}
	return rc;
}

/* Sends one input line. 0, or 1 after reporting an error. */
static int send_line(struct sender *s, uint8_t *line, size_t len)
{
	s->lines++;
	if (s->closed)
		return closed_early(s);
	if (s->o->hex) {
		long n = unhex(line, len);
		if (n < 0) {
			fprintf(stderr, "bscat: line %" PRIu64 ": not hex\n", s->lines);
			return 1;
		}
		len = (size_t)n;
	}
	/* Queued only: the chunk's messages go out together at the flush. */
	int rc = bs_send(s->bs, s->id, line, len, NULL, BS_SEND_MORE, 0);
	if (rc == BS_EAGAIN) {
		bs_flush(s->bs, s->id);
		rc = send_waiting(s, line, len);
	}
	if (rc == 0) {
		s->sent++;
		return 0;
	}
	if (rc == BS_ESTALE)
		return closed_early(s);
	fprintf(stderr, "bscat: line %" PRIu64 ": %s", s->lines, bs_strerror(rc));
	if (rc == BS_EMSGSIZE)
		fprintf(stderr, " (%zu bytes; --max is %zu)", len,
			s->o->framing.max_message_size);
	fprintf(stderr, "\n");
	return 1;
}

/*
 * Takes the close event if the connection has closed. A peer may close as
 * soon as it has what it wanted, so that is an error only when more input
 * follows (send_line) or something had not been sent yet.
 */
static int check_closed(struct sender *s)
{
	report_events(s);
	if (s->closed || bs_recv_close(s->bs, &s->close, 0) != 0)
		return 0;
	s->closed = s->have_close = true;
	if (s->close.reason == BS_EOF && s->close.unsent_msgs == 0)
		return 0;
	report_close(s->o, &s->close, false);
	return 1;
}

/* Reads stdin and sends its lines. 0 or 1. */
static int send_input(struct sender *s)
{
	const struct opts *o = s->o;
	/* A line holds one message, or its hex with some blanks. */
	size_t limit = o->framing.max_message_size;
	limit = o->hex ? (limit > SIZE_MAX / 4 ? SIZE_MAX : limit * 4) : limit;
	size_t cap = READ_CHUNK, len = 0;
	uint8_t *buf = malloc(cap);
	int status = 0;
	bool eof = false;

	if (!buf) {
		fprintf(stderr, "bscat: out of memory\n");
		return 1;
	}
	while (!eof && status == 0 && !atomic_load(&stop) &&
	       (o->count == 0 || s->sent < o->count)) {
		struct pollfd pfd = { .fd = 0, .events = POLLIN };
		int pr = poll(&pfd, 1, POLL_MS);
		if (pr < 0 && errno != EINTR) {
			fprintf(stderr, "bscat: poll: %s\n", strerror(errno));
			status = 1;
		}
		if (pr > 0) {
			if (cap - len < READ_CHUNK / 2) {
				uint8_t *nb = realloc(buf, cap * 2);
				if (!nb) {
					fprintf(stderr, "bscat: out of memory\n");
					status = 1;
					break;
				}
				buf = nb;
				cap *= 2;
			}
			ssize_t r = read(0, buf + len, cap - len);
			if (r < 0 && errno != EINTR && errno != EAGAIN) {
				fprintf(stderr, "bscat: reading input: %s\n", strerror(errno));
				status = 1;
			}
			eof = r == 0;
			len += r > 0 ? (size_t)r : 0;
		}
		/* Send the complete lines (and, at the end, the last one). */
		size_t start = 0;
		for (size_t i = 0; i < len && status == 0; i++) {
			if (buf[i] != '\n')
				continue;
			if (o->count && s->sent >= o->count)
				break;
			status = send_line(s, buf + start, i - start);
			start = i + 1;
		}
		if (eof && start < len && status == 0 && (o->count == 0 || s->sent < o->count))
			status = send_line(s, buf + start, len - start);
		memmove(buf, buf + start, len - start);
		len -= start;
		if (len > limit && status == 0) { /* bounds the buffer too */
			fprintf(stderr, "bscat: line %" PRIu64 " is longer than --max "
				"allows\n", s->lines + 1);
			status = 1;
		}
		bs_flush(s->bs, s->id);

		if (status == 0)
			status = print_batch(s->bs, o->hex, &s->printed, 0, 0) ? 1 : 0;
		if (status == 0)
			status = check_closed(s);
	}
	free(buf);
	return status;
}

/* Writes one handed-back line to the --failed file, as it was given. */
static int write_failed(FILE *f, const bs_data_t *m, bool hex)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; hex && i < m->len; i++) {
		putc(digits[m->data[i] >> 4], f);
		putc(digits[m->data[i] & 15], f);
	}
	if (!hex && m->len)
		fwrite(m->data, 1, m->len, f);
	putc('\n', f);
	return ferror(f) ? -1 : 0;
}

/* --reconnect: waits up to --wait for the queue to be written (the dial
 * may be reconnecting), so that the close sends nothing more; a dial still
 * down then closes at once and hands its queue back. 0, or 1 after
 * reporting an error. */
static int drain_queue(struct sender *s)
{
	for (int waited = 0; !s->closed && waited <= s->o->wait_ms && !atomic_load(&stop);
	     waited += POLL_MS) {
		bs_conn_info_t info;

		if (bs_conn_info(s->bs, s->id, &info) != 0)
			return 0; /* closed: check_closed takes its event */
		s->written = info.written_msgs;
		if (info.queued_msgs == 0)
			return 0;
		if (print_batch(s->bs, s->o->hex, &s->printed, 0, POLL_MS) || check_closed(s))
			return 1;
	}
	return 0;
}

/* --reconnect: the lines handed back go to the --failed file, and the
 * last line on stderr counts everything. Returns the exit status. */
static int finish_reconnect(struct sender *s, int status)
{
	uint64_t written = s->have_close ? s->close.written_msgs : s->written;
	uint64_t lost = s->have_close ? s->close.maybe_lost_msgs : 0;
	size_t returned = s->have_close ? s->close.nreturned : 0;

	for (size_t i = 0; s->failed != NULL && i < returned; i++) {
		if (write_failed(s->failed, &s->close.returned[i], s->o->hex) != 0) {
			fprintf(stderr, "bscat: writing %s: %s\n", s->o->failed, strerror(errno));
			status = 1;
			break;
		}
	}
	if (s->failed != NULL && fclose(s->failed) != 0) {
		fprintf(stderr, "bscat: writing %s: %s\n", s->o->failed, strerror(errno));
		status = 1;
	}
	if (returned != 0 || (s->have_close && s->close.unsent_msgs != 0) ||
	    written + returned != s->sent)
		status = 1;
	bs_close_event_release(&s->close);
	fprintf(stderr, "bscat: sent %" PRIu64 " written %" PRIu64 " returned %zu maybe_lost %" PRIu64
		"\n", s->sent, written, returned, lost);
	return status;
}

static int run_send(const struct opts *o)
{
	bs_config_t cfg;
	bs_dial_opts_t dopts;
	bs_config_init(&cfg);
	cfg.framing = o->framing;
	/* Open events tell of a reconnecting dial's breaks; otherwise
	 * nothing waits for them, and close events tell. */
	cfg.open_events = o->reconnect;

	struct sender s = { .o = o };
	if (o->failed != NULL && (s.failed = fopen(o->failed, "w")) == NULL) {
		fprintf(stderr, "bscat: %s: %s\n", o->failed, strerror(errno));
		return 1;
	}
	s.bs = create(&cfg);
	if (!s.bs) {
		if (s.failed)
			fclose(s.failed);
		return 1;
	}
	bs_dial_opts_init(&dopts);
	if (o->reconnect) {
		dopts.reconnect = true;
		dopts.hand_back = true;
		dopts.max_retries = o->retries;
		if (o->backoff_ms) {
			dopts.backoff_initial_ms = o->backoff_ms;
			if (dopts.backoff_max_ms < o->backoff_ms)
				dopts.backoff_max_ms = o->backoff_ms;
		}
	}
	int rc = bs_dial_ex(s.bs, o->addr, NULL, &dopts, &s.id);
	if (rc) {
		fprintf(stderr, "bscat: connect to %s: %s\n", o->addr, bs_strerror(rc));
		bs_destroy(s.bs);
		return o->reconnect ? finish_reconnect(&s, 1) : 1;
	}

	int status = send_input(&s);
	for (int waited = 0; status == 0 && !s.closed && s.printed < o->replies;
	     waited += POLL_MS) {
		if (waited >= o->wait_ms || atomic_load(&stop)) {
			fprintf(stderr, "bscat: %" PRIu64 " of %" PRIu64 " replies came\n",
				s.printed, o->replies);
			status = 1;
		} else if (print_batch(s.bs, o->hex, &s.printed, 0, POLL_MS) ||
			   check_closed(&s)) {
			status = 1;
		}
	}
	if (status == 0 && s.printed < o->replies) {
		fprintf(stderr, "bscat: connection to %s closed after %" PRIu64 " of %"
			PRIu64 " replies\n", o->addr, s.printed, o->replies);
		status = 1;
	}
	if (o->reconnect && status == 0)
		status = drain_queue(&s);
	if (status == 0 || (o->reconnect && !s.closed)) {
		/* Everything queued before the close is still sent. BS_ESTALE
		 * means the peer closed first; the close event says whether
		 * everything had been written by then. A reconnecting dial
		 * closes even after an error, to hand its queue back. */
		if (!s.closed) {
			bs_send_close(s.bs, s.id);
			if (wait_close(&s, &s.close) != 0)
				status = 1;
			s.closed = true;
		}
		if (status == 0 && s.have_close && !report_close(o, &s.close, true))
			status = 1;
	}
	if (!s.have_close && s.closed && o->reconnect && wait_close(&s, &s.close) != 0)
		status = 1;
	bs_destroy(s.bs);
	return o->reconnect ? finish_reconnect(&s, status) : status;
}

int main(int argc, char **argv)
{
	struct opts o;
	parse_args(argc, argv, &o);

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	return o.listen ? run_listen(&o) : run_send(&o);
}
