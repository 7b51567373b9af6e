/* counting.c — a test plugin that counts its calls, to prove that the
 * daemon's loader calls pipelined_worker_init once per worker thread,
 * pipelined_worker_fini once per worker on that same thread, and passes each
 * worker's own state to pipelined_run.
 *
 * Each run returns {"arg":ARG,"worker":W,"run":N}: ARG is the PluginArg=
 * the worker was started with, W the worker's number (0, 1, ... in the order
 * of their init calls) and N the runs of that worker so far, this one
 * included. A run on another thread than the state's init fails.
 *
 * The test reads the totals with counting_stats, found by dlsym. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipelined-plugin.h"

struct worker {
	pthread_t thread; /* the one that ran init */
	unsigned number;
	unsigned long runs;
	char arg[64];
};

static atomic_uint inits, finis, wrong_thread;
static atomic_ulong runs_at_fini;

void counting_stats(unsigned *ret_inits, unsigned *ret_finis, unsigned long *ret_runs,
                    unsigned *ret_wrong_thread);

void counting_stats(unsigned *ret_inits, unsigned *ret_finis, unsigned long *ret_runs,
                    unsigned *ret_wrong_thread)
{
	*ret_inits = atomic_load(&inits);
	*ret_finis = atomic_load(&finis);
	*ret_runs = atomic_load(&runs_at_fini);
	*ret_wrong_thread = atomic_load(&wrong_thread);
}

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_worker_init(const char *arg, void **state)
{
	struct worker *w = calloc(1, sizeof(*w));
	if (!w)
		return -1;
	w->thread = pthread_self();
	w->number = atomic_fetch_add(&inits, 1);
	snprintf(w->arg, sizeof(w->arg), "%s", arg);
	*state = w;
	return 0;
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	struct worker *w = state;
	if (!pthread_equal(w->thread, pthread_self())) {
		atomic_fetch_add(&wrong_thread, 1);
		snprintf(result->error, sizeof(result->error), "state of another thread");
		return PIPELINED_FAIL_PERMANENT;
	}
	w->runs++;
	char buf[160];
	int n = snprintf(buf, sizeof(buf), "{\"arg\":\"%s\",\"worker\":%u,\"run\":%lu}", w->arg,
	                 w->number, w->runs);
	result->payload = malloc((size_t)n + 1);
	if (!result->payload)
		return PIPELINED_FAIL;
	memcpy(result->payload, buf, (size_t)n + 1);
	return PIPELINED_OK;
}

void pipelined_worker_fini(void *state)
{
	struct worker *w = state;
	if (!pthread_equal(w->thread, pthread_self()))
		atomic_fetch_add(&wrong_thread, 1);
	atomic_fetch_add(&runs_at_fini, w->runs);
	atomic_fetch_add(&finis, 1);
	free(w);
}
