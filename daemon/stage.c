#include "stage.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heartbeat.h"
#include "util.h"

typedef struct Worker {
	pthread_t thread;
	Stage *stage;
	unsigned interrupt_seen; /* for queue_get_next; only this worker touches it */
	bool exited;             /* under stage lock: the thread is about to return */
	struct Worker *next;     /* under stage lock */
	/* Statistics, written only by this worker (plain relaxed stores, no
	 * read-modify-write and no sharing between workers), read by
	 * stage_stats from any thread. */
	_Atomic unsigned char state; /* a WorkerState */
	_Atomic uint64_t succeeded, failed, cancelled, retries;
	void *action_state;  /* from action_worker_init */
	bool init_failed;    /* action_worker_init failed: each job fails with init_error */
	char init_error[256];
	uint64_t rng;        /* xorshift state for retry jitter */
	/* Progress, for stage_find_stalled: the heartbeat (beaten as each job
	 * starts, and by spawn.c while a program runs; see heartbeat.h), the
	 * job being run (0: none), and who the worker is for log lines. The
	 * worker stores the heartbeat and the job id before it stores `state`
	 * (release); a reader that sees the state (acquire) sees them too. */
	Heartbeat hb;
	_Atomic uint64_t job_id;
	_Atomic int tid; /* the thread's id (gettid), 0 until it has started */
	unsigned number; /* 1 for the stage's first worker thread, then 2... (immutable) */
} Worker;

typedef enum WorkerState {
	WORKER_IDLE,     /* in queue_get_next (blocked on an empty queue, or about to be) */
	WORKER_RUNNING,  /* running the action */
	WORKER_HANDING,  /* handing the job on (blocked if the next queue is full) */
	WORKER_STARTING, /* in action_worker_init (a plugin's per-worker setup) */
} WorkerState;

struct Stage {
	char name[STAGE_NAME_MAX + 1];
	unsigned index;
	Queue *queue;
	Action *action;
	RetryPolicy retry; /* immutable once started */
	StageHooks hooks;
	void *userdata;
	/* stage_stop_retries: why. Written once, before the queue refuses
	 * delayed puts; read by a worker only once its put was refused (the
	 * queue's lock orders the two, not the stage's). */
	const char *retries_stopped_why;

	pthread_mutex_t lock;         /* protects everything below */
	pthread_cond_t worker_exited; /* broadcast by each worker as it exits */
	pthread_cond_t resumed;       /* broadcast on resume, close and set_workers */
	/* Written under lock; read unlocked by workers between jobs (a worker
	 * that misses the change is blocked in the queue, and the queue_interrupt
	 * that follows every pause brings it back to look). */
	_Atomic bool paused;
	Worker *workers;              /* every thread not yet joined */
	unsigned target;              /* workers wanted */
	unsigned running; /* live workers not retiring; never more than target for long */
	unsigned threads; /* live threads, retiring ones included */
	unsigned parked;  /* workers waiting in wait_while_paused */
	bool closed;
	uint64_t threads_started, threads_joined;
	uint64_t reaped_succeeded, reaped_failed, reaped_cancelled,
	        reaped_retries; /* from workers already joined */
};

