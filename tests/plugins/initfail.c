/* initfail.c — a test plugin whose workers cannot start: pipelined_worker_init
 * stores a state (which the daemon must not take) and then fails. */
#include "pipelined-plugin.h"

static int dummy;

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_worker_init(const char *arg, void **state)
{
	*state = &dummy;
	return -1;
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	return PIPELINED_OK;
}

void pipelined_worker_fini(void *state)
{
}
