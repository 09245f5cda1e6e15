/*
 * Interned framings. Every connection points at the framing it uses; one
 * copy per distinct framing, with max_message_size resolved, shared by all
 * connections that use it and alive until the instance is destroyed (a
 * connection can outlive the listener that accepted it). Any thread.
 */
#ifndef BS_ENDPOINT_H
#define BS_ENDPOINT_H

#include <pthread.h>

#include "buffstreams.h"

struct framing_node;

struct endpoints {
	bs_framing_t dflt;            /* the configured default */
	pthread_mutex_t lock;
	struct framing_node *list;    /* the others, under lock */
};

void endpoints_init(struct endpoints *e, const bs_framing_t *dflt);
void endpoints_free(struct endpoints *e);
/* The shared copy of f (NULL: the default), or NULL when out of memory. */
const bs_framing_t *endpoint_intern(struct endpoints *e, const bs_framing_t *f);

#endif