bool stage_name_is_valid(const char *name)
{
	size_t n = strnlen(name, STAGE_NAME_MAX + 1);
	if (n == 0 || n > STAGE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int stage_new(const char *name, unsigned index, unsigned workers, size_t capacity, Action *action,
              const StageHooks *hooks, void *userdata, Stage **ret)
{
	int r;

	if (!name || !stage_name_is_valid(name) || workers == 0 || workers > STAGE_WORKERS_MAX ||
	    !action || !hooks || !hooks->deliver) {
		action_free(action);
		return -EINVAL;
	}
	Stage *s = calloc(1, sizeof(*s));
	if (!s) {
		action_free(action);
		return -ENOMEM;
	}
	r = queue_new(capacity, &s->queue);
	if (r < 0) {
		action_free(action);
		free(s);
		return r;
	}
	memcpy(s->name, name, strlen(name) + 1);
	s->index = index;
	s->action = action;
	s->hooks = *hooks;
	s->userdata = userdata;
	s->target = workers;
	s->retry = RETRY_POLICY_NONE;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->worker_exited, NULL);
	pthread_cond_init(&s->resumed, NULL);
	*ret = s;
	return 0;
}

/* A counter only its owner writes: load, add, store — no locked instruction. */
static void bump(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
}

void stage_set_retry(Stage *s, const RetryPolicy *policy)
{
	assert(s->threads_started == 0);
	s->retry = *policy;
	if (s->retry.max_attempts == 0)
		s->retry.max_attempts = 1;
}

uint64_t retry_delay_usec(const RetryPolicy *policy, unsigned attempt)
{
	uint64_t d = policy->delay_usec;
	for (unsigned i = 2; i < attempt && d < policy->max_delay_usec; i++)
		d *= 2;
	return d < policy->max_delay_usec ? d : policy->max_delay_usec;
}

static uint64_t xorshift(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *state = x;
}

/* Whether the failure of the run just made (r < 0; ran_program: it was a
 * program's) may be tried again. */
static bool retryable(const RetryPolicy *p, const Job *job, int r, bool ran_program)
{
	if (job->attempt >= p->max_attempts || r == -EPERM)
		return false;
	if (!ran_program)
		return true;
	if (job->timed_out)
		return p->on_timeout;
	if (job->term_signal != 0)
		return p->on_signal;
	unsigned st = (unsigned)job->exit_status & 255u;
	return p->any_exit_code || (p->exit_codes[st / 8] & (1u << (st % 8)));
}

/* Puts a job whose run failed back on the queue for its next attempt.
 * Returns false if it could not (no memory, or retries were stopped by a
 * shutdown): the job then fails, with why in err. */
static bool schedule_retry(Worker *w, Job *job, char *err, size_t errlen)
{
	Stage *s = w->stage;
	uint64_t delay = retry_delay_usec(&s->retry, job->attempt + 1);
	delay -= delay > 1 ? xorshift(&w->rng) % (delay / 2 + 1) : 0; /* jitter: up to half off */
	job->attempt++;
	job->retry_at_usec = real_usec() + delay;
	/* RETRYING before it is visible in the queue: from then on the loop
	 * may cancel it and another worker may take it. */
	atomic_store_explicit(&job->state, JOB_RETRYING, memory_order_relaxed);
	if (s->hooks.progress)
		s->hooks.progress(s->userdata, s, job);
	int r = queue_put_delayed(s->queue, job, mono_usec() + delay);
	if (r == 0)
		return true;
	job->attempt--;
	atomic_store_explicit(&job->state, JOB_RUNNING, memory_order_relaxed);
	job->retry_stopped = r == -ECANCELED;
	size_t n = strnlen(err, errlen);
	snprintf(err + n, errlen - n, " (not retried: %s)",
	         r == -ECANCELED ? s->retries_stopped_why : "out of memory");
	return false;
}

/* Runs one job through the action and hands it on (or puts it back for a
 * retry). The caller marks it done on the queue (with its next
 * queue_get_next). */
static void work(Worker *w, Job *job)
{
	Stage *s = w->stage;
	char err[512];

	atomic_store_explicit(&job->stage, s->index, memory_order_relaxed);
	if (!job_start(job)) {
		/* Cancelled while it waited in the queue: never run it again. */
		bump(&w->cancelled);
		s->hooks.deliver(s->userdata, s, job);
		return;
	}
	if (job->started_usec == 0)
		job->started_usec = real_usec();

	atomic_store_explicit(&w->job_id, job->id, memory_order_relaxed);
	heartbeat_beat();
	atomic_store_explicit(&w->state, WORKER_RUNNING, memory_order_release);
	/* ran_program tells whether this run was a program's; the fields of
	 * an earlier stage's program stay for GetJob if it was not. */
	bool ran_before = job->ran_program;
	job->ran_program = false;
	int r;
	if (w->init_failed) {
		snprintf(err, sizeof(err), "%s", w->init_error);
		r = -EIO;
	} else {
		r = action_run(s->action, w->action_state, s->name, job, err, sizeof(err));
	}
	atomic_store_explicit(&w->state, WORKER_HANDING, memory_order_relaxed);
	job->runs++;
	bool ran_program = job->ran_program;
	job->ran_program = ran_program || ran_before;

	if (r < 0 && retryable(&s->retry, job, r, ran_program)) {
		job_set_error(job, err);
		if (schedule_retry(w, job, err, sizeof(err))) {
			bump(&w->retries);
			atomic_store_explicit(&w->state, WORKER_IDLE, memory_order_relaxed);
			return;
		}
	}
	if (r < 0) {
		job_set_failed(job, err);
		bump(&w->failed);
	} else {
		bump(&w->succeeded);
	}
	s->hooks.deliver(s->userdata, s, job);
	atomic_store_explicit(&w->state, WORKER_IDLE, memory_order_relaxed);
}

/* Blocks while the stage is paused. Returns true if the worker must retire
 * (the worker count was lowered meanwhile). A close ends the pause, so that
 * closing always finishes. */
static bool wait_while_paused(Worker *w)
{
	Stage *s = w->stage;
	bool retire = false;

	pthread_mutex_lock(&s->lock);
	while (atomic_load_explicit(&s->paused, memory_order_relaxed) && !s->closed) {
		if (s->running > s->target) {
			s->running--;
			retire = true;
			break;
		}
		s->parked++;
		pthread_cond_wait(&s->resumed, &s->lock);
		s->parked--;
	}
	pthread_mutex_unlock(&s->lock);
	return retire;
}

static void *worker_main(void *arg)
{
	Worker *w = arg;
	Stage *s = w->stage;
	unsigned done = 0; /* the job just handed on, to mark done with the next get */

	/* "pl:<stage>" in top -H, ps -L and /proc (15 bytes at most). */
	char comm[16] = "pl:";
	size_t n = strnlen(s->name, sizeof(comm) - 4);
	memcpy(comm + 3, s->name, n);
	comm[3 + n] = '\0';
	pthread_setname_np(pthread_self(), comm);

	w->rng = ((uint64_t)(uintptr_t)w ^ mono_usec() ^ 0x9e3779b97f4a7c15u) | 1u;
	atomic_store_explicit(&w->tid, (int)gettid(), memory_order_relaxed);
	heartbeat_bind(&w->hb);
	heartbeat_beat();
	atomic_store_explicit(&w->state, WORKER_STARTING, memory_order_release);
	w->init_failed = action_worker_init(s->action, &w->action_state, w->init_error,
	                                    sizeof(w->init_error)) < 0;
	atomic_store_explicit(&w->state, WORKER_IDLE, memory_order_relaxed);

	for (;;) {
		void *item;
		if (atomic_load_explicit(&s->paused, memory_order_relaxed)) {
			if (done > 0)
				queue_task_done(s->queue); /* not held across the pause */
			done = 0;
			if (wait_while_paused(w))
				break;
		}
		int r = queue_get_next(s->queue, done, &item, &w->interrupt_seen);
		done = 0;
		if (r == -EINTR) {
			/* The worker count changed: retire if we are one too many. */
			bool retire = false;
			pthread_mutex_lock(&s->lock);
			if (s->running > s->target) {
				s->running--;
				retire = true;
			}
			pthread_mutex_unlock(&s->lock);
			if (retire)
				break;
			continue;
		}
		if (r == -EPIPE) { /* closed and empty */
			pthread_mutex_lock(&s->lock);
			s->running--;
			pthread_mutex_unlock(&s->lock);
			break;
		}
		work(w, item);
		done = 1;
	}

	if (!w->init_failed)
		action_worker_fini(s->action, w->action_state);
	heartbeat_bind(NULL);

	pthread_mutex_lock(&s->lock);
	w->exited = true;
	bool last = --s->threads == 0 && s->closed;
	pthread_cond_broadcast(&s->worker_exited);
	pthread_mutex_unlock(&s->lock);

	/* threads reaches 0 only through close: set_workers never goes below 1
	 * running worker, and a closed stage starts no new ones. */
	if (last && s->hooks.on_exited)
		s->hooks.on_exited(s->userdata, s);
	return NULL;
}

_Atomic unsigned stage_fault_thread_create;

/* pthread_create, unless the fault seam says this one fails. */
static int create_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	unsigned n = atomic_load(&stage_fault_thread_create);
	while (n > 0 && !atomic_compare_exchange_weak(&stage_fault_thread_create, &n, n - 1))
		;
	if (n == 1)
		return EAGAIN;
	return pthread_create(t, NULL, fn, arg);
}

