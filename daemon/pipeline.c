#include "pipeline.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct Pipeline {
	char name[STAGE_NAME_MAX + 1];
	PipelineHooks hooks;
	void *userdata;
	Stage *stages[PIPELINE_STAGES_MAX];
	unsigned n_stages; /* immutable once started */

	pthread_mutex_t lock; /* protects the flags below and pairs with idle */
	pthread_cond_t idle;  /* broadcast when in_flight reaches 0 */
	unsigned drainers;    /* threads waiting in pipeline_drain */
	bool closing, closed, joined;
	/* Written under lock by pipeline_start; read unlocked by submitters
	 * and by the hooks' callers (worker threads). Until it is set no hook
	 * runs, so a failed start reports nothing. */
	_Atomic bool started;

	/* +1 before a job is offered to stage 0, -1 after on_end returned.
	 * Shared by submitters and the last stage's workers: its own cache
	 * line, so that counting it does not slow the fields around it. */
	_Alignas(64) _Atomic uint64_t in_flight;
	/* Written only by submitters. Done and failed counts come from the
	 * stages' own per-worker counters (see pipeline_stats). */
	_Alignas(64) _Atomic uint64_t accepted;
	_Atomic uint64_t lost_in_cascade; /* jobs failed because a next stage was closed: 0 */
	_Atomic uint64_t discarded; /* cancelled jobs taken out of a queue (not by a worker) */
};

int pipeline_new(const char *name, const PipelineHooks *hooks, void *userdata, Pipeline **ret)
{
	if (!name || !stage_name_is_valid(name) || !hooks || !hooks->on_end)
		return -EINVAL;
	Pipeline *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	memcpy(p->name, name, strlen(name) + 1);
	p->hooks = *hooks;
	p->userdata = userdata;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->idle, NULL);
	*ret = p;
	return 0;
}

/* One job fewer in flight. Same pattern as queue_task_done: only the step to
 * zero takes the lock, to wake drainers that checked under it. */
static void in_flight_dec(Pipeline *p)
{
	if (atomic_fetch_sub_explicit(&p->in_flight, 1, memory_order_acq_rel) != 1)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->drainers > 0)
		pthread_cond_broadcast(&p->idle);
	pthread_mutex_unlock(&p->lock);
	if (p->hooks.on_idle)
		p->hooks.on_idle(p->userdata);
}

static void end_job(Pipeline *p, Job *job)
{
	/* RUNNING: the last stage succeeded. FAILED and CANCELLED stay. */
	if (atomic_load_explicit(&job->state, memory_order_relaxed) == JOB_RUNNING)
		atomic_store_explicit(&job->state, JOB_DONE, memory_order_relaxed);
	job->finished_usec = real_usec();
	p->hooks.on_end(p->userdata, job);
	in_flight_dec(p);
}

/* StageHooks.deliver: on to the next stage, or out. */
static void deliver(void *userdata, Stage *s, Job *job)
{
	Pipeline *p = userdata;
	unsigned next = stage_index(s) + 1;

	if (atomic_load_explicit(&job->state, memory_order_relaxed) == JOB_RUNNING &&
	    next < p->n_stages) {
		/* QUEUED before it is visible in the next queue: from here on
		 * the loop may cancel it (job_cancel). */
		atomic_store_explicit(&job->stage, next, memory_order_relaxed);
		atomic_store_explicit(&job->state, JOB_QUEUED, memory_order_relaxed);
		job->attempt = 1;
		if (p->hooks.on_progress)
			p->hooks.on_progress(p->userdata, job);
		/* Blocks while the next queue is full: backpressure. The next
		 * queue is closed only after every worker of this stage has
		 * exited, so -EPIPE here would be a bug in the cascade; end the
		 * job as failed rather than lose it. */
		if (queue_put(stage_queue(p->stages[next]), job) == 0)
			return;
		char msg[128];
		snprintf(msg, sizeof(msg), "stage '%s' was closed before the job reached it",
		         stage_name(p->stages[next]));
		job_set_failed(job, msg);
		atomic_fetch_add_explicit(&p->lost_in_cascade, 1, memory_order_relaxed);
	}
	end_job(p, job);
}

