/* testvfs.c — see testvfs.h.
 *
 * A shim: every file this VFS opens is a TestVfsFile followed in the same
 * allocation (szOsFile) by the real VFS's file, and every method forwards
 * to the real one except where a mode says otherwise.
 *
 * The power-loss model, and where it is only an approximation:
 *  - Held writes belong to one file handle. Another handle on the same file
 *    (a second connection in this process) reads the real file and does not
 *    see them. The journal keeps one connection, so that is enough.
 *  - xSync writes the held writes through in the order they were made, then
 *    syncs. Anything in the real file counts as durable: the test kills the
 *    process, not the machine, so the real file is what "survives".
 *  - xTruncate first writes the held writes through (without a sync), then
 *    truncates the real file. Modelling an unsynced truncate followed by more
 *    unsynced writes would need ordered truncate records; SQLite truncates
 *    the WAL only when resetting it after a checkpoint and the database only
 *    at the end of a checkpoint or vacuum, after syncing what the truncation
 *    depends on, so the only effect is that a checkpoint's database writes
 *    become "durable" a little early — which the synced WAL already covers.
 *  - xClose drops what is still held, unwritten. SQLite syncs before it
 *    relies on data, and a file closed unsynced just before a power cut
 *    loses those writes too. The catch: in this process a reopen after such
 *    a close does not see them, where a real OS would (synchronous=OFF).
 *  - Nothing is ever memory-mapped (xFetch answers NULL), so every page
 *    SQLite sees has gone through xRead and its overlay.
 *  - The -shm file is not opened through xOpen (the unix VFS maps it on the
 *    database file's xShmMap) and is passed through untouched; after a crash
 *    the first connection rebuilds it from the WAL.
 */
#include "testvfs.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TESTVFS_NAME "testvfs"

/* One write held in memory: data[0..len) belongs at file offset off. */
typedef struct HeldWrite {
	struct HeldWrite *next;
	sqlite3_int64 off;
	int len;
	unsigned char data[];
} HeldWrite;

typedef struct TestVfsFile {
	sqlite3_file base;
	/* The real VFS's file, right after this struct in the same allocation. */
	sqlite3_file *real;
	/* Writes are held (powerloss mode and a db, WAL or journal file). Fixed
	 * at open, so a re-registration does not change a file mid-life. */
	bool hold;
	/* Held writes, oldest first; later ones overwrite earlier ones. */
	HeldWrite *head, *tail;
	/* Largest off + len over the held writes, 0 when none. */
	sqlite3_int64 held_end;
	unsigned long nheld;
} TestVfsFile;

/* Configuration, written by testvfs_register before connections open and
 * read by any connection's thread: atomics so TSan sees no race. 0 means
 * "never fail". */
static atomic_bool cfg_powerloss;
static atomic_ulong cfg_fail_write_at, cfg_fail_sync_at;
/* sync-gate: xSync waits while this file does not exist ("": no gate).
 * Written at registration, before any connection (and thread) uses it. */
static char cfg_sync_gate[PATH_MAX];

static atomic_ulong nwrites, nsyncs;
/* A current count over open files, not since registration: never reset. */
static atomic_ulong nheld;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs testvfs;
static bool registered;

#define REAL(f) (((TestVfsFile *)(f))->real)

/* Frees the held writes without writing them. */
static void drop_held(TestVfsFile *f)
{
	for (HeldWrite *w = f->head, *next; w; w = next) {
		next = w->next;
		free(w);
	}
	atomic_fetch_sub(&nheld, f->nheld);
	f->head = f->tail = NULL;
	f->held_end = 0;
	f->nheld = 0;
}

/* Writes the held writes through to the real file, oldest first, and frees
 * them. On an error the ones not yet written stay held, in order. */
static int flush_held(TestVfsFile *f)
{
	while (f->head) {
		HeldWrite *w = f->head;
		int rc = f->real->pMethods->xWrite(f->real, w->data, w->len, w->off);
		if (rc != SQLITE_OK)
			return rc;
		f->head = w->next;
		free(w);
		f->nheld--;
		atomic_fetch_sub(&nheld, 1);
	}
	f->tail = NULL;
	f->held_end = 0;
	return SQLITE_OK;
}

static int tv_close(sqlite3_file *file)
{
	TestVfsFile *f = (TestVfsFile *)file;
	drop_held(f);
	return f->real->pMethods->xClose(f->real);
}

