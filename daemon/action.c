#include "action.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

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

void action_free(Action *a)
{
	free(a);
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

int action_run(Action *a, const char *stage_name, Job *job, char *err, size_t errlen)
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
	snprintf(buf, len, a->kind == ACTION_FUNCTION ? "function" : "unknown");
}
