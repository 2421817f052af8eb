/* response.h - writes complete HTTP/1.1 answers (status line, headers,
 * JSON body) into a caller's buffer, without allocation.
 */
#ifndef DP_RESPONSE_H
#define DP_RESPONSE_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"
#include "dataplane/pubid.h"

/* Formats the answer the writer produced. Bodies (API.md):
 *  FS_BODY_ERROR:    {"error":"<fs_err_name>"} (+ "retry_after_ms","queue_position" and a
 *                    Retry-After header for FS_ERR_RATE_LIMITED)
 *  FS_BODY_RES:      {"reservation_id","sku","quantity","status","expires_at"[,"order_id"][,"position"]}
 *                    (WAITLISTED: {"status":"WAITLISTED","reservation_id","position","sku","quantity"})
 *  FS_BODY_CHECKOUT: PAID: {"order_id","reservation_id","status":"PAID","amount"}
 *                    FAILED: {"order_id","reservation_id","status":"FAILED","reason"}
 *  FS_BODY_ORDER:    {"order_id","reservation_id","sku","quantity","status"[,"paid_at"]}
 *  FS_BODY_SALE:     {"sku","state","total","available","reserved","sold","version"}
 *  FS_BODY_EMPTY:    {"ok":true}
 * Times are RFC 3339 UTC with milliseconds ("2026-11-25T16:22:44.123Z").
 * The writer's numbers in a become public ids of `owner` (dataplane/pubid.h).
 * Returns bytes written, or -1 when cap is too small. */
int dp_resp_answer(char *out, size_t cap, const struct fs_ans *a, struct dp_id_owner owner, int keep_alive);

/* {"error":"<error>"[,"detail":"<detail>"]} with the given status. */
int dp_resp_error(char *out, size_t cap, int http, const char *error,
                  const char *detail, int keep_alive);

/* Any status with a ready JSON (or text) body and content type. */
int dp_resp_raw(char *out, size_t cap, int http, const char *content_type,
                const char *body, size_t body_len, int keep_alive);

/* RFC 3339 UTC with milliseconds; returns length (24). */
int dp_fmt_time_ms(char out[32], int64_t ms);

#endif
