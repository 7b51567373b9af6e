/* testvfs.h — a test-only SQLite VFS for the durability tests: simulated
 * power loss and injected I/O failures.
 *
 * It wraps the default ("unix") VFS and, once registered, becomes the
 * default, so the journal's connection uses it without knowing. Chosen by
 * PIPELINED_TEST_VFS (read by testvfs_register_from_env; unset or empty:
 * nothing is registered and SQLite runs as shipped):
 *
 *   powerloss     Writes to the database, WAL and journal files are held in
 *                 this process's memory until xSync on that file, which
 *                 writes them through (in order) and then syncs. Reads,
 *                 xFileSize and xTruncate see the held writes. So killing the
 *                 process drops exactly what a power cut would: everything
 *                 not yet synced. (The -shm file is passed through: SQLite
 *                 rebuilds it from the WAL after a crash.)
 *   fail-write:N  The Nth xWrite (counting from 1, over all files but -shm)
 *                 and every later one fails with SQLITE_IOERR_WRITE.
 *   fail-sync:N   The Nth xSync and every later one fails with
 *                 SQLITE_IOERR_FSYNC.
 *   sync-gate:PATH  Every xSync first waits (polling every millisecond)
 *                 while the file PATH (absolute, no comma) does not exist:
 *                 a test holds the journal's commits by removing it.
 *
 * Modes combine with commas ("powerloss,fail-sync:40"). Never use it in
 * production: it keeps unsynced data in memory.
 *
 * Threads: register before any connection opens; the VFS itself may be used
 * from any thread (one connection per thread, as SQLite's own). */
#pragma once

/* Registers the VFS described by PIPELINED_TEST_VFS as the default.
 * Returns 1 if registered, 0 if the variable is unset or empty, -EINVAL for
 * a value it does not understand, -ENOMEM. */
int testvfs_register_from_env(void);

/* As testvfs_register_from_env, from a spec string (for unit tests). */
int testvfs_register(const char *spec);

/* Counters since registration (for tests): writes held in memory now
 * (powerloss), xWrite and xSync calls seen. */
typedef struct TestVfsStats {
	unsigned long held_writes, writes, syncs;
} TestVfsStats;
void testvfs_stats(TestVfsStats *ret);
