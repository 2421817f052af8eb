/* dpdk_none.c - the DPDK backend in a build without DPDK or lwIP (meson
 * -Ddpdk=false, or the packages missing): its claim() says so, so
 * flashsaled links the same way in both builds and refuses --dpdk with a
 * clear reason before recovery starts. */
#include "dataplane/backend.h"

#include <stdio.h>

static int none_claim(struct dp_backend *b, char *err, size_t err_len)
{
	(void)b;
	snprintf(err, err_len, "--dpdk: this flashsaled was built without the DPDK backend "
	         "(apt-get install libdpdk-dev liblwip-dev, then rebuild)");
	return -1;
}

static int none_start(struct dp_backend *b, char *err, size_t err_len) { return none_claim(b, err, err_len); }
static void none_stop(struct dp_backend *b) { (void)b; }
static uint32_t none_stats(const struct dp_backend *b, const struct dp_stats **out, uint32_t max)
{
	(void)b;
	(void)out;
	(void)max;
	return 0;
}

const struct dp_backend_ops dp_dpdk_ops = {
	.name = "dpdk (not built)", .claim = none_claim, .start = none_start, .stop = none_stop,
	.stats = none_stats, .metrics = NULL,
};
