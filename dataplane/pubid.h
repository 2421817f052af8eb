/* pubid.h - the one place where the dataplane turns a writer's own number
 * for a reservation or order into the public id a client sees, and back.
 *
 * Writers keep local numbers (bits 0..47); the public number adds who owns
 * it (common/fs_shard.h: appliance in bits 56..63, writer shard in bits
 * 48..55), so a proxy and this box route a later read or checkout without
 * a lookup. With one appliance and one writer both are 0 and the public
 * number is the local one (ids from before shards stay valid).
 */
#ifndef DP_PUBID_H
#define DP_PUBID_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"
#include "common/fs_shard.h"

struct dp_id_owner {
	uint32_t appliance;   /* index in the shard map (0 without --shard) */
	uint32_t writer;      /* writer shard inside the appliance */
};

/* The public number of local number `local` minted by `owner` (0 stays 0:
 * "no id"). */
static inline uint64_t dp_id_public(struct dp_id_owner owner, uint64_t local)
{
	assert(local <= FS_ID_LOCAL_MASK);
	assert(owner.appliance < FS_SHARD_APPLIANCES_MAX && owner.writer < FS_SHARD_WRITERS_MAX);
	return local == 0 ? 0 : fs_id_compose(owner.appliance, owner.writer, local);
}

/* Parses public id s ("r"/"o" + 16 hex digits, `prefix`): returns the
 * local number and sets *owner, or 0 when s is not a well-formed id. */
static inline uint64_t dp_id_parse(const char *s, size_t len, char prefix, struct dp_id_owner *owner)
{
	uint64_t no = fs_pubid_parse(s, len, prefix);
	owner->appliance = fs_id_appliance(no);
	owner->writer = fs_id_writer(no);
	return fs_id_local(no);
}

#endif
