/* Unit tests for daemon/stage.c and daemon/pipeline.c: the worker pools,
 * the hand-over between stages, close, drain, failures and resizing. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "heartbeat.h"
#include "pipeline.h"
#include "testutil.h"
#include "util.h"

/* What the test hooks record. One per test; shared with worker threads. */
typedef struct Record {
	unsigned n_jobs;
	_Atomic unsigned *ended; /* [n_jobs + 1]: times each id ended */
	_Atomic unsigned done, failed, bad_runs, bad_payload;
	_Atomic unsigned retry_stopped; /* failed jobs with Job.retry_stopped */
	unsigned expect_runs;   /* actions each done job must have seen */
	const char *expect_fmt; /* payload a done job must end with, %u = id; NULL = any */
	pthread_mutex_t lock;   /* for what follows */
	unsigned closed_order[PIPELINE_STAGES_MAX];
	unsigned n_closed;
	unsigned threads_left_in_previous; /* at each cascade, threads of stage k-1 */
	unsigned on_closed_calls;
	_Atomic unsigned idle_calls;
	char last_error[256];
	unsigned last_failed_stage;
	_Atomic unsigned last_runs, last_attempt; /* of the last job that ended */
	Pipeline *p;
} Record;

static Record *record_new(unsigned n_jobs)
{
	Record *r = calloc(1, sizeof(*r));
	r->n_jobs = n_jobs;
	r->ended = calloc(n_jobs + 1, sizeof(*r->ended));
	pthread_mutex_init(&r->lock, NULL);
	return r;
}

static void record_free(Record *r)
{
	pthread_mutex_destroy(&r->lock);
	free(r->ended);
	free(r);
}

static void on_end(void *userdata, Job *job)
{
	Record *r = userdata;
	if (job->id <= r->n_jobs)
		atomic_fetch_add(&r->ended[job->id], 1);
	atomic_store(&r->last_runs, job->runs);
	atomic_store(&r->last_attempt, job->attempt);
	if (job->state == JOB_DONE) {
		atomic_fetch_add(&r->done, 1);
		if (r->expect_runs && job->runs != r->expect_runs)
			atomic_fetch_add(&r->bad_runs, 1);
		if (r->expect_fmt) {
			char want[1024];
			snprintf(want, sizeof(want), r->expect_fmt, (unsigned)job->id);
			if (strcmp(want, job->payload) != 0)
				atomic_fetch_add(&r->bad_payload, 1);
		}
	} else {
		atomic_fetch_add(&r->failed, 1);
		if (job->retry_stopped)
			atomic_fetch_add(&r->retry_stopped, 1);
		pthread_mutex_lock(&r->lock);
		snprintf(r->last_error, sizeof(r->last_error), "%s", job->error ? job->error : "");
		r->last_failed_stage = job->stage;
		pthread_mutex_unlock(&r->lock);
	}
	job_free(job);
}

static void on_stage_closed(void *userdata, unsigned index)
{
	Record *r = userdata;
	pthread_mutex_lock(&r->lock);
	r->closed_order[r->n_closed++] = index;
	if (index > 0) {
		StageStats st;
		stage_stats(pipeline_stage(r->p, index - 1), &st);
		r->threads_left_in_previous += st.threads;
	}
	pthread_mutex_unlock(&r->lock);
}

static void on_closed(void *userdata)
{
	Record *r = userdata;
	pthread_mutex_lock(&r->lock);
	r->on_closed_calls++;
	pthread_mutex_unlock(&r->lock);
}

static void on_idle(void *userdata)
{
	Record *r = userdata;
	atomic_fetch_add(&r->idle_calls, 1);
}

static const PipelineHooks hooks = {
	.on_end = on_end,
	.on_idle = on_idle,
	.on_stage_closed = on_stage_closed,
	.on_closed = on_closed,
};

static PipelineStats pstats(Pipeline *p)
{
	PipelineStats ps;
	pipeline_stats(p, &ps);
	return ps;
}

static Action *action(const char *spec)
{
	Action *a;
	ck_assert_int_eq(action_parse(spec, &a, NULL), 0);
	return a;
}

static Job *job(uint64_t id)
{
	char payload[64];
	Job *j;
	int n = snprintf(payload, sizeof(payload), "{\"n\":%llu}", (unsigned long long)id);
	ck_assert_int_eq(job_new(id, payload, (size_t)n, &j), 0);
	return j;
}

static StageStats sstats(Pipeline *p, unsigned i)
{
	StageStats st;
	stage_stats(pipeline_stage(p, i), &st);
	return st;
}

static void assert_each_ended_once(Record *r)
{
	for (unsigned id = 1; id <= r->n_jobs; id++)
		ck_assert_msg(r->ended[id] == 1, "job %u ended %u times", id, r->ended[id]);
}

typedef struct StageDef {
	const char *name;
	unsigned workers;
	const char *action;
} StageDef;

/* A pipeline (not started) whose hooks record into r; every queue has capacity. */
static Pipeline *new_pipeline(Record *r, const char *name, size_t capacity, const StageDef *stages,
                              unsigned n)
{
	Pipeline *p;
	ck_assert_int_eq(pipeline_new(name, &hooks, r, &p), 0);
	r->p = p;
	for (unsigned i = 0; i < n; i++)
		ck_assert_int_eq(pipeline_add_stage(p, stages[i].name, stages[i].workers, capacity,
		                                    action(stages[i].action)),
		                 0);
	return p;
}

static Pipeline *start_pipeline(Record *r, const char *name, size_t capacity,
                                const StageDef *stages, unsigned n)
{
	Pipeline *p = new_pipeline(r, name, capacity, stages, n);
	ck_assert_int_eq(pipeline_start(p), 0);
	return p;
}

/* Submits jobs first..last (blocking while the first queue is full). */
static void submit_ids(Pipeline *p, uint64_t first, uint64_t last)
{
	for (uint64_t id = first; id <= last; id++)
		ck_assert_int_eq(pipeline_submit(p, job(id)), 0);
}

