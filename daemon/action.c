#include "action.h"

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exectemplate.h"
#include "plugin.h"
#include "program.h"
#include "util.h"

static const struct {
	const char *name;
	ActionKind kind;
	uint64_t min, max; /* argument range; max == 0: no argument allowed */
	uint64_t dflt;     /* when the argument is optional; 0 means required */
	bool arg_optional;
} kinds[] = {
	{ "noop", ACTION_NOOP, 0, 0, 0, false },
	{ "sleep", ACTION_SLEEP, 1, 3600000, 0, false },
	{ "busy", ACTION_BUSY, 1, 10000000, 0, false },
	{ "fail", ACTION_FAIL, 1, UINT32_MAX, 1, true },
	{ "rewrite", ACTION_REWRITE, 0, 0, 0, false },
};

int action_parse(const char *spec, Action **ret, const char **ret_error)
{
	const char *why = NULL;
	size_t len = spec ? strnlen(spec, ACTION_SPEC_MAX + 1) : 0;
	if (len == 0 || len > ACTION_SPEC_MAX) {
		why = len == 0 ? "empty action" : "action too long";
		goto invalid;
	}

	const char *colon = strchr(spec, ':');
	size_t name_len = colon ? (size_t)(colon - spec) : len;
	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		if (strlen(kinds[i].name) != name_len ||
		    strncmp(spec, kinds[i].name, name_len) != 0)
			continue;

		uint64_t arg = kinds[i].dflt;
		if (!colon) {
			if (kinds[i].max != 0 && !kinds[i].arg_optional) {
				why = "this action needs an argument after ':'";
				goto invalid;
			}
		} else {
			if (kinds[i].max == 0) {
				why = "this action takes no argument";
				goto invalid;
			}
			const char *num = colon + 1;
			char *end;
			errno = 0;
			unsigned long long v = strtoull(num, &end, 10);
			if (*num < '0' || *num > '9' || *end != '\0' || errno != 0 ||
			    v < kinds[i].min || v > kinds[i].max) {
				why = "argument is not a whole number in the allowed range";
				goto invalid;
			}
			arg = v;
		}

		Action *a = calloc(1, sizeof(*a));
		if (!a)
			return -ENOMEM;
		a->kind = kinds[i].kind;
		a->arg = arg;
		*ret = a;
		return 0;
	}
	why = "unknown action (known: noop, sleep:MS, busy:US, fail[:N], rewrite)";
invalid:
	if (ret_error)
		*ret_error = why;
	return -EINVAL;
}

int action_new_function(ActionFunction fn, void *userdata, Action **ret)
{
	if (!fn)
		return -EINVAL;
	Action *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->kind = ACTION_FUNCTION;
	a->fn = fn;
	a->fn_userdata = userdata;
	*ret = a;
	return 0;
}

/* Fills in the fields program and plugin actions share. Frees a on failure. */
static int set_place(Action *a, const char *pipeline, const char *state_dir)
{
	a->state_dir = strdup(state_dir);
	a->pipeline = strdup(pipeline ? pipeline : "");
	if (!a->state_dir || !a->pipeline) {
		action_free(a);
		return -ENOMEM;
	}
	return 0;
}

