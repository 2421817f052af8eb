/* json_fuzz.c - libFuzzer target for the request bodies (dataplane/json.c):
 * the reservation body {"quantity":N} and the checkout body
 * {"payment_token":"..."}, over arbitrary bytes.
 *
 * Invariants (a violation aborts): a reservation body is accepted only with
 * a quantity in 1..quantity_max, a refusal always has a detail; a checkout
 * token is 1..64 printable ASCII bytes without quotes or backslashes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "dataplane/json.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a private copy with no terminator: the readers must respect len */
	char *body = malloc(size ? size : 1);
	CHECK(body != NULL);
	for (size_t i = 0; i < size; i++)
		body[i] = (char)data[i];
	uint32_t q = 0;
	const char *detail = NULL;
	uint32_t qmax = size ? 1u + data[0] % 100u : 10u;
	if (dp_json_reserve_body(body, size, qmax, &q, &detail) == 0)
		CHECK(q >= 1 && q <= qmax);
	else
		CHECK(detail != NULL);
	char token[64];
	detail = NULL;
	int n = dp_json_checkout_body(body, size, token, &detail);
	if (n >= 0) {
		CHECK(n >= 1 && n <= 64);
		for (int i = 0; i < n; i++)
			CHECK(token[i] > 0x20 - 1 && token[i] < 0x7f && token[i] != '"' && token[i] != '\\');
	} else {
		CHECK(detail != NULL);
	}
	free(body);
	return 0;
}