/* The classic shape: download → resize → upload with 3, 4 and 5 workers. */
START_TEST(test_classic_shape_close_stage_by_stage)
{
	enum { N = 1000 };
	static const unsigned workers[] = { 3, 4, 5 };
	static const StageDef stages[] = {
		{ "download", 3, "rewrite" },
		{ "resize", 4, "rewrite" },
		{ "upload", 5, "rewrite" },
	};
	Record *r = record_new(N);
	r->expect_runs = 3;
	r->expect_fmt = "{\"stage\":\"upload\",\"input\":{\"stage\":\"resize\",\"input\":"
	                "{\"stage\":\"download\",\"input\":{\"n\":%u}}}}";
	Pipeline *p = start_pipeline(r, "images", 16, stages, 3);
	ck_assert_str_eq(pipeline_name(p), "images");
	ck_assert_uint_eq(pipeline_stage_count(p), 3);
	ck_assert_str_eq(stage_name(pipeline_stage(p, 1)), "resize");
	ck_assert_ptr_null(pipeline_stage(p, 3));
	for (unsigned i = 0; i < 3; i++)
		ck_assert_uint_eq(sstats(p, i).threads, workers[i]);

	submit_ids(p, 1, N);
	pipeline_close(p);
	Job *late = job(N + 1);
	ck_assert_int_eq(pipeline_submit(p, late), -EPIPE); /* intake stops at once */
	job_free(late);
	pipeline_join(p);

	/* Every job ran through all three stages exactly once. */
	ck_assert_uint_eq(r->done, N);
	ck_assert_uint_eq(r->failed, 0);
	ck_assert_uint_eq(r->bad_runs, 0);
	ck_assert_uint_eq(r->bad_payload, 0);
	assert_each_ended_once(r);

	/* Closed stage by stage, each only after the one before had no thread. */
	ck_assert_uint_eq(r->n_closed, 3);
	for (unsigned i = 0; i < 3; i++)
		ck_assert_uint_eq(r->closed_order[i], i);
	ck_assert_uint_eq(r->threads_left_in_previous, 0);
	ck_assert_uint_eq(r->on_closed_calls, 1);

	/* Every thread was joined. */
	for (unsigned i = 0; i < 3; i++) {
		StageStats st = sstats(p, i);
		ck_assert_uint_eq(st.threads, 0);
		ck_assert_uint_eq(st.threads_started, workers[i]);
		ck_assert_uint_eq(st.threads_joined, workers[i]);
		ck_assert_uint_eq(st.succeeded, N);
	}
	PipelineStats ps = pstats(p);
	ck_assert(ps.closing);
	ck_assert(ps.closed);
	ck_assert_uint_eq(ps.in_flight, 0);
	ck_assert_uint_eq(ps.accepted, N);
	ck_assert_uint_eq(ps.done, N);
	ck_assert_uint_eq(ps.failed, 0);
	pipeline_free(p);
	record_free(r);
}
END_TEST

START_TEST(test_drain_waits_for_every_job_without_closing)
{
	enum { N = 300 };
	Record *r = record_new(2 * N);
	static const StageDef stages[] = { { "a", 2, "sleep:1" },
		                           { "b", 3, "busy:200" },
		                           { "c", 1, "noop" } };
	Pipeline *p = start_pipeline(r, "drain", 8, stages, 3);

	pipeline_drain(p); /* nothing in flight: returns at once */
	submit_ids(p, 1, N);
	pipeline_drain(p);
	ck_assert_uint_eq(r->done, N); /* every job had ended when drain returned */
	ck_assert_uint_eq(pstats(p).in_flight, 0);
	WAIT_UNTIL(atomic_load(&r->idle_calls) >= 1); /* on_idle follows the wake-up */

	/* Still open: more jobs can be submitted and drained. */
	ck_assert(!pstats(p).closing);
	submit_ids(p, N + 1, 2 * N);
	pipeline_drain(p);
	ck_assert_uint_eq(r->done, 2 * N);
	assert_each_ended_once(r);
	ck_assert_uint_eq(r->n_closed, 0);
	pipeline_free(p);
	ck_assert_uint_eq(r->n_closed, 3); /* free closes */
	record_free(r);
}
END_TEST

START_TEST(test_failing_job_reported_worker_carries_on)
{
	enum { N = 30 };
	Record *r = record_new(N);
	static const StageDef stages[] = { { "a", 1, "noop" },
		                           { "b", 1, "fail:3" },
		                           { "c", 1, "noop" } };
	Pipeline *p = start_pipeline(r, "failing", 4, stages, 3);
	submit_ids(p, 1, N);
	pipeline_drain(p);

	ck_assert_uint_eq(r->failed, N / 3);
	ck_assert_uint_eq(r->done, N - N / 3);
	assert_each_ended_once(r);
	ck_assert_str_eq(r->last_error, "fail action: job 30 is call 30, a multiple of 3");
	ck_assert_uint_eq(r->last_failed_stage, 1);
	ck_assert_uint_eq(sstats(p, 1).failed, N / 3);
	ck_assert_uint_eq(sstats(p, 1).succeeded, N - N / 3);
	ck_assert_uint_eq(sstats(p, 2).succeeded, N - N / 3); /* failed jobs skip the rest */
	ck_assert_uint_eq(sstats(p, 1).threads, 1);           /* the worker is still there */
	ck_assert_uint_eq(pstats(p).done, N - N / 3);
	ck_assert_uint_eq(pstats(p).failed, N / 3);
	ck_assert_uint_eq(pstats(p).accepted, N);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* A gate action: holds every job until opened. */
typedef struct Gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
} Gate;

