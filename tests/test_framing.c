/*
 * Frame codecs: wire vectors captured from other implementations, every
 * split point of every stream, input flush against an unreadable page,
 * and the boundaries of each header format.
 *
 * The vectors are in tests/vectors (see its README), read from the
 * repository root. Not finding them is a failure, not a skip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "buffstreams.h"

#define MIB ((size_t)1 << 20)
#define DEFAULT_MAX (8 * MIB)
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ----------------------------------------------------------- */

static bs_framing_t fixed(unsigned width, bool little_endian, size_t max)
{
	bs_framing_t f;

	bs_framing_default(&f);
	f.width = (uint8_t)width;
	f.little_endian = little_endian;
	f.max_message_size = max;
	return f;
}

static bs_framing_t kind_max(bs_framing_kind_t kind, size_t max)
{
	bs_framing_t f;

	bs_framing_default(&f);
	f.kind = kind;
	f.max_message_size = max;
	return f;
}

static bs_framing_t delim(uint8_t d, bool keep, size_t max)
{
	bs_framing_t f = kind_max(BS_FRAMING_DELIM, max);

	f.delim = d;
	f.keep_delim = keep;
	return f;
}

static size_t hex_parse(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (hex[0] != '\0' && hex[1] != '\0') {
		unsigned b;

		assert_int_equal(sscanf(hex, "%2x", &b), 1);
		assert_true(n < cap);
		out[n++] = (uint8_t)b;
		hex += 2;
	}
	assert_int_equal(hex[0], '\0');
	return n;
}

/* An independent reference for the varint tests: unsigned LEB128. */
static size_t ref_uvarint(uint64_t v, uint8_t *out)
{
	size_t n = 0;

	do {
		out[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v != 0)
			out[n] |= 0x80;
		n++;
	} while (v != 0);
	return n;
}

static void fill_alpha(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)('a' + i % 26);
}

static bool is_alpha_pattern(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (uint8_t)('a' + i % 26))
			return false;
	return true;
}

static void assert_frame(const bs_frame_t *fr, size_t header, size_t payload,
			 size_t trailer)
{
	assert_int_equal(fr->header_len, header);
	assert_int_equal(fr->payload_len, payload);
	assert_int_equal(fr->trailer_len, trailer);
}

/* ---- vectors on disk --------------------------------------------------- */

/* Where the vectors are, relative to the repository root (make test runs
 * the programs from there and passes the path). */
#ifndef BS_TEST_VECTORS
#define BS_TEST_VECTORS "tests/vectors"
#endif

/* The vectors directory, or a failed test. */
static const char *vectors_dir(void)
{
	static const char dir[] = BS_TEST_VECTORS;
	char path[PATH_MAX], cwd[PATH_MAX];

	snprintf(path, sizeof(path), "%s/README.md", dir);
	if (access(path, R_OK) != 0)
		fail_msg("wire test vectors not found: no %s in %s (run the tests "
			 "from the repository root, as make test does)",
			 path, getcwd(cwd, sizeof(cwd)) ? cwd : "?");
	return dir;
}

static uint8_t *read_vector(const char *name, size_t *len)
{
	char path[PATH_MAX];
	FILE *fp;
	long size;
	uint8_t *buf;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", vectors_dir(),
			     name) >= sizeof(path))
		fail_msg("vector path too long: %s", name);
	fp = fopen(path, "rb");
	if (fp == NULL)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	size = ftell(fp);
	assert_true(size >= 0);
	rewind(fp);
	buf = malloc((size_t)size + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)size, fp), (size_t)size);
	fclose(fp);
	buf[size] = '\0';
	*len = (size_t)size;
	return buf;
}

/* ---- guard page: input that ends where readable memory ends ------------ */

typedef struct guard {
	uint8_t *base;
	size_t map_len;
	uint8_t *end; /* first byte of the PROT_NONE page */
} guard_t;

static guard_t guard_new(size_t cap)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t data = (cap + page - 1) / page * page;
	guard_t g;

	if (data == 0)
		data = page;
	g.map_len = data + page;
	g.base = mmap(NULL, g.map_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g.base != MAP_FAILED);
	g.end = g.base + data;
	assert_int_equal(mprotect(g.end, page, PROT_NONE), 0);
	return g;
}

static void guard_free(guard_t *g)
{
	munmap(g->base, g->map_len);
}

/* Copies p[0..n) so that its last byte is the last readable one. */
static const uint8_t *guard_put(guard_t *g, const void *p, size_t n)
{
	assert_true(n <= (size_t)(g->end - g->base));
	if (n != 0)
		memcpy(g->end - n, p, n);
	return g->end - n;
}

/*
 * Every prefix of one frame, each placed flush against the guard page:
 * a proper prefix needs more bytes, with the size known exactly from the
 * moment the header is complete (never, for DELIM, before the delimiter);
 * the whole frame decodes to exactly (header, payload, trailer).
 */
static void check_prefixes(const bs_framing_t *f, const uint8_t *frame,
			   size_t header, size_t payload, size_t trailer,
			   guard_t *g)
{
	size_t total = header + payload + trailer;
	size_t known = f->kind == BS_FRAMING_DELIM ? total : header;
	bs_frame_t fr;

	for (size_t p = 0; p < total; p++) {
		const uint8_t *q = guard_put(g, frame, p);

		assert_int_equal(bs_frame_decode(f, q, p, &fr), 0);
		if (p < known)
			assert_frame(&fr, 0, 0, 0);
		else
			assert_frame(&fr, header, payload, trailer);
	}
	assert_int_equal(bs_frame_decode(f, guard_put(g, frame, total), total,
					 &fr), 1);
	assert_frame(&fr, header, payload, trailer);
}

/* Every prefix of malformed input, flush against the guard page: need more
 * (size unknown) until exactly `bad_at` bytes are present, then `err`. */
static void check_bad_prefixes(const bs_framing_t *f, const uint8_t *in,
			       size_t n, size_t bad_at, int err, guard_t *g)
{
	bs_frame_t fr;

	for (size_t p = 0; p <= n; p++) {
		int r = bs_frame_decode(f, guard_put(g, in, p), p, &fr);

		if (p < bad_at) {
			assert_int_equal(r, 0);
			assert_frame(&fr, 0, 0, 0);
		} else {
			assert_int_equal(r, err);
		}
	}
}

/* ---- streams cut anywhere ---------------------------------------------- */

