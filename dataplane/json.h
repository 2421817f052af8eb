/* json.h - the request bodies we accept, read with jsmn (libjsmn-dev): a
 * tokenizer over a caller-owned token array, no allocation. Bodies are
 * small flat objects; anything else is a clear 400 with a detail string.
 */
#ifndef DP_JSON_H
#define DP_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Body of POST /v1/skus/{sku}/reservations: {"quantity": N} with N an
 * integer 1..quantity_max; an empty body means quantity 1; unknown keys
 * are ignored. Returns 0, or -1 with *detail set to a static string. */
int dp_json_reserve_body(const char *body, size_t len, uint32_t quantity_max,
                         uint32_t *quantity, const char **detail);

/* Body of POST /v1/reservations/{id}/checkout: {"payment_token":"..."},
 * token 1..64 bytes of printable ASCII without quotes/backslashes.
 * Returns the token length, or -1 with *detail set. */
int dp_json_checkout_body(const char *body, size_t len, char token[64],
                          const char **detail);

#endif
