/*
 * Writes the seed corpus of the frame-decoder fuzz targets from the wire
 * vectors (tests/vectors, which mk/fuzz.mk passes as VECTORS_DIR):
 *
 *   seeds VECTORS_DIR OUT_DIR
 *
 * fills OUT_DIR/{fixed,varint,buffstreams,delim}/ (which must exist) with
 * the captured files themselves, behind the config byte that selects their
 * framing, and with their messages re-framed for every codec. Each seed
 * starts with the config byte(s) the matching fuzz_<codec>.c reads.
 */
#include "fuzz.h"

#define MAX_MSGS 32
#define SEED_CAP (256 * 1024)

struct msg {
	const uint8_t *p;
	size_t len;
};

static struct msg msgs[MAX_MSGS];
static size_t nmsgs;
static unsigned seed_no;

static uint8_t *load(const char *dir, const char *name, size_t *len)
{
	char path[4096];
	uint8_t *buf;
	FILE *fp;
	long n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "rb");
	if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0) {
		fprintf(stderr, "seeds: cannot read %s\n", path);
		exit(1);
	}
	rewind(fp);
	buf = malloc((size_t)n + 1);
	if (buf == NULL || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
		fprintf(stderr, "seeds: cannot read %s\n", path);
		exit(1);
	}
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

static void put(const char *out, const char *codec, const uint8_t *cfg,
		size_t ncfg, const uint8_t *body, size_t len)
{
	char path[4096];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s/seed-%03u", out, codec, seed_no++);
	fp = fopen(path, "wb");
	if (fp == NULL || fwrite(cfg, 1, ncfg, fp) != ncfg ||
	    fwrite(body, 1, len, fp) != len || fclose(fp) != 0) {
		fprintf(stderr, "seeds: cannot write %s\n", path);
		exit(1);
	}
}

/* Collects the messages of a vector file. */
static void collect(const bs_framing_t *f, const uint8_t *s, size_t len)
{
	bs_frame_t fr;

	while (len != 0 && bs_frame_decode(f, s, len, &fr) == 1 &&
	       nmsgs < MAX_MSGS) {
		size_t total = fr.header_len + fr.payload_len + fr.trailer_len;

		msgs[nmsgs].p = s + fr.header_len;
		msgs[nmsgs].len = fr.payload_len;
		nmsgs++;
		s += total;
		len -= total;
	}
}

/* Frames the collected messages with f, skipping those it refuses (too
 * large, or holding the delimiter), and writes the result as a seed. */
static void reframe(const char *out, const char *codec, const uint8_t *cfg,
		    size_t ncfg, const bs_framing_t *f, size_t longest)
{
	static uint8_t buf[SEED_CAP];
	size_t n = 0;

	for (size_t i = 0; i < nmsgs; i++) {
		uint8_t hdr[BS_FRAME_HEADER_MAX];
		size_t tl = 0;
		int h;

		if (msgs[i].len > longest ||
		    bs_frame_check_payload(f, msgs[i].p, msgs[i].len) != 0)
			continue;
		h = bs_frame_encode(f, msgs[i].len, hdr, &tl);
		if (h < 0 || n + (size_t)h + msgs[i].len + tl > sizeof(buf))
			continue;
		memcpy(buf + n, hdr, (size_t)h);
		memcpy(buf + n + (size_t)h, msgs[i].p, msgs[i].len);
		n += (size_t)h + msgs[i].len;
		if (tl)
			buf[n++] = f->delim;
	}
	put(out, codec, cfg, ncfg, buf, n);
}

