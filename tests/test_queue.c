/* Unit tests for daemon/queue.c. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "queue.h"
#include "testutil.h"

/* Items are small integers cast to pointers; 0 is never used (NULL). */
#define ITEM(n) ((void *)(uintptr_t)(n))
#define NUM(p)  ((uintptr_t)(p))

static QueueStats stats(Queue *q)
{
	QueueStats s;
	queue_stats(q, &s);
	return s;
}

START_TEST(test_new_limits)
{
	Queue *q;
	ck_assert_int_eq(queue_new(0, &q), -EINVAL);
	ck_assert_int_eq(queue_new(QUEUE_CAPACITY_MAX + 1, &q), -EINVAL);
	ck_assert_int_eq(queue_new(QUEUE_CAPACITY_MAX, &q), 0);
	ck_assert_uint_eq(queue_capacity(q), QUEUE_CAPACITY_MAX);
	queue_free(q, NULL);
	ck_assert_int_eq(queue_new(1, &q), 0);
	queue_free(q, NULL);
	queue_free(NULL, NULL);
}
END_TEST

START_TEST(test_fifo_single_thread)
{
	Queue *q;
	ck_assert_int_eq(queue_new(8, &q), 0);
	/* Wrap around the ring several times. */
	for (unsigned round = 0; round < 5; round++) {
		for (unsigned i = 1; i <= 5; i++)
			ck_assert_int_eq(queue_put(q, ITEM(round * 10 + i)), 0);
		for (unsigned i = 1; i <= 5; i++) {
			void *item;
			ck_assert_int_eq(queue_get(q, &item, NULL), 0);
			ck_assert_uint_eq(NUM(item), round * 10 + i);
			queue_task_done(q);
		}
	}
	ck_assert_uint_eq(queue_length(q), 0);
	ck_assert_uint_eq(stats(q).unfinished, 0);
	queue_free(q, NULL);
}
END_TEST

/* MPMC: each of P producers puts 1..N tagged with its number; every consumer
 * must see each producer's items in increasing order, and all items arrive
 * exactly once. */
#define P 4
#define C 4
#define N 20000

typedef struct {
	Queue *q;
	unsigned id;
	_Atomic unsigned *seen; /* [P][N+1] */
	unsigned got;
	int order_errors;
} MpmcArg;

static void *mpmc_producer(void *arg)
{
	MpmcArg *a = arg;
	for (unsigned i = 1; i <= N; i++)
		queue_put(a->q, ITEM((uintptr_t)a->id << 32 | i));
	return NULL;
}

static void *mpmc_consumer(void *arg)
{
	MpmcArg *a = arg;
	unsigned last[P] = { 0 };
	void *item;
	while (queue_get(a->q, &item, NULL) == 0) {
		unsigned p = (unsigned)(NUM(item) >> 32), i = (unsigned)(NUM(item) & 0xffffffffu);
		if (i <= last[p])
			a->order_errors++;
		last[p] = i;
		atomic_fetch_add(&a->seen[p * (N + 1) + i], 1);
		a->got++;
		queue_task_done(a->q);
	}
	return NULL;
}

START_TEST(test_fifo_mpmc)
{
	Queue *q;
	ck_assert_int_eq(queue_new(16, &q), 0);
	_Atomic unsigned *seen = calloc(P * (N + 1), sizeof(*seen));
	pthread_t pt[P], ct[C];
	MpmcArg pa[P], ca[C];

	for (unsigned i = 0; i < C; i++) {
		ca[i] = (MpmcArg){ .q = q, .seen = seen };
		pthread_create(&ct[i], NULL, mpmc_consumer, &ca[i]);
	}
	for (unsigned i = 0; i < P; i++) {
		pa[i] = (MpmcArg){ .q = q, .id = i };
		pthread_create(&pt[i], NULL, mpmc_producer, &pa[i]);
	}
	for (unsigned i = 0; i < P; i++)
		pthread_join(pt[i], NULL);
	queue_join(q);
	queue_close(q);
	unsigned total = 0;
	for (unsigned i = 0; i < C; i++) {
		pthread_join(ct[i], NULL);
		ck_assert_int_eq(ca[i].order_errors, 0);
		total += ca[i].got;
	}
	ck_assert_uint_eq(total, P * N);
	for (unsigned p = 0; p < P; p++)
		for (unsigned i = 1; i <= N; i++)
			ck_assert_uint_eq(seen[p * (N + 1) + i], 1);
	free(seen);
	queue_free(q, NULL);
}
END_TEST