static int gate_fn(void *userdata, const char *stage, Job *j, char *err, size_t errlen)
{
	Gate *g = userdata;
	pthread_mutex_lock(&g->lock);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

static void gate_open(Gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

START_TEST(test_full_queue_blocks_the_stage_before)
{
	/* a (1 worker, cap 4) → b (1 worker held at the gate, cap 2). Once
	 * jammed, the pipeline holds exactly 1 (b's worker) + 2 (b's queue)
	 * + 1 (a's worker, blocked putting) + 4 (a's queue) = 8 jobs. */
	enum { N = 8 };
	Gate gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };
	Record *r = record_new(N + 1);
	Pipeline *p;
	Action *g;
	ck_assert_int_eq(action_new_function(gate_fn, &gate, &g), 0);
	ck_assert_int_eq(pipeline_new("jam", &hooks, r, &p), 0);
	r->p = p;
	ck_assert_int_eq(pipeline_add_stage(p, "a", 1, 4, action("noop")), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "b", 1, 2, g), 0);
	ck_assert_int_eq(pipeline_start(p), 0);

	/* Four jobs jam stage b and block stage a's worker... */
	submit_ids(p, 1, 4);
	WAIT_UNTIL(sstats(p, 1).busy == 1 && sstats(p, 1).queue.length == 2 &&
	           sstats(p, 1).queue.put_waits >= 1 && sstats(p, 0).queue.length == 0);
	WAIT_UNTIL(sstats(p, 0).handing_on == 1); /* a's worker: blocked handing on */
	ck_assert_uint_eq(sstats(p, 0).busy, 0);

	/* ...so stage a's queue takes exactly its capacity, then refuses. */
	for (uint64_t id = 5; id <= N; id++)
		ck_assert_int_eq(pipeline_try_submit(p, job(id)), 0);
	Job *extra = job(N + 1);
	ck_assert_int_eq(pipeline_try_submit(p, extra), -EAGAIN);
	ck_assert_uint_eq(sstats(p, 0).queue.length, 4);
	ck_assert_uint_eq(sstats(p, 1).queue.length, 2);
	ck_assert_uint_eq(pstats(p).in_flight, N);
	ck_assert_uint_eq(r->done, 0);

	gate_open(&gate);
	ck_assert_int_eq(pipeline_submit(p, extra), 0);
	pipeline_drain(p);
	ck_assert_uint_eq(r->done, N + 1);
	assert_each_ended_once(r);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* Pause parks every worker of a stage; jobs wait in its queue (and can be
 * cancelled there); resume lets them through. No sleeping: parked workers
 * are counted, and a parked worker can take no job. */
START_TEST(test_pause_cancel_resume)
{
	enum { N = 5 };
	Record *r = record_new(N);
	const StageDef defs[] = { { "a", 2, "noop" }, { "b", 1, "noop" } };
	Pipeline *p = start_pipeline(r, "pause", 8, defs, 2);

	ck_assert_int_eq(pipeline_pause_stage(p, 0, true), 0);
	WAIT_UNTIL(sstats(p, 0).parked == 2);
	ck_assert(sstats(p, 0).paused);
	Job *jobs[N + 1];
	for (unsigned id = 1; id <= N; id++) {
		jobs[id] = job(id);
		ck_assert_int_eq(pipeline_try_submit(p, jobs[id]), 0);
	}
	ck_assert_uint_eq(sstats(p, 0).queue.length, N);
	ck_assert_uint_eq(sstats(p, 0).succeeded, 0);

	/* Job 3 waits in the queue: it can be cancelled, once. */
	ck_assert_int_eq(job_cancel(jobs[3]), 0);
	ck_assert_int_eq(job_cancel(jobs[3]), -EALREADY);
	/* Job 4 too, and then discarded: it ends at once, in order kept. */
	ck_assert_int_eq(job_cancel(jobs[4]), 0);
	ck_assert_uint_eq(pipeline_discard_cancelled(p), 2);
	ck_assert_uint_eq(r->failed, 2);
	ck_assert_uint_eq(sstats(p, 0).queue.length, N - 2);
	ck_assert_uint_eq(sstats(p, 0).queue.unfinished, N - 2);
	ck_assert_uint_eq(pstats(p).cancelled, 2);
	ck_assert_uint_eq(pipeline_discard_cancelled(p), 0);

	/* Job 5, cancelled but not discarded, is skipped by its worker. */
	ck_assert_int_eq(job_cancel(jobs[5]), 0);

	/* Lowering the worker count retires a parked worker at once. */
	ck_assert_int_eq(pipeline_set_workers(p, 0, 1), 0);
	WAIT_UNTIL(sstats(p, 0).threads == 1);
	ck_assert_uint_eq(sstats(p, 0).queue.length, N - 2);

	ck_assert_int_eq(pipeline_pause_stage(p, 0, false), 0);
	pipeline_drain(p);
	ck_assert_uint_eq(r->done, N - 3);
	ck_assert_uint_eq(r->failed, 3); /* the cancelled ones (not DONE) */
	ck_assert_uint_eq(pstats(p).cancelled, 3);
	ck_assert_uint_eq(sstats(p, 0).cancelled, 1);     /* skipped by a worker */
	ck_assert_uint_eq(sstats(p, 1).succeeded, N - 3); /* never reached b */
	ck_assert_uint_eq(sstats(p, 0).parked, 0);
	assert_each_ended_once(r);

	ck_assert_int_eq(pipeline_pause_stage(p, 2, true), -ENOENT);
	pipeline_close(p);
	pipeline_join(p);
	ck_assert_int_eq(pipeline_pause_stage(p, 0, true), -EPIPE);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* A running job cannot be cancelled; a close ends a pause, so closing a
 * paused pipeline still runs every queued job to its end. */
START_TEST(test_cancel_running_and_close_while_paused)
{
	Gate gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };
	Record *r = record_new(3);
	Pipeline *p;
	Action *g;
	ck_assert_int_eq(action_new_function(gate_fn, &gate, &g), 0);
	ck_assert_int_eq(pipeline_new("gated", &hooks, r, &p), 0);
	r->p = p;
	ck_assert_int_eq(pipeline_add_stage(p, "a", 1, 4, g), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "b", 1, 4, action("noop")), 0);
	ck_assert_int_eq(pipeline_start(p), 0);

	Job *first = job(1);
	ck_assert_int_eq(pipeline_submit(p, first), 0);
	WAIT_UNTIL(sstats(p, 0).busy == 1);
	ck_assert_int_eq(job_cancel(first), -EBUSY);

	ck_assert_int_eq(pipeline_pause_stage(p, 1, true), 0);
	WAIT_UNTIL(sstats(p, 1).parked == 1);
	submit_ids(p, 2, 3);
	gate_open(&gate);
	WAIT_UNTIL(sstats(p, 1).queue.length == 3); /* all held before b */
	ck_assert_uint_eq(r->done, 0);

	pipeline_close(p);
	pipeline_join(p);
	ck_assert_uint_eq(r->done, 3);
	assert_each_ended_once(r);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* pipeline_try_submit arms on_room when it finds the first queue full. */
static _Atomic unsigned room_calls;
static void on_room(void *userdata)
{
	atomic_fetch_add(&room_calls, 1);
}

START_TEST(test_room_hook_after_full_submit)
{
	Record *r = record_new(6);
	PipelineHooks h = hooks;
	h.on_room = on_room;
	Pipeline *p;
	ck_assert_int_eq(pipeline_new("room", &h, r, &p), 0);
	r->p = p;
	ck_assert_int_eq(pipeline_add_stage(p, "a", 1, 4, action("noop")), 0);
	ck_assert_int_eq(pipeline_start(p), 0);
	ck_assert_int_eq(pipeline_pause_stage(p, 0, true), 0);
	WAIT_UNTIL(sstats(p, 0).parked == 1);
	for (uint64_t id = 1; id <= 4; id++)
		ck_assert_int_eq(pipeline_try_submit(p, job(id)), 0);
	Job *extra = job(5);
	ck_assert_int_eq(pipeline_try_submit(p, extra), -EAGAIN);
	ck_assert_uint_eq(room_calls, 0);
	ck_assert_int_eq(pipeline_pause_stage(p, 0, false), 0);
	WAIT_UNTIL(room_calls == 1);
	ck_assert_int_eq(pipeline_try_submit(p, extra), 0);
	pipeline_drain(p);
	ck_assert_uint_eq(r->done, 5);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* Resizing the middle stage up and down while jobs flow. */
typedef struct Feeder {
	Pipeline *p;
	unsigned n;
} Feeder;

static void *feeder_main(void *arg)
{
	Feeder *f = arg;
	for (uint64_t id = 1; id <= f->n; id++)
		pipeline_submit(f->p, job(id));
	return NULL;
}

START_TEST(test_resize_under_load_loses_and_duplicates_nothing)
{
	enum { N = 20000 };
	static const unsigned sizes[] = { 8, 1, 5, 2, 16, 1, 3, 12, 4 };
	Record *r = record_new(N);
	r->expect_runs = 3;
	static const StageDef stages[] = { { "a", 2, "noop" },
		                           { "b", 2, "busy:20" },
		                           { "c", 2, "noop" } };
	Pipeline *p = start_pipeline(r, "resize", 32, stages, 3);
	pthread_t t;

	Feeder f = { p, N };
	pthread_create(&t, NULL, feeder_main, &f);
	unsigned resizes = 0;
	while (atomic_load(&r->done) + atomic_load(&r->failed) < N / 2) {
		unsigned n = sizes[resizes++ % ELEMENTSOF(sizes)];
		ck_assert_int_eq(pipeline_set_workers(p, 1, n), 0);
		/* Wait until the retirements (or new threads) have happened:
		 * a retiring worker finishes its job first, then exits. */
		WAIT_UNTIL(sstats(p, 1).threads == n);
		ck_assert_uint_eq(sstats(p, 1).workers, n);
	}
	pthread_join(t, NULL);
	pipeline_drain(p);

	ck_assert_uint_ge(resizes, 2);
	ck_assert_uint_eq(r->done, N);
	ck_assert_uint_eq(r->failed, 0);
	ck_assert_uint_eq(r->bad_runs, 0);
	assert_each_ended_once(r);
	ck_assert_uint_eq(sstats(p, 1).succeeded, N);

	pipeline_close(p);
	pipeline_join(p);
	StageStats st = sstats(p, 1);
	ck_assert_uint_eq(st.threads, 0);
	ck_assert_uint_eq(st.threads_joined, st.threads_started);
	pipeline_free(p);
	record_free(r);
}
END_TEST

START_TEST(test_idle_workers_retire_at_once)
{
	static const StageDef only[] = { { "only", 8, "noop" } };
	Record *r = record_new(0);
	Pipeline *p = start_pipeline(r, "idle", 4, only, 1);
	WAIT_UNTIL(sstats(p, 0).queue.get_waits >= 8); /* all idle, blocked on the queue */
	ck_assert_int_eq(pipeline_set_workers(p, 0, 2), 0);
	WAIT_UNTIL(sstats(p, 0).threads == 2);
	/* A later call reaps (joins) the six that retired. */
	ck_assert_int_eq(pipeline_set_workers(p, 0, 2), 0);
	ck_assert_uint_eq(sstats(p, 0).threads_joined, 6);
	ck_assert_int_eq(pipeline_set_workers(p, 0, 5), 0);
	ck_assert_uint_eq(sstats(p, 0).threads, 5);
	ck_assert_uint_eq(sstats(p, 0).threads_started, 11);
	pipeline_free(p);
	record_free(r);
}
END_TEST

START_TEST(test_errors)
{
	Record *r = record_new(0);
	Pipeline *p;
	Job *j = job(1);

	ck_assert_int_eq(pipeline_new("bad name", &hooks, r, &p), -EINVAL);
	ck_assert_int_eq(pipeline_new("", &hooks, r, &p), -EINVAL);
	ck_assert_int_eq(pipeline_new("x", &(PipelineHooks){ 0 }, r, &p), -EINVAL);
	char long_name[STAGE_NAME_MAX + 2];
	memset(long_name, 'n', sizeof(long_name));
	long_name[STAGE_NAME_MAX + 1] = '\0';
	ck_assert_int_eq(pipeline_new(long_name, &hooks, r, &p), -EINVAL); /* 65 characters */
	long_name[STAGE_NAME_MAX] = '\0';
	ck_assert(stage_name_is_valid(long_name)); /* 64: at the limit */
	ck_assert_int_eq(pipeline_new(long_name, &hooks, r, &p), 0);
	ck_assert_str_eq(pipeline_name(p), long_name);
	pipeline_free(p);
	ck_assert_int_eq(pipeline_new("x", &hooks, r, &p), 0);
	r->p = p;
	ck_assert_int_eq(pipeline_start(p), -EINVAL);     /* no stages */
	ck_assert_int_eq(pipeline_submit(p, j), -EINVAL); /* not started */
	ck_assert_int_eq(pipeline_add_stage(p, "a", 0, 4, action("noop")), -EINVAL);
	ck_assert_int_eq(pipeline_add_stage(p, "a", STAGE_WORKERS_MAX + 1, 4, action("noop")),
	                 -EINVAL);
	ck_assert_int_eq(pipeline_add_stage(p, "a", 1, 0, action("noop")), -EINVAL);
	ck_assert_int_eq(pipeline_add_stage(p, "a/b", 1, 4, action("noop")), -EINVAL);
	ck_assert_int_eq(pipeline_add_stage(p, "a", 1, 4, action("noop")), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "a", 1, 4, action("noop")), -EINVAL); /* duplicate */
	ck_assert_int_eq(pipeline_start(p), 0);
	ck_assert_int_eq(pipeline_start(p), -EINVAL);
	ck_assert_int_eq(pipeline_add_stage(p, "b", 1, 4, action("noop")), -EINVAL); /* started */
	ck_assert_int_eq(pipeline_set_workers(p, 1, 2), -ENOENT);
	ck_assert_int_eq(pipeline_set_workers(p, 0, 0), -EINVAL);
	ck_assert_int_eq(pipeline_set_workers(p, 0, STAGE_WORKERS_MAX + 1), -EINVAL);
	ck_assert_int_eq(pipeline_set_workers(p, 0, STAGE_WORKERS_MAX), 0); /* at the limit */
	ck_assert_int_eq(pipeline_set_workers(p, 0, 1), 0);
	pipeline_close(p);
	pipeline_close(p); /* idempotent */
	ck_assert_int_eq(pipeline_set_workers(p, 0, 2), -EPIPE);
	ck_assert_int_eq(pipeline_submit(p, j), -EPIPE);
	ck_assert_int_eq(pipeline_try_submit(p, j), -EPIPE);
	pipeline_join(p);
	job_free(j);
	pipeline_free(p);

	/* 64 stages is the limit; the 65th is refused. */
	ck_assert_int_eq(pipeline_new("long", &hooks, r, &p), 0);
	for (unsigned i = 0; i < PIPELINE_STAGES_MAX; i++) {
		char name[16];
		snprintf(name, sizeof(name), "s%u", i);
		ck_assert_int_eq(pipeline_add_stage(p, name, 1, 1, action("noop")), 0);
	}
	ck_assert_int_eq(pipeline_add_stage(p, "extra", 1, 1, action("noop")), -EINVAL);
	pipeline_free(p); /* never started: nothing to join */
	record_free(r);
}
END_TEST

START_TEST(test_close_before_start)
{
	static const StageDef a[] = { { "a", 2, "noop" } };
	Record *r = record_new(1);
	Pipeline *p = new_pipeline(r, "early", 4, a, 1);
	pipeline_close(p);
	ck_assert_int_eq(pipeline_start(p), -EPIPE);
	Job *j = job(1);
	ck_assert_int_eq(pipeline_submit(p, j), -EINVAL); /* never started */
	job_free(j);
	ck_assert_uint_eq(sstats(p, 0).threads_started, 0);
	ck_assert_uint_eq(r->n_closed, 0);
	pipeline_free(p);
	record_free(r);
}
END_TEST

START_TEST(test_failed_start_stops_everything_and_reports_nothing)
{
	/* Workers 2 + 2 + 2; the 4th thread (stage b's second) fails. */
	static const StageDef stages[] = { { "a", 2, "noop" },
		                           { "b", 2, "noop" },
		                           { "c", 2, "noop" } };
	Record *r = record_new(1);
	Pipeline *p = new_pipeline(r, "unwind", 4, stages, 3);
	atomic_store(&stage_fault_thread_create, 4);
	ck_assert_int_eq(pipeline_start(p), -EAGAIN);
	atomic_store(&stage_fault_thread_create, 0);

	/* Every thread that started was stopped and joined... */
	ck_assert_uint_eq(sstats(p, 0).threads_started, 2);
	ck_assert_uint_eq(sstats(p, 1).threads_started, 1);
	ck_assert_uint_eq(sstats(p, 2).threads_started, 0);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_uint_eq(sstats(p, i).threads, 0);
		ck_assert_uint_eq(sstats(p, i).threads_joined, sstats(p, i).threads_started);
	}
	/* ...and no hook told anyone about a pipeline that never ran. */
	ck_assert_uint_eq(r->n_closed, 0);
	ck_assert_uint_eq(r->on_closed_calls, 0);
	Job *j = job(1);
	ck_assert_int_eq(pipeline_submit(p, j), -EINVAL);
	job_free(j);
	pipeline_free(p);

	/* A resize that cannot start every new worker keeps those that did. */
	static const StageDef one[] = { { "a", 1, "noop" } };
	p = start_pipeline(r, "grow", 4, one, 1);
	atomic_store(&stage_fault_thread_create, 3);
	ck_assert_int_eq(pipeline_set_workers(p, 0, 5), -EAGAIN);
	atomic_store(&stage_fault_thread_create, 0);
	ck_assert_uint_eq(sstats(p, 0).workers, 3);
	ck_assert_uint_eq(sstats(p, 0).threads, 3);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* Resizes until the stage is closed under it. */
static void *resizer_main(void *arg)
{
	Pipeline *p = arg;
	for (unsigned i = 0;; i++)
		if (pipeline_set_workers(p, 0, 1 + i % 4) == -EPIPE)
			return NULL;
}

START_TEST(test_resize_racing_close_joins_every_thread)
{
	for (unsigned round = 0; round < 50; round++) {
		static const StageDef stages[] = { { "a", 2, "noop" }, { "b", 1, "noop" } };
		Record *r = record_new(100);
		Pipeline *p = start_pipeline(r, "race", 4, stages, 2);
		pthread_t t;
		pthread_create(&t, NULL, resizer_main, p);
		submit_ids(p, 1, 100);
		pipeline_close(p);
		pipeline_join(p);
		/* Joined means joined: no retired worker is still being reaped. */
		StageStats st = sstats(p, 0);
		ck_assert_uint_eq(st.threads_joined, st.threads_started);
		pthread_join(t, NULL);
		ck_assert_uint_eq(r->done, 100);
		pipeline_free(p);
		record_free(r);
	}
}
END_TEST

/* ---- retries ---- */

static const RetryPolicy three_fast_attempts = {
	.max_attempts = 3,
	.delay_usec = 1000,
	.max_delay_usec = 1000,
	.any_exit_code = true,
};

START_TEST(test_retry_until_attempts_are_used_up)
{
	Record *r = record_new(1);
	const StageDef st[] = { { "s", 1, "fail" } };
	Pipeline *p = new_pipeline(r, "retry", 8, st, 1);
	stage_set_retry(pipeline_stage(p, 0), &three_fast_attempts);
	ck_assert_int_eq(pipeline_start(p), 0);
	submit_ids(p, 1, 1);
	pipeline_drain(p);
	ck_assert_uint_eq(r->failed, 1);
	ck_assert_uint_eq(r->last_runs, 3);
	ck_assert_uint_eq(r->last_attempt, 3);
	ck_assert(strstr(r->last_error, "fail action"));
	ck_assert_uint_eq(sstats(p, 0).retries, 2);
	ck_assert_uint_eq(sstats(p, 0).failed, 1);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* A started one-stage pipeline "retry" whose action is fn, with the policy. */
static Pipeline *retry_pipeline(Record *r, ActionFunction fn, unsigned workers,
                                const RetryPolicy *pol)
{
	Pipeline *p;
	Action *a;
	ck_assert_int_eq(pipeline_new("retry", &hooks, r, &p), 0);
	ck_assert_int_eq(action_new_function(fn, NULL, &a), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "s", workers, 8, a), 0);
	stage_set_retry(pipeline_stage(p, 0), pol);
	ck_assert_int_eq(pipeline_start(p), 0);
	return p;
}

/* Fails the first two attempts; records when each run started and ended. */
static _Atomic uint64_t run_start[4], run_end[4];
static int fail_twice(void *userdata, const char *stage, Job *job, char *err, size_t errlen)
{
	unsigned a = job->attempt;
	if (a < 4)
		atomic_store(&run_start[a], mono_usec());
	int r = 0;
	if (a < 3) {
		snprintf(err, errlen, "attempt %u fails", a);
		r = -EIO;
	}
	if (a < 4)
		atomic_store(&run_end[a], mono_usec());
	return r;
}

START_TEST(test_retry_then_success_after_backoff)
{
	Record *r = record_new(1);
	RetryPolicy pol = three_fast_attempts;
	pol.delay_usec = 40000; /* then 80 ms */
	pol.max_delay_usec = 1000000;
	Pipeline *p = retry_pipeline(r, fail_twice, 2, &pol);
	submit_ids(p, 1, 1);
	pipeline_drain(p);
	ck_assert_uint_eq(r->done, 1);
	ck_assert_uint_eq(r->last_runs, 3);
	/* Jitter takes off at most half of each delay: lower bounds only. */
	ck_assert_uint_ge(run_start[2] - run_end[1], 20000);
	ck_assert_uint_ge(run_start[3] - run_end[2], 40000);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* Job 1 fails at once and is retried an hour later; the others succeed. */
static int fail_first_job(void *userdata, const char *stage, Job *job, char *err, size_t errlen)
{
	if (job->id != 1)
		return 0;
	snprintf(err, errlen, "job 1 fails");
	return -EIO;
}

START_TEST(test_job_waiting_for_retry_holds_no_worker)
{
	Record *r = record_new(5);
	RetryPolicy pol = three_fast_attempts;
	pol.delay_usec = pol.max_delay_usec = 3600u * 1000000u;
	Pipeline *p = retry_pipeline(r, fail_first_job, 1, &pol); /* one worker */
	Job *first = job(1);
	ck_assert_int_eq(pipeline_submit(p, first), 0);
	WAIT_UNTIL(sstats(p, 0).queue.delayed == 1);
	ck_assert_int_eq(atomic_load(&first->state), JOB_RETRYING);
	ck_assert_uint_ge(atomic_load(&first->retry_at_usec), real_usec() + 1800u * 1000000u);
	/* The only worker is free for the jobs behind it. */
	submit_ids(p, 2, 5);
	WAIT_UNTIL(r->done == 4);
	ck_assert_uint_eq(sstats(p, 0).busy, 0);
	ck_assert_uint_eq(pstats(p).in_flight, 1);
	/* A retrying job can be cancelled, and taken out at once. */
	ck_assert_int_eq(job_cancel(first), 0);
	ck_assert_uint_eq(pipeline_discard_cancelled(p), 1);
	pipeline_drain(p);
	ck_assert_uint_eq(r->failed, 1);
	assert_each_ended_once(r);
	pipeline_free(p);
	record_free(r);
}
END_TEST

static int fail_permanently(void *userdata, const char *stage, Job *job, char *err, size_t errlen)
{
	snprintf(err, errlen, "bad input");
	return -EPERM;
}

START_TEST(test_permanent_failure_is_not_retried)
{
	Record *r = record_new(1);
	Pipeline *p = retry_pipeline(r, fail_permanently, 1, &three_fast_attempts);
	submit_ids(p, 1, 1);
	pipeline_drain(p);
	ck_assert_uint_eq(r->failed, 1);
	ck_assert_uint_eq(r->last_runs, 1);
	ck_assert_uint_eq(sstats(p, 0).retries, 0);
	pipeline_free(p);
	record_free(r);
}
END_TEST

static int fail_always(void *userdata, const char *stage, Job *job, char *err, size_t errlen)
{
	snprintf(err, errlen, "job %u fails", (unsigned)job->id);
	return -EIO;
}

/* A shutdown stops retries: the job waiting for one ends at once, and a run
 * that fails afterwards is not retried either (its job is marked, so that
 * the daemon keeps it unfinished in the journal); both say why. */
START_TEST(test_stop_retries_ends_waiting_jobs_and_refuses_new_retries)
{
	Record *r = record_new(2);
	RetryPolicy pol = three_fast_attempts;
	pol.delay_usec = pol.max_delay_usec = 3600u * 1000000u;
	Pipeline *p = retry_pipeline(r, fail_always, 1, &pol);
	submit_ids(p, 1, 1);
	WAIT_UNTIL(sstats(p, 0).queue.delayed == 1);

	ck_assert_uint_eq(pipeline_stop_retries(p, "the test stopped retries"), 1);
	ck_assert_uint_eq(r->failed, 1);
	ck_assert_uint_eq(r->retry_stopped, 0); /* ended by the caller, not by its worker */
	ck_assert_str_eq(r->last_error, "job 1 fails (not retried: the test stopped retries)");

	submit_ids(p, 2, 2);
	pipeline_drain(p);
	ck_assert_uint_eq(r->failed, 2);
	ck_assert_uint_eq(r->retry_stopped, 1);
	ck_assert_str_eq(r->last_error, "job 2 fails (not retried: the test stopped retries)");
	ck_assert_uint_eq(r->last_attempt, 1);
	ck_assert_uint_eq(sstats(p, 0).retries, 1); /* job 1's only */
	assert_each_ended_once(r);
	pipeline_free(p);
	record_free(r);
}
END_TEST

START_TEST(test_backoff_doubles_up_to_the_cap)
{
	const RetryPolicy pol = { .max_attempts = 100, .delay_usec = 100, .max_delay_usec = 1000 };
	static const uint64_t want[] = { 0, 0, 100, 200, 400, 800, 1000, 1000 };
	for (unsigned attempt = 2; attempt < ELEMENTSOF(want); attempt++)
		ck_assert_uint_eq(retry_delay_usec(&pol, attempt), want[attempt]);
	ck_assert_uint_eq(retry_delay_usec(&pol, 100), 1000);
}
END_TEST

/* A failed job goes back in at the stage that failed, not at the start. */
static int fail_unless_fixed(void *userdata, const char *stage, Job *job, char *err,
                             size_t errlen)
{
	if (atomic_load((_Atomic bool *)userdata))
		return 0;
	snprintf(err, errlen, "not fixed yet");
	return -EIO;
}

static _Atomic(Job *) kept_job;
static void keep_on_end(void *userdata, Job *job)
{
	atomic_store(&kept_job, job);
}

START_TEST(test_requeue_resumes_at_the_failed_stage)
{
	static _Atomic bool fixed;
	static const PipelineHooks keep = { .on_end = keep_on_end };
	Pipeline *p;
	Action *a;
	ck_assert_int_eq(pipeline_new("requeue", &keep, NULL, &p), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "first", 1, 8, action("rewrite")), 0);
	ck_assert_int_eq(action_new_function(fail_unless_fixed, &fixed, &a), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "second", 1, 8, a), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "third", 1, 8, action("rewrite")), 0);
	ck_assert_int_eq(pipeline_start(p), 0);
	ck_assert_int_eq(pipeline_submit(p, job(1)), 0);
	pipeline_drain(p);
	Job *j = atomic_exchange(&kept_job, NULL);
	ck_assert_int_eq(j->state, JOB_FAILED);
	ck_assert_uint_eq(j->stage, 1);
	ck_assert_str_eq(j->payload, "{\"stage\":\"first\",\"input\":{\"n\":1}}");

	ck_assert_int_eq(pipeline_try_requeue(p, j, 3), -ENOENT);
	ck_assert_int_eq(j->state, JOB_FAILED); /* unchanged on error */
	atomic_store(&fixed, true);
	ck_assert_int_eq(pipeline_try_requeue(p, j, 1), 0);
	pipeline_drain(p);
	ck_assert_ptr_eq(atomic_exchange(&kept_job, NULL), j);
	ck_assert_int_eq(j->state, JOB_DONE);
	/* "first" ran once: the job went back in at "second". */
	ck_assert_str_eq(j->payload, "{\"stage\":\"third\",\"input\":{\"stage\":\"first\","
	                             "\"input\":{\"n\":1}}}");
	ck_assert_uint_eq(j->runs, 4);
	ck_assert_uint_eq(pstats(p).accepted, 1); /* a requeue is not a new submit */
	job_free(j);
	pipeline_free(p);
}
END_TEST

