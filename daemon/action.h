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
 * hold jobs at a gate, and in-process plugin actions are built on it.
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
} Action;

/* The longest spec action_parse reads; longer is -EINVAL. */
#define ACTION_SPEC_MAX 256

/* Parses spec into a new Action. Returns 0, -EINVAL (ret_error, if not NULL,
 * then points to a static description of what is wrong), -ENOMEM. */
int action_parse(const char *spec, Action **ret, const char **ret_error);

/* New action calling fn(userdata, ...) for each job. Returns 0, -EINVAL, -ENOMEM. */
int action_new_function(ActionFunction fn, void *userdata, Action **ret);

void action_free(Action *a); /* accepts NULL */

/* Runs the action on job, on the calling worker's thread. stage_name is the
 * running stage's name (for rewrite). Returns 0 on success; on failure a
 * negative errno-style code and a NUL-terminated reason in err[errlen]. */
int action_run(Action *a, const char *stage_name, Job *job, char *err, size_t errlen);

/* The spec that parses back to a (into buf[len]); for logs and stats. */
void action_format(const Action *a, char *buf, size_t len);