START_TEST(test_try_put)
{
	Queue *q;
	void *item;
	ck_assert_int_eq(queue_new(2, &q), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(1)), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(2)), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(3)), -EAGAIN);
	ck_assert_uint_eq(queue_length(q), 2);
	ck_assert_uint_eq(stats(q).unfinished, 2); /* the refused item is not counted */
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 1);
	ck_assert_int_eq(queue_try_put(q, ITEM(3)), 0);
	queue_close(q);
	ck_assert_int_eq(queue_try_put(q, ITEM(4)), -EPIPE);
	queue_free(q, NULL);
}
END_TEST

static void count_room(void *userdata)
{
	atomic_fetch_add((_Atomic unsigned *)userdata, 1);
}

/* The event loop's way to learn that a full queue has room again. */
START_TEST(test_room_callback)
{
	Queue *q;
	void *item;
	_Atomic unsigned calls = 0;
	ck_assert_int_eq(queue_new(4, &q), 0);
	queue_set_room_callback(q, count_room, &calls);
	for (uintptr_t i = 1; i <= 4; i++)
		ck_assert_int_eq(queue_try_put_arm(q, ITEM(i)), 0);
	ck_assert_int_eq(queue_try_put_arm(q, ITEM(5)), -EAGAIN);
	ck_assert_uint_eq(calls, 0);

	/* Called once, when the queue drains to its low-water mark (half). */
	ck_assert_int_eq(queue_get(q, &item, NULL), 0); /* 3 left */
	ck_assert_uint_eq(calls, 0);
	ck_assert_int_eq(queue_get(q, &item, NULL), 0); /* 2 left: the mark */
	ck_assert_uint_eq(calls, 1);
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(calls, 1); /* disarmed */
	ck_assert_uint_eq(stats(q).room_calls, 1);

	/* A plain try_put does not arm. */
	ck_assert_int_eq(queue_try_put(q, ITEM(6)), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(7)), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(8)), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(9)), -EAGAIN);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(calls, 1);

	/* Armed, then closed: the producer learns of the close. */
	for (uintptr_t i = 1; i <= 4; i++)
		ck_assert_int_eq(queue_try_put_arm(q, ITEM(i)), 0);
	ck_assert_int_eq(queue_try_put_arm(q, ITEM(5)), -EAGAIN);
	queue_close(q);
	ck_assert_uint_eq(calls, 2);
	queue_close(q);
	ck_assert_uint_eq(calls, 2); /* once */
	queue_free(q, NULL);
}
END_TEST

/* A producer that counts each put it completed. */
typedef struct {
	Queue *q;
	unsigned n;
	_Atomic unsigned progress;
	int last_error;
} Producer;

static void *producer_main(void *arg)
{
	Producer *p = arg;
	for (unsigned i = 1; i <= p->n; i++) {
		int r = queue_put(p->q, ITEM(i));
		if (r < 0) {
			p->last_error = r;
			break;
		}
		atomic_fetch_add(&p->progress, 1);
	}
	return NULL;
}

