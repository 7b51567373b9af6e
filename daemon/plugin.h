/* plugin.h — loads a stage plugin (see pipelined-plugin.h) and calls it.
 *
 * Owns: the dlopen handle and a copy of the argument. Threads: open and
 * close from the owner; worker_init, run and worker_fini from worker
 * threads, any number at once. */
#pragma once

#include <stddef.h>

#include "pipelined-plugin.h"

typedef struct Plugin Plugin;

/* dlopen()s path (RTLD_NOW | RTLD_LOCAL), finds the entry points and checks
 * the ABI version. Returns 0 and a new Plugin in *ret; -EINVAL / -ENOENT
 * with a one-line reason in err[errlen] (dlerror's text, a missing
 * pipelined_run, an ABI mismatch); -ENOMEM. */
int plugin_open(const char *path, const char *arg, Plugin **ret, char *err, size_t errlen);

/* Calls pipelined_worker_init if the plugin has it (else *state = NULL).
 * Returns 0, or -EINVAL with the reason in err. */
int plugin_worker_init(Plugin *p, void **state, char *err, size_t errlen);

/* Calls pipelined_run with a zeroed result. Returns its return value
 * (PIPELINED_OK, PIPELINED_FAIL, PIPELINED_FAIL_PERMANENT; anything else is
 * read as PIPELINED_FAIL). The caller owns result->payload afterwards. If
 * the plugin failed without a reason, result->error says so. */
int plugin_run(Plugin *p, void *state, const pipelined_job *job, pipelined_result *result);

void plugin_worker_fini(Plugin *p, void *state);

const char *plugin_path(const Plugin *p); /* borrowed */

void plugin_close(Plugin *p); /* accepts NULL; dlclose()s */
