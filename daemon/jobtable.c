#include "jobtable.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define JOBTABLE_MIN_BUCKETS 1024u
#define JOBTABLE_KEY_BUCKETS 1024u
#define JOBTABLE_UID_BUCKETS 16u /* submitters are few: local users */

/* One uid's jobs in flight; exists only while jobs > 0. */
typedef struct UidCount {
	struct UidCount *next;
	uint32_t uid;
	uint64_t jobs;
} UidCount;

int jobtable_init(JobTable *t, uint64_t retain_jobs, uint64_t retain_bytes)
{
	*t = (JobTable){ .retain_jobs = retain_jobs, .retain_bytes = retain_bytes };
	t->buckets = calloc(JOBTABLE_MIN_BUCKETS, sizeof(*t->buckets));
	if (!t->buckets)
		return -ENOMEM;
	t->mask = JOBTABLE_MIN_BUCKETS - 1;
	t->key_buckets = calloc(JOBTABLE_KEY_BUCKETS, sizeof(*t->key_buckets));
	if (!t->key_buckets) {
		free(t->buckets);
		return -ENOMEM;
	}
	t->key_mask = JOBTABLE_KEY_BUCKETS - 1;
	return 0;
}

void jobtable_done(JobTable *t)
{
	for (Job *j = t->done_head, *next; j; j = next) {
		next = j->done_next;
		job_free(j);
	}
	for (size_t i = 0; t->uid_buckets && i <= t->uid_mask; i++)
		for (UidCount *u = t->uid_buckets[i], *next; u; u = next) {
			next = u->next;
			free(u);
		}
	free(t->uid_buckets);
	free(t->buckets);
	free(t->key_buckets);
	*t = (JobTable){ 0 };
}

static Job **slot(JobTable *t, uint64_t id)
{
	/* Ids are consecutive, so the low bits spread them evenly. */
	return &t->buckets[id & t->mask];
}

/* Doubles the buckets when chains would average more than two jobs. On
 * ENOMEM the table keeps working with longer chains. */
static void grow(JobTable *t)
{
	size_t n = (t->mask + 1) * 2;
	Job **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i <= t->mask; i++)
		for (Job *j = t->buckets[i], *next; j; j = next) {
			next = j->hash_next;
			j->hash_next = b[j->id & (n - 1)];
			b[j->id & (n - 1)] = j;
		}
	free(t->buckets);
	t->buckets = b;
	t->mask = n - 1;
}

/* FNV-1a: keys come from clients, but a chain only costs time, and the
 * table grows with the number of keys. */
static Job **key_slot(JobTable *t, const char *key)
{
	uint64_t h = 14695981039346656037u;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 1099511628211u;
	return &t->key_buckets[h & t->key_mask];
}

static void key_grow(JobTable *t)
{
	size_t old_n = t->key_mask + 1, n = old_n * 2;
	Job **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	Job **old = t->key_buckets;
	t->key_buckets = b;
	t->key_mask = n - 1;
	for (size_t i = 0; i < old_n; i++)
		for (Job *j = old[i], *next; j; j = next) {
			next = j->key_next;
			Job **s = key_slot(t, j->key);
			j->key_next = *s;
			*s = j;
		}
	free(old);
}

/* ---- jobs in flight per uid ---- */

static UidCount **uid_slot(const JobTable *t, uint32_t uid)
{
	/* Fibonacci hashing: uids are often consecutive or round numbers. */
	return &t->uid_buckets[((uint32_t)(uid * 2654435769u) >> 16) & t->uid_mask];
}

/* Doubles the uid buckets when chains would average more than two; on
 * ENOMEM the chains just grow longer. */
static void uid_grow(JobTable *t)
{
	size_t old_n = t->uid_mask + 1, n = old_n * 2;
	UidCount **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	UidCount **old = t->uid_buckets;
	t->uid_buckets = b;
	t->uid_mask = n - 1;
	for (size_t i = 0; i < old_n; i++)
		for (UidCount *u = old[i], *next; u; u = next) {
			next = u->next;
			UidCount **s = uid_slot(t, u->uid);
			u->next = *s;
			*s = u;
		}
	free(old);
}

static UidCount *uid_find(const JobTable *t, uint32_t uid)
{
	if (!t->uid_buckets)
		return NULL;
	for (UidCount *u = *uid_slot(t, uid); u; u = u->next)
		if (u->uid == uid)
			return u;
	return NULL;
}

int jobtable_charge(JobTable *t, Job *job)
{
	if (job->charged || job->uid == JOB_UID_UNKNOWN)
		return 0;
	UidCount *u = uid_find(t, job->uid);
	if (!u) {
		if (!t->uid_buckets) {
			t->uid_buckets = calloc(JOBTABLE_UID_BUCKETS, sizeof(*t->uid_buckets));
			if (!t->uid_buckets)
				return -ENOMEM;
			t->uid_mask = JOBTABLE_UID_BUCKETS - 1;
		}
		u = calloc(1, sizeof(*u));
		if (!u)
			return -ENOMEM;
		if (t->uid_count >= 2 * (t->uid_mask + 1))
			uid_grow(t);
		UidCount **s = uid_slot(t, job->uid);
		u->uid = job->uid;
		u->next = *s;
		*s = u;
		t->uid_count++;
	}
	u->jobs++;
	job->charged = true;
	return 0;
}

