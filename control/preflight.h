/* preflight.h - `flashctl preflight`, the go/no-go table before a sale (see preflight.c). */
#ifndef CTL_PREFLIGHT_H
#define CTL_PREFLIGHT_H

/* Runs every check, prints the table; returns the exit status (0 GO, 1 any
 * NO-GO); exits 2 on bad usage. admin/token: the flashsaled to ask about
 * sinks (token NULL on a unix socket). */
int ctl_preflight(int argc, char **argv, const char *admin, const char *token);

#endif
