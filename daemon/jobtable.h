/* jobtable.h — every job the daemon knows: in flight, and finished ones
 * kept for queries until retention drops them.
 *
 * A hash from id to Job, a list of every tracked job in id order (ids are
 * given out in increasing order and jobs are appended, so the list stays
 * sorted) and a FIFO of finished jobs, oldest first. Retention keeps at
 * most `retain_jobs` finished jobs and at most `retain_bytes` of their
 * payloads, errors and stderr tails; older ones are dropped and freed, so memory stays bounded
 * however many jobs have run.
 *
 * Owns: finished jobs (freed when dropped or with the table). Borrows: jobs
 * in flight (a pipeline owns them; the table only links them and reads
 * their atomic state). Jobs with an idempotency key (Job.key) are also
 * found by it: keys are unique among tracked jobs (the caller checks with
 * jobtable_get_key before it adds one). Retention by age drops finished
 * jobs that finished more than `retain_age_usec` ago, when
 * jobtable_expire is called (the table reads no clock itself). The links live in the Job
 * (hash_next, list_*, done_next), so tracking never allocates per job.
 *
 * Jobs in flight per submitter: each uid with jobs charged to it has a
 * counter (a small hash, entries freed when they reach 0), so that a cap on
 * one user's jobs costs O(1) per job. The caller charges a job when it
 * takes it on (a submit, a requeue, a recovered unfinished job); the table
 * discharges it when the job finishes (jobtable_finish), and the caller
 * discharges a job it drops without running it. Jobs of JOB_UID_UNKNOWN are
 * never counted.
 *
 * Threads: the event loop thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"

typedef struct JobTable {
	Job **buckets;
	size_t mask; /* buckets - 1; a power of two minus one */
	size_t count;
	Job *head, *tail;           /* every tracked job, id order */
	Job *done_head, *done_tail; /* finished jobs, the order they finished */
	size_t done_count;
	uint64_t done_bytes; /* job_retained_bytes of finished jobs */
	uint64_t retain_jobs, retain_bytes;
	uint64_t retain_age_usec; /* 0: no limit by age */
	Job **key_buckets;        /* chains of key_next, by hash of the key */
	size_t key_mask, key_count;
	struct UidCount **uid_buckets; /* jobs charged per uid; NULL until the first */
	size_t uid_mask, uid_count;    /* uid_count: uids with a counter */
	/* Called for each finished job retention drops, just before it is
	 * freed (the daemon uses it to release the job's pipeline record). */
	void (*on_drop)(void *userdata, Job *job);
	void *userdata;
} JobTable;

int jobtable_init(JobTable *t, uint64_t retain_jobs, uint64_t retain_bytes);
/* Frees finished jobs (without on_drop) and the buckets. Jobs still in
 * flight are only unlinked: they belong to their pipeline. */
void jobtable_done(JobTable *t);

/* Tracks a job just submitted. Its id must be larger than any tracked.
 * Returns 0 or -ENOMEM (then nothing changed). */
int jobtable_add(JobTable *t, Job *job);

/* Forgets a job in flight that was never accepted (a failed submit). */
void jobtable_remove(JobTable *t, Job *job);

/* A tracked job came back from its pipeline: takes it (stolen), discharges
 * it and keeps it as finished, then applies retention (which may drop it at
 * once). */
void jobtable_finish(JobTable *t, Job *job);

/* Takes a finished job back out of retention (it is going back into its
 * pipeline: RequeueJob). It stays tracked, in flight again (the caller
 * charges it). */
void jobtable_unfinish(JobTable *t, Job *job);

/* Changes the retention limits and applies them. */
void jobtable_set_retention(JobTable *t, uint64_t retain_jobs, uint64_t retain_bytes);

/* Changes the age limit (0: none); applied by the next jobtable_expire. */
void jobtable_set_retain_age(JobTable *t, uint64_t retain_age_usec);

/* Drops finished jobs that finished before now_usec - retain_age_usec
 * (CLOCK_REALTIME µs), oldest first. Returns when the oldest one left
 * expires (µs, same clock), or 0 if none will (no age limit, or none
 * finished). */
uint64_t jobtable_expire(JobTable *t, uint64_t now_usec);

/* Counts job (not yet charged) against its uid's jobs in flight. Returns 0
 * (also for JOB_UID_UNKNOWN, not counted) or -ENOMEM (nothing changed). */
int jobtable_charge(JobTable *t, Job *job);

/* Takes job's charge back, if it has one. */
void jobtable_discharge(JobTable *t, Job *job);

/* Jobs charged to uid now. */
uint64_t jobtable_uid_jobs(const JobTable *t, uint32_t uid);

/* The tracked job whose idempotency key is key, or NULL. */
Job *jobtable_get_key(JobTable *t, const char *key);

Job *jobtable_get(JobTable *t, uint64_t id); /* borrowed; NULL if unknown */

/* The first tracked job with an id greater than after_id, or NULL. */
Job *jobtable_first_after(JobTable *t, uint64_t after_id);
