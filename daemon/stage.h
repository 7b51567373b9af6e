/* stage.h — a named pool of worker threads draining one bounded queue.
 *
 * Each worker blocks on the stage's input queue, runs the stage's action on
 * the job it got, hands the job to hooks->deliver (the pipeline puts it on
 * the next stage's queue, or ends it), then marks it done on the queue.
 *
 * Worker count: stage_set_workers raises or lowers it while jobs flow. New
 * workers start at once; a worker told to retire finishes the job it holds
 * first, then exits (it learns of the change through queue_interrupt, so an
 * idle worker retires at once and a busy one after its job). No job is lost
 * or run twice: a job is only ever held by one worker, and a worker only
 * exits between jobs.
 *
 * Close: stage_close closes the input queue. Workers finish what is queued,
 * then exit; the last one to exit calls hooks->on_exited, once.
 *
 * Retries: when the action fails and the stage's RetryPolicy allows
 * another attempt, the worker puts the job back on its own queue as a
 * delayed item (queue_put_delayed, state JOB_RETRYING) due after an
 * exponential backoff with jitter, and takes the next job: a job waiting for
 * its retry holds no worker. Otherwise the job is handed on as failed.
 *
 * Per-worker action state: each worker calls action_worker_init before its
 * first job and action_worker_fini as it exits (plugin actions keep their
 * per-thread state there).
 *
 * Pause: stage_pause parks the workers on a condition variable between
 * jobs (counted in StageStats.parked); a resume, a close or a lower worker
 * count wakes them. A worker that takes a job cancelled while it waited
 * (job_cancel) skips it: the job ends cancelled without running.
 *
 * Progress: each worker has a heartbeat (heartbeat.h), beaten as it starts
 * a job and, through the thread's binding, by whatever the action blocks in
 * that can beat (spawn.c while a program runs). stage_find_stalled reports
 * the workers running an action (or their plugin's per-worker init) whose
 * heartbeat is older than a threshold: the systemd watchdog stops pinging
 * while there is one. A worker waiting on its queue, parked by a pause or
 * handing a job on (blocked by a full next queue: that stage's workers are
 * checked themselves) is never stalled.
 *
 * Owns: the queue, the action, the worker threads (joined by stage_join or
 * reaped by a later stage_set_workers). Borrows: hooks and userdata.
 *
 * Threads: stage_set_workers, stage_close, stage_stats from any thread;
 * stage_start, stage_join and stage_free from the owner only. Hooks run on
 * worker threads. Lock order: stage lock, then queue lock (queue_interrupt is
 * called with the stage lock held); hooks are called with no lock held. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "action.h"
#include "job.h"
#include "queue.h"

/* Most workers one stage may have: each is a thread with its own stack. */
#define STAGE_WORKERS_MAX 1024u
/* Longest stage name; names are [A-Za-z0-9_.-]+ so they need no quoting. */
#define STAGE_NAME_MAX 64u

typedef struct Stage Stage;

/* When a failed run is tried again (a stage's MaxAttempts=, RetryDelay=,
 * RetryMaxDelay=, RetryExitCodes= keys). The delay before attempt n+1 is
 * delay_usec * 2^(n-1), at most max_delay_usec, of which a random part
 * (up to half) is taken off so that jobs that failed together do not all
 * come back together. */
typedef struct RetryPolicy {
	unsigned max_attempts;   /* runs at one stage, first included; 1: never retry */
	uint64_t delay_usec;     /* before the second attempt */
	uint64_t max_delay_usec; /* cap on one delay */
	/* Which failures are retried. A failure of a program that exited with
	 * status N is retried if N is in exit_codes (or any_exit_code); one
	 * ended by the timeout if on_timeout, by a signal if on_signal. A
	 * failure of another kind (built-in action, plugin) is retried unless
	 * the action said it is permanent (-EPERM). */
	bool any_exit_code;
	bool on_timeout, on_signal;
	uint8_t exit_codes[32]; /* bitmap: bit N set = status N is retried */
} RetryPolicy;

#define RETRY_POLICY_NONE ((RetryPolicy){ .max_attempts = 1 })

typedef struct StageHooks {
	/* Required. Called on the worker thread with the job after the action
	 * ran (state JOB_RUNNING on success, JOB_FAILED on failure). Takes the
	 * job (stolen). The worker marks the job done on its queue after this
	 * returns (folded into its next queue_get_next). */
	void (*deliver)(void *userdata, Stage *s, Job *job);
	/* Optional. The last worker exited after the queue was closed. */
	void (*on_exited)(void *userdata, Stage *s);
	/* Optional. A run failed and the job is about to go back on this
	 * stage's queue for its next attempt: state JOB_RETRYING, attempt
	 * already counted. On the worker thread, which still owns the job. */
	void (*progress)(void *userdata, Stage *s, Job *job);
} StageHooks;

