/*
 * nats_envelope — the wire format the NATS bridge (nats_bridge.h) speaks
 * between nodes, and the sequence check that tells a receiver what went
 * missing. Pure: no I/O, no locks, no allocation but a stream table's
 * growth. Any thread; one stream table belongs to one thread at a time.
 *
 * Subjects
 *   Topic T (any 1..255 bytes) is "bs.t.<T in lowercase hex>": one token
 *   of [0-9a-f], valid whatever T holds. Direct messages for node N go to
 *   "bs.node.<N in decimal>".
 *
 * Envelope (integers big-endian)
 *   offset size
 *   0      1    version, 1
 *   1      1    kind: 'T' topic message, 'D' direct message
 *   2      2    origin node
 *   4      8    origin epoch: drawn at random when the origin's bridge opened
 *   12     8    sequence: 1, 2, 3... per (origin, epoch) and stream
 *   20     8    'T': the publisher's connection id  'D': the target's id
 *   28     8    'D' only: the sender's connection id
 *   28|36  ...  payload
 *   A stream is one topic, or the direct messages to one node.
 */
#ifndef NATS_ENVELOPE_H
#define NATS_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENV_VERSION 1
#define ENV_TOPIC 'T'
#define ENV_DIRECT 'D'
#define ENV_HDR_MAX 36
#define ENV_TOPIC_MAX 255

#define ENV_SUBJ_TOPIC "bs.t."
#define ENV_SUBJ_NODE "bs.node."
/* The longest topic subject, with its NUL. */
#define ENV_SUBJ_MAX (sizeof(ENV_SUBJ_TOPIC) + 2 * ENV_TOPIC_MAX)

typedef struct env {
	uint8_t kind;
	uint16_t node;
	uint64_t epoch, seq;
	uint64_t id1;            /* 'T': publisher  'D': target */
	uint64_t id2;            /* 'D': sender */
	const uint8_t *payload;  /* decoded: points into the input */
	size_t len;
} env_t;

/* The header's size for kind ('T' 28, 'D' 36). */
size_t env_header_len(uint8_t kind);
/* Writes e's header (everything but the payload) into
 * out[env_header_len(e->kind)]. */
void env_encode(uint8_t *out, const env_t *e);
/* Reads p[0..n) as an envelope of kind; false when it is none (short,
 * another version or kind, sequence 0). */
bool env_decode(const uint8_t *p, size_t n, uint8_t kind, env_t *e);

/* Writes topic[0..len)'s subject, NUL-terminated, into out[ENV_SUBJ_MAX];
 * returns its length. len must be 1..ENV_TOPIC_MAX. */
size_t env_topic_subject(char *out, const uint8_t *topic, size_t len);

/* ---- sequence check ------------------------------------------------------ */
typedef struct env_origin {
	uint16_t node;
	uint64_t epoch, last;
} env_origin_t;

/* What one stream saw from each origin. Zero-initialised is empty. */
typedef struct env_streams {
	env_origin_t *v;
	uint32_t n, cap;
} env_streams_t;

enum env_verdict {
	ENV_FIRST,   /* first from this origin, or from a new epoch of it (it
		      * restarted): it only sets where the stream stands, since
		      * what came before this receiver listened is no loss */
	ENV_NEXT,    /* the one expected */
	ENV_GAP,     /* later than expected: *lost went missing before it */
	ENV_REPEAT,  /* at or before one seen already: not to be passed on */
};

/* Checks e against what s saw of e's origin, and records it. When s
 * cannot grow, e is passed on (ENV_FIRST) untracked. */
enum env_verdict env_stream_check(env_streams_t *s, const env_t *e, uint64_t *lost);
void env_streams_free(env_streams_t *s);

#endif /* NATS_ENVELOPE_H */
