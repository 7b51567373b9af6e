/* bench_engine — benchmarks for the stage engine, each beside its anchor,
 * measured in the same run (see BENCHMARKS.md). Not part of pass/fail.
 *
 *   bench_engine hop [JOBS [RUNS]]         3 no-op stages, 1 worker each, capacity 64,
 *                                          vs a hand-written mutex+condvar chain
 *   bench_engine efficiency [JOBS]         sleep 2/5/3 ms with 3/4/5 workers vs the bound
 *   bench_engine idle [SECONDS]            12 idle workers vs 12 polling threads
 *   bench_engine memory [JOBS]             fast producer, slow stage: RSS over time,
 *                                          capacity 64 vs an effectively unbounded queue
 *   bench_engine plugin [JOBS [RUNS]]      1 stage, 2 workers, capacity 64: the noop
 *                                          plugin (NOOP_PLUGIN_PATH) vs the built-in noop
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pipeline.h"
#include "plugin.h"
#include "util.h"

static const char PAYLOAD[] = "{\"url\":\"http://127.0.0.1:8080/img/000001.png\",\"size\":640}";

static void die(const char *what, int r)
{
	fprintf(stderr, "bench_engine: %s: %s\n", what, strerror(-r));
	exit(1);
}

static Action *act(const char *spec)
{
	Action *a;
	int r = action_parse(spec, &a, NULL);
	if (r < 0)
		die(spec, r);
	return a;
}

/* The pipeline counts ended jobs itself (pipeline_stats), so the sink only
 * frees, like the chain's last stage. */
static void count_and_free(void *userdata, Job *job)
{
	(void)userdata;
	job_free(job);
}

static uint64_t ended_jobs(Pipeline *p)
{
	PipelineStats ps;
	pipeline_stats(p, &ps);
	return ps.done + ps.failed;
}

/* Builds and starts a pipeline of n stages. */
static Pipeline *build(const char *name, unsigned n, const unsigned *workers,
                       const char *const *specs, size_t capacity)
{
	const PipelineHooks hooks = { .on_end = count_and_free };
	Pipeline *p;
	int r = pipeline_new(name, &hooks, NULL, &p);
	if (r < 0)
		die("pipeline_new", r);
	for (unsigned i = 0; i < n; i++) {
		char sname[16];
		snprintf(sname, sizeof(sname), "s%u", i);
		r = pipeline_add_stage(p, sname, workers[i], capacity, act(specs[i]));
		if (r < 0)
			die("pipeline_add_stage", r);
	}
	r = pipeline_start(p);
	if (r < 0)
		die("pipeline_start", r);
	return p;
}

static void submit_n(Pipeline *p, uint64_t first_id, uint64_t n)
{
	for (uint64_t id = first_id; id < first_id + n; id++) {
		Job *j;
		int r = job_new(id, PAYLOAD, sizeof(PAYLOAD) - 1, &j);
		if (r < 0)
			die("job_new", r);
		r = pipeline_submit(p, j);
		if (r < 0)
			die("pipeline_submit", r);
	}
}

/* ---- (a) hop cost ------------------------------------------------------- */

/* The anchor: the textbook chain, written plainly. A ring of pointers with
 * one mutex and two condition variables per queue, one thread per stage, the
 * producer in the main thread; each item carries a copy of the payload, as a
 * job does, and the last stage frees it. */
typedef struct ChainQueue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full;
	void *ring[64];
	size_t head, len;
} ChainQueue;

typedef struct ChainItem {
	uint64_t id;
	char *payload;
} ChainItem;

