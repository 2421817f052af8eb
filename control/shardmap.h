/* shardmap.h - `flashctl shard-map`: the proxy configuration (nginx or
 * HAProxy) that sends each request to the appliance that owns it, written
 * from the same shard map flashsaled reads (common/fs_shard.h).
 */
#ifndef CTL_SHARDMAP_H
#define CTL_SHARDMAP_H

#include <stdio.h>
#include "common/fs_shard.h"

enum ctl_proxy { CTL_PROXY_NGINX = 1, CTL_PROXY_HAPROXY = 2 };

/* The SKUs the proxy routes by name: the map's pins and the ones listed
 * (a proxy cannot compute fs_shard_hash, so an unlisted, unpinned SKU goes
 * to the first shard, which answers 421 when it is not the owner). */
struct ctl_proxy_skus {
	uint32_t count;
	struct { char sku[FS_SKU_LEN_MAX + 1]; uint32_t appliance; } e[FS_SHARD_PINS_MAX];
};

/* Adds the map's pinned SKUs, then the comma-separated `listed` (may be
 * NULL), each with its owner; a SKU listed twice or pinned counts once.
 * 0, or -1 with the reason in err (a bad name, more than the table holds). */
int ctl_proxy_skus_collect(struct ctl_proxy_skus *s, const struct fs_shard_map *m, const char *listed,
                           char *err, size_t err_len);

/* Writes the whole configuration to out: listen on `listen` (HOST:PORT).
 * The map must declare at least one appliance. Returns 0, or -1 on a write
 * error. */
int ctl_proxy_write(FILE *out, enum ctl_proxy kind, const struct fs_shard_map *m,
                    const struct ctl_proxy_skus *s, const char *listen);

/* flashctl shard-map --nginx|--haproxy --map FILE [--skus A,B] [--listen H:P] [--out F]:
 * exit status 0, 1 on a bad map or SKU, 2 on bad usage. */
int ctl_shard_map(int argc, char **argv);

#endif
