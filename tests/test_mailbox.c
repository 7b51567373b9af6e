/* Unit tests for daemon/mailbox.c, alone and fed by a real pipeline. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "mailbox.h"
#include "pipeline.h"
#include "testutil.h"
#include "util.h"

typedef struct Item {
	MailNode node;
	unsigned thread, seq;
} Item;

typedef struct Sink {
	unsigned expected, got;
	unsigned last_seq[8];
	unsigned order_errors;
	bool close_when_done;
	pthread_t loop_thread; /* must be the thread running callbacks */
	unsigned wrong_thread;
} Sink;

static void on_item(Mailbox *m, MailNode *node, void *userdata)
{
	Sink *s = userdata;
	Item *it = container_of(node, Item, node);
	if (!pthread_equal(pthread_self(), s->loop_thread))
		s->wrong_thread++;
	if (it->seq != s->last_seq[it->thread] + 1)
		s->order_errors++;
	s->last_seq[it->thread] = it->seq;
	s->got++;
	if (s->close_when_done && s->got == s->expected)
		mailbox_close(m, NULL);
}

typedef struct Poster {
	Mailbox *m;
	Item *items;
	unsigned thread, n;
} Poster;

static void *poster_main(void *arg)
{
	Poster *p = arg;
	for (unsigned i = 0; i < p->n; i++) {
		p->items[i] = (Item){ .thread = p->thread, .seq = i + 1 };
		mailbox_post(p->m, &p->items[i].node);
	}
	return NULL;
}