START_TEST(test_put_blocks_exactly_at_capacity)
{
	enum { CAP = 6, LOW = CAP / 2, REFILL = CAP - LOW, TOTAL = CAP + REFILL + 2 };
	Queue *q;
	pthread_t t;
	void *item;
	ck_assert_int_eq(queue_new(CAP, &q), 0);
	Producer p = { .q = q, .n = TOTAL };
	pthread_create(&t, NULL, producer_main, &p);

	/* The producer blocks for the first time with exactly CAP items in. */
	WAIT_UNTIL(stats(q).put_waits == 1);
	ck_assert_uint_eq(atomic_load(&p.progress), CAP);
	ck_assert_uint_eq(queue_length(q), CAP);

	/* Draining to the low-water mark wakes it; it refills the queue to
	 * exactly CAP again and blocks a second time, having put REFILL more. */
	for (unsigned k = 1; k <= REFILL; k++) {
		ck_assert_int_eq(queue_get(q, &item, NULL), 0);
		ck_assert_uint_eq(NUM(item), k);
		/* Only the get that reaches the low-water mark wakes the putter. */
		ck_assert_uint_eq(stats(q).put_wakes, k == REFILL ? 1 : 0);
	}
	WAIT_UNTIL(stats(q).put_waits == 2 && atomic_load(&p.progress) == CAP + REFILL);
	ck_assert_uint_eq(queue_length(q), CAP);

	/* A try_put is refused while full even though a putter waits, and
	 * succeeds at the first free slot (the low-water mark is for sleepers). */
	ck_assert_int_eq(queue_try_put(q, ITEM(1000)), -EAGAIN);

	/* The rest completes once there is room; order is kept throughout. */
	for (unsigned k = REFILL + 1; k <= TOTAL; k++) {
		ck_assert_int_eq(queue_get(q, &item, NULL), 0);
		ck_assert_uint_eq(NUM(item), k);
	}
	pthread_join(t, NULL);
	ck_assert_uint_eq(atomic_load(&p.progress), TOTAL);
	ck_assert_int_eq(p.last_error, 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(1000)), 0);
	queue_free(q, NULL);
}
END_TEST

typedef struct {
	Queue *q;
	int result;
	void *item;
	unsigned got;
} Getter;

static void *getter_main(void *arg)
{
	Getter *g = arg;
	g->result = queue_get(g->q, &g->item, NULL);
	return NULL;
}

/* Gets until the queue reports closed; counts items. */
static void *drainer_main(void *arg)
{
	Getter *g = arg;
	void *item;
	while ((g->result = queue_get(g->q, &item, NULL)) == 0)
		g->got++;
	return NULL;
}

START_TEST(test_close_wakes_blocked_getters)
{
	enum { G = 3 };
	Queue *q;
	pthread_t t[G];
	Getter g[G];
	ck_assert_int_eq(queue_new(4, &q), 0);
	for (unsigned i = 0; i < G; i++) {
		g[i] = (Getter){ .q = q, .result = 1 };
		pthread_create(&t[i], NULL, getter_main, &g[i]);
	}
	WAIT_UNTIL(stats(q).get_waits == G); /* all three blocked on the empty queue */
	queue_close(q);
	for (unsigned i = 0; i < G; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(g[i].result, -EPIPE);
	}
	queue_free(q, NULL);
}
END_TEST

START_TEST(test_close_wakes_blocked_putters_getters_still_receive)
{
	enum { CAP = 3 };
	Queue *q;
	pthread_t pt[2], gt;
	ck_assert_int_eq(queue_new(CAP, &q), 0);
	for (unsigned i = 1; i <= CAP; i++)
		ck_assert_int_eq(queue_put(q, ITEM(i)), 0);

	Producer p[2] = { { .q = q, .n = 1 }, { .q = q, .n = 1 } };
	for (unsigned i = 0; i < 2; i++)
		pthread_create(&pt[i], NULL, producer_main, &p[i]);
	WAIT_UNTIL(stats(q).put_waits == 2);
	queue_close(q);
	for (unsigned i = 0; i < 2; i++) {
		pthread_join(pt[i], NULL);
		ck_assert_int_eq(p[i].last_error, -EPIPE);
		ck_assert_uint_eq(atomic_load(&p[i].progress), 0);
	}

	/* What was queued before close is still delivered, in order, then -EPIPE. */
	Getter g = { .q = q };
	pthread_create(&gt, NULL, drainer_main, &g);
	pthread_join(gt, NULL);
	ck_assert_uint_eq(g.got, CAP);
	ck_assert_int_eq(g.result, -EPIPE);
	ck_assert_int_eq(queue_put(q, ITEM(9)), -EPIPE);
	queue_free(q, NULL);
}
END_TEST

