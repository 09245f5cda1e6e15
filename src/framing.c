/*
 * Frame codecs: where a message starts and ends in a byte stream, and the
 * header that announces one.
 *
 * Everything here is a pure function of its arguments: no I/O, no
 * allocation, no state between calls. bs_frame_decode looks only at
 * buf[0..len) — never one byte further — so it may be handed any prefix of
 * a stream, and a header that announces more than the maximum is refused
 * from the header bytes alone, before a caller sizes a buffer from it.
 *
 * Licensed under the Apache License, Version 2.0.
 */
#include "framing.h"

#include <string.h>

/*
 * The largest max_message_size accepted. It keeps header + payload +
 * trailer of any frame representable in a size_t, so neither this file nor
 * a caller can overflow when adding them up.
 */
#define MAX_MESSAGE_SIZE_LIMIT (SIZE_MAX - BS_FRAME_HEADER_MAX - 1)

/* An unsigned LEB128 encoding of a 64-bit value takes at most 10 bytes. */
#define VARINT_MAX_BYTES 10

static size_t effective_max(const bs_framing_t *f)
{
	return f->max_message_size ? f->max_message_size
				   : BS_DEFAULT_MAX_MESSAGE_SIZE;
}

/*
 * Go BuffStreams' header width: one byte more than max needs, because the
 * length is stored as a zig-zag varint (7 bits per byte, one of them spent
 * on the sign). Equals ceil(bits(max) / 8) + 1 for max >= 1.
 */
static size_t buffstreams_header_len(size_t max)
{
	size_t bytes = 0;

	for (; max != 0; max >>= 8)
		bytes++;
	return bytes + 1;
}

/*
 * The largest length a BuffStreams header of h bytes can carry:
 * 2^(7h-1) - 1, as the zig-zag value 2 * len must fit in 7h bits. h <= 9,
 * so the shift stays below 64.
 */
static uint64_t buffstreams_capacity(size_t h)
{
	return ((uint64_t)1 << (7 * h - 1)) - 1;
}

/*
 * Reads an unsigned LEB128 varint from p[0..n). Returns its length in
 * bytes and sets *value; 0 when the n bytes end inside it; BS_EPROTO when
 * it runs past 10 bytes or 64 bits. Never reads p[n] or beyond.
 */
static int uvarint_read(const uint8_t *p, size_t n, uint64_t *value)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n && i < VARINT_MAX_BYTES; i++) {
		uint64_t b = p[i];

		/* The 10th byte holds bit 63 alone: 0 or 1, and it must end. */
		if (i == VARINT_MAX_BYTES - 1 && b > 1)
			return BS_EPROTO;
		v |= (b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*value = v;
			return (int)i + 1;
		}
	}
	/* A tenth byte always decides above: fewer than 10 were seen. */
	return 0;
}