typedef struct expect {
	size_t off, header, payload, trailer;
} expect_t;

/*
 * Decodes s[0..n) as a receiver would that is given the bytes in pieces
 * ending at cuts[0..ncuts) and then the rest: whatever the cuts, exactly
 * the frames exp[0..count) come out, each at its offset. A result of 0
 * must agree with the frame that eventually arrives.
 */
static void check_cuts(const bs_framing_t *f, const uint8_t *s, size_t n,
		       const size_t *cuts, size_t ncuts, const expect_t *exp,
		       size_t count)
{
	size_t pos = 0, avail = 0, k = 0, c = 0;
	bs_frame_t fr;

	for (;;) {
		int r = bs_frame_decode(f, s + pos, avail - pos, &fr);

		if (r == 1) {
			assert_true(k < count);
			assert_int_equal(pos, exp[k].off);
			assert_frame(&fr, exp[k].header, exp[k].payload,
				     exp[k].trailer);
			pos += fr.header_len + fr.payload_len + fr.trailer_len;
			k++;
			continue;
		}
		assert_int_equal(r, 0);
		if (fr.header_len != 0) {
			assert_true(k < count);
			assert_frame(&fr, exp[k].header, exp[k].payload,
				     exp[k].trailer);
		}
		if (avail == n)
			break;
		avail = c < ncuts ? cuts[c++] : n;
		assert_true(avail >= pos && avail <= n);
	}
	assert_int_equal(k, count);
	assert_int_equal(pos, n);
}

/* The stream given whole, in two pieces split at every point, and byte by
 * byte for short streams; and every frame's prefixes against the guard. */
static void check_all_splits(const bs_framing_t *f, const uint8_t *s, size_t n,
			     const expect_t *exp, size_t count, guard_t *g)
{
	check_cuts(f, s, n, NULL, 0, exp, count);
	for (size_t cut = 0; cut <= n; cut++)
		check_cuts(f, s, n, &cut, 1, exp, count);
	if (n <= 4096) {
		size_t *cuts = malloc((n + 1) * sizeof(*cuts));

		assert_non_null(cuts);
		for (size_t i = 0; i <= n; i++)
			cuts[i] = i;
		check_cuts(f, s, n, cuts, n + 1, exp, count);
		free(cuts);
	}
	for (size_t k = 0; k < count; k++)
		check_prefixes(f, s + exp[k].off, exp[k].header,
			       exp[k].payload, exp[k].trailer, g);
}

/* ---- configuration ----------------------------------------------------- */

static void test_default_and_check(void **state)
{
	bs_framing_t f;

	(void)state;
	memset(&f, 0xa5, sizeof(f));
	bs_framing_default(&f);
	assert_int_equal(f.kind, BS_FRAMING_FIXED);
	assert_int_equal(f.width, 4);
	assert_false(f.little_endian);
	assert_int_equal(f.max_message_size, DEFAULT_MAX);
	assert_false(f.keep_delim);
	assert_int_equal(bs_framing_check(&f), 0);

	assert_int_equal(bs_framing_check(NULL), BS_EINVAL);
	for (unsigned w = 0; w <= 9; w++) {
		f = fixed(w, false, 0);
		assert_int_equal(bs_framing_check(&f),
				 w >= 1 && w <= 8 ? 0 : BS_EINVAL);
	}
	f = kind_max((bs_framing_kind_t)4, 0);
	assert_int_equal(bs_framing_check(&f), BS_EINVAL);
	f = kind_max((bs_framing_kind_t)-1, 0);
	assert_int_equal(bs_framing_check(&f), BS_EINVAL);

	/* The width only matters to FIXED. */
	f = kind_max(BS_FRAMING_VARINT, 0);
	f.width = 0;
	assert_int_equal(bs_framing_check(&f), 0);

	/* A max whose frames could not be sized in a size_t is refused. */
	f = kind_max(BS_FRAMING_VARINT, SIZE_MAX);
	assert_int_equal(bs_framing_check(&f), BS_EINVAL);
	f = kind_max(BS_FRAMING_VARINT, SIZE_MAX / 2);
	assert_int_equal(bs_framing_check(&f), 0);
}

static void test_bad_arguments(void **state)
{
	bs_framing_t f = fixed(4, false, 0), bad = fixed(9, false, 0);
	uint8_t hdr[BS_FRAME_HEADER_MAX], in[8] = { 0, 0, 0, 1, 'x' };
	bs_frame_t fr;
	size_t tl = 7;

	(void)state;
	assert_int_equal(bs_frame_decode(NULL, in, 5, &fr), BS_EINVAL);
	assert_int_equal(bs_frame_decode(&f, in, 5, NULL), BS_EINVAL);
	assert_int_equal(bs_frame_decode(&f, NULL, 5, &fr), BS_EINVAL);
	memset(&fr, 0xff, sizeof(fr));
	assert_int_equal(bs_frame_decode(&bad, in, 5, &fr), BS_EINVAL);
	assert_frame(&fr, 0, 0, 0);
	/* Nothing yet is not an error, for any codec. */
	assert_int_equal(bs_frame_decode(&f, NULL, 0, &fr), 0);
	assert_frame(&fr, 0, 0, 0);
	f = delim('\n', false, 0);
	assert_int_equal(bs_frame_decode(&f, NULL, 0, &fr), 0);
	assert_frame(&fr, 0, 0, 0);

	assert_int_equal(bs_frame_encode(NULL, 1, hdr, &tl), BS_EINVAL);
	assert_int_equal(bs_frame_encode(&bad, 1, hdr, &tl), BS_EINVAL);
	assert_int_equal(bs_frame_encode(&bad, 1, NULL, &tl), BS_EINVAL);
	/* A delimited frame needs its trailer reported. */
	assert_int_equal(bs_frame_encode(&f, 1, hdr, NULL), BS_EINVAL);
	/* A failed call leaves *trailer_len alone. */
	f = fixed(1, false, 0);
	assert_int_equal(bs_frame_encode(&f, 256, hdr, &tl), BS_EMSGSIZE);
	assert_int_equal(tl, 7);

	assert_int_equal(bs_frame_check_payload(NULL, in, 1), BS_EINVAL);
	assert_int_equal(bs_frame_check_payload(&bad, in, 1), BS_EINVAL);
	assert_int_equal(bs_frame_check_payload(&f, NULL, 1), BS_EINVAL);
	assert_int_equal(bs_frame_check_payload(&f, NULL, 0), 0);
}