typedef struct {
	Queue *q;
	_Atomic int returned;
} Joiner;

static void *joiner_main(void *arg)
{
	Joiner *j = arg;
	queue_join(j->q);
	atomic_store(&j->returned, 1);
	return NULL;
}

START_TEST(test_join_returns_exactly_after_last_task_done)
{
	Queue *q;
	pthread_t t;
	void *item;
	ck_assert_int_eq(queue_new(4, &q), 0);
	queue_join(q); /* nothing unfinished: returns at once */

	for (unsigned i = 1; i <= 3; i++)
		ck_assert_int_eq(queue_put(q, ITEM(i)), 0);
	Joiner j = { .q = q };
	pthread_create(&t, NULL, joiner_main, &j);
	for (unsigned i = 1; i <= 3; i++)
		ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(stats(q).unfinished, 3); /* got is not done */

	queue_task_done(q);
	queue_task_done(q);
	/* The joiner is (still) blocked: it has entered its wait and not returned. */
	WAIT_UNTIL(stats(q).join_waits >= 1);
	ck_assert_uint_eq(stats(q).unfinished, 1);
	ck_assert_int_eq(atomic_load(&j.returned), 0);

	queue_task_done(q);
	pthread_join(t, NULL);
	ck_assert_int_eq(atomic_load(&j.returned), 1);
	ck_assert_uint_eq(stats(q).unfinished, 0);
	queue_free(q, NULL);
}
END_TEST

typedef struct {
	Queue *q;
	unsigned seen;
	int result;
} InterruptGetter;

static void *interrupt_getter_main(void *arg)
{
	InterruptGetter *g = arg;
	void *item;
	g->result = queue_get(g->q, &item, &g->seen);
	return NULL;
}

START_TEST(test_interrupt)
{
	Queue *q;
	pthread_t t;
	void *item;
	ck_assert_int_eq(queue_new(4, &q), 0);

	/* A blocked getter returns -EINTR. */
	InterruptGetter g = { .q = q, .result = 1 };
	pthread_create(&t, NULL, interrupt_getter_main, &g);
	WAIT_UNTIL(stats(q).get_waits == 1);
	queue_interrupt(q);
	pthread_join(t, NULL);
	ck_assert_int_eq(g.result, -EINTR);

	/* It has now seen that interrupt: the next get takes items normally. */
	ck_assert_int_eq(queue_put(q, ITEM(7)), 0);
	ck_assert_int_eq(queue_get(q, &item, &g.seen), 0);
	ck_assert_uint_eq(NUM(item), 7);

	/* An interrupt also reaches a getter that calls later, ahead of items;
	 * getters that do not ask for interrupts are not affected. */
	ck_assert_int_eq(queue_put(q, ITEM(8)), 0);
	queue_interrupt(q);
	ck_assert_int_eq(queue_get(q, &item, &g.seen), -EINTR);
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 8);
	queue_free(q, NULL);
}
END_TEST

static unsigned freed;
static void count_free(void *p)
{
	(void)p;
	freed++;
}

START_TEST(test_free_passes_leftovers)
{
	Queue *q;
	void *item;
	ck_assert_int_eq(queue_new(4, &q), 0);
	for (unsigned i = 1; i <= 4; i++)
		ck_assert_int_eq(queue_put(q, ITEM(i)), 0);
	ck_assert_int_eq(queue_get(q, &item, NULL), 0); /* head moves: leftovers wrap */
	ck_assert_int_eq(queue_put(q, ITEM(5)), 0);
	freed = 0;
	queue_free(q, count_free);
	ck_assert_uint_eq(freed, 4);
}
END_TEST

/* ---- delayed items (retries) ---- */

static uint64_t mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

