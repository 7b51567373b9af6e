/* program.h — a stage that runs a program for each job (the Exec= key).
 *
 * For each job: the Exec= line becomes an argv (exectemplate.h: payload
 * fields substituted, each value one argument, never an option); the
 * program runs (spawn.h) in the working directory — the job's scratch
 * directory unless WorkingDirectory= says otherwise — with the daemon's
 * environment (less what systemd tells the daemon itself: NOTIFY_SOCKET,
 * WATCHDOG_USEC, WATCHDOG_PID, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) plus
 *
 *   PIPELINED_JOB_ID     the job's id
 *   PIPELINED_PIPELINE   the pipeline's name
 *   PIPELINED_STAGE      the stage's name
 *   PIPELINED_ATTEMPT    1 for the first run at this stage, 2 for the first retry...
 *   PIPELINED_WORKDIR    the job's scratch directory (shared by its stages)
 *
 * and the payload JSON on its stdin. Exit status 0 is success; then, with
 * Stdout=json (the default), a JSON object on stdout becomes the payload
 * for the next stage and anything else (nothing, text, an array, more than
 * PROGRAM_STDOUT_MAX bytes) leaves the payload unchanged; Stdout=json-required
 * fails the job instead; Stdout=ignore never reads it (it goes to /dev/null).
 * The end of stderr (StderrTail= bytes) is kept with the job, whatever the
 * outcome.
 *
 * Owns: the template, options and environment. Threads: program_run from
 * any number of worker threads at once; the rest from the owner. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "job.h"

/* stdout read as a payload, before compaction; a pretty-printed 64 KiB
 * payload fits. More is read and dropped (the payload stays unchanged). */
#define PROGRAM_STDOUT_MAX (256u * 1024u)
/* Largest StderrTail=. */
#define PROGRAM_STDERR_TAIL_MAX (64u * 1024u)
/* Longest value of one PIPELINED_* variable (a scratch path is the longest). */
#define PROGRAM_ENV_VALUE_MAX 4200

typedef enum ProgramStdout {
	PROGRAM_STDOUT_JSON,          /* an object on stdout replaces the payload */
	PROGRAM_STDOUT_JSON_REQUIRED, /* ...and anything else fails the job */
	PROGRAM_STDOUT_IGNORE,        /* stdout goes to /dev/null */
	_PROGRAM_STDOUT_MAX,
} ProgramStdout;

typedef struct ProgramOptions {
	const char *exec;              /* the Exec= line */
	const char *working_directory; /* NULL: the job's scratch directory */
	uint64_t timeout_usec;         /* 0: none */
	uint64_t grace_usec;           /* SIGTERM → SIGKILL */
	ProgramStdout stdout_mode;
	size_t stderr_tail;            /* 0..PROGRAM_STDERR_TAIL_MAX */
} ProgramOptions;

typedef struct Program Program;

/* Parses the options (o is copied). Returns 0 and a new Program; -EINVAL
 * with a reason in err[errlen]; -ENOMEM. */
int program_new(const ProgramOptions *o, Program **ret, char *err, size_t errlen);

void program_free(Program *p); /* accepts NULL */

/* "exec:" and the command line, for stats. Borrowed. */
const char *program_text(const Program *p);

/* Names ProgramStdout values as the Stdout= key does, and back (-EINVAL). */
const char *program_stdout_to_string(ProgramStdout m);
int program_stdout_from_string(const char *s, ProgramStdout *ret);

/* The command line for job (NULL-terminated; free with exec_argv_free).
 * Returns 0; -EPERM with a reason when the job cannot be run as it is (a
 * field the command line needs is missing, or would be an option); -ENOMEM. */
int program_argv(const Program *p, const Job *job, char ***ret_argv, char *err, size_t errlen);

/* Runs argv (from program_argv; stolen) for job: its payload replaced on
 * success as above; its ran_program, exit_status, term_signal, timed_out
 * and stderr tail set. pipeline and stage name the running stage; workdir is
 * the job's scratch directory (it exists). Returns 0, or -errno with a
 * reason when the run failed (non-zero exit, signal, timeout, could not
 * start). */
int program_run(Program *p, char **argv, const char *pipeline, const char *stage,
                const char *workdir, Job *job, char *err, size_t errlen);
