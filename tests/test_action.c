/* Unit tests for daemon/action.c and daemon/job.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "action.h"
#include "job.h"
#include "testutil.h"
#include "util.h"

static Job *job(uint64_t id, const char *payload)
{
	Job *j;
	ck_assert_int_eq(job_new(id, payload, strlen(payload), &j), 0);
	return j;
}

START_TEST(test_job_new_and_limits)
{
	Job *j;
	ck_assert_int_eq(job_new(0, "{}", 2, &j), -EINVAL); /* id 0 is reserved */
	ck_assert_int_eq(job_new(1, NULL, 1, &j), -EINVAL);

	/* Payload at the limit is accepted, one byte more is refused. */
	char *big = malloc(JOB_PAYLOAD_MAX + 1);
	memset(big, ' ', JOB_PAYLOAD_MAX + 1);
	ck_assert_int_eq(job_new(1, big, JOB_PAYLOAD_MAX + 1, &j), -EINVAL);
	ck_assert_int_eq(job_new(1, big, JOB_PAYLOAD_MAX, &j), 0);
	ck_assert_uint_eq(j->payload_len, JOB_PAYLOAD_MAX);
	ck_assert_int_eq(j->payload[JOB_PAYLOAD_MAX], '\0');
	job_free(j);
	free(big);

	/* The payload is copied and NUL-terminated even if the input is not. */
	ck_assert_int_eq(job_new(7, "{\"a\":1}XXXX", 7, &j), 0);
	ck_assert_str_eq(j->payload, "{\"a\":1}");
	ck_assert_uint_eq(j->id, 7);
	ck_assert_uint_eq(j->attempt, 1);
	ck_assert_int_eq(j->state, JOB_QUEUED);
	ck_assert_uint_gt(j->submitted_usec, 0);
	ck_assert_ptr_null(j->error);

	job_set_failed(j, "first");
	job_set_failed(j, "second"); /* replaces, no leak */
	ck_assert_int_eq(j->state, JOB_FAILED);
	ck_assert_str_eq(j->error, "second");
	ck_assert_str_eq(job_state_to_string(JOB_FAILED), "failed");
	ck_assert_str_eq(job_state_to_string(_JOB_STATE_MAX), "unknown");
	job_free(j);
	job_free(NULL);
}
END_TEST

static const struct {
	const char *spec;
	int result;
	const char *canonical; /* action_format of the parsed action */
} parse_cases[] = {
	{ "noop", 0, "noop" },
	{ "sleep:1", 0, "sleep:1" },
	{ "sleep:3600000", 0, "sleep:3600000" },
	{ "busy:10000000", 0, "busy:10000000" },
	{ "fail", 0, "fail:1" },
	{ "fail:4294967295", 0, "fail:4294967295" },
	{ "rewrite", 0, "rewrite" },
	{ "", -EINVAL, NULL },
	{ "nop", -EINVAL, NULL },
	{ "noopx", -EINVAL, NULL },
	{ "noop:1", -EINVAL, NULL },
	{ "sleep", -EINVAL, NULL },
	{ "sleep:", -EINVAL, NULL },
	{ "sleep:0", -EINVAL, NULL },
	{ "sleep:3600001", -EINVAL, NULL },
	{ "sleep:-1", -EINVAL, NULL },
	{ "sleep:+1", -EINVAL, NULL },
	{ "sleep: 1", -EINVAL, NULL },
	{ "sleep:1ms", -EINVAL, NULL },
	{ "busy:10000001", -EINVAL, NULL },
	{ "fail:0", -EINVAL, NULL },
	{ "fail:4294967296", -EINVAL, NULL },
	{ "fail:99999999999999999999999", -EINVAL, NULL },
	{ "rewrite:2", -EINVAL, NULL },
};

START_TEST(test_parse_cases)
{
	for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
		Action *a = NULL;
		const char *why = NULL;
		int r = action_parse(parse_cases[i].spec, &a, &why);
		ck_assert_msg(r == parse_cases[i].result, "'%s': got %d", parse_cases[i].spec, r);
		if (r == 0) {
			char buf[64];
			action_format(a, buf, sizeof(buf));
			ck_assert_str_eq(buf, parse_cases[i].canonical);
			action_free(a);
		} else {
			ck_assert_ptr_nonnull(why);
		}
	}
}
END_TEST