START_TEST(test_delayed_not_handed_out_before_due)
{
	Queue *q;
	void *item;
	ck_assert_int_eq(queue_new(8, &q), 0);
	uint64_t due = mono_now() + 200 * 1000;
	ck_assert_int_eq(queue_put_delayed(q, ITEM(1), due), 0);
	ck_assert_int_eq(queue_put(q, ITEM(2)), 0);
	ck_assert_uint_eq(stats(q).delayed, 1);
	ck_assert_uint_eq(stats(q).unfinished, 2);
	/* The ring item comes first: the delayed one is not due. */
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 2);
	/* Then the getter sleeps until it is due, never less. */
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 1);
	ck_assert_uint_ge(mono_now(), due);
	ck_assert_uint_eq(stats(q).delayed, 0);
	queue_free(q, NULL);
}
END_TEST

START_TEST(test_delayed_due_items_first_in_due_order)
{
	Queue *q;
	void *item;
	ck_assert_int_eq(queue_new(8, &q), 0);
	ck_assert_int_eq(queue_put(q, ITEM(1)), 0);
	uint64_t now = mono_now();
	ck_assert_int_eq(queue_put_delayed(q, ITEM(12), now - 10), 0);
	ck_assert_int_eq(queue_put_delayed(q, ITEM(11), now - 20), 0);
	ck_assert_int_eq(queue_put_delayed(q, ITEM(13), now - 5), 0);
	for (unsigned want = 11; want <= 13; want++) {
		ck_assert_int_eq(queue_get(q, &item, NULL), 0);
		ck_assert_uint_eq(NUM(item), want);
	}
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 1);
	queue_free(q, NULL);
}
END_TEST

START_TEST(test_delayed_counts_against_capacity)
{
	Queue *q;
	void *item;
	ck_assert_int_eq(queue_new(2, &q), 0);
	ck_assert_int_eq(queue_put_delayed(q, ITEM(9), mono_now() + 3600u * 1000000u), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(1)), 0);
	ck_assert_int_eq(queue_try_put(q, ITEM(2)), -EAGAIN);
	/* Never refused for room: a worker puts back the job it holds. */
	ck_assert_int_eq(queue_put_delayed(q, ITEM(10), mono_now() + 3600u * 1000000u), 0);
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 1);
	ck_assert_int_eq(queue_try_put(q, ITEM(2)), -EAGAIN); /* 2 delayed: still full */
	ck_assert_uint_eq(stats(q).delayed, 2);
	queue_free(q, NULL);
}
END_TEST

static void *get_one(void *arg)
{
	void *item = NULL;
	ck_assert_int_eq(queue_get(arg, &item, NULL), 0);
	return item;
}

START_TEST(test_delayed_wakes_a_sleeping_getter)
{
	Queue *q;
	pthread_t t;
	ck_assert_int_eq(queue_new(4, &q), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, get_one, q), 0);
	WAIT_UNTIL(stats(q).get_waits == 1); /* asleep with no deadline */
	ck_assert_int_eq(queue_put_delayed(q, ITEM(7), mono_now() + 50 * 1000), 0);
	void *item;
	pthread_join(t, &item); /* hangs if the getter was not told to look again */
	ck_assert_uint_eq(NUM(item), 7);
	queue_free(q, NULL);
}
END_TEST

START_TEST(test_close_hands_out_delayed_items_first)
{
	Queue *q;
	void *item;
	ck_assert_int_eq(queue_new(4, &q), 0);
	uint64_t due = mono_now() + 100 * 1000;
	ck_assert_int_eq(queue_put_delayed(q, ITEM(3), due), 0);
	queue_close(q);
	ck_assert_int_eq(queue_put(q, ITEM(4)), -EPIPE);
	ck_assert_int_eq(queue_put_delayed(q, ITEM(5), due), 0); /* its own worker's retry */
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_ge(mono_now(), due);
	ck_assert_int_eq(queue_get(q, &item, NULL), -EPIPE);
	queue_free(q, NULL);
}
END_TEST

static bool is_odd(void *item, void *userdata)
{
	return NUM(item) % 2 == 1;
}

