/* ctl_client.h - one HTTP/1.1 request to flashsaled's admin socket (unix:PATH,
 * or HOST:PORT with the admin token), for the operator tools (flashctl and
 * flashsale-control). Blocking, bounded in time and size, no exits: the
 * caller decides what a failure means.
 */
#ifndef CTL_CLIENT_H
#define CTL_CLIENT_H

#include <stddef.h>

/* Sends `method target` to `admin` ("unix:PATH" or "HOST:PORT"; the TCP form
 * sends "Authorization: Bearer token"; token may be NULL on unix) and reads
 * the whole answer into buf (cap bytes, NUL-terminated). Returns the HTTP
 * status with *body pointing at the body inside buf, or -1 with a reason in
 * err (unreachable, timed out after timeout_ms, malformed, too large). */
int ctl_client_call(const char *admin, const char *token, const char *method, const char *target,
                    char *buf, size_t cap, const char **body, int timeout_ms, char *err, size_t err_len);

/* Reads the admin token file (trailing whitespace dropped) into tok (cap
 * bytes, NUL-terminated). Returns 0, or -1 with a reason in err. */
int ctl_client_token(const char *path, char *tok, size_t cap, char *err, size_t err_len);

#endif
