/*
 * Pub/sub load generator and checker; see pubsub_load.h. One thread, the
 * caller's, runs the whole load; every wait is bounded.
 */
#include "pubsub_load.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RX_INIT (64u << 10)
#define TX_MAX (1u << 20)      /* a publisher's unsent bytes before it waits */
#define PUB_BURST 64           /* publishes per publisher per loop turn */
#define MAX_EVENTS 256
#define PROGRESS_NS 500000000ull
#define SETUP_S 30.0           /* connecting and subscribing, at most */
#define DRAIN_S 5.0            /* for the last deliveries after publishing */
#define STALL_READ_S 5.0       /* reading what the stalled subscribers got */
#define STALL_IDLE_S 2.0       /* ... until nothing came for this long: a
                                  server's TCP that met a full window backs
                                  its probes off (to 1.6 s seen), so the
                                  rest may come that late */
#define STALLED_RCVBUF 65536   /* small, so the server sees the stall soon */
#define ERRORS_SHOWN 5
#define NS 1000000000ull
#define ADDRS_MAX 16           /* servers one run may spread over */

/* Latency histogram: 32 buckets per power of two (3 % wide). */
#define HIST_SUB 32u
#define HIST_N (2 * HIST_SUB + 58 * HIST_SUB)

enum role { ROLE_SUB, ROLE_PUB };

struct conn {
	int fd;
	uint8_t role;
	bool stalled;      /* a subscriber that stops reading */
	bool reading;      /* in the epoll set for input */
	bool closed;
	bool acked;
	bool want_out;     /* EPOLLOUT armed */
	uint32_t index;    /* among the subscribers, or the publishers */
	uint32_t topic;    /* a subscriber's */
	uint8_t *rx;
	size_t rlen, rcap;
	uint8_t *tx;
	size_t toff, tlen, tcap;
};

struct pub {
	struct conn *c;
	uint64_t sent;
	uint64_t expected;  /* deliveries owed to healthy subscribers */
	uint64_t delivered; /* ... and received */
	uint32_t next_topic;
};

static struct {
	const struct ps_load_opts *o;
	struct ps_load_result *r;
	int ep;
	struct conn *conns;   /* subscribers, then publishers */
	size_t nconns;
	struct pub *pubs;
	uint64_t *next_seq;   /* [subscriber * P + publisher] */
	uint64_t *pub_seq;    /* [publisher * K + topic]: published so far */
	uint32_t *healthy;    /* per topic */
	char (*names)[16];
	uint8_t *tmpl;        /* [publisher * size]: the expected body */
	uint64_t window_deliveries;
	uint64_t hist[HIST_N];
	uint64_t now, t0, last_delivery;
	unsigned errors_shown;
} L;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- latency ------------------------------------------------------------ */
static unsigned hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
	unsigned m = (unsigned)(v >> (e - 5));           /* 32..63 */
	return 2 * HIST_SUB + (e - 6) * HIST_SUB + (m - HIST_SUB);
}

static double hist_value(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned e = (i - 2 * HIST_SUB) / HIST_SUB + 6;
	unsigned m = (i - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
	return ((double)m + 0.5) * (double)(1ull << (e - 5)); /* the bucket's middle */
}

static double hist_quantile_us(double q)
{
	uint64_t n = 0, seen = 0;
	for (unsigned i = 0; i < HIST_N; i++)
		n += L.hist[i];
	if (n == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)n);
	if (rank >= n)
		rank = n - 1;
	for (unsigned i = 0; i < HIST_N; i++) {
		seen += L.hist[i];
		if (seen > rank)
			return hist_value(i) / 1000.0;
	}
	return 0;
}

