/* journal.c — see journal.h.
 *
 * Design. One SQLite connection, used by the owner's thread until
 * journal_start and after journal_close has joined the writer, and by the
 * writer thread in between: never by two threads at once, so it is opened
 * with SQLITE_OPEN_NOMUTEX, and pthread_create/pthread_join order the
 * hand-overs. It is also the only connection that ever writes or
 * checkpoints the file: SQLite 3.40 (Debian 12) can corrupt a WAL database
 * when two connections race a WAL reset, and one writer never races itself.
 *
 * Appenders copy the row into one allocation (struct and strings) and push it
 * on a FIFO under `lock`, taking the next sequence number there, so numbers
 * follow FIFO order. The writer swaps the whole FIFO out under the lock and
 * applies it unlocked, in one transaction: group commit. Only after COMMIT
 * returns does it publish the batch's last number in `committed` (release)
 * and call on_commit.
 *
 * A damaged journal is never written: journal_open reads user_version and
 * runs quick_check before anything that writes (journal_mode=WAL on a new
 * file, migrations), and until the file has passed, the connection is told
 * not to checkpoint on close (a leftover WAL would otherwise be copied into
 * the damaged file when we give up on it).
 *
 * Lock order: `lock`, then `stats_lock` (never taken together today). */
#include "journal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "crashpoint.h"
#include "util.h"

/* Row bytes appended and not yet taken by the writer, beyond which callers
 * with may_block also wait. JOURNAL_PENDING_MAX counts changes only, and a
 * change may carry a payload of up to JOB_PAYLOAD_MAX: without a byte bound
 * one batch (and so the WAL, which holds a whole transaction) could reach
 * gigabytes. With it, a batch from blocking callers stays under
 * JOURNAL_WAL_TRUNCATE_BYTES (32 MiB plus one row of at most 16 MiB). */
#define JOURNAL_PENDING_BYTES_MAX (32u * 1024u * 1024u)

/* After a checkpoint, SQLite truncates the WAL file back to this size when it
 * next restarts it (PRAGMA journal_size_limit), instead of keeping the high
 * water mark of the largest transaction. */
#define JOURNAL_SIZE_LIMIT (64 * 1024 * 1024)

/* How long a statement waits for a lock held by another process (someone
 * reading the journal with the sqlite3 shell), in ms. Small: the writer is
 * the only one that ever writes, so a wait can only be on such a reader. */
#define JOURNAL_BUSY_TIMEOUT_MS 1000

/* One appended change. The row's strings live in the same allocation, right
 * after the struct, so a change is one malloc and one free. */
typedef struct Change {
	struct Change *next;
	uint64_t seq;
	size_t bytes; /* of the allocation, for the pending-bytes bound */
	bool is_delete;
	bool urgent; /* a submit: its client waits for the commit */
	bool superseded; /* a later change in the same batch rewrites its row */
	JournalJob row; /* for a delete only row.id is set */
} Change;

typedef struct RateBucket {
	uint64_t sec; /* CLOCK_MONOTONIC second this bucket counts */
	uint64_t commits, changes;
} RateBucket;

struct Journal {
	char *path;     /* the database file */
	char *wal_path; /* path + "-wal" */
	char *dir;      /* its directory, for statvfs */

	/* The connection and its statements: owner thread before the writer
	 * starts and after it is joined; the writer thread in between. */
	sqlite3 *db;
	sqlite3_stmt *put_stmt, *delete_stmt, *meta_stmt;
	sqlite3_stmt *begin_stmt, *commit_stmt, *rollback_stmt;
	uint64_t next_id; /* meta.next_id as last committed */

	pthread_mutex_t lock;
	pthread_cond_t wake;  /* the writer waits here for changes or closing */
	pthread_cond_t room;  /* may_block appenders wait here for the writer */
	Change *head, **tail; /* the FIFO of appended changes, oldest first */
	size_t pending;       /* changes in the FIFO */
	size_t pending_bytes; /* their allocations' bytes */
	size_t pending_urgent; /* of them, submits (Change.urgent) */
	uint64_t last_seq;    /* the last number handed out; 0 before the first */
	bool closing;
	unsigned waiting_room; /* appenders blocked on `room` */

	pthread_t thread;
	bool started; /* owner thread only */
	void (*on_commit)(void *ud);
	void *ud;

	/* Published by the writer, read anywhere. */
	_Atomic uint64_t committed; /* release on store, acquire on load */
	atomic_bool failed;         /* release: `failure` is written before */
	char failure[512];          /* written once, before `failed` is set */
	_Atomic uint64_t min_free_bytes;
	_Atomic uint64_t free_bytes;
	atomic_bool space_low;
	_Atomic uint64_t puts_new;

	pthread_mutex_t stats_lock; /* guards the four fields below */
	uint64_t commits, changes;
	RateBucket rate[JOURNAL_RATE_WINDOW_SEC];
	uint64_t opened_usec; /* CLOCK_MONOTONIC; immutable */
};

/* ---- errors ---------------------------------------------------------- */

