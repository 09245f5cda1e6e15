/*
 * An intrusive doubly linked list, for lists that one thread owns (an I/O
 * thread's ready, parked and idle lists). No locking: the owner's only.
 */
#ifndef BS_LIST_H
#define BS_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct list_node {
	struct list_node *prev, *next;
};

struct list {
	struct list_node *head, *tail;
	uint32_t count;
};

#define list_entry(node, type, member) \
	((type *)(void *)((char *)(node) - offsetof(type, member)))

static inline bool list_linked(const struct list *l, const struct list_node *n)
{
	return n->prev != NULL || l->head == n;
}

static inline void list_append(struct list *l, struct list_node *n)
{
	n->next = NULL;
	n->prev = l->tail;
	if (l->tail)
		l->tail->next = n;
	else
		l->head = n;
	l->tail = n;
	l->count++;
}

static inline void list_prepend(struct list *l, struct list_node *n)
{
	n->prev = NULL;
	n->next = l->head;
	if (l->head)
		l->head->prev = n;
	else
		l->tail = n;
	l->head = n;
	l->count++;
}

static inline void list_remove(struct list *l, struct list_node *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		l->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		l->tail = n->prev;
	n->prev = n->next = NULL;
	l->count--;
}

#endif