START_TEST(test_remove_if_takes_delayed_items)
{
	Queue *q;
	void *out[8], *item;
	ck_assert_int_eq(queue_new(8, &q), 0);
	uint64_t now = mono_now();
	for (unsigned i = 1; i <= 5; i++)
		ck_assert_int_eq(queue_put_delayed(q, ITEM(i), now - 100 + i), 0);
	ck_assert_int_eq(queue_put(q, ITEM(7)), 0);
	ck_assert_uint_eq(queue_remove_if(q, is_odd, NULL, out, 8), 4); /* 1 3 5 7 */
	ck_assert_uint_eq(stats(q).delayed, 2);
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 2); /* still in due order */
	ck_assert_int_eq(queue_get(q, &item, NULL), 0);
	ck_assert_uint_eq(NUM(item), 4);
	queue_free(q, NULL);
}
END_TEST

static void *get_until_closed(void *arg)
{
	void *item = NULL;
	return (void *)(intptr_t)queue_get(arg, &item, NULL);
}

/* A closed queue whose only (delayed) item is removed: the worker sleeping
 * until that item was due must wake and see the queue closed and empty,
 * not sleep on for an hour (a shutdown that stops retries hung on this). */
START_TEST(test_remove_if_wakes_a_getter_waiting_for_a_delayed_item)
{
	Queue *q;
	pthread_t t;
	void *out[1], *ret;
	ck_assert_int_eq(queue_new(4, &q), 0);
	ck_assert_int_eq(queue_put_delayed(q, ITEM(1), mono_now() + 3600u * 1000000u), 0);
	queue_close(q);
	ck_assert_int_eq(pthread_create(&t, NULL, get_until_closed, q), 0);
	WAIT_UNTIL(stats(q).get_waits == 1); /* asleep until the item is due */
	ck_assert_uint_eq(queue_remove_if(q, is_odd, NULL, out, 1), 1);
	pthread_join(t, &ret); /* hangs (for an hour) if the getter was not woken */
	ck_assert_int_eq((int)(intptr_t)ret, -EPIPE);
	queue_free(q, NULL);
}
END_TEST

static unsigned freed_delayed;
static void count_free_delayed(void *item)
{
	freed_delayed++;
}

START_TEST(test_free_passes_delayed_leftovers)
{
	Queue *q;
	ck_assert_int_eq(queue_new(64, &q), 0);
	for (unsigned i = 1; i <= 20; i++) /* past the heap's first allocation */
		ck_assert_int_eq(queue_put_delayed(q, ITEM(i), mono_now() + 3600u * 1000000u), 0);
	ck_assert_int_eq(queue_put(q, ITEM(99)), 0);
	freed_delayed = 0;
	queue_free(q, count_free_delayed);
	ck_assert_uint_eq(freed_delayed, 21);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("queue");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_new_limits);
	tcase_add_test(tc, test_fifo_single_thread);
	tcase_add_test(tc, test_fifo_mpmc);
	tcase_add_test(tc, test_try_put);
	tcase_add_test(tc, test_room_callback);
	tcase_add_test(tc, test_put_blocks_exactly_at_capacity);
	tcase_add_test(tc, test_close_wakes_blocked_getters);
	tcase_add_test(tc, test_close_wakes_blocked_putters_getters_still_receive);
	tcase_add_test(tc, test_join_returns_exactly_after_last_task_done);
	tcase_add_test(tc, test_interrupt);
	tcase_add_test(tc, test_free_passes_leftovers);
	suite_add_tcase(s, tc);
	tc = tcase("delayed");
	tcase_add_test(tc, test_delayed_not_handed_out_before_due);
	tcase_add_test(tc, test_delayed_due_items_first_in_due_order);
	tcase_add_test(tc, test_delayed_counts_against_capacity);
	tcase_add_test(tc, test_delayed_wakes_a_sleeping_getter);
	tcase_add_test(tc, test_close_hands_out_delayed_items_first);
	tcase_add_test(tc, test_remove_if_takes_delayed_items);
	tcase_add_test(tc, test_remove_if_wakes_a_getter_waiting_for_a_delayed_item);
	tcase_add_test(tc, test_free_passes_delayed_leftovers);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
