/* pipelined-plugin.h — the interface of in-process stage plugins.
 *
 * This is the public header for plugin authors (installed as
 * <pipelined-plugin.h>). A plugin is a shared object named by a stage's
 * Plugin= key; the daemon dlopen()s it when it loads the configuration and
 * calls the functions below, which the plugin exports with C linkage:
 *
 *   unsigned pipelined_plugin_abi(void);            required
 *       Returns PIPELINED_PLUGIN_ABI (the value this header defines).
 *   int pipelined_worker_init(const char *arg, void **state);   optional
 *       Called on each worker thread of the stage before its first job,
 *       with the stage's PluginArg= (or "" when unset). Store per-worker
 *       state in *state. Returns 0, or non-zero if the worker cannot run
 *       jobs (each job it takes then fails with that reason).
 *   int pipelined_run(void *state, const pipelined_job *job,
 *                     pipelined_result *result);                required
 *       Runs the stage on one job, on a worker thread. Several workers
 *       call it at once, each with its own state. Returns
 *       PIPELINED_OK, PIPELINED_FAIL (retried per the stage's MaxAttempts=)
 *       or PIPELINED_FAIL_PERMANENT (never retried).
 *   void pipelined_worker_fini(void *state);                   optional
 *       Called on the worker thread when it exits, with its state.
 *
 * Everything job points to is borrowed for the duration of the call. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define PIPELINED_PLUGIN_ABI 1u

enum {
	PIPELINED_OK = 0,
	PIPELINED_FAIL = 1,
	PIPELINED_FAIL_PERMANENT = 2,
};

typedef struct pipelined_job {
	uint64_t id;
	const char *pipeline;
	const char *stage;
	unsigned attempt;      /* 1 for the first run at this stage */
	const char *payload;   /* the JSON object, NUL-terminated */
	size_t payload_len;
	const char *workdir;   /* the job's scratch directory (may not exist yet) */
} pipelined_job;

typedef struct pipelined_result {
	/* To replace the payload: a malloc()ed, NUL-terminated JSON object. The
	 * daemon takes it (and frees it), also when the run fails. NULL leaves
	 * the payload unchanged. */
	char *payload;
	/* Why the run failed, when it returns non-zero (NUL-terminated). */
	char error[512];
} pipelined_result;

unsigned pipelined_plugin_abi(void);
int pipelined_worker_init(const char *arg, void **state);
int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result);
void pipelined_worker_fini(void *state);
