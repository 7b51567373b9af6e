/* scratch.c — a test plugin that uses the job's scratch directory: makes it,
 * writes "note" there, says so (made_workdir), and fails permanently when
 * the payload contains "fail". */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "pipelined-plugin.h"

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	char path[4200];
	if (mkdir(job->workdir, 0700) < 0 && errno != EEXIST) {
		snprintf(result->error, sizeof(result->error), "mkdir: %s", strerror(errno));
		return PIPELINED_FAIL;
	}
	result->made_workdir = 1;
	snprintf(path, sizeof(path), "%s/note", job->workdir);
	FILE *f = fopen(path, "w");
	if (f) {
		fputs("from the plugin\n", f);
		fclose(f);
	}
	if (strstr(job->payload, "fail")) {
		snprintf(result->error, sizeof(result->error), "asked to fail");
		return PIPELINED_FAIL_PERMANENT;
	}
	return PIPELINED_OK;
}
