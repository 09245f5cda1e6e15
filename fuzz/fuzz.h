/*
 * What every frame-decoder fuzz target checks. Each target picks a framing
 * from the first input byte(s) and hands the rest to fuzz_walk(), which
 * cuts it into frames with bs_frame_decode and aborts (a finding) when the
 * decoder breaks its contract:
 *   - a result other than 1, 0, BS_EMSGSIZE or BS_EPROTO, or a bad frame
 *     that still fills *out, or one that more bytes would make good;
 *   - a frame larger than the bytes given, or empty (no progress), or a
 *     payload above max_message_size;
 *   - a "need more" whose announced size would fit in what was given;
 *   - any prefix of a frame answering otherwise than "need more", with the
 *     size known exactly from the end of the header on (never, for DELIM);
 *   - a payload the same framing refuses to send, or an encoder that
 *     cannot write the size just read.
 * Prefixes are decoded from exact-size heap copies, so AddressSanitizer
 * sees a read past the end of any of them, not just of the whole input.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffstreams.h"

#define FUZZ_DEFAULT_MAX ((size_t)8 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                    \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: invariant broken: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

/* Limits worth reaching from one config byte: 0 (the 8 MiB default), the
 * edges of one- to four-byte headers, and the very large. */
static const size_t fuzz_maxes[16] = {
	0, 1, 2, 3, 127, 128, 255, 256, 1000, 4096, 16384, 65535, 65536,
	(size_t)1 << 24, (size_t)UINT32_MAX, SIZE_MAX / 2,
};

/* Extra bytes a DELIM framing with keep_delim adds to payload_len. */
static inline size_t fuzz_kept(const bs_framing_t *f)
{
	return f->kind == BS_FRAMING_DELIM && f->keep_delim ? 1 : 0;
}

/* Decodes the first n bytes of p from a heap copy of exactly n bytes. */
static inline int fuzz_decode_prefix(const bs_framing_t *f,
				     const uint8_t *p, size_t n,
				     bs_frame_t *out)
{
	uint8_t *copy = n ? malloc(n) : NULL;
	int r;

	FUZZ_ASSERT(n == 0 || copy != NULL);
	if (n)
		memcpy(copy, p, n);
	r = bs_frame_decode(f, copy, n, out);
	free(copy);
	return r;
}

static inline int fuzz_same(const bs_frame_t *a, const bs_frame_t *b)
{
	return a->header_len == b->header_len &&
	       a->payload_len == b->payload_len &&
	       a->trailer_len == b->trailer_len;
}

/* A proper prefix of the frame fr: need more, size known iff the header
 * is complete (for DELIM, never). */
static inline void fuzz_check_prefix(const bs_framing_t *f,
				     const uint8_t *p, size_t k,
				     const bs_frame_t *fr)
{
	bs_frame_t pre;
	const bs_frame_t none = { 0, 0, 0 };

	FUZZ_ASSERT(fuzz_decode_prefix(f, p, k, &pre) == 0);
	if (f->kind != BS_FRAMING_DELIM && k >= fr->header_len)
		FUZZ_ASSERT(fuzz_same(&pre, fr));
	else
		FUZZ_ASSERT(fuzz_same(&pre, &none));
}

/* Encoding a length and decoding the header back gives that length. */
static inline void fuzz_check_encode(const bs_framing_t *f, uint64_t len64)
{
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	size_t len = (size_t)len64, tl = 2, max;
	bs_frame_t fr;
	int h, r;

	if ((uint64_t)len != len64)
		return;
	max = f->max_message_size ? f->max_message_size : FUZZ_DEFAULT_MAX;
	h = bs_frame_encode(f, len, hdr, &tl);
	if (h < 0) {
		/* Refused only above max, or beyond what the header holds: a
		 * narrow fixed width, or a BuffStreams header (2^62 - 1 at
		 * most, reached only by maxima above that). */
		FUZZ_ASSERT(h == BS_EMSGSIZE);
		FUZZ_ASSERT(len > max ||
			    (f->kind == BS_FRAMING_FIXED && f->width < 8 &&
			     len64 >> (8 * f->width) != 0) ||
			    (f->kind == BS_FRAMING_BUFFSTREAMS &&
			     len64 >= (uint64_t)1 << 62));
		return;
	}
	FUZZ_ASSERT(len <= max);
	FUZZ_ASSERT(h <= BS_FRAME_HEADER_MAX);
	FUZZ_ASSERT(tl == (f->kind == BS_FRAMING_DELIM ? 1u : 0u));
	if (f->kind == BS_FRAMING_DELIM)
		return;
	r = fuzz_decode_prefix(f, hdr, (size_t)h, &fr);
	FUZZ_ASSERT(r == (len == 0 ? 1 : 0));
	FUZZ_ASSERT(fr.header_len == (size_t)h && fr.payload_len == len &&
		    fr.trailer_len == 0);
}