/* ---- progress: heartbeats and stalled workers ---------------------------- */

/* Job 1 holds its worker at the gate without a sign of life (a hung plugin
 * call); any other job beats its heartbeat in a loop until the gate opens
 * (a program being waited for), counting its beats. */
static Gate stall_gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };
static _Atomic uint64_t beats;

static int hang_or_beat(void *userdata, const char *stage, Job *j, char *err, size_t errlen)
{
	if (j->id == 1)
		return gate_fn(&stall_gate, stage, j, err, errlen);
	for (;;) {
		pthread_mutex_lock(&stall_gate.lock);
		bool open = stall_gate.open;
		pthread_mutex_unlock(&stall_gate.lock);
		if (open)
			return 0;
		heartbeat_beat();
		atomic_fetch_add(&beats, 1);
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

START_TEST(test_a_silent_worker_is_stalled_a_beating_one_is_not)
{
	/* "in" (2 idle workers) → "work" (3 workers: job 1 silent, job 2
	 * beating, one idle). No sleeping: "now" is chosen, relative to the
	 * moment T after which job 2 has surely beaten and job 1 surely not. */
	Record *r = record_new(2);
	Pipeline *p;
	Action *a;
	ck_assert_int_eq(pipeline_new("prog", &hooks, r, &p), 0);
	r->p = p;
	ck_assert_int_eq(pipeline_add_stage(p, "in", 2, 8, action("noop")), 0);
	ck_assert_int_eq(action_new_function(hang_or_beat, NULL, &a), 0);
	ck_assert_int_eq(pipeline_add_stage(p, "work", 3, 8, a), 0);
	ck_assert_int_eq(pipeline_start(p), 0);
	uint64_t t0 = mono_usec();
	submit_ids(p, 1, 2);
	WAIT_UNTIL(sstats(p, 1).busy == 2);
	StageStall st = { 0 };
	unsigned stage = 99;
	/* Each job beat as it started (after t0), however long its worker
	 * had waited for it. */
	ck_assert_uint_eq(pipeline_find_stalled(p, t0 + 10000000, 10000000, &stage, &st), 0);
	uint64_t t = mono_usec();
	uint64_t b = atomic_load(&beats);
	WAIT_UNTIL(atomic_load(&beats) > b + 1); /* a beat wholly after t */

	/* 10 s after t, with a 10 s threshold: job 1 started before t (stalled),
	 * job 2 beat after t (not); idle workers never are. */
	ck_assert_uint_eq(pipeline_find_stalled(p, t + 10000000, 10000000 - 1, &stage, &st), 1);
	ck_assert_uint_eq(stage, 1);
	ck_assert_uint_eq(st.job_id, 1);
	ck_assert_uint_ge(st.worker, 1);
	ck_assert_uint_le(st.worker, 3);
	ck_assert_int_gt(st.tid, 0);
	ck_assert_uint_ge(st.silent_usec, 10000000);
	StageStall single = { 0 };
	ck_assert_uint_eq(
	        stage_find_stalled(pipeline_stage(p, 1), t + 10000000, 10000000 - 1, &single), 1);
	ck_assert_uint_eq(single.job_id, 1);
	ck_assert_uint_eq(stage_find_stalled(pipeline_stage(p, 0), t + 10000000, 0, &single), 0);
	/* Far enough ahead, the beating one is stalled too; the silent one
	 * stays the one reported (silent longest). */
	ck_assert_uint_eq(pipeline_find_stalled(p, t + 100000000, 10000000, &stage, &st), 2);
	ck_assert_uint_eq(st.job_id, 1);
	/* Below the threshold: nothing. */
	ck_assert_uint_eq(pipeline_find_stalled(p, mono_usec(), 3600000000u, &stage, &st), 0);

	gate_open(&stall_gate);
	pipeline_drain(p);
	ck_assert_uint_eq(r->done, 2);
	/* Every worker idle: none is stalled however late it is. */
	ck_assert_uint_eq(pipeline_find_stalled(p, t + 100000000, 0, &stage, &st), 0);
	pipeline_free(p);
	record_free(r);
}
END_TEST

/* Workers waiting on an empty queue, or parked by a pause, however long. */
START_TEST(test_idle_and_paused_workers_are_never_stalled)
{
	Record *r = record_new(0);
	const StageDef defs[] = { { "a", 2, "noop" }, { "b", 3, "noop" } };
	Pipeline *p = start_pipeline(r, "idle", 4, defs, 2);
	ck_assert_int_eq(pipeline_pause_stage(p, 1, true), 0);
	WAIT_UNTIL(sstats(p, 1).parked == 3);
	StageStall st;
	unsigned stage;
	ck_assert_uint_eq(pipeline_find_stalled(p, mono_usec() + 3600000000u, 0, &stage, &st), 0);
	pipeline_free(p);
	record_free(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pipeline");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_classic_shape_close_stage_by_stage);
	tcase_add_test(tc, test_drain_waits_for_every_job_without_closing);
	tcase_add_test(tc, test_failing_job_reported_worker_carries_on);
	tcase_add_test(tc, test_full_queue_blocks_the_stage_before);
	tcase_add_test(tc, test_resize_under_load_loses_and_duplicates_nothing);
	tcase_add_test(tc, test_idle_workers_retire_at_once);
	tcase_add_test(tc, test_errors);
	tcase_add_test(tc, test_close_before_start);
	tcase_add_test(tc, test_failed_start_stops_everything_and_reports_nothing);
	tcase_add_test(tc, test_resize_racing_close_joins_every_thread);
	tcase_add_test(tc, test_pause_cancel_resume);
	tcase_add_test(tc, test_cancel_running_and_close_while_paused);
	tcase_add_test(tc, test_room_hook_after_full_submit);
	suite_add_tcase(s, tc);
	tc = tcase("retry");
	tcase_add_test(tc, test_retry_until_attempts_are_used_up);
	tcase_add_test(tc, test_retry_then_success_after_backoff);
	tcase_add_test(tc, test_job_waiting_for_retry_holds_no_worker);
	tcase_add_test(tc, test_permanent_failure_is_not_retried);
	tcase_add_test(tc, test_stop_retries_ends_waiting_jobs_and_refuses_new_retries);
	tcase_add_test(tc, test_backoff_doubles_up_to_the_cap);
	tcase_add_test(tc, test_requeue_resumes_at_the_failed_stage);
	suite_add_tcase(s, tc);
	tc = tcase("progress");
	tcase_add_test(tc, test_a_silent_worker_is_stalled_a_beating_one_is_not);
	tcase_add_test(tc, test_idle_and_paused_workers_are_never_stalled);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
