/*
 * The codecs as the I/O path calls them: for a framing that bs_framing_check
 * accepted once, with max_message_size resolved, so nothing is validated
 * again per frame. The default framing (4-byte big-endian length) is decoded
 * inline: it is what most streams use, and the read path decodes every
 * message.
 */
#ifndef BS_FRAMING_H
#define BS_FRAMING_H

#include <stdbool.h>
#include <string.h>

#include "buffstreams.h"

/* bs_frame_decode without argument checks. */
int frame_decode_any(const bs_framing_t *f, const uint8_t *p, size_t len, bs_frame_t *out);
/* bs_frame_encode without argument checks (trailer_len must be given). */
int frame_encode_any(const bs_framing_t *f, size_t len, uint8_t hdr[BS_FRAME_HEADER_MAX],
		     size_t *trailer_len);

/* The default framing, decoded inline. */
static inline bool frame_is_be32(const bs_framing_t *f)
{
	return f->kind == BS_FRAMING_FIXED && f->width == 4 && !f->little_endian;
}

static inline int frame_decode_be32(const uint8_t *p, size_t len, size_t max, bs_frame_t *out)
{
	uint32_t be;
	size_t n;

	out->trailer_len = 0;
	if (len < 4) {
		out->header_len = out->payload_len = 0;
		return 0;
	}
	memcpy(&be, p, 4);
	n = __builtin_bswap32(be);
	if (n > max)
		return BS_EMSGSIZE;
	out->header_len = 4;
	out->payload_len = n;
	return len - 4 >= n;
}

static inline int frame_decode(const bs_framing_t *f, const uint8_t *p, size_t len,
			       bs_frame_t *out)
{
	if (frame_is_be32(f))
		return frame_decode_be32(p, len, f->max_message_size, out);
	return frame_decode_any(f, p, len, out);
}

#endif
