/* Unit tests for daemon/jobtable.c: lookup (by id and by key), id order,
 * retention by count, bytes and age. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "jobtable.h"
#include "testutil.h"

static Job *job(uint64_t id, size_t payload_len)
{
	char payload[256];
	memset(payload, 'x', sizeof(payload));
	Job *j;
	ck_assert_int_eq(job_new(id, payload, payload_len, &j), 0);
	return j;
}

static unsigned dropped;
static void on_drop(void *userdata, Job *j)
{
	dropped++;
}

START_TEST(test_lookup_order_and_growth)
{
	enum { N = 5000 }; /* several times the initial buckets: forces growth */
	JobTable t;
	ck_assert_int_eq(jobtable_init(&t, N, UINT64_MAX), 0);
	for (uint64_t id = 1; id <= N; id++)
		ck_assert_int_eq(jobtable_add(&t, job(id, 2)), 0);
	ck_assert_uint_eq(t.count, N);
	for (uint64_t id = 1; id <= N; id++)
		ck_assert_uint_eq(jobtable_get(&t, id)->id, id);
	ck_assert_ptr_null(jobtable_get(&t, N + 1));
	ck_assert_ptr_null(jobtable_get(&t, 0));

	/* id order, from any point */
	uint64_t want = 101;
	for (Job *j = jobtable_first_after(&t, 100); j; j = j->list_next)
		ck_assert_uint_eq(j->id, want++);
	ck_assert_uint_eq(want, N + 1);
	ck_assert_uint_eq(jobtable_first_after(&t, 0)->id, 1);
	ck_assert_ptr_null(jobtable_first_after(&t, N));

	/* A removed job: paging after it continues with the next one. */
	Job *gone = jobtable_get(&t, 200);
	jobtable_remove(&t, gone);
	job_free(gone);
	ck_assert_ptr_null(jobtable_get(&t, 200));
	ck_assert_uint_eq(jobtable_first_after(&t, 200)->id, 201);
	ck_assert_uint_eq(jobtable_get(&t, 199)->list_next->id, 201);

	/* Everything left is in flight (not finished): jobtable_done only unlinks. */
	Job *all[N + 1];
	unsigned n = 0;
	for (Job *j = t.head; j; j = j->list_next)
		all[n++] = j;
	jobtable_done(&t);
	for (unsigned i = 0; i < n; i++)
		job_free(all[i]);
}
END_TEST

START_TEST(test_retention_by_count_and_bytes)
{
	JobTable t;
	ck_assert_int_eq(jobtable_init(&t, 3, 250), 0);
	t.on_drop = on_drop;
	dropped = 0;
	for (uint64_t id = 1; id <= 5; id++) {
		Job *j = job(id, 100);
		jobtable_add(&t, j);
		jobtable_finish(&t, j);
	}
	/* 250 bytes hold two 100-byte payloads: jobs 4 and 5 stay. */
	ck_assert_uint_eq(dropped, 3);
	ck_assert_uint_eq(t.done_count, 2);
	ck_assert_uint_eq(t.done_bytes, 200);
	ck_assert_ptr_null(jobtable_get(&t, 3));
	ck_assert_ptr_nonnull(jobtable_get(&t, 4));
	ck_assert(jobtable_get(&t, 5)->ended);

	/* By count: at the limit kept, past it dropped. */
	jobtable_set_retention(&t, 2, UINT64_MAX);
	ck_assert_uint_eq(dropped, 3);
	Job *j = job(6, 1);
	jobtable_add(&t, j);
	jobtable_finish(&t, j);
	ck_assert_uint_eq(dropped, 4); /* job 4, the oldest */
	ck_assert_ptr_null(jobtable_get(&t, 4));
	ck_assert_uint_eq(t.head->id, 5);

	/* A job in flight is never dropped, whatever the limits. */
	Job *running = job(7, 1);
	jobtable_add(&t, running);
	jobtable_set_retention(&t, 0, 0);
	ck_assert_uint_eq(dropped, 6);
	ck_assert_ptr_eq(jobtable_get(&t, 7), running);
	ck_assert_uint_eq(t.count, 1);
	jobtable_done(&t);
	job_free(running);
}
END_TEST

START_TEST(test_keys)
{
	enum { N = 5000 }; /* forces the key buckets to grow */
	JobTable t;
	ck_assert_int_eq(jobtable_init(&t, 0, UINT64_MAX), 0);
	t.on_drop = on_drop;
	char key[32];
	for (uint64_t id = 1; id <= N; id++) {
		Job *j = job(id, 1);
		if (id % 2) { /* every other job has a key */
			snprintf(key, sizeof(key), "key-%llu", (unsigned long long)id);
			j->key = strdup(key);
		}
		ck_assert_int_eq(jobtable_add(&t, j), 0);
	}
	ck_assert_uint_eq(t.key_count, N / 2);
	for (uint64_t id = 1; id <= N; id += 2) {
		snprintf(key, sizeof(key), "key-%llu", (unsigned long long)id);
		ck_assert_uint_eq(jobtable_get_key(&t, key)->id, id);
	}
	ck_assert_ptr_null(jobtable_get_key(&t, "key-2"));
	ck_assert_ptr_null(jobtable_get_key(&t, ""));

	/* Removed (a submit that did not go in) and dropped (retention 0)
	 * jobs leave the key index. */
	Job *one = jobtable_get(&t, 1);
	jobtable_remove(&t, one);
	ck_assert_ptr_null(jobtable_get_key(&t, "key-1"));
	job_free(one);
	jobtable_finish(&t, jobtable_get(&t, 3));
	ck_assert_ptr_null(jobtable_get_key(&t, "key-3"));
	ck_assert_uint_eq(t.key_count, N / 2 - 2);
	/* The rest are in flight: the table only borrowed them. */
	Job *rest[N];
	size_t n = 0;
	for (Job *j = t.head; j; j = j->list_next)
		rest[n++] = j;
	jobtable_done(&t);
	for (size_t i = 0; i < n; i++)
		job_free(rest[i]);
}
END_TEST