static int tv_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
	TestVfsFile *f = (TestVfsFile *)file;
	/* On a short read the unix VFS zero-fills the rest of buf, which is what
	 * a hole between the real end and a held write reads as. */
	int rc = f->real->pMethods->xRead(f->real, buf, amt, off);
	if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ)
		return rc;
	sqlite3_int64 end = off + amt;
	for (HeldWrite *w = f->head; w; w = w->next) {
		sqlite3_int64 from = w->off > off ? w->off : off;
		sqlite3_int64 to = w->off + w->len < end ? w->off + w->len : end;
		if (from < to)
			memcpy((unsigned char *)buf + (from - off), w->data + (from - w->off),
			       (size_t)(to - from));
	}
	/* Short only if the range ends past both the real file and the held
	 * writes: SQLite reads a WAL's or journal's end that way. */
	if (rc == SQLITE_IOERR_SHORT_READ && end <= f->held_end)
		rc = SQLITE_OK;
	return rc;
}

static int tv_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off)
{
	TestVfsFile *f = (TestVfsFile *)file;
	unsigned long n = atomic_fetch_add(&nwrites, 1) + 1;
	unsigned long fail_at = atomic_load_explicit(&cfg_fail_write_at, memory_order_relaxed);
	if (fail_at && n >= fail_at)
		return SQLITE_IOERR_WRITE;
	if (!f->hold)
		return f->real->pMethods->xWrite(f->real, buf, amt, off);

	HeldWrite *w = malloc(sizeof(*w) + (size_t)amt);
	if (!w)
		return SQLITE_IOERR_NOMEM;
	w->next = NULL;
	w->off = off;
	w->len = amt;
	memcpy(w->data, buf, (size_t)amt);
	if (f->tail)
		f->tail->next = w;
	else
		f->head = w;
	f->tail = w;
	if (off + amt > f->held_end)
		f->held_end = off + amt;
	f->nheld++;
	atomic_fetch_add(&nheld, 1);
	return SQLITE_OK;
}

static int tv_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	TestVfsFile *f = (TestVfsFile *)file;
	/* Write-through first: see the top of the file for why that is enough. */
	int rc = flush_held(f);
	if (rc != SQLITE_OK)
		return rc;
	return f->real->pMethods->xTruncate(f->real, size);
}

static int tv_sync(sqlite3_file *file, int flags)
{
	TestVfsFile *f = (TestVfsFile *)file;
	unsigned long n = atomic_fetch_add(&nsyncs, 1) + 1;
	unsigned long fail_at = atomic_load_explicit(&cfg_fail_sync_at, memory_order_relaxed);
	if (fail_at && n >= fail_at)
		return SQLITE_IOERR_FSYNC;
	/* A test holds the commit here for as long as it likes: polled, as
	 * nothing here may depend on the test's process. */
	while (cfg_sync_gate[0] && access(cfg_sync_gate, F_OK) != 0)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	int rc = flush_held(f);
	if (rc != SQLITE_OK)
		return rc;
	return f->real->pMethods->xSync(f->real, flags);
}

static int tv_file_size(sqlite3_file *file, sqlite3_int64 *ret)
{
	TestVfsFile *f = (TestVfsFile *)file;
	int rc = f->real->pMethods->xFileSize(f->real, ret);
	if (rc == SQLITE_OK && f->held_end > *ret)
		*ret = f->held_end;
	return rc;
}

static int tv_lock(sqlite3_file *file, int lock)
{
	return REAL(file)->pMethods->xLock(REAL(file), lock);
}

static int tv_unlock(sqlite3_file *file, int lock)
{
	return REAL(file)->pMethods->xUnlock(REAL(file), lock);
}

static int tv_check_reserved_lock(sqlite3_file *file, int *ret)
{
	return REAL(file)->pMethods->xCheckReservedLock(REAL(file), ret);
}

static int tv_file_control(sqlite3_file *file, int op, void *arg)
{
	/* SQLITE_FCNTL_VFSNAME etc. answer for the real file; harmless. Size
	 * hints may grow the real file with zeros, which xFileSize covers. */
	return REAL(file)->pMethods->xFileControl(REAL(file), op, arg);
}

static int tv_sector_size(sqlite3_file *file)
{
	return REAL(file)->pMethods->xSectorSize(REAL(file));
}

static int tv_device_characteristics(sqlite3_file *file)
{
	return REAL(file)->pMethods->xDeviceCharacteristics(REAL(file));
}

