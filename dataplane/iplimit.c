/* iplimit.c - the per-IP connection cap (see iplimit.h): linear probing,
 * deletion by backward shift (no tombstones, so the table never fills up
 * with addresses that left). */
#include "dataplane/iplimit.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

struct ip_slot {
	uint32_t ip;      /* meaningful while count > 0 */
	uint32_t count;   /* 0 = empty slot */
};

struct dp_iplimit {
	pthread_mutex_t mu;
	uint32_t mask;            /* slots - 1 (power of two, > 2x connections) */
	uint32_t per_ip_max;
	uint32_t used;
	struct ip_slot *slots;
};

static uint32_t home(const struct dp_iplimit *l, uint32_t ip)
{
	return (ip * 2654435761u) & l->mask;
}

struct dp_iplimit *dp_iplimit_new(uint32_t conn_total, uint32_t per_ip_max)
{
	assert(per_ip_max > 0);
	struct dp_iplimit *l = calloc(1, sizeof *l);
	if (l == NULL)
		return NULL;
	uint32_t slots = 64;
	while (slots < 2u * conn_total + 2u && slots < (1u << 30))
		slots <<= 1;
	l->slots = calloc(slots, sizeof *l->slots);
	if (l->slots == NULL) {
		free(l);
		return NULL;
	}
	l->mask = slots - 1;
	l->per_ip_max = per_ip_max;
	pthread_mutex_init(&l->mu, NULL);
	return l;
}

void dp_iplimit_free(struct dp_iplimit *l)
{
	if (l == NULL)
		return;
	pthread_mutex_destroy(&l->mu);
	free(l->slots);
	free(l);
}

/* The slot holding ip, or the empty slot where it would go. */
static uint32_t find(const struct dp_iplimit *l, uint32_t ip)
{
	uint32_t i = home(l, ip);
	while (l->slots[i].count != 0 && l->slots[i].ip != ip)
		i = (i + 1) & l->mask;
	return i;
}

int dp_iplimit_acquire(struct dp_iplimit *l, uint32_t ip)
{
	pthread_mutex_lock(&l->mu);
	uint32_t i = find(l, ip);
	int rc = 0;
	if (l->slots[i].count >= l->per_ip_max) {
		rc = -1;
	} else {
		if (l->slots[i].count == 0) {
			/* the workers' caps bound the live connections below half the slots */
			assert(l->used < l->mask);
			l->slots[i].ip = ip;
			l->used++;
		}
		l->slots[i].count++;
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

void dp_iplimit_release(struct dp_iplimit *l, uint32_t ip)
{
	pthread_mutex_lock(&l->mu);
	uint32_t i = find(l, ip);
	assert(l->slots[i].count > 0 && l->slots[i].ip == ip);
	if (--l->slots[i].count == 0) {
		l->used--;
		/* backward shift: pull later entries of the probe run into the hole */
		uint32_t hole = i, j = i;
		for (;;) {
			j = (j + 1) & l->mask;
			if (l->slots[j].count == 0)
				break;
			uint32_t h = home(l, l->slots[j].ip);
			/* j's entry may move to hole when its home is not in (hole, j] */
			int movable = hole <= j ? (h <= hole || h > j) : (h <= hole && h > j);
			if (movable) {
				l->slots[hole] = l->slots[j];
				l->slots[j].count = 0;
				hole = j;
			}
		}
	}
	pthread_mutex_unlock(&l->mu);
}

uint32_t dp_iplimit_addresses(struct dp_iplimit *l)
{
	pthread_mutex_lock(&l->mu);
	uint32_t n = l->used;
	pthread_mutex_unlock(&l->mu);
	return n;
}
