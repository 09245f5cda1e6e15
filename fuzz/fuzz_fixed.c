/*
 * Fuzz target: BS_FRAMING_FIXED. Input byte 0 picks the framing (bits 0-2:
 * width - 1, bit 3: little-endian, bits 4-7: max); the rest is the stream.
 */
#include "fuzz.h"

/* One encoding per length: the header read is the header written. */
static void check_fixed(const bs_framing_t *f, const uint8_t *frame,
			const bs_frame_t *fr)
{
	uint8_t hdr[BS_FRAME_HEADER_MAX];

	FUZZ_ASSERT(fr->header_len == f->width && fr->trailer_len == 0);
	FUZZ_ASSERT(bs_frame_encode(f, fr->payload_len, hdr, NULL) == f->width);
	FUZZ_ASSERT(memcmp(hdr, frame, f->width) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bs_framing_t f;

	if (size < 1)
		return 0;
	bs_framing_default(&f);
	f.width = (uint8_t)((data[0] & 7) + 1);
	f.little_endian = (data[0] & 8) != 0;
	f.max_message_size = fuzz_maxes[data[0] >> 4];
	fuzz_run(&f, data + 1, size - 1, check_fixed);
	return 0;
}