/* Starts n workers; called with the lock held. Returns 0 or -errno of the
 * first failure, having counted only the workers that started. Signals are
 * blocked in workers: they belong to the event loop thread. */
static int spawn_locked(Stage *s, unsigned n)
{
	sigset_t all, old;
	int r = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < n; i++) {
		Worker *w = calloc(1, sizeof(*w));
		if (!w) {
			r = -ENOMEM;
			break;
		}
		w->stage = s;
		w->number = (unsigned)(s->threads_started + 1);
		int e = create_thread(&w->thread, worker_main, w);
		if (e != 0) {
			free(w);
			r = -e;
			break;
		}
		w->next = s->workers;
		s->workers = w;
		s->running++;
		s->threads++;
		s->threads_started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

int stage_start(Stage *s)
{
	pthread_mutex_lock(&s->lock);
	assert(s->threads_started == 0);
	int r = spawn_locked(s, s->target);
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		/* All or nothing: stop the workers that did start. */
		stage_close(s);
		stage_join(s);
	}
	return r;
}

/* Detaches exited workers from the list (with the lock held) so they can be
 * joined after it is dropped. Their counters are final (a worker sets
 * `exited` after its last job) and move to the stage's totals now, under the
 * same lock as stage_stats, so nothing is counted twice or missed. */
