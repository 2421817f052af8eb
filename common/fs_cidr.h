/* fs_cidr.h - IPv4 CIDR rules (operator deny/allow lists, trusted proxies):
 * parse, format, match. Header-only, no allocation. */
#ifndef FS_CIDR_H
#define FS_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct fs_cidr { uint32_t net; uint32_t mask; };   /* host byte order */

static inline uint32_t fs_cidr_mask(unsigned bits) { return bits == 0 ? 0 : 0xffffffffu << (32 - bits); }

/* Parses "a.b.c.d" or "a.b.c.d/n" (len bytes, not NUL-terminated).
 * Returns 0, or -1 when malformed (then *out is unchanged). */
static inline int fs_cidr_parse(const char *s, size_t len, struct fs_cidr *out)
{
	uint32_t parts[5] = { 0 };
	unsigned idx = 0, digits = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch >= '0' && ch <= '9') {
			parts[idx] = parts[idx] * 10 + (uint32_t)(ch - '0');
			if (++digits > 3 || parts[idx] > 255)
				return -1;
		} else if ((ch == '.' && idx < 3) || (ch == '/' && idx == 3)) {
			if (digits == 0)
				return -1;
			idx++;
			digits = 0;
		} else {
			return -1;
		}
	}
	if (digits == 0 || idx < 3)
		return -1;
	unsigned bits = idx == 4 ? parts[4] : 32;
	if (bits > 32)
		return -1;
	uint32_t addr = parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3];
	out->mask = fs_cidr_mask(bits);
	out->net = addr & out->mask;
	return 0;
}

static inline int fs_cidr_match(const struct fs_cidr *c, uint32_t ip) { return (ip & c->mask) == c->net; }

/* Is `ip` in any of the n ranges (e.g. --trusted-proxy's list)? */
static inline int fs_cidr_match_any(const struct fs_cidr *list, uint32_t n, uint32_t ip)
{
	for (uint32_t i = 0; i < n; i++)
		if (fs_cidr_match(&list[i], ip))
			return 1;
	return 0;
}

static inline int fs_cidr_format(const struct fs_cidr *c, char *out, size_t cap)
{
	unsigned bits = 0;
	for (uint32_t m = c->mask; m; m <<= 1)
		bits++;
	return snprintf(out, cap, "%u.%u.%u.%u/%u", c->net >> 24, (c->net >> 16) & 255, (c->net >> 8) & 255,
	                c->net & 255, bits);
}

#endif