START_TEST(test_retention_by_age)
{
	JobTable t;
	ck_assert_int_eq(jobtable_init(&t, 100, UINT64_MAX), 0);
	t.on_drop = on_drop;
	dropped = 0;
	ck_assert_uint_eq(jobtable_expire(&t, 1000), 0); /* no age limit, nothing finished */
	jobtable_set_retain_age(&t, 100);
	for (uint64_t id = 1; id <= 3; id++) {
		Job *j = job(id, 1);
		ck_assert_int_eq(jobtable_add(&t, j), 0);
		j->finished_usec = 1000 * id; /* finished at 1000, 2000, 3000 */
		jobtable_finish(&t, j);
	}
	ck_assert_uint_eq(jobtable_expire(&t, 1099), 1100); /* none yet; the first at 1100 */
	ck_assert_uint_eq(dropped, 0);
	ck_assert_uint_eq(jobtable_expire(&t, 2100), 3100); /* the first two go */
	ck_assert_uint_eq(dropped, 2);
	ck_assert_ptr_null(jobtable_get(&t, 2));
	ck_assert_ptr_nonnull(jobtable_get(&t, 3));
	jobtable_set_retain_age(&t, 0); /* no limit: nothing expires */
	ck_assert_uint_eq(jobtable_expire(&t, UINT64_MAX / 2), 0);
	ck_assert_uint_eq(t.done_count, 1);
	jobtable_done(&t);
}
END_TEST

/* Jobs in flight per uid: charged on request, discharged when finished or
 * on request, counters gone at 0, unknown uids never counted. */
START_TEST(test_uid_counts)
{
	enum { UIDS = 200 }; /* more than 2 per initial bucket: forces growth */
	JobTable t;
	ck_assert_int_eq(jobtable_init(&t, 1000, UINT64_MAX), 0);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 1000), 0);

	Job *a = job(1, 2), *b = job(2, 2), *c = job(3, 2), *u = job(4, 2);
	a->uid = b->uid = 1000;
	c->uid = 0;
	ck_assert_uint_eq(u->uid, JOB_UID_UNKNOWN);
	for (Job **j = (Job *[]){ a, b, c, u, NULL }; *j; j++) {
		ck_assert_int_eq(jobtable_add(&t, *j), 0);
		ck_assert_int_eq(jobtable_charge(&t, *j), 0);
	}
	ck_assert_int_eq(jobtable_charge(&t, a), 0); /* twice: counted once */
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 1000), 2);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 0), 1);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, JOB_UID_UNKNOWN), 0);
	ck_assert(!u->charged);
	ck_assert_uint_eq(t.uid_count, 2);

	/* Finishing discharges; so does an explicit discharge, once. */
	jobtable_finish(&t, a);
	ck_assert(!a->charged);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 1000), 1);
	jobtable_remove(&t, b);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 1000), 1); /* removing is not discharging */
	jobtable_discharge(&t, b);
	jobtable_discharge(&t, b);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 1000), 0);
	ck_assert_uint_eq(t.uid_count, 1); /* uid 1000's counter is gone */
	job_free(b);

	/* A requeued job is charged again. */
	jobtable_unfinish(&t, a);
	ck_assert_int_eq(jobtable_charge(&t, a), 0);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 1000), 1);

	/* Many uids: every count stays exact through the buckets' growth. */
	Job *many[UIDS * 2];
	for (unsigned i = 0; i < UIDS * 2; i++) {
		many[i] = job(10 + i, 2);
		many[i]->uid = 5000 + i / 2;
		ck_assert_int_eq(jobtable_add(&t, many[i]), 0);
		ck_assert_int_eq(jobtable_charge(&t, many[i]), 0);
	}
	ck_assert_uint_eq(t.uid_count, 2 + UIDS);
	for (unsigned i = 0; i < UIDS; i++)
		ck_assert_uint_eq(jobtable_uid_jobs(&t, 5000 + i), 2);
	for (unsigned i = 0; i < UIDS * 2; i += 2)
		jobtable_finish(&t, many[i]);
	for (unsigned i = 0; i < UIDS; i++)
		ck_assert_uint_eq(jobtable_uid_jobs(&t, 5000 + i), 1);
	for (unsigned i = 1; i < UIDS * 2; i += 2)
		jobtable_finish(&t, many[i]);
	ck_assert_uint_eq(t.uid_count, 2);
	ck_assert_uint_eq(jobtable_uid_jobs(&t, 5000), 0);

	jobtable_finish(&t, a);
	jobtable_finish(&t, c);
	jobtable_finish(&t, u);
	ck_assert_uint_eq(t.uid_count, 0);
	jobtable_done(&t); /* frees the finished jobs (and, under ASan, shows no leak) */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("jobtable");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_lookup_order_and_growth);
	tcase_add_test(tc, test_retention_by_count_and_bytes);
	tcase_add_test(tc, test_keys);
	tcase_add_test(tc, test_retention_by_age);
	tcase_add_test(tc, test_uid_counts);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
