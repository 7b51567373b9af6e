/* Unit tests for daemon/testvfs.c: the power-loss model (a killed process
 * keeps exactly what was synced), held writes seen by their own handle, the
 * injected write and sync failures, and the spec parser. */
#include <errno.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "testvfs.h"

static char dir[64];
static char db_path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_testvfs.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(db_path, sizeof(db_path), "%s/db", dir);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static void teardown(void)
{
	nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void exec_ok(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, err ? err : sqlite3_errstr(rc));
}

static sqlite3 *open_db(const char *path, const char *vfs)
{
	sqlite3 *db;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs);
	ck_assert_msg(rc == SQLITE_OK, "open %s: %s", path, sqlite3_errmsg(db));
	sqlite3_extended_result_codes(db, 1);
	return db;
}

static long long query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	long long v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static off_t disk_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* --- power loss ---------------------------------------------------------- */

enum { POWERLOSS_COMMITS = 200 };

/* The child's side: commits POWERLOSS_COMMITS one-row transactions under
 * `sync` and dies without closing anything. The table is made durable under
 * FULL first, so the parent can count rows even when none of the inserts
 * survived. Returns only on failure (no ck_assert here: this is not the
 * process Check watches). */
static int powerloss_child(const char *sync)
{
	if (testvfs_register("powerloss") != 1)
		return -1;
	sqlite3 *db;
	if (sqlite3_open(db_path, &db) != SQLITE_OK)
		return -1;
	char sql[128];
	snprintf(sql, sizeof(sql), "PRAGMA synchronous=%s", sync);
	if (sqlite3_exec(db,
	                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
	                 "CREATE TABLE t(x)",
	                 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return -1;
	int n = 0;
	for (; n < POWERLOSS_COMMITS; n++) {
		snprintf(sql, sizeof(sql), "BEGIN; INSERT INTO t VALUES (%d); COMMIT", n);
		if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
			break;
	}
	return n;
}

/* Runs powerloss_child in a fork that exits without closing the database
 * (the power cut), then counts the rows that survived with the plain unix
 * VFS. */
static long long rows_after_powerloss(const char *sync)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fds[0]);
		int n = powerloss_child(sync);
		ssize_t w = write(fds[1], &n, sizeof(n));
		_exit(w == sizeof(n) ? 0 : 1);
	}
	close(fds[1]);
	int committed = -1;
	ck_assert_int_eq(read(fds[0], &committed, sizeof(committed)), sizeof(committed));
	close(fds[0]);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(committed, POWERLOSS_COMMITS);

	/* "unix" by name: with CK_FORK=no an earlier test's registration
	 * would otherwise still be the default here. */
	sqlite3 *db = open_db(db_path, "unix");
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
	                 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	long long rows = query_int(db, "SELECT count(*) FROM t");
	/* Rows are 0..rows-1: a WAL keeps a prefix of the commits. */
	if (rows > 0)
		ck_assert_int_eq(query_int(db, "SELECT max(x) FROM t"), rows - 1);
	sqlite3_close(db);
	return rows;
}

START_TEST(test_powerloss_wal_full_keeps_every_commit)
{
	/* FULL syncs the WAL at every commit. */
	ck_assert_int_eq(rows_after_powerloss("FULL"), POWERLOSS_COMMITS);
}
END_TEST

START_TEST(test_powerloss_wal_normal_loses_commits)
{
	/* NORMAL syncs the WAL only at checkpoints (and when it restarts the
	 * WAL header); 200 small commits stay below the 1000-page
	 * auto-checkpoint, so none of them reached the disk. If this test
	 * finds all 200 rows, the VFS is not holding unsynced writes and the
	 * FULL test above proves nothing. */
	ck_assert_int_lt(rows_after_powerloss("NORMAL"), POWERLOSS_COMMITS);
}
END_TEST

/* --- held writes within the process -------------------------------------- */