static void errf(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* The symbolic name of an (extended) result code, for messages: sqlite3_errstr
 * says "disk I/O error" for every SQLITE_IOERR_*, and which one it was
 * (a write, an fsync) is what an operator needs. */
static const char *rc_name(int rc)
{
	static const struct {
		int rc;
		const char *name;
	} names[] = {
	/* clang-format off */
#define N(x) { x, #x }
		N(SQLITE_ERROR), N(SQLITE_INTERNAL), N(SQLITE_PERM), N(SQLITE_ABORT),
		N(SQLITE_BUSY), N(SQLITE_LOCKED), N(SQLITE_NOMEM), N(SQLITE_READONLY),
		N(SQLITE_INTERRUPT), N(SQLITE_IOERR), N(SQLITE_CORRUPT), N(SQLITE_NOTFOUND),
		N(SQLITE_FULL), N(SQLITE_CANTOPEN), N(SQLITE_PROTOCOL), N(SQLITE_SCHEMA),
		N(SQLITE_TOOBIG), N(SQLITE_CONSTRAINT), N(SQLITE_MISMATCH), N(SQLITE_MISUSE),
		N(SQLITE_NOLFS), N(SQLITE_AUTH), N(SQLITE_RANGE), N(SQLITE_NOTADB),
		N(SQLITE_IOERR_READ), N(SQLITE_IOERR_SHORT_READ), N(SQLITE_IOERR_WRITE),
		N(SQLITE_IOERR_FSYNC), N(SQLITE_IOERR_DIR_FSYNC), N(SQLITE_IOERR_TRUNCATE),
		N(SQLITE_IOERR_FSTAT), N(SQLITE_IOERR_UNLOCK), N(SQLITE_IOERR_RDLOCK),
		N(SQLITE_IOERR_DELETE), N(SQLITE_IOERR_NOMEM), N(SQLITE_IOERR_ACCESS),
		N(SQLITE_IOERR_CHECKRESERVEDLOCK), N(SQLITE_IOERR_LOCK), N(SQLITE_IOERR_CLOSE),
		N(SQLITE_IOERR_SHMOPEN), N(SQLITE_IOERR_SHMSIZE), N(SQLITE_IOERR_SHMLOCK),
		N(SQLITE_IOERR_SHMMAP), N(SQLITE_IOERR_SEEK), N(SQLITE_IOERR_MMAP),
		N(SQLITE_IOERR_DATA), N(SQLITE_IOERR_CORRUPTFS), N(SQLITE_BUSY_RECOVERY),
		N(SQLITE_BUSY_SNAPSHOT), N(SQLITE_BUSY_TIMEOUT), N(SQLITE_CANTOPEN_ISDIR),
		N(SQLITE_CANTOPEN_FULLPATH), N(SQLITE_CANTOPEN_SYMLINK), N(SQLITE_CORRUPT_INDEX),
		N(SQLITE_READONLY_RECOVERY), N(SQLITE_READONLY_CANTLOCK),
		N(SQLITE_READONLY_ROLLBACK), N(SQLITE_READONLY_DBMOVED),
		N(SQLITE_READONLY_CANTINIT), N(SQLITE_READONLY_DIRECTORY),
		N(SQLITE_CONSTRAINT_NOTNULL), N(SQLITE_CONSTRAINT_UNIQUE),
		N(SQLITE_CONSTRAINT_PRIMARYKEY),
#undef N
		/* clang-format on */
	};
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (names[i].rc == rc)
			return names[i].name;
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (names[i].rc == (rc & 0xff))
			return names[i].name;
	return "SQLITE_?";
}

/* -errno for a failed SQLite call on db (rc extended). */
static int rc_errno(sqlite3 *db, int rc)
{
	int sys = db ? sqlite3_system_errno(db) : 0;
	switch (rc & 0xff) {
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return -EBADMSG;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_PERM:
	case SQLITE_AUTH:
	case SQLITE_READONLY:
		return sys > 0 ? -sys : -EACCES;
	case SQLITE_CANTOPEN:
	case SQLITE_IOERR:
		return sys > 0 ? -sys : -EIO;
	default:
		return -EIO;
	}
}

/* "<errmsg> (<NAME>[, <strerror>])" for the last error on db, into buf. */
static void describe_error(sqlite3 *db, int rc, char *buf, size_t len)
{
	int sys = sqlite3_system_errno(db);
	if (sys > 0 && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN ||
	                (rc & 0xff) == SQLITE_FULL))
		snprintf(buf, len, "%s (%s, %s)", sqlite3_errmsg(db), rc_name(rc), strerror(sys));
	else
		snprintf(buf, len, "%s (%s)", sqlite3_errmsg(db), rc_name(rc));
}

static const char damaged_hint[] =
        "refusing to start. Move it and its -wal file away to start with an empty journal, or "
        "restore it from a backup";

/* The message and -EBADMSG for a file SQLite says is no database or is corrupt,
 * or -errno and a plain message for anything else (cannot read it). */
static int open_error(Journal *j, int rc, const char *doing, char *err, size_t errlen)
{
	char why[256];
	describe_error(j->db, rc, why, sizeof(why));
	int r = rc_errno(j->db, rc);
	if (r == -EBADMSG)
		errf(err, errlen, "journal %s is not a database or is damaged (%s); %s", j->path,
		     sqlite3_errmsg(j->db), damaged_hint);
	else
		errf(err, errlen, "cannot %s the journal %s: %s", doing, j->path, why);
	return r;
}

/* ---- statements -------------------------------------------------------- */

/* Steps st to its end and resets it. Returns SQLITE_DONE or the (extended)
 * error code; on error, why (if not NULL) describes it, read before the reset
 * can change the connection's error state. */
static int run(Journal *j, sqlite3_stmt *st, char *why, size_t whylen)
{
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	if (rc != SQLITE_DONE) {
		rc = sqlite3_extended_errcode(j->db);
		if (why)
			describe_error(j->db, rc, why, whylen);
	}
	sqlite3_reset(st);
	return rc;
}

/* Runs one SQL text that returns at most one row of one column, as an integer
 * or text (ret_text: copied to buf). Returns SQLITE_OK, or the error code. */
static int query_one(Journal *j, const char *sql, sqlite3_int64 *ret_int, char *buf, size_t len)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(j->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sqlite3_extended_errcode(j->db);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (ret_int)
			*ret_int = sqlite3_column_int64(st, 0);
		if (buf) {
			const unsigned char *t = sqlite3_column_text(st, 0);
			snprintf(buf, len, "%s", t ? (const char *)t : "");
		}
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		if (ret_int)
			*ret_int = 0;
		if (buf && len)
			buf[0] = '\0';
		rc = SQLITE_OK;
	} else {
		rc = sqlite3_extended_errcode(j->db);
	}
	/* Finalizing a statement whose step failed returns that error again:
	 * already reported. */
	sqlite3_finalize(st);
	return rc;
}

/* ---- schema ------------------------------------------------------------ */

/* A migration step takes the journal from schema version `from` to from + 1,
 * in its own transaction. A later version appends a step. */
typedef struct Migration {
	int from;
	const char *sql;
} Migration;

static const Migration migrations[] = {
	{ 0,
	  /* State is text (job_state_to_string), so the file reads without
	   * this program. `key` is unique where set (a partial index: jobs
	   * without a key cost no index write): a put is INSERT OR REPLACE,
	   * so a put of a different id with a live row's key would delete
	   * that row; the daemon keeps keys unique among live jobs, so it
	   * never does. payload is TEXT with its length; stderr_tail is
	   * whatever bytes the program wrote, so a BLOB. */
	  "CREATE TABLE jobs("
	  "id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, stage TEXT NOT NULL, "
	  "stage_index INTEGER NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL, "
	  "runs INTEGER NOT NULL, payload TEXT NOT NULL, key TEXT, error TEXT, "
	  "ran_program INTEGER NOT NULL, timed_out INTEGER NOT NULL, "
	  "exit_status INTEGER NOT NULL, term_signal INTEGER NOT NULL, stderr_tail BLOB, "
	  "workdir TEXT, submitted_usec INTEGER NOT NULL, started_usec INTEGER NOT NULL, "
	  "finished_usec INTEGER NOT NULL, retry_at_usec INTEGER NOT NULL);"
	  "CREATE UNIQUE INDEX jobs_key ON jobs(key) WHERE key IS NOT NULL;"
	  /* next_id: at least one more than the largest id ever put, so that
	   * an id is never reused. journal_load takes the larger of it and the
	   * largest id + 1, so it is written only when a batch deletes the
	   * largest id (apply_batch): one page less per commit. */
	  "CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
	  "INSERT INTO meta(name, value) VALUES('next_id', 1);" },
	{ 1,
	  /* Who submitted the job (access control). Rows from before have
	   * NULL: unknown, counted against nobody's cap. */
	  "ALTER TABLE jobs ADD COLUMN uid INTEGER;" },
};

