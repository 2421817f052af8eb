/* pubid.h - the one place the dataplane turns a writer shard's own
 * reservation/order number into the public id a client sees, and back.
 *
 * A writer numbers its reservations and orders 1, 2, 3, ... in its own
 * journal (writer/alloc.c indexes its tables by them), so two writer shards
 * hand out the same numbers. The public id adds the owner (fs_shard.h:
 * appliance in bits 56..63, writer shard in 48..55), so a later GET, cancel
 * or checkout goes straight to the shard that made it, without a lookup.
 * With one appliance and one writer the public id is the number itself
 * (ids from before shards keep working).
 */
#ifndef DP_PUBID_H
#define DP_PUBID_H

#include <assert.h>
#include <stdint.h>
#include "common/fs_shard.h"

/* The public id of writer shard `shard`'s number `no` on appliance
 * `appliance` (0 stays 0: "no id"). */
static inline uint64_t dp_id_public(uint32_t appliance, uint32_t shard, uint64_t no)
{
	assert(no <= FS_ID_LOCAL_MASK);   /* 2^48 numbers per shard: never reached by a counter */
	assert(shard < FS_SHARD_WRITERS_MAX && appliance < FS_SHARD_APPLIANCES_MAX);
	return no == 0 ? 0 : fs_id_compose(appliance, shard, no);
}

/* The writer shard's own number behind public id `pub`, with the shard in
 * *shard; 0 when the id is not one this appliance (index `appliance`, with
 * `writer_count` shards) could have made. */
static inline uint64_t dp_id_local(uint64_t pub, uint32_t appliance, uint32_t writer_count, uint32_t *shard)
{
	*shard = fs_id_writer(pub);
	if (fs_id_appliance(pub) != appliance || *shard >= (writer_count ? writer_count : 1))
		return 0;
	return fs_id_local(pub);
}

#endif
