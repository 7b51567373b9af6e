/* noabi.c — a test plugin without pipelined_plugin_abi. */
#include "pipelined-plugin.h"

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	return PIPELINED_OK;
}
