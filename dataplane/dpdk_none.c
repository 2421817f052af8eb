/* dpdk_none.c - the DPDK backend's interface in a build without DPDK or
 * lwIP (meson -Ddpdk=false, or the packages missing): every entry point
 * says so, so flashsaled links the same way in both builds and refuses
 * --dpdk with a clear reason. */
#include "dataplane/dpdk.h"

#include <stdio.h>

struct dp_dpdk *dp_dpdk_start(const struct dp_dpdk_config *cfg, char *err, size_t err_len)
{
	(void)cfg;
	snprintf(err, err_len, "this flashsaled was built without the DPDK backend "
	         "(apt-get install libdpdk-dev liblwip-dev, then rebuild)");
	return NULL;
}

void dp_dpdk_stop(struct dp_dpdk *d) { (void)d; }
void dp_dpdk_free(struct dp_dpdk *d) { (void)d; }
const struct dp_stats *dp_dpdk_worker_stats(const struct dp_dpdk *d) { (void)d; return NULL; }
int dp_dpdk_stats(const struct dp_dpdk *d, struct dp_dpdk_port_stats *s) { (void)d; (void)s; return -1; }
size_t dp_dpdk_metrics(const struct dp_dpdk *d, char *buf, size_t cap) { (void)d; (void)buf; (void)cap; return 0; }
size_t dp_dpdk_metrics_cb(void *d, char *buf, size_t cap) { (void)d; (void)buf; (void)cap; return 0; }
