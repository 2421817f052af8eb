/* fs_cmd.c - the small helpers that go with the shared command/answer
 * types: public ids ("r"/"o" + 16 lowercase hex digits) and the names and
 * HTTP codes the API shows for each enum. Pure functions, no allocation.
 */
#include "common/fs_cmd.h"

#include <assert.h>
#include <stddef.h>

void fs_pubid_format(char out[FS_PUBID_LEN + 1], char prefix, uint64_t no)
{
	static const char hex[] = "0123456789abcdef";
	assert(out != NULL);
	assert(prefix == 'r' || prefix == 'o');
	out[0] = prefix;
	for (int i = 0; i < 16; i++)
		out[16 - i] = hex[(no >> (4 * i)) & 15];
	out[FS_PUBID_LEN] = '\0';
}

uint64_t fs_pubid_parse(const char *s, size_t len, char prefix)
{
	if (s == NULL || len != FS_PUBID_LEN || s[0] != prefix)
		return 0;
	uint64_t no = 0;
	for (size_t i = 1; i < FS_PUBID_LEN; i++) {
		char c = s[i];
		uint64_t digit;
		if (c >= '0' && c <= '9')
			digit = (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			digit = (uint64_t)(c - 'a' + 10);
		else
			return 0;
		no = no << 4 | digit;
	}
	return no;
}

static const char *const err_names[FS_ERR_COUNT] = {
	[FS_OK] = "ok",
	[FS_ERR_SOLD_OUT] = "sold_out",
	[FS_ERR_LIMIT_REACHED] = "limit_reached",
	[FS_ERR_RATE_LIMITED] = "rate_limited",
	[FS_ERR_SALE_NOT_OPEN] = "sale_not_open",
	[FS_ERR_FROZEN] = "frozen",
	[FS_ERR_OVERLOADED] = "overloaded",
	[FS_ERR_UNKNOWN_SKU] = "unknown_sku",
	[FS_ERR_NOT_FOUND] = "not_found",
	[FS_ERR_NOT_CANCELLABLE] = "not_cancellable",
	[FS_ERR_EXPIRED] = "expired",
	[FS_ERR_ALREADY_CHECKED_OUT] = "already_checked_out",
	[FS_ERR_BAD_REQUEST] = "bad_request",
	[FS_ERR_EXISTS] = "exists",
	[FS_ERR_BAD_STATE] = "bad_state",
	[FS_ERR_KEY_REUSED] = "idempotency_key_reused",
	[FS_ERR_FORBIDDEN] = "forbidden",
	[FS_ERR_RECLAIMED] = "reclaimed",   /* answered as not_found with a detail */
	[FS_ERR_STANDBY] = "standby",
	[FS_ERR_RETAINED] = "retained",
	[FS_ERR_SINKS_BEHIND] = "sinks_behind",
};

static const uint16_t err_http[FS_ERR_COUNT] = {
	[FS_OK] = 200,
	[FS_ERR_SOLD_OUT] = 409,
	[FS_ERR_LIMIT_REACHED] = 409,
	[FS_ERR_RATE_LIMITED] = 429,
	[FS_ERR_SALE_NOT_OPEN] = 403,
	[FS_ERR_FROZEN] = 503,
	[FS_ERR_OVERLOADED] = 503,
	[FS_ERR_UNKNOWN_SKU] = 404,
	[FS_ERR_NOT_FOUND] = 404,
	[FS_ERR_NOT_CANCELLABLE] = 409,
	[FS_ERR_EXPIRED] = 410,
	[FS_ERR_ALREADY_CHECKED_OUT] = 409,
	[FS_ERR_BAD_REQUEST] = 400,
	[FS_ERR_EXISTS] = 409,
	[FS_ERR_BAD_STATE] = 409,
	[FS_ERR_KEY_REUSED] = 422,
	[FS_ERR_FORBIDDEN] = 403,
	[FS_ERR_RECLAIMED] = 404,
	[FS_ERR_STANDBY] = 503,
	[FS_ERR_RETAINED] = 409,
	[FS_ERR_SINKS_BEHIND] = 409,
};

/* Returns "unknown" for a value outside the enum (a corrupt record must
 * still print), never NULL. */
const char *fs_err_name(enum fs_err e)
{
	if ((unsigned)e >= FS_ERR_COUNT || err_names[e] == NULL)
		return "unknown";
	return err_names[e];
}

/* Returns 500 for a value outside the enum. */
int fs_err_http(enum fs_err e)
{
	if ((unsigned)e >= FS_ERR_COUNT || err_http[e] == 0)
		return 500;
	return err_http[e];
}

const char *fs_sale_state_name(enum fs_sale_state s)
{
	static const char *const names[FS_SALE_STATE_COUNT] = {
		[FS_SALE_SCHEDULED] = "scheduled",
		[FS_SALE_OPEN] = "open",
		[FS_SALE_PAUSED] = "paused",
		[FS_SALE_FROZEN] = "frozen",
		[FS_SALE_SOLD_OUT] = "sold_out",
		[FS_SALE_CLOSED] = "closed",
	};
	if ((unsigned)s >= FS_SALE_STATE_COUNT || names[s] == NULL)
		return "unknown";
	return names[s];
}

const char *fs_res_status_name(enum fs_res_status s)
{
	static const char *const names[FS_RES_STATUS_COUNT] = {
		[FS_RES_NONE] = "NONE",
		[FS_RES_WAITLISTED] = "WAITLISTED",
		[FS_RES_RESERVED] = "RESERVED",
		[FS_RES_PAYING] = "PAYING",
		[FS_RES_CONFIRMED] = "CONFIRMED",
		[FS_RES_CANCELLED] = "CANCELLED",
		[FS_RES_EXPIRED] = "EXPIRED",
		[FS_RES_FAILED] = "FAILED",
		[FS_RES_QUEUED] = "QUEUED",
		[FS_RES_REJECTED] = "REJECTED",
	};
	if ((unsigned)s >= FS_RES_STATUS_COUNT || names[s] == NULL)
		return "UNKNOWN";
	return names[s];
}

const char *fs_order_status_name(enum fs_order_status s)
{
	static const char *const names[] = {
		[FS_ORDER_NONE] = "NONE",
		[FS_ORDER_PENDING] = "PENDING",
		[FS_ORDER_PAID] = "PAID",
		[FS_ORDER_FAILED] = "FAILED",
		[FS_ORDER_REFUNDING] = "REFUNDING",
		[FS_ORDER_REFUNDED] = "REFUNDED",
	};
	if ((unsigned)s >= sizeof(names) / sizeof(names[0]) || names[s] == NULL)
		return "UNKNOWN";
	return names[s];
}

/* The table is indexed by value, so a command type added to the enum
 * without a name here prints "unknown" instead of reading out of bounds. */
const char *fs_cmd_type_name(enum fs_cmd_type t)
{
	static const char *const names[FS_CMD_TYPE_COUNT] = {
		[FS_CMD_NONE] = "none",
		[FS_CMD_SALE_CREATE] = "sale_create",
		[FS_CMD_SALE_OPEN] = "sale_open",
		[FS_CMD_SALE_PAUSE] = "sale_pause",
		[FS_CMD_SALE_FREEZE] = "sale_freeze",
		[FS_CMD_SALE_RESUME] = "sale_resume",
		[FS_CMD_SALE_CLOSE] = "sale_close",
		[FS_CMD_STOCK_ADD] = "stock_add",
		[FS_CMD_RESERVE] = "reserve",
		[FS_CMD_CANCEL] = "cancel",
		[FS_CMD_CHECKOUT] = "checkout",
		[FS_CMD_EXPIRE] = "expire",
		[FS_CMD_PAY_RESULT] = "pay_result",
		[FS_CMD_RES_GET] = "res_get",
		[FS_CMD_ORDER_GET] = "order_get",
		[FS_CMD_SALE_GET] = "sale_get",
		[FS_CMD_PROMOTE] = "promote",
		[FS_CMD_WAITLIST_SERVE] = "waitlist_serve",
		[FS_CMD_WAITROOM_SERVE] = "waitroom_serve",
		[FS_CMD_ADMIT] = "admit",
		[FS_CMD_IP_RULE] = "ip_rule",
		[FS_CMD_USER_TIER] = "user_tier",
		[FS_CMD_RISK_FLAG] = "risk_flag",
		[FS_CMD_RECLAIM] = "reclaim",
		[FS_CMD_STOCK_REMOVE] = "stock_remove",
		[FS_CMD_REFUND] = "refund",
		[FS_CMD_REFUND_RESULT] = "refund_result",
		[FS_CMD_SALE_ARCHIVE] = "sale_archive",
	};
	if ((unsigned)t >= FS_CMD_TYPE_COUNT || names[t] == NULL)
		return "unknown";
	return names[t];
}
