/* shardmap.c - `flashctl shard-map`: writes the nginx or HAProxy
 * configuration that routes requests to the appliance owning them (see
 * shardmap.h; the map format is common/fs_shard.h's).
 *
 * Routes, for both proxies:
 *   /v1/skus/{sku}[/...]                 by SKU: an exact-name table of the
 *                                        map's pins and the --skus listed,
 *                                        each with its owner (pin or hash);
 *                                        any other SKU to the first shard
 *   /v1/reservations/r{AA}..., /v1/orders/o{AA}...
 *                                        by the two hex digits AA after the
 *                                        prefix (the appliance index the id
 *                                        carries); an unknown AA to the first
 *                                        shard (which answers 404)
 *   anything else                        404 {"error":"not_found"} at the proxy
 * A box that gets a request it does not own answers 421 misdirected with
 * the owner's name: the proxy's table is then stale or lacks that SKU.
 */
#include "control/shardmap.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define HAPROXY_SKUS_PER_LINE 40   /* HAProxy reads lines of at most 2048 bytes */

static int valid_sku(const char *s, size_t len)
{
	if (len == 0 || len > FS_SKU_LEN_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return 0;
	return 1;
}

static int sku_known(const struct ctl_proxy_skus *s, const char *sku, size_t len)
{
	for (uint32_t i = 0; i < s->count; i++)
		if (strlen(s->e[i].sku) == len && memcmp(s->e[i].sku, sku, len) == 0)
			return 1;
	return 0;
}

static int sku_add(struct ctl_proxy_skus *s, const struct fs_shard_map *m, const char *sku, size_t len,
                   char *err, size_t err_len)
{
	if (!valid_sku(sku, len)) {
		snprintf(err, err_len, "SKU '%.*s': 1..%d of A-Z a-z 0-9 . _ -", (int)len, sku, (int)FS_SKU_LEN_MAX);
		return -1;
	}
	if (sku_known(s, sku, len))
		return 0;
	if (s->count == FS_SHARD_PINS_MAX) {
		snprintf(err, err_len, "more than %u SKUs", FS_SHARD_PINS_MAX);
		return -1;
	}
	memcpy(s->e[s->count].sku, sku, len);
	s->e[s->count].sku[len] = 0;
	s->e[s->count].appliance = fs_shard_appliance_of(m, sku, len);
	assert(s->e[s->count].appliance < m->appliance_count);
	s->count++;
	return 0;
}

int ctl_proxy_skus_collect(struct ctl_proxy_skus *s, const struct fs_shard_map *m, const char *listed,
                           char *err, size_t err_len)
{
	assert(m->appliance_count > 0);
	s->count = 0;
	for (uint32_t i = 0; i < m->pin_count; i++)
		if (m->pins[i].appliance >= 0 &&
		    sku_add(s, m, m->pins[i].sku, strlen(m->pins[i].sku), err, err_len) != 0)
			return -1;
	while (listed != NULL && *listed) {
		const char *comma = strchr(listed, ',');
		size_t len = comma ? (size_t)(comma - listed) : strlen(listed);
		if (sku_add(s, m, listed, len, err, err_len) != 0)
			return -1;
		listed = comma ? comma + 1 : NULL;
	}
	return 0;
}

static void header(FILE *out, const struct fs_shard_map *m, const struct ctl_proxy_skus *s, const char *tool)
{
	fprintf(out, "# flashsale shards behind %s: written by `flashctl shard-map`; regenerate it\n"
	             "# whenever the shard map changes (never edit by hand).\n", tool);
	for (uint32_t i = 0; i < m->appliance_count; i++)
		fprintf(out, "#   shard %-12s index %02x  %s\n", m->appliances[i].name, i, m->appliances[i].addr);
	fprintf(out, "# %u SKUs routed by name (the map's pins and --skus). Any other SKU goes to\n"
	             "# shard %s, which answers 421 {\"error\":\"misdirected\",\"shard\":OWNER} when it does\n"
	             "# not own it: list that SKU with --skus and regenerate. Reservation and order ids\n"
	             "# route by the two hex digits after their r/o prefix (the shard index).\n",
	        s->count, m->appliances[0].name);
}

static int write_nginx(FILE *out, const struct fs_shard_map *m, const struct ctl_proxy_skus *s, const char *listen)
{
	header(out, m, s, "nginx");
	fprintf(out, "# Run: nginx -c THIS_FILE (pid, error_log and daemon from the command line or\n"
	             "# the service; this file holds no paths).\n"
	             "worker_processes auto;\n"
	             "events { worker_connections 4096; }\n"
	             "http {\n"
	             "    access_log off;\n");
	for (uint32_t i = 0; i < m->appliance_count; i++)
		fprintf(out, "    upstream fs_shard_%s { server %s; keepalive 64; }\n", m->appliances[i].name,
		        m->appliances[i].addr);
	fprintf(out, "    map $fs_sku $fs_sku_shard {\n        default fs_shard_%s;\n", m->appliances[0].name);
	for (uint32_t i = 0; i < s->count; i++)
		fprintf(out, "        %s fs_shard_%s;\n", s->e[i].sku, m->appliances[s->e[i].appliance].name);
	fprintf(out, "    }\n    map $fs_owner $fs_id_shard {\n        default fs_shard_%s;\n", m->appliances[0].name);
	for (uint32_t i = 0; i < m->appliance_count; i++)
		fprintf(out, "        %02x fs_shard_%s;\n", i, m->appliances[i].name);
	fprintf(out, "    }\n"
	             "    server {\n"
	             "        listen %s;\n"
	             "        proxy_http_version 1.1;\n"
	             "        proxy_set_header Connection \"\";\n"
	             "        proxy_set_header Host $host;\n"
	             "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
	             "        location ~ ^/v1/skus/(?<fs_sku>[^/]+) { proxy_pass http://$fs_sku_shard; }\n"
	             "        location ~ \"^/v1/(?:reservations/r|orders/o)(?<fs_owner>[0-9a-f]{2})\" {\n"
	             "            proxy_pass http://$fs_id_shard;\n"
	             "        }\n"
	             "        location / {\n"
	             "            default_type application/json;\n"
	             "            return 404 '{\"error\":\"not_found\"}';\n"
	             "        }\n"
	             "    }\n"
	             "}\n", listen);
	return ferror(out) ? -1 : 0;
}

static int write_haproxy(FILE *out, const struct fs_shard_map *m, const struct ctl_proxy_skus *s,
                         const char *listen)
{
	header(out, m, s, "HAProxy");
	fprintf(out, "global\n"
	             "    # maxconn: HAProxy derives it from the descriptor limit; raise that for a crowd\n"
	             "defaults\n"
	             "    mode http\n"
	             "    option http-keep-alive\n"
	             "    option forwardfor\n"
	             "    timeout connect 5s\n"
	             "    timeout client 60s\n"
	             "    timeout server 60s\n"
	             "frontend flashsale\n"
	             "    bind %s\n"
	             "    acl fs_sku_path path_beg /v1/skus/\n"
	             "    acl fs_id_path path_reg ^/v1/(reservations/r|orders/o)[0-9a-f][0-9a-f]\n"
	             "    http-request return status 404 content-type application/json string "
	             "'{\"error\":\"not_found\"}' unless fs_sku_path || fs_id_path\n"
	             "    http-request set-var(txn.fs_sku) path,field(4,/) if fs_sku_path\n"
	             "    http-request set-var(txn.fs_owner) path,field(4,/),bytes(1,2) if fs_id_path\n",
	        listen);
	for (uint32_t a = 0; a < m->appliance_count; a++) {
		uint32_t on_line = 0;
		for (uint32_t i = 0; i < s->count; i++) {
			if (s->e[i].appliance != a)
				continue;
			if (on_line == 0)
				fprintf(out, "    use_backend fs_shard_%s if fs_sku_path { var(txn.fs_sku) -m str",
				        m->appliances[a].name);
			fprintf(out, " %s", s->e[i].sku);
			if (++on_line == HAPROXY_SKUS_PER_LINE) {
				fprintf(out, " }\n");
				on_line = 0;
			}
		}
		if (on_line)
			fprintf(out, " }\n");
		fprintf(out, "    use_backend fs_shard_%s if fs_id_path { var(txn.fs_owner) -m str %02x }\n",
		        m->appliances[a].name, a);
	}
	fprintf(out, "    default_backend fs_shard_%s\n", m->appliances[0].name);
	for (uint32_t a = 0; a < m->appliance_count; a++)
		fprintf(out, "backend fs_shard_%s\n    http-reuse safe\n    server %s %s\n", m->appliances[a].name,
		        m->appliances[a].name, m->appliances[a].addr);
	return ferror(out) ? -1 : 0;
}

int ctl_proxy_write(FILE *out, enum ctl_proxy kind, const struct fs_shard_map *m,
                    const struct ctl_proxy_skus *s, const char *listen)
{
	assert(m->appliance_count > 0 && listen != NULL);
	return kind == CTL_PROXY_NGINX ? write_nginx(out, m, s, listen) : write_haproxy(out, m, s, listen);
}

static const char shard_map_usage[] =
"usage: flashctl shard-map --nginx|--haproxy --map FILE [--skus A,B,...] [--listen HOST:PORT] [--out FILE]\n"
"  the proxy configuration for appliances as shards (README \"Shards behind nginx\"): SKU routes\n"
"  by the map's pins and the listed SKUs (their owner computed as flashsaled does), ids by the\n"
"  shard index they carry. Default --listen 0.0.0.0:80, default --out standard output.\n";

int ctl_shard_map(int argc, char **argv)
{
	enum ctl_proxy kind = 0;
	const char *map_path = NULL, *skus = NULL, *listen = "0.0.0.0:80", *out_path = NULL;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--nginx") == 0 || strcmp(a, "--haproxy") == 0) {
			kind = a[2] == 'n' ? CTL_PROXY_NGINX : CTL_PROXY_HAPROXY;
			continue;
		}
		const char **slot = strcmp(a, "--map") == 0 ? &map_path : strcmp(a, "--skus") == 0 ? &skus :
		                    strcmp(a, "--listen") == 0 ? &listen : strcmp(a, "--out") == 0 ? &out_path : NULL;
		if (slot == NULL || i + 1 == argc) {
			fputs(shard_map_usage, stderr);
			return 2;
		}
		*slot = argv[++i];
	}
	if (kind == 0 || map_path == NULL) {
		fputs(shard_map_usage, stderr);
		return 2;
	}
	static struct fs_shard_map map;
	static struct ctl_proxy_skus list;
	char err[512];
	if (fs_shard_load(&map, map_path, err, sizeof err) != 0) {
		fprintf(stderr, "flashctl: shard-map: %s: %s\n", map_path, err);
		return 1;
	}
	if (map.appliance_count == 0) {
		fprintf(stderr, "flashctl: shard-map: %s declares no `shard NAME HOST:PORT`\n", map_path);
		return 1;
	}
	if (ctl_proxy_skus_collect(&list, &map, skus, err, sizeof err) != 0) {
		fprintf(stderr, "flashctl: shard-map: %s\n", err);
		return 1;
	}
	FILE *out = out_path ? fopen(out_path, "w") : stdout;
	if (out == NULL) {
		fprintf(stderr, "flashctl: shard-map: cannot write %s\n", out_path);
		return 1;
	}
	int rc = ctl_proxy_write(out, kind, &map, &list, listen);
	int done = out == stdout ? fflush(out) : fclose(out);
	if (done != 0 || rc != 0) {
		fprintf(stderr, "flashctl: shard-map: write failed\n");
		return 1;
	}
	return 0;
}
