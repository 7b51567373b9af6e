/* noop.c — the cheapest plugin there is: every job succeeds, its payload
 * unchanged (result->payload stays NULL).
 *
 * It has no per-worker state, so it leaves out the optional
 * pipelined_worker_init and pipelined_worker_fini. The benchmarks run it
 * against the built-in noop action to measure what calling a plugin costs.
 *
 * Build:  cc -shared -fPIC -O2 -o noop.so noop.c
 */
#include <pipelined-plugin.h>

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	(void)state;
	(void)job;
	(void)result;
	return PIPELINED_OK;
}
