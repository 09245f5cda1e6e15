/*
 * nats_envelope — encoding and decoding of the bridge's envelopes and
 * subjects, and the per-origin sequence check (see nats_envelope.h).
 * Pure; any thread.
 */
#include "nats_envelope.h"

#include <stdlib.h>
#include <string.h>

size_t env_header_len(uint8_t kind)
{
	return kind == ENV_DIRECT ? 36 : 28;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void env_encode(uint8_t *out, const env_t *e)
{
	out[0] = ENV_VERSION;
	out[1] = e->kind;
	out[2] = (uint8_t)(e->node >> 8);
	out[3] = (uint8_t)e->node;
	put64(out + 4, e->epoch);
	put64(out + 12, e->seq);
	put64(out + 20, e->id1);
	if (e->kind == ENV_DIRECT)
		put64(out + 28, e->id2);
}

bool env_decode(const uint8_t *p, size_t n, uint8_t kind, env_t *e)
{
	size_t hdr = env_header_len(kind);

	if (!p || n < hdr || p[0] != ENV_VERSION || p[1] != kind)
		return false;
	e->kind = kind;
	e->node = (uint16_t)(p[2] << 8 | p[3]);
	e->epoch = get64(p + 4);
	e->seq = get64(p + 12);
	e->id1 = get64(p + 20);
	e->id2 = kind == ENV_DIRECT ? get64(p + 28) : 0;
	e->payload = p + hdr;
	e->len = n - hdr;
	return e->seq != 0;
}

size_t env_topic_subject(char *out, const uint8_t *topic, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	size_t n = sizeof(ENV_SUBJ_TOPIC) - 1;

	memcpy(out, ENV_SUBJ_TOPIC, n);
	for (size_t i = 0; i < len; i++) {
		out[n++] = digits[topic[i] >> 4];
		out[n++] = digits[topic[i] & 15];
	}
	out[n] = '\0';
	return n;
}

enum env_verdict env_stream_check(env_streams_t *s, const env_t *e, uint64_t *lost)
{
	env_origin_t *o = NULL;

	*lost = 0;
	for (uint32_t i = 0; i < s->n && !o; i++)
		if (s->v[i].node == e->node)
			o = &s->v[i];
	if (!o) {
		if (s->n == s->cap) {
			uint32_t cap = s->cap ? s->cap * 2 : 4;
			env_origin_t *v = realloc(s->v, cap * sizeof(*v));
			if (!v)
				return ENV_FIRST;
			s->v = v;
			s->cap = cap;
		}
		o = &s->v[s->n++];
		*o = (env_origin_t){ e->node, e->epoch, e->seq };
		return ENV_FIRST;
	}
	if (o->epoch != e->epoch) {
		o->epoch = e->epoch;
		o->last = e->seq;
		return ENV_FIRST;
	}
	if (e->seq <= o->last)
		return ENV_REPEAT;
	*lost = e->seq - o->last - 1;
	o->last = e->seq;
	return *lost ? ENV_GAP : ENV_NEXT;
}

void env_streams_free(env_streams_t *s)
{
	free(s->v);
	*s = (env_streams_t){ 0 };
}
