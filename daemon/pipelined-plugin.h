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
 *       with the stage's PluginArg= (or "" when unset; borrowed for the
 *       call: copy what you keep). Store per-worker state in *state.
 *       Returns 0, or non-zero if the worker cannot run jobs (each job it
 *       takes then fails with that reason). After a non-zero return *state
 *       is ignored and pipelined_worker_fini is not called for the worker:
 *       clean up before returning.
 *   int pipelined_run(void *state, const pipelined_job *job,
 *                     pipelined_result *result);                required
 *       Runs the stage on one job, on a worker thread. Several workers
 *       call it at once, each with its own state. result arrives zeroed.
 *       Returns PIPELINED_OK, PIPELINED_FAIL (retried per the stage's
 *       MaxAttempts=) or PIPELINED_FAIL_PERMANENT (never retried); any other
 *       value is read as PIPELINED_FAIL.
 *   void pipelined_worker_fini(void *state);                   optional
 *       Called on the worker thread when it exits, with its state (NULL if
 *       the plugin has no pipelined_worker_init).
 *
 * Everything job points to is borrowed for the duration of the call.
 *
 * Trust. A plugin runs inside the daemon, on its threads, with its
 * privileges and memory: it is trusted code, like the configuration file
 * that names it. A plugin that crashes crashes the daemon, and one that hangs
 * or corrupts memory does the same to it; work that must be isolated belongs
 * in a program (Exec=), not a plugin. The daemon checks only what ordinary
 * bugs get wrong: the ABI version, the entry points, return codes, the
 * reason's termination and the returned payload.
 *
 * Sharing. Global and static variables are shared by every worker, and by
 * every stage that names the same file (it is loaded once). Threads a plugin
 * starts must have ended when the last worker's pipelined_worker_fini
 * returns: the daemon may unload the plugin then. */
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
	const char *workdir;   /* the job's scratch directory; it may not exist yet:
	                        * a plugin that makes it (mkdir) must set
	                        * result->made_workdir, so that the daemon shows,
	                        * keeps and removes it like a program stage's */
} pipelined_job;

typedef struct pipelined_result {
	/* To replace the payload: a malloc()ed, NUL-terminated JSON object. The
	 * daemon takes it (and frees it), also when the run fails; a failed
	 * run's payload is never used. NULL leaves the payload unchanged. A
	 * payload that is not a JSON object, or breaks the limits of any job's
	 * payload (16 MiB; nesting 60 levels deep), fails the job permanently. */
	char *payload;
	/* Why the run failed, when it returns non-zero: one line of UTF-8. The
	 * daemon keeps at most 511 bytes, and turns control characters and
	 * invalid UTF-8 into '?'. */
	char error[512];
	/* Set to non-zero if this run created job->workdir (see there). The
	 * daemon then records it with the job: removed when the job is done,
	 * kept when it fails. Unset, the daemon never looks for it (no
	 * system call per job). */
	int made_workdir;
} pipelined_result;

unsigned pipelined_plugin_abi(void);
int pipelined_worker_init(const char *arg, void **state);
int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result);
void pipelined_worker_fini(void *state);
