/* job.h — one unit of work travelling through a pipeline.
 *
 * Ownership: a Job has exactly one owner at a time — whoever created it, then
 * the queue it sits in, then the worker that took it, then the next queue, and
 * finally whoever receives it in the pipeline's on_end hook. Nothing is shared,
 * so a Job needs no lock: the queue's mutex orders the hand-over between
 * threads.
 *
 * Threads: any thread may call these functions on a Job it owns. While a job
 * is inside a pipeline, another thread (the event loop, which tracks every
 * job it submitted) may read `id`, `uid`, `submitted_usec` (immutable), `state`
 * and `stage` (atomic), and may cancel it with job_cancel; it must not touch
 * anything else until the job comes back through on_end. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum JobState {
	JOB_QUEUED,  /* waiting in a stage's input queue */
	JOB_RUNNING, /* a worker is running the stage's action on it */
	JOB_RETRYING, /* its last run failed; it waits in its stage's queue for
	               * the next attempt (queue_put_delayed), held by no worker */
	JOB_DONE,    /* left the pipeline after the last stage succeeded */
	JOB_FAILED,  /* left the pipeline because an action failed; see error */
	JOB_CANCELLED, /* cancelled while queued (job_cancel); its worker skips it */
	_JOB_STATE_MAX,
} JobState;

/* Link used to post a job (or any event) to the loop thread's Mailbox.
 * Embedded so that posting never allocates. */
typedef struct MailNode {
	struct MailNode *next;
} MailNode;

typedef struct Job {
	MailNode node;      /* for Mailbox; unused while the job is in a pipeline */
	uint64_t id;        /* unique within the daemon, never 0 */
	char *payload;      /* owned; NUL-terminated JSON text */
	size_t payload_len; /* strlen(payload) */
	_Atomic unsigned stage; /* index of the stage the job is queued at, running in, or ended at */
	/* Written by the owner; read by the loop while the job is in flight. */
	_Atomic unsigned attempt;       /* 1 for the first run of the current stage */
	_Atomic uint64_t retry_at_usec; /* JOB_RETRYING: when the next attempt may start
	                                 * (CLOCK_REALTIME) */
	_Atomic unsigned runs;  /* actions run on this job so far, all stages together
	                         * (written by the owner, read by the loop in flight) */
	/* Written by the thread that owns the job; read (and moved from
	 * JOB_QUEUED to JOB_CANCELLED) by the loop thread. Owners use relaxed
	 * stores; the QUEUED→RUNNING step is a compare-and-swap (see job_start). */
	_Atomic JobState state;
	char *error; /* owned; why the job failed or was cancelled (or, while
	              * retrying, why the last attempt failed), else NULL */
	/* The last program a stage ran on this job (program actions): written
	 * by the worker running it. ran_program is false until one ran. */
	bool ran_program;
	bool retry_stopped; /* failed because a shutdown refused its next attempt (stage.c):
	                     * with a journal, it resumes at the next start */
	bool timed_out;    /* the stage's timeout ended it */
	int exit_status;   /* 0..255, or -1 when a signal ended it */
	int term_signal;   /* 0 when it exited */
	char *stderr_tail; /* owned; the end of its stderr, NUL-terminated; or NULL */
	size_t stderr_len;
	char *workdir;     /* owned; the job's scratch directory once a stage made it, else NULL */
	char *key;         /* owned; the client's idempotency key, or NULL; set before
	                    * the job is submitted, never changed after */
	uint32_t uid;      /* who submitted it (the peer's uid), or JOB_UID_UNKNOWN (a
	                    * job recorded before uids were); set before the job is
	                    * submitted, never changed after */
	/* Timestamps, CLOCK_REALTIME µs since the epoch; 0 = not yet. */
	uint64_t submitted_usec;
	_Atomic uint64_t started_usec; /* when a worker first took the job (as runs) */
	uint64_t finished_usec; /* when it left the pipeline */

	/* The event loop's bookkeeping (daemon/jobtable.h); only the loop
	 * thread touches these, and the engine never does. */
	struct Job *hash_next;             /* chain in the id hash */
	struct Job *list_prev, *list_next; /* every tracked job, in id order */
	struct Job *done_next, *done_prev; /* finished jobs, oldest first (retention) */
	struct Job *key_next;              /* chain in the key hash (jobs with a key) */
	uint64_t journal_seq;              /* the journal change that recorded its submit
	                                    * (0: recovered, already on disk) */
	void *tracker;                     /* the loop's record of the job's pipeline (borrowed) */
	bool ended;                        /* back from its pipeline: the loop owns it now */
	bool charged;                      /* counted in its uid's jobs in flight
	                                    * (jobtable_charge) */
	bool journal_keep;                 /* its journal row is not its state in memory (a
	                                    * shutdown ended it; it resumes at the next
	                                    * start): retention must not delete the row */
} Job;

/* Job.uid of a job whose submitter is not known: (uid_t)-1, which no user
 * has (chown and setresuid read it as "no change"). */
#define JOB_UID_UNKNOWN UINT32_MAX

/* The largest payload the engine accepts, in bytes (excluding the NUL). The
 * protocol's own limit (proto/) is lower; this one guards the engine's API. */
#define JOB_PAYLOAD_MAX (16u * 1024u * 1024u)

/* New job in state JOB_QUEUED, uid JOB_UID_UNKNOWN, with a copy of payload
 * (len bytes, need not be NUL-terminated). Returns 0 and a new Job in *ret_job, -EINVAL for id 0 or
 * a payload over JOB_PAYLOAD_MAX, -ENOMEM. */
int job_new(uint64_t id, const char *payload, size_t len, Job **ret_job);

/* Bytes a finished job keeps in memory beyond its struct (payload, error,
 * stderr tail): what retention by bytes counts. */
size_t job_retained_bytes(const Job *job);

/* Frees the job, its payload and error. Accepts NULL. */
void job_free(Job *job);

/* Replaces the payload with new_payload (stolen; must be NUL-terminated, from malloc). */
void job_take_payload(Job *job, char *new_payload);

/* Records why the job failed: state becomes JOB_FAILED and error a copy of msg
 * (truncated to 1 KiB). If that copy cannot be allocated, error stays NULL
 * (readers show "unknown"); the state change never fails. */
void job_set_failed(Job *job, const char *msg);

/* As job_set_failed, without changing the state (a run that will be retried). */
void job_set_error(Job *job, const char *msg);

/* Replaces the stderr tail with tail (stolen; NUL-terminated, len bytes, from
 * malloc; NULL clears it). */
void job_take_stderr(Job *job, char *tail, size_t len);

const char *job_state_to_string(JobState s);

/* The parse of job_state_to_string; -EINVAL for an unknown name. */
int job_state_from_string(const char *s, JobState *ret);

/* Worker side: claims a queued (or retrying) job to run it (→ RUNNING).
 * Returns false if it was cancelled meanwhile; the worker must then not run it. */
bool job_start(Job *job);

/* Loop side: cancels a job waiting in a queue (QUEUED or RETRYING →
 * CANCELLED). Returns
 * 0, or -EBUSY if a worker is running it. The job stays where it is until a
 * worker takes it, skips it and ends it (state JOB_CANCELLED); the loop sets
 * its error when it comes back through on_end. */
int job_cancel(Job *job);