int action_new_program(Program *program, const char *pipeline, const char *state_dir,
                       Action **ret)
{
	Action *a = calloc(1, sizeof(*a));
	if (!a) {
		program_free(program);
		return -ENOMEM;
	}
	a->kind = ACTION_PROGRAM;
	a->program = program;
	int r = set_place(a, pipeline, state_dir);
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

int action_new_plugin(Plugin *plugin, const char *pipeline, const char *state_dir, Action **ret)
{
	Action *a = calloc(1, sizeof(*a));
	if (!a) {
		plugin_close(plugin);
		return -ENOMEM;
	}
	a->kind = ACTION_PLUGIN;
	a->plugin = plugin;
	int r = set_place(a, pipeline, state_dir);
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

void action_free(Action *a)
{
	if (!a)
		return;
	program_free(a->program);
	plugin_close(a->plugin);
	free(a->pipeline);
	free(a->state_dir);
	free(a);
}

int action_worker_init(Action *a, void **state, char *err, size_t errlen)
{
	*state = NULL;
	if (a->kind != ACTION_PLUGIN)
		return 0;
	return plugin_worker_init(a->plugin, state, err, errlen);
}

void action_worker_fini(Action *a, void *state)
{
	if (a->kind == ACTION_PLUGIN)
		plugin_worker_fini(a->plugin, state);
}

/* "<state_dir>/jobs/<id>" into buf. Returns 0, or -ENAMETOOLONG. */
static int workdir_path(const Action *a, const Job *job, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/jobs/%llu", a->state_dir, (unsigned long long)job->id);
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

int action_make_workdir(const Action *a, Job *job, char *err, size_t errlen)
{
	char path[ACTION_WORKDIR_MAX];

	if (job->workdir)
		return 0;
	int r = workdir_path(a, job, path, sizeof(path));
	if (r < 0) {
		snprintf(err, errlen, "scratch directory path is too long");
		return r;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		/* The jobs/ directory itself may be missing (removed by hand). */
		char *slash = strrchr(path, '/');
		*slash = '\0';
		if (r == -ENOENT && (mkdir(path, 0700) == 0 || errno == EEXIST)) {
			*slash = '/';
			r = mkdir(path, 0700) < 0 && errno != EEXIST ? -errno : 0;
		}
		*slash = '/';
		if (r < 0) {
			snprintf(err, errlen, "cannot make scratch directory %s: %s", path,
			         strerror(-r));
			return r;
		}
	}
	job->workdir = strdup(path);
	if (!job->workdir) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -errno : 0;
}

int action_remove_workdir(const char *path)
{
	/* An empty directory (stages that wrote nothing there) costs one
	 * rmdir; the tree walk only runs when it is not empty. */
	if (rmdir(path) == 0 || errno == ENOENT)
		return 0;
	if (errno != ENOTEMPTY && errno != EEXIST)
		return -errno;
	/* Depth first, without crossing into other file systems or following
	 * links: a link a job left in its directory is removed, not its target. */
	int r = nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	if (r < 0 && errno == ENOENT)
		return 0;
	return r < 0 ? -errno : r;
}

static int run_plugin(Action *a, void *state, const char *stage_name, Job *job, char *err,
                      size_t errlen)
{
	char path[ACTION_WORKDIR_MAX];
	if (workdir_path(a, job, path, sizeof(path)) < 0) {
		snprintf(err, errlen, "scratch directory path is too long");
		return -ENAMETOOLONG;
	}
	const pipelined_job pj = {
		.id = job->id,
		.pipeline = a->pipeline,
		.stage = stage_name,
		.attempt = job->attempt,
		.payload = job->payload,
		.payload_len = job->payload_len,
		.workdir = job->workdir ? job->workdir : path,
	};
	pipelined_result res;
	int r = plugin_run(a->plugin, state, &pj, &res);
	/* The plugin makes the scratch directory itself if it wants one, and
	 * says so: looking for it after every run would cost a system call
	 * per job. */
	if (!job->workdir && res.made_workdir)
		job->workdir = strdup(path); /* NULL on ENOMEM: only not shown, nor removed */
	if (r != PIPELINED_OK) {
		free(res.payload);
		snprintf(err, errlen, "%s", res.error);
		return r == PIPELINED_FAIL_PERMANENT ? -EPERM : -EIO;
	}
	if (res.payload)
		job_take_payload(job, res.payload);
	return 0;
}

static void sleep_ms(uint64_t ms)
{
	/* The kernel may stretch a sleep by the thread's timer slack (50 µs
	 * by default) to batch wake-ups; for an action whose whole point is
	 * to take MS milliseconds that is 1 % of error at 5 ms. Ask for 1 µs,
	 * once per thread: workers of a sleep stage run nothing else. */
	static _Thread_local bool slack_set;
	if (!slack_set) {
		(void)prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL); /* best effort */
		slack_set = true;
	}
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
		               .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void busy_us(uint64_t us)
{
	/* Spin on the thread's own CPU clock, so that time spent descheduled
	 * does not count: the action costs `us` of CPU, as its name says. */
	uint64_t end = now_usec(CLOCK_THREAD_CPUTIME_ID) + us;
	while (now_usec(CLOCK_THREAD_CPUTIME_ID) < end)
		;
}

static int rewrite(const char *stage_name, Job *job)
{
	static const char fmt[] = "{\"stage\":\"%s\",\"input\":%s}";
	size_t n = sizeof(fmt) + strlen(stage_name) + job->payload_len;
	char *p = malloc(n);
	if (!p)
		return -ENOMEM;
	snprintf(p, n, fmt, stage_name, job->payload);
	job_take_payload(job, p);
	return 0;
}

int action_run(Action *a, void *state, const char *stage_name, Job *job, char *err,
               size_t errlen)
{
	uint64_t call;
	int r;

	switch (a->kind) {
	case ACTION_NOOP:
		return 0;
	case ACTION_SLEEP:
		sleep_ms(a->arg);
		return 0;
	case ACTION_BUSY:
		busy_us(a->arg);
		return 0;
	case ACTION_FAIL:
		/* Shared by the stage's workers: the only action that counts. */
		call = atomic_fetch_add_explicit(&a->calls, 1, memory_order_relaxed) + 1;
		if (call % a->arg != 0)
			return 0;
		snprintf(err, errlen, "fail action: job %llu is call %llu, a multiple of %llu",
		         (unsigned long long)job->id, (unsigned long long)call,
		         (unsigned long long)a->arg);
		return -EIO;
	case ACTION_REWRITE:
		r = rewrite(stage_name, job);
		if (r < 0)
			snprintf(err, errlen, "rewrite action: out of memory");
		return r;
	case ACTION_FUNCTION:
		return a->fn(a->fn_userdata, stage_name, job, err, errlen);
	case ACTION_PROGRAM: {
		/* The command line first: a job that cannot run gets no scratch
		 * directory (it would be kept, as the job fails). */
		char **argv;
		r = program_argv(a->program, job, &argv, err, errlen);
		if (r < 0)
			return r;
		r = action_make_workdir(a, job, err, errlen);
		if (r < 0) {
			exec_argv_free(argv);
			return r;
		}
		return program_run(a->program, argv, a->pipeline, stage_name, job->workdir, job, err,
		                   errlen);
	}
	case ACTION_PLUGIN:
		return run_plugin(a, state, stage_name, job, err, errlen);
	default:
		snprintf(err, errlen, "unknown action kind %d", (int)a->kind);
		return -EINVAL;
	}
}

void action_format(const Action *a, char *buf, size_t len)
{
	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		if (kinds[i].kind != a->kind)
			continue;
		if (kinds[i].max == 0)
			snprintf(buf, len, "%s", kinds[i].name);
		else
			snprintf(buf, len, "%s:%llu", kinds[i].name, (unsigned long long)a->arg);
		return;
	}
	if (a->kind == ACTION_PROGRAM)
		snprintf(buf, len, "%s", program_text(a->program));
	else if (a->kind == ACTION_PLUGIN)
		snprintf(buf, len, "plugin:%s", plugin_path(a->plugin));
	else
		snprintf(buf, len, a->kind == ACTION_FUNCTION ? "function" : "unknown");
}