START_TEST(test_parse_messages)
{
	Action *a;
	const char *why;
	ck_assert_int_eq(action_parse("frobnicate", &a, &why), -EINVAL);
	ck_assert_str_eq(why, "unknown action (known: noop, sleep:MS, busy:US, fail[:N], rewrite)");
	ck_assert_int_eq(action_parse("sleep", &a, &why), -EINVAL);
	ck_assert_str_eq(why, "this action needs an argument after ':'");
	ck_assert_int_eq(action_parse("noop:3", &a, &why), -EINVAL);
	ck_assert_str_eq(why, "this action takes no argument");
	ck_assert_int_eq(action_parse("busy:0", &a, &why), -EINVAL);
	ck_assert_str_eq(why, "argument is not a whole number in the allowed range");

	/* Spec length: at the limit it is read (and here rejected for its
	 * content), past it rejected for its length. */
	char spec[ACTION_SPEC_MAX + 2];
	memset(spec, 'x', sizeof(spec));
	spec[ACTION_SPEC_MAX] = '\0';
	ck_assert_int_eq(action_parse(spec, &a, &why), -EINVAL);
	ck_assert_str_ne(why, "action too long");
	spec[ACTION_SPEC_MAX] = 'x';
	spec[ACTION_SPEC_MAX + 1] = '\0';
	ck_assert_int_eq(action_parse(spec, &a, &why), -EINVAL);
	ck_assert_str_eq(why, "action too long");
}
END_TEST

static int run(Action *a, Job *j, char *err, size_t n)
{
	err[0] = '\0';
	return action_run(a, NULL, "st", j, err, n);
}

START_TEST(test_run_fail_every_nth)
{
	Action *a;
	char err[256];
	Job *j = job(5, "{}");
	ck_assert_int_eq(action_parse("fail:3", &a, NULL), 0);
	int results[7];
	for (int i = 0; i < 7; i++)
		results[i] = run(a, j, err, sizeof(err));
	const int want[7] = { 0, 0, -EIO, 0, 0, -EIO, 0 };
	for (int i = 0; i < 7; i++)
		ck_assert_int_eq(results[i], want[i]);
	action_free(a);

	ck_assert_int_eq(action_parse("fail", &a, NULL), 0);
	ck_assert_int_eq(run(a, j, err, sizeof(err)), -EIO);
	ck_assert_str_eq(err, "fail action: job 5 is call 1, a multiple of 1");
	action_free(a);
	job_free(j);
}
END_TEST

START_TEST(test_run_rewrite_and_noop)
{
	Action *a;
	char err[64];
	Job *j = job(1, "[1,2]");
	ck_assert_int_eq(action_parse("rewrite", &a, NULL), 0);
	ck_assert_int_eq(run(a, j, err, sizeof(err)), 0);
	ck_assert_str_eq(j->payload, "{\"stage\":\"st\",\"input\":[1,2]}");
	ck_assert_uint_eq(j->payload_len, strlen(j->payload));
	action_free(a);

	ck_assert_int_eq(action_parse("noop", &a, NULL), 0);
	ck_assert_int_eq(run(a, j, err, sizeof(err)), 0);
	ck_assert_str_eq(j->payload, "{\"stage\":\"st\",\"input\":[1,2]}");
	action_free(a);
	job_free(j);
}
END_TEST

START_TEST(test_run_sleep_and_busy_take_at_least_their_time)
{
	/* Lower bounds only: the clock guarantees them on any machine. */
	Action *a;
	char err[64];
	Job *j = job(1, "{}");
	ck_assert_int_eq(action_parse("sleep:20", &a, NULL), 0);
	uint64_t t0 = mono_usec();
	ck_assert_int_eq(run(a, j, err, sizeof(err)), 0);
	ck_assert_uint_ge(mono_usec() - t0, 20000);
	action_free(a);

	ck_assert_int_eq(action_parse("busy:20000", &a, NULL), 0);
	uint64_t c0 = now_usec(CLOCK_THREAD_CPUTIME_ID);
	ck_assert_int_eq(run(a, j, err, sizeof(err)), 0);
	ck_assert_uint_ge(now_usec(CLOCK_THREAD_CPUTIME_ID) - c0, 20000);
	action_free(a);
	job_free(j);
}
END_TEST

static int fn_action(void *userdata, const char *stage, Job *j, char *err, size_t n)
{
	(*(int *)userdata)++;
	snprintf(err, n, "fn saw %s", stage);
	return -EPERM;
}

START_TEST(test_function_action)
{
	Action *a;
	char err[64];
	int calls = 0;
	Job *j = job(1, "{}");
	ck_assert_int_eq(action_new_function(NULL, NULL, &a), -EINVAL);
	ck_assert_int_eq(action_new_function(fn_action, &calls, &a), 0);
	ck_assert_int_eq(run(a, j, err, sizeof(err)), -EPERM);
	ck_assert_str_eq(err, "fn saw st");
	ck_assert_int_eq(calls, 1);
	action_format(a, err, sizeof(err));
	ck_assert_str_eq(err, "function");
	action_free(a);
	job_free(j);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("action");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_job_new_and_limits);
	tcase_add_test(tc, test_parse_cases);
	tcase_add_test(tc, test_parse_messages);
	tcase_add_test(tc, test_run_fail_every_nth);
	tcase_add_test(tc, test_run_rewrite_and_noop);
	tcase_add_test(tc, test_run_sleep_and_busy_take_at_least_their_time);
	tcase_add_test(tc, test_function_action);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
