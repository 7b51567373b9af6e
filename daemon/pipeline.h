/* pipeline.h — an ordered list of stages that jobs travel through.
 *
 * A job submitted to the pipeline is put on the first stage's queue; after
 * each stage's action it is put on the next stage's queue (blocking while
 * that queue is full: a slow stage slows the one before it), and after the
 * last stage, or the first failed action, it leaves the pipeline through
 * hooks->on_end.
 *
 * Close cascades: pipeline_close closes stage 0's queue; when the last
 * worker of stage k exits, stage k+1's queue is closed, so every job already
 * accepted still runs to its end. When the last worker of the last stage has
 * exited, hooks->on_closed runs; pipeline_join then joins every thread.
 *
 * Drain: `in_flight` counts jobs accepted and not yet ended, whichever queue
 * or worker holds them. pipeline_drain blocks until it is zero, without
 * closing anything; hooks->on_idle runs each time it reaches zero.
 *
 * Owns: its stages (and through them their queues, actions and threads),
 * jobs while they are inside it. Borrows: hooks' userdata.
 *
 * Threads: pipeline_submit, pipeline_try_submit, pipeline_set_workers,
 * pipeline_close, pipeline_stats and pipeline_drain from any thread (the
 * event loop uses only the non-blocking ones); pipeline_new,
 * pipeline_add_stage, pipeline_start, pipeline_join and pipeline_free from
 * the owner. Hooks run with no engine lock held, on worker threads, except
 * that on_idle can also run on a submitter's thread and on_stage_closed for
 * stage 0 on the thread that closes (or starts) the pipeline. Lock order: pipeline lock, then stage
 * lock, then queue lock. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "stage.h"

/* Most stages in one pipeline. */
#define PIPELINE_STAGES_MAX 64u

typedef struct Pipeline Pipeline;

typedef struct PipelineHooks {
	/* Required: the job left the pipeline, state JOB_DONE or JOB_FAILED.
	 * Takes the job (stolen). Runs on the worker that ended it. */
	void (*on_end)(void *userdata, Job *job);
	/* Optional: no job is queued or running anywhere in the pipeline. */
	void (*on_idle)(void *userdata);
	/* Optional: stage `index` is about to be closed (its queue is closed
	 * right after this returns). Called once per stage, in stage order. */
	void (*on_stage_closed)(void *userdata, unsigned index);
	/* Optional: every worker of every stage has exited after close. */
	void (*on_closed)(void *userdata);
	/* Optional: after pipeline_try_submit returned -EAGAIN, the first
	 * stage's queue has drained to its low-water mark, or was closed (see
	 * queue_try_put_arm). Called once per -EAGAIN episode, on a worker
	 * thread (or the closing thread); must not block. */
	void (*on_room)(void *userdata);
	/* Optional: the job moved on inside the pipeline, and is about to be
	 * put on a queue: to the next stage (state JOB_QUEUED, stage and
	 * attempt 1 set, payload the stage's input) or back on its own stage
	 * for another attempt (JOB_RETRYING). On the worker thread, which
	 * still owns the job; may block (the daemon journals it here). */
	void (*on_progress)(void *userdata, Job *job);
} PipelineHooks;

typedef struct PipelineStats {
	unsigned stages;
	uint64_t in_flight;    /* accepted, not yet ended */
	uint64_t accepted;     /* submits that succeeded */
	uint64_t done, failed; /* ended so far (may lead in_flight by a job per worker) */
	uint64_t cancelled;    /* ended cancelled (job_cancel) */
	bool closing, closed;
} PipelineStats;

/* New pipeline with no stages. name as stage_name_is_valid. hooks is copied.
 * Returns 0, -EINVAL, -ENOMEM. */
int pipeline_new(const char *name, const PipelineHooks *hooks, void *userdata, Pipeline **ret);

/* Appends a stage (see stage_new; action is stolen, also on failure). Only
 * before pipeline_start. Returns 0, -EINVAL (bad arguments, too many stages,
 * a duplicate stage name, already started), -ENOMEM. */
int pipeline_add_stage(Pipeline *p, const char *name, unsigned workers, size_t capacity,
                       Action *action);

/* Starts every stage's workers. Returns 0, -EINVAL (no stages, already
 * started), -EPIPE (pipeline_close was called first), or -errno from
 * starting threads (then nothing runs and no hook has been called). A
 * pipeline_close racing with a successful start takes effect once it is done. */