/* ---- Go BuffStreams v2 vectors ----------------------------------------- */

static const struct bs_vector {
	const char *file;
	size_t max, payload;
	const char *header;
} bs_vectors[] = {
	{ "buffstreams/max4096_len110.bin", 4096, 110, "dc0100" },
	{ "buffstreams/max2048_len110.bin", 2048, 110, "dc0100" },
	{ "buffstreams/max255_len110.bin", 255, 110, "dc01" },
	{ "buffstreams/max256_len0.bin", 256, 0, "000000" },
	{ "buffstreams/max65536_len200.bin", 65536, 200, "90030000" },
};

static void test_buffstreams_vectors(void **state)
{
	(void)state;
	for (size_t v = 0; v < ARRAY_LEN(bs_vectors); v++) {
		const struct bs_vector *vec = &bs_vectors[v];
		bs_framing_t f = kind_max(BS_FRAMING_BUFFSTREAMS, vec->max);
		uint8_t want[BS_FRAME_HEADER_MAX], hdr[BS_FRAME_HEADER_MAX];
		size_t h = hex_parse(vec->header, want, sizeof(want));
		size_t len, tl = 9;
		uint8_t *file = read_vector(vec->file, &len);
		bs_frame_t fr;

		assert_int_equal(len, h + vec->payload);
		assert_memory_equal(file, want, h);
		assert_int_equal(bs_frame_decode(&f, file, len, &fr), 1);
		assert_frame(&fr, h, vec->payload, 0);
		assert_true(is_alpha_pattern(file + h, vec->payload));

		assert_int_equal(bs_frame_check_payload(&f, file + h,
							vec->payload), 0);
		assert_int_equal(bs_frame_encode(&f, vec->payload, hdr, &tl),
				 (int)h);
		assert_int_equal(tl, 0);
		assert_memory_equal(hdr, file, h);
		free(file);
	}
}

/* Only the header width must agree: 2048 and 4096 both use 3 bytes. */
static void test_buffstreams_interop(void **state)
{
	bs_framing_t f2048 = kind_max(BS_FRAMING_BUFFSTREAMS, 2048);
	bs_framing_t f4096 = kind_max(BS_FRAMING_BUFFSTREAMS, 4096);
	size_t len2048, len4096;
	uint8_t *a = read_vector("buffstreams/max2048_len110.bin", &len2048);
	uint8_t *b = read_vector("buffstreams/max4096_len110.bin", &len4096);
	bs_frame_t fr;

	(void)state;
	assert_int_equal(len2048, len4096);
	assert_memory_equal(a, b, len2048);
	assert_int_equal(bs_frame_decode(&f4096, a, len2048, &fr), 1);
	assert_frame(&fr, 3, 110, 0);
	assert_int_equal(bs_frame_decode(&f2048, b, len4096, &fr), 1);
	assert_frame(&fr, 3, 110, 0);
	free(a);
	free(b);
}

/* ---- protobuf writeDelimitedTo stream ---------------------------------- */

#define PB_MESSAGES 11

typedef struct pb_entry {
	size_t size, header_len, head_len;
	uint8_t header[BS_FRAME_HEADER_MAX], head[32];
} pb_entry_t;