/* ---- connections -------------------------------------------------------- */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof *ss);
	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		if (strlen(addr + 5) >= sizeof un->sun_path)
			return -1;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, addr + 5);
		*len = sizeof *un;
		return 0;
	}
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof host)
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	char *h = host;
	if (h[0] == '[') { /* [::1]:port */
		h++;
		char *end = strchr(h, ']');
		if (!end)
			return -1;
		*end = 0;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	if (getaddrinfo(h, colon + 1, &hints, &res) != 0)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* A comma-separated list of addresses: how many (at most ADDRS_MAX), or
 * 0 when one is bad. */
static size_t parse_addrs(const char *list, struct sockaddr_storage *ss, socklen_t *len)
{
	char one[512];
	size_t n = 0;

	for (const char *p = list; *p && n < ADDRS_MAX;) {
		size_t l = strcspn(p, ",");
		if (l == 0 || l >= sizeof one)
			return 0;
		memcpy(one, p, l);
		one[l] = 0;
		if (parse_addr(one, &ss[n], &len[n]) != 0)
			return 0;
		n++;
		p += l + (p[l] == ',');
	}
	return n;
}

static void conn_watch(struct conn *c)
{
	struct epoll_event ev = {
		.events = (c->reading ? EPOLLIN : 0) | (c->want_out ? EPOLLOUT : 0),
		.data.ptr = c,
	};
	epoll_ctl(L.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(struct conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	epoll_ctl(L.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
}

static int conn_open(struct conn *c, const struct sockaddr_storage *ss, socklen_t len)
{
	int one = 1;
	c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -1;
	if (c->stalled) {
		int sz = STALLED_RCVBUF;
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	}
	if (connect(c->fd, (const struct sockaddr *)ss, len) != 0) {
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	if (ss->ss_family != AF_UNIX)
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int fl = fcntl(c->fd, F_GETFL);
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0)
		return -1;
	c->rcap = RX_INIT;
	c->rx = malloc(c->rcap);
	if (!c->rx)
		return -1;
	c->reading = true;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	return epoll_ctl(L.ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Room for n more bytes of output. */
static uint8_t *tx_room(struct conn *c, size_t n)
{
	if (c->toff > 0 && c->toff == c->tlen)
		c->toff = c->tlen = 0;
	if (c->tlen + n > c->tcap) {
		if (c->toff > 0) {
			memmove(c->tx, c->tx + c->toff, c->tlen - c->toff);
			c->tlen -= c->toff;
			c->toff = 0;
		}
		size_t cap = c->tcap ? c->tcap : 4096;
		while (c->tlen + n > cap)
			cap *= 2;
		if (cap != c->tcap) {
			uint8_t *p = realloc(c->tx, cap);
			if (!p)
				return NULL;
			c->tx = p;
			c->tcap = cap;
		}
	}
	return c->tx + c->tlen;
}

static void conn_flush(struct conn *c)
{
	while (!c->closed && c->toff < c->tlen) {
		ssize_t w = send(c->fd, c->tx + c->toff, c->tlen - c->toff, MSG_NOSIGNAL);
		if (w > 0) {
			c->toff += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			break;
		return; /* the read side will see the end */
	}
	bool want = c->toff < c->tlen;
	if (want != c->want_out && !c->closed) {
		c->want_out = want;
		conn_watch(c);
	}
}

static void conn_send(struct conn *c, const void *p, size_t n)
{
	uint8_t *dst = tx_room(c, n);
	if (!dst)
		return;
	memcpy(dst, p, n);
	c->tlen += n;
	conn_flush(c);
}

/* ---- what arrives --------------------------------------------------------- */
static void note_error(struct conn *c, const char *what, const struct ps_event *ev)
{
	if (L.errors_shown++ >= ERRORS_SHOWN)
		return;
	fprintf(stderr, "%s: %s %u: %s", L.o->tag, c->role == ROLE_SUB ? "subscriber" : "publisher",
		c->index, what);
	if (ev && ev->len)
		fprintf(stderr, ": %.*s", (int)(ev->len > 200 ? 200 : ev->len), (const char *)ev->body);
	fprintf(stderr, "\n");
}

static void on_delivery(struct conn *c, const struct ps_event *ev)
{
	const struct ps_load_opts *o = L.o;
	struct ps_load_result *r = L.r;
	const uint8_t *b = ev->body;
	const char *name = L.names[c->topic];

	if (c->role != ROLE_SUB) {
		r->misrouted++;
		note_error(c, "a delivery to a publisher", NULL);
		return;
	}
	if (ev->len != o->size) {
		r->corrupt++;
		note_error(c, "a delivery of the wrong size", NULL);
		return;
	}
	uint32_t p = get32(b), t = get32(b + 4);
	uint64_t seq = get64(b + 8), sent = get64(b + 16);
	if (p >= o->publishers || t != c->topic || ev->tlen != strlen(name) ||
	    memcmp(ev->topic, name, ev->tlen) != 0) {
		r->misrouted++;
		note_error(c, "a delivery of another topic", NULL);
		return;
	}
	if (memcmp(b + PS_HDR, L.tmpl + (size_t)p * o->size + PS_HDR, o->size - PS_HDR)) {
		r->corrupt++;
		note_error(c, "a delivery with wrong bytes", NULL);
		return;
	}
	uint64_t *next = &L.next_seq[(size_t)c->index * o->publishers + p];
	if (seq < *next) {
		if (c->stalled) {
			r->stalled_bad++;
		} else {
			r->duplicate++;
			note_error(c, "a delivery twice or out of order", NULL);
		}
		return;
	}
	if (c->stalled) {
		r->stalled_received++;
		*next = seq + 1; /* a gap is a drop, allowed here */
		return;
	}
	if (seq > *next)
		note_error(c, "deliveries missing", NULL); /* counted at the end */
	*next = seq + 1;
	r->delivered++;
	L.pubs[p].delivered++;
	L.last_delivery = L.now;
	L.hist[hist_index(L.now > sent ? L.now - sent : 0)]++;
}

static void on_event(struct conn *c, const struct ps_event *ev)
{
	switch (ev->kind) {
	case PS_EV_MSG:
		on_delivery(c, ev);
		break;
	case PS_EV_ACK:
		c->acked = true;
		break;
	case PS_EV_PING:
		if (L.o->proto->pong)
			conn_send(c, L.o->proto->pong, strlen(L.o->proto->pong));
		break;
	case PS_EV_ERROR:
		if (!c->stalled) {
			L.r->server_errors++;
			note_error(c, "the server reports an error", ev);
		}
		break;
	default:
		break;
	}
}

/* The server ended a connection (or broke the protocol on it). */
static void on_end(struct conn *c, const char *why)
{
	if (c->stalled) {
		L.r->stalled_closed++;
	} else {
		L.r->closed_early++;
		note_error(c, why, NULL);
	}
	conn_close(c);
}

static void conn_read(struct conn *c)
{
	if (c->rlen == c->rcap) {
		uint8_t *p = realloc(c->rx, 2 * c->rcap);
		if (!p) {
			on_end(c, "out of memory");
			return;
		}
		c->rx = p;
		c->rcap *= 2;
	}
	ssize_t n = recv(c->fd, c->rx + c->rlen, c->rcap - c->rlen, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		on_end(c, n == 0 ? "closed by the server" : strerror(errno));
		return;
	}
	c->rlen += (size_t)n;
	size_t off = 0;
	while (off < c->rlen) {
		struct ps_event ev;
		long used = L.o->proto->parse(c->rx + off, c->rlen - off, &ev);
		if (used == 0)
			break;
		if (used < 0) {
			L.r->corrupt++;
			on_end(c, "bytes that are not the protocol");
			return;
		}
		on_event(c, &ev);
		off += (size_t)used;
		if (c->closed)
			return;
	}
	memmove(c->rx, c->rx + off, c->rlen - off);
	c->rlen -= off;
}

/* One round of waiting for the sockets. */
static void pump(int timeout_ms)
{
	struct epoll_event evs[MAX_EVENTS];
	int n = epoll_wait(L.ep, evs, MAX_EVENTS, timeout_ms);
	L.now = now_ns();
	for (int i = 0; i < n; i++) {
		struct conn *c = evs[i].data.ptr;
		if (c->closed)
			continue;
		if (evs[i].events & EPOLLOUT)
			conn_flush(c);
		if (!c->closed && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
			conn_read(c);
	}
}

/* ---- publishing ----------------------------------------------------------- */

/* How many messages publisher p may send now. */
static uint64_t allowance(const struct pub *p)
{
	const struct ps_load_opts *o = L.o;
	if (p->c->closed || p->sent >= o->count || p->c->tlen - p->c->toff >= TX_MAX)
		return 0;
	uint64_t n = o->count - p->sent;
	if (o->rate > 0) {
		double due = o->rate * (double)(L.now - L.t0) / 1e9 + 1;
		uint64_t d = (uint64_t)due;
		n = d > p->sent ? d - p->sent : 0;
		if (n > o->count - p->sent)
			n = o->count - p->sent;
	}
	uint64_t out = p->expected - p->delivered;
	if (out >= L.window_deliveries)
		return 0;
	return n < PUB_BURST ? n : PUB_BURST;
}

static void publish(struct pub *p, uint64_t n)
{
	const struct ps_load_opts *o = L.o;
	const struct ps_proto *pr = o->proto;
	uint32_t pi = (uint32_t)(p - L.pubs);

	for (uint64_t k = 0; k < n; k++) {
		uint32_t t = p->next_topic;
		/* A message may go out only while its fan-out fits the window,
		 * except when nothing is in flight (a fan-out wider than it). */
		if (p->expected - p->delivered + L.healthy[t] > L.window_deliveries &&
		    p->expected != p->delivered)
			break;
		const char *name = L.names[t];
		size_t tl = strlen(name);
		uint8_t *dst = tx_room(p->c, PS_CMD_MAX + o->size + pr->pub_tail_len);
		if (!dst)
			break;
		size_t h = pr->pub_head(dst, name, tl, o->size);
		uint8_t *b = dst + h;
		memcpy(b, L.tmpl + (size_t)pi * o->size, o->size);
		put32(b, pi);
		put32(b + 4, t);
		put64(b + 8, L.pub_seq[(size_t)pi * o->topics + t]++);
		put64(b + 16, now_ns());
		memcpy(b + o->size, pr->pub_tail, pr->pub_tail_len);
		p->c->tlen += h + o->size + pr->pub_tail_len;
		p->sent++;
		p->expected += L.healthy[t];
		L.r->published++;
		L.r->expected += L.healthy[t];
		p->next_topic = (t + 1) % o->topics;
	}
	conn_flush(p->c);
}

/* Publishes what the window and the rate allow; the epoll timeout to use. */
static int top_up(void)
{
	bool more = false;
	for (unsigned i = 0; i < L.o->publishers; i++) {
		uint64_t n = allowance(&L.pubs[i]);
		if (n) {
			publish(&L.pubs[i], n);
			more |= allowance(&L.pubs[i]) > 0;
		}
	}
	if (more)
		return 0;
	if (L.o->rate > 0)
		return 1; /* the next message may be due within a millisecond */
	return 10;  /* only deliveries open the window: epoll wakes for them */
}

/* ---- a run ----------------------------------------------------------------- */
void ps_load_defaults(struct ps_load_opts *o)
{
	memset(o, 0, sizeof *o);
	o->addr = "127.0.0.1:5032";
	o->proto = &ps_proto_bs;
	o->publishers = 1;
	o->subscribers = 10;
	o->topics = 1;
	o->stall_after = 0.2;
	o->window = 64;
	o->count = UINT64_MAX;
	o->seconds = 2;
	o->size = 110;
	o->tag = "pubsub_load";
}

static void progress(uint64_t *next, uint64_t *last_delivered, uint64_t *last_t)
{
	if (!L.o->progress || L.now < *next)
		return;
	bool tty = isatty(2);
	double dt = (double)(L.now - *last_t) / 1e9;
	fprintf(stderr, "%s%6.1f s  %10" PRIu64 " published  %12" PRIu64 " delivered  %10.0f deliveries/s%s",
		tty ? "\r" : "", (double)(L.now - L.t0) / 1e9, L.r->published, L.r->delivered,
		dt > 0 ? (double)(L.r->delivered - *last_delivered) / dt : 0.0, tty ? "" : "\n");
	*last_delivered = L.r->delivered;
	*last_t = L.now;
	*next = L.now + PROGRESS_NS;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void teardown(void)
{
	for (size_t i = 0; i < L.nconns; i++) {
		conn_close(&L.conns[i]);
		free(L.conns[i].rx);
		free(L.conns[i].tx);
	}
	if (L.ep >= 0)
		close(L.ep);
	free(L.conns);
	free(L.pubs);
	free(L.next_seq);
	free(L.pub_seq);
	free(L.healthy);
	free(L.names);
	free(L.tmpl);
}

static int setup(const struct ps_load_opts *o)
{
	const struct ps_proto *pr = o->proto;
	size_t P = o->publishers, S = o->subscribers, K = o->topics;
	struct sockaddr_storage ss[2][ADDRS_MAX];
	socklen_t sl[2][ADDRS_MAX];
	size_t naddr[2];
	const char *lists[2] = { o->addr, o->pub_addr ? o->pub_addr : o->addr };

	for (int role = 0; role < 2; role++) {
		naddr[role] = parse_addrs(lists[role], ss[role], sl[role]);
		if (naddr[role] == 0) {
			fprintf(stderr, "%s: bad address %s\n", o->tag, lists[role]);
			return -1;
		}
	}
	L.nconns = S + P;
	L.conns = calloc(L.nconns, sizeof *L.conns);
	L.pubs = calloc(P, sizeof *L.pubs);
	L.next_seq = calloc(S * P, sizeof *L.next_seq);
	L.pub_seq = calloc(P * K, sizeof *L.pub_seq);
	L.healthy = calloc(K, sizeof *L.healthy);
	L.names = calloc(K, sizeof *L.names);
	L.tmpl = malloc(P * o->size);
	L.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!L.conns || !L.pubs || !L.next_seq || !L.pub_seq || !L.healthy || !L.names ||
	    !L.tmpl || L.ep < 0) {
		fprintf(stderr, "%s: out of memory\n", o->tag);
		return -1;
	}
	for (size_t i = 0; i < L.nconns; i++)
		L.conns[i].fd = -1;
	for (size_t t = 0; t < K; t++)
		snprintf(L.names[t], sizeof L.names[t], "t%zu", t);
	for (size_t p = 0; p < P; p++)
		for (size_t i = 0; i < o->size; i++)
			L.tmpl[p * o->size + i] = (uint8_t)(i * 31 + p * 17 + 1);

	raise_nofile();
	uint64_t deadline = now_ns() + (uint64_t)(SETUP_S * 1e9);
	size_t want_acks = 0;
	uint8_t hello[PS_CMD_MAX];
	for (size_t i = 0; i < L.nconns; i++) {
		struct conn *c = &L.conns[i];
		bool sub = i < S;
		c->role = sub ? ROLE_SUB : ROLE_PUB;
		c->index = (uint32_t)(sub ? i : i - S);
		c->topic = sub ? (uint32_t)(i % K) : 0;
		c->stalled = sub && i < o->stalled;
		if (sub && !c->stalled)
			L.healthy[c->topic]++;
		if (!sub)
			L.pubs[c->index] = (struct pub){ .c = c, .next_topic = c->index % (uint32_t)K };
		int role = sub ? 0 : 1;
		size_t at = c->index % naddr[role];
		if (conn_open(c, &ss[role][at], sl[role][at]) != 0) {
			fprintf(stderr, "%s: connect %s (connection %zu): %s\n", o->tag,
				lists[role], i, strerror(errno));
			return -1;
		}
		size_t n = sub ? pr->hello(hello, L.names[c->topic], strlen(L.names[c->topic]))
			       : pr->hello(hello, NULL, 0);
		if (n) {
			want_acks++;
			conn_send(c, hello, n);
		} else {
			c->acked = true;
		}
		/* Answers arrive while the others connect. */
		if (i % 64 == 63)
			pump(0);
	}
	for (;;) {
		size_t acks = 0;
		for (size_t i = 0; i < L.nconns; i++)
			acks += L.conns[i].acked;
		if (acks == L.nconns)
			break;
		if (L.r->closed_early || L.r->corrupt) {
			fprintf(stderr, "%s: the server refused the setup\n", o->tag);
			return -1;
		}
		if (now_ns() > deadline) {
			fprintf(stderr, "%s: only %zu of %zu connections ready in %.0f s\n", o->tag,
				acks - (L.nconns - want_acks), want_acks, SETUP_S);
			return -1;
		}
		pump(10);
	}
	size_t healthy = S - (o->stalled < S ? o->stalled : S);
	uint64_t fan = (healthy + K - 1) / K;
	L.window_deliveries = o->window * (fan ? fan : 1);
	return 0;
}

int ps_load_run(const struct ps_load_opts *o, struct ps_load_result *r)
{
	memset(&L, 0, sizeof L);
	memset(r, 0, sizeof *r);
	L.o = o;
	L.r = r;
	L.ep = -1;
	if (o->publishers == 0 || o->topics == 0 || o->size < PS_HDR) {
		fprintf(stderr, "%s: needs a publisher, a topic and %d-byte messages\n", o->tag,
			PS_HDR);
		return -1;
	}
	if (setup(o) != 0) {
		teardown();
		return -1;
	}

	/* Publishing, bounded by o->seconds and o->count. */
	L.now = L.t0 = now_ns();
	uint64_t end = L.t0 + (uint64_t)(o->seconds * 1e9);
	uint64_t stall_at = L.t0 + (uint64_t)(o->stall_after * 1e9);
	uint64_t next_progress = L.t0 + PROGRESS_NS, last_d = 0, last_t = L.t0;
	bool stalled_now = false;
	L.last_delivery = L.t0;
	while (L.now < end) {
		bool done = true;
		for (unsigned i = 0; i < o->publishers; i++)
			done &= L.pubs[i].sent >= o->count || L.pubs[i].c->closed;
		if (done)
			break;
		if (!stalled_now && L.now >= stall_at) {
			for (size_t i = 0; i < o->stalled && i < o->subscribers; i++) {
				struct conn *c = &L.conns[i];
				if (!c->closed) {
					c->reading = false;
					conn_watch(c);
				}
			}
			stalled_now = true;
		}
		pump(top_up());
		progress(&next_progress, &last_d, &last_t);
	}

	/* The last deliveries. */
	uint64_t drain_end = L.now + (uint64_t)(DRAIN_S * 1e9);
	while (r->delivered < r->expected && L.now < drain_end) {
		bool any = false;
		for (size_t i = o->stalled; i < L.nconns; i++)
			any |= !L.conns[i].closed;
		if (!any)
			break;
		pump(10);
		progress(&next_progress, &last_d, &last_t);
	}
	if (o->progress && isatty(2))
		fprintf(stderr, "\n");
	r->seconds = (double)(L.last_delivery - L.t0) / 1e9;
	r->deliveries_per_s = r->seconds > 0 ? (double)r->delivered / r->seconds : 0;
	r->p50_us = hist_quantile_us(0.50);
	r->p99_us = hist_quantile_us(0.99);
	r->p999_us = hist_quantile_us(0.999);
	r->max_us = hist_quantile_us(1.0);

	/* What the stalled subscribers were left: read until their server
	 * closes them or nothing more comes. */
	for (size_t i = 0; i < o->stalled && i < o->subscribers; i++) {
		struct conn *c = &L.conns[i];
		if (!c->closed) {
			c->reading = true;
			conn_watch(c);
		}
	}
	uint64_t stall_end = L.now + (uint64_t)(STALL_READ_S * 1e9), seen = UINT64_MAX;
	uint64_t idle_since = L.now;
	while (o->stalled && r->stalled_closed < o->stalled && L.now < stall_end) {
		if (r->stalled_received != seen) {
			seen = r->stalled_received;
			idle_since = L.now;
		} else if (L.now - idle_since > (uint64_t)(STALL_IDLE_S * 1e9)) {
			break;
		}
		pump(10);
	}

	r->missing = r->expected - r->delivered;
	r->ok = r->missing == 0 && r->duplicate == 0 && r->corrupt == 0 && r->misrouted == 0 &&
		r->server_errors == 0 && r->closed_early == 0 && r->stalled_bad == 0;
	teardown();
	return 0;
}

void ps_load_report(FILE *f, const struct ps_load_opts *o, const struct ps_load_result *r)
{
	fprintf(f, "published   %" PRIu64 " messages of %zu bytes by %u publishers on %u topics (%s)\n",
		r->published, o->size, o->publishers, o->topics, o->proto->name);
	fprintf(f, "delivered   %" PRIu64 " of %" PRIu64 " to %u healthy subscribers in %.3f s\n",
		r->delivered, r->expected, o->subscribers - o->stalled, r->seconds);
	fprintf(f, "rate        %.0f deliveries/s\n", r->deliveries_per_s);
	fprintf(f, "latency     p50 %.0f us  p99 %.0f us  p999 %.0f us  max %.0f us\n", r->p50_us,
		r->p99_us, r->p999_us, r->max_us);
	if (o->stalled)
		fprintf(f, "stalled     %u subscribers got %" PRIu64 " deliveries; %u of them "
			"disconnected by the server\n", o->stalled, r->stalled_received,
			r->stalled_closed);
	if (r->ok)
		fprintf(f, "check       ok: every delivery exactly once, in each publisher's order\n");
	else
		fprintf(f, "check       FAILED: %" PRIu64 " missing, %" PRIu64 " duplicate or out of "
			"order, %" PRIu64 " corrupt, %" PRIu64 " misrouted, %" PRIu64 " server errors, %"
			PRIu64 " connections closed early, %" PRIu64 " stalled out of order\n",
			r->missing, r->duplicate, r->corrupt, r->misrouted, r->server_errors,
			r->closed_early, r->stalled_bad);
	fprintf(f, "RESULT proto=%s publishers=%u subscribers=%u topics=%u stalled=%u size=%zu "
		"published=%" PRIu64 " expected=%" PRIu64 " delivered=%" PRIu64 " missing=%" PRIu64
		" duplicate=%" PRIu64 " corrupt=%" PRIu64 " misrouted=%" PRIu64 " server_errors=%"
		PRIu64 " closed_early=%" PRIu64 " seconds=%.3f dps=%.0f p50_us=%.1f p99_us=%.1f "
		"p999_us=%.1f max_us=%.1f stalled_received=%" PRIu64 " stalled_bad=%" PRIu64
		" stalled_closed=%u ok=%d\n",
		o->proto->name, o->publishers, o->subscribers, o->topics, o->stalled, o->size,
		r->published, r->expected, r->delivered, r->missing, r->duplicate, r->corrupt,
		r->misrouted, r->server_errors, r->closed_early, r->seconds, r->deliveries_per_s,
		r->p50_us, r->p99_us, r->p999_us, r->max_us, r->stalled_received, r->stalled_bad,
		r->stalled_closed, r->ok);
	fflush(f);
}

/* ---- the command line -------------------------------------------------------- */
static int parse_num(const char *s, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int usage(const char *prog, const struct ps_proto *const *protos)
{
	fprintf(stderr,
		"usage: %s ADDR --publishers P --subscribers S --topics K --rate R --seconds N --size B\n"
		"       [--window W] [--count C] [--stalled N] [--stall-after S]\n"
		"       [--expect-stalled open|closed] [--pub-addr ADDR] [--quiet]%s\n"
		"  --rate      messages/s per publisher, 0 = as fast as the window allows (default 0)\n"
		"  --window    messages per publisher in flight at most (default 64)\n"
		"  --count     messages per publisher at most (default: no bound but --seconds)\n"
		"  --stalled   that many subscribers stop reading after --stall-after seconds\n"
		"  --expect-stalled  fail unless the server disconnected every stalled\n"
		"              subscriber (closed) or none (open)\n"
		"  ADDR        one server, or several, comma-separated, that the\n"
		"              subscribers spread over; --pub-addr the same for the\n"
		"              publishers (default: ADDR)\n",
		prog, protos[1] ? " [--proto NAME]" : "");
	if (protos[1]) {
		fprintf(stderr, "  --proto    ");
		for (size_t i = 0; protos[i]; i++)
			fprintf(stderr, " %s", protos[i]->name);
		fprintf(stderr, " (default %s)\n", protos[0]->name);
	}
	return 2;
}

int ps_load_main(const char *prog, int argc, char **argv, const struct ps_proto *const *protos)
{
	struct ps_load_opts o;
	const char *expect = NULL;
	bool have_addr = false;

	ps_load_defaults(&o);
	o.proto = protos[0];
	o.tag = prog;
	o.progress = true;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		double x = 0;
		int bad = 0;
		if (a[0] != '-') {
			if (have_addr)
				return usage(prog, protos);
			o.addr = a;
			have_addr = true;
			continue;
		}
		if (!strcmp(a, "--pub-addr") && v) {
			o.pub_addr = v;
			i++;
			continue;
		}
		if (!strcmp(a, "--quiet")) {
			o.progress = false;
			continue;
		}
		if (!v)
			return usage(prog, protos);
		i++;
		if (!strcmp(a, "--publishers") && !(bad = parse_num(v, 1, 10000, &x)))
			o.publishers = (unsigned)x;
		else if (!strcmp(a, "--subscribers") && !(bad = parse_num(v, 0, 100000, &x)))
			o.subscribers = (unsigned)x;
		else if (!strcmp(a, "--topics") && !(bad = parse_num(v, 1, 100000, &x)))
			o.topics = (unsigned)x;
		else if (!strcmp(a, "--stalled") && !(bad = parse_num(v, 0, 100000, &x)))
			o.stalled = (unsigned)x;
		else if (!strcmp(a, "--stall-after") && !(bad = parse_num(v, 0, 3600, &x)))
			o.stall_after = x;
		else if (!strcmp(a, "--rate") && !(bad = parse_num(v, 0, 1e9, &x)))
			o.rate = x;
		else if (!strcmp(a, "--window") && !(bad = parse_num(v, 1, 1e9, &x)))
			o.window = (uint64_t)x;
		else if (!strcmp(a, "--count") && !(bad = parse_num(v, 1, 1e12, &x)))
			o.count = (uint64_t)x;
		else if (!strcmp(a, "--seconds") && !(bad = parse_num(v, 0.1, 86400, &x)))
			o.seconds = x;
		else if (!strcmp(a, "--size") && !(bad = parse_num(v, PS_HDR, 1 << 24, &x)))
			o.size = (size_t)x;
		else if (!strcmp(a, "--expect-stalled") && (!strcmp(v, "open") || !strcmp(v, "closed")))
			expect = v;
		else if (!strcmp(a, "--proto")) {
			const struct ps_proto *found = NULL;
			for (size_t k = 0; protos[k]; k++)
				if (!strcmp(protos[k]->name, v))
					found = protos[k];
			if (!found)
				return usage(prog, protos);
			o.proto = found;
		} else
			return usage(prog, protos);
		if (bad)
			return usage(prog, protos);
	}
	if (!have_addr || o.stalled > o.subscribers)
		return usage(prog, protos);

	struct ps_load_result r;
	if (ps_load_run(&o, &r) != 0)
		return 1;
	ps_load_report(stdout, &o, &r);
	bool ok = r.ok;
	if (expect && o.stalled) {
		bool want_closed = !strcmp(expect, "closed");
		if (r.stalled_closed != (want_closed ? o.stalled : 0)) {
			fprintf(stderr, "%s: %u of %u stalled subscribers were disconnected, expected %s\n",
				prog, r.stalled_closed, o.stalled, want_closed ? "all" : "none");
			ok = false;
		}
	}
	return ok ? 0 : 1;
}
