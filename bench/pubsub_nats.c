/*
 * The NATS client protocol (text: CONNECT, SUB, PUB, PING from the client;
 * INFO, MSG, PING, PONG, +OK, -ERR from the server) for the load engine,
 * as nats-server speaks it. A subscription is confirmed by sending PING
 * after SUB: the server answers PONG once it has processed both. Pure
 * functions, any thread.
 */
#include "pubsub_load.h"

#include <stdio.h>
#include <string.h>

#define MAX_LINE 65536u     /* INFO carries a JSON object */
#define MAX_PAYLOAD (64u << 20)

/* verbose off: no +OK after every command; echo off: a connection never
 * receives what it published itself. */
#define CONNECT "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false," \
		"\"lang\":\"c\",\"version\":\"1\",\"protocol\":1}\r\n"

static size_t nats_hello(uint8_t *out, const char *topic, size_t tlen)
{
	int n;
	if (topic)
		n = snprintf((char *)out, PS_CMD_MAX, CONNECT "SUB %.*s 1\r\nPING\r\n",
			     (int)tlen, topic);
	else
		n = snprintf((char *)out, PS_CMD_MAX, CONNECT "PING\r\n");
	return n > 0 && n < PS_CMD_MAX ? (size_t)n : 0;
}

static size_t nats_pub_head(uint8_t *out, const char *topic, size_t tlen, size_t len)
{
	int n = snprintf((char *)out, PS_CMD_MAX, "PUB %.*s %zu\r\n", (int)tlen, topic, len);
	return n > 0 && n < PS_CMD_MAX ? (size_t)n : 0;
}

/* Splits line[0..len) at blanks into up to max tokens; returns how many. */
static int tokens(const uint8_t *line, size_t len, const uint8_t **tok, size_t *tlen,
		  int max)
{
	int n = 0;
	size_t i = 0;
	while (i < len) {
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == len)
			break;
		if (n == max)
			return max + 1;
		size_t start = i;
		while (i < len && line[i] != ' ' && line[i] != '\t')
			i++;
		tok[n] = line + start;
		tlen[n++] = i - start;
	}
	return n;
}

static bool is_op(const uint8_t *line, size_t len, const char *op)
{
	size_t n = strlen(op);
	if (len < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((line[i] | 0x20) != (op[i] | 0x20))
			return false;
	return len == n || line[n] == ' ' || line[n] == '\t';
}

static long nats_parse(const uint8_t *buf, size_t len, struct ps_event *ev)
{
	const uint8_t *nl = memchr(buf, '\n', len < MAX_LINE ? len : MAX_LINE);
	if (!nl)
		return len < MAX_LINE ? 0 : -1;
	size_t line = (size_t)(nl - buf) + 1;          /* with \r\n */
	size_t llen = line >= 2 && nl[-1] == '\r' ? line - 2 : line - 1;

	memset(ev, 0, sizeof *ev);
	if (is_op(buf, llen, "MSG")) {
		const uint8_t *tok[6];
		size_t tl[6];
		int n = tokens(buf + 3, llen - 3, tok, tl, 4);
		if (n != 3 && n != 4)
			return -1;
		size_t bytes = 0;
		for (size_t i = 0; i < tl[n - 1]; i++) {
			uint8_t c = tok[n - 1][i];
			if (c < '0' || c > '9' || bytes > MAX_PAYLOAD)
				return -1;
			bytes = bytes * 10 + (c - '0');
		}
		if (len < line + bytes + 2)
			return 0;
		ev->kind = PS_EV_MSG;
		ev->topic = tok[0];
		ev->tlen = tl[0];
		ev->body = buf + line;
		ev->len = bytes;
		return (long)(line + bytes + 2);
	}
	if (is_op(buf, llen, "PING"))
		ev->kind = PS_EV_PING;
	else if (is_op(buf, llen, "PONG"))
		ev->kind = PS_EV_ACK;
	else if (is_op(buf, llen, "-ERR")) {
		ev->kind = PS_EV_ERROR;
		ev->body = buf;
		ev->len = llen;
	} else if (is_op(buf, llen, "INFO") || is_op(buf, llen, "+OK"))
		ev->kind = PS_EV_NONE;
	else
		return -1;
	return (long)line;
}

const struct ps_proto ps_proto_nats = {
	.name = "nats",
	.hello = nats_hello,
	.pub_head = nats_pub_head,
	.pub_tail = "\r\n",
	.pub_tail_len = 2,
	.parse = nats_parse,
	.pong = "PONG\r\n",
};
