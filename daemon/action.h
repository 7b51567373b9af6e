/* action.h — what a stage does to each job.
 *
 * The built-in actions exist for tests and benchmarks; program-running and
 * plugin actions are added beside them (see DESIGN.md). An action is
 * described by a spec string, the same text the configuration file uses:
 *
 *   noop          do nothing
 *   sleep:MS      block the worker for MS milliseconds (1..3600000)
 *   busy:US       spin on the CPU for US microseconds (1..10000000)
 *   fail          fail every job
 *   fail:N        fail every Nth job this action sees (N = 1..2^32-1)
 *   rewrite       replace the payload P with {"stage":"<stage name>","input":P}
 *
 * A C function can also be an action (action_new_function): tests use it to
 * hold jobs at a gate. Stages that run a program (Exec=, daemon/program.h)
 * or call a plugin (Plugin=, daemon/plugin.h) are actions too, made by
 * action_new_program and action_new_plugin.
 *
 * Owns: its parameters. Threads: action_run may be called by many workers of
 * one stage at once; the rest belongs to whoever owns the Action. */
#pragma once

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"

typedef enum ActionKind {
	ACTION_NOOP,
	ACTION_SLEEP,
	ACTION_BUSY,
	ACTION_FAIL,
	ACTION_REWRITE,
	ACTION_FUNCTION,
	ACTION_PROGRAM,
	ACTION_PLUGIN,
	_ACTION_KIND_MAX,
} ActionKind;

/* An in-process action: same contract as action_run. Called concurrently by
 * every worker of the stage. */
typedef int (*ActionFunction)(void *userdata, const char *stage_name, Job *job, char *err,
                              size_t errlen);

typedef struct Action {
	ActionKind kind;
	uint64_t arg;           /* ms for sleep, µs for busy, N for fail */
	_Atomic uint64_t calls; /* jobs seen by fail:N (no other kind counts) */
	ActionFunction fn;      /* for ACTION_FUNCTION */
	void *fn_userdata;      /* borrowed */
	struct Program *program; /* owned, for ACTION_PROGRAM */
	struct Plugin *plugin;   /* owned, for ACTION_PLUGIN */
	char *pipeline;          /* owned; for plugins' pipelined_job.pipeline */
	char *state_dir;         /* owned; jobs' scratch directories go in STATE_DIR/jobs */
} Action;

/* Where a job's scratch directory is: "<state_dir>/jobs/<id>". */
#define ACTION_WORKDIR_MAX 4096

/* The longest spec action_parse reads; longer is -EINVAL. */
#define ACTION_SPEC_MAX 256

/* Parses spec into a new Action. Returns 0, -EINVAL (ret_error, if not NULL,
 * then points to a static description of what is wrong), -ENOMEM. */
int action_parse(const char *spec, Action **ret, const char **ret_error);

/* New action calling fn(userdata, ...) for each job. Returns 0, -EINVAL, -ENOMEM. */
int action_new_function(ActionFunction fn, void *userdata, Action **ret);

/* New action running a program for each job (takes program, stolen also on
 * failure). pipeline: the pipeline's name; state_dir: where scratch
 * directories go. Returns 0, -ENOMEM. */
int action_new_program(struct Program *program, const char *pipeline, const char *state_dir,
                       Action **ret);

/* As action_new_program, calling a plugin for each job. */
int action_new_plugin(struct Plugin *plugin, const char *pipeline, const char *state_dir,
                      Action **ret);

void action_free(Action *a); /* accepts NULL */

/* Per-worker state: each worker calls action_worker_init on its own thread
 * before its first job, and action_worker_fini (only if init succeeded)
 * before it exits. Only plugins have any; for other kinds *state is NULL.
 * Returns 0, or -errno with a reason in err[errlen]. */
int action_worker_init(Action *a, void **state, char *err, size_t errlen);
void action_worker_fini(Action *a, void *state);

/* Runs the action on job, on the calling worker's thread. state is the
 * worker's (action_worker_init); stage_name the running stage's name.
 * Returns 0 on success; on failure a negative errno-style code and a
 * NUL-terminated reason in err[errlen]: -EPERM when trying again cannot help
 * (the job itself is wrong: a payload field a command line needs is
 * missing, a plugin said so), anything else when the stage's retry policy
 * decides. */
int action_run(Action *a, void *state, const char *stage_name, Job *job, char *err,
               size_t errlen);

/* Removes a scratch directory and everything in it (never following
 * symbolic links). Returns 0 (also when it does not exist) or -errno. Blocks
 * on the disk: worker threads, or the loop's thread pool. */
int action_remove_workdir(const char *path);

/* Makes the job's scratch directory, STATE_DIR/jobs/ID, unless it has one,
 * and records it in job->workdir. Returns 0 or -errno with a reason in err. */
int action_make_workdir(const Action *a, Job *job, char *err, size_t errlen);

/* The spec that parses back to a (into buf[len]); for logs and stats. */
void action_format(const Action *a, char *buf, size_t len);