START_TEST(test_held_writes_visible_to_own_reads)
{
	ck_assert_int_eq(testvfs_register("powerloss"), 1);
	sqlite3 *db = open_db(db_path, NULL);
	exec_ok(db, "PRAGMA synchronous=OFF; CREATE TABLE t(x);"
	            "INSERT INTO t VALUES ('hello')");
	TestVfsStats s;
	testvfs_stats(&s);
	ck_assert_uint_gt(s.held_writes, 0);
	ck_assert_uint_gt(s.writes, 0);
	ck_assert_uint_eq(s.syncs, 0);
	/* Nothing reached the file; the page came back from the overlay. */
	ck_assert_int_eq(disk_size(db_path), 0);
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT x FROM t", -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "hello");
	sqlite3_finalize(st);

	/* A synced commit (rollback journal: journal then database synced)
	 * writes everything through, so another handle sees both rows. */
	exec_ok(db, "PRAGMA synchronous=FULL; INSERT INTO t VALUES ('world')");
	testvfs_stats(&s);
	ck_assert_uint_eq(s.held_writes, 0);
	ck_assert_uint_gt(s.syncs, 0);
	ck_assert_int_gt(disk_size(db_path), 0);
	sqlite3 *other = open_db(db_path, "unix");
	ck_assert_int_eq(query_int(other, "SELECT count(*) FROM t"), 2);
	sqlite3_close(other);
	sqlite3_close(db);
}
END_TEST

/* The file methods directly: overlay order, short reads, size, truncate,
 * sync and drop-on-close, with the real file checked on disk. */
