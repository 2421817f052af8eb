/* proc_cpu.h - CPU time a server spends, read from /proc, for the
 * "server CPU-µs per request" figure (ARCHITECTURE.md, Performance targets).
 */
#ifndef PERF_PROC_CPU_H
#define PERF_PROC_CPU_H

#include <stddef.h>
#include <stdint.h>

/* utime + stime, in µs, summed over /proc/PID/task/ * /stat of each pid (the
 * server's live threads). Returns -1 when a pid cannot be read. */
int64_t proc_cpu_us(const int *pids, size_t pid_count);

/* Parses utime+stime (clock ticks) out of one stat line; -1 if malformed.
 * Exposed for tests: the comm field may hold spaces and parentheses. */
int64_t proc_stat_ticks(const char *line);

#endif
