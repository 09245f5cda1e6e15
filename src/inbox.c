/* A connection's received frames. See inbox.h. */
#include "inbox.h"

#include <stdlib.h>
#include <string.h>

#include "framing.h"
#include "grow.h"
#include "tsan.h"

void inbox_init(struct inbox *in)
{
	in->stub.buf = NULL;
	in->stub.off = in->stub.end = 0;
	in->stub.epoch = 0;
	in->stub.pos = NULL;
	in->stub.npos = in->stub.next = in->stub.cap = 0;
	ck_fifo_spsc_init(&in->fifo, &in->stub.entry);
	in->cur = NULL;
	atomic_store_explicit(&in->bytes, 0, memory_order_relaxed);
}

static struct segment *seg_of(ck_fifo_spsc_entry_t *e)
{
	return (struct segment *)(void *)((char *)e - offsetof(struct segment, entry));
}

/* Copies the frames' positions into s, growing its room; without room s
 * goes without them. */
static void keep_positions(struct segment *s, const struct frame_pos *pos, uint32_t n)
{
	struct frame_pos *room;

	s->npos = s->next = 0;
	if (pos == NULL || n == 0)
		return;
	room = grow_to(s->pos, &s->cap, n, sizeof(*room), 64, UINT32_MAX);
	if (room == NULL)
		return;
	s->pos = room;
	memcpy(s->pos, pos, (size_t)n * sizeof(*pos));
	s->npos = n;
}

bool inbox_push(struct inbox *in, bs_msg_t *buf, size_t off, size_t end, uint32_t epoch,
		const struct frame_pos *pos, uint32_t n)
{
	ck_fifo_spsc_entry_t *e = ck_fifo_spsc_recycle(&in->fifo);
	struct segment *s;

	if (e != NULL) {
		tsan_acquire(&in->fifo); /* the consumer is done with it */
		s = seg_of(e);
	} else {
		s = malloc(sizeof(*s));
		if (s == NULL)
			return false;
		s->pos = NULL;
		s->cap = 0;
	}
	s->buf = buf;
	s->off = s->base = off;
	s->end = end;
	s->epoch = epoch;
	keep_positions(s, pos, n);
	/* Counted before it is visible, so a consumer never subtracts first. */
	atomic_fetch_add_explicit(&in->bytes, end - off, memory_order_relaxed);
	tsan_release(&in->fifo);
	ck_fifo_spsc_enqueue(&in->fifo, &s->entry, s);
	return true;
}

/* Moves to the next segment when the current one is used up. */
static struct segment *current(struct inbox *in)
{
	struct segment *s = in->cur;
	void *next;

	if (s != NULL && s->off < s->end)
		return s;
	if (s != NULL) {
		bs_msg_release(s->buf);
		s->buf = NULL;
		in->cur = NULL;
		tsan_release(&in->fifo); /* the producer may recycle it */
	}
	if (!ck_fifo_spsc_dequeue(&in->fifo, &next))
		return NULL;
	tsan_acquire(&in->fifo);
	in->cur = next;
	return next;
}

size_t inbox_take(struct inbox *in, const bs_framing_t *f, bs_id_t id, void *user,
		  bs_data_t *ev, size_t max, size_t *bytes, uint32_t epoch)
{
	size_t n = 0, total = 0;
	struct segment *s;

	while (n < max && (s = current(in)) != NULL && s->epoch == epoch) {
		const uint8_t *p = s->buf->data;
		size_t off = s->off, first = n;
		bs_frame_t fr;

		if (s->next < s->npos) {
			/* The reader's positions: no header is read here. */
			const struct frame_pos *fp = s->pos + s->next;
			const uint8_t *b = p + s->base;
			size_t k = s->npos - s->next;

			if (k > max - n)
				k = max - n;
			for (size_t i = 0; i < k; i++)
				ev[n + i] = (bs_data_t){ .id = id, .data = b + fp[i].off,
							 .len = fp[i].len, .msg = s->buf,
							 .user = user };
			n += k;
			s->next += (uint32_t)k;
			/* The last one taken ends with its payload, or one byte
			 * later with a delimiter. */
			off = s->base + fp[k - 1].off + fp[k - 1].len +
			      (f->kind == BS_FRAMING_DELIM ? 1u : 0u);
		}
		/* Frames were validated when read: decoding cannot fail. */
		while (n < max && off < s->end && frame_decode(f, p + off, s->end - off, &fr) > 0) {
			ev[n++] = (bs_data_t){ .id = id, .data = p + off + fr.header_len,
					       .len = fr.payload_len, .msg = s->buf, .user = user };
			off += fr.header_len + fr.payload_len + fr.trailer_len;
		}
		total += off - s->off;
		s->off = off;
		msg_ref_add(s->buf, (long)(n - first));
		if (n == first)
			break; /* cannot happen: a segment holds whole frames */
	}
	atomic_fetch_sub_explicit(&in->bytes, total, memory_order_seq_cst);
	*bytes = total;
	return n;
}

bool inbox_ready(struct inbox *in, uint32_t epoch)
{
	struct segment *s = current(in);

	return s != NULL && s->epoch == epoch;
}

static size_t count_frames(const bs_framing_t *f, const struct segment *s)
{
	size_t n = 0, off = s->off;
	bs_frame_t fr;

	if (s->next < s->npos)
		return s->npos - s->next;
	while (off < s->end && frame_decode(f, s->buf->data + off, s->end - off, &fr) > 0) {
		off += fr.header_len + fr.payload_len + fr.trailer_len;
		n++;
	}
	return n;
}

size_t inbox_drop(struct inbox *in, const bs_framing_t *f)
{
	ck_fifo_spsc_entry_t *e, *next;
	size_t frames = 0;

	while (current(in) != NULL) {
		frames += count_frames(f, in->cur);
		in->cur->off = in->cur->end;
	}
	/* Every entry is garbage now: from the oldest to the head stub. */
	ck_fifo_spsc_deinit(&in->fifo, &e);
	for (; e != NULL; e = next) {
		next = e->next;
		if (e != &in->stub.entry) {
			free(seg_of(e)->pos);
			free(seg_of(e));
		}
	}
	free(in->stub.pos);
	inbox_init(in);
	return frames;
}