START_TEST(test_file_methods)
{
	ck_assert_int_eq(testvfs_register("powerloss"), 1);
	sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
	ck_assert_str_eq(vfs->zName, "testvfs");
	ck_assert_ptr_eq(sqlite3_vfs_find("testvfs"), vfs);

	/* Main-database names are followed by (empty) URI parameters. */
	char name[256] = { 0 };
	snprintf(name, sizeof(name) - 4, "%s", db_path);
	sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
	int flags = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	ck_assert_int_eq(vfs->xOpen(vfs, name, f, flags, NULL), SQLITE_OK);
	const sqlite3_io_methods *m = f->pMethods;
	ck_assert_ptr_nonnull(m);

	ck_assert_int_eq(m->xWrite(f, "abcd", 4, 10), SQLITE_OK);
	ck_assert_int_eq(m->xWrite(f, "XY", 2, 11), SQLITE_OK);
	TestVfsStats s;
	testvfs_stats(&s);
	ck_assert_uint_eq(s.held_writes, 2);
	ck_assert_uint_eq(s.writes, 2);
	ck_assert_int_eq(disk_size(db_path), 0);
	sqlite3_int64 size;
	ck_assert_int_eq(m->xFileSize(f, &size), SQLITE_OK);
	ck_assert_int_eq(size, 14);

	char buf[16];
	memset(buf, '?', sizeof(buf));
	ck_assert_int_eq(m->xRead(f, buf, 14, 0), SQLITE_OK);
	ck_assert_mem_eq(buf, "\0\0\0\0\0\0\0\0\0\0aXYd", 14);
	/* Past the end of both: zero-filled and short. */
	memset(buf, '?', sizeof(buf));
	ck_assert_int_eq(m->xRead(f, buf, 8, 8), SQLITE_IOERR_SHORT_READ);
	ck_assert_mem_eq(buf, "\0\0aXYd\0\0", 8);

	ck_assert_int_eq(m->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	testvfs_stats(&s);
	ck_assert_uint_eq(s.held_writes, 0);
	ck_assert_uint_eq(s.syncs, 1);
	ck_assert_int_eq(disk_size(db_path), 14);

	/* A held write past the truncation point is written through first,
	 * then cut off with the rest. */
	ck_assert_int_eq(m->xWrite(f, "zz", 2, 20), SQLITE_OK);
	ck_assert_int_eq(m->xWrite(f, "B", 1, 0), SQLITE_OK);
	ck_assert_int_eq(m->xTruncate(f, 12), SQLITE_OK);
	ck_assert_int_eq(m->xFileSize(f, &size), SQLITE_OK);
	ck_assert_int_eq(size, 12);
	ck_assert_int_eq(disk_size(db_path), 12);

	/* Held at close: dropped, never written. */
	ck_assert_int_eq(m->xWrite(f, "q", 1, 1), SQLITE_OK);
	ck_assert_int_eq(m->xWrite(f, "tail", 4, 100), SQLITE_OK);
	ck_assert_int_eq(m->xClose(f), SQLITE_OK);
	testvfs_stats(&s);
	ck_assert_uint_eq(s.held_writes, 0);
	free(f);

	FILE *fp = fopen(db_path, "rb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fread(buf, 1, sizeof(buf), fp), 12);
	fclose(fp);
	ck_assert_mem_eq(buf, "B\0\0\0\0\0\0\0\0\0aX", 12);
}
END_TEST

/* Files that are not database, WAL or journal (here a temp file) are
 * written straight through, even in powerloss mode. */
START_TEST(test_other_files_pass_through)
{
	ck_assert_int_eq(testvfs_register("powerloss"), 1);
	sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
	char name[256] = { 0 };
	snprintf(name, sizeof(name) - 4, "%s/tmp", dir);
	sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
	int flags = SQLITE_OPEN_TEMP_JOURNAL | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	ck_assert_int_eq(vfs->xOpen(vfs, name, f, flags, NULL), SQLITE_OK);
	ck_assert_int_eq(f->pMethods->xWrite(f, "abc", 3, 0), SQLITE_OK);
	TestVfsStats s;
	testvfs_stats(&s);
	ck_assert_uint_eq(s.held_writes, 0);
	ck_assert_uint_eq(s.writes, 1);
	ck_assert_int_eq(disk_size(name), 3);
	ck_assert_int_eq(f->pMethods->xClose(f), SQLITE_OK);
	free(f);
}
END_TEST

/* --- injected failures --------------------------------------------------- */

enum { FAIL_COMMIT = 3 }; /* the commit that meets the failure, from 1 */

static sqlite3 *open_wal_full(const char *path)
{
	sqlite3 *db = open_db(path, NULL);
	exec_ok(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(x)");
	return db;
}

static int commit_one(sqlite3 *db, int i)
{
	char sql[96];
	exec_ok(db, "BEGIN");
	snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d)", i);
	exec_ok(db, sql);
	return sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
}

/* Counts, on a fresh database, the writes or syncs made up to the end of
 * commit FAIL_COMMIT - 1: failing the next one hits commit FAIL_COMMIT.
 * Measured rather than assumed, so SQLite may change how many calls a
 * commit takes. */
static unsigned long calls_before_fail_commit(bool syncs)
{
	ck_assert_int_eq(testvfs_register("powerloss"), 1);
	char path[160];
	snprintf(path, sizeof(path), "%s/dry", dir);
	sqlite3 *db = open_wal_full(path);
	for (int i = 1; i < FAIL_COMMIT; i++)
		ck_assert_int_eq(commit_one(db, i), SQLITE_OK);
	TestVfsStats s;
	testvfs_stats(&s);
	sqlite3_close(db);
	return syncs ? s.syncs : s.writes;
}

static void check_fail_at(const char *mode, bool syncs, int want_rc)
{
	unsigned long n = calls_before_fail_commit(syncs) + 1;
	char spec[64];
	/* With powerloss, the failed commit's frames stay held and are
	 * dropped at close. Without it they would be in the WAL file even
	 * though the sync failed, and recovery would bring the commit back:
	 * a failed fsync does not mean the data is not on disk. */
	snprintf(spec, sizeof(spec), "powerloss,%s:%lu", mode, n);
	/* Registering again resets the counters. */
	ck_assert_int_eq(testvfs_register(spec), 1);
	TestVfsStats s;
	testvfs_stats(&s);
	ck_assert_uint_eq(s.writes, 0);
	ck_assert_uint_eq(s.syncs, 0);

	sqlite3 *db = open_wal_full(db_path);
	for (int i = 1; i < FAIL_COMMIT; i++)
		ck_assert_int_eq(commit_one(db, i), SQLITE_OK);
	ck_assert_int_eq(commit_one(db, FAIL_COMMIT), want_rc);
	ck_assert_int_eq(sqlite3_extended_errcode(db), want_rc);
	testvfs_stats(&s);
	ck_assert_uint_eq(syncs ? s.syncs : s.writes, n);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	/* And every later call fails too. */
	ck_assert_int_eq(commit_one(db, FAIL_COMMIT + 1), want_rc);
	sqlite3_close(db);

	sqlite3 *check = open_db(db_path, "unix");
	ck_assert_int_eq(query_int(check, "SELECT count(*) FROM t"), FAIL_COMMIT - 1);
	sqlite3_close(check);
}

START_TEST(test_fail_sync)
{
	check_fail_at("fail-sync", true, SQLITE_IOERR_FSYNC);
}
END_TEST

START_TEST(test_fail_write)
{
	check_fail_at("fail-write", false, SQLITE_IOERR_WRITE);
}
END_TEST

/* --- spec parsing -------------------------------------------------------- */

START_TEST(test_spec_parsing)
{
	static const char *const valid[] = {
		"powerloss",
		"fail-write:1",
		"fail-sync:40",
		"powerloss,fail-sync:40",
		"fail-sync:2,fail-write:3,powerloss",
		"fail-write:18446744073709551615",
	};
	for (size_t i = 0; i < sizeof(valid) / sizeof(*valid); i++)
		ck_assert_msg(testvfs_register(valid[i]) == 1, "%s", valid[i]);
	ck_assert_str_eq(sqlite3_vfs_find(NULL)->zName, "testvfs");

	static const char *const invalid[] = {
		"",
		"bogus",
		"powerloss,",
		",powerloss",
		"powerloss,,fail-sync:1",
		"Powerloss",
		"powerloss ",
		"powerlossx",
		"fail-sync",
		"fail-sync:",
		"fail-sync:0",
		"fail-sync:x",
		"fail-sync:1x",
		"fail-sync:-1",
		"fail-sync:+1",
		"fail-sync: 1",
		"fail-write:18446744073709551616",
		"fail-write:99999999999999999999999",
		"sync-gate:",
		"sync-gate:relative/path",
	};
	for (size_t i = 0; i < sizeof(invalid) / sizeof(*invalid); i++)
		ck_assert_msg(testvfs_register(invalid[i]) == -EINVAL, "%s", invalid[i]);
	ck_assert_int_eq(testvfs_register(NULL), -EINVAL);

	/* A bad spec leaves the earlier registration in place. */
	ck_assert_str_eq(sqlite3_vfs_find(NULL)->zName, "testvfs");
	/* A gate that always exists: accepted, and syncs never wait. */
	ck_assert_int_eq(testvfs_register("powerloss,sync-gate:/"), 1);
}
END_TEST

START_TEST(test_register_from_env)
{
	/* Compared with what was there, not with "unix": with CK_FORK=no an
	 * earlier test's registration is still the default. */
	sqlite3_vfs *before = sqlite3_vfs_find(NULL);
	unsetenv("PIPELINED_TEST_VFS");
	ck_assert_int_eq(testvfs_register_from_env(), 0);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), before);
	setenv("PIPELINED_TEST_VFS", "", 1);
	ck_assert_int_eq(testvfs_register_from_env(), 0);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), before);
	setenv("PIPELINED_TEST_VFS", "bogus", 1);
	ck_assert_int_eq(testvfs_register_from_env(), -EINVAL);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), before);
	setenv("PIPELINED_TEST_VFS", "powerloss,fail-sync:5", 1);
	ck_assert_int_eq(testvfs_register_from_env(), 1);
	ck_assert_str_eq(sqlite3_vfs_find(NULL)->zName, "testvfs");
	unsetenv("PIPELINED_TEST_VFS");

	/* Registered twice, it is still one VFS that wraps the real default
	 * (not itself): a database opens and works. */
	ck_assert_int_eq(testvfs_register("powerloss"), 1);
	sqlite3 *db = open_db(db_path, NULL);
	exec_ok(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t"), 1);
	sqlite3_close(db);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("testvfs");
	TCase *tc = tcase("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_powerloss_wal_full_keeps_every_commit);
	tcase_add_test(tc, test_powerloss_wal_normal_loses_commits);
	tcase_add_test(tc, test_held_writes_visible_to_own_reads);
	tcase_add_test(tc, test_file_methods);
	tcase_add_test(tc, test_other_files_pass_through);
	tcase_add_test(tc, test_fail_sync);
	tcase_add_test(tc, test_fail_write);
	tcase_add_test(tc, test_spec_parsing);
	tcase_add_test(tc, test_register_from_env);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
