/*
 * Fuzz target: BS_FRAMING_VARINT (protobuf length-delimited). Input byte 0
 * picks max (low 4 bits); the rest is the stream.
 */
#include "fuzz.h"

/* Only minimal varints are accepted, so re-encoding the length must give
 * back the very header bytes that were read. */
static void check_varint(const bs_framing_t *f, const uint8_t *frame,
			 const bs_frame_t *fr)
{
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	int h = bs_frame_encode(f, fr->payload_len, hdr, NULL);

	FUZZ_ASSERT(fr->header_len >= 1 && fr->header_len <= 10);
	FUZZ_ASSERT(fr->trailer_len == 0);
	FUZZ_ASSERT(h >= 1 && (size_t)h == fr->header_len);
	FUZZ_ASSERT(memcmp(hdr, frame, fr->header_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bs_framing_t f;

	if (size < 1)
		return 0;
	bs_framing_default(&f);
	f.kind = BS_FRAMING_VARINT;
	f.max_message_size = fuzz_maxes[data[0] & 15];
	fuzz_run(&f, data + 1, size - 1, check_varint);
	return 0;
}