static Worker *take_exited_locked(Stage *s)
{
	Worker *exited = NULL;
	for (Worker **p = &s->workers; *p;) {
		Worker *w = *p;
		if (w->exited) {
			s->reaped_succeeded +=
			        atomic_load_explicit(&w->succeeded, memory_order_relaxed);
			s->reaped_failed += atomic_load_explicit(&w->failed, memory_order_relaxed);
			s->reaped_cancelled +=
			        atomic_load_explicit(&w->cancelled, memory_order_relaxed);
			s->reaped_retries += atomic_load_explicit(&w->retries, memory_order_relaxed);
			*p = w->next;
			w->next = exited;
			exited = w;
		} else {
			p = &w->next;
		}
	}
	return exited;
}

static unsigned join_list(Worker *list)
{
	unsigned n = 0;
	while (list) {
		Worker *w = list;
		list = w->next;
		pthread_join(w->thread, NULL);
		free(w);
		n++;
	}
	return n;
}

int stage_set_workers(Stage *s, unsigned n)
{
	int r = 0;

	if (n == 0 || n > STAGE_WORKERS_MAX)
		return -EINVAL;

	pthread_mutex_lock(&s->lock);
	if (s->closed) {
		pthread_mutex_unlock(&s->lock);
		return -EPIPE;
	}
	s->target = n;
	if (s->running < n) {
		r = spawn_locked(s, n - s->running);
		s->target = s->running; /* what we got, if not all started */
	} else if (s->running > n) {
		/* Idle workers look at the target now, busy ones after their job. */
		queue_interrupt(s->queue);
		pthread_cond_broadcast(&s->resumed); /* and paused ones */
	}
	/* Reap retired workers without dropping the lock, so that no thread
	 * is ever off the list yet unjoined (stage_join relies on the list).
	 * Joining here cannot wait on anything: a worker marks itself exited
	 * under this lock as its last use of the stage, and the on_exited
	 * hook it may call after that only runs once the stage is closed —
	 * which, checked above under this same lock, it is not. */
	s->threads_joined += join_list(take_exited_locked(s));
	pthread_mutex_unlock(&s->lock);
	return r;
}

