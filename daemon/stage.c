#include "stage.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct Worker {
	pthread_t thread;
	Stage *stage;
	unsigned interrupt_seen; /* for queue_get; only this worker touches it */
	bool exited;             /* under stage lock: the thread is about to return */
	struct Worker *next;
} Worker;

struct Stage {
	char name[STAGE_NAME_MAX + 1];
	unsigned index;
	Queue *queue;
	Action *action;
	StageHooks hooks;
	void *userdata;

	pthread_mutex_t lock; /* protects everything below but the atomics */
	Worker *workers;      /* every thread not yet joined */
	unsigned target;      /* workers wanted */
	unsigned running;     /* live workers not retiring; never more than target for long */
	unsigned threads;     /* live threads, retiring ones included */
	bool closed;
	uint64_t threads_started, threads_joined;

	_Atomic unsigned busy;
	_Atomic uint64_t succeeded, failed;
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
	pthread_mutex_init(&s->lock, NULL);
	*ret = s;
	return 0;
}

/* Runs one job through the action and hands it on. */
static void work(Stage *s, Job *job)
{
	char err[512];

	job->state = JOB_RUNNING;
	job->stage = s->index;
	if (job->started_usec == 0)
		job->started_usec = real_usec();

	atomic_fetch_add_explicit(&s->busy, 1, memory_order_relaxed);
	int r = action_run(s->action, s->name, job, err, sizeof(err));
	atomic_fetch_sub_explicit(&s->busy, 1, memory_order_relaxed);
	job->runs++;

	if (r < 0) {
		job_set_failed(job, err);
		atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&s->succeeded, 1, memory_order_relaxed);
	}
	s->hooks.deliver(s->userdata, s, job);
	queue_task_done(s->queue);
}

static void *worker_main(void *arg)
{
	Worker *w = arg;
	Stage *s = w->stage;

	for (;;) {
		void *item;
		int r = queue_get(s->queue, &item, &w->interrupt_seen);
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
		work(s, item);
	}

	pthread_mutex_lock(&s->lock);
	w->exited = true;
	bool last = --s->threads == 0 && s->closed;
	pthread_mutex_unlock(&s->lock);

	/* threads reaches 0 only through close: set_workers never goes below 1
	 * running worker, and a closed stage starts no new ones. */
	if (last && s->hooks.on_exited)
		s->hooks.on_exited(s->userdata, s);
	return NULL;
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
		int e = pthread_create(&w->thread, NULL, worker_main, w);
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
	bool none = s->running == 0;
	if (r < 0 && !none) {
		/* Keep going with fewer workers rather than half-start. */
		s->target = s->running;
		r = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return none ? (r < 0 ? r : -EAGAIN) : r;
}

/* Detaches exited workers from the list (with the lock held) so they can be
 * joined after it is dropped. */
static Worker *take_exited_locked(Stage *s)
{
	Worker *exited = NULL;
	for (Worker **p = &s->workers; *p;) {
		Worker *w = *p;
		if (w->exited) {
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
		queue_interrupt(s->queue); /* idle workers look at target now, busy ones after their job */
	}
	Worker *exited = take_exited_locked(s);
	pthread_mutex_unlock(&s->lock);

	unsigned joined = join_list(exited);
	if (joined > 0) {
		pthread_mutex_lock(&s->lock);
		s->threads_joined += joined;
		pthread_mutex_unlock(&s->lock);
	}
	return r;
}

void stage_close(Stage *s)
{
	pthread_mutex_lock(&s->lock);
	s->closed = true;
	pthread_mutex_unlock(&s->lock);
	queue_close(s->queue);
}

void stage_join(Stage *s)
{
	pthread_mutex_lock(&s->lock);
	Worker *all = s->workers;
	s->workers = NULL;
	pthread_mutex_unlock(&s->lock);

	unsigned joined = join_list(all);

	pthread_mutex_lock(&s->lock);
	s->threads_joined += joined;
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
	pthread_mutex_destroy(&s->lock);
	free(s);
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
		.busy = atomic_load_explicit(&s->busy, memory_order_relaxed),
		.succeeded = atomic_load_explicit(&s->succeeded, memory_order_relaxed),
		.failed = atomic_load_explicit(&s->failed, memory_order_relaxed),
		.threads_started = s->threads_started,
		.threads_joined = s->threads_joined,
	};
	pthread_mutex_unlock(&s->lock);
	queue_stats(s->queue, &ret->queue);
}
