/* Unit tests for daemon/jobtable.c: lookup, id order, retention. */
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

int main(void)
{
	Suite *s = suite_create("jobtable");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_lookup_order_and_growth);
	tcase_add_test(tc, test_retention_by_count_and_bytes);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
