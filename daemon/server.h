/* server.h — the daemon's event loop side: the control socket, client
 * connections, the Varlink methods, and the pipelines as the loop sees them.
 *
 * One libuv loop thread runs all of it and never blocks: it submits with a
 * non-blocking try-put, learns of ended jobs through the Mailbox, of room in
 * a full first queue and of a finished close through per-pipeline async
 * handles, and answers calls that must wait (WaitJob, Drain, Close, a held
 * Submit, Reload) when the event they wait for arrives.
 *
 * Connections: calls on one connection are answered in order. A call that
 * has to wait "holds" its connection: later calls stay buffered. A Submit
 * held because the first queue is full stops reading the connection
 * altogether (backpressure reaches the client); other holds keep reading a
 * little, to notice a peer that hangs up. A reply that waits only for the
 * journal's commit is no hold: later calls are taken, and their replies
 * wait behind it (at most PENDING_REPLIES_MAX), so pipelined submits share
 * commits.
 *
 * Owns: the listening socket, every connection, every pipeline (through its
 * Line record), the job table, the Config. Borrows: the loop.
 *
 * Threads: every function here on the loop thread only. Worker threads
 * reach it only through the pipeline hooks, which post or uv_async_send.
 * What may block runs on libuv's thread pool (uv_queue_work) and touches
 * only its own request: a reload's config_load, scratch directory
 * removals. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct Server Server;

/* New server on loop with config (stolen, also on failure). config_path is
 * what Reload re-reads. Starts every pipeline's workers. Returns 0, -errno. */
int server_new(uv_loop_t *loop, Config *config, const char *config_path, Server **ret);

/* Listens on the configured socket path: refuses a path in use by a live
 * daemon (-EADDRINUSE), removes a stale socket file left by a crash (only
 * after a connect to it failed). fd >= 0: use that listening socket instead
 * (socket activation); it is then never unlinked. Returns 0, -errno. */
int server_listen(Server *s, int fd);

/* Starts shutting down: stop intake, then every accepted job runs to its end
 * (now = false) or queued jobs are discarded and running ones finish
 * (now = true). After timeout_ms the loop is stopped anyway and
 * server_exit_status returns 1. When everything has stopped, every handle
 * the server opened is closed, so uv_run returns. A second call with now =
 * true escalates a drain. */
void server_shutdown(Server *s, bool now, uint64_t timeout_ms);

/* Tells systemd the daemon is ready (READY=1 and STATUS=, see notify.h)
 * and starts the watchdog pings if WatchdogSec= asks for them. Once the
 * socket listens and recovery is done. */
void server_notify_ready(Server *s);

/* 0 after a clean shutdown, 1 if the deadline passed with jobs running. */
int server_exit_status(Server *s);

/* True if worker threads may still be running (the deadline passed, or the
 * journal failed): the caller must then exit without freeing. (After a
 * journal failure it first joins the journal's writer, which has ended.) */
bool server_abandoned(Server *s);

/* Takes the journal (stolen, also on failure; closed by server_free) and
 * recovers from it, before the server listens: every unfinished job goes
 * back on the queue of the stage it had reached (blocking while that queue
 * is full), its attempt count kept; finished jobs are kept for queries
 * under the retention limits; scratch directories of jobs it does not know
 * are removed. Then starts the journal's writer. Returns 0, or -errno with
 * a reason in err (the journal makes no sense, or it has unfinished jobs of
 * a pipeline the configuration no longer defines). */
struct Journal;
int server_recover(Server *s, struct Journal *journal, char *err, size_t errlen);

/* Frees the server once uv_run has returned, closing the journal. Accepts
 * NULL. Returns 0, or -EIO if the journal failed. */
int server_free(Server *s);