/* Parses stream.txt: "index size header=HEX payload_head=HEX". */
static size_t pb_load_index(pb_entry_t *e, size_t cap)
{
	size_t len, count = 0;
	char *txt = (char *)read_vector("protobuf-delimited/stream.txt", &len);
	char *save = NULL;

	for (char *line = strtok_r(txt, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char hhex[64] = "", phex[128] = "";
		size_t idx;
		int got;

		if (line[0] == '#' || line[0] == '\0')
			continue;
		got = sscanf(line,
			     "%zu %zu header=%63[0-9a-f] payload_head=%127[0-9a-f]",
			     &idx, &e[count].size, hhex, phex);
		assert_true(got == 3 || got == 4);
		assert_int_equal(idx, count);
		assert_true(count < cap);
		e[count].header_len = hex_parse(hhex, e[count].header,
						sizeof(e[count].header));
		e[count].head_len = hex_parse(phex, e[count].head,
					      sizeof(e[count].head));
		count++;
	}
	free(txt);
	return count;
}

/* Each message is a BytesValue{value = 'a' + i % 26 ...}: 0x0a, the value's
 * length as a varint, the value. */
static void pb_check_message(const uint8_t *m, size_t size)
{
	uint8_t want[BS_FRAME_HEADER_MAX];
	size_t vlen, n;

	if (size == 0)
		return;
	assert_int_equal(m[0], 0x0a);
	for (n = 1; n < size && (m[n] & 0x80); n++)
		;
	assert_true(n < size);
	vlen = 0;
	for (size_t i = n + 1; i-- > 1;)
		vlen = vlen << 7 | (m[i] & 0x7f);
	assert_int_equal(1 + ref_uvarint(vlen, want), n + 1);
	assert_memory_equal(m + 1, want, n);
	assert_int_equal(n + 1 + vlen, size);
	assert_true(is_alpha_pattern(m + n + 1, vlen));
}

static void test_protobuf_stream(void **state)
{
	pb_entry_t e[PB_MESSAGES + 1];
	bs_framing_t f = kind_max(BS_FRAMING_VARINT, 0);
	size_t count = pb_load_index(e, ARRAY_LEN(e)), len, pos = 0, out = 0;
	uint8_t *s = read_vector("protobuf-delimited/stream.bin", &len);
	uint8_t *re = malloc(len);
	bs_frame_t fr;

	(void)state;
	assert_non_null(re);
	assert_int_equal(count, PB_MESSAGES);
	for (size_t k = 0; k < count; k++) {
		uint8_t hdr[BS_FRAME_HEADER_MAX];
		size_t tl = 5;
		int h;

		assert_int_equal(bs_frame_decode(&f, s + pos, len - pos, &fr),
				 1);
		assert_frame(&fr, e[k].header_len, e[k].size, 0);
		assert_memory_equal(s + pos, e[k].header, e[k].header_len);
		assert_true(e[k].head_len <= e[k].size);
		assert_memory_equal(s + pos + fr.header_len, e[k].head,
				    e[k].head_len);
		pb_check_message(s + pos + fr.header_len, fr.payload_len);

		/* Re-encoded header + payload must rebuild the file. */
		h = bs_frame_encode(&f, e[k].size, hdr, &tl);
		assert_int_equal(h, (int)e[k].header_len);
		assert_int_equal(tl, 0);
		memcpy(re + out, hdr, (size_t)h);
		memcpy(re + out + (size_t)h, s + pos + fr.header_len,
		       e[k].size);
		out += (size_t)h + e[k].size;
		pos += fr.header_len + fr.payload_len;
	}
	assert_int_equal(pos, len);
	assert_int_equal(out, len);
	assert_memory_equal(re, s, len);
	assert_int_equal(bs_frame_decode(&f, s + pos, 0, &fr), 0);
	free(re);
	free(s);
}

/* ---- every split point of every vector --------------------------------- */

static void test_vector_splits(void **state)
{
	pb_entry_t e[PB_MESSAGES + 1];
	expect_t exp[PB_MESSAGES + 1];
	bs_framing_t f = kind_max(BS_FRAMING_VARINT, 0);
	size_t count = pb_load_index(e, ARRAY_LEN(e)), len, off = 0;
	uint8_t *s = read_vector("protobuf-delimited/stream.bin", &len);
	guard_t g = guard_new(len);

	(void)state;
	for (size_t k = 0; k < count; k++) {
		exp[k] = (expect_t){ off, e[k].header_len, e[k].size, 0 };
		off += e[k].header_len + e[k].size;
	}
	assert_int_equal(off, len);
	check_all_splits(&f, s, len, exp, count, &g);
	free(s);

	for (size_t v = 0; v < ARRAY_LEN(bs_vectors); v++) {
		const struct bs_vector *vec = &bs_vectors[v];
		uint8_t hdr[BS_FRAME_HEADER_MAX];
		size_t h = hex_parse(vec->header, hdr, sizeof(hdr));
		expect_t one = { 0, h, vec->payload, 0 };

		f = kind_max(BS_FRAMING_BUFFSTREAMS, vec->max);
		s = read_vector(vec->file, &len);
		check_all_splits(&f, s, len, &one, 1, &g);
		free(s);
	}
	guard_free(&g);
}

/* ---- FIXED ------------------------------------------------------------- */

static void test_fixed_widths(void **state)
{
	/* Large enough that only the width limits the length. */
	const size_t big = SIZE_MAX / 2;
	guard_t g = guard_new(4096);

	(void)state;
	for (unsigned w = 1; w <= 8; w++) {
		for (int le = 0; le <= 1; le++) {
			bs_framing_t f = fixed(w, le, big);
			uint8_t hdr[BS_FRAME_HEADER_MAX], want[8];
			uint64_t v = UINT64_C(0x0102030405060708);
			size_t tl = 3;
			bs_frame_t fr;
			int h, r;

			/* 0x0102..08 cut to w bytes: bytes 9-w .. 8. */
			if (w < 8)
				v &= (UINT64_C(1) << (8 * w)) - 1;
			for (unsigned i = 0; i < w; i++)
				want[i] = (uint8_t)(le ? 8 - i : 9 - w + i);
			h = bs_frame_encode(&f, (size_t)v, hdr, &tl);
			assert_int_equal(h, (int)w);
			assert_int_equal(tl, 0);
			assert_memory_equal(hdr, want, w);
			assert_int_equal(bs_frame_decode(&f, want, w, &fr), 0);
			assert_frame(&fr, w, (size_t)v, 0);

			/* The largest length the width holds, and one more. */
			if (w < sizeof(size_t)) {
				size_t top = ((size_t)1 << (8 * w)) - 1;

				h = bs_frame_encode(&f, top, hdr, NULL);
				assert_int_equal(h, (int)w);
				for (unsigned i = 0; i < w; i++)
					assert_int_equal(hdr[i], 0xff);
				r = bs_frame_decode(&f, hdr, w, &fr);
				assert_int_equal(r, 0);
				assert_frame(&fr, w, top, 0);
				h = bs_frame_encode(&f, top + 1, hdr, NULL);
				assert_int_equal(h, BS_EMSGSIZE);
				r = bs_frame_check_payload(&f, "", top + 1);
				assert_int_equal(r, BS_EMSGSIZE);
			} else {
				memset(want, 0xff, 8);
				r = bs_frame_decode(&f, want, 8, &fr);
				assert_int_equal(r, BS_EMSGSIZE);
			}

			/* Whole frames, every prefix against the guard. */
			for (size_t n = 0; n <= 300; n += 150) {
				uint8_t frame[BS_FRAME_HEADER_MAX + 300];

				if (w == 1 && n > 255)
					continue;
				h = bs_frame_encode(&f, n, frame, NULL);
				assert_int_equal(h, (int)w);
				fill_alpha(frame + h, n);
				check_prefixes(&f, frame, w, n, 0, &g);
			}
		}
	}
	guard_free(&g);
}

static void test_fixed_max(void **state)
{
	bs_framing_t f = fixed(4, false, 1000);
	uint8_t at_max[] = { 0, 0, 0x03, 0xe8 }, over[] = { 0, 0, 0x03, 0xe9 };
	uint8_t le_over[] = { 0xe9, 0x03, 0, 0 }, hdr[BS_FRAME_HEADER_MAX];
	guard_t g = guard_new(64);
	bs_frame_t fr;

	(void)state;
	assert_int_equal(bs_frame_decode(&f, at_max, 4, &fr), 0);
	assert_frame(&fr, 4, 1000, 0);
	check_bad_prefixes(&f, over, 4, 4, BS_EMSGSIZE, &g);
	f.little_endian = true;
	check_bad_prefixes(&f, le_over, 4, 4, BS_EMSGSIZE, &g);
	assert_int_equal(bs_frame_encode(&f, 1000, hdr, NULL), 4);
	assert_int_equal(bs_frame_encode(&f, 1001, hdr, NULL), BS_EMSGSIZE);

	/* The 8 MiB default. */
	f = fixed(4, false, 0);
	assert_int_equal(bs_frame_encode(&f, DEFAULT_MAX, hdr, NULL), 4);
	assert_int_equal(bs_frame_decode(&f, hdr, 4, &fr), 0);
	assert_frame(&fr, 4, DEFAULT_MAX, 0);
	assert_int_equal(bs_frame_encode(&f, DEFAULT_MAX + 1, hdr, NULL),
			 BS_EMSGSIZE);
	hdr[3] = 0x01; /* 0x00800001 */
	assert_int_equal(bs_frame_decode(&f, hdr, 4, &fr), BS_EMSGSIZE);
	guard_free(&g);
}

/* ---- VARINT ------------------------------------------------------------ */

static void check_varint_value(const bs_framing_t *f, uint64_t v, guard_t *g)
{
	uint8_t want[BS_FRAME_HEADER_MAX], hdr[BS_FRAME_HEADER_MAX];
	size_t n = ref_uvarint(v, want);
	bs_frame_t fr;

	assert_int_equal(bs_frame_encode(f, (size_t)v, hdr, NULL), (int)n);
	assert_memory_equal(hdr, want, n);
	/* The header alone: size known, or the whole frame when v is 0. */
	for (size_t p = 0; p <= n; p++) {
		int r = bs_frame_decode(f, guard_put(g, want, p), p, &fr);

		if (p < n) {
			assert_int_equal(r, 0);
			assert_frame(&fr, 0, 0, 0);
		} else {
			assert_int_equal(r, v == 0 ? 1 : 0);
			assert_frame(&fr, n, (size_t)v, 0);
		}
	}
}

static void test_varint_widths(void **state)
{
	static const struct {
		uint64_t v;
		const char *hex;
	} known[] = {
		{ 0, "00" }, { 1, "01" }, { 127, "7f" }, { 128, "8001" },
		{ 300, "ac02" }, { 16383, "ff7f" }, { 16384, "808001" },
		{ 2097151, "ffff7f" }, { 2097152, "80808001" },
		{ 70004, "f4a204" },
	};
	bs_framing_t f = kind_max(BS_FRAMING_VARINT, SIZE_MAX / 2 + 1);
	guard_t g = guard_new(64);

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(known); i++) {
		uint8_t want[BS_FRAME_HEADER_MAX], hdr[BS_FRAME_HEADER_MAX];
		size_t n = hex_parse(known[i].hex, want, sizeof(want));

		int h = bs_frame_encode(&f, (size_t)known[i].v, hdr, NULL);

		assert_int_equal(h, (int)n);
		assert_memory_equal(hdr, want, n);
		check_varint_value(&f, known[i].v, &g);
	}
	/* Each width's last and first value: 2^7k - 1 (k bytes) and 2^7k. */
	for (unsigned k = 1; k <= 9; k++) {
		uint64_t edge = UINT64_C(1) << (7 * k);
		uint8_t hdr[BS_FRAME_HEADER_MAX];
		int h;

		if ((uint64_t)SIZE_MAX < edge)
			break;
		check_varint_value(&f, edge - 1, &g);
		h = bs_frame_encode(&f, (size_t)(edge - 1), hdr, NULL);
		assert_int_equal(h, (int)k);
		assert_int_equal(hdr[k - 1], 0x7f);
		if (edge > f.max_message_size)
			break;
		check_varint_value(&f, edge, &g);
		assert_int_equal(bs_frame_encode(&f, (size_t)edge, hdr, NULL),
				 (int)k + 1);
		assert_int_equal(hdr[k], 0x01);
	}
	guard_free(&g);
}

