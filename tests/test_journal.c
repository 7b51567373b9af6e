/* Unit tests for daemon/journal.c: round trip, sequence numbers, group commit,
 * close, refusing damaged or newer journals (without touching them), the
 * free-space floor, the WAL bound, stats, and a crash in the middle of a
 * transaction. Each test works in its own temporary directory. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crashpoint.h"
#include "journal.h"
#include "testutil.h"

static char dir[64];
static char path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_journal.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, JOURNAL_FILE);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static void teardown(void)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers --------------------------------------------------------- */

static Journal *open_ok(uint64_t min_free)
{
	JournalOptions opt = { .min_free_bytes = min_free };
	Journal *j = NULL;
	char err[512] = "";
	int r = journal_open(path, &opt, &j, err, sizeof(err));
	ck_assert_msg(r == 0, "journal_open: %d %s", r, err);
	return j;
}

static void wait_committed(Journal *j, uint64_t seq)
{
	ck_assert_uint_gt(seq, 0);
	WAIT_UNTIL(journal_committed(j) >= seq);
}

/* Waits until everything appended so far is committed and the writer's
 * chores after that commit (free-space measure, stats, checkpoint) are done.
 * Those come after on_commit, but before the writer takes its next batch: so
 * append a no-op (a delete of no row), wait for it, then wait for a second
 * one, which is alone in its batch. The stats then count the first no-op,
 * and the second one or not yet. */
static void settle(Journal *j)
{
	wait_committed(j, journal_delete(j, UINT64_C(1) << 62, false));
	wait_committed(j, journal_delete(j, UINT64_C(1) << 62, false));
}

/* A row with every field set, distinct per id. buf holds its strings. */
typedef struct RowBuf {
	char pipeline[32], stage[32], payload[64], key[32], error[32], stderr_tail[16], workdir[64];
} RowBuf;

static JournalJob full_row(uint64_t id, RowBuf *b)
{
	snprintf(b->pipeline, sizeof(b->pipeline), "pipe-%llu", (unsigned long long)id);
	snprintf(b->stage, sizeof(b->stage), "stage-%llu", (unsigned long long)id % 3);
	int plen = snprintf(b->payload, sizeof(b->payload), "{\"n\":%llu}", (unsigned long long)id);
	snprintf(b->key, sizeof(b->key), "key-%llu", (unsigned long long)id);
	snprintf(b->error, sizeof(b->error), "error %llu", (unsigned long long)id);
	/* Any bytes: a NUL in the middle, a byte that is not UTF-8. */
	memcpy(b->stderr_tail, "ab\0cd\377e", 7);
	b->stderr_tail[7] = '\0';
	snprintf(b->workdir, sizeof(b->workdir), "/var/lib/pipelined/work/%llu",
	         (unsigned long long)id);
	return (JournalJob){
		.id = id,
		.pipeline = b->pipeline,
		.stage = b->stage,
		.stage_index = (unsigned)(id % 3),
		.state = (JobState)(id % _JOB_STATE_MAX),
		.attempt = (unsigned)id + 1,
		.runs = (unsigned)id + 7,
		.payload = b->payload,
		.payload_len = (size_t)plen,
		.key = b->key,
		.error = b->error,
		.ran_program = id % 2,
		.timed_out = id % 2 == 0,
		.exit_status = id % 2 ? -1 : 3,
		.term_signal = id % 2 ? 9 : 0,
		.stderr_tail = b->stderr_tail,
		.stderr_len = 7,
		.workdir = b->workdir,
		.submitted_usec = 1700000000000000u + id,
		.started_usec = 1700000000100000u + id,
		.finished_usec = 1700000000200000u + id,
		.retry_at_usec = 1700000000300000u + id,
		/* Every uid but the unknown one fits: 0 (root) and the largest. */
		.uid = id % 3 == 0   ? 0
		       : id % 3 == 1 ? JOB_UID_UNKNOWN - 1
		                     : 1000 + (uint32_t)id,
	};
}