/* Reports, then closes. In this order the reports come out in stage order:
 * stage k+1 is reported by the last worker of stage k, which can only exit
 * after stage k's queue was closed, which is after stage k was reported. */
static void close_stage(Pipeline *p, unsigned index)
{
	if (p->hooks.on_stage_closed && atomic_load(&p->started))
		p->hooks.on_stage_closed(p->userdata, index);
	stage_close(p->stages[index]);
}

/* StageHooks.on_exited: the close travels one stage down. */
static void stage_progress(void *userdata, Stage *s, Job *job)
{
	Pipeline *p = userdata;
	if (p->hooks.on_progress)
		p->hooks.on_progress(p->userdata, job);
}

static void stage_exited(void *userdata, Stage *s)
{
	Pipeline *p = userdata;
	unsigned next = stage_index(s) + 1;

	if (next < p->n_stages) {
		close_stage(p, next);
		return;
	}
	if (!atomic_load(&p->started))
		return; /* the unwind of a failed pipeline_start */
	pthread_mutex_lock(&p->lock);
	p->closed = true;
	pthread_mutex_unlock(&p->lock);
	if (p->hooks.on_closed)
		p->hooks.on_closed(p->userdata);
}

int pipeline_add_stage(Pipeline *p, const char *name, unsigned workers, size_t capacity,
                       Action *action)
{
	static const StageHooks stage_hooks = { .deliver = deliver,
		                                .on_exited = stage_exited,
		                                .progress = stage_progress };
	bool bad = atomic_load(&p->started) || p->n_stages >= PIPELINE_STAGES_MAX || !name;

	for (unsigned i = 0; !bad && i < p->n_stages; i++)
		bad = strcmp(stage_name(p->stages[i]), name) == 0;
	if (bad) {
		action_free(action);
		return -EINVAL;
	}
	int r = stage_new(name, p->n_stages, workers, capacity, action, &stage_hooks, p,
	                  &p->stages[p->n_stages]);
	if (r < 0)
		return r;
	if (p->n_stages == 0 && p->hooks.on_room)
		queue_set_room_callback(stage_queue(p->stages[0]), p->hooks.on_room, p->userdata);
	p->n_stages++;
	return 0;
}

int pipeline_start(Pipeline *p)
{
	if (atomic_load(&p->started) || p->n_stages == 0)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	bool closing = p->closing;
	pthread_mutex_unlock(&p->lock);
	if (closing)
		return -EPIPE;

	for (unsigned i = 0; i < p->n_stages; i++) {
		int r = stage_start(p->stages[i]);
		if (r < 0) {
			/* Stage i stopped its own workers. Close stage 0 and
			 * let the cascade stop the stages already running;
			 * with `started` unset, no hook reports any of it. */
			if (i > 0) {
				stage_close(p->stages[0]);
				for (unsigned k = 0; k < i; k++)
					stage_join(p->stages[k]);
			}
			return r;
		}
	}

	/* A pipeline_close that came while the stages were starting saw
	 * `started` unset and left stage 0 open: close it here. */
	pthread_mutex_lock(&p->lock);
	atomic_store(&p->started, true);
	closing = p->closing;
	pthread_mutex_unlock(&p->lock);
	if (closing)
		close_stage(p, 0);
	return 0;
}