static void test_varint_max(void **state)
{
	bs_framing_t f = kind_max(BS_FRAMING_VARINT, 300);
	uint8_t hdr[BS_FRAME_HEADER_MAX], over[] = { 0xad, 0x02 };
	uint8_t top[] = { 0xff, 0xff, 0xff, 0xff, 0xff,
			  0xff, 0xff, 0xff, 0xff, 0x01 };
	guard_t g = guard_new(64);
	bs_frame_t fr;

	(void)state;
	assert_int_equal(bs_frame_encode(&f, 300, hdr, NULL), 2);
	assert_int_equal(bs_frame_decode(&f, hdr, 2, &fr), 0);
	assert_frame(&fr, 2, 300, 0);
	assert_int_equal(bs_frame_encode(&f, 301, hdr, NULL), BS_EMSGSIZE);
	check_bad_prefixes(&f, over, 2, 2, BS_EMSGSIZE, &g);
	/* 2^64 - 1: a valid varint, longer than any max. */
	check_bad_prefixes(&f, top, 10, 10, BS_EMSGSIZE, &g);

	f = kind_max(BS_FRAMING_VARINT, 0);
	assert_int_equal(bs_frame_encode(&f, DEFAULT_MAX, hdr, NULL), 4);
	assert_int_equal(bs_frame_decode(&f, hdr, 4, &fr), 0);
	assert_frame(&fr, 4, DEFAULT_MAX, 0);
	assert_int_equal(bs_frame_encode(&f, DEFAULT_MAX + 1, hdr, NULL),
			 BS_EMSGSIZE);
	hdr[0] = 0x81; /* 8 MiB + 1 */
	assert_int_equal(bs_frame_decode(&f, hdr, 4, &fr), BS_EMSGSIZE);
	guard_free(&g);
}

static void test_varint_malformed(void **state)
{
	static const struct {
		const char *hex;
		size_t bad_at;
		int err;
	} bad[] = {
		/* non-minimal: a last byte that adds nothing */
		{ "8000", 2, BS_EPROTO },
		{ "ff00", 2, BS_EPROTO },
		{ "808000", 3, BS_EPROTO },
		{ "ffffffffffffffffff00", 10, BS_EPROTO },
		/* the 10th byte may carry bit 63 only, and must end */
		{ "ffffffffffffffffff02", 10, BS_EPROTO },
		{ "ffffffffffffffffff7f", 10, BS_EPROTO },
		{ "ffffffffffffffffff81", 10, BS_EPROTO },
		{ "ffffffffffffffffff8001", 10, BS_EPROTO },
		/* more than 10 bytes */
		{ "8080808080808080808080", 10, BS_EPROTO },
		{ "ffffffffffffffffffffff01", 10, BS_EPROTO },
		/* 2^63 and 2^64 - 1: well formed, too large for 8 MiB */
		{ "80808080808080808001", 10, BS_EMSGSIZE },
		{ "ffffffffffffffffff01", 10, BS_EMSGSIZE },
	};
	bs_framing_t f = kind_max(BS_FRAMING_VARINT, 0);
	guard_t g = guard_new(64);

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		uint8_t in[16];
		size_t n = hex_parse(bad[i].hex, in, sizeof(in));

		check_bad_prefixes(&f, in, n, bad[i].bad_at, bad[i].err, &g);
	}
	/* Unterminated but short of 10 bytes: wait for more. */
	for (size_t n = 1; n <= 9; n++) {
		uint8_t in[9];
		bs_frame_t fr;
		int r;

		memset(in, 0x80, n);
		r = bs_frame_decode(&f, guard_put(&g, in, n), n, &fr);
		assert_int_equal(r, 0);
		assert_frame(&fr, 0, 0, 0);
	}
	guard_free(&g);
}