/* Checks one whole frame the way its codec alone can. */
typedef void fuzz_frame_fn(const bs_framing_t *f, const uint8_t *frame,
			   const bs_frame_t *fr);

/* A verdict on bad input stands whatever bytes follow it. */
static inline void fuzz_check_error_stays(const bs_framing_t *f,
					  const uint8_t *p, size_t n, int err)
{
	uint8_t *longer = malloc(n + 16);
	bs_frame_t fr;

	FUZZ_ASSERT(longer != NULL);
	memcpy(longer, p, n);
	memset(longer + n, 0x00, 8);
	memset(longer + n + 8, 0xff, 8);
	FUZZ_ASSERT(bs_frame_decode(f, longer, n + 16, &fr) == err);
	free(longer);
}

/*
 * Cuts data[0..size) into frames. check_frame, when not NULL, gets each
 * whole frame for the codec's own checks. Returns the number of frames.
 */

static inline size_t fuzz_walk(const bs_framing_t *f, const uint8_t *data,
			       size_t size, fuzz_frame_fn *check_frame)
{
	size_t max = f->max_message_size ? f->max_message_size
					 : FUZZ_DEFAULT_MAX;
	size_t pos = 0, frames = 0;

	for (;;) {
		const uint8_t *p = data + pos;
		size_t len = size - pos, total, content;
		bs_frame_t fr, again;
		int r = bs_frame_decode(f, p, len, &fr);

		total = fr.header_len + fr.payload_len + fr.trailer_len;
		if (r == BS_EMSGSIZE || r == BS_EPROTO) {
			FUZZ_ASSERT(total == 0);
			fuzz_check_error_stays(f, p, len, r);
			break;
		}
		FUZZ_ASSERT(r == 0 || r == 1);
		if (r == 0) {
			if (fr.header_len != 0)
				FUZZ_ASSERT(fr.header_len <= len &&
					    total > len &&
					    fr.payload_len <= max &&
					    f->kind != BS_FRAMING_DELIM);
			else
				FUZZ_ASSERT(total == 0);
			break;
		}
		FUZZ_ASSERT(total >= 1 && total <= len);
		FUZZ_ASSERT(fr.payload_len >= fuzz_kept(f));
		FUZZ_ASSERT(fr.payload_len - fuzz_kept(f) <= max);

		/* The frame alone, and proper prefixes of it. */
		FUZZ_ASSERT(fuzz_decode_prefix(f, p, total, &again) == 1);
		FUZZ_ASSERT(fuzz_same(&again, &fr));
		fuzz_check_prefix(f, p, total - 1, &fr);
		if (fr.header_len != 0) {
			fuzz_check_prefix(f, p, fr.header_len - 1, &fr);
			if (fr.header_len < total)
				fuzz_check_prefix(f, p, fr.header_len, &fr);
		}
		fuzz_check_prefix(f, p, (size_t)p[0] * 131 % total, &fr);

		content = fr.payload_len - fuzz_kept(f);
		FUZZ_ASSERT(bs_frame_check_payload(f, p + fr.header_len,
						   content) == 0);
		if (check_frame != NULL)
			check_frame(f, p, &fr);
		pos += total;
		frames++;
	}
	return frames;
}

/* Runs both checks on one input: an encode of a length taken from the
 * input, then the walk. */
static inline void fuzz_run(const bs_framing_t *f, const uint8_t *data,
			    size_t size, fuzz_frame_fn *check_frame)
{
	uint64_t len = 0;

	FUZZ_ASSERT(bs_framing_check(f) == 0);
	for (size_t i = 0; i < 8 && i < size; i++)
		len |= (uint64_t)data[i] << (8 * i);
	if (size > 8)
		len >>= data[8] & 63; /* favour short lengths */
	fuzz_check_encode(f, len);
	fuzz_walk(f, data, size, check_frame);
}

#endif /* FUZZ_H */