static void chain_put(ChainQueue *q, void *item)
{
	pthread_mutex_lock(&q->lock);
	while (q->len == ELEMENTSOF(q->ring))
		pthread_cond_wait(&q->not_full, &q->lock);
	q->ring[(q->head + q->len++) % ELEMENTSOF(q->ring)] = item;
	pthread_cond_signal(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
}

static void *chain_get(ChainQueue *q)
{
	pthread_mutex_lock(&q->lock);
	while (q->len == 0)
		pthread_cond_wait(&q->not_empty, &q->lock);
	void *item = q->ring[q->head];
	q->head = (q->head + 1) % ELEMENTSOF(q->ring);
	q->len--;
	pthread_cond_signal(&q->not_full);
	pthread_mutex_unlock(&q->lock);
	return item;
}

typedef struct ChainStage {
	ChainQueue *in, *out; /* out NULL: last stage */
	uint64_t n;
} ChainStage;

static void *chain_stage_main(void *arg)
{
	ChainStage *s = arg;
	for (uint64_t i = 0; i < s->n; i++) {
		ChainItem *it = chain_get(s->in);
		if (s->out) {
			chain_put(s->out, it);
		} else {
			free(it->payload);
			free(it);
		}
	}
	return NULL;
}

static double run_chain(uint64_t n)
{
	ChainQueue q[3];
	ChainStage st[3];
	pthread_t t[3];
	for (int i = 0; i < 3; i++) {
		memset(&q[i], 0, sizeof(q[i]));
		pthread_mutex_init(&q[i].lock, NULL);
		pthread_cond_init(&q[i].not_empty, NULL);
		pthread_cond_init(&q[i].not_full, NULL);
	}
	for (int i = 0; i < 3; i++) {
		st[i] = (ChainStage){ &q[i], i < 2 ? &q[i + 1] : NULL, n };
		pthread_create(&t[i], NULL, chain_stage_main, &st[i]);
	}
	uint64_t t0 = mono_usec();
	for (uint64_t id = 1; id <= n; id++) {
		ChainItem *it = malloc(sizeof(*it));
		it->id = id;
		it->payload = strdup(PAYLOAD);
		chain_put(&q[0], it);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	uint64_t dt = mono_usec() - t0;
	for (int i = 0; i < 3; i++) {
		pthread_cond_destroy(&q[i].not_full);
		pthread_cond_destroy(&q[i].not_empty);
		pthread_mutex_destroy(&q[i].lock);
	}
	return (double)n / ((double)dt / 1e6);
}

static double run_engine_hop(uint64_t n)
{
	static const unsigned workers[] = { 1, 1, 1 };
	static const char *const specs[] = { "noop", "noop", "noop" };
	Pipeline *p = build("hop", 3, workers, specs, 64);
	uint64_t t0 = mono_usec();
	submit_n(p, 1, n);
	pipeline_drain(p);
	uint64_t dt = mono_usec() - t0;
	if (ended_jobs(p) != n)
		die("hop: jobs lost", -EIO);
	pipeline_free(p);
	return (double)n / ((double)dt / 1e6);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int bench_hop(uint64_t n, unsigned runs)
{
	double e[32], c[32], ratio[32];
	if (runs > 32)
		runs = 32;
	printf("hop: 3 no-op stages, 1 worker each, capacity 64, %llu jobs, %u runs "
	       "(alternating)\n",
	       (unsigned long long)n, runs);
	for (unsigned i = 0; i < runs; i++) {
		/* Alternate so that drift in the machine hits both alike. */
		e[i] = run_engine_hop(n);
		c[i] = run_chain(n);
		ratio[i] = e[i] / c[i];
		printf("  run %2u: engine %10.0f jobs/s   chain %10.0f jobs/s   ratio %.2f\n",
		       i + 1, e[i], c[i], ratio[i]);
	}
	qsort(e, runs, sizeof(double), cmp_double);
	qsort(c, runs, sizeof(double), cmp_double);
	qsort(ratio, runs, sizeof(double), cmp_double);
	double me = e[runs / 2], mc = c[runs / 2];
	printf("hop median: engine %.0f jobs/s, plain chain %.0f jobs/s, ratio of medians %.2fx, "
	       "median of pair ratios %.2fx [min %.2f, max %.2f] (target >= 1.00x)\n",
	       me, mc, me / mc, ratio[runs / 2], ratio[0], ratio[runs - 1]);
	printf("hop per job: engine %.0f ns, chain %.0f ns (3 hops + alloc/free)\n", 1e9 / me,
	       1e9 / mc);
	return 0;
}

/* ---- (b) efficiency ------------------------------------------------------ */

static int bench_efficiency(uint64_t n)
{
	static const unsigned workers[] = { 3, 4, 5 };
	static const char *const specs[] = { "sleep:2", "sleep:5", "sleep:3" };
	static const double ms[] = { 2, 5, 3 };
	double bound = 1e9;
	for (int i = 0; i < 3; i++)
		if (workers[i] / ms[i] < bound)
			bound = workers[i] / ms[i]; /* jobs per ms */
	bound *= 1000.0;

	/* Anchor for what the machine's sleep really costs: the mean of 200
	 * sleep:5 calls on one thread. The bound uses the nominal 5 ms. */
	Action *a = act("sleep:5");
	Job *probe;
	job_new(1, "{}", 2, &probe);
	char err[64];
	uint64_t s0 = mono_usec();
	for (int i = 0; i < 200; i++)
		action_run(a, NULL, "probe", probe, err, sizeof(err));
	double real5 = (double)(mono_usec() - s0) / 200.0 / 1000.0;
	action_free(a);
	job_free(probe);

	Pipeline *p = build("efficiency", 3, workers, specs, 64);
	uint64_t t0 = mono_usec();
	submit_n(p, 1, n);
	pipeline_drain(p);
	double secs = (double)(mono_usec() - t0) / 1e6;
	pipeline_free(p);

	double tput = (double)n / secs;
	printf("efficiency: stages sleep 2/5/3 ms with 3/4/5 workers, capacity 64, %llu jobs\n",
	       (unsigned long long)n);
	printf("  bound min(workers/time) = %.1f jobs/s; measured %.1f jobs/s in %.3f s\n", bound,
	       tput, secs);
	printf("  sleep:5 really takes %.3f ms here (bound with that: %.1f jobs/s)\n", real5,
	       4.0 / real5 * 1000.0);
	printf("efficiency: %.2f%% of the bound (target >= 98%%); %.2f%% of the bound from "
	       "measured sleep\n",
	       100.0 * tput / bound, 100.0 * tput / (4.0 / real5 * 1000.0));
	return 0;
}

/* ---- (c) idle ------------------------------------------------------------ */

typedef struct TaskUsage {
	uint64_t vcsw, nvcsw;
	uint64_t cpu_ticks;
} TaskUsage;

/* Sums the voluntary/involuntary context switches and CPU ticks of every
 * thread of this process except skip_tid (the measuring thread). */
static TaskUsage usage_except(pid_t skip_tid)
{
	TaskUsage u = { 0 };
	char path[300], line[512];
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.' || atoi(de->d_name) == skip_tid)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
		FILE *f = fopen(path, "re");
		while (f && fgets(line, sizeof(line), f)) {
			unsigned long long v;
			if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1)
				u.vcsw += v;
			else if (sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1)
				u.nvcsw += v;
		}
		if (f)
			fclose(f);
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", de->d_name);
		f = fopen(path, "re");
		if (f && fgets(line, sizeof(line), f)) {
			/* utime and stime are fields 14 and 15, counted after the
			 * ")" that ends the command name (field 2). */
			char *rp = strrchr(line, ')');
			unsigned long long ut, st;
			if (rp &&
			    sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			           &ut, &st) == 2)
				u.cpu_ticks += ut + st;
		}
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return u;
}

static _Atomic int poll_stop;
static _Atomic int poll_job; /* never set: the naive workers find nothing */

static void *polling_worker(void *arg)
{
	(void)arg;
	while (!atomic_load(&poll_stop)) {
		if (atomic_load(&poll_job))
			break;
		usleep(1000); /* the naive design: look, sleep 1 ms, look again */
	}
	return NULL;
}

static void report_idle(const char *what, TaskUsage a, TaskUsage b, unsigned secs)
{
	long tck = sysconf(_SC_CLK_TCK);
	printf("  %-28s voluntary switches %8llu  involuntary %6llu  CPU %6.3f s over %u s\n", what,
	       (unsigned long long)(b.vcsw - a.vcsw), (unsigned long long)(b.nvcsw - a.nvcsw),
	       (double)(b.cpu_ticks - a.cpu_ticks) / (double)tck, secs);
}

static int bench_idle(unsigned secs)
{
	static const unsigned workers[] = { 3, 4, 5 };
	static const char *const specs[] = { "noop", "noop", "noop" };
	pid_t me = (pid_t)syscall(SYS_gettid);
	printf("idle: 12 workers (3/4/5) with nothing to do for %u s, vs 12 threads polling every "
	       "1 ms\n",
	       secs);

	Pipeline *p = build("idle", 3, workers, specs, 64);
	/* Let one job through so every stage has run once, then wait until
	 * all 12 workers are blocked on their queues. */
	submit_n(p, 1, 1);
	pipeline_drain(p);
	for (;;) {
		uint64_t waits = 0;
		for (unsigned i = 0; i < 3; i++) {
			StageStats st;
			stage_stats(pipeline_stage(p, i), &st);
			waits += st.busy == 0 && st.queue.length == 0 ? st.queue.get_waits : 0;
		}
		if (waits >= 12)
			break;
		usleep(1000);
	}
	usleep(100000);
	TaskUsage a = usage_except(me);
	sleep(secs);
	TaskUsage b = usage_except(me);
	report_idle("engine (blocked on queues)", a, b, secs);
	uint64_t engine_wakeups = b.vcsw - a.vcsw;
	pipeline_free(p);

	pthread_t t[12];
	for (int i = 0; i < 12; i++)
		pthread_create(&t[i], NULL, polling_worker, NULL);
	usleep(100000);
	a = usage_except(me);
	sleep(secs);
	b = usage_except(me);
	report_idle("anchor (poll + sleep 1 ms)", a, b, secs);
	atomic_store(&poll_stop, 1);
	for (int i = 0; i < 12; i++)
		pthread_join(t[i], NULL);
	printf("idle: engine wake-ups %llu (target 0)\n", (unsigned long long)engine_wakeups);
	return 0;
}

/* ---- (d) memory ---------------------------------------------------------- */

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, resident = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

typedef struct Sampler {
	_Atomic int stop;
	Pipeline *p;
	uint64_t n;
	long peak_kib;
	long samples[64]; /* RSS at each tenth of the jobs ended */
	unsigned next;
} Sampler;

static void *sampler_main(void *arg)
{
	Sampler *s = arg;
	while (!atomic_load(&s->stop)) {
		long r = rss_kib();
		if (r > s->peak_kib)
			s->peak_kib = r;
		uint64_t e = ended_jobs(s->p);
		while (s->next < 11 && e >= s->n * s->next / 10)
			s->samples[s->next++] = r;
		usleep(10000);
	}
	return NULL;
}

/* Slowest stage: 1 worker spending 40 µs of CPU per job (25,000 jobs/s at
 * most). How much faster the producer is, is measured, not assumed: its
 * unthrottled rate is taken from the anchor run, where the queue never
 * fills. Returns the producer's rate and the whole run's rate in *ret_*. */
static void memory_run(const char *label, uint64_t n, size_t capacity, double *ret_produce,
                       double *ret_drain)
{
	static const unsigned workers[] = { 1, 1 };
	static const char *const specs[] = { "noop", "busy:40" };
	Pipeline *p = build("memory", 2, workers, specs, capacity);
	Sampler s = { .p = p, .n = n };
	pthread_t t;
	long base = rss_kib();
	pthread_create(&t, NULL, sampler_main, &s);
	uint64_t t0 = mono_usec();
	submit_n(p, 1, n);
	uint64_t submitted_at = mono_usec();
	pipeline_drain(p);
	uint64_t t1 = mono_usec();
	atomic_store(&s.stop, 1);
	pthread_join(t, NULL);
	long final = rss_kib();
	if (s.next < 11)
		s.samples[s.next++] = final; /* the 100% point */
	pipeline_free(p);
	*ret_produce = (double)n / ((double)(submitted_at - t0) / 1e6);
	*ret_drain = (double)n / ((double)(t1 - t0) / 1e6);

	printf("  %-22s start %6ld KiB  peak %7ld KiB (+%ld)  producer done after %.1f s, all "
	       "after %.1f s\n",
	       label, base, s.peak_kib, s.peak_kib - base, (double)(submitted_at - t0) / 1e6,
	       (double)(t1 - t0) / 1e6);
	printf("  %-22s RSS KiB at 0%%,10%%..100%% of jobs ended:", label);
	for (unsigned i = 0; i < s.next; i++)
		printf(" %ld", s.samples[i]);
	printf("\n");
}

static int bench_memory(uint64_t n)
{
	double produce, drain, anchor_produce, anchor_drain;
	printf("memory: fast producer, slowest stage busy:40 with 1 worker, %llu jobs\n",
	       (unsigned long long)n);
	memory_run("engine, capacity 64", n, 64, &produce, &drain);
	memory_run("anchor, capacity 1Mi", n, QUEUE_CAPACITY_MAX, &anchor_produce, &anchor_drain);
	printf("memory: producer unthrottled %.0f jobs/s vs slowest stage %.0f jobs/s: %.0fx "
	       "faster "
	       "(target 100x)\n",
	       anchor_produce, drain, anchor_produce / drain);
	return 0;
}

/* ---- (e) plugin ------------------------------------------------------------ */

/* One stage, 2 workers, capacity 64, fed by a producer thread with
 * pipeline_submit; the main thread joins it and drains. The stage's action is
 * the built-in noop, or the example noop plugin (packaging/examples/plugins/
 * noop.c, built with the benchmarks; its path comes from meson), called
 * through action_run -> run_plugin -> plugin_run as the daemon calls it.
 * The state directory of these runs has no jobs/ subdirectory (see
 * bench_plugin for what that changes); then each action is also called
 * alone, on one thread, to get the cost of one call. */
#ifndef NOOP_PLUGIN_PATH
#error "NOOP_PLUGIN_PATH: the full path of the noop example plugin (tests/bench/meson.build)"
#endif

typedef struct Producer {
	Pipeline *p;
	uint64_t n;
} Producer;

static void *producer_main(void *arg)
{
	Producer *pr = arg;
	submit_n(pr->p, 1, pr->n);
	return NULL;
}

typedef struct OneStage {
	double jobs_per_s;
	uint64_t get_waits, put_waits; /* workers / the producer that had to block */
} OneStage;

static OneStage run_one_stage(uint64_t n, Action *a)
{
	const PipelineHooks hooks = { .on_end = count_and_free };
	Pipeline *p;
	int r = pipeline_new("bench", &hooks, NULL, &p);
	if (r < 0)
		die("pipeline_new", r);
	r = pipeline_add_stage(p, "s0", 2, 64, a);
	if (r < 0)
		die("pipeline_add_stage", r);
	r = pipeline_start(p);
	if (r < 0)
		die("pipeline_start", r);
	Producer pr = { p, n };
	pthread_t t;
	uint64_t t0 = mono_usec();
	if (pthread_create(&t, NULL, producer_main, &pr) != 0)
		die("pthread_create", -EAGAIN);
	pthread_join(t, NULL);
	pipeline_drain(p);
	uint64_t dt = mono_usec() - t0;
	PipelineStats ps;
	StageStats st;
	pipeline_stats(p, &ps);
	stage_stats(pipeline_stage(p, 0), &st);
	if (ps.done != n)
		die("plugin: jobs lost or failed", -EIO);
	pipeline_free(p);
	return (OneStage){ (double)n / ((double)dt / 1e6), st.queue.get_waits, st.queue.put_waits };
}

/* What one call costs without the queue: action_run n times on this thread,
 * as a worker calls it, each time for a new job id (as in the daemon, where
 * ids only grow). ns of thread CPU time per call. */
static double direct_calls(Action *a, uint64_t n)
{
	char err[256];
	void *state;
	Job *j;
	int r = action_worker_init(a, &state, err, sizeof(err));
	if (r < 0)
		die("action_worker_init", r);
	r = job_new(1, PAYLOAD, sizeof(PAYLOAD) - 1, &j);
	if (r < 0)
		die("job_new", r);
	uint64_t t0 = now_usec(CLOCK_THREAD_CPUTIME_ID);
	for (uint64_t i = 0; i < n; i++) {
		j->id = i + 1;
		r = action_run(a, state, "s0", j, err, sizeof(err));
		if (r < 0)
			die(err, r);
	}
	uint64_t dt = now_usec(CLOCK_THREAD_CPUTIME_ID) - t0;
	action_worker_fini(a, state);
	job_free(j);
	action_free(a);
	return (double)dt * 1000.0 / (double)n;
}

static Action *noop_plugin_action(const char *state_dir)
{
	Plugin *pl;
	Action *a;
	char err[256];
	int r = plugin_open(NOOP_PLUGIN_PATH, NULL, &pl, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "bench_engine: %s: %s\n", NOOP_PLUGIN_PATH, err);
		exit(1);
	}
	r = action_new_plugin(pl, "bench", state_dir, &a);
	if (r < 0)
		die("action_new_plugin", r);
	return a;
}

