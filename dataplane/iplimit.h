/* iplimit.h - the per-IP connection cap (--connections-per-ip), shared by
 * every worker: one untrusted address may hold at most `per_ip_max` open
 * connections across the whole process, so a single client cannot take
 * the connection slots from everyone else. Off (NULL) by default, like
 * --ip-rate: carrier NAT puts many honest users behind one address.
 *
 * A fixed open-addressing table sized at start-up (no allocation after),
 * guarded by one mutex: taken once per accepted and per closed
 * connection, never per request.
 */
#ifndef DP_IPLIMIT_H
#define DP_IPLIMIT_H

#include <stdint.h>

struct dp_iplimit;

/* A table for up to `conn_total` concurrent connections (every worker's
 * cap together), `per_ip_max` per address. NULL when out of memory. */
struct dp_iplimit *dp_iplimit_new(uint32_t conn_total, uint32_t per_ip_max);
void dp_iplimit_free(struct dp_iplimit *l);

/* Counts one more connection of `ip`. Returns 0, or -1 (nothing counted)
 * when the address already holds per_ip_max connections. */
int dp_iplimit_acquire(struct dp_iplimit *l, uint32_t ip);

/* Forgets one connection of `ip` counted by dp_iplimit_acquire. */
void dp_iplimit_release(struct dp_iplimit *l, uint32_t ip);

/* Addresses holding at least one connection now (for /metrics). */
uint32_t dp_iplimit_addresses(struct dp_iplimit *l);

#endif