static JournalJob small_row(uint64_t id, const char *payload, size_t len)
{
	return (JournalJob){ .id = id,
		             .pipeline = "p",
		             .stage = "s",
		             .state = JOB_QUEUED,
		             .attempt = 1,
		             .payload = payload,
		             .payload_len = len };
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void assert_row_eq(const JournalJob *got, const JournalJob *want)
{
	ck_assert_uint_eq(got->id, want->id);
	ck_assert_str_eq(got->pipeline, want->pipeline);
	ck_assert_str_eq(got->stage, want->stage);
	ck_assert_uint_eq(got->stage_index, want->stage_index);
	JobState st = want->state == JOB_RUNNING ? JOB_QUEUED : want->state;
	ck_assert_int_eq(got->state, st);
	ck_assert_uint_eq(got->attempt, want->attempt);
	ck_assert_uint_eq(got->runs, want->runs);
	ck_assert_uint_eq(got->payload_len, want->payload_len);
	ck_assert(memcmp(got->payload, want->payload, want->payload_len) == 0);
	ck_assert_int_eq(got->payload[got->payload_len], '\0');
	ck_assert(str_eq(got->key, want->key));
	ck_assert(str_eq(got->error, want->error));
	ck_assert_int_eq(got->ran_program, want->ran_program);
	ck_assert_int_eq(got->timed_out, want->timed_out);
	ck_assert_int_eq(got->exit_status, want->exit_status);
	ck_assert_int_eq(got->term_signal, want->term_signal);
	ck_assert_uint_eq(got->stderr_len, want->stderr_len);
	if (want->stderr_tail) {
		ck_assert_ptr_nonnull(got->stderr_tail);
		ck_assert(memcmp(got->stderr_tail, want->stderr_tail, want->stderr_len) == 0);
		ck_assert_int_eq(got->stderr_tail[got->stderr_len], '\0');
	} else {
		ck_assert_ptr_null(got->stderr_tail);
	}
	ck_assert(str_eq(got->workdir, want->workdir));
	ck_assert_uint_eq(got->submitted_usec, want->submitted_usec);
	ck_assert_uint_eq(got->started_usec, want->started_usec);
	ck_assert_uint_eq(got->finished_usec, want->finished_usec);
	ck_assert_uint_eq(got->uid, want->uid);
	ck_assert_uint_eq(got->retry_at_usec, want->retry_at_usec);
}

/* Collects the ids journal_load reports, in order. */
typedef struct Ids {
	uint64_t *ids;
	size_t n, alloc;
} Ids;

static int collect_id(void *ud, const JournalJob *row)
{
	Ids *ids = ud;
	if (ids->n == ids->alloc) {
		ids->alloc = ids->alloc ? ids->alloc * 2 : 64;
		ids->ids = realloc(ids->ids, ids->alloc * sizeof(*ids->ids));
		ck_assert_ptr_nonnull(ids->ids);
	}
	ids->ids[ids->n++] = row->id;
	return 0;
}

/* Reopens the journal and loads it: the ids in *ids (caller frees ids->ids),
 * the next id returned. */
static uint64_t reload(Ids *ids)
{
	Journal *j = open_ok(0);
	*ids = (Ids){ 0 };
	uint64_t next_id = 0;
	char err[512] = "";
	int r = journal_load(j, collect_id, ids, &next_id, err, sizeof(err));
	ck_assert_msg(r == 0, "journal_load: %d %s", r, err);
	ck_assert_int_eq(journal_close(j), 0);
	return next_id;
}

static char *read_file(const char *p, size_t *ret_len)
{
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	char *buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		ck_assert_int_gt(n, 0);
		got += (size_t)n;
	}
	close(fd);
	*ret_len = got;
	return buf;
}

/* journal_open must fail with want, leaving the file byte for byte as it was. */
static void assert_refused(int want, const char *msg_part)
{
	size_t before_len, after_len;
	char *before = read_file(path, &before_len);
	Journal *j = NULL;
	char err[512] = "";
	int r = journal_open(path, NULL, &j, err, sizeof(err));
	ck_assert_msg(r == want, "journal_open returned %d (%s), want %d", r, err, want);
	ck_assert_ptr_null(j);
	ck_assert_msg(strstr(err, path) && strstr(err, msg_part), "message: %s", err);
	ck_assert_msg(!strchr(err, '\n'), "message on more than one line: %s", err);
	char *after = read_file(path, &after_len);
	ck_assert_uint_eq(after_len, before_len);
	ck_assert_msg(memcmp(before, after, before_len) == 0, "the refused file was changed");
	free(before);
	free(after);
	/* And again: refusing twice gives the same answer (nothing was "repaired"). */
	r = journal_open(path, NULL, &j, err, sizeof(err));
	ck_assert_int_eq(r, want);
}

static sqlite3_int64 raw_query_int(const char *sql)
{
	sqlite3 *db;
	ck_assert_int_eq(
	        sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
	        SQLITE_OK);
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	sqlite3_int64 v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	return v;
}

