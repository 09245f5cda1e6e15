/*
 * topic_table — a hash table of topics (byte strings of 1..255 bytes),
 * intrusive: an entry embeds a topic_key_t as its first member and owns the
 * key's bytes. Not synchronised: the caller's lock guards a table.
 */
#ifndef TOPIC_TABLE_H
#define TOPIC_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct topic_key {
	struct topic_key *next;
	uint32_t hash;           /* topic_hash(bytes, len) */
	uint8_t len;
	const uint8_t *bytes;
} topic_key_t;

typedef struct topic_table {
	topic_key_t **b;
	size_t nb, count;        /* buckets (a power of two), entries */
} topic_table_t;

uint32_t topic_hash(const void *p, size_t n);
/* 0, or -1 out of memory. */
int topic_table_init(topic_table_t *t);
/* Frees the buckets; the entries are the caller's (topic_table_pop them). */
void topic_table_free(topic_table_t *t);
/* The entry of topic p[0..n) whose hash is h, or NULL. */
topic_key_t *topic_table_find(const topic_table_t *t, const void *p, size_t n, uint32_t h);
/* Adds k (not in the table yet). Never fails: when the table cannot grow,
 * its chains get longer. */
void topic_table_insert(topic_table_t *t, topic_key_t *k);
void topic_table_remove(topic_table_t *t, topic_key_t *k);
/* Removes and returns any entry; NULL when empty. */
topic_key_t *topic_table_pop(topic_table_t *t);

/* Visits every entry as k; the body must not insert or remove. */
#define TOPIC_TABLE_FOREACH(t, k)                                          \
	for (size_t topic_i_ = 0; topic_i_ < (t)->nb; topic_i_++)          \
		for (topic_key_t *k = (t)->b[topic_i_]; k; k = k->next)

#endif /* TOPIC_TABLE_H */
