/* record.c - compact encoding of decided commands in journal batches
 * (format in record.h). */
#include "writer/record.h"

#include <assert.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "journal records are little endian");

uint32_t wr_rec_encode(const struct fs_cmd *c, uint8_t *out)
{
	assert(c->type > FS_CMD_NONE && c->type < FS_CMD_TYPE_COUNT);
	assert(c->sku_len <= FS_SKU_LEN_MAX && c->user_len <= FS_ID_LEN_MAX);
	assert(c->key_len <= FS_ID_LEN_MAX && c->text_len <= FS_ID_LEN_MAX);
	uint32_t len = WR_REC_FIXED_BYTES + c->sku_len + c->user_len + c->key_len + c->text_len;
	uint32_t padded = (len + 7u) & ~7u;
	memset(out, 0, padded);
	put16(out, (uint16_t)padded);
	out[2] = c->type;
	out[3] = c->err;
	out[4] = c->pay;
	out[5] = c->sku_len;
	out[6] = c->user_len;
	out[7] = c->key_len;
	out[8] = c->text_len;
	out[9] = c->out_status;
	put32(out + 12, c->quantity);
	put64(out + 16, c->ref);
	put64(out + 24, c->out_ref);
	put64(out + 32, (uint64_t)c->out_val);
	put64(out + 40, c->sale.total);
	put32(out + 48, c->sale.per_user);
	put32(out + 52, c->sale.hold_ms);
	put32(out + 56, c->sale.waitlist_max);
	put32(out + 60, c->sale.default_tier);
	put64(out + 64, (uint64_t)c->sale.price_cents);
	put64(out + 72, (uint64_t)c->sale.opens_at_ms);
	put32(out + 80, c->sale.prequeue_window_ms);
	put32(out + 84, c->sale.outflow_per_s);
	uint8_t *p = out + WR_REC_FIXED_BYTES;
	memcpy(p, c->sku, c->sku_len);   p += c->sku_len;
	memcpy(p, c->user, c->user_len); p += c->user_len;
	memcpy(p, c->key, c->key_len);   p += c->key_len;
	memcpy(p, c->text, c->text_len);
	assert(padded <= WR_REC_BYTES_MAX);
	return padded;
}

uint32_t wr_rec_decode(const uint8_t *buf, uint32_t len, struct fs_cmd *c)
{
	if (len < WR_REC_FIXED_BYTES)
		return 0;
	uint32_t rlen = get16(buf);
	if (rlen < WR_REC_FIXED_BYTES || rlen > len || rlen % 8 != 0)
		return 0;
	if (buf[2] == FS_CMD_NONE || buf[2] >= FS_CMD_TYPE_COUNT || buf[3] >= FS_ERR_COUNT)
		return 0;
	if (buf[5] > FS_SKU_LEN_MAX || buf[6] > FS_ID_LEN_MAX || buf[7] > FS_ID_LEN_MAX ||
	    buf[8] > FS_ID_LEN_MAX)
		return 0;
	uint32_t need = WR_REC_FIXED_BYTES + buf[5] + buf[6] + buf[7] + buf[8];
	if (((need + 7u) & ~7u) != rlen)
		return 0;
	memset(c, 0, sizeof *c);
	c->type = buf[2];
	c->err = buf[3];
	c->pay = buf[4];
	c->sku_len = buf[5];
	c->user_len = buf[6];
	c->key_len = buf[7];
	c->text_len = buf[8];
	c->out_status = buf[9];
	c->quantity = get32(buf + 12);
	c->ref = get64(buf + 16);
	c->out_ref = get64(buf + 24);
	c->out_val = (int64_t)get64(buf + 32);
	c->sale.total = get64(buf + 40);
	c->sale.per_user = get32(buf + 48);
	c->sale.hold_ms = get32(buf + 52);
	c->sale.waitlist_max = get32(buf + 56);
	c->sale.default_tier = get32(buf + 60);
	c->sale.price_cents = (int64_t)get64(buf + 64);
	c->sale.opens_at_ms = (int64_t)get64(buf + 72);
	c->sale.prequeue_window_ms = get32(buf + 80);
	c->sale.outflow_per_s = get32(buf + 84);
	const uint8_t *p = buf + WR_REC_FIXED_BYTES;
	memcpy(c->sku, p, c->sku_len);   p += c->sku_len;
	memcpy(c->user, p, c->user_len); p += c->user_len;
	memcpy(c->key, p, c->key_len);   p += c->key_len;
	memcpy(c->text, p, c->text_len);
	return rlen;
}

int wr_rec_decode_batch(const uint8_t *body, uint32_t body_len, uint32_t record_count,
                        struct fs_cmd *cmds, uint32_t cap)
{
	uint32_t n = 0, off = 0;
	while (off < body_len) {
		if (n >= cap)
			return -1;
		uint32_t used = wr_rec_decode(body + off, body_len - off, &cmds[n]);
		if (used == 0)
			return -1;
		assert(used <= body_len - off && used % 8 == 0);
		off += used;
		n++;
	}
	assert(off == body_len);
	return n == record_count ? (int)n : -1;
}