void jobtable_discharge(JobTable *t, Job *job)
{
	if (!job->charged)
		return;
	job->charged = false;
	for (UidCount **s = uid_slot(t, job->uid); *s; s = &(*s)->next) {
		UidCount *u = *s;
		if (u->uid != job->uid)
			continue;
		if (--u->jobs == 0) {
			*s = u->next;
			free(u);
			t->uid_count--;
		}
		return;
	}
}

uint64_t jobtable_uid_jobs(const JobTable *t, uint32_t uid)
{
	const UidCount *u = uid_find(t, uid);
	return u ? u->jobs : 0;
}

/* ---- lookup by key ---- */

Job *jobtable_get_key(JobTable *t, const char *key)
{
	for (Job *j = *key_slot(t, key); j; j = j->key_next)
		if (strcmp(j->key, key) == 0)
			return j;
	return NULL;
}

int jobtable_add(JobTable *t, Job *job)
{
	if (job->key) {
		if (t->key_count >= 2 * (t->key_mask + 1))
			key_grow(t);
		Job **k = key_slot(t, job->key);
		job->key_next = *k;
		*k = job;
		t->key_count++;
	}
	if (t->count >= 2 * (t->mask + 1))
		grow(t);
	Job **s = slot(t, job->id);
	job->hash_next = *s;
	*s = job;
	job->list_prev = t->tail;
	job->list_next = NULL;
	if (t->tail)
		t->tail->list_next = job;
	else
		t->head = job;
	t->tail = job;
	job->done_next = NULL;
	t->count++;
	return 0;
}

static void unlink_job(JobTable *t, Job *job)
{
	for (Job **s = slot(t, job->id); *s; s = &(*s)->hash_next)
		if (*s == job) {
			*s = job->hash_next;
			break;
		}
	if (job->list_prev)
		job->list_prev->list_next = job->list_next;
	else
		t->head = job->list_next;
	if (job->list_next)
		job->list_next->list_prev = job->list_prev;
	else
		t->tail = job->list_prev;
	job->hash_next = job->list_prev = job->list_next = NULL;
	t->count--;
	if (job->key) {
		for (Job **k = key_slot(t, job->key); *k; k = &(*k)->key_next)
			if (*k == job) {
				*k = job->key_next;
				break;
			}
		job->key_next = NULL;
		t->key_count--;
	}
}

void jobtable_remove(JobTable *t, Job *job)
{
	unlink_job(t, job);
}

static void drop_oldest(JobTable *t)
{
	Job *j = t->done_head;
	jobtable_unfinish(t, j);
	unlink_job(t, j);
	if (t->on_drop)
		t->on_drop(t->userdata, j);
	job_free(j);
}

static void apply_retention(JobTable *t)
{
	while (t->done_head &&
	       (t->done_count > t->retain_jobs || t->done_bytes > t->retain_bytes))
		drop_oldest(t);
}

void jobtable_set_retain_age(JobTable *t, uint64_t retain_age_usec)
{
	t->retain_age_usec = retain_age_usec;
}

uint64_t jobtable_expire(JobTable *t, uint64_t now_usec)
{
	if (t->retain_age_usec == 0)
		return 0;
	/* Finished jobs are in the order they finished (recovered ones are
	 * added in that order too), so the oldest is first. */
	while (t->done_head && t->done_head->finished_usec + t->retain_age_usec <= now_usec)
		drop_oldest(t);
	return t->done_head ? t->done_head->finished_usec + t->retain_age_usec : 0;
}

void jobtable_finish(JobTable *t, Job *job)
{
	jobtable_discharge(t, job);
	job->ended = true;
	job->done_next = NULL;
	job->done_prev = t->done_tail;
	if (t->done_tail)
		t->done_tail->done_next = job;
	else
		t->done_head = job;
	t->done_tail = job;
	t->done_count++;
	t->done_bytes += job_retained_bytes(job);
	apply_retention(t);
}

void jobtable_unfinish(JobTable *t, Job *job)
{
	if (job->done_prev)
		job->done_prev->done_next = job->done_next;
	else
		t->done_head = job->done_next;
	if (job->done_next)
		job->done_next->done_prev = job->done_prev;
	else
		t->done_tail = job->done_prev;
	job->done_next = job->done_prev = NULL;
	t->done_count--;
	t->done_bytes -= job_retained_bytes(job);
	job->ended = false;
}

void jobtable_set_retention(JobTable *t, uint64_t retain_jobs, uint64_t retain_bytes)
{
	t->retain_jobs = retain_jobs;
	t->retain_bytes = retain_bytes;
	apply_retention(t);
}

Job *jobtable_get(JobTable *t, uint64_t id)
{
	for (Job *j = *slot(t, id); j; j = j->hash_next)
		if (j->id == id)
			return j;
	return NULL;
}

Job *jobtable_first_after(JobTable *t, uint64_t after_id)
{
	if (after_id == 0)
		return t->head;
	Job *j = jobtable_get(t, after_id);
	if (j)
		return j->list_next;
	/* That job is gone (dropped by retention): walk from the oldest. */
	for (j = t->head; j && j->id <= after_id; j = j->list_next)
		;
	return j;
}
