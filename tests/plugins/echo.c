/* echo.c — a test plugin that returns a copy of the job's payload text as
 * the new payload, whatever that text is: the test feeds it payloads that are
 * not JSON objects to see them refused. */
#include <stdlib.h>
#include <string.h>

#include "pipelined-plugin.h"

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	result->payload = strdup(job->payload);
	if (!result->payload)
		return PIPELINED_FAIL;
	return PIPELINED_OK;
}