static int submit(Pipeline *p, Job *job, bool wait, bool defer)
{
	if (!atomic_load(&p->started))
		return -EINVAL;
	job->state = JOB_QUEUED;
	job->stage = 0;
	/* Count the job before it is visible to workers, so in_flight cannot
	 * drop to zero while it travels. */
	atomic_fetch_add_explicit(&p->in_flight, 1, memory_order_relaxed);
	Queue *q = stage_queue(p->stages[0]);
	int r = wait    ? queue_put(q, job)
	        : defer ? queue_try_put_arm_deferred(q, job)
	                : queue_try_put_arm(q, job);
	if (r < 0) {
		in_flight_dec(p);
		return r;
	}
	atomic_fetch_add_explicit(&p->accepted, 1, memory_order_relaxed);
	return 0;
}

int pipeline_try_requeue(Pipeline *p, Job *job, unsigned stage)
{
	if (!atomic_load(&p->started))
		return -EINVAL;
	if (stage >= p->n_stages)
		return -ENOENT;
	JobState old_state = atomic_load_explicit(&job->state, memory_order_relaxed);
	unsigned old_stage = atomic_load_explicit(&job->stage, memory_order_relaxed);
	unsigned old_attempt = job->attempt;
	job->state = JOB_QUEUED;
	job->stage = stage;
	job->attempt = 1;
	atomic_fetch_add_explicit(&p->in_flight, 1, memory_order_relaxed);
	int r = queue_try_put(stage_queue(p->stages[stage]), job);
	if (r < 0) {
		in_flight_dec(p);
		job->state = old_state;
		job->stage = old_stage;
		job->attempt = old_attempt;
	}
	return r;
}

int pipeline_resume(Pipeline *p, Job *job, unsigned stage)
{
	if (!atomic_load(&p->started))
		return -EINVAL;
	if (stage >= p->n_stages)
		return -ENOENT;
	job->state = JOB_QUEUED;
	job->stage = stage;
	atomic_fetch_add_explicit(&p->in_flight, 1, memory_order_relaxed);
	int r = queue_put(stage_queue(p->stages[stage]), job);
	if (r < 0)
		in_flight_dec(p);
	return r;
}

int pipeline_submit(Pipeline *p, Job *job)
{
	return submit(p, job, true, false);
}

int pipeline_try_submit(Pipeline *p, Job *job)
{
	return submit(p, job, false, false);
}

int pipeline_try_submit_deferred(Pipeline *p, Job *job)
{
	return submit(p, job, false, true);
}

void pipeline_wake_deferred(Pipeline *p)
{
	queue_wake_deferred(stage_queue(p->stages[0]));
}

int pipeline_set_workers(Pipeline *p, unsigned stage, unsigned n)
{
	if (stage >= p->n_stages)
		return -ENOENT;
	return stage_set_workers(p->stages[stage], n);
}

static bool is_cancelled(void *item, void *userdata)
{
	Job *job = item;
	return atomic_load_explicit(&job->state, memory_order_relaxed) == JOB_CANCELLED;
}

/* Takes every queued job match() picks out of every queue and ends it,
 * after fix(job, why) if fix is given. Returns how many. */
static size_t end_waiting(Pipeline *p, bool (*match)(void *, void *),
                          void (*fix)(Job *, const char *), const char *why)
{
	size_t total = 0;
	for (unsigned i = 0; i < p->n_stages; i++) {
		Queue *q = stage_queue(p->stages[i]);
		void *batch[64];
		size_t n;
		while ((n = queue_remove_if(q, match, NULL, batch, ELEMENTSOF(batch))) > 0) {
			for (size_t k = 0; k < n; k++) {
				queue_task_done(q);
				if (fix)
					fix(batch[k], why);
				end_job(p, batch[k]);
			}
			total += n;
		}
	}
	return total;
}

size_t pipeline_discard_cancelled(Pipeline *p)
{
	size_t n = end_waiting(p, is_cancelled, NULL, NULL);
	atomic_fetch_add_explicit(&p->discarded, n, memory_order_relaxed);
	return n;
}

static bool is_retrying(void *item, void *userdata)
{
	Job *job = item;
	return atomic_load_explicit(&job->state, memory_order_relaxed) == JOB_RETRYING;
}