int main(int argc, char **argv)
{
	/* Config bytes: see each fuzz_<codec>.c. Max indexes into fuzz_maxes:
	 * 0 = default, 6 = 255, 7 = 256, 8 = 1000, 9 = 4096, 12 = 65536,
	 * 13 = 2^24. */
	static const struct {
		const char *file;
		uint8_t max_index;
		size_t max;
	} bsv[] = {
		{ "buffstreams/max4096_len110.bin", 9, 4096 },
		{ "buffstreams/max2048_len110.bin", 9, 2048 },
		{ "buffstreams/max255_len110.bin", 6, 255 },
		{ "buffstreams/max256_len0.bin", 7, 256 },
		{ "buffstreams/max65536_len200.bin", 12, 65536 },
	};
	static const uint8_t fixed_cfg[] = { 0x03, 0x68, 0xb9,
					     0x07, 0x92, 0x80 };
	static const uint8_t varint_cfg[] = { 0, 8, 9, 12 };
	static const uint8_t bs_cfg[] = { 0, 6, 7, 9, 12, 13 };
	static const uint8_t delim_cfg[][2] = {
		{ 0x00, '\n' }, { 0x01, '\n' }, { 0x13, 0x00 }, { 0x12, 'z' },
		{ 0x10, 0xff },
	};
	const char *dir, *out;
	uint8_t *pb, *files[sizeof(bsv) / sizeof(bsv[0])];
	size_t pblen, len;
	bs_framing_t f;

	if (argc != 3) {
		fprintf(stderr, "usage: seeds VECTORS_DIR OUT_DIR\n");
		return 2;
	}
	dir = argv[1];
	out = argv[2];

	/* The captured bytes as they are. */
	pb = load(dir, "protobuf-delimited/stream.bin", &pblen);
	for (size_t i = 0; i < sizeof(varint_cfg); i++)
		put(out, "varint", &varint_cfg[i], 1, pb, pblen);
	for (size_t i = 0; i < sizeof(bsv) / sizeof(bsv[0]); i++) {
		files[i] = load(dir, bsv[i].file, &len);
		put(out, "buffstreams", &bsv[i].max_index, 1, files[i], len);
		bs_framing_default(&f);
		f.kind = BS_FRAMING_BUFFSTREAMS;
		f.max_message_size = bsv[i].max;
		collect(&f, files[i], len);
	}
	bs_framing_default(&f);
	f.kind = BS_FRAMING_VARINT;
	collect(&f, pb, pblen);

	/* Their messages in every framing: short ones only, and all. */
	for (int pass = 0; pass < 2; pass++) {
		size_t longest = pass == 0 ? 512 : SIZE_MAX;

		for (size_t i = 0; i < sizeof(fixed_cfg); i++) {
			uint8_t c = fixed_cfg[i];

			bs_framing_default(&f);
			f.width = (uint8_t)((c & 7) + 1);
			f.little_endian = (c & 8) != 0;
			f.max_message_size = fuzz_maxes[c >> 4];
			reframe(out, "fixed", &c, 1, &f, longest);
		}
		for (size_t i = 0; i < sizeof(varint_cfg); i++) {
			bs_framing_default(&f);
			f.kind = BS_FRAMING_VARINT;
			f.max_message_size = fuzz_maxes[varint_cfg[i]];
			reframe(out, "varint", &varint_cfg[i], 1, &f, longest);
		}
		for (size_t i = 0; i < sizeof(bs_cfg); i++) {
			bs_framing_default(&f);
			f.kind = BS_FRAMING_BUFFSTREAMS;
			f.max_message_size = fuzz_maxes[bs_cfg[i]];
			reframe(out, "buffstreams", &bs_cfg[i], 1, &f, longest);
		}
		for (size_t i = 0; i < sizeof(delim_cfg) / 2; i++) {
			bs_framing_default(&f);
			f.kind = BS_FRAMING_DELIM;
			f.keep_delim = (delim_cfg[i][0] & 1) != 0;
			f.max_message_size =
				fuzz_maxes[(delim_cfg[i][0] >> 1) & 15];
			f.delim = delim_cfg[i][1];
			reframe(out, "delim", delim_cfg[i], 2, &f, longest);
		}
	}
	printf("seeds: %u files in %s\n", seed_no, out);
	return 0;
}
