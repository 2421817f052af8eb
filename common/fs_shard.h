/* fs_shard.h - who owns a SKU: the shard map shared by every part that
 * routes by SKU (the dataplane's workers, flashsaled's writer shards, the
 * admin fan-out, flashctl shard-map's proxy configuration).
 *
 * Two levels, one rule each (ARCHITECTURE.md: exactly one writer per SKU
 * shard):
 *   appliance   which flashsaled box owns the SKU (--shard NAME --shard-map)
 *   writer      which writer shard inside that box owns it (--writers N)
 * A SKU pinned in the map goes where the map says; any other SKU goes by a
 * stable hash of its name (FNV-1a 64, then MurmurHash3's fmix64), so every process that reads the same
 * map decides the same owner without talking to the others.
 *
 * Public ids carry their owner (fs_cmd.h: "r"/"o" + 16 hex digits of the
 * number): bits 56..63 are the appliance index, bits 48..55 the writer
 * shard, bits 0..47 the shard's own number. With one appliance and one
 * writer the ids are exactly the numbers they were before shards. A proxy
 * routes an id by its first two hex digits (the appliance index).
 *
 * The map file (text, '#' starts a comment, one directive per line):
 *   shard NAME HOST:PORT     an appliance, in order: the first is index 0
 *   sku SKU NAME             pin a SKU to appliance NAME
 *   writer SKU N             pin a SKU to writer shard N inside its appliance
 * A map for --writers alone may hold only `writer` lines.
 */
#ifndef FS_SHARD_H
#define FS_SHARD_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"

#define FS_SHARD_APPLIANCES_MAX  64u
#define FS_SHARD_WRITERS_MAX     16u
#define FS_SHARD_PINS_MAX        4096u
#define FS_SHARD_NAME_LEN_MAX    31u
#define FS_SHARD_ADDR_LEN_MAX    63u

#define FS_ID_APPLIANCE_SHIFT    56
#define FS_ID_WRITER_SHIFT       48
#define FS_ID_LOCAL_MASK         ((UINT64_C(1) << FS_ID_WRITER_SHIFT) - 1)

struct fs_shard_appliance {
	char name[FS_SHARD_NAME_LEN_MAX + 1];
	char addr[FS_SHARD_ADDR_LEN_MAX + 1];    /* HOST:PORT the proxy sends to */
};

struct fs_shard_pin {
	char sku[FS_SKU_LEN_MAX + 1];
	int16_t appliance;                       /* -1: not pinned at this level */
	int16_t writer;                          /* -1: not pinned at this level */
};

struct fs_shard_map {
	uint32_t appliance_count;                /* 0: a map without `shard` lines */
	uint32_t pin_count;
	struct fs_shard_appliance appliances[FS_SHARD_APPLIANCES_MAX];
	struct fs_shard_pin pins[FS_SHARD_PINS_MAX];
};

/* The stable hash every process uses for SKUs the map does not pin. */
uint64_t fs_shard_hash(const char *sku, size_t len);

/* Parses map text (NUL-terminated). 0, or -1 with "line N: reason" in err.
 * Refuses unknown directives, duplicate names or SKUs, a `sku` line naming
 * an appliance not declared before it, and anything past the limits. */
int fs_shard_parse(struct fs_shard_map *m, const char *text, char *err, size_t err_len);
/* Reads and parses a file (at most 1 MiB). */
int fs_shard_load(struct fs_shard_map *m, const char *path, char *err, size_t err_len);

/* 0 when every `writer` pin is below `writers`, else -1 with the SKU in err
 * (flashsaled checks this at start-up: a pin is never silently wrapped). */
int fs_shard_check_writers(const struct fs_shard_map *m, uint32_t writers, char *err, size_t err_len);

/* Index of appliance NAME, or -1. */
int fs_shard_appliance_index(const struct fs_shard_map *m, const char *name);

/* The owners of a SKU (a linear look through the pins: callers on a hot
 * path resolve a SKU once, e.g. when its sale is created, and keep it): appliance index in [0, appliance_count) (0 when the
 * map has no appliances) and writer shard in [0, writers). m may be NULL
 * (hash only). */
uint32_t fs_shard_appliance_of(const struct fs_shard_map *m, const char *sku, size_t len);
uint32_t fs_shard_writer_of(const struct fs_shard_map *m, const char *sku, size_t len,
                            uint32_t writers);

/* What one writer shard's sink output is called, so that the writer shards
 * of a box (and the appliances sharing one PostgreSQL or Kafka cluster)
 * never write over each other. `name` is the appliance (--shard, "" for
 * none); `writers` the box's --writers. With one writer the names are the
 * ones a box had before writer shards:
 *   label   (the rows' shard column)  NAME            | NAME/wK, or wK without a name
 *   cursor  (sink_cursor, Kafka file) flashsaled[.NAME] | flashsaled[.NAME].wK
 *   topic   (Kafka)                   BASE            | BASE.wK
 * BASE is --kafka-topic, else flashsale.journal[.NAME]. Returns 0, or -1
 * when `out` is too small. */
#define FS_SHARD_LABEL_LEN_MAX   (FS_SHARD_NAME_LEN_MAX + 4u)   /* NAME/w15 */
enum fs_shard_naming { FS_SHARD_LABEL, FS_SHARD_CURSOR, FS_SHARD_TOPIC };
int fs_shard_sink_name(char *out, size_t out_len, enum fs_shard_naming what, const char *name,
                       const char *topic_base, uint32_t writer, uint32_t writers);

static inline uint64_t fs_id_compose(uint32_t appliance, uint32_t writer, uint64_t local)
{
	return (uint64_t)appliance << FS_ID_APPLIANCE_SHIFT |
	       (uint64_t)(writer & 0xffu) << FS_ID_WRITER_SHIFT | (local & FS_ID_LOCAL_MASK);
}
static inline uint32_t fs_id_appliance(uint64_t no) { return (uint32_t)(no >> FS_ID_APPLIANCE_SHIFT); }
static inline uint32_t fs_id_writer(uint64_t no) { return (uint32_t)(no >> FS_ID_WRITER_SHIFT) & 0xffu; }
static inline uint64_t fs_id_local(uint64_t no) { return no & FS_ID_LOCAL_MASK; }

#endif
