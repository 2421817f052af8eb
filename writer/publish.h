/* publish.h - the writer's side of the published reservations and orders
 * (common/fs_pub.h): after each durable batch, the reservations, orders
 * and SKU queue counters the batch changed are stored into the shared
 * region, so workers and DPDK lanes answer reads of them without the
 * writer. Writer thread only.
 */
#ifndef WR_PUBLISH_H
#define WR_PUBLISH_H

#include <stdint.h>
#include "common/fs_pub.h"
#include "writer/alloc.h"

struct wr_publisher {
	struct fs_pub *pub;
	uint32_t sku_max;
	uint32_t users_named, skus_named;   /* names already in the region */
	uint8_t  *mark;                     /* sku_max: in this publish's SKU set */
	uint32_t *set;                      /* sku_max: the SKU set */
	uint64_t *wl_served, *pq_served;    /* sku_max: last published queue counters */
	uint8_t  *drawn;
};

/* Allocates the publisher's own bookkeeping for `pub`. 0, or -1 when out
 * of memory. */
int wr_publisher_init(struct wr_publisher *pb, struct fs_pub *pub, uint32_t sku_max);
void wr_publisher_free(struct wr_publisher *pb);

/* Publishes everything live in st (start-up, after a snapshot load and the
 * journal's replay). */
void wr_publish_all(struct wr_publisher *pb, const struct wr_state *st);

/* Publishes what the durable batch cmds[0..n) changed (out: its decide
 * step's output). Pre: the batch is durable; its answers not yet sent. */
void wr_publish_batch(struct wr_publisher *pb, const struct wr_state *st, const struct wr_batch_out *out,
                      const struct fs_cmd *cmds, uint32_t n);

#endif
