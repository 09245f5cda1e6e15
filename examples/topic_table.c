/*
 * topic_table — chained hashing on a topic's bytes (see topic_table.h).
 * Not synchronised: the caller's lock guards a table.
 */
#include "topic_table.h"

#include <stdlib.h>
#include <string.h>

#define TABLE_MIN 64

uint32_t topic_hash(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

int topic_table_init(topic_table_t *t)
{
	t->b = calloc(TABLE_MIN, sizeof(*t->b));
	t->nb = TABLE_MIN;
	t->count = 0;
	return t->b ? 0 : -1;
}

void topic_table_free(topic_table_t *t)
{
	free(t->b);
	t->b = NULL;
	t->nb = t->count = 0;
}

topic_key_t *topic_table_find(const topic_table_t *t, const void *p, size_t n, uint32_t h)
{
	for (topic_key_t *k = t->b[h & (t->nb - 1)]; k; k = k->next)
		if (k->hash == h && k->len == n && memcmp(k->bytes, p, n) == 0)
			return k;
	return NULL;
}

void topic_table_insert(topic_table_t *t, topic_key_t *k)
{
	if (t->count >= t->nb * 2) {
		size_t nb = t->nb * 2;
		topic_key_t **b = calloc(nb, sizeof(*b));
		if (b) {
			for (size_t i = 0; i < t->nb; i++)
				for (topic_key_t *c = t->b[i], *next; c; c = next) {
					next = c->next;
					c->next = b[c->hash & (nb - 1)];
					b[c->hash & (nb - 1)] = c;
				}
			free(t->b);
			t->b = b;
			t->nb = nb;
		}
	}
	k->next = t->b[k->hash & (t->nb - 1)];
	t->b[k->hash & (t->nb - 1)] = k;
	t->count++;
}

void topic_table_remove(topic_table_t *t, topic_key_t *k)
{
	for (topic_key_t **pp = &t->b[k->hash & (t->nb - 1)]; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			t->count--;
			return;
		}
}

topic_key_t *topic_table_pop(topic_table_t *t)
{
	for (size_t i = 0; i < t->nb; i++)
		if (t->b[i]) {
			topic_key_t *k = t->b[i];
			t->b[i] = k->next;
			t->count--;
			return k;
		}
	return NULL;
}