static int tv_shm_map(sqlite3_file *file, int pg, int pgsz, int extend, void volatile **ret)
{
	sqlite3_file *r = REAL(file);
	if (r->pMethods->iVersion < 2 || !r->pMethods->xShmMap)
		return SQLITE_IOERR_SHMMAP;
	return r->pMethods->xShmMap(r, pg, pgsz, extend, ret);
}

static int tv_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
	sqlite3_file *r = REAL(file);
	if (r->pMethods->iVersion < 2 || !r->pMethods->xShmLock)
		return SQLITE_IOERR_SHMLOCK;
	return r->pMethods->xShmLock(r, offset, n, flags);
}

static void tv_shm_barrier(sqlite3_file *file)
{
	sqlite3_file *r = REAL(file);
	if (r->pMethods->iVersion >= 2 && r->pMethods->xShmBarrier)
		r->pMethods->xShmBarrier(r);
}

static int tv_shm_unmap(sqlite3_file *file, int delete_flag)
{
	sqlite3_file *r = REAL(file);
	if (r->pMethods->iVersion < 2 || !r->pMethods->xShmUnmap)
		return SQLITE_OK;
	return r->pMethods->xShmUnmap(r, delete_flag);
}

/* Never memory-map: a mapped page would bypass the held-write overlay.
 * NULL tells SQLite to fall back to xRead. */
static int tv_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **ret)
{
	*ret = NULL;
	return SQLITE_OK;
}

static int tv_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
	return SQLITE_OK;
}

static const sqlite3_io_methods tv_io_methods = {
	.iVersion = 3,
	.xClose = tv_close,
	.xRead = tv_read,
	.xWrite = tv_write,
	.xTruncate = tv_truncate,
	.xSync = tv_sync,
	.xFileSize = tv_file_size,
	.xLock = tv_lock,
	.xUnlock = tv_unlock,
	.xCheckReservedLock = tv_check_reserved_lock,
	.xFileControl = tv_file_control,
	.xSectorSize = tv_sector_size,
	.xDeviceCharacteristics = tv_device_characteristics,
	.xShmMap = tv_shm_map,
	.xShmLock = tv_shm_lock,
	.xShmBarrier = tv_shm_barrier,
	.xShmUnmap = tv_shm_unmap,
	.xFetch = tv_fetch,
	.xUnfetch = tv_unfetch,
};

static int tv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                   int *ret_flags)
{
	TestVfsFile *f = (TestVfsFile *)file;
	*f = (TestVfsFile){ .real = (sqlite3_file *)(f + 1) };
	f->hold = atomic_load_explicit(&cfg_powerloss, memory_order_relaxed) &&
	          (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL));
	/* pMethods stays NULL unless the real open succeeds, so SQLite calls no
	 * xClose on a failed open; the real VFS cleans up after itself. */
	int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, ret_flags);
	if (rc != SQLITE_OK) {
		if (f->real->pMethods)
			f->real->pMethods->xClose(f->real);
		return rc;
	}
	f->base.pMethods = &tv_io_methods;
	return SQLITE_OK;
}

static int tv_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int tv_access(sqlite3_vfs *vfs, const char *name, int flags, int *ret)
{
	return real_vfs->xAccess(real_vfs, name, flags, ret);
}

static int tv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *tv_dl_open(sqlite3_vfs *vfs, const char *path)
{
	return real_vfs->xDlOpen(real_vfs, path);
}

static void tv_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
	real_vfs->xDlError(real_vfs, n, msg);
}

static void (*tv_dl_sym(sqlite3_vfs *vfs, void *handle, const char *sym))(void)
{
	return real_vfs->xDlSym(real_vfs, handle, sym);
}

static void tv_dl_close(sqlite3_vfs *vfs, void *handle)
{
	real_vfs->xDlClose(real_vfs, handle);
}

static int tv_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	return real_vfs->xRandomness(real_vfs, n, out);
}

static int tv_sleep(sqlite3_vfs *vfs, int usec)
{
	return real_vfs->xSleep(real_vfs, usec);
}

static int tv_current_time(sqlite3_vfs *vfs, double *ret)
{
	return real_vfs->xCurrentTime(real_vfs, ret);
}

static int tv_get_last_error(sqlite3_vfs *vfs, int n, char *msg)
{
	return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, msg) : 0;
}

static int tv_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *ret)
{
	if (real_vfs->iVersion >= 2 && real_vfs->xCurrentTimeInt64)
		return real_vfs->xCurrentTimeInt64(real_vfs, ret);
	double t;
	int rc = real_vfs->xCurrentTime(real_vfs, &t);
	*ret = (sqlite3_int64)(t * 86400000.0);
	return rc;
}

