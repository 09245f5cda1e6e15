/*
 * Fuzz target: BS_FRAMING_DELIM. Input byte 0 picks the framing (bit 0:
 * keep_delim, bits 1-4: max), byte 1 is the delimiter; the rest is the
 * stream.
 */
#include "fuzz.h"

/* A frame ends at the first delimiter, which is in the payload only when
 * kept. */
static void check_delim(const bs_framing_t *f, const uint8_t *frame,
			const bs_frame_t *fr)
{
	size_t content = fr->payload_len - (f->keep_delim ? 1 : 0);
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	size_t tl = 0;

	FUZZ_ASSERT(fr->header_len == 0);
	FUZZ_ASSERT(fr->trailer_len == (f->keep_delim ? 0u : 1u));
	FUZZ_ASSERT(frame[content] == f->delim);
	FUZZ_ASSERT(memchr(frame, f->delim, content) == NULL);
	FUZZ_ASSERT(bs_frame_encode(f, content, hdr, &tl) == 0 && tl == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bs_framing_t f;

	if (size < 2)
		return 0;
	bs_framing_default(&f);
	f.kind = BS_FRAMING_DELIM;
	f.keep_delim = (data[0] & 1) != 0;
	f.max_message_size = fuzz_maxes[(data[0] >> 1) & 15];
	f.delim = data[1];
	fuzz_run(&f, data + 2, size - 2, check_delim);
	return 0;
}