static int migrate(Journal *j, int version, char *err, size_t errlen)
{
	while (version < JOURNAL_SCHEMA_VERSION) {
		const Migration *m = NULL;
		for (size_t i = 0; i < ELEMENTSOF(migrations); i++)
			if (migrations[i].from == version)
				m = &migrations[i];
		assert(m); /* every version below the current one has a step */

		int rc = sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		rc = sqlite3_exec(j->db, m->sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
		rc = sqlite3_exec(j->db, sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		rc = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		version++;
		continue;
	fail:;
		rc = sqlite3_extended_errcode(j->db);
		char why[256];
		describe_error(j->db, rc, why, sizeof(why));
		sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
		errf(err, errlen, "cannot migrate the journal %s from schema version %d to %d: %s",
		     j->path, version, version + 1, why);
		return rc_errno(j->db, rc);
	}
	return 0;
}

/* ---- open -------------------------------------------------------------- */

static int sync_from_env(const char **ret, char *err, size_t errlen)
{
	const char *v = getenv("PIPELINED_TEST_SYNCHRONOUS");
	if (!v || !*v || strcmp(v, "full") == 0)
		*ret = "FULL";
	else if (strcmp(v, "normal") == 0)
		*ret = "NORMAL";
	else {
		errf(err, errlen,
		     "PIPELINED_TEST_SYNCHRONOUS=%s is not understood (use \"normal\" or "
		     "\"full\", or leave it unset)",
		     v);
		return -EINVAL;
	}
	return 0;
}

/* Free space of the journal's file system, and the floor check. Keeps the last
 * measure when statvfs fails (the journal works without it). */
static void measure_space(Journal *j)
{
	struct statvfs sv;
	if (statvfs(j->dir, &sv) < 0)
		return;
	uint64_t free_bytes = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
	uint64_t min_free = atomic_load_explicit(&j->min_free_bytes, memory_order_relaxed);
	atomic_store_explicit(&j->free_bytes, free_bytes, memory_order_relaxed);
	atomic_store_explicit(&j->space_low, min_free > 0 && free_bytes < min_free,
	                      memory_order_relaxed);
}

static void free_changes(Change *c)
{
	while (c) {
		Change *next = c->next;
		free(c);
		c = next;
	}
}

/* Frees everything; the writer is not running. */
static void destroy(Journal *j)
{
	sqlite3_finalize(j->put_stmt);
	sqlite3_finalize(j->delete_stmt);
	sqlite3_finalize(j->meta_stmt);
	sqlite3_finalize(j->begin_stmt);
	sqlite3_finalize(j->commit_stmt);
	sqlite3_finalize(j->rollback_stmt);
	if (j->db) {
		/* Every statement is finalized, so this cannot be SQLITE_BUSY. */
		int rc = sqlite3_close(j->db);
		assert(rc == SQLITE_OK);
		(void)rc;
	}
	free_changes(j->head);
	pthread_mutex_destroy(&j->stats_lock);
	pthread_cond_destroy(&j->room);
	pthread_cond_destroy(&j->wake);
	pthread_mutex_destroy(&j->lock);
	free(j->dir);
	free(j->wal_path);
	free(j->path);
	free(j);
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* Reads the schema version and runs quick_check: nothing here writes. */
static int validate(Journal *j, int *ret_version, char *err, size_t errlen)
{
	sqlite3_int64 version = 0;
	int rc = query_one(j, "PRAGMA user_version", &version, NULL, 0);
	if (rc != SQLITE_OK)
		return open_error(j, rc, "read", err, errlen);
	if (version > JOURNAL_SCHEMA_VERSION) {
		errf(err, errlen,
		     "journal %s was written by a newer pipelined (schema version %lld, this one "
		     "knows up to %d); refusing to start",
		     j->path, (long long)version, JOURNAL_SCHEMA_VERSION);
		return -EPROTO;
	}
	if (version < 0) {
		errf(err, errlen,
		     "journal %s has schema version %lld, which no pipelined writes; %s", j->path,
		     (long long)version, damaged_hint);
		return -EBADMSG;
	}
	if (version == 0) {
		/* Version 0 is also what any other SQLite file says: only an
		 * empty one is ours to fill (checked here, before journal_mode=WAL
		 * rewrites the header). */
		sqlite3_int64 objects = 0;
		rc = query_one(j, "SELECT count(*) FROM sqlite_schema", &objects, NULL, 0);
		if (rc != SQLITE_OK)
			return open_error(j, rc, "read", err, errlen);
		if (objects != 0) {
			errf(err, errlen,
			     "journal %s is an SQLite database but not a pipelined journal (schema "
			     "version 0, not empty); %s",
			     j->path, damaged_hint);
			return -EBADMSG;
		}
	}
	/* quick_check(1): the first problem is enough to refuse, and the
	 * first line is what the message shows. */
	char first[512];
	rc = query_one(j, "PRAGMA quick_check(1)", NULL, first, sizeof(first));
	if (rc != SQLITE_OK)
		return open_error(j, rc, "check", err, errlen);
	if (strcmp(first, "ok") != 0) {
		/* One line for the log: past SQLite's "*** in database main ***"
		 * banner, up to the end of the first problem. */
		char *line = first;
		if (strncmp(line, "*** ", 4) == 0 && strchr(line, '\n'))
			line = strchr(line, '\n') + 1;
		line[strcspn(line, "\n")] = '\0';
		errf(err, errlen, "journal %s is damaged (quick_check: %s); %s", j->path, line,
		     damaged_hint);
		return -EBADMSG;
	}
	*ret_version = (int)version;
	return 0;
}

static int prepare(Journal *j, const char *sql, sqlite3_stmt **ret, char *err, size_t errlen)
{
	/* PERSISTENT: kept for the life of the connection. */
	int rc = sqlite3_prepare_v3(j->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL);
	if (rc != SQLITE_OK)
		return open_error(j, sqlite3_extended_errcode(j->db), "prepare", err, errlen);
	return 0;
}

int journal_open(const char *path, const JournalOptions *opt, Journal **ret, char *err,
                 size_t errlen)
{
	const char *sync_mode;
	int r = sync_from_env(&sync_mode, err, errlen);
	if (r < 0)
		return r;

	Journal *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	pthread_mutex_init(&j->lock, NULL);
	/* The writer's lazy wait (writer_main) is a deadline on this clock. */
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&j->wake, &attr);
	pthread_condattr_destroy(&attr);
	pthread_cond_init(&j->room, NULL);
	pthread_mutex_init(&j->stats_lock, NULL);
	j->tail = &j->head;
	j->opened_usec = mono_usec();
	atomic_init(&j->min_free_bytes, opt ? opt->min_free_bytes : 0);
	j->path = strdup(path);
	j->dir = dir_of(path);
	if (!j->path || !j->dir || asprintf(&j->wal_path, "%s-wal", path) < 0) {
		j->wal_path = NULL;
		r = -ENOMEM;
		errf(err, errlen, "out of memory");
		goto fail;
	}

	int rc = sqlite3_open_v2(path, &j->db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
	                                 SQLITE_OPEN_EXRESCODE,
	                         NULL);
	if (rc != SQLITE_OK) {
		if (!j->db) {
			errf(err, errlen, "out of memory");
			r = -ENOMEM;
		} else
			r = open_error(j, sqlite3_extended_errcode(j->db), "open", err, errlen);
		goto fail;
	}
	/* Until the file has passed validate(): if we give up on it, closing
	 * must not checkpoint a leftover WAL into it. */
	sqlite3_db_config(j->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	/* SQLite falls back to read-only when the file is not writable; we would
	 * only find out at the first commit. */
	if (sqlite3_db_readonly(j->db, "main") == 1) {
		errf(err, errlen, "cannot open the journal %s for writing (read-only)", path);
		r = -EACCES;
		goto fail;
	}
	sqlite3_busy_timeout(j->db, JOURNAL_BUSY_TIMEOUT_MS);

	int version = 0;
	r = validate(j, &version, err, errlen);
	if (r < 0)
		goto fail;

	/* The first statement that may write (a new file gets its header). */
	char mode[32];
	rc = query_one(j, "PRAGMA journal_mode=WAL", NULL, mode, sizeof(mode));
	if (rc != SQLITE_OK) {
		r = open_error(j, rc, "set WAL mode on", err, errlen);
		goto fail;
	}
	if (strcmp(mode, "wal") != 0) {
		errf(err, errlen,
		     "cannot use WAL mode for the journal %s (SQLite kept journal_mode=%s; does "
		     "the "
		     "file system support shared memory?)",
		     path, mode);
		r = -ENOTSUP;
		goto fail;
	}
	char sql[128];
	snprintf(sql, sizeof(sql), "PRAGMA synchronous=%s; PRAGMA journal_size_limit=%d", sync_mode,
	         JOURNAL_SIZE_LIMIT);
	rc = sqlite3_exec(j->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		r = open_error(j, sqlite3_extended_errcode(j->db), "configure", err, errlen);
		goto fail;
	}

	r = migrate(j, version, err, errlen);
	if (r < 0)
		goto fail;

	if ((r = prepare(j,
	                 "INSERT OR REPLACE INTO jobs(id, pipeline, stage, stage_index, state, "
	                 "attempt, runs, payload, key, error, ran_program, timed_out, exit_status, "
	                 "term_signal, stderr_tail, workdir, submitted_usec, started_usec, "
	                 "finished_usec, retry_at_usec, uid) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, "
	                 "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
	                 &j->put_stmt, err, errlen)) < 0 ||
	    (r = prepare(j, "DELETE FROM jobs WHERE id = ?1", &j->delete_stmt, err, errlen)) < 0 ||
	    (r = prepare(j, "INSERT OR REPLACE INTO meta(name, value) VALUES('next_id', ?1)",
	                 &j->meta_stmt, err, errlen)) < 0 ||
	    (r = prepare(j, "BEGIN IMMEDIATE", &j->begin_stmt, err, errlen)) < 0 ||
	    (r = prepare(j, "COMMIT", &j->commit_stmt, err, errlen)) < 0 ||
	    (r = prepare(j, "ROLLBACK", &j->rollback_stmt, err, errlen)) < 0)
		goto fail;

	/* meta.next_id lags behind the rows unless the largest id was deleted
	 * (see the schema): the larger of the two. */
	sqlite3_int64 next_id = 0;
	rc = query_one(j, "SELECT max((SELECT value FROM meta WHERE name = 'next_id'), "
	                  "(SELECT ifnull(max(id), 0) + 1 FROM jobs))",
	               &next_id, NULL, 0);
	if (rc != SQLITE_OK) {
		r = open_error(j, rc, "read", err, errlen);
		goto fail;
	}
	j->next_id = next_id > 0 ? (uint64_t)next_id : 1;

	/* Checked: from here on, a normal close may checkpoint. */
	sqlite3_db_config(j->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
	measure_space(j);
	*ret = j;
	return 0;

fail:
	destroy(j);
	return r;
}

/* ---- load -------------------------------------------------------------- */

/* Column i of st as text: NUL-free (else -EBADMSG), NULL allowed only if
 * nullable. The pointer is valid until the next step. */
static int col_text(sqlite3_stmt *st, int i, bool nullable, const char **ret, size_t *ret_len)
{
	int type = sqlite3_column_type(st, i);
	if (type == SQLITE_NULL) {
		if (!nullable)
			return -EBADMSG;
		*ret = NULL;
		if (ret_len)
			*ret_len = 0;
		return 0;
	}
	if (type != SQLITE_TEXT)
		return -EBADMSG;
	const char *s = (const char *)sqlite3_column_text(st, i);
	size_t len = (size_t)sqlite3_column_bytes(st, i);
	if (!s)
		return -ENOMEM;
	if (memchr(s, '\0', len))
		return -EBADMSG;
	*ret = s;
	if (ret_len)
		*ret_len = len;
	return 0;
}

static int col_int(sqlite3_stmt *st, int i, sqlite3_int64 min, sqlite3_int64 max,
                   sqlite3_int64 *ret)
{
	if (sqlite3_column_type(st, i) != SQLITE_INTEGER)
		return -EBADMSG;
	sqlite3_int64 v = sqlite3_column_int64(st, i);
	if (v < min || v > max)
		return -EBADMSG;
	*ret = v;
	return 0;
}

static const char *const job_columns[] = {
	"id",          "pipeline",       "stage",        "stage_index",   "state",
	"attempt",     "runs",           "payload",      "key",           "error",
	"ran_program", "timed_out",      "exit_status",  "term_signal",   "stderr_tail",
	"workdir",     "submitted_usec", "started_usec", "finished_usec", "retry_at_usec",
	"uid",
};

/* Parses the current row of the load statement. Returns 0, or -EBADMSG with
 * *ret_col the first column that makes no sense (-ENOMEM: out of memory). */
static int parse_row(sqlite3_stmt *st, JournalJob *row, int *ret_col)
{
	sqlite3_int64 v = 0;
	const char *state;
	int r;
	*row = (JournalJob){ 0 };
#define CHECK(col, expr)                                                                           \
	do {                                                                                       \
		*ret_col = (col);                                                                  \
		if ((r = (expr)) < 0)                                                              \
			return r;                                                                  \
	} while (0)
	CHECK(0, col_int(st, 0, 1, INT64_MAX, &v));
	row->id = (uint64_t)v;
	CHECK(1, col_text(st, 1, false, &row->pipeline, NULL));
	CHECK(2, col_text(st, 2, false, &row->stage, NULL));
	CHECK(3, col_int(st, 3, 0, UINT_MAX, &v));
	row->stage_index = (unsigned)v;
	CHECK(4, col_text(st, 4, false, &state, NULL));
	CHECK(4, job_state_from_string(state, &row->state) < 0 ? -EBADMSG : 0);
	/* Never stored as running; if it were, the same rule applies. */
	if (row->state == JOB_RUNNING)
		row->state = JOB_QUEUED;
	CHECK(5, col_int(st, 5, 0, UINT_MAX, &v));
	row->attempt = (unsigned)v;
	CHECK(6, col_int(st, 6, 0, UINT_MAX, &v));
	row->runs = (unsigned)v;
	CHECK(7, col_text(st, 7, false, &row->payload, &row->payload_len));
	CHECK(8, col_text(st, 8, true, &row->key, NULL));
	CHECK(9, col_text(st, 9, true, &row->error, NULL));
	CHECK(10, col_int(st, 10, 0, 1, &v));
	row->ran_program = v;
	CHECK(11, col_int(st, 11, 0, 1, &v));
	row->timed_out = v;
	CHECK(12, col_int(st, 12, INT_MIN, INT_MAX, &v));
	row->exit_status = (int)v;
	CHECK(13, col_int(st, 13, INT_MIN, INT_MAX, &v));
	row->term_signal = (int)v;
	*ret_col = 14;
	int type = sqlite3_column_type(st, 14);
	if (type == SQLITE_BLOB || type == SQLITE_TEXT) {
		/* As text: the same bytes, NUL-terminated, as the header promises
		 * for every string (a blob's pointer has no terminator). */
		row->stderr_tail = (const char *)sqlite3_column_text(st, 14);
		row->stderr_len = (size_t)sqlite3_column_bytes(st, 14);
		if (!row->stderr_tail)
			return -ENOMEM;
	} else if (type != SQLITE_NULL)
		return -EBADMSG;
	CHECK(15, col_text(st, 15, true, &row->workdir, NULL));
	CHECK(16, col_int(st, 16, INT64_MIN, INT64_MAX, &v));
	row->submitted_usec = (uint64_t)v;
	CHECK(17, col_int(st, 17, INT64_MIN, INT64_MAX, &v));
	row->started_usec = (uint64_t)v;
	CHECK(18, col_int(st, 18, INT64_MIN, INT64_MAX, &v));
	row->finished_usec = (uint64_t)v;
	CHECK(19, col_int(st, 19, INT64_MIN, INT64_MAX, &v));
	row->retry_at_usec = (uint64_t)v;
	row->uid = JOB_UID_UNKNOWN;
	if (sqlite3_column_type(st, 20) != SQLITE_NULL) {
		CHECK(20, col_int(st, 20, 0, (sqlite3_int64)JOB_UID_UNKNOWN - 1, &v));
		row->uid = (uint32_t)v;
	}
#undef CHECK
	return 0;
}

int journal_load(Journal *j, int (*each)(void *ud, const JournalJob *row), void *ud,
                 uint64_t *next_id, char *err, size_t errlen)
{
	assert(!j->started);
	sqlite3_stmt *st = NULL;
	int r = 0;
	int rc = sqlite3_exec(j->db, "BEGIN", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return open_error(j, sqlite3_extended_errcode(j->db), "read", err, errlen);

	sqlite3_int64 meta_next = 0;
	rc = query_one(j, "SELECT value FROM meta WHERE name = 'next_id'", &meta_next, NULL, 0);
	if (rc != SQLITE_OK) {
		r = open_error(j, rc, "read", err, errlen);
		goto out;
	}
	uint64_t next = meta_next > 0 ? (uint64_t)meta_next : 1;

	rc = sqlite3_prepare_v2(j->db,
	                        "SELECT id, pipeline, stage, stage_index, state, attempt, runs, "
	                        "payload, key, error, ran_program, timed_out, exit_status, "
	                        "term_signal, stderr_tail, workdir, submitted_usec, started_usec, "
	                        "finished_usec, retry_at_usec, uid FROM jobs ORDER BY id",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = open_error(j, sqlite3_extended_errcode(j->db), "read", err, errlen);
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		JournalJob row;
		int col;
		r = parse_row(st, &row, &col);
		if (r == -ENOMEM) {
			errf(err, errlen, "out of memory reading the journal %s", j->path);
			goto out;
		}
		if (r < 0) {
			errf(err, errlen,
			     "journal %s: job %lld has a bad %s (%s); the journal is damaged; %s",
			     j->path, (long long)sqlite3_column_int64(st, 0), job_columns[col],
			     sqlite3_column_type(st, col) == SQLITE_NULL ? "NULL"
			                                                 : "unexpected value",
			     damaged_hint);
			goto out;
		}
		/* meta lags behind unless the largest id was deleted (see the
		 * schema): the rows say the rest. */
		if (row.id >= next)
			next = row.id + 1;
		r = each(ud, &row);
		if (r != 0)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		r = open_error(j, sqlite3_extended_errcode(j->db), "read", err, errlen);
		goto out;
	}
	if (next > j->next_id)
		j->next_id = next;
	*next_id = next;
out:
	sqlite3_finalize(st);
	/* A read transaction: ending it cannot lose anything. */
	sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
	if (sqlite3_get_autocommit(j->db) == 0)
		sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}

/* ---- the writer ---------------------------------------------------------- */

static int bind_put(Journal *j, const JournalJob *row)
{
	sqlite3_stmt *st = j->put_stmt;
	JobState state = row->state == JOB_RUNNING ? JOB_QUEUED : row->state;
	int rc = SQLITE_OK;
	/* SQLITE_STATIC: the change outlives the step (freed after COMMIT). */
#define B(call)                                                                                    \
	do {                                                                                       \
		if (rc == SQLITE_OK)                                                               \
			rc = (call);                                                               \
	} while (0)
	B(sqlite3_bind_int64(st, 1, (sqlite3_int64)row->id));
	B(sqlite3_bind_text(st, 2, row->pipeline, -1, SQLITE_STATIC));
	B(sqlite3_bind_text(st, 3, row->stage, -1, SQLITE_STATIC));
	B(sqlite3_bind_int64(st, 4, row->stage_index));
	B(sqlite3_bind_text(st, 5, job_state_to_string(state), -1, SQLITE_STATIC));
	B(sqlite3_bind_int64(st, 6, row->attempt));
	B(sqlite3_bind_int64(st, 7, row->runs));
	B(sqlite3_bind_text64(st, 8, row->payload, row->payload_len, SQLITE_STATIC, SQLITE_UTF8));
	B(row->key ? sqlite3_bind_text(st, 9, row->key, -1, SQLITE_STATIC)
	           : sqlite3_bind_null(st, 9));
	B(row->error ? sqlite3_bind_text(st, 10, row->error, -1, SQLITE_STATIC)
	             : sqlite3_bind_null(st, 10));
	B(sqlite3_bind_int(st, 11, row->ran_program));
	B(sqlite3_bind_int(st, 12, row->timed_out));
	B(sqlite3_bind_int(st, 13, row->exit_status));
	B(sqlite3_bind_int(st, 14, row->term_signal));
	B(row->stderr_tail
	          ? sqlite3_bind_blob64(st, 15, row->stderr_tail, row->stderr_len, SQLITE_STATIC)
	          : sqlite3_bind_null(st, 15));
	B(row->workdir ? sqlite3_bind_text(st, 16, row->workdir, -1, SQLITE_STATIC)
	               : sqlite3_bind_null(st, 16));
	B(sqlite3_bind_int64(st, 17, (sqlite3_int64)row->submitted_usec));
	B(sqlite3_bind_int64(st, 18, (sqlite3_int64)row->started_usec));
	B(sqlite3_bind_int64(st, 19, (sqlite3_int64)row->finished_usec));
	B(sqlite3_bind_int64(st, 20, (sqlite3_int64)row->retry_at_usec));
	B(row->uid == JOB_UID_UNKNOWN ? sqlite3_bind_null(st, 21)
	                              : sqlite3_bind_int64(st, 21, (sqlite3_int64)row->uid));
#undef B
	return rc;
}

/* Records why the journal failed (before `failed` is published). */
static void set_failure(Journal *j, const char *doing, const char *why)
{
	snprintf(j->failure, sizeof(j->failure), "cannot %s the journal %s: %s", doing, j->path,
	         why);
}

/* Applies a batch of n changes in one transaction. Returns true once it has
 * committed; false with the failure recorded (and the transaction rolled
 * back, if it still can be). Sets *ret_last to the batch's last number. */
/* Every change is a whole row (or its removal), so within one transaction
 * only the last change of each job matters: a job submitted and finished
 * in the same batch is written once. Marks the earlier ones superseded.
 * Without memory for the table, nothing is skipped. */
static void mark_superseded(Change *batch, size_t n)
{
	size_t cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	Change **slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return;
	for (Change *c = batch; c; c = c->next) {
		size_t i = (size_t)(c->row.id * 0x9E3779B97F4A7C15u) & (cap - 1);
		while (slots[i] && slots[i]->row.id != c->row.id)
			i = (i + 1) & (cap - 1);
		if (slots[i])
			slots[i]->superseded = true;
		slots[i] = c;
	}
	free(slots);
}

static bool apply_batch(Journal *j, Change *batch, size_t n, uint64_t *ret_last)
{
	char why[256];
	const char *doing = "write to";
	int rc = run(j, j->begin_stmt, why, sizeof(why));
	if (rc != SQLITE_DONE)
		goto fail;

	uint64_t next_id = j->next_id;
	bool write_meta = false;
	size_t half = (n + 1) / 2, i = 0;
	if (n > 1)
		mark_superseded(batch, n);
	for (Change *c = batch; c; c = c->next) {
		if (!c->is_delete && c->row.id >= next_id)
			next_id = c->row.id + 1; /* also when superseded: ids are never reused */
		if (c->is_delete && c->row.id + 1 >= next_id)
			write_meta = true; /* the largest id goes: the table forgets it */
		*ret_last = c->seq;
		if (c->superseded) {
			if (++i == half)
				crashpoint("mid-batch");
			continue;
		}
		sqlite3_stmt *st = c->is_delete ? j->delete_stmt : j->put_stmt;
		rc = c->is_delete ? sqlite3_bind_int64(st, 1, (sqlite3_int64)c->row.id)
		                  : bind_put(j, &c->row);
		if (rc != SQLITE_OK) {
			snprintf(why, sizeof(why), "%s (%s)", sqlite3_errstr(rc), rc_name(rc));
			goto fail;
		}
		rc = run(j, st, why, sizeof(why));
		if (rc != SQLITE_DONE)
			goto fail;
		/* A crash here leaves half a transaction written and uncommitted:
		 * recovery must see none of it. */
		if (++i == half)
			crashpoint("mid-batch");
	}
	if (write_meta) {
		rc = sqlite3_bind_int64(j->meta_stmt, 1, (sqlite3_int64)next_id);
		if (rc == SQLITE_OK)
			rc = run(j, j->meta_stmt, why, sizeof(why));
		if (rc != SQLITE_DONE)
			goto fail;
	}
	doing = "commit to";
	rc = run(j, j->commit_stmt, why, sizeof(why));
	if (rc != SQLITE_DONE)
		goto fail;
	j->next_id = next_id;
	return true;

fail:
	set_failure(j, doing, why);
	/* SQLite may already have rolled back; either way nothing of the batch
	 * is committed, and nothing else will be written. */
	if (sqlite3_get_autocommit(j->db) == 0)
		run(j, j->rollback_stmt, NULL, 0);
	return false;
}

/* Takes the whole FIFO; with the lock held. */
static Change *take_all_locked(Journal *j, size_t *ret_n)
{
	Change *batch = j->head;
	*ret_n = j->pending;
	j->head = NULL;
	j->tail = &j->head;
	j->pending = 0;
	j->pending_bytes = 0;
	j->pending_urgent = 0;
	if (j->waiting_room > 0)
		pthread_cond_broadcast(&j->room);
	return batch;
}

/* The journal has failed (failure recorded): publish it, drop whatever is
 * pending, release blocked appenders and tell the owner. */
static void enter_failed(Journal *j)
{
	atomic_store_explicit(&j->failed, true, memory_order_release);
	size_t n;
	pthread_mutex_lock(&j->lock);
	Change *dropped = take_all_locked(j, &n); /* also releases blocked appenders */
	pthread_mutex_unlock(&j->lock);
	free_changes(dropped);
	if (j->on_commit)
		j->on_commit(j->ud);
}

static void record_commit(Journal *j, size_t n)
{
	uint64_t sec = mono_usec() / 1000000u;
	pthread_mutex_lock(&j->stats_lock);
	j->commits++;
	j->changes += n;
	RateBucket *b = &j->rate[sec % JOURNAL_RATE_WINDOW_SEC];
	if (b->sec != sec)
		*b = (RateBucket){ .sec = sec };
	b->commits++;
	b->changes += n;
	pthread_mutex_unlock(&j->stats_lock);
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Autocheckpoints keep the WAL short, but only truncate it when the next
 * transaction restarts it, and then down to journal_size_limit: after a
 * transaction larger than that the file would keep its size. */
static bool checkpoint_if_large(Journal *j)
{
	if (file_size(j->wal_path) <= JOURNAL_WAL_TRUNCATE_BYTES)
		return true;
	int rc = sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	/* BUSY: a reader in another process holds part of the WAL; the next
	 * commit tries again. */
	if (rc == SQLITE_OK || rc == SQLITE_BUSY)
		return true;
	char why[256];
	describe_error(j->db, sqlite3_extended_errcode(j->db), why, sizeof(why));
	set_failure(j, "checkpoint", why);
	return false;
}

/* Commits one batch taken from the FIFO and does the chores after it.
 * Returns false once the journal has failed. Writer thread (or the owner's,
 * at close without a writer). */
static bool run_batch(Journal *j, Change *batch, size_t n)
{
	uint64_t last = 0;
	if (!apply_batch(j, batch, n, &last)) {
		free_changes(batch);
		enter_failed(j);
		return false;
	}
	atomic_store_explicit(&j->committed, last, memory_order_release);
	if (j->on_commit)
		j->on_commit(j->ud);
	free_changes(batch);
	measure_space(j);
	record_commit(j, n);
	if (!checkpoint_if_large(j)) {
		enter_failed(j);
		return false;
	}
	return true;
}

static void *writer_main(void *arg)
{
	Journal *j = arg;
	pthread_setname_np(pthread_self(), "journal");
	pthread_mutex_lock(&j->lock);
	for (;;) {
		while (!j->head && !j->closing)
			pthread_cond_wait(&j->wake, &j->lock);
		if (!j->head)
			break; /* closing, and everything is committed */
		/* Nobody waits for what is pending (stage transitions, ends,
		 * deletes): wait up to JOURNAL_LAZY_USEC for a submit to commit
		 * them with, so that they share its sync instead of costing one
		 * of their own. A transition committed late only widens the
		 * window in which a crash runs a stage again. */
		if (j->pending_urgent == 0 && !j->closing) {
			struct timespec ts =
			        usec_to_timespec(now_usec(CLOCK_MONOTONIC) + JOURNAL_LAZY_USEC);
			while (j->pending_urgent == 0 && !j->closing &&
			       j->pending < JOURNAL_PENDING_MAX / 2 &&
			       pthread_cond_timedwait(&j->wake, &j->lock, &ts) != ETIMEDOUT)
				;
		}
		size_t n;
		Change *batch = take_all_locked(j, &n);
		pthread_mutex_unlock(&j->lock);
		/* After a failure the writer does nothing more: close joins it. */
		if (!run_batch(j, batch, n))
			return NULL;
		pthread_mutex_lock(&j->lock);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

int journal_start(Journal *j, void (*on_commit)(void *ud), void *ud)
{
	assert(!j->started);
	j->on_commit = on_commit;
	j->ud = ud;
	/* Signals belong to the event loop's thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(&j->thread, NULL, writer_main, j);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e != 0)
		return -e;
	j->started = true;
	return 0;
}

/* ---- appending --------------------------------------------------------- */

static uint64_t append(Journal *j, Change *c, bool may_block)
{
	pthread_mutex_lock(&j->lock);
	while (may_block && !j->closing &&
	       !atomic_load_explicit(&j->failed, memory_order_relaxed) &&
	       (j->pending >= JOURNAL_PENDING_MAX ||
	        j->pending_bytes >= JOURNAL_PENDING_BYTES_MAX)) {
		j->waiting_room++;
		pthread_cond_wait(&j->room, &j->lock);
		j->waiting_room--;
	}
	/* Read under the lock: the writer sets it before taking the lock to
	 * drop the FIFO, so a change is either dropped there or refused here. */
	if (atomic_load_explicit(&j->failed, memory_order_relaxed)) {
		pthread_mutex_unlock(&j->lock);
		free(c);
		return 0;
	}
	c->seq = ++j->last_seq;
	bool was_empty = !j->head;
	*j->tail = c;
	j->tail = &c->next;
	j->pending++;
	j->pending_bytes += c->bytes;
	j->pending_urgent += c->urgent;
	uint64_t seq = c->seq;
	/* The first change of a batch wakes the writer; a submit also ends
	 * its lazy wait. Otherwise, while the FIFO is non-empty, it does not
	 * wait on this. */
	bool wake = was_empty || (c->urgent && j->pending_urgent == 1);
	pthread_mutex_unlock(&j->lock);
	if (wake)
		pthread_cond_signal(&j->wake);
	return seq;
}

static size_t str_size(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

/* Copies len bytes of s (NULL: none) to *p, NUL-terminated; advances *p. */
static const char *copy_str(char **p, const char *s, size_t len)
{
	if (!s)
		return NULL;
	char *d = *p;
	memcpy(d, s, len);
	d[len] = '\0';
	*p += len + 1;
	return d;
}

uint64_t journal_put(Journal *j, const JournalJob *row, bool is_new, bool may_block)
{
	assert(row->id > 0 && row->id <= INT64_MAX);
	assert(row->pipeline && row->stage && row->payload);
	if (atomic_load_explicit(&j->failed, memory_order_relaxed))
		return 0;

	size_t pipeline_len = strlen(row->pipeline), stage_len = strlen(row->stage);
	size_t key_size = str_size(row->key), error_size = str_size(row->error);
	size_t workdir_size = str_size(row->workdir);
	size_t stderr_size = row->stderr_tail ? row->stderr_len + 1 : 0;
	if (row->payload_len > SIZE_MAX / 4 || row->stderr_len > SIZE_MAX / 4)
		return 0;
	size_t bytes = sizeof(Change) + pipeline_len + 1 + stage_len + 1 + row->payload_len + 1 +
	               key_size + error_size + stderr_size + workdir_size;
	Change *c = malloc(bytes);
	if (!c)
		return 0;
	*c = (Change){ .bytes = bytes, .urgent = is_new, .row = *row };
	char *p = (char *)(c + 1);
	c->row.pipeline = copy_str(&p, row->pipeline, pipeline_len);
	c->row.stage = copy_str(&p, row->stage, stage_len);
	c->row.payload = copy_str(&p, row->payload, row->payload_len);
	c->row.key = copy_str(&p, row->key, key_size ? key_size - 1 : 0);
	c->row.error = copy_str(&p, row->error, error_size ? error_size - 1 : 0);
	c->row.stderr_tail = copy_str(&p, row->stderr_tail, row->stderr_len);
	c->row.stderr_len = row->stderr_tail ? row->stderr_len : 0;
	c->row.workdir = copy_str(&p, row->workdir, workdir_size ? workdir_size - 1 : 0);
	assert((size_t)(p - (char *)c) == bytes);

	uint64_t seq = append(j, c, may_block);
	if (seq > 0 && is_new)
		atomic_fetch_add_explicit(&j->puts_new, 1, memory_order_relaxed);
	return seq;
}

uint64_t journal_delete(Journal *j, uint64_t id, bool may_block)
{
	assert(id > 0 && id <= INT64_MAX);
	if (atomic_load_explicit(&j->failed, memory_order_relaxed))
		return 0;
	Change *c = malloc(sizeof(*c));
	if (!c)
		return 0;
	*c = (Change){ .bytes = sizeof(*c), .is_delete = true, .row.id = id };
	return append(j, c, may_block);
}

/* ---- queries ----------------------------------------------------------- */

uint64_t journal_committed(Journal *j)
{
	return atomic_load_explicit(&j->committed, memory_order_acquire);
}

bool journal_failed(Journal *j, char *buf, size_t len)
{
	if (!atomic_load_explicit(&j->failed, memory_order_acquire))
		return false;
	if (buf && len > 0)
		snprintf(buf, len, "%s", j->failure);
	return true;
}

bool journal_space_low(Journal *j)
{
	return atomic_load_explicit(&j->space_low, memory_order_relaxed);
}

void journal_set_min_free(Journal *j, uint64_t min_free_bytes)
{
	atomic_store_explicit(&j->min_free_bytes, min_free_bytes, memory_order_relaxed);
	/* Measured now, not at the next commit: with submits refused there may
	 * be no next commit, and a lowered floor must let them in again. One
	 * statvfs; the writer's own measures may interleave (atomics). */
	measure_space(j);
}

void journal_stats(Journal *j, JournalStats *ret)
{
	uint64_t now = mono_usec();
	uint64_t sec = now / 1000000u;
	uint64_t win_commits = 0, win_changes = 0;
	JournalStats s = { 0 };

	pthread_mutex_lock(&j->stats_lock);
	s.commits = j->commits;
	s.changes = j->changes;
	for (unsigned i = 0; i < JOURNAL_RATE_WINDOW_SEC; i++) {
		const RateBucket *b = &j->rate[i];
		if (b->sec <= sec && sec - b->sec < JOURNAL_RATE_WINDOW_SEC) {
			win_commits += b->commits;
			win_changes += b->changes;
		}
	}
	pthread_mutex_unlock(&j->stats_lock);

	/* A journal younger than the window is measured over its age (at least
	 * a second, so the first commits do not read as thousands per second). */
	double age = (double)(now - j->opened_usec) / 1e6;
	double window = age < JOURNAL_RATE_WINDOW_SEC ? age : JOURNAL_RATE_WINDOW_SEC;
	if (window < 1.0)
		window = 1.0;
	s.commits_per_sec = (double)win_commits / window;
	s.changes_per_commit = win_commits ? (double)win_changes / (double)win_commits : 0.0;
	s.db_bytes = file_size(j->path);
	s.wal_bytes = file_size(j->wal_path);
	s.puts_new = atomic_load_explicit(&j->puts_new, memory_order_relaxed);
	s.free_bytes = atomic_load_explicit(&j->free_bytes, memory_order_relaxed);
	s.min_free_bytes = atomic_load_explicit(&j->min_free_bytes, memory_order_relaxed);
	s.space_low = atomic_load_explicit(&j->space_low, memory_order_relaxed);
	s.failed = atomic_load_explicit(&j->failed, memory_order_acquire);
	*ret = s;
}

/* ---- close ------------------------------------------------------------- */

void journal_join_failed(Journal *j)
{
	if (j && j->started && atomic_load_explicit(&j->failed, memory_order_acquire)) {
		pthread_join(j->thread, NULL); /* it returns right after the failure */
		j->started = false;
	}
}

int journal_close(Journal *j)
{
	if (!j)
		return 0;
	pthread_mutex_lock(&j->lock);
	j->closing = true;
	pthread_cond_broadcast(&j->room);
	pthread_mutex_unlock(&j->lock);
	pthread_cond_signal(&j->wake);

	if (j->started) {
		/* The writer commits what is pending, then exits. */
		pthread_join(j->thread, NULL);
	} else {
		/* Never started: commit what was appended, here. */
		size_t n;
		pthread_mutex_lock(&j->lock);
		Change *batch = take_all_locked(j, &n);
		pthread_mutex_unlock(&j->lock);
		if (batch)
			run_batch(j, batch, n);
	}

	bool failed = atomic_load_explicit(&j->failed, memory_order_acquire);
	if (!failed) {
		/* Leave no WAL behind: the next start reads one file. */
		int rc = sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
		                                   NULL);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
			char why[256];
			describe_error(j->db, sqlite3_extended_errcode(j->db), why, sizeof(why));
			set_failure(j, "checkpoint", why);
			atomic_store_explicit(&j->failed, true, memory_order_release);
			failed = true;
		}
	}
	/* After a failure nothing more is written, not even by close. */
	if (failed)
		sqlite3_db_config(j->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	destroy(j);
	return failed ? -EIO : 0;
}
