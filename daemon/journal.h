/* journal.h — the durable record of every job: an SQLite database in WAL
 * mode, written by one thread.
 *
 * The journal holds one row per job the daemon knows (in flight, and
 * finished ones until retention forgets them). Every change is a whole
 * row: journal_put writes it (insert or replace), journal_delete removes
 * it. Callers on any thread append changes; they are applied in the order
 * they were appended. The writer thread takes everything appended since its
 * last commit and commits it as one transaction (group commit): one sync
 * serves every job that arrived meanwhile. When none of it is a submit it
 * first waits up to JOURNAL_LAZY_USEC for one, and within a transaction
 * only each job's last change is written. Each change gets a sequence
 * number; journal_committed tells the highest one whose transaction has
 * committed (synced, with synchronous=FULL), and on_commit is called after
 * each commit, so the event loop can acknowledge a submit only once its row
 * is on disk, without ever waiting for the disk itself.
 *
 * Failure is fatal: when a write, commit or sync fails, the journal stops
 * for good. Nothing appended after the last good commit is applied, no
 * later sequence number is ever reported committed, journal_failed returns
 * the reason, and on_commit is called once more so the owner can stop.
 * (A retried fsync can report success for data that was never written.)
 *
 * Health: the writer's connection is the only one, and it runs every
 * checkpoint (autocheckpoint, plus a TRUNCATE checkpoint when the WAL
 * passes JOURNAL_WAL_TRUNCATE_BYTES), so the WAL stays bounded. After each
 * commit the writer measures the free space of the journal's file system;
 * journal_space_low says whether it is below the floor.
 *
 * Schema: PRAGMA user_version is the schema version. journal_open creates
 * an empty journal at JOURNAL_SCHEMA_VERSION, migrates an older one step by
 * step (each step in its own transaction) and refuses a newer one.
 *
 * Test hooks (environment, read by journal_open):
 *   PIPELINED_TEST_SYNCHRONOUS=normal  use synchronous=NORMAL instead of FULL
 *                                      (to prove the power-loss test sees losses)
 *   PIPELINED_CRASH_AT=mid-batch:N     _exit(99) in the Nth transaction after
 *                                      half of its changes (crashpoint.h)
 *
 * Threads: journal_open, journal_load, journal_start and journal_close from
 * the owner (before the writer starts / after it stops, for the first two);
 * everything else from any thread. on_commit runs on the writer thread and
 * must not block (the daemon calls uv_async_send). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"

#define JOURNAL_SCHEMA_VERSION 2            /* 1: first; 2: jobs.uid */
#define JOURNAL_FILE "journal.db" /* in the state directory */
/* Changes appended and not yet committed, beyond which journal_put and
 * journal_delete with may_block wait for the writer (workers: backpressure
 * on the stages). Callers that must not block (the loop) are never held,
 * and are bounded by the jobs in flight. */
#define JOURNAL_PENDING_MAX 8192u
/* Blocking appenders also wait while this many bytes of rows are pending
 * (journal.c: JOURNAL_PENDING_BYTES_MAX, 32 MiB): a row can carry a large
 * payload, and one transaction takes everything pending. */
#define JOURNAL_WAL_TRUNCATE_BYTES (64u * 1024u * 1024u)
/* When nothing pending is a submit, the writer waits up to this long for
 * one before it commits, so that stage transitions share a submit's sync. */
#define JOURNAL_LAZY_USEC 2000u

typedef struct Journal Journal;

/* One job's row. Strings are NUL-terminated; NULL means none. */
typedef struct JournalJob {
	uint64_t id;
	const char *pipeline;
	const char *stage;    /* name of the stage the job is at (queued at, retrying at,
	                       * or ended at) */
	unsigned stage_index; /* its index then (a hint: recovery looks the name up) */
	JobState state;       /* JOB_RUNNING is stored as JOB_QUEUED: a job that was
	                       * running at a crash runs that stage again */
	unsigned attempt;
	unsigned runs;
	const char *payload;  /* the input of `stage` (or, once done, the final payload) */
	size_t payload_len;
	const char *key;      /* idempotency key, or NULL; unique among rows */
	const char *error;
	bool ran_program, timed_out;
	int exit_status, term_signal;
	const char *stderr_tail;
	size_t stderr_len;
	const char *workdir;
	uint64_t submitted_usec, started_usec, finished_usec, retry_at_usec; /* CLOCK_REALTIME */
	uint32_t uid; /* the submitter, or JOB_UID_UNKNOWN (stored as NULL; rows written
	               * before schema version 2 have none) */
} JournalJob;