static void fail_retry(Job *job, const char *why)
{
	char msg[1200];
	snprintf(msg, sizeof(msg), "%s (not retried: %s)", job->error ? job->error : "failed", why);
	job_set_failed(job, msg);
}

size_t pipeline_stop_retries(Pipeline *p, const char *why)
{
	for (unsigned i = 0; i < p->n_stages; i++)
		stage_stop_retries(p->stages[i], why);
	return end_waiting(p, is_retrying, fail_retry, why);
}

int pipeline_pause_stage(Pipeline *p, unsigned stage, bool paused)
{
	if (stage >= p->n_stages)
		return -ENOENT;
	return stage_pause(p->stages[stage], paused);
}

void pipeline_close(Pipeline *p)
{
	pthread_mutex_lock(&p->lock);
	bool first = atomic_load(&p->started) && !p->closing;
	p->closing = true;
	pthread_mutex_unlock(&p->lock);
	if (first)
		close_stage(p, 0);
}

void pipeline_join(Pipeline *p)
{
	assert(p->closing);
	/* In order: stage k's workers exit before stage k+1's can. */
	for (unsigned i = 0; i < p->n_stages; i++)
		stage_join(p->stages[i]);
	p->joined = true;
}

void pipeline_drain(Pipeline *p)
{
	pthread_mutex_lock(&p->lock);
	p->drainers++;
	while (atomic_load_explicit(&p->in_flight, memory_order_acquire) > 0)
		pthread_cond_wait(&p->idle, &p->lock);
	p->drainers--;
	pthread_mutex_unlock(&p->lock);
}

void pipeline_free(Pipeline *p)
{
	if (!p)
		return;
	if (atomic_load(&p->started) && !p->joined) {
		pipeline_close(p);
		pipeline_join(p);
	}
	for (unsigned i = 0; i < p->n_stages; i++)
		stage_free(p->stages[i]);
	pthread_cond_destroy(&p->idle);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

const char *pipeline_name(Pipeline *p)
{
	return p->name;
}

unsigned pipeline_stage_count(Pipeline *p)
{
	return p->n_stages;
}

Stage *pipeline_stage(Pipeline *p, unsigned index)
{
	return index < p->n_stages ? p->stages[index] : NULL;
}

void pipeline_stats(Pipeline *p, PipelineStats *ret)
{
	pthread_mutex_lock(&p->lock);
	ret->closing = p->closing;
	ret->closed = p->closed;
	pthread_mutex_unlock(&p->lock);
	ret->stages = p->n_stages;
	ret->in_flight = atomic_load(&p->in_flight);
	ret->accepted = atomic_load(&p->accepted);
	/* A job ends done after succeeding at the last stage, failed after
	 * failing at any stage (or, never in practice, at a closed hand-over).
	 * Stage counters are bumped just before the job is handed on, so for a
	 * moment a job can be counted here and still in flight. */
	ret->done = 0;
	ret->cancelled = atomic_load(&p->discarded);
	ret->failed = atomic_load(&p->lost_in_cascade);
	for (unsigned i = 0; i < p->n_stages; i++) {
		StageStats st;
		stage_stats(p->stages[i], &st);
		ret->failed += st.failed;
		ret->cancelled += st.cancelled;
		if (i == p->n_stages - 1)
			ret->done = st.succeeded;
	}
}

unsigned pipeline_find_stalled(Pipeline *p, uint64_t now_usec, uint64_t stale_usec,
                               unsigned *ret_stage, StageStall *ret)
{
	unsigned n = 0;
	for (unsigned i = 0; i < p->n_stages; i++) {
		StageStall st;
		unsigned k = stage_find_stalled(p->stages[i], now_usec, stale_usec, &st);
		if (k > 0 && (n == 0 || st.silent_usec > ret->silent_usec)) {
			*ret = st;
			*ret_stage = i;
		}
		n += k;
	}
	return n;
}