void stage_close(Stage *s)
{
	pthread_mutex_lock(&s->lock);
	s->closed = true;
	pthread_cond_broadcast(&s->resumed);
	pthread_mutex_unlock(&s->lock);
	queue_close(s->queue);
}

int stage_pause(Stage *s, bool paused)
{
	pthread_mutex_lock(&s->lock);
	if (s->closed) {
		pthread_mutex_unlock(&s->lock);
		return -EPIPE;
	}
	atomic_store_explicit(&s->paused, paused, memory_order_relaxed);
	if (paused)
		queue_interrupt(s->queue); /* idle workers come back to look */
	else
		pthread_cond_broadcast(&s->resumed);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void stage_join(Stage *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->workers) {
		Worker *exited = take_exited_locked(s);
		if (!exited) {
			pthread_cond_wait(&s->worker_exited, &s->lock);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		unsigned joined = join_list(exited);
		pthread_mutex_lock(&s->lock);
		s->threads_joined += joined;
	}
	pthread_mutex_unlock(&s->lock);
}

static void free_job(void *p)
{
	job_free(p);
}

void stage_free(Stage *s)
{
	if (!s)
		return;
	assert(!s->workers);
	queue_free(s->queue, free_job);
	action_free(s->action);
	pthread_cond_destroy(&s->worker_exited);
	pthread_cond_destroy(&s->resumed);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void stage_stop_retries(Stage *s, const char *why)
{
	s->retries_stopped_why = why;
	queue_refuse_delayed(s->queue);
}

Queue *stage_queue(Stage *s)
{
	return s->queue;
}

const char *stage_name(Stage *s)
{
	return s->name;
}

unsigned stage_index(Stage *s)
{
	return s->index;
}

void stage_stats(Stage *s, StageStats *ret)
{
	pthread_mutex_lock(&s->lock);
	*ret = (StageStats){
		.name = s->name,
		.index = s->index,
		.workers = s->running,
		.threads = s->threads,
		.succeeded = s->reaped_succeeded,
		.failed = s->reaped_failed,
		.cancelled = s->reaped_cancelled,
		.retries = s->reaped_retries,
		.paused = atomic_load_explicit(&s->paused, memory_order_relaxed),
		.parked = s->parked,
		.threads_started = s->threads_started,
		.threads_joined = s->threads_joined,
	};
	for (Worker *w = s->workers; w; w = w->next) {
		unsigned char state = atomic_load_explicit(&w->state, memory_order_relaxed);
		ret->busy += state == WORKER_RUNNING;
		ret->handing_on += state == WORKER_HANDING;
		ret->succeeded += atomic_load_explicit(&w->succeeded, memory_order_relaxed);
		ret->failed += atomic_load_explicit(&w->failed, memory_order_relaxed);
		ret->cancelled += atomic_load_explicit(&w->cancelled, memory_order_relaxed);
		ret->retries += atomic_load_explicit(&w->retries, memory_order_relaxed);
	}
	pthread_mutex_unlock(&s->lock);
	queue_stats(s->queue, &ret->queue);
}

unsigned stage_find_stalled(Stage *s, uint64_t now_usec, uint64_t stale_usec, StageStall *ret)
{
	unsigned n = 0;
	pthread_mutex_lock(&s->lock);
	for (Worker *w = s->workers; w; w = w->next) {
		unsigned char state = atomic_load_explicit(&w->state, memory_order_acquire);
		if (state != WORKER_RUNNING && state != WORKER_STARTING)
			continue;
		uint64_t beat = atomic_load_explicit(&w->hb.usec, memory_order_acquire);
		uint64_t silent = now_usec > beat ? now_usec - beat : 0;
		if (silent <= stale_usec)
			continue;
		if (n == 0 || silent > ret->silent_usec)
			*ret = (StageStall){
				.worker = w->number,
				.tid = atomic_load_explicit(&w->tid, memory_order_relaxed),
				.job_id = state == WORKER_RUNNING
				                  ? atomic_load_explicit(&w->job_id,
				                                         memory_order_relaxed)
				                  : 0,
				.silent_usec = silent,
			};
		n++;
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}
