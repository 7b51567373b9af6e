/* plugin.h — loads a stage plugin (see pipelined-plugin.h) and calls it.
 *
 * A plugin is trusted code running in the daemon's process: if it crashes,
 * the daemon crashes. See pipelined-plugin.h.
 *
 * Owns: the dlopen handle and copies of the path and the argument. Threads:
 * open and close from the owner; worker_init, run and worker_fini from worker
 * threads, any number at once. Never logs. */
#pragma once

#include <stddef.h>

#include "pipelined-plugin.h"

typedef struct Plugin Plugin;

/* dlopen()s path (RTLD_NOW | RTLD_LOCAL), finds the entry points and checks
 * the ABI version. arg is copied; NULL is read as "". Returns 0 and a new
 * Plugin in *ret; -ENOENT (no file at path), -EINVAL (a relative path,
 * dlerror's text for a file that will not load or lacks a required entry
 * point, an ABI mismatch), -ENOMEM, each with a one-line reason in
 * err[errlen] (err may be NULL). On failure the object is unloaded again
 * (its constructors and destructors have run, if it got that far). */
int plugin_open(const char *path, const char *arg, Plugin **ret, char *err, size_t errlen);

/* Calls pipelined_worker_init if the plugin has it (else *state = NULL).
 * Returns 0, or -EINVAL with the reason in err; then *state is untouched and
 * plugin_worker_fini must not be called for this worker. */
int plugin_worker_init(Plugin *p, void **state, char *err, size_t errlen);

/* Calls pipelined_run with a zeroed result. Returns its return value
 * (PIPELINED_OK, PIPELINED_FAIL, PIPELINED_FAIL_PERMANENT; anything else is
 * read as PIPELINED_FAIL, with "plugin returned N" in the reason). The
 * caller owns result->payload afterwards: after PIPELINED_OK NULL (payload
 * unchanged) or a JSON object within JOB_PAYLOAD_MAX bytes and
 * PROTO_PAYLOAD_DEPTH_MAX levels (anything else is freed and the run turns
 * PIPELINED_FAIL_PERMANENT); after a failure always NULL (freed here).
 * result->error is "" after PIPELINED_OK, else the reason: one line of valid
 * UTF-8 ("plugin failed without a reason" if the plugin gave none). */
int plugin_run(Plugin *p, void *state, const pipelined_job *job, pipelined_result *result);

void plugin_worker_fini(Plugin *p, void *state);

const char *plugin_path(const Plugin *p); /* borrowed */

/* Accepts NULL; dlclose()s. Only after every worker's plugin_worker_fini. */
void plugin_close(Plugin *p);
