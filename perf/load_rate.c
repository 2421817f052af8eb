/* load_rate.c - open-loop schedule and in-flight FIFO (see load_rate.h). */
#include "load_rate.h"

#include <assert.h>
#include <stddef.h>

void lr_sched_init(struct lr_sched *s, uint64_t start_ns, double rate_per_s,
                   uint64_t issued_max)
{
	assert(s != NULL);
	assert(rate_per_s > 0.0);
	s->start_ns = start_ns;
	s->interval_ns = 1e9 / rate_per_s;
	s->issued = 0;
	s->issued_max = issued_max;
	assert(s->interval_ns > 0.0);
}

uint64_t lr_intended_ns(const struct lr_sched *s, uint64_t i)
{
	assert(s != NULL);
	return s->start_ns + (uint64_t)((double)i * s->interval_ns);
}

bool lr_take_due(struct lr_sched *s, uint64_t now_ns, uint64_t *intended_ns)
{
	assert(s != NULL && intended_ns != NULL);
	if (s->issued >= s->issued_max)
		return false;
	uint64_t t = lr_intended_ns(s, s->issued);
	if (t > now_ns)
		return false;
	*intended_ns = t;
	s->issued++;
	assert(s->issued <= s->issued_max);
	return true;
}

uint64_t lr_backlog(const struct lr_sched *s, uint64_t now_ns)
{
	assert(s != NULL);
	if (now_ns < s->start_ns)
		return 0;
	uint64_t due = (uint64_t)((double)(now_ns - s->start_ns) / s->interval_ns) + 1u;
	/* float rounding may put the boundary one off: trust lr_intended_ns */
	while (due > 0 && lr_intended_ns(s, due - 1) > now_ns)
		due--;
	while (lr_intended_ns(s, due) <= now_ns)
		due++;
	if (due > s->issued_max)
		due = s->issued_max;
	return due > s->issued ? due - s->issued : 0;
}

uint64_t lr_next_ns(const struct lr_sched *s)
{
	assert(s != NULL);
	if (s->issued >= s->issued_max)
		return UINT64_MAX;
	return lr_intended_ns(s, s->issued);
}

void lr_inflight_reset(struct lr_inflight *f)
{
	assert(f != NULL);
	f->head = 0;
	f->count = 0;
}

bool lr_inflight_push(struct lr_inflight *f, uint64_t intended_ns, uint8_t op)
{
	assert(f != NULL && f->count <= LR_INFLIGHT_MAX);
	if (f->count == LR_INFLIGHT_MAX)
		return false;
	uint32_t slot = (f->head + f->count) % LR_INFLIGHT_MAX;
	f->intended_ns[slot] = intended_ns;
	f->op[slot] = op;
	f->count++;
	return true;
}

uint64_t lr_inflight_pop(struct lr_inflight *f, uint64_t now_ns, uint8_t *op)
{
	assert(f != NULL && f->count > 0);
	uint64_t t = f->intended_ns[f->head];
	if (op != NULL)
		*op = f->op[f->head];
	f->head = (f->head + 1u) % LR_INFLIGHT_MAX;
	f->count--;
	return now_ns > t ? now_ns - t : 0;
}

uint64_t lr_inflight_oldest_ns(const struct lr_inflight *f)
{
	assert(f != NULL && f->count > 0);
	return f->intended_ns[f->head];
}
