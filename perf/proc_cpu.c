/* proc_cpu.c - server CPU time from /proc/PID/task/ * /stat (see proc_cpu.h). */
#include "proc_cpu.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROC_TASKS_MAX 4096   /* threads read per pid */

int64_t proc_stat_ticks(const char *line)
{
	assert(line != NULL);
	const char *p = strrchr(line, ')');   /* comm ends at the LAST ')' */
	if (p == NULL)
		return -1;
	p++;
	/* after comm: field 3 (state) .. field 15 (stime) */
	unsigned long long utime = 0, stime = 0;
	int n = sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
	               &utime, &stime);
	if (n != 2)
		return -1;
	return (int64_t)(utime + stime);
}

static int64_t read_ticks(const char *path)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	char *ok = fgets(line, sizeof(line), f);
	fclose(f);
	return ok ? proc_stat_ticks(line) : -1;
}

/* Sum over the live threads of one pid. */
static int64_t pid_ticks(int pid)
{
	char dir_path[64];
	snprintf(dir_path, sizeof(dir_path), "/proc/%d/task", pid);
	DIR *d = opendir(dir_path);
	if (d == NULL)
		return -1;
	int64_t sum = 0;
	int tasks = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && tasks < PROC_TASKS_MAX) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char path[400];
		int n = snprintf(path, sizeof(path), "%s/%.255s/stat", dir_path, e->d_name);
		assert(n > 0 && (size_t)n < sizeof(path));
		int64_t t = read_ticks(path);
		if (t > 0)        /* a thread that just exited reads as -1 */
			sum += t;
		tasks++;
	}
	closedir(d);
	return sum;
}

int64_t proc_cpu_us(const int *pids, size_t pid_count)
{
	assert(pids != NULL || pid_count == 0);
	long hz = sysconf(_SC_CLK_TCK);
	assert(hz > 0);
	int64_t ticks = 0;
	for (size_t i = 0; i < pid_count; i++) {
		int64_t t = pid_ticks(pids[i]);
		if (t < 0)
			return -1;
		ticks += t;
	}
	return ticks * 1000000 / hz;
}
