#include "job.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define JOB_ERROR_MAX 1024

int job_new(uint64_t id, const char *payload, size_t len, Job **ret_job)
{
	if (id == 0 || len > JOB_PAYLOAD_MAX || (!payload && len > 0))
		return -EINVAL;

	Job *job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	job->payload = malloc(len + 1);
	if (!job->payload) {
		free(job);
		return -ENOMEM;
	}
	if (len > 0)
		memcpy(job->payload, payload, len);
	job->payload[len] = '\0';
	job->payload_len = len;
	job->id = id;
	job->uid = JOB_UID_UNKNOWN;
	job->attempt = 1;
	job->state = JOB_QUEUED;
	job->submitted_usec = real_usec();
	*ret_job = job;
	return 0;
}

size_t job_retained_bytes(const Job *job)
{
	return job->payload_len + job->stderr_len + (job->error ? strlen(job->error) : 0) +
	       (job->key ? strlen(job->key) : 0);
}

void job_free(Job *job)
{
	if (!job)
		return;
	free(job->payload);
	free(job->error);
	free(job->stderr_tail);
	free(job->workdir);
	free(job->key);
	free(job);
}

void job_take_payload(Job *job, char *new_payload)
{
	free(job->payload);
	job->payload = new_payload;
	job->payload_len = strlen(new_payload);
}

void job_set_error(Job *job, const char *msg)
{
	free(job->error);
	job->error =
	        strndup(msg ? msg : "failed", JOB_ERROR_MAX); /* NULL on ENOMEM: reason unknown */
	if (job->error) /* it may quote a program's output, cut anywhere */
		utf8_sanitize(job->error, strlen(job->error));
}

void job_set_failed(Job *job, const char *msg)
{
	job->state = JOB_FAILED;
	job_set_error(job, msg);
}

void job_take_stderr(Job *job, char *tail, size_t len)
{
	free(job->stderr_tail);
	job->stderr_tail = tail;
	job->stderr_len = tail ? len : 0;
}

const char *job_state_to_string(JobState s)
{
	static const char *const names[_JOB_STATE_MAX] = {
		[JOB_QUEUED] = "queued",
		[JOB_RUNNING] = "running",
		[JOB_RETRYING] = "retrying",
		[JOB_DONE] = "done",
		[JOB_FAILED] = "failed",
		[JOB_CANCELLED] = "cancelled",
	};
	return (s >= 0 && s < _JOB_STATE_MAX) ? names[s] : "unknown";
}

int job_state_from_string(const char *s, JobState *ret)
{
	for (JobState i = 0; i < _JOB_STATE_MAX; i++)
		if (strcmp(s, job_state_to_string(i)) == 0) {
			*ret = i;
			return 0;
		}
	return -EINVAL;
}

/* Moves a waiting job (QUEUED or RETRYING) to `to`; false if it was not waiting. */
static bool take_waiting(Job *job, JobState to, JobState *ret_seen)
{
	JobState expected = atomic_load_explicit(&job->state, memory_order_relaxed);
	while (expected == JOB_QUEUED || expected == JOB_RETRYING)
		if (atomic_compare_exchange_weak_explicit(&job->state, &expected, to,
		                                          memory_order_relaxed,
		                                          memory_order_relaxed))
			return true;
	*ret_seen = expected;
	return false;
}

bool job_start(Job *job)
{
	JobState seen;
	return take_waiting(job, JOB_RUNNING, &seen);
}

int job_cancel(Job *job)
{
	JobState seen;
	if (take_waiting(job, JOB_CANCELLED, &seen))
		return 0;
	return seen == JOB_RUNNING ? -EBUSY : -EALREADY;
}