/* ---- BUFFSTREAMS ------------------------------------------------------- */

static void test_buffstreams_widths(void **state)
{
	static const struct {
		size_t max, h;
		const char *at_max, *over_max;
	} t[] = {
		{ 1, 2, "0200", "0400" },
		{ 255, 2, "fe03", "8004" },
		{ 256, 3, "800400", "820400" },
		{ 4096, 3, "804000", "824000" },
		{ 65535, 3, "feff07", "808008" },
		{ 65536, 4, "80800800", "82800800" },
		{ 16777215, 4, "feffff0f", "80808010" },
		{ 16777216, 5, "8080801000", "8280801000" },
		{ 0, 4, "80808008", "82808008" }, /* 0 = the 8 MiB default */
		{ DEFAULT_MAX, 4, "80808008", "82808008" },
#if SIZE_MAX > UINT32_MAX
		{ (size_t)UINT32_MAX, 5, "feffffff1f", "8080808020" },
#endif
	};
	guard_t g = guard_new(64);

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		bs_framing_t f = kind_max(BS_FRAMING_BUFFSTREAMS, t[i].max);
		size_t max = t[i].max ? t[i].max : DEFAULT_MAX;
		uint8_t hdr[BS_FRAME_HEADER_MAX], want[BS_FRAME_HEADER_MAX];
		uint8_t over[BS_FRAME_HEADER_MAX];
		size_t n = hex_parse(t[i].at_max, want, sizeof(want));
		size_t on = hex_parse(t[i].over_max, over, sizeof(over));
		size_t tl = 4;
		bs_frame_t fr;
		int h;

		assert_int_equal(n, t[i].h);
		/* Length 0: all zeros, H bytes. */
		memset(hdr, 0xee, sizeof(hdr));
		assert_int_equal(bs_frame_encode(&f, 0, hdr, &tl), (int)t[i].h);
		assert_int_equal(tl, 0);
		for (size_t k = 0; k < t[i].h; k++)
			assert_int_equal(hdr[k], 0);
		assert_int_equal(bs_frame_decode(&f, guard_put(&g, hdr, t[i].h),
						 t[i].h, &fr), 1);
		assert_frame(&fr, t[i].h, 0, 0);

		/* Length max: accepted both ways; max + 1: refused. */
		h = bs_frame_encode(&f, max, hdr, NULL);
		assert_int_equal(h, (int)t[i].h);
		assert_memory_equal(hdr, want, n);
		for (size_t p = 0; p <= n; p++) {
			const uint8_t *q = guard_put(&g, want, p);

			assert_int_equal(bs_frame_decode(&f, q, p, &fr), 0);
			if (p < n)
				assert_frame(&fr, 0, 0, 0);
			else
				assert_frame(&fr, t[i].h, max, 0);
		}
		assert_int_equal(bs_frame_encode(&f, max + 1, hdr, NULL),
				 BS_EMSGSIZE);
		assert_int_equal(bs_frame_check_payload(&f, "", max + 1),
				 BS_EMSGSIZE);
		/* A well-formed header announcing max + 1. */
		assert_int_equal(on, t[i].h);
		check_bad_prefixes(&f, over, on, on, BS_EMSGSIZE, &g);
	}
	guard_free(&g);
}

/* Above 2^62 the header (9 bytes, 63 bits of zig-zag) is narrower than max. */
static void test_buffstreams_capacity(void **state)
{
#if SIZE_MAX >= UINT64_MAX
	bs_framing_t f = kind_max(BS_FRAMING_BUFFSTREAMS, SIZE_MAX / 2 + 1);
	uint8_t hdr[BS_FRAME_HEADER_MAX], want[BS_FRAME_HEADER_MAX];
	size_t top = ((size_t)1 << 62) - 1;
	bs_frame_t fr;

	(void)state;
	assert_int_equal(hex_parse("feffffffffffffff7f", want, 16), 9);
	assert_int_equal(bs_frame_encode(&f, top, hdr, NULL), 9);
	assert_memory_equal(hdr, want, 9);
	assert_int_equal(bs_frame_decode(&f, hdr, 9, &fr), 0);
	assert_frame(&fr, 9, top, 0);
	assert_int_equal(bs_frame_encode(&f, top + 1, hdr, NULL), BS_EMSGSIZE);
	assert_int_equal(bs_frame_check_payload(&f, "", top + 1), BS_EMSGSIZE);
	/* 2^62 would need a 10th varint byte. */
	assert_int_equal(hex_parse("808080808080808080", want, 16), 9);
	assert_int_equal(bs_frame_decode(&f, want, 9, &fr), BS_EPROTO);
#else
	(void)state;
	skip();
#endif
}

static void test_buffstreams_malformed(void **state)
{
	static const struct {
		size_t max;
		const char *hex;
		int err;
	} bad[] = {
		/* negative lengths: odd zig-zag values */
		{ 4096, "010000", BS_EPROTO },   /* -1 */
		{ 4096, "030000", BS_EPROTO },   /* -2 */
		{ 4096, "dd0100", BS_EPROTO },   /* -111 */
		{ 255, "ff7f", BS_EPROTO },      /* -8192 */
		/* varints that do not end inside the H-byte header */
		{ 4096, "808080", BS_EPROTO },
		{ 4096, "ffffff", BS_EPROTO },
		{ 255, "8080", BS_EPROTO },
		{ 0, "80808080", BS_EPROTO },
		/* valid, longer than max (the most H = 2 can say: 8191) */
		{ 255, "fe7f", BS_EMSGSIZE },
		{ 4096, "824000", BS_EMSGSIZE },
	};
	guard_t g = guard_new(256);

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		bs_framing_t f = kind_max(BS_FRAMING_BUFFSTREAMS, bad[i].max);
		uint8_t in[BS_FRAME_HEADER_MAX];
		size_t n = hex_parse(bad[i].hex, in, sizeof(in));

		check_bad_prefixes(&f, in, n, n, bad[i].err, &g);
	}

	/* The reader ignores what follows the varint, and takes non-minimal
	 * varints, as Go's binary.Varint does. */
	{
		bs_framing_t f = kind_max(BS_FRAMING_BUFFSTREAMS, 4096);
		uint8_t frame[3 + 110];

		hex_parse("dc01ff", frame, 3);
		fill_alpha(frame + 3, 110);
		check_prefixes(&f, frame, 3, 110, 0, &g);
		hex_parse("800000", frame, 3);
		check_prefixes(&f, frame, 3, 0, 0, &g);
		hex_parse("02abcd", frame, 3);
		check_prefixes(&f, frame, 3, 1, 0, &g);
		hex_parse("8201ff", frame, 3); /* 0x82 0x01: zig-zag 130 = 65 */
		check_prefixes(&f, frame, 3, 65, 0, &g);
	}
	guard_free(&g);
}

