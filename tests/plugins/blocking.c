/* blocking.c — a test plugin that hangs: each run waits until the file named
 * by PluginArg= exists (checking every 10 ms), then succeeds. It never
 * beats a heartbeat (a plugin cannot): the watchdog tests use it to make a
 * stage look stuck, and release it by creating the file. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pipelined-plugin.h"

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_worker_init(const char *arg, void **state)
{
	if (!arg[0] || !(*state = strdup(arg)))
		return 1;
	return 0;
}

void pipelined_worker_fini(void *state)
{
	free(state);
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	const char *path = state;
	const struct timespec tick = { .tv_nsec = 10 * 1000 * 1000 };
	while (access(path, F_OK) != 0)
		nanosleep(&tick, NULL);
	return PIPELINED_OK;
}
