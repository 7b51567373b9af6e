/* badabi.c — a test plugin built for an ABI this daemon does not speak. */
#include "pipelined-plugin.h"

unsigned pipelined_plugin_abi(void)
{
	return 99;
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	return PIPELINED_OK;
}