static size_t uvarint_write(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/*
 * Fills *out for a frame whose header has been read (payload already
 * checked against the maximum, so the sum cannot overflow). Returns 1 when
 * the whole frame is in the len bytes, else 0: more needed, size known.
 */
static int frame_at(bs_frame_t *out, size_t header, size_t payload,
		    size_t trailer, size_t len)
{
	out->header_len = header;
	out->payload_len = payload;
	out->trailer_len = trailer;
	return header + payload + trailer <= len;
}

/* ---- decoders: one per wire format -------------------------------------- */

static int decode_fixed(const bs_framing_t *f, size_t max, const uint8_t *p,
			size_t len, bs_frame_t *out)
{
	size_t w = f->width;
	uint64_t n = 0;

	if (len < w)
		return 0;
	for (size_t i = 0; i < w; i++) {
		/* i counts from the least significant byte. */
		uint8_t b = f->little_endian ? p[i] : p[w - 1 - i];

		n |= (uint64_t)b << (8 * i);
	}
	if (n > max)
		return BS_EMSGSIZE;
	return frame_at(out, w, (size_t)n, 0, len);
}

static int decode_varint(size_t max, const uint8_t *p, size_t len,
			 bs_frame_t *out)
{
	uint64_t n = 0;
	int h = uvarint_read(p, len, &n);

	if (h <= 0)
		return h;
	/*
	 * A last byte of 0 after a continuation byte adds nothing: the
	 * encoding is not minimal. No protobuf writer produces one, and
	 * refusing it gives every length exactly one header.
	 */
	if (h > 1 && p[h - 1] == 0)
		return BS_EPROTO;
	if (n > max)
		return BS_EMSGSIZE;
	return frame_at(out, (size_t)h, (size_t)n, 0, len);
}

static int decode_buffstreams(size_t max, const uint8_t *p, size_t len,
			      bs_frame_t *out)
{
	size_t h = buffstreams_header_len(max);
	uint64_t z = 0;
	int r;

	if (len < h)
		return 0;
	/*
	 * The varint is read from the header alone and the bytes after its
	 * end are ignored, as Go's reader does; so is a non-minimal varint.
	 * One that does not end inside the header is malformed, whatever
	 * follows it.
	 */
	r = uvarint_read(p, h, &z);
	if (r <= 0)
		return r < 0 ? r : BS_EPROTO;
	if (z & 1) /* zig-zag: odd values are negative lengths */
		return BS_EPROTO;
	if (z >> 1 > max)
		return BS_EMSGSIZE;
	return frame_at(out, h, (size_t)(z >> 1), 0, len);
}

static int decode_delim(const bs_framing_t *f, size_t max, const uint8_t *p,
			size_t len, bs_frame_t *out)
{
	/*
	 * A message of max bytes puts its delimiter at index max, so only
	 * the first max + 1 bytes can hold it; past that the message is too
	 * long whatever comes next. (max + 1 cannot overflow: when len > max,
	 * max < SIZE_MAX.)
	 */
	size_t scan = len > max ? max + 1 : len;
	const uint8_t *d = scan ? memchr(p, f->delim, scan) : NULL;
	size_t n;

	if (d == NULL)
		return len > max ? BS_EMSGSIZE : 0;
	n = (size_t)(d - p);
	if (f->keep_delim)
		return frame_at(out, 0, n + 1, 0, len);
	return frame_at(out, 0, n, 1, len);
}

/* ---- public calls ----------------------------------------------------- */

void bs_framing_default(bs_framing_t *f)
{
	if (f == NULL)
		return;
	*f = (bs_framing_t){
		.kind = BS_FRAMING_FIXED,
		.width = 4,
		.little_endian = false,
		.delim = '\n',
		.keep_delim = false,
		.max_message_size = BS_DEFAULT_MAX_MESSAGE_SIZE,
	};
}

int bs_framing_check(const bs_framing_t *f)
{
	if (f == NULL || f->max_message_size > MAX_MESSAGE_SIZE_LIMIT)
		return BS_EINVAL;
	switch (f->kind) {
	case BS_FRAMING_FIXED:
		return f->width >= 1 && f->width <= 8 ? 0 : BS_EINVAL;
	case BS_FRAMING_VARINT:
	case BS_FRAMING_BUFFSTREAMS:
	case BS_FRAMING_DELIM:
		/* Fields of the other framings are ignored, not judged. */
		return 0;
	default:
		return BS_EINVAL;
	}
}

int bs_frame_decode(const bs_framing_t *f, const void *buf, size_t len,
		    bs_frame_t *out)
{
	const uint8_t *p = buf;

	if (out == NULL)
		return BS_EINVAL;
	*out = (bs_frame_t){ 0 };
	if (bs_framing_check(f) != 0 || (buf == NULL && len != 0))
		return BS_EINVAL;
	return frame_decode_any(f, p, len, out);
}

int frame_decode_any(const bs_framing_t *f, const uint8_t *p, size_t len, bs_frame_t *out)
{
	size_t max = effective_max(f);

	*out = (bs_frame_t){ 0 };
	switch (f->kind) {
	case BS_FRAMING_FIXED:
		return decode_fixed(f, max, p, len, out);
	case BS_FRAMING_VARINT:
		return decode_varint(max, p, len, out);
	case BS_FRAMING_BUFFSTREAMS:
		return decode_buffstreams(max, p, len, out);
	case BS_FRAMING_DELIM:
		return decode_delim(f, max, p, len, out);
	}
	return BS_EINVAL;
}

/*
 * Whether a payload of len bytes can be framed at all: within the maximum,
 * and within what the header can express (a narrow fixed width; a
 * BuffStreams header, whose width follows from max but whose capacity
 * falls short of max when max is above 2^62).
 */
static int check_size(const bs_framing_t *f, size_t len)
{
	size_t max = effective_max(f);

	if (len > max)
		return BS_EMSGSIZE;
	if (f->kind == BS_FRAMING_FIXED && f->width < 8 &&
	    (uint64_t)len >> (8 * f->width) != 0)
		return BS_EMSGSIZE;
	if (f->kind == BS_FRAMING_BUFFSTREAMS &&
	    (uint64_t)len > buffstreams_capacity(buffstreams_header_len(max)))
		return BS_EMSGSIZE;
	return 0;
}

int bs_frame_encode(const bs_framing_t *f, size_t len,
		    uint8_t hdr[BS_FRAME_HEADER_MAX], size_t *trailer_len)
{
	if (hdr == NULL || bs_framing_check(f) != 0)
		return BS_EINVAL;
	/* A delimited frame without its trailer would run into the next. */
	if (f->kind == BS_FRAMING_DELIM && trailer_len == NULL)
		return BS_EINVAL;
	return frame_encode_any(f, len, hdr, trailer_len);
}

int frame_encode_any(const bs_framing_t *f, size_t len, uint8_t hdr[BS_FRAME_HEADER_MAX],
		     size_t *trailer_len)
{
	size_t n = 0;
	int r = check_size(f, len);

	if (r != 0)
		return r;

	switch (f->kind) {
	case BS_FRAMING_FIXED:
		n = f->width;
		for (size_t i = 0; i < n; i++) {
			uint8_t b = (uint8_t)((uint64_t)len >> (8 * i));

			hdr[f->little_endian ? i : n - 1 - i] = b;
		}
		break;
	case BS_FRAMING_VARINT:
		n = uvarint_write(hdr, len);
		break;
	case BS_FRAMING_BUFFSTREAMS:
		/* Zig-zag of a length >= 0 is twice it; pad with zeros. */
		n = buffstreams_header_len(effective_max(f));
		memset(hdr, 0, n);
		uvarint_write(hdr, (uint64_t)len << 1);
		break;
	case BS_FRAMING_DELIM:
		break;
	}
	if (trailer_len != NULL)
		*trailer_len = f->kind == BS_FRAMING_DELIM ? 1 : 0;
	return (int)n;
}

int bs_frame_check_payload(const bs_framing_t *f, const void *payload,
			   size_t len)
{
	int r;

	if (bs_framing_check(f) != 0 || (payload == NULL && len != 0))
		return BS_EINVAL;
	r = check_size(f, len);
	if (r != 0)
		return r;
	if (f->kind == BS_FRAMING_DELIM && len != 0 &&
	    memchr(payload, f->delim, len) != NULL)
		return BS_EPROTO;
	return 0;
}
