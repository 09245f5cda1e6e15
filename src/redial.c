/* A dial's own state. See redial.h. */
#include "redial.h"

#include <stdlib.h>
#include <string.h>

#include "backoff.h"

struct redial *redial_new(const bs_dial_opts_t *opts, const bs_addr_t *a, uint64_t salt)
{
	struct redial *rd = calloc(1, sizeof(*rd));

	if (rd == NULL)
		return NULL;
	rd->opts = *opts;
	rd->opts.user = NULL;
	rd->addr = *a;
	rd->rng = backoff_seed(salt);
	inflight_reset(&rd->fl);
	return rd;
}

void redial_free(struct redial *rd)
{
	if (rd == NULL)
		return;
	bs_data_release(rd->returned, rd->nreturned);
	free(rd->returned);
	free(rd);
}

static struct redial_event *at(struct redial *rd, unsigned i)
{
	return &rd->ev[(rd->ev_first + i) % REDIAL_EVENTS];
}

bool redial_post(struct redial *rd, const struct redial_event *e)
{
	if (e->kind == BS_OPEN_DOWN && rd->ev_n > 0 && at(rd, rd->ev_n - 1u)->kind == BS_OPEN_DOWN) {
		struct redial_event *last = at(rd, rd->ev_n - 1u);
		uint64_t lost = last->maybe_lost + e->maybe_lost;

		*last = *e;
		last->maybe_lost = lost;
		return true;
	}
	if (rd->ev_n == REDIAL_EVENTS)
		return false;
	*at(rd, rd->ev_n) = *e;
	rd->ev_n++;
	return true;
}

bool redial_pop(struct redial *rd, struct redial_event *out)
{
	if (rd->ev_n == 0)
		return false;
	*out = *at(rd, 0);
	rd->ev_first = (uint8_t)((rd->ev_first + 1) % REDIAL_EVENTS);
	rd->ev_n--;
	return true;
}

uint32_t redial_delay(struct redial *rd)
{
	return backoff_delay(&rd->opts, rd->retries, &rd->rng);
}