static void median_min_max(double *x, unsigned n, double *med, double *lo, double *hi)
{
	qsort(x, n, sizeof(double), cmp_double);
	*med = x[n / 2];
	*lo = x[0];
	*hi = x[n - 1];
}

/* plugin_run alone (what run_plugin adds around it left out): ns per call. */
static double direct_plugin_run(uint64_t n)
{
	Plugin *pl;
	char err[256];
	void *state;
	int r = plugin_open(NOOP_PLUGIN_PATH, NULL, &pl, err, sizeof(err));
	if (r < 0 || plugin_worker_init(pl, &state, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench_engine: %s: %s\n", NOOP_PLUGIN_PATH, err);
		exit(1);
	}
	const pipelined_job pj = { .id = 1,
		                   .pipeline = "bench",
		                   .stage = "s0",
		                   .attempt = 1,
		                   .payload = PAYLOAD,
		                   .payload_len = sizeof(PAYLOAD) - 1,
		                   .workdir = "/nonexistent/jobs/1" };
	pipelined_result res;
	uint64_t t0 = now_usec(CLOCK_THREAD_CPUTIME_ID);
	for (uint64_t i = 0; i < n; i++)
		if (plugin_run(pl, state, &pj, &res) != PIPELINED_OK)
			die("plugin_run", -EIO);
	uint64_t dt = now_usec(CLOCK_THREAD_CPUTIME_ID) - t0;
	plugin_worker_fini(pl, state);
	plugin_close(pl);
	return (double)dt * 1000.0 / (double)n;
}

static int bench_plugin(uint64_t n, unsigned runs)
{
	double b[32], pl[32], ratio[32];
	char state_dir[] = "/tmp/bench-engine-plugin-XXXXXX";
	if (runs == 0)
		runs = 1;
	if (runs > 32)
		runs = 32;
	if (!mkdtemp(state_dir))
		die("mkdtemp", -errno);
	printf("plugin: 1 stage, 2 workers, capacity 64, %llu jobs from a producer thread, "
	       "%u runs (alternating)\n",
	       (unsigned long long)n, runs);
	printf("  plugin %s, state directory %s\n", NOOP_PLUGIN_PATH, state_dir);
	for (unsigned i = 0; i < runs; i++) {
		/* Alternate so that drift in the machine hits both alike. */
		OneStage x = run_one_stage(n, act("noop"));
		OneStage y = run_one_stage(n, noop_plugin_action(state_dir));
		b[i] = x.jobs_per_s;
		pl[i] = y.jobs_per_s;
		ratio[i] = pl[i] / b[i];
		printf("  run %2u: built-in noop %9.0f jobs/s (worker waits %7llu, producer %6llu)"
		       "   noop plugin %9.0f jobs/s (worker waits %7llu, producer %6llu)   ratio "
		       "%.2f\n",
		       i + 1, b[i], (unsigned long long)x.get_waits,
		       (unsigned long long)x.put_waits, pl[i], (unsigned long long)y.get_waits,
		       (unsigned long long)y.put_waits, ratio[i]);
	}
	/* The call alone, no queue, no other thread: thread CPU time per call.
	 * The runs above, and dp, use a state directory without a jobs/
	 * subdirectory: run_plugin's access() of STATE/jobs/ID then fails at
	 * "jobs", a name the kernel has cached. The daemon makes STATE/jobs at
	 * start, so there every new id is a name the kernel has to look up on
	 * disk (dj; fewer calls: each leaves a negative dentry behind). */
	uint64_t calls = n < 1000000 ? 1000000 : n, calls_jobs = 200000;
	char with_jobs[] = "/tmp/bench-engine-plugin-XXXXXX", jobs[sizeof(with_jobs) + 8];
	if (!mkdtemp(with_jobs))
		die("mkdtemp", -errno);
	snprintf(jobs, sizeof(jobs), "%s/jobs", with_jobs);
	if (mkdir(jobs, 0700) < 0)
		die("mkdir", -errno);
	double dn = direct_calls(act("noop"), calls);
	double dp = direct_calls(noop_plugin_action(state_dir), calls);
	double dj = direct_calls(noop_plugin_action(with_jobs), calls_jobs);
	double dr = direct_plugin_run(calls);
	rmdir(jobs);
	rmdir(with_jobs);
	rmdir(state_dir);
	double bm, blo, bhi, pm, plo, phi, rm, rlo, rhi;
	median_min_max(b, runs, &bm, &blo, &bhi);
	median_min_max(pl, runs, &pm, &plo, &phi);
	median_min_max(ratio, runs, &rm, &rlo, &rhi);
	printf("plugin median: built-in noop %.0f jobs/s [%.0f..%.0f], noop plugin %.0f jobs/s "
	       "[%.0f..%.0f], ratio of medians %.2fx, median of pair ratios %.2fx [min %.2f, "
	       "max %.2f]\n",
	       bm, blo, bhi, pm, plo, phi, pm / bm, rm, rlo, rhi);
	printf("plugin per job: built-in noop %.0f ns, noop plugin %.0f ns (wall time per job, "
	       "2 workers)\n",
	       1e9 / bm, 1e9 / pm);
	printf("plugin direct calls (one thread, thread CPU time per call, a new job id each): "
	       "action_run built-in noop %.1f ns; action_run noop plugin %.1f ns (no STATE/jobs), "
	       "%.1f ns (STATE/jobs exists, as in the daemon; %llu calls); plugin_run alone "
	       "%.1f ns\n",
	       dn, dp, dj, (unsigned long long)calls_jobs, dr);
	printf("RESULT engine-plugin builtin_jobs_per_s=%.0f plugin_jobs_per_s=%.0f "
	       "builtin_ns=%.0f plugin_ns=%.0f ratio=%.3f pair_ratio=%.3f direct_builtin_ns=%.1f "
	       "direct_plugin_ns=%.1f direct_plugin_jobs_dir_ns=%.1f direct_plugin_run_ns=%.1f\n",
	       bm, pm, 1e9 / bm, 1e9 / pm, pm / bm, rm, dn, dp, dj, dr);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		fprintf(stderr,
		        "usage: bench_engine hop|efficiency|idle|memory|plugin [N [RUNS]]\n");
		return 2;
	}
	uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
	if (strcmp(argv[1], "hop") == 0)
		return bench_hop(n ? n : 1000000, argc > 3 ? (unsigned)atoi(argv[3]) : 15);
	if (strcmp(argv[1], "efficiency") == 0)
		return bench_efficiency(n ? n : 4000);
	if (strcmp(argv[1], "idle") == 0)
		return bench_idle(n ? (unsigned)n : 10);
	if (strcmp(argv[1], "memory") == 0)
		return bench_memory(n ? n : 1000000);
	if (strcmp(argv[1], "plugin") == 0)
		return bench_plugin(n ? n : 1000000, argc > 3 ? (unsigned)atoi(argv[3]) : 9);
	fprintf(stderr, "bench_engine: unknown benchmark '%s'\n", argv[1]);
	return 2;
}
