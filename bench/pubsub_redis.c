/*
 * Redis pub/sub in RESP2 for the load engine: SUBSCRIBE and PUBLISH (and
 * PING) as arrays of bulk strings; the server's subscribe confirmations
 * and deliveries are arrays of three ("subscribe", topic, count) and
 * ("message", topic, payload), a publish is answered with an integer.
 * Pure functions, any thread.
 */
#include "pubsub_load.h"

#include <stdio.h>
#include <string.h>

#define MAX_LINE 4096u
#define MAX_BULK (512u << 20)

static size_t redis_hello(uint8_t *out, const char *topic, size_t tlen)
{
	int n;
	if (topic)
		n = snprintf((char *)out, PS_CMD_MAX, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%.*s\r\n",
			     tlen, (int)tlen, topic);
	else /* a publisher is ready once PING comes back */
		n = snprintf((char *)out, PS_CMD_MAX, "*1\r\n$4\r\nPING\r\n");
	return n > 0 && n < PS_CMD_MAX ? (size_t)n : 0;
}

static size_t redis_pub_head(uint8_t *out, const char *topic, size_t tlen, size_t len)
{
	int n = snprintf((char *)out, PS_CMD_MAX,
			 "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%.*s\r\n$%zu\r\n", tlen, (int)tlen,
			 topic, len);
	return n > 0 && n < PS_CMD_MAX ? (size_t)n : 0;
}

/* One line starting at buf[*pos] with the given type byte; its text after
 * the type byte in *s, *slen. 1 found, 0 incomplete, -1 malformed. */
static int line_at(const uint8_t *buf, size_t len, size_t *pos, uint8_t type,
		   const uint8_t **s, size_t *slen)
{
	size_t p = *pos;
	if (p >= len)
		return 0;
	if (buf[p] != type)
		return -1;
	size_t max = len - p < MAX_LINE ? len - p : MAX_LINE;
	const uint8_t *nl = memchr(buf + p, '\n', max);
	if (!nl)
		return max == MAX_LINE ? -1 : 0;
	size_t end = (size_t)(nl - buf);
	if (end == p || buf[end - 1] != '\r')
		return -1;
	*s = buf + p + 1;
	*slen = end - 1 - (p + 1);
	*pos = end + 1;
	return 1;
}

static int number(const uint8_t *s, size_t n, long long *v)
{
	long long x = 0;
	bool neg = n > 0 && s[0] == '-';
	if (n == (size_t)neg || n > 19)
		return -1;
	for (size_t i = neg; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		x = x * 10 + (s[i] - '0');
	}
	*v = neg ? -x : x;
	return 0;
}

/* A bulk string at buf[*pos]: 1 (and *s, *slen), 0 incomplete, -1 bad. */
static int bulk_at(const uint8_t *buf, size_t len, size_t *pos, const uint8_t **s,
		   size_t *slen)
{
	const uint8_t *t;
	size_t tl, p = *pos;
	long long n;
	int r = line_at(buf, len, &p, '$', &t, &tl);
	if (r <= 0)
		return r;
	if (number(t, tl, &n) || n < 0 || n > MAX_BULK)
		return -1;
	if (len - p < (size_t)n + 2)
		return 0;
	if (buf[p + (size_t)n] != '\r' || buf[p + (size_t)n + 1] != '\n')
		return -1;
	*s = buf + p;
	*slen = (size_t)n;
	*pos = p + (size_t)n + 2;
	return 1;
}

static bool word(const uint8_t *s, size_t n, const char *w)
{
	return n == strlen(w) && memcmp(s, w, n) == 0;
}

static long redis_parse(const uint8_t *buf, size_t len, struct ps_event *ev)
{
	const uint8_t *s;
	size_t sl, pos = 0;
	int r;

	if (len == 0)
		return 0;
	memset(ev, 0, sizeof *ev);
	switch (buf[0]) {
	case '+':
		if ((r = line_at(buf, len, &pos, '+', &s, &sl)) <= 0)
			return r;
		ev->kind = word(s, sl, "PONG") ? PS_EV_ACK : PS_EV_NONE;
		return (long)pos;
	case '-':
		if ((r = line_at(buf, len, &pos, '-', &s, &sl)) <= 0)
			return r;
		ev->kind = PS_EV_ERROR;
		ev->body = s;
		ev->len = sl;
		return (long)pos;
	case ':': /* the receiver count of a PUBLISH */
		if ((r = line_at(buf, len, &pos, ':', &s, &sl)) <= 0)
			return r;
		ev->kind = PS_EV_NONE;
		return (long)pos;
	case '*':
		break;
	default:
		return -1;
	}

	long long n;
	if ((r = line_at(buf, len, &pos, '*', &s, &sl)) <= 0)
		return r;
	if (number(s, sl, &n) || n != 3)
		return -1;
	const uint8_t *kind, *topic, *third;
	size_t kl, tl, thl;
	if ((r = bulk_at(buf, len, &pos, &kind, &kl)) <= 0 ||
	    (r = bulk_at(buf, len, &pos, &topic, &tl)) <= 0)
		return r;
	if (word(kind, kl, "message")) {
		if ((r = bulk_at(buf, len, &pos, &third, &thl)) <= 0)
			return r;
		ev->kind = PS_EV_MSG;
		ev->topic = topic;
		ev->tlen = tl;
		ev->body = third;
		ev->len = thl;
		return (long)pos;
	}
	/* (un)subscribe confirmations end with the subscription count */
	if ((r = line_at(buf, len, &pos, ':', &third, &thl)) <= 0)
		return r;
	ev->kind = word(kind, kl, "subscribe") ? PS_EV_ACK : PS_EV_NONE;
	return (long)pos;
}

const struct ps_proto ps_proto_redis = {
	.name = "redis",
	.hello = redis_hello,
	.pub_head = redis_pub_head,
	.pub_tail = "\r\n",
	.pub_tail_len = 2,
	.parse = redis_parse,
	.pong = NULL, /* Redis never pings its clients */
};