static void raw_exec(const char *sql)
{
	sqlite3 *db;
	ck_assert_int_eq(
	        sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
	        SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

/* ---- round trip ------------------------------------------------------ */

typedef struct Expect {
	JournalJob rows[8];
	size_t n, seen;
} Expect;

static int check_row(void *ud, const JournalJob *row)
{
	Expect *e = ud;
	ck_assert_uint_lt(e->seen, e->n);
	assert_row_eq(row, &e->rows[e->seen]);
	e->seen++;
	return 0;
}

START_TEST(test_roundtrip)
{
	Journal *j = open_ok(0);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	/* Ids out of order: load reports them in id order. All states appear
	 * (id % _JOB_STATE_MAX), JOB_RUNNING among them. */
	static const uint64_t order[] = { 5, 2, 6, 1, 4, 3 };
	RowBuf bufs[7];
	Expect e = { .n = 6 };
	uint64_t last = 0;
	for (size_t i = 0; i < 6; i++) {
		uint64_t id = order[i];
		JournalJob row = full_row(id, &bufs[id]);
		last = journal_put(j, &row, true, false);
		ck_assert_uint_gt(last, 0);
		e.rows[id - 1] = row;
	}
	ck_assert_int_eq(e.rows[0].state, JOB_RUNNING); /* id 1: loads as queued */
	/* A row with no optional fields at all (NULL strings, empty stderr). */
	JournalJob bare = small_row(7, "", 0);
	e.rows[6] = bare;
	e.n = 7;
	ck_assert_uint_gt(journal_put(j, &bare, false, false), last);
	ck_assert_int_eq(journal_close(j), 0);

	ck_assert_int_eq(raw_query_int("PRAGMA user_version"), JOURNAL_SCHEMA_VERSION);
	/* A running job is on disk as queued (the file is read by other tools). */
	ck_assert_int_eq(raw_query_int("SELECT count(*) FROM jobs WHERE state = 'running'"), 0);
	ck_assert_int_eq(raw_query_int("SELECT count(*) FROM jobs WHERE state = 'queued'"), 3);
	/* The header's file format bytes are 2/2 in WAL mode. */
	size_t len;
	char *bytes = read_file(path, &len);
	ck_assert_uint_ge(len, 100);
	ck_assert_int_eq(bytes[18], 2);
	ck_assert_int_eq(bytes[19], 2);
	free(bytes);
	/* Clean close: no WAL left behind. */
	char wal[160];
	snprintf(wal, sizeof(wal), "%s-wal", path);
	ck_assert_int_ne(access(wal, F_OK), 0);

	j = open_ok(0);
	uint64_t next_id = 0;
	char err[256];
	ck_assert_int_eq(journal_load(j, check_row, &e, &next_id, err, sizeof(err)), 0);
	ck_assert_uint_eq(e.seen, 7);
	ck_assert_uint_eq(next_id, 8);
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

static int stop_at_second(void *ud, const JournalJob *row)
{
	int *n = ud;
	return ++*n == 2 ? 42 : 0;
}

START_TEST(test_delete_and_next_id)
{
	Journal *j = open_ok(0);
	uint64_t next_id = 0;
	char err[256];
	Ids ids = { 0 };
	ck_assert_int_eq(journal_load(j, collect_id, &ids, &next_id, err, sizeof(err)), 0);
	ck_assert_uint_eq(ids.n, 0);
	ck_assert_uint_eq(next_id, 1);
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	for (uint64_t id = 1; id <= 5; id++) {
		JournalJob row = small_row(id, "{}", 2);
		ck_assert_uint_gt(journal_put(j, &row, true, false), 0);
	}
	settle(j);
	/* The largest id goes in a later transaction than its put. */
	ck_assert_uint_gt(journal_delete(j, 5, false), 0);
	ck_assert_uint_gt(journal_delete(j, 2, true), 0);
	ck_assert_int_eq(journal_close(j), 0);

	next_id = reload(&ids);
	ck_assert_uint_eq(ids.n, 3);
	ck_assert_uint_eq(ids.ids[0], 1);
	ck_assert_uint_eq(ids.ids[1], 3);
	ck_assert_uint_eq(ids.ids[2], 4);
	ck_assert_uint_eq(next_id, 6); /* 5 was deleted; it is not reused */
	free(ids.ids);

	/* Across a reopen too: the largest id, 4, deleted after a restart
	 * (when the journal knew 5 only from meta), and 7 put then deleted. */
	j = open_ok(0);
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	JournalJob r7 = small_row(7, "{}", 2);
	ck_assert_uint_gt(journal_put(j, &r7, true, false), 0);
	ck_assert_int_eq(journal_close(j), 0); /* commits it (no settle: it writes meta) */
	j = open_ok(0); /* meta says 6, the rows 8 */
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	ck_assert_uint_gt(journal_delete(j, 7, false), 0);
	ck_assert_int_eq(journal_close(j), 0);
	next_id = reload(&ids);
	ck_assert_uint_eq(ids.n, 3);
	ck_assert_uint_eq(next_id, 8);
	free(ids.ids);

	/* A callback's non-zero return stops the load and is returned. */
	j = open_ok(0);
	int n = 0;
	ck_assert_int_eq(journal_load(j, stop_at_second, &n, &next_id, err, sizeof(err)), 42);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

/* ---- sequence numbers and on_commit ---------------------------------- */

typedef struct CommitSeen {
	Journal *j;
	_Atomic uint64_t max_committed; /* journal_committed as on_commit saw it */
	atomic_uint calls;
} CommitSeen;

static void on_commit_record(void *ud)
{
	CommitSeen *cs = ud;
	uint64_t c = journal_committed(cs->j);
	if (c > atomic_load(&cs->max_committed))
		atomic_store(&cs->max_committed, c);
	atomic_fetch_add(&cs->calls, 1);
}

START_TEST(test_committed_and_seq)
{
	CommitSeen cs = { 0 };
	Journal *j = cs.j = open_ok(0);
	ck_assert_uint_eq(journal_committed(j), 0);
	uint64_t prev = 0;
	for (uint64_t id = 1; id <= 50; id++) {
		JournalJob row = small_row(id, "{}", 2);
		uint64_t s =
		        id % 3 ? journal_put(j, &row, false, id % 2) : journal_delete(j, id, false);
		ck_assert_uint_gt(s, prev);
		prev = s;
	}
	/* Not started: nothing is committed yet. */
	ck_assert_uint_eq(journal_committed(j), 0);
	ck_assert_int_eq(journal_start(j, on_commit_record, &cs), 0);
	/* When on_commit runs, the batch's last number is already published. */
	WAIT_UNTIL(atomic_load(&cs.max_committed) >= prev);
	ck_assert_uint_ge(journal_committed(j), prev);
	ck_assert_uint_ge(atomic_load(&cs.calls), 1);

	JournalJob row = small_row(60, "{}", 2);
	uint64_t s = journal_put(j, &row, false, false);
	ck_assert_uint_gt(s, prev);
	WAIT_UNTIL(atomic_load(&cs.max_committed) >= s);
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

/* ---- group commit ------------------------------------------------------ */

enum { GC_THREADS = 8, GC_PUTS = 2000 };

typedef struct Putter {
	Journal *j;
	unsigned index;
} Putter;

static void *putter_main(void *arg)
{
	Putter *p = arg;
	char payload[64];
	uint64_t prev = 0;
	for (unsigned i = 0; i < GC_PUTS; i++) {
		uint64_t id = (uint64_t)p->index * GC_PUTS + i + 1;
		int len =
		        snprintf(payload, sizeof(payload), "{\"id\":%llu}", (unsigned long long)id);
		JournalJob row = small_row(id, payload, (size_t)len);
		uint64_t s = journal_put(p->j, &row, true, true);
		ck_assert_uint_gt(s, prev); /* in one thread's append order */
		prev = s;
	}
	return NULL;
}

START_TEST(test_group_commit)
{
	Journal *j = open_ok(0);
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	pthread_t t[GC_THREADS];
	Putter p[GC_THREADS];
	for (unsigned i = 0; i < GC_THREADS; i++) {
		p[i] = (Putter){ j, i };
		ck_assert_int_eq(pthread_create(&t[i], NULL, putter_main, &p[i]), 0);
	}
	for (unsigned i = 0; i < GC_THREADS; i++)
		pthread_join(t[i], NULL);
	settle(j);
	JournalStats s;
	journal_stats(j, &s);
	ck_assert_uint_ge(s.changes, GC_THREADS * GC_PUTS + 1);
	ck_assert_uint_le(s.changes, GC_THREADS * GC_PUTS + 2);
	ck_assert_uint_eq(s.puts_new, GC_THREADS * GC_PUTS);
	/* Group commit: batches of more than one change. */
	ck_assert_uint_lt(s.commits, s.changes);
	ck_assert_int_eq(journal_close(j), 0);

	Ids ids;
	ck_assert_uint_eq(reload(&ids), GC_THREADS * GC_PUTS + 1);
	ck_assert_uint_eq(ids.n, GC_THREADS * GC_PUTS);
	for (size_t i = 0; i < ids.n; i++)
		ck_assert_uint_eq(ids.ids[i], i + 1);
	free(ids.ids);
}
END_TEST

/* ---- backpressure --------------------------------------------------- */

typedef struct Blocked {
	Journal *j;
	JournalJob row;
	_Atomic uint64_t seq;
	atomic_bool done;
} Blocked;

static void *blocked_put(void *arg)
{
	Blocked *b = arg;
	atomic_store(&b->seq, journal_put(b->j, &b->row, false, true));
	atomic_store(&b->done, true);
	return NULL;
}

/* The writer is not started, so nothing drains: a may_block put must wait
 * once the limit is reached, and go through when the writer takes the FIFO. */
static void check_blocks_until_start(Journal *j)
{
	Blocked b = { .j = j, .row = small_row(100000, "{}", 2) };
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, blocked_put, &b), 0);
	/* A broken limit lets it through at once; 50 ms is plenty to see that. */
	usleep(50 * 1000);
	ck_assert_msg(!atomic_load(&b.done), "a may_block put did not wait at the limit");
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	pthread_join(t, NULL);
	ck_assert_uint_gt(atomic_load(&b.seq), 0);
	wait_committed(j, atomic_load(&b.seq));
}

START_TEST(test_backpressure_count)
{
	Journal *j = open_ok(0);
	uint64_t s = 0;
	/* The loop (may_block false) is never held, even past the limit. */
	for (uint64_t id = 1; id <= JOURNAL_PENDING_MAX; id++) {
		JournalJob row = small_row(id, "{}", 2);
		s = journal_put(j, &row, false, false);
		ck_assert_uint_eq(s, id);
	}
	check_blocks_until_start(j);
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

START_TEST(test_backpressure_bytes)
{
	Journal *j = open_ok(0);
	/* Few changes, many bytes: 40 rows of 1 MiB. */
	size_t len = 1024 * 1024;
	char *payload = malloc(len);
	memset(payload, 'x', len);
	for (uint64_t id = 1; id <= 40; id++) {
		JournalJob row = small_row(id, payload, len);
		ck_assert_uint_gt(journal_put(j, &row, false, false), 0);
	}
	free(payload);
	check_blocks_until_start(j);
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

/* ---- close ------------------------------------------------------------- */

START_TEST(test_close_commits_pending)
{
	/* With the writer running, nothing waited for. */
	Journal *j = open_ok(0);
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	for (uint64_t id = 1; id <= 100; id++) {
		JournalJob row = small_row(id, "{}", 2);
		ck_assert_uint_gt(journal_put(j, &row, true, false), 0);
	}
	ck_assert_int_eq(journal_close(j), 0);
	Ids ids;
	reload(&ids);
	ck_assert_uint_eq(ids.n, 100);
	free(ids.ids);

	/* Never started: close commits on the caller's thread. */
	j = open_ok(0);
	JournalJob row = small_row(200, "{}", 2);
	ck_assert_uint_gt(journal_put(j, &row, true, false), 0);
	ck_assert_int_eq(journal_close(j), 0);
	reload(&ids);
	ck_assert_uint_eq(ids.n, 101);
	ck_assert_uint_eq(ids.ids[100], 200);
	free(ids.ids);

	ck_assert_int_eq(journal_close(NULL), 0);
}
END_TEST

/* One transaction writes each job's last change only; the result is the
 * same as writing every change in order. */
START_TEST(test_batch_keeps_the_last_change_per_job)
{
	Journal *j = open_ok(0); /* never started: close commits it all as one batch */
	JournalJob row = small_row(5, "{\"v\":1}", 7);
	ck_assert_uint_gt(journal_put(j, &row, true, false), 0);
	row = small_row(6, "{}", 2);
	ck_assert_uint_gt(journal_put(j, &row, true, false), 0);
	row = small_row(5, "{\"v\":2}", 7);
	ck_assert_uint_gt(journal_put(j, &row, false, false), 0);
	ck_assert_uint_gt(journal_delete(j, 6, false), 0); /* put and deleted: never written */
	row = small_row(7, "{}", 2);
	ck_assert_uint_gt(journal_put(j, &row, true, false), 0);
	ck_assert_uint_gt(journal_delete(j, 7, false), 0);
	row = small_row(7, "{\"v\":3}", 7); /* ...and put again after its delete */
	ck_assert_uint_gt(journal_put(j, &row, false, false), 0);
	ck_assert_int_eq(journal_close(j), 0);

	Expect e = { .n = 2 };
	e.rows[0] = small_row(5, "{\"v\":2}", 7);
	e.rows[1] = small_row(7, "{\"v\":3}", 7);
	j = open_ok(0);
	uint64_t next_id;
	char err[256];
	ck_assert_int_eq(journal_load(j, check_row, &e, &next_id, err, sizeof(err)), 0);
	ck_assert_uint_eq(e.seen, 2);
	ck_assert_uint_eq(next_id, 8);
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

/* ---- refusing what is not ours to write -------------------------------- */

START_TEST(test_refuses_newer_schema)
{
	ck_assert_int_eq(journal_close(open_ok(0)), 0);
	raw_exec("PRAGMA user_version = 3");
	ck_assert_int_eq(JOURNAL_SCHEMA_VERSION, 2);
	assert_refused(-EPROTO, "schema version 3");
}
END_TEST

START_TEST(test_refuses_garbage)
{
	FILE *f = fopen(path, "we");
	ck_assert_ptr_nonnull(f);
	for (unsigned i = 0; i < 8192; i++)
		fputc("not a database\n"[i % 15] ^ (i & 0x40), f);
	fclose(f);
	assert_refused(-EBADMSG, "not a database");
}
END_TEST

START_TEST(test_refuses_foreign_database)
{
	raw_exec("CREATE TABLE mine(x)");
	assert_refused(-EBADMSG, "not a pipelined journal");
}
END_TEST

/* A journal that spans many pages: 2000 rows of 1 KiB. */
static off_t make_big_journal(void)
{
	Journal *j = open_ok(0);
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	char payload[1024];
	memset(payload, 'y', sizeof(payload));
	for (uint64_t id = 1; id <= 2000; id++) {
		JournalJob row = small_row(id, payload, sizeof(payload));
		ck_assert_uint_gt(journal_put(j, &row, true, true), 0);
	}
	ck_assert_int_eq(journal_close(j), 0);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_gt(st.st_size, 2000 * 1024);
	return st.st_size;
}

START_TEST(test_refuses_truncated)
{
	off_t size = make_big_journal();
	ck_assert_int_eq(truncate(path, size / 2), 0);
	assert_refused(-EBADMSG, "damaged");
}
END_TEST

START_TEST(test_refuses_corrupt_page)
{
	off_t size = make_big_journal();
	char garbage[4096];
	memset(garbage, 0x5a, sizeof(garbage));
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	off_t at = size / 2 / 4096 * 4096;
	ck_assert_int_eq(pwrite(fd, garbage, sizeof(garbage), at), (ssize_t)sizeof(garbage));
	close(fd);
	assert_refused(-EBADMSG, "quick_check: ");
}
END_TEST

START_TEST(test_empty_file_is_new)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	Journal *j = open_ok(0);
	ck_assert_int_eq(journal_close(j), 0);
	ck_assert_int_eq(raw_query_int("PRAGMA user_version"), JOURNAL_SCHEMA_VERSION);
}
END_TEST

START_TEST(test_bad_row_refused_by_load)
{
	ck_assert_int_eq(journal_close(open_ok(0)), 0);
	raw_exec(
	        "INSERT INTO jobs VALUES(7, 'p', 's', 0, 'sleeping', 1, 0, '{}', NULL, NULL, 0, 0, "
	        "0, 0, NULL, NULL, 0, 0, 0, 0, NULL)");
	Journal *j = open_ok(0);
	Ids ids = { 0 };
	uint64_t next_id = 0;
	char err[512] = "";
	ck_assert_int_eq(journal_load(j, collect_id, &ids, &next_id, err, sizeof(err)), -EBADMSG);
	ck_assert_msg(strstr(err, "job 7") && strstr(err, "state"), "message: %s", err);
	ck_assert_uint_eq(next_id, 0); /* written only on success */
	ck_assert_int_eq(journal_close(j), 0);
	free(ids.ids);

	/* A payload with a NUL in it is not text. */
	raw_exec("UPDATE jobs SET state = 'queued', payload = CAST(x'7b00007d' AS TEXT)");
	j = open_ok(0);
	ck_assert_int_eq(journal_load(j, collect_id, &ids, &next_id, err, sizeof(err)), -EBADMSG);
	ck_assert_msg(strstr(err, "job 7") && strstr(err, "payload"), "message: %s", err);
	ck_assert_int_eq(journal_close(j), 0);
	free(ids.ids);
}
END_TEST

/* A uid that no uid_t can be, or not a number, is damage too. */
START_TEST(test_bad_uid_refused_by_load)
{
	static const char *const bad[] = { "-1", "4294967295", "'alice'", "1.5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(journal_close(open_ok(0)), 0);
		raw_exec("DELETE FROM jobs");
		char sql[256];
		snprintf(sql, sizeof(sql),
		         "INSERT INTO jobs VALUES(7, 'p', 's', 0, 'queued', 1, 0, '{}', NULL, "
		         "NULL, 0, 0, 0, 0, NULL, NULL, 0, 0, 0, 0, %s)",
		         bad[i]);
		raw_exec(sql);
		Journal *j = open_ok(0);
		Ids ids = { 0 };
		uint64_t next_id = 0;
		char err[512] = "";
		ck_assert_int_eq(journal_load(j, collect_id, &ids, &next_id, err, sizeof(err)),
		                 -EBADMSG);
		ck_assert_msg(strstr(err, "job 7 has a bad uid"), "uid %s: %s", bad[i], err);
		ck_assert_int_eq(journal_close(j), 0);
		free(ids.ids);
	}
}
END_TEST

/* A journal of schema version 1 (before jobs had a uid), as that version
 * made it: opening migrates it to 2 in place; its rows load with the uid
 * unknown and keep working (updated, deleted); new rows carry a uid. */
static const char schema_v1[] =
        "CREATE TABLE jobs("
        "id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, stage TEXT NOT NULL, "
        "stage_index INTEGER NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL, "
        "runs INTEGER NOT NULL, payload TEXT NOT NULL, key TEXT, error TEXT, "
        "ran_program INTEGER NOT NULL, timed_out INTEGER NOT NULL, "
        "exit_status INTEGER NOT NULL, term_signal INTEGER NOT NULL, stderr_tail BLOB, "
        "workdir TEXT, submitted_usec INTEGER NOT NULL, started_usec INTEGER NOT NULL, "
        "finished_usec INTEGER NOT NULL, retry_at_usec INTEGER NOT NULL);"
        "CREATE UNIQUE INDEX jobs_key ON jobs(key) WHERE key IS NOT NULL;"
        "CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta(name, value) VALUES('next_id', 1);"
        "INSERT INTO jobs VALUES(1, 'p', 's', 0, 'queued', 1, 0, '{\"a\":1}', 'k1', NULL, 0, 0, "
        "0, 0, NULL, NULL, 100, 0, 0, 0);"
        "INSERT INTO jobs VALUES(2, 'p', 't', 1, 'done', 1, 2, '{}', NULL, NULL, 0, 0, 0, 0, "
        "NULL, NULL, 100, 101, 102, 0);"
        "PRAGMA journal_mode = WAL;"
        "PRAGMA user_version = 1;";

START_TEST(test_migrates_version_1)
{
	raw_exec(schema_v1);
	ck_assert_int_eq(raw_query_int("PRAGMA user_version"), 1);

	Journal *j = open_ok(0);
	ck_assert_int_eq(raw_query_int("PRAGMA user_version"), 2);
	Ids ids = { 0 };
	uint64_t next_id = 0;
	char err[512] = "";
	Expect e = { .n = 2 };
	e.rows[0] = (JournalJob){ .id = 1,
		                  .pipeline = "p",
		                  .stage = "s",
		                  .state = JOB_QUEUED,
		                  .attempt = 1,
		                  .payload = "{\"a\":1}",
		                  .payload_len = 7,
		                  .key = "k1",
		                  .submitted_usec = 100,
		                  .uid = JOB_UID_UNKNOWN };
	e.rows[1] = (JournalJob){ .id = 2,
		                  .pipeline = "p",
		                  .stage = "t",
		                  .stage_index = 1,
		                  .state = JOB_DONE,
		                  .attempt = 1,
		                  .runs = 2,
		                  .payload = "{}",
		                  .payload_len = 2,
		                  .submitted_usec = 100,
		                  .started_usec = 101,
		                  .finished_usec = 102,
		                  .uid = JOB_UID_UNKNOWN };
	ck_assert_int_eq(journal_load(j, check_row, &e, &next_id, err, sizeof(err)), 0);
	ck_assert_uint_eq(e.seen, 2);
	ck_assert_uint_eq(next_id, 3);

	/* The old rows take changes; a new row has its uid. */
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	JournalJob moved = e.rows[0];
	moved.state = JOB_DONE;
	moved.finished_usec = 200;
	JournalJob fresh = small_row(3, "{}", 2);
	fresh.uid = 4242;
	ck_assert_uint_gt(journal_put(j, &moved, false, false), 0);
	ck_assert_uint_gt(journal_put(j, &fresh, true, false), 0);
	ck_assert_uint_gt(journal_delete(j, 2, false), 0);
	ck_assert_int_eq(journal_close(j), 0);

	ck_assert_int_eq(raw_query_int("SELECT count(*) FROM jobs WHERE uid IS NULL"), 1);
	ck_assert_int_eq(raw_query_int("SELECT uid FROM jobs WHERE id = 3"), 4242);
	j = open_ok(0); /* already at 2: nothing to migrate */
	Expect e2 = { .n = 2 };
	e2.rows[0] = moved;
	e2.rows[1] = fresh;
	ck_assert_int_eq(journal_load(j, check_row, &e2, &next_id, err, sizeof(err)), 0);
	ck_assert_uint_eq(e2.seen, 2);
	ck_assert_int_eq(journal_close(j), 0);
	ck_assert_int_eq(raw_query_int("PRAGMA user_version"), 2);
	free(ids.ids);
}
END_TEST

/* ---- health ------------------------------------------------------------ */

START_TEST(test_space_floor)
{
	Journal *j = open_ok(0);
	ck_assert(!journal_space_low(j));
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	journal_set_min_free(j, UINT64_MAX / 2);
	settle(j);
	ck_assert(journal_space_low(j));
	JournalStats s;
	journal_stats(j, &s);
	ck_assert(s.space_low);
	ck_assert_uint_gt(s.free_bytes, 0);
	ck_assert_uint_eq(s.min_free_bytes, UINT64_MAX / 2);

	journal_set_min_free(j, 0);
	settle(j);
	ck_assert(!journal_space_low(j));
	ck_assert_int_eq(journal_close(j), 0);

	/* The floor from the options is measured at open already. */
	j = open_ok(UINT64_MAX / 2);
	ck_assert(journal_space_low(j));
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

START_TEST(test_wal_bounded)
{
	enum { ROW = 64 * 1024 };
	char *payload = malloc(ROW);
	memset(payload, 'w', ROW);
	Journal *j = open_ok(0);

	/* One transaction larger than JOURNAL_WAL_TRUNCATE_BYTES (appended
	 * before the writer starts, so it takes them as one batch): the WAL
	 * must be truncated after it, not kept at its size. */
	uint64_t n1 = JOURNAL_WAL_TRUNCATE_BYTES / ROW + 64, s = 0;
	for (uint64_t id = 1; id <= n1; id++) {
		JournalJob row = small_row(id, payload, ROW);
		s = journal_put(j, &row, false, false);
	}
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	wait_committed(j, s);
	settle(j);
	JournalStats st;
	journal_stats(j, &st);
	ck_assert_uint_le(st.commits, 3); /* the batch, and settle's */
	ck_assert_msg(st.wal_bytes < 16u * 1024 * 1024, "WAL kept at %llu bytes",
	              (unsigned long long)st.wal_bytes);

	/* A stream of large rows from a may_block caller: the WAL stays near
	 * the bound, however much goes through it. */
	uint64_t max_wal = 0;
	for (uint64_t i = 0; i < 2048; i++) {
		JournalJob row = small_row(n1 + 1 + i % 64, payload, ROW);
		s = journal_put(j, &row, false, true);
		ck_assert_uint_gt(s, 0);
		if (i % 16 == 0) {
			journal_stats(j, &st);
			if (st.wal_bytes > max_wal)
				max_wal = st.wal_bytes;
		}
	}
	wait_committed(j, s);
	settle(j);
	journal_stats(j, &st);
	ck_assert_uint_gt(st.commits, 3);
	ck_assert_msg(max_wal <= JOURNAL_WAL_TRUNCATE_BYTES + 16u * 1024 * 1024,
	              "the WAL reached %llu bytes", (unsigned long long)max_wal);
	ck_assert_int_eq(journal_close(j), 0);
	free(payload);
}
END_TEST

START_TEST(test_synchronous_env)
{
	Journal *j = NULL;
	char err[512] = "";
	setenv("PIPELINED_TEST_SYNCHRONOUS", "bogus", 1);
	int r = journal_open(path, NULL, &j, err, sizeof(err));
	unsetenv("PIPELINED_TEST_SYNCHRONOUS");
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_msg(strstr(err, "PIPELINED_TEST_SYNCHRONOUS"), "message: %s", err);
	ck_assert_int_ne(access(path, F_OK), 0); /* nothing created */

	setenv("PIPELINED_TEST_SYNCHRONOUS", "normal", 1);
	j = open_ok(0);
	unsetenv("PIPELINED_TEST_SYNCHRONOUS");
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

START_TEST(test_stats)
{
	Journal *j = open_ok(0);
	JournalStats s;
	journal_stats(j, &s);
	ck_assert_uint_eq(s.commits, 0);
	ck_assert_uint_eq(s.changes, 0);
	ck_assert(s.commits_per_sec == 0.0);
	ck_assert(s.changes_per_commit == 0.0);
	ck_assert(!s.failed);
	ck_assert_int_eq(journal_start(j, NULL, NULL), 0);
	for (uint64_t id = 1; id <= 10; id++) {
		JournalJob row = small_row(id, "{}", 2);
		wait_committed(j, journal_put(j, &row, id <= 4, false));
	}
	settle(j);
	journal_stats(j, &s);
	ck_assert_uint_ge(s.commits, 11);
	ck_assert_uint_le(s.commits, 12);
	ck_assert_uint_eq(s.changes, s.commits);
	ck_assert_uint_eq(s.puts_new, 4);
	ck_assert(s.commits_per_sec > 0.0);
	ck_assert(s.changes_per_commit == 1.0);
	ck_assert_uint_gt(s.db_bytes, 0);
	ck_assert_uint_gt(s.wal_bytes, 0);
	ck_assert(!s.failed);
	char buf[64];
	ck_assert(!journal_failed(j, buf, sizeof(buf)));
	ck_assert_int_eq(journal_close(j), 0);
}
END_TEST

/* ---- failure ------------------------------------------------------------- */

/* A write that fails (here: past RLIMIT_FSIZE, EFBIG) stops the journal for
 * good: nothing more is committed or accepted, on_commit tells the owner,
 * close says -EIO, and what committed before is still there. */
START_TEST(test_failure_is_fatal)
{
	signal(SIGXFSZ, SIG_IGN);
	CommitSeen cs = { 0 };
	Journal *j = cs.j = open_ok(0);
	ck_assert_int_eq(journal_start(j, on_commit_record, &cs), 0);
	JournalJob row = small_row(1, "{}", 2);
	uint64_t good = journal_put(j, &row, true, false);
	WAIT_UNTIL(atomic_load(&cs.max_committed) >= good);
	WAIT_UNTIL(atomic_load(&cs.calls) == 1);

	struct rlimit old, lim;
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = (struct rlimit){ .rlim_cur = 1024 * 1024, .rlim_max = old.rlim_max };
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	size_t len = 2 * 1024 * 1024;
	char *big = malloc(len);
	memset(big, 'b', len);
	row = small_row(2, big, len);
	uint64_t bad = journal_put(j, &row, true, false);
	ck_assert_uint_gt(bad, good);
	free(big);

	char why[512] = "";
	WAIT_UNTIL(journal_failed(j, why, sizeof(why)));
	ck_assert_msg(strstr(why, "cannot ") && strstr(why, path) && strstr(why, "SQLITE_"),
	              "reason: %s", why);
	WAIT_UNTIL(atomic_load(&cs.calls) == 2); /* once more, for the failure */
	ck_assert_uint_eq(journal_committed(j), good);
	row = small_row(3, "{}", 2);
	ck_assert_uint_eq(journal_put(j, &row, true, true), 0);
	ck_assert_uint_eq(journal_delete(j, 1, true), 0);
	JournalStats st;
	journal_stats(j, &st);
	ck_assert(st.failed);
	ck_assert_int_eq(journal_close(j), -EIO);
	ck_assert_uint_eq(atomic_load(&cs.calls), 2);

	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	Ids ids;
	ck_assert_uint_eq(reload(&ids), 2);
	ck_assert_uint_eq(ids.n, 1);
	ck_assert_uint_eq(ids.ids[0], 1);
	free(ids.ids);
}
END_TEST

START_TEST(test_open_errors)
{
	Journal *j = NULL;
	char err[512] = "";
	char missing[160];
	snprintf(missing, sizeof(missing), "%s/no/such/dir/journal.db", dir);
	int r = journal_open(missing, NULL, &j, err, sizeof(err));
	ck_assert_msg(r == -ENOENT, "journal_open: %d %s", r, err);
	ck_assert_ptr_null(j);
	ck_assert_msg(strstr(err, missing), "message: %s", err);
}
END_TEST

/* ---- a crash in the middle of a transaction ------------------------------ */

/* In a child: commits rows 1..3, then crashes halfway through the
 * transaction of rows 4..7. Nothing of that one may survive. */
START_TEST(test_crash_mid_batch)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setenv("PIPELINED_CRASH_AT", "mid-batch:2", 1);
		if (crashpoint_init() < 0)
			_exit(2);
		Journal *j;
		if (journal_open(path, NULL, &j, NULL, 0) < 0)
			_exit(3);
		uint64_t s = 0;
		for (uint64_t id = 1; id <= 3; id++) {
			JournalJob row = small_row(id, "{}", 2);
			s = journal_put(j, &row, false, false);
		}
		if (journal_start(j, NULL, NULL) < 0)
			_exit(4);
		while (journal_committed(j) < s)
			usleep(100);
		for (uint64_t id = 4; id <= 7; id++) {
			JournalJob row = small_row(id, "{}", 2);
			journal_put(j, &row, false, false);
		}
		journal_close(j); /* the crash point ends the process first */
		_exit(0);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), CRASHPOINT_EXIT_STATUS);

	Ids ids;
	ck_assert_uint_eq(reload(&ids), 4);
	ck_assert_uint_eq(ids.n, 3);
	free(ids.ids);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_delete_and_next_id);
	tcase_add_test(tc, test_committed_and_seq);
	tcase_add_test(tc, test_group_commit);
	tcase_add_test(tc, test_backpressure_count);
	tcase_add_test(tc, test_backpressure_bytes);
	tcase_add_test(tc, test_close_commits_pending);
	tcase_add_test(tc, test_batch_keeps_the_last_change_per_job);
	tcase_add_test(tc, test_refuses_newer_schema);
	tcase_add_test(tc, test_bad_uid_refused_by_load);
	tcase_add_test(tc, test_migrates_version_1);
	tcase_add_test(tc, test_refuses_garbage);
	tcase_add_test(tc, test_refuses_foreign_database);
	tcase_add_test(tc, test_refuses_truncated);
	tcase_add_test(tc, test_refuses_corrupt_page);
	tcase_add_test(tc, test_empty_file_is_new);
	tcase_add_test(tc, test_bad_row_refused_by_load);
	tcase_add_test(tc, test_space_floor);
	tcase_add_test(tc, test_wal_bounded);
	tcase_add_test(tc, test_synchronous_env);
	tcase_add_test(tc, test_stats);
	tcase_add_test(tc, test_failure_is_fatal);
	tcase_add_test(tc, test_open_errors);
	tcase_add_test(tc, test_crash_mid_batch);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