/* Parses a decimal N >= 1 that ends the token at *end. */
static int parse_count(const char *s, const char *end, unsigned long *ret)
{
	if (s == end || *s < '0' || *s > '9')
		return -EINVAL;
	unsigned long n = 0;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*s - '0');
		if (n > (((unsigned long)-1) - d) / 10)
			return -EINVAL;
		n = n * 10 + d;
	}
	if (n == 0)
		return -EINVAL;
	*ret = n;
	return 0;
}

int testvfs_register(const char *spec)
{
	if (!spec || !*spec)
		return -EINVAL;
	bool powerloss = false;
	unsigned long fail_write = 0, fail_sync = 0;
	char gate[PATH_MAX] = "";
	for (const char *tok = spec;;) {
		const char *end = strchr(tok, ',');
		if (!end)
			end = tok + strlen(tok);
		size_t len = (size_t)(end - tok);
		static const char fw[] = "fail-write:", fs[] = "fail-sync:", sg[] = "sync-gate:/";
		if (len == strlen("powerloss") && !memcmp(tok, "powerloss", len))
			powerloss = true;
		else if (len > strlen(fw) && !memcmp(tok, fw, strlen(fw))) {
			if (parse_count(tok + strlen(fw), end, &fail_write) < 0)
				return -EINVAL;
		} else if (len > strlen(fs) && !memcmp(tok, fs, strlen(fs))) {
			if (parse_count(tok + strlen(fs), end, &fail_sync) < 0)
				return -EINVAL;
		} else if (len >= strlen(sg) && !memcmp(tok, sg, strlen(sg)) &&
		           len - strlen(sg) + 1 < sizeof(gate)) {
			/* An absolute path, after "sync-gate:" (the '/' is part of it). */
			size_t at = strlen(sg) - 1;
			memcpy(gate, tok + at, len - at);
			gate[len - at] = '\0';
		} else
			return -EINVAL; /* unknown mode, or an empty one (",,") */
		if (!*end)
			break;
		tok = end + 1;
	}

	/* Take ours out first so the default found below is the real one, not
	 * ourselves (which would forward to itself forever). */
	if (registered) {
		sqlite3_vfs_unregister(&testvfs);
		registered = false;
	}
	int rc = sqlite3_initialize();
	if (rc != SQLITE_OK)
		return rc == SQLITE_NOMEM ? -ENOMEM : -EIO;
	sqlite3_vfs *real = sqlite3_vfs_find(NULL);
	if (!real)
		return -ENOENT;
	real_vfs = real;

	atomic_store(&cfg_powerloss, powerloss);
	atomic_store(&cfg_fail_write_at, fail_write);
	atomic_store(&cfg_fail_sync_at, fail_sync);
	memcpy(cfg_sync_gate, gate, sizeof(gate));
	atomic_store(&nwrites, 0);
	atomic_store(&nsyncs, 0);

	testvfs = (sqlite3_vfs){
		.iVersion = 2,
		.szOsFile = (int)sizeof(TestVfsFile) + real->szOsFile,
		.mxPathname = real->mxPathname,
		.zName = TESTVFS_NAME,
		.xOpen = tv_open,
		.xDelete = tv_delete,
		.xAccess = tv_access,
		.xFullPathname = tv_full_pathname,
		.xDlOpen = tv_dl_open,
		.xDlError = tv_dl_error,
		.xDlSym = tv_dl_sym,
		.xDlClose = tv_dl_close,
		.xRandomness = tv_randomness,
		.xSleep = tv_sleep,
		.xCurrentTime = tv_current_time,
		.xGetLastError = tv_get_last_error,
		.xCurrentTimeInt64 = tv_current_time_int64,
	};
	rc = sqlite3_vfs_register(&testvfs, 1);
	if (rc != SQLITE_OK)
		return rc == SQLITE_NOMEM ? -ENOMEM : -EIO;
	registered = true;
	return 1;
}

int testvfs_register_from_env(void)
{
	const char *spec = getenv("PIPELINED_TEST_VFS");
	if (!spec || !*spec)
		return 0;
	return testvfs_register(spec);
}

void testvfs_stats(TestVfsStats *ret)
{
	*ret = (TestVfsStats){
		.held_writes = atomic_load(&nheld),
		.writes = atomic_load(&nwrites),
		.syncs = atomic_load(&nsyncs),
	};
}
