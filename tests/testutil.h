/* testutil.h — helpers shared by the Check suites.
 *
 * WAIT_UNTIL waits for a state another thread will reach (a counter, a
 * blocked waiter). It never asserts on elapsed time: a broken behaviour shows
 * as the state never being reached, which the test case's timeout turns into
 * a failure. */
#pragma once

#include <check.h>
#include <stdlib.h>
#include <time.h>

/* Hang guard for every test case, in seconds. Generous: sanitizer builds on
 * a loaded 2-core machine are slow, and no test measures speed. */
#define TEST_TIMEOUT 300

#define WAIT_UNTIL(cond)                                                                           \
	do {                                                                                       \
		while (!(cond)) {                                                                  \
			struct timespec ts_ = { 0, 100 * 1000 };                                   \
			nanosleep(&ts_, NULL);                                                     \
		}                                                                                  \
	} while (0)

/* Runs one suite (forked, as Check does by default) and returns the exit status. */
static inline int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static inline TCase *tcase(const char *name)
{
	TCase *tc = tcase_create(name);
	tcase_set_timeout(tc, TEST_TIMEOUT);
	return tc;
}
