/* spawn.h — run one program to completion from a worker thread.
 *
 * The program gets `input` on its stdin, its stdout is captured up to
 * stdout_max bytes and the last stderr_tail bytes of its stderr are kept;
 * output past those limits is read and dropped, so the child never blocks
 * on a full pipe. It runs in its own process group with a clean signal mask
 * and default dispositions. When timeout_usec passes, the whole group gets
 * SIGTERM, then SIGKILL after grace_usec. When the program (the group
 * leader) exits, whatever is left of its group is killed with SIGKILL and
 * the pipes are closed even if a grandchild still holds them open.
 *
 * posix_spawn (vfork+exec in glibc), every fd this module opens is
 * close-on-exec, only our own pid is reaped (never waitpid(-1)).
 *
 * Owns: nothing between calls. Threads: any number of threads may call
 * spawn_run at once. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct SpawnRequest {
	char *const *argv;  /* argv[0] is an absolute path; NULL-terminated */
	char *const *envp;  /* NULL-terminated; the whole environment */
	const char *cwd;    /* working directory; NULL: the daemon's */
	const char *input;  /* written to stdin, then stdin is closed */
	size_t input_len;
	size_t stdout_max;  /* stdout bytes kept; 0: stdout goes to /dev/null */
	size_t stderr_tail; /* last stderr bytes kept; 0: stderr goes to /dev/null */
	uint64_t timeout_usec; /* 0: no timeout */
	uint64_t grace_usec;   /* between SIGTERM and SIGKILL on timeout */
} SpawnRequest;

typedef struct SpawnResult {
	int exit_status; /* 0..255 when it exited, -1 when killed by a signal */
	int term_signal; /* the signal that ended it, 0 when it exited */
	bool timed_out;  /* the timeout passed (it was sent SIGTERM) */
	bool killed;     /* ...and still ran after the grace period (SIGKILL) */
	char *out;       /* malloc'd, NUL-terminated, out_len bytes; never NULL after success */
	size_t out_len;
	uint64_t out_total; /* bytes the program wrote to stdout, kept or not */
	char *err;       /* malloc'd, NUL-terminated: the last err_len bytes of stderr */
	size_t err_len;
	uint64_t err_total;
	uint64_t usec;   /* from spawn to reap, CLOCK_MONOTONIC */
} SpawnResult;

/* Runs the program and waits for it (and for its output). Returns 0 when
 * it ran, whatever its exit status (see *res, free with spawn_result_free);
 * -errno when it could not be started (-ENOENT, -EACCES, -ENOMEM, -EMFILE...)
 * with a one-line reason in err[errlen] and nothing to free. */
int spawn_run(const SpawnRequest *req, SpawnResult *res, char *err, size_t errlen);

void spawn_result_free(SpawnResult *res);

/* "exited with status 3", "killed by signal 9 (SIGKILL)", "timed out after
 * 2s; killed by SIGTERM", "timed out after 2s; killed by SIGKILL after a
 * 1s grace period". */
void spawn_result_describe(const SpawnResult *res, const SpawnRequest *req, char *buf,
                           size_t len);