/* ---- DELIM ------------------------------------------------------------- */

static void test_delim_keep_drop(void **state)
{
	static const uint8_t s[] = "hello\n\nworld\n";
	const size_t n = sizeof(s) - 1;
	const expect_t drop[] = { { 0, 0, 5, 1 }, { 6, 0, 0, 1 },
				  { 7, 0, 5, 1 } };
	const expect_t keep[] = { { 0, 0, 6, 0 }, { 6, 0, 1, 0 },
				  { 7, 0, 6, 0 } };
	bs_framing_t f = delim('\n', false, 0);
	guard_t g = guard_new(64);
	bs_frame_t fr;

	(void)state;
	check_all_splits(&f, s, n, drop, ARRAY_LEN(drop), &g);
	f.keep_delim = true;
	check_all_splits(&f, s, n, keep, ARRAY_LEN(keep), &g);

	/* Any byte can delimit, NUL included. */
	{
		static const uint8_t z[] = { 'a', '\n', 0, 0, 'b', 0 };
		const expect_t zx[] = { { 0, 0, 2, 1 }, { 3, 0, 0, 1 },
					{ 4, 0, 1, 1 } };

		f = delim(0, false, 0);
		check_all_splits(&f, z, sizeof(z), zx, ARRAY_LEN(zx), &g);
	}
	/* No delimiter yet: need more, size unknown. */
	f = delim('\n', false, 0);
	assert_int_equal(bs_frame_decode(&f, "abc", 3, &fr), 0);
	assert_frame(&fr, 0, 0, 0);
	guard_free(&g);
}

static void test_delim_max(void **state)
{
	bs_framing_t drop = delim('\n', false, 3), keep = delim('\n', true, 3);
	uint8_t hdr[BS_FRAME_HEADER_MAX];
	size_t tl = 0;
	guard_t g = guard_new(64);
	bs_frame_t fr;

	(void)state;
	/* max bytes, then the delimiter: accepted (kept: max + 1 bytes). */
	assert_int_equal(bs_frame_decode(&drop, guard_put(&g, "abc\n", 4), 4,
					 &fr), 1);
	assert_frame(&fr, 0, 3, 1);
	assert_int_equal(bs_frame_decode(&keep, guard_put(&g, "abc\n", 4), 4,
					 &fr), 1);
	assert_frame(&fr, 0, 4, 0);
	assert_int_equal(bs_frame_decode(&drop, guard_put(&g, "abc", 3), 3,
					 &fr), 0);
	assert_frame(&fr, 0, 0, 0);
	/* max + 1 bytes without a delimiter: too long, whatever follows. */
	check_bad_prefixes(&drop, (const uint8_t *)"abcd\n", 5, 4, BS_EMSGSIZE,
			   &g);
	check_bad_prefixes(&keep, (const uint8_t *)"abcd\n", 5, 4, BS_EMSGSIZE,
			   &g);
	/* max 0 means 8 MiB: a delimiter at index 8 MiB is the limit. */
	{
		bs_framing_t f = delim('\n', false, 0);
		uint8_t *big = malloc(DEFAULT_MAX + 2);

		assert_non_null(big);
		memset(big, 'x', DEFAULT_MAX + 2);
		big[DEFAULT_MAX] = '\n';
		assert_int_equal(bs_frame_decode(&f, big, DEFAULT_MAX + 2, &fr),
				 1);
		assert_frame(&fr, 0, DEFAULT_MAX, 1);
		big[DEFAULT_MAX] = 'x';
		big[DEFAULT_MAX + 1] = '\n';
		assert_int_equal(bs_frame_decode(&f, big, DEFAULT_MAX, &fr), 0);
		assert_int_equal(bs_frame_decode(&f, big, DEFAULT_MAX + 1, &fr),
				 BS_EMSGSIZE);
		assert_int_equal(bs_frame_decode(&f, big, DEFAULT_MAX + 2, &fr),
				 BS_EMSGSIZE);
		free(big);
	}

	/* Encoding: no header, one trailer byte; the payload is checked. */
	assert_int_equal(bs_frame_encode(&drop, 3, hdr, &tl), 0);
	assert_int_equal(tl, 1);
	assert_int_equal(bs_frame_encode(&drop, 0, hdr, &tl), 0);
	assert_int_equal(bs_frame_encode(&drop, 4, hdr, &tl), BS_EMSGSIZE);
	assert_int_equal(bs_frame_check_payload(&drop, "abc", 3), 0);
	assert_int_equal(bs_frame_check_payload(&drop, NULL, 0), 0);
	assert_int_equal(bs_frame_check_payload(&drop, "a\nc", 3), BS_EPROTO);
	assert_int_equal(bs_frame_check_payload(&drop, "\n", 1), BS_EPROTO);
	assert_int_equal(bs_frame_check_payload(&drop, "abcd", 4), BS_EMSGSIZE);
	/* Only DELIM looks inside the payload. */
	{
		bs_framing_t f = fixed(4, false, 3);

		assert_int_equal(bs_frame_check_payload(&f, "a\nc", 3), 0);
	}
	guard_free(&g);
}

/* ---- 0, max, max + 1 for every codec ----------------------------------- */

