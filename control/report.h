/* report.h - `flashctl report SKU`, a sale's closing statement (see report.c). */
#ifndef CTL_REPORT_H
#define CTL_REPORT_H

/* Replays DATA_DIR/journal, prints the statement; returns the exit status
 * (0, or 1 when the journal is damaged, diverges or the SKU is unknown). */
int ctl_report(int argc, char **argv, const char *admin, const char *token);

#endif
