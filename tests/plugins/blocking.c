/* blocking.c — a test plugin that hangs: each run waits until the file named
 * by PluginArg= exists (checking every 10 ms), then succeeds. With
 * PluginArg=init:PATH each worker's pipelined_worker_init waits for PATH
 * instead, and runs do not wait. It never beats a heartbeat (a plugin
 * cannot): the watchdog tests use it to make a stage look stuck, and
 * release it by creating the file. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pipelined-plugin.h"

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

static void wait_for(const char *path)
{
	const struct timespec tick = { .tv_nsec = 10 * 1000 * 1000 };
	while (access(path, F_OK) != 0)
		nanosleep(&tick, NULL);
}

int pipelined_worker_init(const char *arg, void **state)
{
	bool at_init = strncmp(arg, "init:", 5) == 0;
	if (at_init) {
		wait_for(arg + 5);
		arg = "";
	}
	return (*state = strdup(arg)) ? 0 : 1;
}

void pipelined_worker_fini(void *state)
{
	free(state);
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	const char *path = state;
	if (path[0])
		wait_for(path);
	return PIPELINED_OK;
}
