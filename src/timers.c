/* An I/O thread's timers. See timers.h. */
#include "timers.h"

#include <stdlib.h>

#include "buffstreams.h"

static bool before(const struct timer *a, const struct timer *b)
{
	return (int32_t)(a->due - b->due) < 0;
}

static void place(struct timers *t, uint32_t i, struct timer *e)
{
	t->v[i] = e;
	e->index = i + 1;
}

static void sift_up(struct timers *t, uint32_t i)
{
	struct timer *e = t->v[i];

	while (i > 0 && before(e, t->v[(i - 1) / 2])) {
		place(t, i, t->v[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	place(t, i, e);
}

static void sift_down(struct timers *t, uint32_t i)
{
	struct timer *e = t->v[i];

	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= t->n)
			break;
		if (c + 1 < t->n && before(t->v[c + 1], t->v[c]))
			c++;
		if (!before(t->v[c], e))
			break;
		place(t, i, t->v[c]);
		i = c;
	}
	place(t, i, e);
}

void timers_init(struct timers *t)
{
	t->v = NULL;
	t->n = t->cap = 0;
}

void timers_free(struct timers *t)
{
	free(t->v);
	timers_init(t);
}

int timers_arm(struct timers *t, struct timer *e, uint32_t due)
{
	uint32_t i;

	if (timer_armed(e)) {
		i = e->index - 1;
		e->due = due;
		sift_up(t, i);
		sift_down(t, e->index - 1);
		return 0;
	}
	if (t->n == t->cap) {
		uint32_t cap = t->cap ? 2 * t->cap : 16;
		struct timer **v = realloc(t->v, cap * sizeof(*v));
		if (v == NULL)
			return BS_ENOMEM;
		t->v = v;
		t->cap = cap;
	}
	e->due = due;
	place(t, t->n++, e);
	sift_up(t, t->n - 1);
	return 0;
}

void timers_cancel(struct timers *t, struct timer *e)
{
	uint32_t i;
	struct timer *last;

	if (!timer_armed(e))
		return;
	i = e->index - 1;
	e->index = 0;
	last = t->v[--t->n];
	if (i == t->n)
		return;
	place(t, i, last);
	sift_up(t, i);
	sift_down(t, last->index - 1);
}

struct timer *timers_pop_due(struct timers *t, uint32_t now)
{
	struct timer *e;

	if (t->n == 0 || (int32_t)(now - t->v[0]->due) < 0)
		return NULL;
	e = t->v[0];
	timers_cancel(t, e);
	return e;
}

bool timers_next(const struct timers *t, uint32_t *due)
{
	if (t->n == 0)
		return false;
	*due = t->v[0]->due;
	return true;
}
