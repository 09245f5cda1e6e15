/* Interned framings. See endpoint.h. */
#include "endpoint.h"

#include <stdlib.h>

struct framing_node {
	bs_framing_t framing;
	struct framing_node *next;
};

void endpoints_init(struct endpoints *e, const bs_framing_t *dflt)
{
	e->dflt = *dflt;
	e->list = NULL;
	pthread_mutex_init(&e->lock, NULL);
}

void endpoints_free(struct endpoints *e)
{
	struct framing_node *n, *next;

	for (n = e->list; n != NULL; n = next) {
		next = n->next;
		free(n);
	}
	pthread_mutex_destroy(&e->lock);
}

static bool framing_equal(const bs_framing_t *a, const bs_framing_t *b)
{
	return a->kind == b->kind && a->width == b->width &&
	       a->little_endian == b->little_endian && a->delim == b->delim &&
	       a->keep_delim == b->keep_delim && a->max_message_size == b->max_message_size;
}

const bs_framing_t *endpoint_intern(struct endpoints *e, const bs_framing_t *f)
{
	struct framing_node *n;
	bs_framing_t want;

	if (f == NULL)
		return &e->dflt;
	want = *f;
	if (want.max_message_size == 0)
		want.max_message_size = BS_DEFAULT_MAX_MESSAGE_SIZE;
	if (framing_equal(&want, &e->dflt))
		return &e->dflt;
	pthread_mutex_lock(&e->lock);
	for (n = e->list; n != NULL; n = n->next)
		if (framing_equal(&n->framing, &want))
			break;
	if (n == NULL && (n = calloc(1, sizeof(*n))) != NULL) {
		n->framing = want;
		n->next = e->list;
		e->list = n;
	}
	pthread_mutex_unlock(&e->lock);
	return n ? &n->framing : NULL;
}
