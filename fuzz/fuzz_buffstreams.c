/*
 * Fuzz target: BS_FRAMING_BUFFSTREAMS (Go BuffStreams v2). Input byte 0
 * picks max (low 4 bits); the rest is the stream.
 */
#include "fuzz.h"

/* H = ceil(bits(max) / 8) + 1, computed here independently of the codec. */
static size_t header_width(const bs_framing_t *f)
{
	size_t max = f->max_message_size ? f->max_message_size
					 : FUZZ_DEFAULT_MAX;
	size_t bits = 0;

	for (; max != 0; max >>= 1)
		bits++;
	return (bits + 7) / 8 + 1;
}

/*
 * The reader accepts what Go's does — a non-minimal varint, bytes after the
 * varint that are not zero — but the writer emits one form only: so the
 * header re-encodes byte for byte exactly when it was in that form, and
 * always to the same length.
 */
static void check_buffstreams(const bs_framing_t *f, const uint8_t *frame,
			      const bs_frame_t *fr)
{
	size_t h = header_width(f), end = 0;
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	bs_frame_t back;
	bool canonical;

	FUZZ_ASSERT(fr->header_len == h && fr->trailer_len == 0);
	while (frame[end] & 0x80)
		end++; /* a frame was found, so the varint ends inside h */
	FUZZ_ASSERT(end < h);
	canonical = end == 0 || frame[end] != 0;
	for (size_t i = end + 1; i < h; i++)
		canonical = canonical && frame[i] == 0;

	FUZZ_ASSERT(bs_frame_encode(f, fr->payload_len, hdr, NULL) == (int)h);
	FUZZ_ASSERT((memcmp(hdr, frame, h) == 0) == canonical);
	FUZZ_ASSERT(fuzz_decode_prefix(f, hdr, h, &back) ==
		    (fr->payload_len == 0 ? 1 : 0));
	FUZZ_ASSERT(fuzz_same(&back, fr));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bs_framing_t f;

	if (size < 1)
		return 0;
	bs_framing_default(&f);
	f.kind = BS_FRAMING_BUFFSTREAMS;
	f.max_message_size = fuzz_maxes[data[0] & 15];
	fuzz_run(&f, data + 1, size - 1, check_buffstreams);
	return 0;
}