static void test_zero_and_max_all_codecs(void **state)
{
	const size_t max = 1000;
	const bs_framing_t fs[] = {
		fixed(2, false, max), fixed(3, true, max), fixed(8, true, max),
		kind_max(BS_FRAMING_VARINT, max),
		kind_max(BS_FRAMING_BUFFSTREAMS, max),
		delim('\n', false, max), delim('\n', true, max),
	};
	guard_t g = guard_new(2 * max);

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(fs); i++) {
		const bs_framing_t *f = &fs[i];
		uint8_t frame[BS_FRAME_HEADER_MAX + 1000 + 1];
		const size_t lens[] = { 0, 1, max - 1, max };
		int h, r;

		for (size_t j = 0; j < ARRAY_LEN(lens); j++) {
			size_t n = lens[j], tl = 9;
			bool keep;

			h = bs_frame_encode(f, n, frame, &tl);
			keep = tl && f->keep_delim;
			assert_true(h >= 0);
			fill_alpha(frame + h, n);
			r = bs_frame_check_payload(f, frame + h, n);
			assert_int_equal(r, 0);
			if (tl)
				frame[(size_t)h + n] = f->delim;
			check_prefixes(f, frame, (size_t)h, n + keep,
				       keep ? 0 : tl, &g);
		}
		h = bs_frame_encode(f, max + 1, frame, &(size_t){ 0 });
		assert_int_equal(h, BS_EMSGSIZE);
		assert_int_equal(bs_frame_check_payload(f, frame, max + 1),
				 BS_EMSGSIZE);
	}
	guard_free(&g);
}

/* ---- random streams, random cuts --------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: deterministic, so a failure reproduces. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static size_t rng_below(uint64_t *s, size_t n)
{
	return n ? (size_t)(rng_next(s) % n) : 0;
}

/* A message length up to lim, mostly one of the interesting ones. */
static size_t rng_length(uint64_t *seed, size_t lim)
{
	static const size_t edges[] = { 0, 1, 127, 128, 255, 256, 300 };
	size_t len;

	if (rng_below(seed, 3) == 0)
		len = edges[rng_below(seed, ARRAY_LEN(edges))];
	else if (rng_below(seed, 4) == 0)
		len = lim;
	else
		len = rng_below(seed, lim + 1);
	return len < lim ? len : lim;
}

/* Appends one random message of len bytes, framed, at s + *n. */
static expect_t put_random_frame(const bs_framing_t *f, uint64_t *seed,
				 uint8_t *s, size_t *n, size_t len)
{
	size_t off = *n, tl = 0;
	int h = bs_frame_encode(f, len, s + off, &tl);
	uint8_t *payload = s + off + (size_t)h;

	assert_true(h >= 0);
	for (size_t i = 0; i < len; i++) {
		uint8_t b = (uint8_t)rng_next(seed);

		/* A delimited payload must not hold its delimiter. */
		payload[i] = tl && b == f->delim ? b ^ 1 : b;
	}
	assert_int_equal(bs_frame_check_payload(f, payload, len), 0);
	if (tl)
		payload[len] = f->delim;
	*n += (size_t)h + len + tl;
	if (tl && f->keep_delim)
		return (expect_t){ off, 0, len + 1, 0 };
	return (expect_t){ off, (size_t)h, len, tl };
}

/* ncuts cut points in s[0..n], in order: a receiver's data only grows. */
static void random_cuts(uint64_t *seed, size_t n, size_t *cuts, size_t ncuts)
{
	for (size_t i = 0; i < ncuts; i++) {
		size_t c = rng_below(seed, n + 1), j = i;

		for (; j > 0 && cuts[j - 1] > c; j--)
			cuts[j] = cuts[j - 1];
		cuts[j] = c;
	}
}

static void test_random_streams(void **state)
{
	const struct {
		bs_framing_t f;
		size_t limit; /* longest message to generate */
	} cases[] = {
		{ fixed(4, false, 0), 3000 },
		{ fixed(1, true, 0), 255 },
		{ fixed(2, true, 700), 700 },
		{ fixed(3, false, 0), 3000 },
		{ fixed(8, true, 0), 3000 },
		{ kind_max(BS_FRAMING_VARINT, 0), 20000 },
		{ kind_max(BS_FRAMING_VARINT, 300), 300 },
		{ kind_max(BS_FRAMING_BUFFSTREAMS, 4096), 4096 },
		{ kind_max(BS_FRAMING_BUFFSTREAMS, 255), 255 },
		{ kind_max(BS_FRAMING_BUFFSTREAMS, 0), 20000 },
		{ delim('\n', false, 0), 3000 },
		{ delim(0, true, 100), 100 },
	};
	enum { FRAMES = 40, ROUNDS = 30, CUTS = 12, LONGEST = 20000 };
	uint64_t seed = UINT64_C(0x9e3779b97f4a7c15);
	uint8_t *s = malloc(FRAMES * (LONGEST + BS_FRAME_HEADER_MAX + 1));
	guard_t g = guard_new(4096 + BS_FRAME_HEADER_MAX + 1);

	(void)state;
	assert_non_null(s);
	for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
		const bs_framing_t *f = &cases[c].f;

		for (int round = 0; round < ROUNDS; round++) {
			expect_t exp[FRAMES];
			size_t cuts[CUTS], n = 0;

			for (size_t k = 0; k < FRAMES; k++)
				exp[k] = put_random_frame(f, &seed, s, &n,
					rng_length(&seed, cases[c].limit));
			random_cuts(&seed, n, cuts, CUTS);
			check_cuts(f, s, n, cuts, CUTS, exp, FRAMES);
			/* Prefixes cost the square of the frame: short ones. */
			for (size_t k = 0; round == 0 && k < FRAMES; k++) {
				const expect_t *e = &exp[k];

				if (e->payload <= 4096)
					check_prefixes(f, s + e->off, e->header,
						       e->payload, e->trailer,
						       &g);
			}
		}
	}
	guard_free(&g);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_and_check),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_buffstreams_vectors),
		cmocka_unit_test(test_buffstreams_interop),
		cmocka_unit_test(test_protobuf_stream),
		cmocka_unit_test(test_vector_splits),
		cmocka_unit_test(test_fixed_widths),
		cmocka_unit_test(test_fixed_max),
		cmocka_unit_test(test_varint_widths),
		cmocka_unit_test(test_varint_max),
		cmocka_unit_test(test_varint_malformed),
		cmocka_unit_test(test_buffstreams_widths),
		cmocka_unit_test(test_buffstreams_capacity),
		cmocka_unit_test(test_buffstreams_malformed),
		cmocka_unit_test(test_delim_keep_drop),
		cmocka_unit_test(test_delim_max),
		cmocka_unit_test(test_zero_and_max_all_codecs),
		cmocka_unit_test(test_random_streams),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