typedef struct StageStats {
	const char *name; /* borrowed from the stage; valid while it lives */
	unsigned index;
	unsigned workers;    /* workers that will keep taking jobs (the target, once reached) */
	unsigned threads;    /* worker threads still alive, including retiring ones */
	unsigned busy;       /* workers running an action right now */
	unsigned handing_on; /* workers handing a job to the next stage (blocked if it is full) */
	uint64_t succeeded;  /* actions that succeeded */
	uint64_t failed;     /* actions that failed */
	uint64_t cancelled;  /* cancelled jobs this stage's workers skipped */
	uint64_t retries;    /* failed runs put back for another attempt */
	bool paused;
	unsigned parked; /* workers waiting for a resume (they take no job) */
	uint64_t threads_started, threads_joined;
	QueueStats queue;
} StageStats;

/* Fault seam, for tests: when set to N > 0, the Nth worker thread created
 * from then on (counting across all stages) fails with EAGAIN. 0: off. */
extern _Atomic unsigned stage_fault_thread_create;

/* True if name is a valid stage (or pipeline) name. */
bool stage_name_is_valid(const char *name);

/* New stage with no threads yet. index is its position in the pipeline;
 * workers 1..STAGE_WORKERS_MAX; capacity as queue_new. Takes action (stolen,
 * also on failure). Returns 0, -EINVAL, -ENOMEM. */
int stage_new(const char *name, unsigned index, unsigned workers, size_t capacity, Action *action,
              const StageHooks *hooks, void *userdata, Stage **ret);

/* Sets the retry policy (copied). Only before stage_start. */
void stage_set_retry(Stage *s, const RetryPolicy *policy);

/* The delay before attempt `attempt` (2 for the first retry) under policy,
 * before jitter. */
uint64_t retry_delay_usec(const RetryPolicy *policy, unsigned attempt);

/* Starts the workers. Returns 0, or -errno from pthread_create; then the
 * workers that did start have been stopped and joined (the stage is closed,
 * and on_exited has run if any had started). */
int stage_start(Stage *s);

/* Sets the worker count to n (1..STAGE_WORKERS_MAX) and reaps workers that
 * have retired. Returns 0; -EINVAL; -EPIPE once the stage is closed; -errno
 * from pthread_create if not every new worker could start (those that did
 * are kept and counted). */
int stage_set_workers(Stage *s, unsigned n);

/* Closes the input queue. Idempotent; never blocks. A close also ends a
 * pause: the workers finish what is queued and exit. */
void stage_close(Stage *s);

/* Pauses (paused = true) or resumes the stage. A paused stage's workers
 * take no new job; those running an action finish it and hand it on. Jobs
 * keep arriving in the queue up to its capacity (backpressure then reaches
 * the stages before). Never blocks. Returns 0, or -EPIPE once closed. */
int stage_pause(Stage *s, bool paused);

/* Waits for every worker thread to exit and joins it. Returns only after the
 * stage has been closed and its queue emptied. */
void stage_join(Stage *s);

/* Frees a stage that was never started or has been joined. Jobs still queued
 * are freed. Accepts NULL. */
void stage_free(Stage *s);

/* From now on a failed run is not retried: the job fails with
 * " (not retried: <why>)" after its error, and Job.retry_stopped set. why
 * must outlive the stage (a string literal). Jobs already waiting for a
 * retry stay in the queue (pipeline_stop_retries ends them). */
void stage_stop_retries(Stage *s, const char *why);

Queue *stage_queue(Stage *s);     /* borrowed */
const char *stage_name(Stage *s); /* borrowed */
unsigned stage_index(Stage *s);

void stage_stats(Stage *s, StageStats *ret);

/* A worker that has shown no progress for too long (stage_find_stalled). */
typedef struct StageStall {
	unsigned worker;      /* 1 for the stage's first worker thread, then 2... */
	int tid;              /* its thread id (gettid), as ps -L and gdb show it */
	uint64_t job_id;      /* the job it runs; 0: in its plugin's per-worker init */
	uint64_t silent_usec; /* since its last heartbeat */
} StageStall;

/* Counts the workers running an action (or a plugin's per-worker init) whose
 * last heartbeat is more than stale_usec before now_usec (CLOCK_MONOTONIC
 * µs); when there is one, *ret describes the one silent longest (else it is
 * untouched). Any thread; takes the stage lock briefly, never waits for a
 * worker. */
unsigned stage_find_stalled(Stage *s, uint64_t now_usec, uint64_t stale_usec, StageStall *ret);
