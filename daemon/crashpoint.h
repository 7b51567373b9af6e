/* crashpoint.h — deterministic crash points for the durability tests.
 *
 * With PIPELINED_CRASH_AT=NAME:N in the environment, the Nth call of
 * crashpoint("NAME") (counting from 1, over the whole process) ends the
 * process at once with _exit(CRASHPOINT_EXIT_STATUS): no atexit handlers,
 * no flushing, no journal close — what a crash leaves behind. Any other
 * name passes. Without the variable every call is one relaxed load.
 *
 * Named points in the daemon:
 *   stage-done-before-journal  a stage finished a job; its next row is not
 *                              yet appended to the journal
 *   journal-before-reply       a submit's row committed; the reply not yet sent
 *   mid-batch                  the writer applied half a transaction's changes
 *
 * Threads: any. */
#pragma once

#define CRASHPOINT_EXIT_STATUS 99

/* Reads PIPELINED_CRASH_AT; call once, before any thread starts. Returns 0,
 * or -EINVAL if it is set but not NAME:N with N >= 1. */
int crashpoint_init(void);

void crashpoint(const char *name);
