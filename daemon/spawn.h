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
 * close-on-exec, only our own pid is reaped (never waitpid(-1)). The child
 * gets fds 0, 1, 2 and nothing else, even an fd someone else left without
 * close-on-exec. Grandchildren are not waited for: once the leader has
 * exited, only what the pipes already hold is read.
 *
 * Owns: nothing between calls. Threads: any number of threads may call
 * spawn_run at once; it blocks the calling thread until the program (the
 * group leader) has exited. While it waits it beats the calling thread's
 * heartbeat (heartbeat.h), at least once per heartbeat period when one is
 * set. No signal handler and no global state of its own; it works
 * whatever the caller's signal mask and SIGPIPE disposition (it never writes
 * to a pipe without a reader), but SIGCHLD must not be SIG_IGN (the kernel
 * would then reap the child and its exit status would be lost). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct SpawnRequest {
	char *const *argv;  /* argv[0] is an absolute path (else -EINVAL); NULL-terminated */
	char *const *envp;  /* NULL-terminated; the whole environment; NULL: empty */
	const char *cwd;    /* working directory; NULL: the daemon's */
	const char *input;  /* written to stdin, then stdin is closed; borrowed for the call */
	size_t input_len;   /* 0: stdin is /dev/null */
	size_t stdout_max;  /* the first stdout bytes kept; 0: stdout goes to /dev/null */
	size_t stderr_tail; /* last stderr bytes kept; 0: stderr goes to /dev/null */
	uint64_t timeout_usec; /* from the spawn, CLOCK_MONOTONIC; 0: no timeout */
	uint64_t grace_usec;   /* between SIGTERM and SIGKILL on timeout; 0: at once */
} SpawnRequest;

typedef struct SpawnResult {
	int exit_status; /* 0..255 when it exited, -1 when killed by a signal */
	int term_signal; /* the signal that ended it, 0 when it exited */
	bool timed_out;  /* the timeout passed (it was sent SIGTERM) */
	bool killed;     /* ...and still ran after the grace period (SIGKILL) */
	char *out;       /* malloc'd, NUL-terminated, out_len bytes; never NULL after success */
	size_t out_len;  /* <= stdout_max; the output may contain NUL bytes */
	uint64_t out_total; /* bytes the program wrote to stdout, kept or not (0 with /dev/null) */
	char *err;       /* malloc'd, NUL-terminated: the last err_len bytes of stderr; never
	                  * NULL after success */
	size_t err_len;  /* <= stderr_tail */
	uint64_t err_total; /* bytes written to stderr, kept or not (0 with /dev/null) */
	uint64_t usec;   /* from spawn to reap, CLOCK_MONOTONIC */
} SpawnResult;

/* Runs the program and waits for it (and for its output). Returns 0 when
 * it ran, whatever its exit status (see *res, a new result: free with
 * spawn_result_free); -errno when it could not be started (-ENOENT, -EACCES,
 * -ENOMEM, -EMFILE...; -EINVAL for a request that breaks the rules above)
 * or when watching it failed (then it has been killed and reaped), with a
 * one-line reason in err[errlen] ("cannot run /no/such: No such file or
 * directory") and *res untouched. */
int spawn_run(const SpawnRequest *req, SpawnResult *res, char *err, size_t errlen);

/* Frees out and err and sets them to NULL; accepts NULL. */
void spawn_result_free(SpawnResult *res);

/* "exited with status 3", "killed by signal 9 (SIGKILL)", "timed out after
 * 2s; killed by SIGTERM", "timed out after 2s; killed by SIGKILL after a
 * 1s grace period" (a program that handled SIGTERM: "timed out after 2s;
 * exited with status 0"). Durations as "1.5s", "500ms", "250us"; req gives
 * them and may be NULL. Always NUL-terminated when len > 0, truncated to fit. */
void spawn_result_describe(const SpawnResult *res, const SpawnRequest *req, char *buf,
                           size_t len);
