/* draw.h - the waiting room's draw: its seed (commit before the sale
 * opens, reveal at the opening) and its random generator (API.md fairness;
 * EVENTS.md says how to verify a draw).
 *
 * The seed is 32 random bytes kept in DATA/draws/<sku>-<commit prefix>.seed
 * (mode 0600) from the sale's creation until its opening. The creation
 * journals only SHA-256(seed) (the commitment, published by `sale status`);
 * the opening journals the seed itself, and the decide step refuses to open
 * unless SHA-256(seed) matches the commitment. Anyone with the journal can
 * then re-derive the order (`flashsale-journal draw DIR SKU`).
 */
#ifndef WR_DRAW_H
#define WR_DRAW_H

#include <stddef.h>
#include <stdint.h>

/* Creates a seed file for sku; writes the commitment as 64 hex chars (plus
 * NUL) into commit_hex. Returns 0, or -1 with a reason in err. */
int wr_draw_seed_create(const char *data_dir, const char *sku, size_t sku_len,
                        char commit_hex[65], char *err, size_t err_len);

/* Loads the seed whose SHA-256 is `commit`, as 64 hex chars (plus NUL).
 * Returns 0, or -1 when it is missing or does not match. */
int wr_draw_seed_load(const char *data_dir, const char *sku, size_t sku_len,
                      const uint8_t commit[32], char seed_hex[65]);

void wr_hex(const uint8_t *bytes, size_t n, char *out);   /* 2n chars + NUL */

/* The waiting room's draw (EVENTS.md): Fisher-Yates from the end over v[],
 * driven by xoshiro256** seeded with SHA-256(seed). Pure (no I/O, no
 * clock): the decide step draws with it at the opening and the journal
 * tool re-derives an opening's order with it. */
void wr_draw_shuffle(uint32_t *v, uint32_t n, const uint8_t seed[32]);

#endif