START_TEST(test_wakes_only_on_empty_to_nonempty)
{
	enum { N = 1000 };
	uv_loop_t loop;
	Mailbox m;
	Sink s = { .expected = N, .close_when_done = true, .loop_thread = pthread_self() };
	Item *items = calloc(N, sizeof(*items));
	pthread_t t;
	uint64_t posts, wakeups, batches;

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_int_eq(mailbox_init(&m, &loop, on_item, &s), 0);
	/* The loop is not running: all N posts land in one list, and only the
	 * first one, finding it empty, wakes the loop. */
	Poster p = { &m, items, 0, N };
	pthread_create(&t, NULL, poster_main, &p);
	pthread_join(t, NULL);
	mailbox_counters(&m, &posts, &wakeups, &batches);
	ck_assert_uint_eq(posts, N);
	ck_assert_uint_eq(wakeups, 1);
	ck_assert_uint_eq(batches, 0);

	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns once closed */
	ck_assert_uint_eq(s.got, N);
	ck_assert_uint_eq(s.order_errors, 0);
	ck_assert_uint_eq(s.wrong_thread, 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	free(items);
}
END_TEST

/* With prompt off, posts never wake the loop; turning it on delivers what
 * waits, and the next post to the empty list wakes the loop again. */
START_TEST(test_prompt_off_queues_silently)
{
	enum { N = 10 };
	uv_loop_t loop;
	Mailbox m;
	Sink s = { .expected = N + 1, .close_when_done = true, .loop_thread = pthread_self() };
	Item items[N + 1];
	uint64_t posts, wakeups;

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_int_eq(mailbox_init(&m, &loop, on_item, &s), 0);
	mailbox_set_prompt(&m, false);
	for (unsigned i = 0; i < N; i++) {
		items[i] = (Item){ .seq = i + 1 };
		mailbox_post(&m, &items[i].node);
	}
	mailbox_counters(&m, &posts, &wakeups, NULL);
	ck_assert_uint_eq(posts, N);
	ck_assert_uint_eq(wakeups, 0);
	ck_assert_int_ne(uv_run(&loop, UV_RUN_NOWAIT), 0); /* no wake-up: nothing delivered */
	ck_assert_uint_eq(s.got, 0);

	mailbox_flush(&m); /* the loop takes them when it wants */
	ck_assert_uint_eq(s.got, N);

	mailbox_set_prompt(&m, true);
	items[N] = (Item){ .seq = N + 1 };
	mailbox_post(&m, &items[N].node);
	mailbox_counters(&m, NULL, &wakeups, NULL);
	ck_assert_uint_eq(wakeups, 1);
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0); /* delivered, then closed */
	ck_assert_uint_eq(s.got, N + 1);
	ck_assert_uint_eq(s.order_errors, 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* Turning prompt on delivers what was queued while it was off. */
START_TEST(test_prompt_on_delivers_the_backlog)
{
	uv_loop_t loop;
	Mailbox m;
	Sink s = { .expected = 3, .close_when_done = false, .loop_thread = pthread_self() };
	Item items[3];
	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_int_eq(mailbox_init(&m, &loop, on_item, &s), 0);
	mailbox_set_prompt(&m, false);
	for (unsigned i = 0; i < 3; i++) {
		items[i] = (Item){ .seq = i + 1 };
		mailbox_post(&m, &items[i].node);
	}
	ck_assert_uint_eq(s.got, 0);
	mailbox_set_prompt(&m, true);
	ck_assert_uint_eq(s.got, 3);
	mailbox_close(&m, NULL);
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(test_many_posters_nothing_lost_order_kept)
{
	enum { T = 4, N = 20000 };
	uv_loop_t loop;
	Mailbox m;
	Sink s = { .expected = T * N, .close_when_done = true, .loop_thread = pthread_self() };
	Item *items = calloc(T * N, sizeof(*items));
	pthread_t t[T];
	Poster p[T];

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_int_eq(mailbox_init(&m, &loop, on_item, &s), 0);
	for (unsigned i = 0; i < T; i++) {
		p[i] = (Poster){ &m, items + i * N, i, N };
		pthread_create(&t[i], NULL, poster_main, &p[i]);
	}
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (unsigned i = 0; i < T; i++)
		pthread_join(t[i], NULL);
	ck_assert_uint_eq(s.got, T * N);
	ck_assert_uint_eq(s.order_errors, 0);
	ck_assert_uint_eq(s.wrong_thread, 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	free(items);
}
END_TEST

/* The daemon's shape: workers end jobs into the mailbox, the loop thread
 * receives and frees them. */
typedef struct Daemonish {
	Mailbox m;
	Pipeline *p;
	unsigned n, done, failed;
	unsigned ended[2001];
	pthread_t loop_thread;
	unsigned wrong_thread;
} Daemonish;

static void end_to_mailbox(void *userdata, Job *job)
{
	Daemonish *d = userdata;
	mailbox_post(&d->m, &job->node);
}

static void on_job(Mailbox *m, MailNode *node, void *userdata)
{
	Daemonish *d = userdata;
	Job *job = container_of(node, Job, node);
	if (!pthread_equal(pthread_self(), d->loop_thread))
		d->wrong_thread++;
	d->ended[job->id]++;
	if (job->state == JOB_DONE)
		d->done++;
	else
		d->failed++;
	job_free(job);
	if (d->done + d->failed == d->n)
		uv_stop(m->async.loop);
}

static void *submitter_main(void *arg)
{
	Daemonish *d = arg;
	for (uint64_t id = 1; id <= d->n; id++) {
		Job *j;
		char payload[32];
		int n = snprintf(payload, sizeof(payload), "{\"id\":%u}", (unsigned)id);
		job_new(id, payload, (size_t)n, &j);
		pipeline_submit(d->p, j);
	}
	return NULL;
}

START_TEST(test_pipeline_ends_jobs_on_the_loop_thread)
{
	uv_loop_t loop;
	Daemonish *d = calloc(1, sizeof(*d));
	d->n = 2000;
	d->loop_thread = pthread_self();
	Action *a;
	pthread_t t;
	const PipelineHooks hooks = { .on_end = end_to_mailbox };

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_int_eq(mailbox_init(&d->m, &loop, on_job, d), 0);
	ck_assert_int_eq(pipeline_new("p", &hooks, d, &d->p), 0);
	ck_assert_int_eq(action_parse("noop", &a, NULL), 0);
	ck_assert_int_eq(pipeline_add_stage(d->p, "one", 2, 8, a), 0);
	ck_assert_int_eq(action_parse("fail:10", &a, NULL), 0);
	ck_assert_int_eq(pipeline_add_stage(d->p, "two", 3, 8, a), 0);
	ck_assert_int_eq(pipeline_start(d->p), 0);
	pthread_create(&t, NULL, submitter_main, d);

	uv_run(&loop, UV_RUN_DEFAULT); /* until every job has ended */
	pthread_join(t, NULL);
	/* Shutdown order: join every worker, then close the mailbox, then let
	 * the loop finish closing handles. */
	pipeline_free(d->p);
	mailbox_close(&d->m, NULL);
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);

	ck_assert_uint_eq(d->done, 1800);
	ck_assert_uint_eq(d->failed, 200);
	ck_assert_uint_eq(d->wrong_thread, 0);
	for (unsigned id = 1; id <= d->n; id++)
		ck_assert_uint_eq(d->ended[id], 1);
	free(d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mailbox");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_wakes_only_on_empty_to_nonempty);
	tcase_add_test(tc, test_prompt_off_queues_silently);
	tcase_add_test(tc, test_prompt_on_delivers_the_backlog);
	tcase_add_test(tc, test_many_posters_nothing_lost_order_kept);
	tcase_add_test(tc, test_pipeline_ends_jobs_on_the_loop_thread);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
