/* norun.c — a test plugin without pipelined_run (its optional entry points
 * are there, and must not make up for it). */
#include "pipelined-plugin.h"

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_worker_init(const char *arg, void **state)
{
	return 0;
}

void pipelined_worker_fini(void *state)
{
}