int pipeline_start(Pipeline *p);

/* Hands job (stolen on success) to the first stage. pipeline_submit blocks
 * while the first queue is full; pipeline_try_submit returns -EAGAIN instead.
 * Both return -EPIPE once pipeline_close has returned (a submit racing with
 * it may still be accepted, and then runs to its end). On error the caller
 * keeps the job. A -EAGAIN from pipeline_try_submit arms hooks->on_room. */
int pipeline_submit(Pipeline *p, Job *job);
int pipeline_try_submit(Pipeline *p, Job *job);

/* Puts a job that ended failed back into the pipeline at stage `stage`
 * (RequeueJob), never blocking. Its state becomes JOB_QUEUED and its attempt
 * 1. Returns 0 (job stolen); -ENOENT for a stage out of range; -EAGAIN if
 * that stage's queue is full; -EPIPE once the stage is closed. On error the
 * caller keeps the job, unchanged. Not counted in `accepted`. */
int pipeline_try_requeue(Pipeline *p, Job *job, unsigned stage);

/* Puts a job recovered from the journal on stage `stage`'s queue, keeping
 * its attempt count (state becomes JOB_QUEUED); blocks while that queue is
 * full. For a daemon starting up, before it serves clients. Returns 0 (job
 * stolen), -ENOENT for a stage out of range, -EPIPE if the stage is closed,
 * -EINVAL before pipeline_start. Not counted in `accepted`. */
int pipeline_resume(Pipeline *p, Job *job, unsigned stage);

/* As pipeline_try_submit, but the first stage's worker that waits for the
 * job is woken only by pipeline_wake_deferred (see queue_try_put_arm_deferred),
 * which the caller must call before it next blocks. */
int pipeline_try_submit_deferred(Pipeline *p, Job *job);
void pipeline_wake_deferred(Pipeline *p);

/* See stage_set_workers; -ENOENT for a stage index out of range. */
int pipeline_set_workers(Pipeline *p, unsigned stage, unsigned n);

/* Ends at once every job that was cancelled (job_cancel) while it waits in a
 * queue, instead of leaving it there until a worker reaches it: each goes
 * through on_end with state JOB_CANCELLED (on the calling thread). For a
 * stage whose workers are all busy for a long time, or paused. Returns how
 * many jobs it ended. Never blocks beyond the queue locks. */
size_t pipeline_discard_cancelled(Pipeline *p);

/* Stops retries (a shutdown): from now on a failed run is not retried (the
 * job fails on its worker, with Job.retry_stopped set), and every job
 * waiting for its next attempt ends at once, failed, with " (not retried:
 * <why>)" after its last error (through on_end, on the calling thread).
 * why must outlive the pipeline (a string literal). Returns how many jobs
 * it ended. */
size_t pipeline_stop_retries(Pipeline *p, const char *why);

/* See stage_pause; -ENOENT for a stage index out of range. */
int pipeline_pause_stage(Pipeline *p, unsigned stage, bool paused);

/* Starts closing (see above). Never blocks; idempotent. Called before
 * pipeline_start, it makes the start fail with -EPIPE. */
void pipeline_close(Pipeline *p);

/* Blocks until every thread of every stage has been joined. Only after
 * pipeline_close. */
void pipeline_join(Pipeline *p);

/* Blocks until no job is queued or running anywhere. Does not close. */
void pipeline_drain(Pipeline *p);

/* Closes and joins (if started and not yet joined), then frees. Accepts NULL. */
void pipeline_free(Pipeline *p);

const char *pipeline_name(Pipeline *p);
unsigned pipeline_stage_count(Pipeline *p);
Stage *pipeline_stage(Pipeline *p, unsigned index); /* borrowed; NULL if out of range */
void pipeline_stats(Pipeline *p, PipelineStats *ret);

/* stage_find_stalled over every stage: how many workers are stalled in
 * all; when there is one, the one silent longest in *ret and its stage's
 * index in *ret_stage (else both untouched). Any thread; never blocks
 * beyond the stage locks. */
unsigned pipeline_find_stalled(Pipeline *p, uint64_t now_usec, uint64_t stale_usec,
                               unsigned *ret_stage, StageStall *ret);
