/* route.h - from a parsed request to either an immediate answer or one
 * command for the writer. Pure: no I/O, no allocation; reads the writer's
 * published snapshot and the per-connection token cache.
 */
#ifndef DP_ROUTE_H
#define DP_ROUTE_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cidr.h"
#include "common/fs_cmd.h"
#include "common/fs_jwt.h"
#include "common/fs_shard.h"
#include "common/fs_snapshot.h"
#include "common/fs_shard.h"
#include "dataplane/http.h"

enum dp_route_id {
	DP_R_SKU_GET = 0, DP_R_RESERVE, DP_R_RES_GET, DP_R_CANCEL, DP_R_CHECKOUT,
	DP_R_ORDER_GET, DP_R_HEALTH, DP_R_OTHER, DP_R_COUNT
};

/* A worker's rendered GET /v1/skus/{sku} answers (keep-alive form, headers
 * included), one per SKU slot, each valid while the SKU's snapshot entry
 * still has the seqlock count it was rendered from: a read costs one load
 * and one copy instead of formatting. Owned by one thread; fixed size. */
#define DP_SKU_CACHE_SLOTS 64           /* power of two; SKU index modulo */
#define DP_SKU_CACHE_BYTES 512          /* longest answer kept (else rendered) */
struct dp_sku_cache {
	struct dp_sku_cache_entry {
		uint64_t seq;                   /* 0 = empty (published counts are >= 2) */
		int32_t idx;
		uint32_t len;
		uint32_t shard;                 /* idx is an index into this writer shard's snapshot */
		char bytes[DP_SKU_CACHE_BYTES];
	} e[DP_SKU_CACHE_SLOTS];
};

#define DP_READY_RECOVERING 2     /* the ready flag during start-up replay (flashsaled.c) */

/* A worker's verified tokens, shared by its connections: a client whose
 * requests arrive over several connections (or a load balancer's pooled
 * ones) pays one HMAC per token, not one per connection switch. Keyed by
 * the token's 128-bit hash, as the per-connection cache; an entry serves
 * only while its token is unexpired. Owned by one thread; fixed size. */
#define DP_TOKEN_CACHE_SLOTS 4096       /* power of two; hash modulo (~640 KiB) */
struct dp_token_cache {
	struct dp_token_cache_entry {
		uint64_t tok_hash[2];           /* 0,0 = empty */
		struct fs_claims claims;
	} e[DP_TOKEN_CACHE_SLOTS];
};

struct dp_route_ctx {
	const struct fs_snapshot *snap; /* writer shard 0's (the operator's IP rules: every shard's) */
	/* writer shards: SKUs go to fs_shard_writer_of(shard_map, sku,
	 * writer_count), ids to the shard they carry (pubid.h); writer_count
	 * 0 or 1: one writer, snap only */
	uint32_t writer_count;
	const struct fs_snapshot *snaps[FS_SHARD_WRITERS_MAX];
	const struct fs_shard_map *shard_map;
	uint32_t appliance;             /* this box's index in shards (0 without one) */
	struct dp_sku_cache *sku_cache; /* NULL: render every GET; else this thread's */
	struct dp_token_cache *tok_cache; /* NULL: the per-connection cache only; else this thread's */
	struct fs_jwt_key *jwt;         /* prepared once per worker thread */
	int64_t now_ms;
	uint32_t quantity_max;
	int ready;                      /* 1 ready; 0 draining or starting; DP_READY_RECOVERING while the
	                                 * journal replays: /readyz 503, every route but health 503 */
	const struct fs_cidr *trusted;  /* trusted proxies/addresses (loopback by default) */
	uint32_t trusted_count;
	const struct fs_shard_map *shards; /* --shard-map with appliances; NULL: this box owns every SKU */
};

/* Per connection: the last token it presented and what it proved, and
 * the socket peer (set by the backend at accept; 0 = unknown). */
struct dp_auth_cache {
	uint64_t tok_hash[2];           /* 0,0 = empty */
	struct fs_claims claims;
	uint32_t peer_ip;               /* IPv4, host order */
};

enum dp_route_kind { DP_ROUTE_RESPOND = 1, DP_ROUTE_COMMAND = 2 };

struct dp_route_result {
	uint8_t kind;                   /* enum dp_route_kind */
	uint8_t route;                  /* enum dp_route_id, for metrics */
	uint16_t http;                  /* status of an immediate answer */
	uint32_t out_len;               /* bytes of the immediate answer in out */
	uint32_t shard;                 /* COMMAND: the writer shard it goes to */
};

/* Routes req. Either writes a whole HTTP answer to out (cap bytes) and
 * returns kind RESPOND, or fills *cmd (tag and origin left to the caller)
 * and returns kind COMMAND. Never fails: every problem is an answer. */
void dp_route(const struct dp_route_ctx *ctx, const struct dp_request *req,
              struct dp_auth_cache *auth, struct fs_cmd *cmd,
              char *out, size_t cap, struct dp_route_result *res);

#endif