typedef struct JournalOptions {
	uint64_t min_free_bytes; /* the free-space floor; 0: none */
} JournalOptions;

typedef struct JournalStats {
	uint64_t db_bytes, wal_bytes; /* file sizes now */
	uint64_t commits, changes;    /* since journal_open */
	uint64_t puts_new;            /* journal_put calls with is_new */
	double commits_per_sec;       /* over the last JOURNAL_RATE_WINDOW_SEC seconds */
	double changes_per_commit;    /* same window; 0 when no commit */
	uint64_t free_bytes;          /* at the last measure */
	uint64_t min_free_bytes;
	bool space_low, failed;
} JournalStats;
#define JOURNAL_RATE_WINDOW_SEC 10u

/* Opens (creating if missing) the journal at path: WAL mode, synchronous
 * FULL, schema checked and migrated, PRAGMA quick_check run. Does not start
 * the writer. Returns 0 and *ret; on error a message in err (for the log:
 * what is wrong and what to do) and:
 *   -EBADMSG  not a database, or damaged (truncated, corrupt pages)
 *   -EPROTO   written by a newer schema version
 *   -errno    cannot open or create it (-EACCES, -ENOSPC...), -ENOMEM
 * A damaged journal is never reset or rewritten. */
int journal_open(const char *path, const JournalOptions *opt, Journal **ret, char *err,
                 size_t errlen);

/* Calls each(ud, row) for every row, in id order (before journal_start),
 * in one short read transaction. Strings in row are valid only during the
 * call. Stops at the first non-zero return of each and returns it. Sets
 * *next_id to one more than the largest id ever put (kept even when that
 * row was deleted since), at least 1. Returns 0, a callback's value, or
 * -EBADMSG with err filled for a row that makes no sense. */
int journal_load(Journal *j, int (*each)(void *ud, const JournalJob *row), void *ud,
                 uint64_t *next_id, char *err, size_t errlen);

/* Starts the writer thread. on_commit(ud) runs on it after each commit and
 * once after a failure. Returns 0 or -errno. */
int journal_start(Journal *j, void (*on_commit)(void *ud), void *ud);

/* Appends "this row is now row" (copied). is_new marks a submit (counted in
 * puts_new): a client waits for its commit, so the writer commits at once
 * (other changes may wait up to JOURNAL_LAZY_USEC for company). With may_block the caller waits while JOURNAL_PENDING_MAX
 * changes are pending (never once the journal failed or is closing).
 * Returns the change's sequence number (> 0), or 0 if the journal has failed
 * or memory ran out (then the change is not recorded: the caller must not
 * acknowledge anything that depends on it). */
uint64_t journal_put(Journal *j, const JournalJob *row, bool is_new, bool may_block);

/* Appends "forget job id" (retention). Same return and blocking as journal_put. */
uint64_t journal_delete(Journal *j, uint64_t id, bool may_block);

/* The highest sequence number whose transaction has committed; 0 before
 * the first. Everything appended with a number up to it is on disk. */
uint64_t journal_committed(Journal *j);

/* True once a write or sync failed; copies the reason into buf. */
bool journal_failed(Journal *j, char *buf, size_t len);

/* True if the free space at the last measure was below the floor. */
bool journal_space_low(Journal *j);

/* Changes the floor (reload) and measures the free space again at once. */
void journal_set_min_free(Journal *j, uint64_t min_free_bytes);

void journal_stats(Journal *j, JournalStats *ret);

/* After a failure, for a process about to _exit with workers still
 * running: waits for the writer thread, which ends right after the failure
 * (so that nothing is left unjoined). The journal stays allocated and
 * refuses every append. Does nothing unless the journal failed. Owner. */
void journal_join_failed(Journal *j);

/* Commits everything appended, stops the writer, checkpoints and closes.
 * Returns 0, or -EIO if the journal failed (now or before). Accepts NULL. */
int journal_close(Journal *j);
