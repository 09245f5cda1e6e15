/*
 * The pub/sub protocol of examples/pubsub_server for the load engine:
 * frames with a 4-byte big-endian length, payload op | topic length |
 * topic | body (see the server's header comment). Pure functions, any
 * thread.
 */
#include "pubsub_load.h"

#include <string.h>

#define MAX_FRAME (16u << 20)

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static size_t bs_command(uint8_t *out, uint8_t op, const char *topic, size_t tlen,
			 size_t body)
{
	put_be32(out, (uint32_t)(2 + tlen + body));
	out[4] = op;
	out[5] = (uint8_t)tlen;
	memcpy(out + 6, topic, tlen);
	return 6 + tlen;
}

static size_t bs_hello(uint8_t *out, const char *topic, size_t tlen)
{
	/* A publisher is ready at once: the server does not answer it. */
	return topic ? bs_command(out, 'S', topic, tlen, 0) : 0;
}

static size_t bs_pub_head(uint8_t *out, const char *topic, size_t tlen, size_t len)
{
	return bs_command(out, 'P', topic, tlen, len);
}

static long bs_parse(const uint8_t *buf, size_t len, struct ps_event *ev)
{
	if (len < 4)
		return 0;
	uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
		     (uint32_t)buf[2] << 8 | buf[3];
	if (n > MAX_FRAME || n < 2)
		return -1;
	if (len < 4 + (size_t)n)
		return 0;
	const uint8_t *p = buf + 4;
	size_t tlen = p[1];
	if (2 + tlen > n)
		return -1;
	memset(ev, 0, sizeof *ev);
	ev->topic = p + 2;
	ev->tlen = tlen;
	ev->body = p + 2 + tlen;
	ev->len = n - 2 - tlen;
	switch (p[0]) {
	case 'M': ev->kind = PS_EV_MSG; break;
	case 'A': ev->kind = PS_EV_ACK; break;
	case 'E': ev->kind = PS_EV_ERROR; break;
	default: return -1;
	}
	return (long)(4 + n);
}

const struct ps_proto ps_proto_bs = {
	.name = "bs",
	.hello = bs_hello,
	.pub_head = bs_pub_head,
	.pub_tail = "",
	.pub_tail_len = 0,
	.parse = bs_parse,
	.pong = NULL,
};
