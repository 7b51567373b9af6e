#include "server.h"

#include <errno.h>
#include <inttypes.h>
#include <dirent.h>
#include <poll.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "crashpoint.h"
#include "jobtable.h"
#include "journal.h"
#include "log.h"
#include "mailbox.h"
#include "notify.h"
#include "pipeline.h"
#include "plugin.h"
#include "program.h"
#include "proto/errors.h"
#include "proto/frame.h"
#include "proto/limits.h"
#include "proto/message.h"
#include "proto/rawjson.h"
#include "util.h"

#define PIPELINED_VERSION "0.1.0"

/* A connection whose call is held keeps reading only while this much input
 * is buffered (enough to notice a hang-up; a well-behaved client sends
 * nothing more until it has its answer). */
#define HOLD_INPUT_MAX (64u * 1024u)

/* Most replies one connection may have waiting for the journal (and behind
 * them) before the daemon stops taking its next calls until some are sent.
 * A peer pipelining Submits has each one's reply wait for its commit while
 * the calls after it are taken: their jobs share the commits (group commit
 * on one connection), and this bounds what waits. */
#define PENDING_REPLIES_MAX 1024u

/* A ListJobs page stops growing at this many bytes of JSON, whatever the
 * limit asked, so a page of long error messages still fits in a message. */
#define LIST_PAGE_BUDGET (PROTO_MESSAGE_MAX / 2)

/* Most connections accepted per loop turn. libuv accepts until the backlog
 * is empty, and a connect/close storm refills it as fast: measured, 400
 * accepts in one turn while established clients waited (their p99 x56).
 * A turn then also serves every accepted connection's first read and close,
 * so a smaller batch is a shorter turn: measured under a storm, p99 of an
 * established client 11.5 ms unbounded, 1.9 ms at 32, 0.96 ms at 8, 1.2 ms
 * at 4 (BENCHMARKS.md, "Hostile clients"). A burst of new clients waits in
 * the listen backlog meanwhile, a few turns at most. */
#define ACCEPT_BATCH 8

/* MaxConnectionRate= paces accepts (GCRA: each accept moves accept_tat one
 * interval on; one is allowed while accept_tat is at most this many
 * intervals ahead of now). Bounding the turn (ACCEPT_BATCH) was not enough:
 * the loop still accepted as fast as a storm could connect, and the storm
 * and the loop together kept both cores busy (an established client's p99
 * x3.9). Paced, the storm's connect() waits in a full listen backlog
 * instead (x1.4 at 5,000 a second, BENCHMARKS.md "Hostile clients"). The
 * burst lets a crowd of new clients in at once, as many as the listen
 * backlog holds (32 was too few: 50 clients starting together were paced). */
#define LISTEN_BACKLOG 128
#define ACCEPT_BURST LISTEN_BACKLOG

/* While pacing delays accepts, a warning says so at most this often. */
#define PACING_LOG_INTERVAL_NS (60 * UINT64_C(1000000000))

/* Most bytes read from one connection before it waits for the next loop
 * turn (one read of Server.readbuf). libuv reads a readable stream up to 32
 * times (2 MiB here) per turn: a peer streaming a huge message held the
 * loop ~600 us per turn while established clients waited (their p99 2.5x;
 * 2.3x with 256 KiB, 1.8x with 64 KiB). A 1 MiB message takes 16 turns,
 * each a few microseconds more than one. */
#define READ_BUDGET (64u * 1024u)

/* After a shutdown, how long connections have to take the replies already
 * collected for them before they are closed anyway. */
#define SERVER_LINGER_MS 5000

/* Refusals logged, one line per (uid, method), for the daemon's life: a
 * client retrying a refused call must not flood the log, and the table that
 * remembers them is bounded. Past it, one line says so and no more. */
#define REFUSALS_LOGGED_MAX 256u

/* Most supplementary groups read for a peer: Linux's NGROUPS_MAX. */
#define PEER_GROUPS_MAX 65536u

/* ---- intrusive circular lists ------------------------------------------ */

typedef struct Link {
	struct Link *prev, *next;
} Link;

static void list_init(Link *l)
{
	l->prev = l->next = l;
}

static bool list_empty(const Link *l)
{
	return l->next == l;
}

static void list_remove(Link *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n); /* removing twice is harmless */
}

static void list_push_back(Link *head, Link *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static void list_push_front(Link *head, Link *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

static size_t list_length(const Link *head)
{
	size_t n = 0;
	for (const Link *l = head->next; l != head; l = l->next)
		n++;
	return n;
}

/* ---- types ---------------------------------------------------------------- */

typedef enum Hold {
	HOLD_NONE,
	HOLD_SUBMIT, /* waiting for room in the first queue; reading stopped */
	HOLD_WAIT,   /* WaitJob */
	HOLD_DRAIN,
	HOLD_CLOSE,
	HOLD_WATCH, /* a stream: holds until the peer hangs up */
	HOLD_RELOAD, /* a Reload waiting for its configuration load (reload_*) */
} Hold;

/* A reply that may not be sent yet: it reports what the journal has not
 * committed (seq), or it comes after one that does (seq 0). */
typedef struct PendingReply {
	Link link;    /* Conn.pending, oldest first */
	uint64_t seq; /* the journal change it waits for; 0: only those before it */
	size_t len;
	char msg[]; /* the encoded message, its NUL included */
} PendingReply;

/* One configuration load on the loop's thread pool: config_load may block
 * (NSS lookups of user and group names, plugins test-loaded with dlopen, a
 * file on a slow disk), and the loop must not. Made by reload_start on the
 * loop thread; reload_run, on a pool thread, writes config, cerr and r and
 * touches nothing else; reload_done, back on the loop, reads them and frees
 * the ReloadLoad. uv_queue_work orders the three. */
typedef struct ReloadLoad {
	uv_work_t work; /* work.data: the Server */
	/* Borrowed: Server.config_path, which is never changed and is freed
	 * only by server_free, after uv_run has returned, which it does only
	 * once reload_done has run. */
	const char *path;
	Config *config;   /* the new configuration if r >= 0 (owned until reload_done) */
	ConfigError cerr; /* why not, if r < 0 */
	int r;
} ReloadLoad;

/* A pipeline as the loop sees it. A pipeline replaced or removed by a
 * reload is "retired": it finishes its jobs, then is freed once no tracked
 * job refers to it. */
typedef struct Line {
	Server *server;
	Link link; /* server->lines */
	Pipeline *pipeline;
	PipelineConfig cfg;      /* own deep copy: name, stage names, actions */
	uv_async_t room_async;   /* on_room → loop */
	uv_async_t closed_async; /* on_closed → loop */
	unsigned handles_open;
	Link room_waiters;  /* Conns held in Submit, first come first served */
	Link drain_waiters; /* Conns in Drain */
	Link close_waiters; /* Conns in Close */
	uint64_t in_flight; /* accepted, not yet back through the mailbox */
	uint64_t refs;      /* tracked jobs whose tracker is this line */
	uint64_t ended;     /* jobs back through the mailbox, for the retry hint */
	uint64_t started_usec;
	bool closing, closed, retired, freeing;
	bool wake_owed; /* submitted with the worker's wake-up deferred (before each poll) */
} Line;

typedef struct Conn {
	uv_pipe_t pipe; /* first: the handle's address is the Conn's */
	Server *server;
	Link link;       /* server->conns */
	Link wait_link;  /* in at most one waiting list, per hold */
	uint64_t number; /* for log lines */
	FrameReader in;
	char *out; /* replies not yet handed to libuv */
	size_t out_len, out_cap;
	char *wbuf; /* the write in flight */
	size_t wbuf_len, wbuf_cap;
	uv_write_t wreq;
	bool writing, reading, eof, closing, close_after_flush;
	bool processing; /* inside conn_process: a hold finishing there must not recurse */
	bool over_budget;  /* read READ_BUDGET since it last waited: reading stopped */
	size_t read_bytes; /* read since it last waited for a turn */
	Link budget_link;  /* server->budget_waiters, while over_budget */

	Hold hold;
	ProtoCall call; /* the held call (owned while held) */
	/* HOLD_SUBMIT */
	Line *line;
	Job **jobs; /* owned: jobs not yet accepted, [next .. count) */
	size_t next, count;
	json_t *ids; /* owned: ids accepted so far */
	bool batch;
	/* HOLD_WAIT */
	uint64_t wait_id;
	/* HOLD_SUBMIT: the journal change of the last job accepted so far */
	uint64_t commit_seq;
	/* Replies waiting for the journal, and every reply after them, in the
	 * order the calls came (PendingReply; see reply_when_committed). While
	 * there is one, commit_link is in server->commit_waiters. */
	Link pending;
	size_t pending_count, pending_bytes;
	Link commit_link;
	/* HOLD_WATCH: only this pipeline's events ("" = every pipeline) */
	char watch[STAGE_NAME_MAX + 1];
	/* The peer as the kernel saw it connect (SO_PEERCRED, SO_PEERGROUPS),
	 * read once at accept; each call is checked against the access keys
	 * in force when it is made. uid and gid JOB_UID_UNKNOWN if unreadable
	 * (then only introspection is allowed once an access key is given). */
	uint32_t uid, gid;
	int32_t pid;
	uint32_t *groups; /* owned: supplementary groups; NULL when n_groups is 0 */
	size_t n_groups;
	/* config_access for this peer under configuration access_gen (a
	 * ConfigAccess), so that a call costs no list search. */
	unsigned access;
	uint64_t access_gen;
} Conn;

struct Server {
	uv_loop_t *loop;
	Config *config;
	char *config_path;
	uv_pipe_t listener;
	bool listening, socket_bound; /* bound by us: unlinked at the end */
	Mailbox mailbox;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t deadline;
	uv_timer_t linger; /* after a stop: how long unsent replies may take */
	/* Ended jobs: the mailbox wakes the loop for them only while someone
	 * waits for a job to end (prompt_holds > 0, or a shutdown). Otherwise
	 * they are taken before each poll (prepare) and before each read. */
	uv_prepare_t take_ended;
	unsigned prompt_holds; /* connections in WaitJob, Drain, Close or Watch */
	Link lines, conns, job_waiters, watchers;
	unsigned n_conns;
	uint64_t conn_numbers;
	unsigned accepts_this_turn; /* reset before each poll (on_take_ended) */
	Link budget_waiters;        /* Conns over their READ_BUDGET: resumed before the next poll */
	bool accept_deferred;       /* one left pending in libuv: taken next turn */
	/* MaxConnectionRate=: when the next accept is due (GCRA, uv_hrtime ns);
	 * while one waits for that, accept_timer fires then. */
	uint64_t accept_tat;
	uv_timer_t accept_timer;
	uint64_t paced_logged_at; /* uv_hrtime of the last warning; 0: none yet */
	JobTable jobs;
	uint64_t next_id;
	/* Durability=full: the journal (else NULL), and the connections whose
	 * replies wait for its commits (Conn.commit_link; while on_commit_async
	 * sends, some are on a list of its own: pending_conns counts them all).
	 * A journal that failed stops the daemon (journal_down). */
	Journal *journal;
	uv_async_t commit_async; /* the writer committed (or failed) → loop */
	bool commit_async_open, journal_down;
	Link commit_waiters;
	size_t pending_conns;
	/* Set while the loop ends jobs that must stay unfinished in the journal
	 * (a shutdown stopping retries: they resume after a restart). */
	bool keep_journal_rows;
	uv_timer_t expire_timer; /* retention by age: when the oldest finished job expires */
	bool shutting_down, shutdown_now, stopped, abandoned;
	int exit_status;
	/* Refused calls already logged: (uid, index in methods[]) pairs. */
	struct {
		uint32_t uid;
		uint32_t method;
	} refusals[REFUSALS_LOGGED_MAX];
	unsigned n_refusals;
	bool refusals_full;     /* the one line saying so has been logged */
	bool peergroups_warned; /* SO_PEERGROUPS failed once: said so */
	uint32_t self_uid;      /* the daemon's own uid: may always call everything */
	uint64_t config_gen;    /* 1, plus one per reload that took effect */
	/* Reload (reload_request): one configuration load at a time,
	 * reload_load (the load's request, freed by reload_done; NULL when
	 * none runs: uv_run returns only after that). A request made while one
	 * runs needs the file as it is after the request, which that load may
	 * have read before: it sets reload_again (its caller waits in
	 * reload_next), and when the load completes one more starts for every
	 * such request. reload_waiters: the Conns held in Reload for the load
	 * that runs. Loop thread only. */
	ReloadLoad *reload_load;
	bool reload_again;
	Link reload_waiters, reload_next;
	/* systemd (notify.h; only with NOTIFY_SOCKET, see notify_handles_init):
	 * STATUS= refreshed while jobs are in flight, and the watchdog. */
	uv_prepare_t status_prepare; /* starts status_timer when jobs are in flight */
	uv_timer_t status_timer, watchdog_timer;
	bool notify_handles;  /* the three above were initialized */
	bool stalled;         /* a stuck worker stopped the watchdog pings */
	char stall_text[200]; /* which one, for STATUS= */
	uint64_t retired_done, retired_failed, retired_cancelled; /* of lines freed */
	char readbuf[64 * 1024];
};

static void conn_process(Conn *c);
static void conn_close(Conn *c);
static void conn_update_reading(Conn *c);
static void check_shutdown_done(Server *s);
static void server_stop(Server *s);
static void line_maybe_free(Line *line);
static void notify_handles_init(Server *s);
static void notify_handles_close(Server *s);
static void notify_shutdown_begun(Server *s);
static void notify_reload_begun(Server *s);
static void notify_reload_done(Server *s);

/* ---- log ------------------------------------------------------------------ */

/* Set once by log_init, before any thread starts; read-only after. */
static bool log_to_journal;

void log_init(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	int end = 0;
	struct stat st;
	log_to_journal = e && sscanf(e, "%llu:%llu%n", &dev, &ino, &end) == 2 && e[end] == '\0' &&
	                 fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	                 (unsigned long long)st.st_ino == ino;
}

void log_line(int priority, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* One call, one line (one journal record). */
	for (char *p = buf; (p = strchr(p, '\n'));)
		*p = ' ';
	if (log_to_journal)
		fprintf(stderr, "<%d>%s\n", priority, buf);
	else if (priority <= LOG_ERR)
		fprintf(stderr, "pipelined: error: %s\n", buf);
	else if (priority == LOG_WARNING)
		fprintf(stderr, "pipelined: warning: %s\n", buf);
	else
		fprintf(stderr, "pipelined: %s\n", buf);
}

/* ---- output ----------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status);

static void conn_flush(Conn *c)
{
	if (c->writing || c->out_len == 0 || c->closing)
		return;
	/* Straight to the socket when it takes it all (the usual case): a
	 * write request would also cost an epoll_ctl per reply in libuv 1.44. */
	uv_buf_t direct = uv_buf_init(c->out, (unsigned)c->out_len);
	int n = uv_try_write((uv_stream_t *)&c->pipe, &direct, 1);
	if (n > 0) {
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
		if (c->out_len == 0) {
			if (c->close_after_flush && list_empty(&c->pending))
				conn_close(c);
			return;
		}
	} else if (n < 0 && n != UV_EAGAIN) {
		conn_close(c);
		return;
	}
	/* Swap buffers: what was collected goes out in one write, and new
	 * replies collect in the other buffer meanwhile. */
	char *b = c->wbuf;
	size_t cap = c->wbuf_cap;
	c->wbuf = c->out;
	c->wbuf_cap = c->out_cap;
	c->wbuf_len = c->out_len;
	c->out = b;
	c->out_cap = cap;
	c->out_len = 0;
	uv_buf_t buf = uv_buf_init(c->wbuf, (unsigned)c->wbuf_len);
	c->wreq.data = c;
	int r = uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &buf, 1, on_write);
	if (r < 0) {
		conn_close(c);
		return;
	}
	c->writing = true;
}

static void on_write(uv_write_t *req, int status)
{
	Conn *c = req->data;
	c->writing = false;
	c->wbuf_len = 0;
	if (c->closing)
		return;
	if (status < 0) {
		conn_close(c);
		return;
	}
	if (c->wbuf_cap > FRAME_BUFFER_KEEP) { /* one big reply: give it back */
		free(c->wbuf);
		c->wbuf = NULL;
		c->wbuf_cap = 0;
	}
	conn_flush(c);
	if (c->close_after_flush && !c->writing && list_empty(&c->pending))
		conn_close(c);
}

/* Closes c once what it was sent is out (at once if nothing is left). */
static void conn_close_when_sent(Conn *c)
{
	c->close_after_flush = true;
	if (!c->closing && !c->writing && c->out_len == 0 && list_empty(&c->pending))
		conn_close(c);
}

/* A peer that lets more than MaxOutputBuffer of replies pile up unread
 * (sent, or waiting for the journal) is cut off: it is not buffered for
 * forever. Returns false if c was closed for it. */
static bool conn_room_for(Conn *c, size_t len)
{
	size_t limit = c->server->config->max_output_buffer;
	if (c->out_len + c->wbuf_len + c->pending_bytes + len <= limit)
		return true;
	log_warning("connection %" PRIu64 ": over %zu bytes of replies unread; closing it",
	            c->number, limit);
	conn_close(c);
	return false;
}

/* Queues an encoded message behind the replies that wait for the journal;
 * sent once seq has committed and those before it are sent. */
static void conn_send_after(Conn *c, uint64_t seq, const char *msg, size_t len)
{
	if (c->closing || !conn_room_for(c, len))
		return;
	PendingReply *p = malloc(sizeof(*p) + len);
	if (!p) {
		log_error("connection %" PRIu64 ": out of memory; closing it", c->number);
		conn_close(c);
		return;
	}
	p->seq = seq;
	p->len = len;
	memcpy(p->msg, msg, len);
	if (list_empty(&c->pending)) {
		list_push_back(&c->server->commit_waiters, &c->commit_link);
		c->server->pending_conns++;
	}
	list_push_back(&c->pending, &p->link);
	c->pending_count++;
	c->pending_bytes += len;
}

/* Appends one encoded message to what goes out next, and starts sending. */
static void conn_append(Conn *c, const char *msg, size_t len)
{
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		char *b = realloc(c->out, cap);
		if (!b) {
			log_error("connection %" PRIu64 ": out of memory; closing it", c->number);
			conn_close(c);
			return;
		}
		c->out = b;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, msg, len);
	c->out_len += len;
	conn_flush(c);
}

/* Sends one encoded message: at once, or behind the replies that wait for
 * the journal (the peer reads replies in the order it called). */
static void conn_send(Conn *c, const char *msg, size_t len)
{
	if (c->closing)
		return;
	if (!list_empty(&c->pending))
		conn_send_after(c, 0, msg, len);
	else if (conn_room_for(c, len))
		conn_append(c, msg, len);
}

/* Takes the oldest of c's pending replies off its list (the caller frees
 * it); c leaves the server's commit_waiters with its last. */
static PendingReply *pending_pop(Conn *c)
{
	PendingReply *p = container_of(c->pending.next, PendingReply, link);
	list_remove(&p->link);
	c->pending_count--;
	c->pending_bytes -= p->len;
	if (list_empty(&c->pending)) {
		list_remove(&c->commit_link);
		c->server->pending_conns--;
	}
	return p;
}

/* Sends c's pending replies that the journal has committed (done: its
 * last committed change), oldest first, up to the first that must still
 * wait. The room for them was counted when they were queued. */
static void conn_send_committed(Conn *c, uint64_t done)
{
	while (!c->closing && !list_empty(&c->pending)) {
		if (container_of(c->pending.next, PendingReply, link)->seq > done)
			return;
		PendingReply *p = pending_pop(c);
		if (p->seq)
			crashpoint("journal-before-reply");
		conn_append(c, p->msg, p->len);
		free(p);
	}
}

/* Drops what c still had waiting (it is closing, or the journal failed). */
static void conn_drop_pending(Conn *c)
{
	while (!list_empty(&c->pending))
		free(pending_pop(c));
}

/* Sends a reply, or the error named error if not NULL (params stolen, may be
 * NULL), unless the call was oneway; with seq, once the journal has
 * committed that change (conn_send_after). */
static void send_message_after(Conn *c, const ProtoCall *call, const char *error,
                               json_t *params, bool continues, uint64_t seq)
{
	char *buf;
	size_t len;
	if (call && call->oneway) {
		json_decref(params);
		return;
	}
	int r = error ? proto_build_error(error, params, &buf, &len)
	              : proto_build_reply(params, continues, &buf, &len);
	json_decref(params);
	if (r < 0) {
		log_error("connection %" PRIu64 ": cannot build a reply: %s", c->number,
		          strerror(-r));
		conn_close(c);
		return;
	}
	if (seq)
		conn_send_after(c, seq, buf, len);
	else
		conn_send(c, buf, len);
	free(buf);
}

static void send_message(Conn *c, const ProtoCall *call, const char *error, json_t *params,
                         bool continues)
{
	send_message_after(c, call, error, params, continues, 0);
}

static void reply(Conn *c, const ProtoCall *call, json_t *params, bool continues)
{
	send_message(c, call, NULL, params, continues);
}

static void reply_error(Conn *c, const ProtoCall *call, const char *error, json_t *params)
{
	send_message(c, call, error, params, false);
}

static void reply_invalid_parameter(Conn *c, const ProtoCall *call, const char *name)
{
	reply_error(c, call, PROTO_ERR_INVALID_PARAMETER, json_pack("{s:s}", "parameter", name));
}

/* Replies InvalidParameter and returns true if call has a parameter not in
 * known (NULL-terminated). */
static bool refuse_unknown(Conn *c, const ProtoCall *call, const char *const *known)
{
	const char *unknown = proto_param_unknown(call->parameters, known);
	if (unknown)
		reply_invalid_parameter(c, call, unknown);
	return unknown != NULL;
}

static void reply_limit(Conn *c, const ProtoCall *call, const char *name, uint64_t max)
{
	reply_error(c, call, PROTO_ERR_LIMIT_EXCEEDED,
	            json_pack("{s:s,s:I}", "parameter", name, "max", (json_int_t)max));
}

/* ---- lines ------------------------------------------------------------------ */

static Line *find_line(Server *s, const char *name)
{
	for (Link *l = s->lines.next; l != &s->lines; l = l->next) {
		Line *line = container_of(l, Line, link);
		if (!line->retired && strcmp(line->cfg.name, name) == 0)
			return line;
	}
	return NULL;
}

static json_t *known_pipelines(Server *s)
{
	json_t *a = json_array();
	for (Link *l = s->lines.next; l != &s->lines; l = l->next) {
		Line *line = container_of(l, Line, link);
		if (!line->retired)
			json_array_append_new(a, json_string(line->cfg.name));
	}
	return a;
}

/* An optional parameter is given (null counts as absent, as Varlink's ?type). */
static bool has_param(const ProtoCall *call, const char *name)
{
	json_t *v = json_object_get(call->parameters, name);
	return v && !json_is_null(v);
}

/* The line named by the call's "pipeline" parameter, or NULL after replying
 * with the error. */
static Line *line_param(Conn *c, const ProtoCall *call, bool required)
{
	const char *name = NULL;
	if (proto_param_string(call->parameters, "pipeline", required, &name) < 0 || !name) {
		reply_invalid_parameter(c, call, "pipeline");
		return NULL;
	}
	Line *line = find_line(c->server, name);
	if (!line)
		reply_error(c, call, PROTO_ERR_NO_SUCH_PIPELINE,
		            json_pack("{s:s,s:o}", "pipeline", name, "known",
		                      known_pipelines(c->server)));
	return line;
}

/* The index of line's stage `name`; or -ENOENT after replying NoSuchStage. */
static int stage_lookup(Conn *c, const ProtoCall *call, Line *line, const char *name,
                        unsigned *ret)
{
	json_t *known = json_array();
	for (unsigned i = 0; i < line->cfg.n_stages; i++) {
		if (strcmp(line->cfg.stages[i].name, name) == 0) {
			json_decref(known);
			*ret = i;
			return 0;
		}
		json_array_append_new(known, json_string(line->cfg.stages[i].name));
	}
	reply_error(c, call, PROTO_ERR_NO_SUCH_STAGE,
	            json_pack("{s:s,s:s,s:o}", "pipeline", line->cfg.name, "stage", name, "known",
	                      known));
	return -ENOENT;
}

static int stage_param(Conn *c, const ProtoCall *call, Line *line, unsigned *ret)
{
	const char *name = NULL;
	if (proto_param_string(call->parameters, "stage", true, &name) < 0) {
		reply_invalid_parameter(c, call, "stage");
		return -EINVAL;
	}
	return stage_lookup(c, call, line, name, ret);
}

/* ---- job JSON --------------------------------------------------------------- */

static const char *job_stage_name(const Job *job)
{
	const Line *line = job->tracker;
	unsigned i = atomic_load_explicit(&((Job *)job)->stage, memory_order_relaxed);
	return i < line->cfg.n_stages ? line->cfg.stages[i].name : "";
}

/* A Job as the interface describes it. Of a job still in flight only the
 * fields the loop may read are shown (see job.h); payload and stderr tail
 * only if asked (GetJob, WaitJob: one job; not in listings and events,
 * whose size they would multiply) and the job has ended. New reference. */
static json_t *job_to_json(Job *job, bool with_payload)
{
	const Line *line = job->tracker;
	JobState st = atomic_load_explicit(&job->state, memory_order_relaxed);
	json_t *o =
	        json_pack("{s:I,s:s,s:s,s:s,s:I}", "id", (json_int_t)job->id, "pipeline",
	                  line->cfg.name, "state", job_state_to_string(st), "stage",
	                  job_stage_name(job), "submitted_usec", (json_int_t)job->submitted_usec);
	if (!o)
		return NULL;
	json_object_set_new(o, "attempt", json_integer(job->attempt));
	json_object_set_new(o, "runs", json_integer(job->runs));
	if (job->uid != JOB_UID_UNKNOWN)
		json_object_set_new(o, "uid", json_integer(job->uid));
	if (job->key)
		json_object_set_new(o, "key", json_string(job->key));
	uint64_t started = job->started_usec;
	if (started)
		json_object_set_new(o, "started_usec", json_integer((json_int_t)started));
	if (!job->ended) {
		if (st == JOB_RETRYING)
			json_object_set_new(o, "retry_at_usec",
			                    json_integer((json_int_t)atomic_load(&job->retry_at_usec)));
		return o;
	}
	json_object_set_new(o, "finished_usec", json_integer((json_int_t)job->finished_usec));
	if (job->error)
		json_object_set_new(o, "error", json_string(job->error));
	if (job->ran_program) {
		if (job->term_signal)
			json_object_set_new(o, "signal", json_integer(job->term_signal));
		else
			json_object_set_new(o, "exit_status", json_integer(job->exit_status));
		json_object_set_new(o, "timed_out", json_boolean(job->timed_out));
	}
	if (job->stderr_tail && with_payload)
		json_object_set_new(o, "stderr", json_stringn(job->stderr_tail, job->stderr_len));
	if (job->workdir)
		json_object_set_new(o, "workdir", json_string(job->workdir));
	if (with_payload) {
		json_t *p = json_loadb(job->payload, job->payload_len, 0, NULL);
		if (p && json_is_object(p))
			json_object_set_new(o, "payload", p);
		else
			json_decref(p);
	}
	return o;
}

/* ---- watchers --------------------------------------------------------------- */

/* One event to every watcher of line's pipeline; encoded once. job may be
 * NULL, stage may be NULL. */
static void watchers_event(Server *s, const char *event, Line *line, const char *stage, Job *job)
{
	if (list_empty(&s->watchers))
		return;
	json_t *params = json_pack("{s:s,s:s}", "event", event, "pipeline", line->cfg.name);
	if (stage)
		json_object_set_new(params, "stage", json_string(stage));
	if (job) {
		json_t *o = job_to_json(job, false);
		if (strcmp(event, "accepted") == 0 && o) {
			/* As it was when accepted: a fast pipeline may have
			 * moved it on (or ended it) by now. */
			json_object_set_new(o, "state", json_string("queued"));
			json_object_set_new(o, "stage", json_string(line->cfg.stages[0].name));
		}
		json_object_set_new(params, "job", o);
	}
	char *buf;
	size_t len;
	int r = proto_build_reply(params, true, &buf, &len);
	json_decref(params);
	if (r < 0)
		return;
	for (Link *l = s->watchers.next, *next; l != &s->watchers; l = next) {
		next = l->next; /* conn_send may close (and unlink) this watcher */
		Conn *c = container_of(l, Conn, wait_link);
		if (c->watch[0] == '\0' || strcmp(c->watch, line->cfg.name) == 0)
			conn_send(c, buf, len);
	}
	free(buf);
}

/* ---- holds ------------------------------------------------------------------ */

/* Holds that wait for jobs to end: while there is one, every ended job
 * wakes the loop at once. */
static bool hold_is_prompt(Hold h)
{
	return h == HOLD_WAIT || h == HOLD_DRAIN || h == HOLD_CLOSE || h == HOLD_WATCH;
}

static void prompt_update(Server *s)
{
	mailbox_set_prompt(&s->mailbox, s->prompt_holds > 0 || s->shutting_down);
}

static void hold_release(Conn *c)
{
	if (hold_is_prompt(c->hold) && --c->server->prompt_holds == 0 && !c->server->stopped)
		prompt_update(c->server);
	list_remove(&c->wait_link);
	for (size_t i = c->next; i < c->count; i++) {
		jobtable_discharge(&c->server->jobs, c->jobs[i]); /* never accepted */
		job_free(c->jobs[i]);
	}
	free(c->jobs);
	c->jobs = NULL;
	c->next = c->count = 0;
	json_decref(c->ids);
	c->ids = NULL;
	c->line = NULL;
	c->commit_seq = 0;
	proto_call_done(&c->call);
	c->hold = HOLD_NONE;
}

/* Finishes a held call and goes on with what the peer sent after it. */
static void hold_done(Conn *c)
{
	hold_release(c);
	conn_process(c);
}

/* Holds the connection with call (moved) and, if list is not NULL, waits
 * in list. A connection closed meanwhile (a reply over its output limit)
 * joins no list: it would be freed while still linked. A hold that waits for
 * jobs to end turns the mailbox's wake-ups on, which first delivers the jobs
 * that ended unannounced: that may answer this very call, so the caller must
 * do nothing with the connection after this. */
static void hold_take_call(Conn *c, Hold hold, ProtoCall *call, Link *list)
{
	c->call = *call;
	c->call.raw = NULL; /* the frame reader's buffer moves on */
	c->call.raw_len = 0;
	*call = (ProtoCall){ 0 }; /* moved */
	if (c->closing) {
		proto_call_done(&c->call);
		return;
	}
	c->hold = hold;
	if (!list)
		return; /* a Submit: the caller tries first (it usually fits) */
	list_push_back(list, &c->wait_link);
	conn_update_reading(c);
	if (hold_is_prompt(hold) && c->server->prompt_holds++ == 0)
		prompt_update(c->server);
}

/* ---- the journal ------------------------------------------------------------ */

/* True on the loop's thread. Hooks that run there too (a job cancelled
 * while queued ends on the thread that discards it) must not block. */
static _Thread_local bool on_loop_thread;

/* job as a journal row, named with line's configuration. */
static void job_row(Job *job, const Line *line, JournalJob *row)
{
	unsigned st = atomic_load_explicit(&job->stage, memory_order_relaxed);
	if (st >= line->cfg.n_stages)
		st = 0;
	*row = (JournalJob){
		.id = job->id,
		.pipeline = line->cfg.name,
		.stage = line->cfg.stages[st].name,
		.stage_index = st,
		.state = atomic_load_explicit(&job->state, memory_order_relaxed),
		.attempt = job->attempt,
		.runs = job->runs,
		.payload = job->payload,
		.payload_len = job->payload_len,
		.key = job->key,
		.error = job->error,
		.ran_program = job->ran_program,
		.timed_out = job->timed_out,
		.exit_status = job->exit_status,
		.term_signal = job->term_signal,
		.stderr_tail = job->stderr_tail,
		.stderr_len = job->stderr_len,
		.workdir = job->workdir,
		.submitted_usec = job->submitted_usec,
		.started_usec = job->started_usec,
		.finished_usec = job->finished_usec,
		.retry_at_usec = job->retry_at_usec,
		.uid = job->uid,
	};
}

/* Journals job as it is now. On a worker this may wait for the writer
 * (backpressure on the stages); the loop never waits. Returns the change's
 * sequence number, or 0 without a journal or once it failed (the daemon
 * is then stopping: see journal_down). */
static uint64_t journal_job(Server *s, const Line *line, Job *job, bool is_new)
{
	if (!s->journal)
		return 0;
	JournalJob row;
	job_row(job, line, &row);
	return journal_put(s->journal, &row, is_new, !on_loop_thread);
}

/* Answers c's held call (error, or a reply if NULL; params stolen) now if
 * the journal has committed seq, else once it has: a client is told of a
 * job only when the job is on disk. Either way the call is done: the
 * connection's next calls are taken meanwhile (their replies wait behind
 * this one), so that a peer pipelining Submits has them share commits. */
static void reply_when_committed(Conn *c, const char *error, json_t *params, uint64_t seq)
{
	Server *s = c->server;
	if (c->closing) {
		json_decref(params);
		return;
	}
	if (!s->journal || seq <= journal_committed(s->journal))
		seq = 0;
	send_message_after(c, &c->call, error, params, false, seq);
	hold_done(c);
}

/* The journal failed: nothing more can be acknowledged. Replies waiting for
 * a commit that did not happen become JournalFailed (see below), and the
 * daemon exits with status 1 at once, without
 * waiting for running jobs (what they do next could not be recorded). What
 * the journal committed before resumes at the next start. */
static void journal_down(Server *s, const char *why)
{
	if (s->journal_down)
		return;
	s->journal_down = true;
	log_error("%s", why);
	log_error("the journal can no longer be trusted: refusing new jobs and exiting; "
	          "jobs it recorded resume at the next start");
	/* What was committed is told as it was. From the first reply that
	 * waited for more, every reply on that connection becomes JournalFailed
	 * (one after it could show the job that is not on disk; and a reply
	 * names no call, so one message fits all). Without that message, the
	 * rest is dropped: a reply missing in the middle would shift every
	 * later one onto the wrong call. */
	uint64_t done = journal_committed(s->journal);
	json_t *params = json_pack("{s:s}", "reason", why);
	char *failed = NULL;
	size_t failed_len = 0;
	if (!params ||
	    proto_build_error(PROTO_ERR_JOURNAL_FAILED, params, &failed, &failed_len) < 0)
		failed = NULL;
	json_decref(params); /* proto_build_error borrows it */
	while (!list_empty(&s->commit_waiters)) {
		Conn *c = container_of(s->commit_waiters.next, Conn, commit_link);
		bool failing = false;
		while (!list_empty(&c->pending)) {
			PendingReply *p = pending_pop(c);
			failing = failing || p->seq > done;
			if (!failing)
				conn_append(c, p->msg, p->len);
			else if (failed)
				conn_append(c, failed, failed_len);
			free(p);
			if (failing && !failed) {
				conn_drop_pending(c);
				conn_close(c);
			}
		}
	}
	free(failed);
	s->exit_status = 1;
	s->abandoned = true;
	server_stop(s);
	uv_stop(s->loop);
}

/* The writer committed (or failed): send the replies that waited for it. */
static void on_commit_async(uv_async_t *h)
{
	Server *s = h->data;
	char why[512];
	if (s->stopped)
		return;
	if (journal_failed(s->journal, why, sizeof(why))) {
		journal_down(s, why);
		return;
	}
	uint64_t done = journal_committed(s->journal);
	/* Those with a reply to send now first, on a list of their own: going
	 * on with a connection's calls may queue it again. */
	Link ready;
	list_init(&ready);
	for (Link *l = s->commit_waiters.next, *next; l != &s->commit_waiters; l = next) {
		next = l->next;
		Conn *c = container_of(l, Conn, commit_link);
		if (container_of(c->pending.next, PendingReply, link)->seq <= done) {
			list_remove(l);
			list_push_back(&ready, l);
		}
	}
	while (!list_empty(&ready)) {
		Conn *c = container_of(ready.next, Conn, commit_link);
		list_remove(&c->commit_link);
		list_push_back(&s->commit_waiters, &c->commit_link); /* pending_pop's list */
		conn_send_committed(c, done);
		/* Under PENDING_REPLIES_MAX again, or half-closed and answered:
		 * take its next calls, or close it. */
		if (!c->closing && c->hold == HOLD_NONE)
			conn_process(c);
	}
	check_shutdown_done(s);
}

/* Journal.on_commit, on the writer thread. (After server_stop the handle is
 * closed but the loop lives until the journal is closed: a late send is
 * harmless.) */
static void journal_committed_cb(void *ud)
{
	Server *s = ud;
	uv_async_send(&s->commit_async);
}

/* ---- retention by age -------------------------------------------------------- */

static void expire_arm(Server *s);

static void on_expire(uv_timer_t *t)
{
	expire_arm(t->data);
}

/* Drops what has expired and sets the timer for the next one. Armed only
 * while it is not already: an idle daemon wakes up once per expiry. */
static void expire_arm(Server *s)
{
	if (s->stopped || uv_is_active((uv_handle_t *)&s->expire_timer))
		return;
	uint64_t now = real_usec();
	uint64_t at = jobtable_expire(&s->jobs, now);
	if (at > 0)
		uv_timer_start(&s->expire_timer, on_expire, at > now ? (at - now + 999) / 1000 : 0, 0);
}

/* ---- submit ----------------------------------------------------------------- */

/* A guess at when the first queue will have room again, from the rate the
 * pipeline has been ending jobs: the time to drain to the low-water mark. */
static uint64_t retry_after_ms(Line *line, size_t wanted)
{
	Queue *q = stage_queue(pipeline_stage(line->pipeline, 0));
	size_t cap = queue_capacity(q), len = queue_length(q);
	size_t need = len + wanted > cap ? len + wanted - cap : 1;
	uint64_t elapsed = mono_usec() - line->started_usec;
	if (line->ended == 0 || elapsed == 0)
		return 1000;
	double per_ms = (double)line->ended / ((double)elapsed / 1000.0);
	double ms = (double)need / per_ms;
	if (ms < 1)
		return 1;
	return ms > 60000 ? 60000 : (uint64_t)ms + 1;
}

/* Offers the held jobs to the pipeline, in order, until one does not fit
 * (then waits in the line's queue of held connections; at the front if it
 * was already first) or all are accepted (then replies). */
/* Ends a held submit with error (ShuttingDown or PipelineClosed). The jobs
 * of a batch accepted before stay accepted: their ids go in "accepted",
 * so that the client knows which of its payloads will run. */
static void submit_refuse(Conn *c, const char *error)
{
	json_t *params = json_object();
	if (strcmp(error, PROTO_ERR_PIPELINE_CLOSED) == 0)
		json_object_set_new(params, "pipeline", json_string(c->line->cfg.name));
	if (json_array_size(c->ids) > 0)
		json_object_set(params, "accepted", c->ids);
	/* The accepted ones are reported only once they are on disk. */
	reply_when_committed(c, error, params, c->commit_seq);
}

/* Answers a Submit whose key names a job the daemon already has: its id,
 * once that job's submit is on disk. */
static void submit_existing(Conn *c, Job *old)
{
	reply_when_committed(c, NULL,
	                     json_pack("{s:I,s:b}", "id", (json_int_t)old->id, "existing", true),
	                     old->journal_seq);
}

static void submit_continue(Conn *c, bool front)
{
	Server *s = c->server;
	Line *line = c->line;

	while (c->next < c->count) {
		Job *job = c->jobs[c->next];
		Job *old = job->key ? jobtable_get_key(&s->jobs, job->key) : NULL;
		if (old) {
			/* Another call with the same key got in while this one
			 * was held. */
			submit_existing(c, old);
			return;
		}
		job->id = s->next_id;
		job->tracker = line;
		/* Journaled before the pipeline may touch it, so that its row
		 * comes before any change a worker records; taken back if it
		 * does not go in after all. */
		uint64_t seq = 0;
		if (s->journal) {
			seq = journal_job(s, line, job, true);
			if (seq == 0) {
				submit_refuse(c, PROTO_ERR_JOURNAL_FAILED);
				return;
			}
		}
		jobtable_add(&s->jobs, job);
		int r = pipeline_try_submit_deferred(line->pipeline, job);
		line->wake_owed = true;
		if (r < 0 && seq)
			(void)journal_delete(s->journal, job->id, false);
		if (r == -EAGAIN) {
			jobtable_remove(&s->jobs, job);
			if (front)
				list_push_front(&line->room_waiters, &c->wait_link);
			else
				list_push_back(&line->room_waiters, &c->wait_link);
			conn_update_reading(c);
			return;
		}
		if (r < 0 && line->retired && !s->shutting_down) {
			/* A reload replaced the pipeline while this call was
			 * held: its successor of the same name takes the jobs. */
			Line *next = find_line(s, line->cfg.name);
			if (next && !next->closing) {
				jobtable_remove(&s->jobs, job);
				c->line = line = next;
				continue;
			}
		}
		if (r < 0) {
			jobtable_remove(&s->jobs, job);
			submit_refuse(c, s->shutting_down ? PROTO_ERR_SHUTTING_DOWN
			                                  : PROTO_ERR_PIPELINE_CLOSED);
			return;
		}
		c->next++;
		s->next_id++;
		line->in_flight++;
		line->refs++;
		job->journal_seq = seq;
		if (seq)
			c->commit_seq = seq;
		json_array_append_new(c->ids, json_integer((json_int_t)job->id));
		watchers_event(s, "accepted", line, NULL, job);
	}
	if (c->batch)
		reply_when_committed(c, NULL, json_pack("{s:O}", "ids", c->ids), c->commit_seq);
	else
		reply_when_committed(c, NULL, json_pack("{s:O}", "id", json_array_get(c->ids, 0)),
		                     c->commit_seq);
}

/* A job whose payload is the client's own text, when it was sent compact
 * (the common case, and what re-encoding would give): no json_dumps. */
static int slice_to_job(const ProtoSlice *sl, Job **ret)
{
	if (sl->len > PROTO_PAYLOAD_MAX)
		return -E2BIG;
	if (sl->depth > PROTO_PAYLOAD_DEPTH_MAX)
		return -ELOOP;
	return job_new(1, sl->text, sl->len, ret); /* id given when accepted */
}

static int payload_to_job(json_t *payload, Job **ret)
{
	char *text = json_dumps(payload, JSON_COMPACT);
	if (!text)
		return -ENOMEM;
	size_t len = strlen(text);
	if (len > PROTO_PAYLOAD_MAX) {
		free(text);
		return -E2BIG;
	}
	if (!proto_depth_ok(text, len, PROTO_PAYLOAD_DEPTH_MAX)) {
		free(text);
		return -ELOOP;
	}
	/* Id 1 for now: the real one is given when the job is accepted, so
	 * that ids follow the order of acceptance. */
	int r = job_new(1, text, len, ret);
	free(text);
	return r;
}

static void method_submit_common(Conn *c, ProtoCall *call, bool batch)
{
	static const char *const known1[] = { "pipeline", "payload", "nowait", "key", NULL };
	static const char *const known2[] = { "pipeline", "payloads", "nowait", NULL };
	Server *s = c->server;
	if (refuse_unknown(c, call, batch ? known2 : known1))
		return;
	json_t *payloads = NULL, *one = NULL;
	bool nowait = false;
	if (batch) {
		if (proto_param_array(call->parameters, "payloads", true, &payloads) < 0) {
			reply_invalid_parameter(c, call, "payloads");
			return;
		}
		if (json_array_size(payloads) > PROTO_BATCH_MAX) {
			reply_limit(c, call, "payloads", PROTO_BATCH_MAX);
			return;
		}
	} else if (proto_param_object(call->parameters, "payload", true, &one) < 0) {
		reply_invalid_parameter(c, call, "payload");
		return;
	}
	if (proto_param_bool(call->parameters, "nowait", false, &nowait) < 0) {
		reply_invalid_parameter(c, call, "nowait");
		return;
	}
	const char *key = NULL;
	if (!batch) {
		if (proto_param_string(call->parameters, "key", false, &key) < 0) {
			reply_invalid_parameter(c, call, "key");
			return;
		}
		json_t *k = json_object_get(call->parameters, "key");
		if (key && (json_string_length(k) == 0 || strlen(key) != json_string_length(k))) {
			reply_invalid_parameter(c, call, "key"); /* empty, or a NUL inside */
			return;
		}
		if (key && strlen(key) > PROTO_KEY_MAX) {
			reply_limit(c, call, "key", PROTO_KEY_MAX);
			return;
		}
	}
	Line *line = line_param(c, call, true);
	if (!line)
		return;
	if (s->shutting_down) {
		reply_error(c, call, PROTO_ERR_SHUTTING_DOWN, NULL);
		return;
	}
	if (key) {
		Job *old = jobtable_get_key(&s->jobs, key);
		if (old) {
			hold_take_call(c, HOLD_SUBMIT, call, NULL);
			submit_existing(c, old);
			return;
		}
	}
	if (s->journal) {
		if (s->journal_down || journal_failed(s->journal, NULL, 0)) {
			reply_error(c, call, PROTO_ERR_JOURNAL_FAILED,
			            json_pack("{s:s}", "reason", "the journal failed; see the log"));
			return;
		}
		if (journal_space_low(s->journal)) {
			JournalStats js;
			journal_stats(s->journal, &js);
			reply_error(c, call, PROTO_ERR_NO_SPACE,
			            json_pack("{s:I,s:I}", "free_bytes", (json_int_t)js.free_bytes,
			                      "min_free_bytes", (json_int_t)js.min_free_bytes));
			return;
		}
	}
	if (line->closing) {
		reply_error(c, call, PROTO_ERR_PIPELINE_CLOSED,
		            json_pack("{s:s}", "pipeline", line->cfg.name));
		return;
	}

	size_t n = batch ? json_array_size(payloads) : 1;
	/* MaxJobsPerUser: the jobs of this call count with the caller's jobs
	 * in flight and held; a batch goes in whole or not at all. */
	uint64_t max_jobs = s->config->max_jobs_per_user;
	if (max_jobs > 0 && jobtable_uid_jobs(&s->jobs, c->uid) + n > max_jobs) {
		reply_limit(c, call, "jobs_per_user", max_jobs);
		return;
	}
	Job **jobs = calloc(n ? n : 1, sizeof(*jobs));
	if (!jobs) {
		reply_error(c, call, PROTO_ERR_INTERNAL,
		            json_pack("{s:s}", "reason", "out of memory"));
		return;
	}
	/* The payloads' own text, if the message has it plainly. */
	ProtoSlice *slices = call->raw ? malloc(n * sizeof(*slices) + 1) : NULL;
	bool raw =
	        slices && proto_raw_param(call->raw, call->raw_len, batch ? "payloads" : "payload",
	                                  batch, slices, n) == (int)n;
	for (size_t i = 0; i < n; i++) {
		json_t *p = batch ? json_array_get(payloads, i) : one;
		int r = !json_is_object(p)         ? -EINVAL
		        : raw && slices[i].compact ? slice_to_job(&slices[i], &jobs[i])
		                                   : payload_to_job(p, &jobs[i]);
		if (r < 0) {
			char name[48] = "payload";
			if (batch)
				snprintf(name, sizeof(name), "payloads[%zu]", i);
			for (size_t k = 0; k < i; k++)
				job_free(jobs[k]);
			free(jobs);
			free(slices);
			if (r == -E2BIG)
				reply_limit(c, call, name, PROTO_PAYLOAD_MAX);
			else if (r == -ELOOP) {
				strncat(name, " nesting depth", sizeof(name) - strlen(name) - 1);
				reply_limit(c, call, name, PROTO_PAYLOAD_DEPTH_MAX);
			} else if (r == -EINVAL)
				reply_invalid_parameter(c, call, name);
			else
				reply_error(c, call, PROTO_ERR_INTERNAL,
				            json_pack("{s:s}", "reason", strerror(-r)));
			return;
		}
	}
	free(slices);
	if (key && !(jobs[0]->key = strdup(key))) {
		job_free(jobs[0]);
		free(jobs);
		reply_error(c, call, PROTO_ERR_INTERNAL,
		            json_pack("{s:s}", "reason", "out of memory"));
		return;
	}

	/* nowait: all or none. Only this thread puts into the first queue, so
	 * the room seen now can only grow before the puts below. */
	if (nowait) {
		Queue *q = stage_queue(pipeline_stage(line->pipeline, 0));
		size_t room = queue_capacity(q) - queue_length(q);
		if (!list_empty(&line->room_waiters) || room < n) {
			for (size_t k = 0; k < n; k++)
				job_free(jobs[k]);
			free(jobs);
			reply_error(c, call, PROTO_ERR_BUSY,
			            json_pack("{s:s,s:I}", "pipeline", line->cfg.name,
			                      "retry_after_ms",
			                      (json_int_t)retry_after_ms(line, n)));
			return;
		}
	}

	/* Counted against the caller from now on: while held, a call's jobs
	 * hold their places under the cap (hold_release gives them back). */
	for (size_t i = 0; i < n; i++) {
		jobs[i]->uid = c->uid;
		if (jobtable_charge(&s->jobs, jobs[i]) < 0) {
			for (size_t k = 0; k < n; k++) {
				jobtable_discharge(&s->jobs, jobs[k]);
				job_free(jobs[k]);
			}
			free(jobs);
			reply_error(c, call, PROTO_ERR_INTERNAL,
			            json_pack("{s:s}", "reason", "out of memory"));
			return;
		}
	}

	c->line = line;
	c->jobs = jobs;
	c->next = 0;
	c->count = n;
	c->batch = batch;
	c->ids = json_array();
	c->commit_seq = 0;
	if (!list_empty(&line->room_waiters)) {
		/* Others were held first: wait behind them. */
		hold_take_call(c, HOLD_SUBMIT, call, &line->room_waiters);
		return;
	}
	hold_take_call(c, HOLD_SUBMIT, call, NULL);
	submit_continue(c, false);
}

static void method_submit(Conn *c, ProtoCall *call)
{
	method_submit_common(c, call, false);
}

static void method_submit_batch(Conn *c, ProtoCall *call)
{
	method_submit_common(c, call, true);
}

/* The first queue of line has room again (or was closed): resume held
 * submitters in the order they were held, until one fills it again. */
/* True if the peer of a connection we stopped reading (a held submit) has
 * closed it altogether. Reading would tell, but a held connection is not
 * read; POLLHUP is set on a Unix stream socket only once the peer has
 * closed both directions, so a client that only half-closed (it sent its
 * calls and waits for the replies) still counts as there. */
static bool conn_peer_gone(Conn *c)
{
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0)
		return false;
	struct pollfd p = { .fd = fd, .events = 0 };
	return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
}

static void on_room_async(uv_async_t *h)
{
	Line *line = h->data;
	while (!list_empty(&line->room_waiters)) {
		Conn *c = container_of(line->room_waiters.next, Conn, wait_link);
		list_remove(&c->wait_link);
		if (conn_peer_gone(c)) {
			/* Nobody will read the ids: the jobs not yet accepted
			 * are dropped with the connection, not run. */
			conn_close(c);
			continue;
		}
		submit_continue(c, true);
		/* Full again: this call went back first in line. Held but not
		 * first, it is the peer's next call (taken when this one
		 * ended), queued behind the others: they must still be tried,
		 * or nobody is, and the queue never fills to send room again. */
		if (c->hold == HOLD_SUBMIT && c->line == line &&
		    line->room_waiters.next == &c->wait_link)
			break;
	}
}

/* ---- job queries ------------------------------------------------------------ */

static Job *job_param(Conn *c, const ProtoCall *call)
{
	static const char *const known[] = { "id", NULL };
	int64_t id = 0;
	if (refuse_unknown(c, call, known))
		return NULL;
	if (proto_param_int(call->parameters, "id", true, 1, INT64_MAX, &id) < 0) {
		reply_invalid_parameter(c, call, "id");
		return NULL;
	}
	Job *job = jobtable_get(&c->server->jobs, (uint64_t)id);
	if (!job)
		reply_error(c, call, PROTO_ERR_NO_SUCH_JOB,
		            json_pack("{s:I}", "id", (json_int_t)id));
	return job;
}

static void method_get_job(Conn *c, ProtoCall *call)
{
	Job *job = job_param(c, call);
	if (job)
		reply(c, call, json_pack("{s:o}", "job", job_to_json(job, true)), false);
}

static void method_wait_job(Conn *c, ProtoCall *call)
{
	Job *job = job_param(c, call);
	if (!job)
		return;
	if (job->ended) {
		reply(c, call, json_pack("{s:o}", "job", job_to_json(job, true)), false);
		return;
	}
	c->wait_id = job->id;
	hold_take_call(c, HOLD_WAIT, call, &c->server->job_waiters);
}

static void method_cancel_job(Conn *c, ProtoCall *call)
{
	Job *job = job_param(c, call);
	if (!job)
		return;
	int r = job->ended ? -EALREADY : job_cancel(job);
	if (r < 0) {
		JobState st = atomic_load_explicit(&job->state, memory_order_relaxed);
		reply_error(c, call, PROTO_ERR_JOB_NOT_CANCELLABLE,
		            json_pack("{s:I,s:s}", "id", (json_int_t)job->id, "state",
		                      job_state_to_string(st)));
		return;
	}
	reply(c, call, json_pack("{s:o}", "job", job_to_json(job, false)), false);
	/* Out of its queue now, so that it ends even if the stage is paused or
	 * its workers are busy for long. */
	pipeline_discard_cancelled(((Line *)job->tracker)->pipeline);
}

static void method_requeue_job(Conn *c, ProtoCall *call)
{
	Server *s = c->server;
	Job *job = job_param(c, call);
	if (!job)
		return;
	JobState st = atomic_load_explicit(&job->state, memory_order_relaxed);
	if (!job->ended || st != JOB_FAILED) {
		reply_error(c, call, PROTO_ERR_JOB_NOT_REQUEUEABLE,
		            json_pack("{s:I,s:s}", "id", (json_int_t)job->id, "state",
		                      job_state_to_string(st)));
		return;
	}
	if (s->shutting_down) {
		reply_error(c, call, PROTO_ERR_SHUTTING_DOWN, NULL);
		return;
	}
	/* The stage that failed, by name: a reload may have replaced the
	 * pipeline since (the job then goes to its successor). */
	Line *old = job->tracker, *line = old->retired ? find_line(s, old->cfg.name) : old;
	const char *stage_name = job_stage_name(job);
	unsigned index;
	if (!line) {
		reply_error(c, call, PROTO_ERR_NO_SUCH_PIPELINE,
		            json_pack("{s:s,s:o}", "pipeline", old->cfg.name, "known",
		                      known_pipelines(s)));
		return;
	}
	if (line->closing) {
		reply_error(c, call, PROTO_ERR_PIPELINE_CLOSED,
		            json_pack("{s:s}", "pipeline", line->cfg.name));
		return;
	}
	if (stage_lookup(c, call, line, stage_name, &index) < 0)
		return;

	if (s->journal_down) {
		reply_error(c, call, PROTO_ERR_JOURNAL_FAILED,
		            json_pack("{s:s}", "reason", "the journal failed; see the log"));
		return;
	}
	/* Counted against its submitter, whoever requeues it. */
	uint64_t max_jobs = s->config->max_jobs_per_user;
	if (max_jobs > 0 && job->uid != JOB_UID_UNKNOWN &&
	    jobtable_uid_jobs(&s->jobs, job->uid) + 1 > max_jobs) {
		reply_limit(c, call, "jobs_per_user", max_jobs);
		return;
	}
	jobtable_unfinish(&s->jobs, job);
	if (jobtable_charge(&s->jobs, job) < 0) {
		jobtable_finish(&s->jobs, job); /* now the newest finished job */
		reply_error(c, call, PROTO_ERR_INTERNAL,
		            json_pack("{s:s}", "reason", "out of memory"));
		return;
	}
	char *old_error = job->error;
	uint64_t old_finished = job->finished_usec;
	job->error = NULL;
	job->finished_usec = 0;
	/* Journaled before a worker can take it (see submit_continue). */
	uint64_t seq = 0;
	if (s->journal) {
		JournalJob row;
		job_row(job, line, &row);
		row.state = JOB_QUEUED;
		row.stage = line->cfg.stages[index].name;
		row.stage_index = index;
		row.attempt = 1;
		seq = journal_put(s->journal, &row, false, false);
	}
	int r = s->journal && seq == 0 ? -EIO : pipeline_try_requeue(line->pipeline, job, index);
	if (r < 0) {
		job->error = old_error;
		job->finished_usec = old_finished;
		if (seq)
			(void)journal_job(s, old, job, false); /* failed, as it was */
		jobtable_finish(&s->jobs, job); /* now the newest finished job */
		if (r == -EIO)
			reply_error(c, call, PROTO_ERR_JOURNAL_FAILED,
			            json_pack("{s:s}", "reason", "the journal failed; see the log"));
		else if (r == -EAGAIN)
			reply_error(c, call, PROTO_ERR_BUSY,
			            json_pack("{s:s,s:I}", "pipeline", line->cfg.name,
			                      "retry_after_ms", (json_int_t)retry_after_ms(line, 1)));
		else
			reply_error(c, call, PROTO_ERR_PIPELINE_CLOSED,
			            json_pack("{s:s}", "pipeline", line->cfg.name));
		return;
	}
	free(old_error);
	line->in_flight++;
	if (line != old) {
		job->tracker = line;
		line->refs++;
		old->refs--;
		line_maybe_free(old);
	}
	watchers_event(s, "requeued", line, line->cfg.stages[index].name, job);
	json_t *params = json_pack("{s:o}", "job", job_to_json(job, false));
	hold_take_call(c, HOLD_SUBMIT, call, NULL);
	reply_when_committed(c, NULL, params, seq);
}

/* ---- scratch directories -------------------------------------------------- */

/* Removal of a scratch directory on the loop's thread pool: the loop itself
 * never waits for the disk. */
typedef struct Removal {
	uv_work_t work;
	char path[];
} Removal;

static void removal_run(uv_work_t *w)
{
	Removal *rm = container_of(w, Removal, work);
	int r = action_remove_workdir(rm->path);
	if (r < 0)
		log_warning("cannot remove scratch directory %s: %s", rm->path, strerror(-r));
}

static void removal_done(uv_work_t *w, int status)
{
	free(container_of(w, Removal, work));
}

/* Forgets job's scratch directory and removes it in the background. */
static void remove_workdir_later(Server *s, Job *job)
{
	if (!job->workdir)
		return;
	size_t n = strlen(job->workdir) + 1;
	Removal *rm = malloc(sizeof(*rm) + n);
	if (rm) {
		memcpy(rm->path, job->workdir, n);
		if (uv_queue_work(s->loop, &rm->work, removal_run, removal_done) < 0) {
			log_warning("cannot remove scratch directory %s", rm->path);
			free(rm);
		}
	}
	free(job->workdir);
	job->workdir = NULL;
}

static void method_list_jobs(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "pipeline", "state", "after_id", "limit", NULL };
	Server *s = c->server;
	const char *state_name = NULL;
	int64_t after = 0, limit = PROTO_LIST_DEFAULT;
	JobState state = 0;
	Line *line = NULL;

	if (refuse_unknown(c, call, known))
		return;
	if (has_param(call, "pipeline") && !(line = line_param(c, call, false)))
		return;
	if (proto_param_string(call->parameters, "state", false, &state_name) < 0 ||
	    (state_name && job_state_from_string(state_name, &state) < 0)) {
		reply_invalid_parameter(c, call, "state");
		return;
	}
	if (proto_param_int(call->parameters, "after_id", false, 0, INT64_MAX, &after) < 0) {
		reply_invalid_parameter(c, call, "after_id");
		return;
	}
	if (proto_param_int(call->parameters, "limit", false, 1, INT64_MAX, &limit) < 0) {
		reply_invalid_parameter(c, call, "limit");
		return;
	}
	if (limit > PROTO_LIST_MAX) {
		reply_limit(c, call, "limit", PROTO_LIST_MAX);
		return;
	}

	json_t *jobs = json_array();
	size_t bytes = 0;
	uint64_t last = 0;
	bool more = false;
	for (Job *j = jobtable_first_after(&s->jobs, (uint64_t)after); j; j = j->list_next) {
		if (line && strcmp(((Line *)j->tracker)->cfg.name, line->cfg.name) != 0)
			continue;
		if (state_name && atomic_load_explicit(&j->state, memory_order_relaxed) != state)
			continue;
		if ((int64_t)json_array_size(jobs) >= limit || bytes >= LIST_PAGE_BUDGET) {
			more = true;
			break;
		}
		json_t *o = job_to_json(j, false);
		bytes += 160 + (j->ended && j->error ? strlen(j->error) : 0);
		json_array_append_new(jobs, o);
		last = j->id;
	}
	json_t *params = json_pack("{s:o}", "jobs", jobs);
	if (more)
		json_object_set_new(params, "next_after_id", json_integer((json_int_t)last));
	reply(c, call, params, false);
}

/* ---- a job came back -------------------------------------------------------- */

static void reply_drained(Line *line)
{
	while (!list_empty(&line->drain_waiters)) {
		Conn *c = container_of(line->drain_waiters.next, Conn, wait_link);
		list_remove(&c->wait_link);
		reply(c, &c->call, NULL, false);
		hold_done(c);
	}
}

/* Mailbox: a job left its pipeline (done, failed or cancelled). */
static void on_job_ended(Mailbox *m, MailNode *node, void *userdata)
{
	Server *s = userdata;
	Job *job = container_of(node, Job, node);
	Line *line = job->tracker;

	if (atomic_load_explicit(&job->state, memory_order_relaxed) == JOB_CANCELLED) {
		if (!job->error)
			job->error = strdup(s->shutdown_now ? "discarded by a shutdown (mode now)"
			                                    : "cancelled by request");
		remove_workdir_later(s, job);
	}
	job->ended = true;
	line->in_flight--;
	line->ended++;

	/* Answer WaitJob callers first: retention may drop the job at once. */
	if (!list_empty(&s->job_waiters)) {
		Link ready;
		list_init(&ready);
		for (Link *l = s->job_waiters.next, *next; l != &s->job_waiters; l = next) {
			next = l->next;
			if (container_of(l, Conn, wait_link)->wait_id == job->id) {
				list_remove(l);
				list_push_back(&ready, l);
			}
		}
		json_t *o = list_empty(&ready) ? NULL : job_to_json(job, true);
		while (!list_empty(&ready)) {
			Conn *c = container_of(ready.next, Conn, wait_link);
			list_remove(&c->wait_link);
			reply(c, &c->call, json_pack("{s:O}", "job", o), false);
			hold_done(c);
		}
		json_decref(o);
	}
	watchers_event(s, "ended", line, NULL, job);
	jobtable_finish(&s->jobs, job); /* may free job */
	expire_arm(s);
	if (line->in_flight == 0 && !list_empty(&line->drain_waiters)) {
		watchers_event(s, "drained", line, NULL, NULL);
		reply_drained(line);
	}
}

/* JobTable.on_drop: a finished job is forgotten. */
static void on_job_dropped(void *userdata, Job *job)
{
	Line *line = job->tracker;
	Server *s = line->server;
	remove_workdir_later(s, job); /* a failed job's, kept until now */
	if (s->journal && !job->journal_keep && !s->journal_down)
		(void)journal_delete(s->journal, job->id, false);
	line->refs--;
	line_maybe_free(line);
}

/* ---- pipeline control ------------------------------------------------------- */

static void method_drain(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "pipeline", NULL };
	if (refuse_unknown(c, call, known))
		return;
	Line *line = line_param(c, call, true);
	if (!line)
		return;
	if (line->in_flight == 0) {
		reply(c, call, NULL, false);
		return;
	}
	hold_take_call(c, HOLD_DRAIN, call, &line->drain_waiters);
}

static void line_close(Line *line)
{
	if (line->closing)
		return;
	line->closing = true;
	pipeline_close(line->pipeline);
}

static void method_close(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "pipeline", NULL };
	if (refuse_unknown(c, call, known))
		return;
	Line *line = line_param(c, call, true);
	if (!line)
		return;
	if (line->closed) {
		reply(c, call, NULL, false);
		return;
	}
	line_close(line);
	hold_take_call(c, HOLD_CLOSE, call, &line->close_waiters);
}

/* Every worker of the line has exited after close. */
static void on_closed_async(uv_async_t *h)
{
	Line *line = h->data;
	Server *s = line->server;
	if (line->closed)
		return;
	/* The last jobs were posted before on_closed ran: take them first, so
	 * that a Close reply comes after every job's end. */
	mailbox_flush(&s->mailbox);
	/* Every worker has returned or is returning; the join waits for at
	 * most the last one's final instructions. */
	pipeline_join(line->pipeline);
	line->closed = true;
	watchers_event(s, "closed", line, NULL, NULL);
	while (!list_empty(&line->close_waiters)) {
		Conn *c = container_of(line->close_waiters.next, Conn, wait_link);
		list_remove(&c->wait_link);
		reply(c, &c->call, NULL, false);
		hold_done(c);
	}
	/* Held submitters were answered by the close's room callback. */
	line_maybe_free(line);
	check_shutdown_done(s);
}

static void method_pause_resume(Conn *c, ProtoCall *call, bool pause)
{
	static const char *const known[] = { "pipeline", "stage", NULL };
	unsigned stage;
	if (refuse_unknown(c, call, known))
		return;
	Line *line = line_param(c, call, true);
	if (!line || stage_param(c, call, line, &stage) < 0)
		return;
	if (line->closing || pipeline_pause_stage(line->pipeline, stage, pause) < 0) {
		reply_error(c, call, PROTO_ERR_PIPELINE_CLOSED,
		            json_pack("{s:s}", "pipeline", line->cfg.name));
		return;
	}
	watchers_event(c->server, pause ? "paused" : "resumed", line, line->cfg.stages[stage].name,
	               NULL);
	reply(c, call, NULL, false);
}

static void method_pause(Conn *c, ProtoCall *call)
{
	method_pause_resume(c, call, true);
}

static void method_resume(Conn *c, ProtoCall *call)
{
	method_pause_resume(c, call, false);
}

static void method_set_workers(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "pipeline", "stage", "workers", NULL };
	unsigned stage;
	int64_t n;
	if (refuse_unknown(c, call, known))
		return;
	Line *line = line_param(c, call, true);
	if (!line || stage_param(c, call, line, &stage) < 0)
		return;
	if (proto_param_int(call->parameters, "workers", true, 1, INT64_MAX, &n) < 0) {
		reply_invalid_parameter(c, call, "workers");
		return;
	}
	if (n > STAGE_WORKERS_MAX) {
		reply_limit(c, call, "workers", STAGE_WORKERS_MAX);
		return;
	}
	int r = line->closing ? -EPIPE : pipeline_set_workers(line->pipeline, stage, (unsigned)n);
	if (r == -EPIPE) {
		reply_error(c, call, PROTO_ERR_PIPELINE_CLOSED,
		            json_pack("{s:s}", "pipeline", line->cfg.name));
		return;
	}
	if (r < 0) {
		log_error("%s/%s: cannot start workers: %s", line->cfg.name,
		          line->cfg.stages[stage].name, strerror(-r));
		reply_error(c, call, PROTO_ERR_INTERNAL,
		            json_pack("{s:s}", "reason", "cannot start worker threads"));
		return;
	}
	line->cfg.stages[stage].workers = (unsigned)n;
	watchers_event(c->server, "scaled", line, line->cfg.stages[stage].name, NULL);
	reply(c, call, NULL, false);
}

/* What a stage does, for Stats: "exec:/usr/bin/curl ...", "plugin:PATH",
 * or the built-in action's spec. Ellipsized to fit buf. */
static void stage_config_describe(const StageConfig *st, char *buf, size_t len)
{
	if (st->exec)
		snprintf(buf, len, "exec:%s", st->exec);
	else if (st->plugin)
		snprintf(buf, len, "plugin:%s", st->plugin);
	else
		snprintf(buf, len, "%s", st->action);
	if (strlen(buf) == len - 1 && len > 4)
		memcpy(buf + len - 4, "...", 4);
}

static json_t *line_stats(Line *line)
{
	PipelineStats ps;
	pipeline_stats(line->pipeline, &ps);
	json_t *stages = json_array();
	for (unsigned i = 0; i < line->cfg.n_stages; i++) {
		StageStats st;
		stage_stats(pipeline_stage(line->pipeline, i), &st);
		char action[ACTION_SPEC_MAX + 16];
		stage_config_describe(&line->cfg.stages[i], action, sizeof(action));
		json_array_append_new(
		        stages,
		        json_pack("{s:s,s:s%,s:i,s:i,s:i,s:b,s:I,s:I,s:I,s:I,s:I,s:I}", "name",
		                  st.name, "action", action, strlen(action), "workers",
		                  (int)st.workers, "busy", (int)st.busy, "handing_on",
		                  (int)st.handing_on, "paused", st.paused, "queue_length",
		                  (json_int_t)st.queue.length, "queue_capacity",
		                  (json_int_t)st.queue.capacity, "retrying",
		                  (json_int_t)st.queue.delayed, "succeeded", (json_int_t)st.succeeded,
		                  "failed", (json_int_t)st.failed, "retries", (json_int_t)st.retries));
	}
	const char *state = line->closed ? "closed" : line->closing ? "closing" : "running";
	return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "name", line->cfg.name, "state",
	                 state, "accepted", (json_int_t)ps.accepted, "in_flight",
	                 (json_int_t)line->in_flight, "done", (json_int_t)ps.done, "failed",
	                 (json_int_t)ps.failed, "cancelled", (json_int_t)ps.cancelled,
	                 "waiting_clients", (json_int_t)list_length(&line->room_waiters), "stages",
	                 stages);
}

static json_t *journal_stats_json(Server *s)
{
	if (!s->journal)
		return json_pack("{s:s}", "durability", "none");
	JournalStats js;
	journal_stats(s->journal, &js);
	return json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:I,s:b,s:b}", "durability", "full",
	                 "db_bytes", (json_int_t)js.db_bytes, "wal_bytes", (json_int_t)js.wal_bytes,
	                 "commits", (json_int_t)js.commits, "changes", (json_int_t)js.changes,
	                 "jobs", (json_int_t)js.puts_new, "commits_per_sec", js.commits_per_sec,
	                 "changes_per_commit", js.changes_per_commit, "free_bytes",
	                 (json_int_t)js.free_bytes, "min_free_bytes", (json_int_t)js.min_free_bytes,
	                 "space_low", js.space_low, "failed", js.failed);
}

static void method_stats(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "pipeline", NULL };
	if (refuse_unknown(c, call, known))
		return;
	json_t *a = json_array();
	if (has_param(call, "pipeline")) {
		Line *line = line_param(c, call, false);
		if (!line) {
			json_decref(a);
			return;
		}
		json_array_append_new(a, line_stats(line));
	} else {
		for (Link *l = c->server->lines.next; l != &c->server->lines; l = l->next) {
			Line *line = container_of(l, Line, link);
			if (!line->retired)
				json_array_append_new(a, line_stats(line));
		}
	}
	reply(c, call, json_pack("{s:o,s:o}", "pipelines", a, "journal", journal_stats_json(c->server)),
	      false);
}

static void method_watch(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "pipeline", NULL };
	if (refuse_unknown(c, call, known))
		return;
	if (!call->more) {
		reply_error(c, call, PROTO_ERR_EXPECTED_MORE, NULL);
		return;
	}
	c->watch[0] = '\0';
	if (has_param(call, "pipeline")) {
		Line *line = line_param(c, call, false);
		if (!line)
			return;
		snprintf(c->watch, sizeof(c->watch), "%s", line->cfg.name);
	}
	reply(c, call, json_pack("{s:s}", "event", "watching"), true);
	hold_take_call(c, HOLD_WATCH, call, &c->server->watchers);
}

/* ---- lines: creation, reload ------------------------------------------------ */

/* The string fields of a StageConfig, for deep copies. */
static const size_t stage_string_fields[] = {
	offsetof(StageConfig, name),       offsetof(StageConfig, action),
	offsetof(StageConfig, exec),       offsetof(StageConfig, plugin),
	offsetof(StageConfig, plugin_arg), offsetof(StageConfig, retry_exit_codes),
	offsetof(StageConfig, working_directory),
};

static char **stage_string(StageConfig *st, size_t k)
{
	return (char **)((char *)st + stage_string_fields[k]);
}

static void pipeline_config_clear(PipelineConfig *p)
{
	for (unsigned i = 0; i < p->n_stages; i++)
		for (size_t k = 0; k < ELEMENTSOF(stage_string_fields); k++)
			free(*stage_string(&p->stages[i], k));
	free(p->stages);
	free(p->name);
	*p = (PipelineConfig){ 0 };
}

static int pipeline_config_copy(const PipelineConfig *from, PipelineConfig *to)
{
	*to = (PipelineConfig){ .name = strdup(from->name),
		                .stages = calloc(from->n_stages, sizeof(StageConfig)) };
	if (!to->name || !to->stages) {
		pipeline_config_clear(to);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < from->n_stages; i++) {
		StageConfig *st = &to->stages[i];
		*st = from->stages[i];
		to->n_stages++;
		bool oom = false;
		for (size_t k = 0; k < ELEMENTSOF(stage_string_fields); k++) {
			char **f = stage_string(st, k);
			if (*f && !(*f = strdup(*f))) /* NULL now: clear skips it */
				oom = true;
		}
		if (oom) {
			pipeline_config_clear(to);
			return -ENOMEM;
		}
	}
	return 0;
}

/* Hooks: on worker threads. Each only posts to the loop. */
static void hook_on_end(void *userdata, Job *job)
{
	Line *line = userdata;
	/* A job that is done no longer needs its scratch directory; this runs
	 * on the worker that ended it, which may wait for the disk. (A failed
	 * job keeps it; a cancelled one is cleaned by the loop, see
	 * on_job_ended: this hook can run on the loop's thread for those.) */
	if (job->workdir && atomic_load_explicit(&job->state, memory_order_relaxed) == JOB_DONE) {
		int r = action_remove_workdir(job->workdir);
		if (r < 0)
			log_warning("job %" PRIu64 ": cannot remove scratch directory %s: %s",
			            job->id, job->workdir, strerror(-r));
		free(job->workdir);
		job->workdir = NULL;
	}
	Server *s = line->server;
	if (s->journal) {
		JobState st = atomic_load_explicit(&job->state, memory_order_relaxed);
		if ((on_loop_thread && s->keep_journal_rows) || job->retry_stopped) {
			/* A shutdown stopped its retries (it was waiting for one,
			 * or its run failed after): in memory it ends, on disk it
			 * stays unfinished and resumes at the next start. */
			job->journal_keep = true;
		} else {
			if (st != JOB_CANCELLED)
				crashpoint("stage-done-before-journal");
			journal_job(s, line, job, false);
		}
	}
	mailbox_post(&s->mailbox, &job->node);
}

/* The job moved to its next stage, or back to its own for a retry. */
static void hook_on_progress(void *userdata, Job *job)
{
	Line *line = userdata;
	crashpoint("stage-done-before-journal");
	journal_job(line->server, line, job, false);
}

static void hook_on_room(void *userdata)
{
	Line *line = userdata;
	uv_async_send(&line->room_async);
}

static void hook_on_closed(void *userdata)
{
	Line *line = userdata;
	uv_async_send(&line->closed_async);
}

static void on_line_handle_closed(uv_handle_t *h)
{
	Line *line = h->data;
	if (--line->handles_open > 0)
		return;
	pipeline_config_clear(&line->cfg);
	free(line);
}

/* Frees a line that is closed and that no tracked job refers to any more,
 * if it has been retired (or the server is stopping). */
static void line_maybe_free(Line *line)
{
	Server *s = line->server;
	if (line->freeing || !line->closed || !(line->retired || s->stopped) ||
	    (line->refs > 0 && !s->stopped))
		return;
	line->freeing = true;
	list_remove(&line->link);
	PipelineStats ps; /* its totals stay in STATUS= */
	pipeline_stats(line->pipeline, &ps);
	s->retired_done += ps.done;
	s->retired_failed += ps.failed;
	s->retired_cancelled += ps.cancelled;
	pipeline_free(line->pipeline); /* joined already: frees only memory */
	line->pipeline = NULL;
	uv_close((uv_handle_t *)&line->room_async, on_line_handle_closed);
	uv_close((uv_handle_t *)&line->closed_async, on_line_handle_closed);
}

/* The action a stage's configuration describes (new, in *ret). Returns 0, or
 * -errno with a reason in err. */
static int stage_action_new(Server *s, const char *pipeline, const StageConfig *st, Action **ret,
                            char *err, size_t errlen)
{
	const char *state_dir = s->config->state_dir;
	int r;

	if (st->exec) {
		const ProgramOptions o = {
			.exec = st->exec,
			.working_directory = st->working_directory,
			.timeout_usec = st->timeout_usec,
			.grace_usec = st->timeout_grace_usec,
			.stdout_mode = (ProgramStdout)st->stdout_mode,
			.stderr_tail = st->stderr_tail,
		};
		Program *prog;
		r = program_new(&o, &prog, err, errlen);
		return r < 0 ? r : action_new_program(prog, pipeline, state_dir, ret);
	}
	if (st->plugin) {
		Plugin *pl;
		r = plugin_open(st->plugin, st->plugin_arg, &pl, err, errlen);
		return r < 0 ? r : action_new_plugin(pl, pipeline, state_dir, ret);
	}
	const char *why = "invalid action";
	r = action_parse(st->action, ret, &why);
	if (r < 0)
		snprintf(err, errlen, "%s", why);
	return r;
}

static int line_new(Server *s, const PipelineConfig *cfg, Line **ret, char *err, size_t errlen)
{
	static const PipelineHooks hooks = {
		.on_end = hook_on_end,
		.on_room = hook_on_room,
		.on_closed = hook_on_closed,
		.on_progress = hook_on_progress,
	};
	Line *line = calloc(1, sizeof(*line));
	if (!line)
		return -ENOMEM;
	line->server = s;
	list_init(&line->link);
	list_init(&line->room_waiters);
	list_init(&line->drain_waiters);
	list_init(&line->close_waiters);
	int r = pipeline_config_copy(cfg, &line->cfg);
	if (r < 0) {
		free(line);
		return r;
	}
	r = pipeline_new(cfg->name, &hooks, line, &line->pipeline);
	for (unsigned i = 0; r >= 0 && i < cfg->n_stages; i++) {
		const StageConfig *st = &cfg->stages[i];
		Action *a;
		char why[256] = "";
		r = stage_action_new(s, cfg->name, st, &a, why, sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "%s/%s: %s", cfg->name, st->name, why);
			break;
		}
		r = pipeline_add_stage(line->pipeline, st->name, st->workers, st->capacity, a);
		if (r >= 0) {
			RetryPolicy retry;
			config_stage_retry(st, &retry);
			stage_set_retry(pipeline_stage(line->pipeline, i), &retry);
		}
	}
	if (r >= 0) {
		r = uv_async_init(s->loop, &line->room_async, on_room_async);
		if (r >= 0) {
			line->handles_open++;
			r = uv_async_init(s->loop, &line->closed_async, on_closed_async);
			if (r >= 0)
				line->handles_open++;
		}
		line->room_async.data = line->closed_async.data = line;
	}
	if (r >= 0)
		r = pipeline_start(line->pipeline);
	if (r < 0) {
		if (err[0] == '\0')
			snprintf(err, errlen, "pipeline '%s': %s", cfg->name, strerror(-r));
		pipeline_free(line->pipeline);
		line->pipeline = NULL;
		if (line->handles_open > 0) {
			unsigned open = line->handles_open;
			if (open >= 1)
				uv_close((uv_handle_t *)&line->room_async, on_line_handle_closed);
			if (open >= 2)
				uv_close((uv_handle_t *)&line->closed_async, on_line_handle_closed);
		} else {
			pipeline_config_clear(&line->cfg);
			free(line);
		}
		return r;
	}
	line->started_usec = mono_usec();
	list_push_back(&s->lines, &line->link);
	*ret = line;
	return 0;
}

static void line_retire(Line *line)
{
	line->retired = true;
	line_close(line);
	line_maybe_free(line);
}

/* Applies a new configuration; appends the names of what changed to the
 * four arrays. Returns 0 or -errno (then err says why; a pipeline that
 * could not start leaves the others as they were). */
static int apply_config(Server *s, Config *next, json_t *added, json_t *removed, json_t *replaced,
                        json_t *rescaled, char *err, size_t errlen)
{
	/* Start new and changed pipelines first: if one cannot start, the
	 * running ones are untouched. */
	Line *fresh[CONFIG_PIPELINES_MAX] = { 0 };
	for (unsigned i = 0; i < next->n_pipelines; i++) {
		const PipelineConfig *pc = &next->pipelines[i];
		Line *old = find_line(s, pc->name);
		if (old && config_pipeline_same_shape(&old->cfg, pc))
			continue;
		int r = line_new(s, pc, &fresh[i], err, errlen);
		if (r < 0) {
			for (unsigned k = 0; k < i; k++)
				if (fresh[k]) {
					list_push_back(&s->lines, &fresh[k]->link);
					line_retire(fresh[k]);
				}
			return r;
		}
		list_remove(&fresh[i]->link); /* hidden until the switch below */
	}
	for (Link *l = s->lines.next, *nx; l != &s->lines; l = nx) {
		nx = l->next;
		Line *line = container_of(l, Line, link);
		if (line->retired)
			continue;
		const PipelineConfig *pc = config_find_pipeline(next, line->cfg.name);
		if (!pc) {
			json_array_append_new(removed, json_string(line->cfg.name));
			line_retire(line);
		} else if (!config_pipeline_same_shape(&line->cfg, pc)) {
			json_array_append_new(replaced, json_string(line->cfg.name));
			line_retire(line);
		} else {
			bool changed = false;
			for (unsigned k = 0; k < pc->n_stages; k++)
				if (line->cfg.stages[k].workers != pc->stages[k].workers &&
				    pipeline_set_workers(line->pipeline, k,
				                         pc->stages[k].workers) == 0) {
					line->cfg.stages[k].workers = pc->stages[k].workers;
					changed = true;
				}
			if (changed)
				json_array_append_new(rescaled, json_string(line->cfg.name));
		}
	}
	for (unsigned i = 0; i < next->n_pipelines; i++) {
		if (!fresh[i])
			continue;
		bool was_replaced = false;
		for (size_t k = 0; k < json_array_size(replaced); k++)
			was_replaced |= strcmp(json_string_value(json_array_get(replaced, k)),
			                       fresh[i]->cfg.name) == 0;
		if (!was_replaced)
			json_array_append_new(added, json_string(fresh[i]->cfg.name));
		list_push_back(&s->lines, &fresh[i]->link);
	}
	return 0;
}

/* One line saying who may call what under c's access keys (at start and
 * after a reload). */
static void log_access_policy(const Config *c, uint32_t self_uid)
{
	if (!(c->keys_set & CONFIG_SET_ACCESS)) {
		log_info("access: no AllowUsers=, AllowGroups=, ReadOnlyUsers= or ReadOnlyGroups= "
		         "set: whoever can open the socket may call every method");
		return;
	}
	char self[48] = "uid 0 (the daemon's)";
	if (self_uid != 0)
		snprintf(self, sizeof(self), "uid 0, uid %" PRIu32 " (the daemon's)", self_uid);
	log_info("access: every method for %s, %zu user%s and %zu group%s; read-only methods for "
	         "%zu more user%s and %zu group%s; introspection only for anyone else",
	         self, c->allow_users.n, c->allow_users.n == 1 ? "" : "s", c->allow_groups.n,
	         c->allow_groups.n == 1 ? "" : "s", c->read_only_users.n,
	         c->read_only_users.n == 1 ? "" : "s", c->read_only_groups.n,
	         c->read_only_groups.n == 1 ? "" : "s");
}

/* Applies next (stolen), a configuration just loaded. Returns 0 and the
 * changes in *ret (new reference), or -ECANCELED if a new pipeline could not
 * start (err says why; nothing changed). */
static int reload_apply(Server *s, Config *next, json_t **ret, char *err, size_t errlen)
{
	if (strcmp(next->socket_path, s->config->socket_path) != 0 ||
	    strcmp(next->state_dir, s->config->state_dir) != 0)
		log_warning("reload: Socket= and StateDirectory= changes take effect at restart");
	if (next->durability != s->config->durability)
		log_warning("reload: a Durability= change takes effect at restart");
	json_t *added = json_array(), *removed = json_array(), *replaced = json_array(),
	       *rescaled = json_array();
	int r = apply_config(s, next, added, removed, replaced, rescaled, err, errlen);
	if (r < 0) {
		config_free(next);
		json_decref(added);
		json_decref(removed);
		json_decref(replaced);
		json_decref(rescaled);
		return -ECANCELED;
	}
	/* Keep the running socket and state paths; take the limits. */
	free(next->socket_path);
	next->socket_path = s->config->socket_path;
	s->config->socket_path = NULL;
	free(next->state_dir);
	next->state_dir = s->config->state_dir;
	s->config->state_dir = NULL;
	if (next->socket_mode != s->config->socket_mode ||
	    next->socket_group != s->config->socket_group)
		log_warning("reload: SocketMode= and SocketGroup= changes take effect at restart");
	config_free(s->config);
	s->config = next;
	s->config_gen++; /* every connection's access is decided again */
	log_access_policy(next, s->self_uid); /* for the calls from now on */
	jobtable_set_retention(&s->jobs, next->retain_jobs, next->retain_bytes);
	jobtable_set_retain_age(&s->jobs, next->retain_age_usec);
	uv_timer_stop(&s->expire_timer);
	expire_arm(s);
	if (s->journal)
		journal_set_min_free(s->journal, next->journal_min_free);
	*ret = json_pack("{s:o,s:o,s:o,s:o}", "added", added, "removed", removed, "replaced",
	                 replaced, "rescaled", rescaled);
	return 0;
}

static void reload_start(Server *s);

/* Ends the reload that ran (or could not start): READY=1, then every caller
 * held for it gets error (a PROTO_ERR_* constant) or, if error is NULL, the
 * changes; params is stolen (may be NULL). Requests made meanwhile get the
 * next load, started before the answers go out: the call a caller sent
 * after its Reload, which its answer lets through, may be another Reload,
 * and that must wait for a load that starts after it. */
static void reload_finish(Server *s, const char *error, json_t *params)
{
	notify_reload_done(s);
	Link done;
	list_init(&done);
	while (!list_empty(&s->reload_waiters)) {
		Link *l = s->reload_waiters.next;
		list_remove(l);
		list_push_back(&done, l);
	}
	if (s->reload_again) {
		s->reload_again = false;
		while (!list_empty(&s->reload_next)) {
			Link *l = s->reload_next.next;
			list_remove(l);
			list_push_back(&s->reload_waiters, l);
		}
		reload_start(s);
	}
	/* hold_done runs a caller's next calls: one may close or shut down,
	 * which releases (and unlinks from done) the Conns it touches. */
	while (!list_empty(&done)) {
		Conn *c = container_of(done.next, Conn, wait_link);
		list_remove(&c->wait_link);
		if (error)
			reply_error(c, &c->call, error, json_incref(params));
		else
			reply(c, &c->call, json_incref(params), false);
		hold_done(c);
	}
	json_decref(params);
}

/* On a thread of the loop's pool: blocks as long as NSS, dlopen or the disk
 * take. Touches nothing but the ReloadLoad. */
static void reload_run(uv_work_t *w)
{
	ReloadLoad *rl = container_of(w, ReloadLoad, work);
	rl->r = config_load(rl->path, &rl->config, &rl->cerr);
}

/* The load has completed: apply it or refuse it, log which, tell the
 * callers. During a shutdown it is discarded: its callers have had
 * ShuttingDown (server_shutdown), and applied now it could start pipelines
 * that nothing would close. */
static void reload_done(uv_work_t *w, int status)
{
	Server *s = w->data;
	ReloadLoad *rl = container_of(w, ReloadLoad, work);
	s->reload_load = NULL;
	Config *next = rl->config;
	int r = rl->r;
	if (s->shutting_down || s->stopped) {
		config_free(next);
		free(rl);
		log_info("reload discarded: the daemon is shutting down");
		if (s->stopped && !uv_is_closing((uv_handle_t *)&s->deadline))
			uv_close((uv_handle_t *)&s->deadline, NULL); /* left open for this load */
		return;
	}
	/* err: the line for the log ("FILE:LINE: KEY: REASON" at most) */
	char err[1024] = "";
	const char *error = NULL;
	json_t *params = NULL; /* the changes, or the error's parameters */
	if (status < 0) {
		/* UV_ECANCELED: the load never ran (nothing calls uv_cancel). */
		config_free(next);
		snprintf(err, sizeof(err), "the configuration load did not run: %s",
		         uv_strerror(status));
		error = PROTO_ERR_INTERNAL;
		params = json_pack("{s:s}", "reason", err);
	} else if (r < 0) {
		config_error_format(&rl->cerr, err, sizeof(err));
		error = PROTO_ERR_CONFIG_INVALID;
		params = json_pack("{s:s,s:i,s:s}", "file", rl->cerr.file, "line",
		                   (int)rl->cerr.line, "reason", rl->cerr.reason);
	} else if (reload_apply(s, next, &params, err, sizeof(err)) < 0) {
		error = PROTO_ERR_INTERNAL;
		params = json_pack("{s:s}", "reason", err);
	}
	free(rl);
	if (error) {
		log_error("reload refused: %s; nothing changed", err);
	} else {
		char *text = json_dumps(params, JSON_COMPACT);
		log_info("configuration reloaded from %s: %s", s->config_path, text ? text : "");
		free(text);
	}
	reload_finish(s, error, params);
}

/* Starts a configuration load on the loop's thread pool (RELOADING=1).
 * The callers waiting in reload_waiters are answered when it completes, or
 * at once if it cannot start. */
static void reload_start(Server *s)
{
	notify_reload_begun(s);
	ReloadLoad *rl = calloc(1, sizeof(*rl));
	int r = rl ? 0 : -ENOMEM;
	if (rl) {
		rl->work.data = s;
		rl->path = s->config_path;
		r = uv_queue_work(s->loop, &rl->work, reload_run, reload_done);
	}
	if (r < 0) {
		free(rl);
		char err[256];
		snprintf(err, sizeof(err), "cannot start the configuration load: %s", strerror(-r));
		log_error("reload refused: %s; nothing changed", err);
		reload_finish(s, PROTO_ERR_INTERNAL, json_pack("{s:s}", "reason", err));
		return;
	}
	s->reload_load = rl;
}

/* Asks for a reload that reads the file as it is now: by c (held with call,
 * moved, until the answer), or by SIGHUP (c NULL: the result is only
 * logged). One load runs at a time: a request made while one runs waits
 * for the next. */
static void reload_request(Server *s, Conn *c, ProtoCall *call)
{
	bool running = s->reload_load != NULL;
	if (c)
		hold_take_call(c, HOLD_RELOAD, call,
		               running ? &s->reload_next : &s->reload_waiters);
	if (running)
		s->reload_again = true;
	else
		reload_start(s);
}

static void method_reload(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { NULL };
	if (refuse_unknown(c, call, known))
		return;
	if (c->server->shutting_down) {
		reply_error(c, call, PROTO_ERR_SHUTTING_DOWN, NULL);
		return;
	}
	reload_request(c->server, c, call);
}

static void method_shutdown(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "mode", "timeout_ms", NULL };
	const char *mode = "drain";
	int64_t timeout = (int64_t)c->server->config->shutdown_timeout_sec * 1000;
	if (refuse_unknown(c, call, known))
		return;
	if (proto_param_string(call->parameters, "mode", false, &mode) < 0 ||
	    (strcmp(mode, "drain") != 0 && strcmp(mode, "now") != 0)) {
		reply_invalid_parameter(c, call, "mode");
		return;
	}
	if (proto_param_int(call->parameters, "timeout_ms", false, 0, 86400000, &timeout) < 0) {
		reply_invalid_parameter(c, call, "timeout_ms");
		return;
	}
	reply(c, call, NULL, false);
	log_info("shutdown requested by a client (mode %s, deadline %" PRId64 " ms)", mode,
	         timeout);
	server_shutdown(c->server, strcmp(mode, "now") == 0, (uint64_t)timeout);
}

/* ---- org.varlink.service ---------------------------------------------------- */

static const char service_description[] =
        "# The Varlink Service Interface is provided by every varlink service. It\n"
        "# describes the service and the interfaces it implements.\n"
        "interface org.varlink.service\n\n"
        "method GetInfo() -> (\n  vendor: string,\n  product: string,\n  version: string,\n"
        "  url: string,\n  interfaces: []string\n)\n\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n\n"
        "error InterfaceNotFound (interface: string)\n\n"
        "error MethodNotFound (method: string)\n\n"
        "error MethodNotImplemented (method: string)\n\n"
        "error InvalidParameter (parameter: string)\n\n"
        "error PermissionDenied ()\n\n"
        "error ExpectedMore ()\n";

static void method_get_info(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { NULL };
	if (refuse_unknown(c, call, known))
		return;
	reply(c, call,
	      json_pack("{s:s,s:s,s:s,s:s,s:[s,s]}", "vendor", "pipelined", "product", "pipelined",
	                "version", PIPELINED_VERSION, "url", "https://varlink.org", "interfaces",
	                PROTO_SERVICE_INTERFACE, PROTO_INTERFACE),
	      false);
}

static void method_get_interface_description(Conn *c, ProtoCall *call)
{
	static const char *const known[] = { "interface", NULL };
	const char *name = NULL;
	if (refuse_unknown(c, call, known))
		return;
	if (proto_param_string(call->parameters, "interface", true, &name) < 0) {
		reply_invalid_parameter(c, call, "interface");
		return;
	}
	const char *text = strcmp(name, PROTO_INTERFACE) == 0 ? proto_interface_description
	                   : strcmp(name, PROTO_SERVICE_INTERFACE) == 0 ? service_description
	                                                                : NULL;
	if (!text) {
		reply_error(c, call, PROTO_ERR_INTERFACE_NOT_FOUND,
		            json_pack("{s:s}", "interface", name));
		return;
	}
	reply(c, call, json_pack("{s:s}", "description", text), false);
}

/* ---- dispatch --------------------------------------------------------------- */

typedef void (*MethodFn)(Conn *c, ProtoCall *call);

/* Who may call a method (with the access keys of config.h). Every entry of
 * methods[] names its class: -Wextra's missing-field-initializers refuses
 * an entry without one, and tests/e2e/test_access.py checks the class of
 * every method io.pipelined.varlink declares. */
typedef enum MethodClass {
	METHOD_INTROSPECT = 1, /* org.varlink.service: anyone who can connect */
	METHOD_READ,           /* changes nothing: CONFIG_ACCESS_READ_ONLY suffices */
	METHOD_MODIFY,         /* CONFIG_ACCESS_ALL only */
} MethodClass;

static const struct {
	const char *name;
	MethodFn fn;
	MethodClass cls;
} methods[] = {
	{ "org.varlink.service.GetInfo", method_get_info, METHOD_INTROSPECT },
	{ "org.varlink.service.GetInterfaceDescription", method_get_interface_description,
	  METHOD_INTROSPECT },
	{ "io.pipelined.Submit", method_submit, METHOD_MODIFY },
	{ "io.pipelined.SubmitBatch", method_submit_batch, METHOD_MODIFY },
	{ "io.pipelined.GetJob", method_get_job, METHOD_READ },
	{ "io.pipelined.ListJobs", method_list_jobs, METHOD_READ },
	{ "io.pipelined.WaitJob", method_wait_job, METHOD_READ },
	{ "io.pipelined.CancelJob", method_cancel_job, METHOD_MODIFY },
	{ "io.pipelined.RequeueJob", method_requeue_job, METHOD_MODIFY },
	{ "io.pipelined.Watch", method_watch, METHOD_READ },
	{ "io.pipelined.Stats", method_stats, METHOD_READ },
	{ "io.pipelined.PauseStage", method_pause, METHOD_MODIFY },
	{ "io.pipelined.ResumeStage", method_resume, METHOD_MODIFY },
	{ "io.pipelined.SetWorkers", method_set_workers, METHOD_MODIFY },
	{ "io.pipelined.Close", method_close, METHOD_MODIFY },
	{ "io.pipelined.Drain", method_drain, METHOD_MODIFY },
	{ "io.pipelined.Reload", method_reload, METHOD_MODIFY },
	{ "io.pipelined.Shutdown", method_shutdown, METHOD_MODIFY },
};

/* What c's peer may call under the access keys in force now (a reload
 * applies to the calls after it). */
static ConfigAccess peer_access(Conn *c)
{
	Server *s = c->server;
	if (c->access_gen != s->config_gen) {
		c->access = config_access(s->config, c->uid, c->gid, c->groups, c->n_groups,
		                          s->self_uid);
		c->access_gen = s->config_gen;
	}
	return (ConfigAccess)c->access;
}

/* May c's peer call a method of class cls? */
static bool peer_may_call(Conn *c, MethodClass cls)
{
	if (cls == METHOD_INTROSPECT)
		return true;
	ConfigAccess a = peer_access(c);
	return a == CONFIG_ACCESS_ALL || (cls == METHOD_READ && a == CONFIG_ACCESS_READ_ONLY);
}

/* Logs a refusal of methods[m] to c's peer, once per (uid, method). */
static void log_refusal(Conn *c, size_t m)
{
	Server *s = c->server;
	for (unsigned i = 0; i < s->n_refusals; i++)
		if (s->refusals[i].uid == c->uid && s->refusals[i].method == m)
			return;
	if (s->n_refusals == REFUSALS_LOGGED_MAX) {
		if (!s->refusals_full)
			log_warning(
			        "permission denied to %u different callers and methods; further "
			        "refusals are not logged",
			        REFUSALS_LOGGED_MAX);
		s->refusals_full = true;
		return;
	}
	s->refusals[s->n_refusals].uid = c->uid;
	s->refusals[s->n_refusals].method = (uint32_t)m;
	s->n_refusals++;
	ConfigAccess a = peer_access(c);
	log_warning("permission denied: uid %" PRIu32 " (pid %" PRId32 ", connection %" PRIu64
	            ") may not call %s (%s); logged once per user and method",
	            c->uid, c->pid, c->number, methods[m].name,
	            a == CONFIG_ACCESS_READ_ONLY ? "it has read-only access"
	                                         : "it is in no access list");
}

static void handle_message(Conn *c, const char *msg, size_t len)
{
	ProtoCall call = { 0 };
	char err[256];
	int r = proto_call_parse(msg, len, &call, err, sizeof(err));
	if (r < 0) {
		reply_error(c, NULL, PROTO_ERR_INVALID_MESSAGE, json_pack("{s:s}", "reason", err));
		return;
	}
	/* A oneway call is answered not at all, so it cannot want several
	 * answers: without this, a oneway Watch with "more" would hold the
	 * connection for ever, streaming to nobody, and no later call on it
	 * would be answered. Without "more" it is ExpectedMore, not sent. */
	if (call.oneway)
		call.more = false;
	for (size_t i = 0; i < ELEMENTSOF(methods); i++)
		if (strcmp(methods[i].name, call.method) == 0) {
			if (!peer_may_call(c, methods[i].cls)) {
				/* Before any parameter is looked at; the connection
				 * stays open for calls it may make. */
				log_refusal(c, i);
				reply_error(c, &call, PROTO_ERR_PERMISSION_DENIED,
				            json_pack("{s:s}", "method", methods[i].name));
			} else {
				methods[i].fn(c, &call); /* moves call if it holds */
			}
			proto_call_done(&call);
			return;
		}
	const char *dot = strrchr(call.method, '.');
	size_t iface_len = (size_t)(dot - call.method);
	if ((iface_len == strlen(PROTO_INTERFACE) &&
	     strncmp(call.method, PROTO_INTERFACE, iface_len) == 0) ||
	    (iface_len == strlen(PROTO_SERVICE_INTERFACE) &&
	     strncmp(call.method, PROTO_SERVICE_INTERFACE, iface_len) == 0))
		reply_error(c, &call, PROTO_ERR_METHOD_NOT_FOUND,
		            json_pack("{s:s}", "method", call.method));
	else
		reply_error(c, &call, PROTO_ERR_INTERFACE_NOT_FOUND,
		            json_pack("{s:s#}", "interface", call.method, (int)iface_len));
	proto_call_done(&call);
}

/* ---- connections ------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	Conn *c = (Conn *)h;
	/* One buffer for every connection: each read is fed to the frame
	 * reader before the next read can happen. */
	*buf = uv_buf_init(c->server->readbuf, sizeof(c->server->readbuf));
}

/* A peer whose framing broke: tell it why, then close once that is sent. */
static void conn_framing_broken(Conn *c)
{
	reply_error(c, NULL, PROTO_ERR_MESSAGE_TOO_LARGE,
	            json_pack("{s:I}", "max", (json_int_t)PROTO_MESSAGE_MAX));
	c->close_after_flush = true;
	conn_update_reading(c);
	conn_close_when_sent(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	Conn *c = (Conn *)stream;
	/* Jobs that ended while the loop slept, so that this peer's calls see
	 * them (GetJob, Stats...). */
	mailbox_flush(&c->server->mailbox);
	if (nread > 0) {
		c->read_bytes += (size_t)nread;
		if (c->read_bytes >= READ_BUDGET && !c->over_budget) {
			/* conn_update_reading (from conn_process) stops reading. */
			c->over_budget = true;
			list_push_back(&c->server->budget_waiters, &c->budget_link);
		}
		int r = frame_reader_feed(&c->in, buf->base, (size_t)nread);
		if (r == -EMSGSIZE) {
			conn_framing_broken(c);
			return;
		}
		if (r < 0) {
			conn_close(c);
			return;
		}
		conn_process(c);
	} else if (nread == UV_EOF) {
		/* The peer closed its sending side (or hung up): answer what it
		 * sent, then close. */
		c->eof = true;
		conn_update_reading(c);
		conn_process(c); /* a Watch ends there too */
	} else if (nread < 0) {
		conn_close(c);
	}
}

static void conn_update_reading(Conn *c)
{
	bool want = !c->closing && !c->eof && !c->close_after_flush && !c->over_budget;
	if (c->hold == HOLD_SUBMIT)
		want = false; /* backpressure */
	else if (c->hold != HOLD_NONE || c->pending_count >= PENDING_REPLIES_MAX)
		want = want && frame_reader_pending(&c->in) < HOLD_INPUT_MAX;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	}
}

/* True if the bytes not yet handed out are JSON whitespace only (say the
 * newline `echo` adds after a message's NUL): nothing a peer meant to send. */
static bool conn_pending_is_blank(const Conn *c)
{
	for (size_t i = c->in.start; i < c->in.len; i++) {
		char ch = c->in.buf[i];
		if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n')
			return false;
	}
	return true;
}

/* Answers the buffered calls, in order, until one holds (or until
 * PENDING_REPLIES_MAX replies wait for the journal). A hold that ends
 * while its own call is being handled (a Submit accepted at once) returns
 * here instead of recursing, so a peer pipelining many calls costs no stack. */
static void conn_process(Conn *c)
{
	if (c->processing)
		return;
	c->processing = true;
	while (!c->closing && !c->close_after_flush && c->hold == HOLD_NONE &&
	       c->pending_count < PENDING_REPLIES_MAX) {
		const char *msg;
		size_t len;
		int r = frame_reader_next(&c->in, &msg, &len);
		if (r == 0)
			break;
		if (r < 0) {
			c->processing = false;
			conn_framing_broken(c);
			return;
		}
		handle_message(c, msg, len);
	}
	c->processing = false;
	if (c->closing)
		return;
	if (c->hold == HOLD_WATCH && c->eof) {
		/* The peer's end of input ends a Watch, whether it came while
		 * the Watch streamed or before it was taken (it waited behind
		 * another call). Replies still waiting for the journal (a
		 * Submit sent before it) go out first. */
		hold_release(c);
		conn_close_when_sent(c);
		return;
	}
	if (c->hold == HOLD_NONE) {
		frame_reader_compact(&c->in);
		/* Calls left unread behind PENDING_REPLIES_MAX are taken once
		 * replies go out (on_commit_async): not the end yet. */
		if (c->eof && c->pending_count < PENDING_REPLIES_MAX) {
			/* Half-closed (or gone) and answered: close once the replies
			 * are out. Bytes still buffered are a message that can never
			 * end. Reading has stopped, so nothing else would ever close
			 * the connection: its buffer and fd would stay until the
			 * daemon exits (a slowloris peer that hangs up mid-message,
			 * 10,000 times). Say why (a client that forgot the NUL
			 * learns it), then close. */
			if (frame_reader_pending(&c->in) > 0 && !c->close_after_flush &&
			    !conn_pending_is_blank(c))
				reply_error(c, NULL, PROTO_ERR_INVALID_MESSAGE,
				            json_pack("{s:s}", "reason",
				                      "the connection ended inside a message "
				                      "(no NUL byte after it)"));
			conn_close_when_sent(c);
			return;
		}
	}
	conn_update_reading(c);
}

static void on_conn_closed(uv_handle_t *h)
{
	Conn *c = (Conn *)h;
	Server *s = c->server;
	frame_reader_free(&c->in);
	free(c->out);
	free(c->wbuf);
	free(c->groups);
	free(c);
	s->n_conns--;
}

static void conn_close(Conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	hold_release(c);
	conn_drop_pending(c);
	list_remove(&c->link);
	if (c->over_budget)
		list_remove(&c->budget_link);
	c->reading = false;
	uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
	Server *s = c->server;
	if (s->stopped && list_empty(&s->conns) && !uv_is_closing((uv_handle_t *)&s->linger))
		uv_close((uv_handle_t *)&s->linger, NULL); /* the last one: done lingering */
}

/* Reads who c's peer is. SO_PEERCRED cannot fail on a connected Unix
 * socket, short of a kernel bug; SO_PEERGROUPS (Linux 4.13) may be missing:
 * then only the primary group counts, and the log says so once. */
static void conn_read_peer(Conn *c)
{
	Server *s = c->server;
	c->uid = c->gid = JOB_UID_UNKNOWN;
	c->pid = 0;
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0)
		return;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred)) {
		log_warning("connection %" PRIu64 ": cannot read the peer's credentials: %s",
		            c->number, strerror(errno));
		return;
	}
	c->uid = cred.uid;
	c->gid = cred.gid;
	c->pid = cred.pid;

	/* Most peers have a few groups: try a small buffer first. */
	gid_t few[32], *buf = few;
	len = sizeof(few);
	int r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buf, &len);
	if (r < 0 && errno == ERANGE && len <= PEER_GROUPS_MAX * sizeof(gid_t) &&
	    (buf = malloc(len))) {
		r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buf, &len);
	}
	if (r < 0) {
		if (!s->peergroups_warned)
			log_warning(
			        "cannot read the supplementary groups of a peer (SO_PEERGROUPS: "
			        "%s): only their primary group counts for AllowGroups= and "
			        "ReadOnlyGroups=",
			        strerror(errno));
		s->peergroups_warned = true;
	} else if (len >= sizeof(gid_t)) {
		size_t n = len / sizeof(gid_t);
		c->groups = malloc(n * sizeof(*c->groups));
		if (c->groups) {
			for (size_t i = 0; i < n; i++)
				c->groups[i] = buf[i];
			c->n_groups = n;
		}
		/* Without memory: the primary group alone. Never more access. */
	}
	if (buf != few)
		free(buf);
}

static void on_connection(uv_stream_t *listener, int status);

static void on_accept_timer(uv_timer_t *t)
{
	Server *s = t->data;
	if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
		on_connection((uv_stream_t *)&s->listener, 0);
}

/* True if MaxConnectionRate= lets one more connection in now (and counts
 * it). Otherwise accept_timer is started for when one may be. */
static bool accept_paced_ok(Server *s)
{
	unsigned rate = s->config->max_connection_rate;
	if (rate == 0)
		return true;
	uint64_t interval = UINT64_C(1000000000) / rate;
	uint64_t now = uv_hrtime();
	uint64_t tat = s->accept_tat > now ? s->accept_tat : now;
	uint64_t slack = interval * ACCEPT_BURST;
	/* Further ahead than one interval past the burst only if a reload
	 * raised the rate: the old debt must not hold the new rate back. */
	if (tat > now + slack + interval)
		s->accept_tat = tat = now + slack + interval;
	if (tat <= now + slack) {
		s->accept_tat = tat + interval;
		return true;
	}
	if (!s->paced_logged_at || now - s->paced_logged_at >= PACING_LOG_INTERVAL_NS) {
		s->paced_logged_at = now;
		log_warning("new connections arrive faster than MaxConnectionRate=%u a second: "
		            "the rest wait in the listen backlog (said at most once a minute)",
		            rate);
	}
	uint64_t wait_ms = (tat - now - slack) / 1000000 + 1;
	if (!uv_is_active((uv_handle_t *)&s->accept_timer))
		uv_timer_start(&s->accept_timer, on_accept_timer, wait_ms, 0);
	return false;
}

static void on_connection(uv_stream_t *listener, int status)
{
	Server *s = listener->data;
	if (status < 0) {
		log_warning("accept: %s", uv_strerror(status));
		return;
	}
	/* Fairness: not calling uv_accept makes libuv stop watching the
	 * listener, with this connection pending; on_take_ended takes it
	 * before the next poll, which resumes watching... */
	if (s->accepts_this_turn >= ACCEPT_BATCH) {
		s->accept_deferred = true;
		return;
	}
	/* ...or, past MaxConnectionRate=, accept_timer takes it when due. */
	if (!accept_paced_ok(s))
		return;
	s->accepts_this_turn++;
	/* Without uv_accept libuv stops watching the listener: a failure here
	 * must retry next turn (on_take_ended), or no one is accepted again. */
	Conn *c = calloc(1, sizeof(*c));
	if (!c) {
		s->accept_deferred = true;
		return;
	}
	c->server = s;
	list_init(&c->link);
	list_init(&c->wait_link);
	list_init(&c->pending);
	list_init(&c->commit_link);
	frame_reader_init(&c->in, PROTO_MESSAGE_MAX);
	if (uv_pipe_init(s->loop, &c->pipe, 0) < 0) {
		free(c);
		s->accept_deferred = true;
		return;
	}
	s->n_conns++;
	if (uv_accept(listener, (uv_stream_t *)&c->pipe) < 0) {
		uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
		return;
	}
	c->number = ++s->conn_numbers;
	list_push_back(&s->conns, &c->link);
	conn_read_peer(c);
	if (s->n_conns > s->config->max_connections) {
		log_warning("connection %" PRIu64 " refused: already %u connections "
		            "(MaxConnections=%u)",
		            c->number, s->n_conns - 1, s->config->max_connections);
		reply_limit(c, NULL, "connections", s->config->max_connections);
		conn_close_when_sent(c);
		return;
	}
	conn_update_reading(c);
}

/* ---- listening -------------------------------------------------------------- */

/* True if something accepts connections at path. */
static bool socket_alive(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	bool alive = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return alive;
}

/* Gives the socket file the daemon just bound SocketMode= and SocketGroup=.
 * Bound but not yet listening, the socket refuses every connect() (even one
 * that the file's mode would allow), so there is no moment at which it has
 * wider permissions than configured. */
static int socket_set_access(const Config *c, const char *path)
{
	if (c->socket_group != CONFIG_GID_UNSET && chown(path, (uid_t)-1, c->socket_group) < 0) {
		int r = -errno;
		log_error("cannot give the socket %s the group %" PRIu32 " (SocketGroup=): %s",
		          path, c->socket_group, strerror(-r));
		return r;
	}
	if (chmod(path, c->socket_mode) < 0) {
		int r = -errno;
		log_error("cannot set the mode of the socket %s to %04o (SocketMode=): %s", path,
		          c->socket_mode, strerror(-r));
		return r;
	}
	return 0;
}

int server_listen(Server *s, int fd)
{
	const char *path = s->config->socket_path;
	int r = uv_pipe_init(s->loop, &s->listener, 0);
	if (r < 0)
		return r;
	s->listener.data = s;
	s->listening = true;
	if (fd >= 0) {
		r = uv_pipe_open(&s->listener, fd);
		if (s->config->keys_set & (CONFIG_SET_SOCKET_MODE | CONFIG_SET_SOCKET_GROUP))
			log_warning(
			        "SocketMode= and SocketGroup= are ignored: the socket was passed "
			        "by systemd, whose .socket unit's SocketMode= and SocketGroup= "
			        "apply");
	} else {
		/* uv_pipe_bind would silently cut a long path (config checks it). */
		if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return -ENAMETOOLONG;
		r = uv_pipe_bind(&s->listener, path);
		if (r == UV_EADDRINUSE) {
			if (socket_alive(path))
				return -EADDRINUSE;
			/* A stale socket file left by a crash. */
			unlink(path);
			uv_close((uv_handle_t *)&s->listener, NULL);
			uv_run(s->loop, UV_RUN_NOWAIT);
			uv_pipe_init(s->loop, &s->listener, 0);
			s->listener.data = s;
			r = uv_pipe_bind(&s->listener, path);
		}
		if (r >= 0) {
			s->socket_bound = true;
			r = socket_set_access(s->config, path);
		}
	}
	if (r >= 0)
		r = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
	if (r >= 0)
		log_access_policy(s->config, s->self_uid);
	return r;
}

/* ---- systemd: status, watchdog, reload and stop -------------------------------
 *
 * Only with NOTIFY_SOCKET (notify.h); without it none of this runs, and no
 * handle below exists.
 *
 * STATUS= is one line saying how much work there is. It is sent with
 * READY=1, RELOADING=1 and STOPPING=1, and refreshed every
 * STATUS_REFRESH_MS by a timer that runs only while jobs are in flight: a
 * prepare handle (no wake-up of its own) starts it when the loop sees work,
 * and it stops itself once it has reported that none is left. An idle daemon
 * never wakes for it.
 *
 * The watchdog (WatchdogSec=): a timer pings at half the interval while the
 * loop runs (a blocked loop never gets there) and no worker is stuck
 * (pipeline_find_stalled with notify_stale_usec()). A stuck worker stops the
 * pings, said once in the log and in STATUS=; they resume when it moves. */

/* How often STATUS= is refreshed while jobs are in flight. */
#define STATUS_REFRESH_MS 1000

/* n with thousands separators: "1,230". */
static void format_count(uint64_t n, char *buf, size_t len)
{
	char digits[24];
	int nd = snprintf(digits, sizeof(digits), "%" PRIu64, n);
	size_t k = 0;
	for (int i = 0; i < nd && k + 2 < len; i++) {
		if (i > 0 && (nd - i) % 3 == 0)
			buf[k++] = ',';
		buf[k++] = digits[i];
	}
	buf[k] = '\0';
}

/* The STATUS= line: "2 pipelines: 14 queued, 4 running, 1,230 done, 3
 * failed" (", N retrying" and ", N cancelled" when not 0), after "stopping:
 * " during a shutdown and after what is stuck while a worker is. Returns
 * how many jobs are in flight. */
static uint64_t status_format(Server *s, char *buf, size_t len)
{
	unsigned pipelines = 0;
	uint64_t in_flight = 0, running = 0, retrying = 0, done = s->retired_done,
	         failed = s->retired_failed, cancelled = s->retired_cancelled;
	for (Link *l = s->lines.next; l != &s->lines; l = l->next) {
		Line *line = container_of(l, Line, link);
		if (!line->pipeline)
			continue;
		pipelines += !line->retired;
		in_flight += line->in_flight;
		PipelineStats ps;
		pipeline_stats(line->pipeline, &ps);
		done += ps.done;
		failed += ps.failed;
		cancelled += ps.cancelled;
		for (unsigned i = 0; i < ps.stages; i++) {
			StageStats st;
			stage_stats(pipeline_stage(line->pipeline, i), &st);
			running += st.busy;
			retrying += st.queue.delayed;
		}
	}
	uint64_t queued = in_flight > running + retrying ? in_flight - running - retrying : 0;
	char q[32], ru[32], re[32], d[32], f[32], c[32];
	format_count(queued, q, sizeof(q));
	format_count(running, ru, sizeof(ru));
	format_count(retrying, re, sizeof(re));
	format_count(done, d, sizeof(d));
	format_count(failed, f, sizeof(f));
	format_count(cancelled, c, sizeof(c));
	/* Cut to len if it must (the stall text is the long part). */
	int n = snprintf(
	        buf, len,
	        "%s%s%s%u pipeline%s: %s queued, %s running%s%s%s, %s done, %s failed%s%s%s",
	        s->shutting_down ? "stopping: " : "", s->stalled ? s->stall_text : "",
	        s->stalled ? "; " : "", pipelines, pipelines == 1 ? "" : "s", q, ru,
	        retrying ? ", " : "", retrying ? re : "", retrying ? " retrying" : "", d, f,
	        cancelled ? ", " : "", cancelled ? c : "", cancelled ? " cancelled" : "");
	if (n < 0 && len > 0)
		buf[0] = '\0';
	return in_flight;
}

static void on_status_timer(uv_timer_t *t)
{
	Server *s = t->data;
	char status[NOTIFY_STATUS_MAX];
	if (status_format(s, status, sizeof(status)) == 0)
		uv_timer_stop(t); /* this last status says so; the prepare restarts it */
	notify_status(status);
}

/* Before each poll: jobs in flight and no refresh running: start it (the
 * first refresh in the next iteration). */
static void on_status_prepare(uv_prepare_t *h)
{
	Server *s = h->data;
	if (uv_is_active((uv_handle_t *)&s->status_timer))
		return;
	for (Link *l = s->lines.next; l != &s->lines; l = l->next)
		if (container_of(l, Line, link)->in_flight > 0) {
			uv_timer_start(&s->status_timer, on_status_timer, 0, STATUS_REFRESH_MS);
			return;
		}
}

static void on_watchdog_timer(uv_timer_t *t)
{
	Server *s = t->data;
	uint64_t now = mono_usec(), stale = notify_stale_usec();
	unsigned stalled = 0, stage = 0;
	StageStall worst = { 0 };
	Line *worst_line = NULL;
	for (Link *l = s->lines.next; l != &s->lines; l = l->next) {
		Line *line = container_of(l, Line, link);
		StageStall st;
		unsigned k = 0, n;
		if (!line->pipeline ||
		    (n = pipeline_find_stalled(line->pipeline, now, stale, &k, &st)) == 0)
			continue;
		if (!worst_line || st.silent_usec > worst.silent_usec) {
			worst = st;
			worst_line = line;
			stage = k;
		}
		stalled += n;
	}
	if (stalled == 0) {
		if (s->stalled) {
			log_info("every stage is making progress again; watchdog pings resume");
			s->stalled = false;
			/* STATUS= said STUCK: the status timer may not run again
			 * (nothing in flight), so say it is over here. */
			char status[NOTIFY_STATUS_MAX];
			status_format(s, status, sizeof(status));
			notify_status(status);
		}
		notify_watchdog();
		return;
	}
	if (s->stalled)
		return; /* said already; still no ping */
	s->stalled = true;
	const char *stage_nm = stage_name(pipeline_stage(worst_line->pipeline, stage));
	char job[40] = "its plugin's worker setup";
	if (worst.job_id)
		snprintf(job, sizeof(job), "job %" PRIu64, worst.job_id);
	snprintf(s->stall_text, sizeof(s->stall_text), "STUCK: %s/%s worker %u (%s)",
	         worst_line->cfg.name, stage_nm, worst.worker, job);
	log_error("pipeline %s, stage %s: worker %u (thread %d) has been in %s for %.1f s "
	          "without a sign of progress (%u worker%s stuck in all); watchdog pings stop "
	          "until it moves (WatchdogSec=%.1fs)",
	          worst_line->cfg.name, stage_nm, worst.worker, worst.tid, job,
	          (double)worst.silent_usec / 1e6, stalled, stalled == 1 ? "" : "s",
	          (double)notify_watchdog_usec() / 1e6);
	char status[NOTIFY_STATUS_MAX];
	status_format(s, status, sizeof(status));
	notify_status(status);
}

static void notify_handles_init(Server *s)
{
	if (!notify_enabled())
		return;
	uv_prepare_init(s->loop, &s->status_prepare);
	uv_timer_init(s->loop, &s->status_timer);
	uv_timer_init(s->loop, &s->watchdog_timer);
	s->status_prepare.data = s->status_timer.data = s->watchdog_timer.data = s;
	uv_prepare_start(&s->status_prepare, on_status_prepare);
	s->notify_handles = true;
}

static void notify_handles_close(Server *s)
{
	char status[NOTIFY_STATUS_MAX];
	status_format(s, status, sizeof(status));
	notify_stopping(status);
	if (!s->notify_handles)
		return;
	s->notify_handles = false;
	uv_close((uv_handle_t *)&s->status_prepare, NULL);
	uv_close((uv_handle_t *)&s->status_timer, NULL);
	uv_close((uv_handle_t *)&s->watchdog_timer, NULL);
}

void server_notify_ready(Server *s)
{
	char status[NOTIFY_STATUS_MAX];
	status_format(s, status, sizeof(status));
	notify_ready(status);
	uint64_t wd = notify_watchdog_usec();
	if (s->notify_handles && wd > 0 && !uv_is_active((uv_handle_t *)&s->watchdog_timer)) {
		uint64_t ms = wd / 2000u > 0 ? wd / 2000u : 1;
		uv_timer_start(&s->watchdog_timer, on_watchdog_timer, ms, ms);
		notify_watchdog();
	}
}

static void notify_shutdown_begun(Server *s)
{
	char status[NOTIFY_STATUS_MAX];
	status_format(s, status, sizeof(status));
	notify_stopping(status);
}

/* Never READY=1 after STOPPING=1: it would say the service is up again.
 * No load starts or ends here during a shutdown today (reloads are refused
 * then, and a load that ends during one is discarded before reload_finish);
 * the check keeps it so if that changes. */
static void notify_reload_begun(Server *s)
{
	if (!s->shutting_down)
		notify_reloading();
}

static void notify_reload_done(Server *s)
{
	if (!s->shutting_down)
		server_notify_ready(s);
}

/* ---- signals, shutdown ------------------------------------------------------ */

static void on_signal(uv_signal_t *h, int signum)
{
	Server *s = h->data;
	if (signum == SIGHUP) {
		/* As the Reload method, which a shutdown refuses too: applied
		 * now, it could start pipelines that nothing would close. */
		if (s->shutting_down) {
			log_info("SIGHUP: not reloading: the daemon is shutting down");
			return;
		}
		log_info("SIGHUP: reloading %s%s", s->config_path,
		         s->reload_load ? " once the reload that reads it now is done" : "");
		reload_request(s, NULL, NULL);
		return;
	}
	if (s->shutting_down) {
		log_info("%s again: discarding queued jobs", strsignal(signum));
		server_shutdown(s, true, 0);
		return;
	}
	log_info("%s: shutting down (every accepted job finishes; deadline %u s)",
	         strsignal(signum), s->config->shutdown_timeout_sec);
	server_shutdown(s, false, (uint64_t)s->config->shutdown_timeout_sec * 1000);
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* The linger after a stop has passed: close who is left. */
static void on_linger(uv_timer_t *t)
{
	Server *s = t->data;
	while (!list_empty(&s->conns))
		conn_close(container_of(s->conns.next, Conn, link));
}

/* Everything has stopped: close every handle so uv_run returns. */
static void server_stop(Server *s)
{
	if (s->stopped)
		return;
	s->stopped = true;
	notify_handles_close(s);
	if (s->listening) {
		close_handle((uv_handle_t *)&s->listener);
		if (s->socket_bound)
			unlink(s->config->socket_path);
		s->listening = false;
	}
	close_handle((uv_handle_t *)&s->sig_term);
	close_handle((uv_handle_t *)&s->sig_int);
	close_handle((uv_handle_t *)&s->sig_hup);
	/* A configuration load still running keeps uv_run going until it
	 * returns, which a hung name lookup may never do: the shutdown's
	 * deadline stays armed for it (closed by reload_done). */
	if (!s->reload_load)
		close_handle((uv_handle_t *)&s->deadline);
	close_handle((uv_handle_t *)&s->take_ended);
	close_handle((uv_handle_t *)&s->expire_timer);
	close_handle((uv_handle_t *)&s->accept_timer);
	if (s->commit_async_open)
		close_handle((uv_handle_t *)&s->commit_async);
	if (s->abandoned) {
		/* Workers still run: main exits without waiting for anything. */
		while (!list_empty(&s->conns))
			conn_close(container_of(s->conns.next, Conn, link));
		return;
	}
	/* The last ended jobs first: their replies and events go out below. */
	mailbox_close(&s->mailbox, NULL);
	/* Every connection gets what was collected for it, then is closed; a
	 * peer that does not read is given SERVER_LINGER_MS, not forever. */
	for (Link *l = s->conns.next, *nx; l != &s->conns; l = nx) {
		nx = l->next;
		Conn *c = container_of(l, Conn, link);
		hold_release(c); /* no call is answered any more */
		c->close_after_flush = true;
		conn_update_reading(c);
		conn_flush(c);
		if (!c->writing)
			conn_close(c);
	}
	if (!list_empty(&s->conns))
		uv_timer_start(&s->linger, on_linger, SERVER_LINGER_MS, 0);
	else
		close_handle((uv_handle_t *)&s->linger);
	{
		for (Link *l = s->lines.next, *nx; l != &s->lines; l = nx) {
			nx = l->next;
			line_maybe_free(container_of(l, Line, link));
		}
	}
}

static void check_shutdown_done(Server *s)
{
	if (!s->shutting_down || s->stopped)
		return;
	for (Link *l = s->lines.next; l != &s->lines; l = l->next)
		if (!container_of(l, Line, link)->closed)
			return;
	if (s->pending_conns > 0)
		return; /* replies that wait for the journal (on_commit_async) */
	log_info("every pipeline has closed; exiting");
	server_stop(s);
}

static void on_deadline(uv_timer_t *t)
{
	Server *s = t->data;
	if (s->stopped) {
		log_error("shutdown deadline passed while a configuration load still runs; "
		          "exiting anyway");
		s->exit_status = 1;
		s->abandoned = true;
		uv_stop(s->loop);
		return;
	}
	uint64_t in_flight = 0;
	for (Link *l = s->lines.next; l != &s->lines; l = l->next)
		in_flight += container_of(l, Line, link)->in_flight;
	log_error("shutdown deadline passed with %" PRIu64 " jobs still in flight; exiting anyway",
	          in_flight);
	s->exit_status = 1;
	s->abandoned = true;
	server_stop(s);
	uv_stop(s->loop);
}

void server_shutdown(Server *s, bool now, uint64_t timeout_ms)
{
	if (s->stopped)
		return;
	if (now && !s->shutdown_now) {
		s->shutdown_now = true;
		/* Discard what waits in queues; running jobs finish. */
		for (Job *j = s->jobs.head; j; j = j->list_next)
			if (!j->ended)
				(void)job_cancel(j);
		for (Link *l = s->lines.next; l != &s->lines; l = l->next)
			pipeline_discard_cancelled(container_of(l, Line, link)->pipeline);
	}
	if (s->shutting_down)
		return;
	s->shutting_down = true;
	notify_shutdown_begun(s);
	prompt_update(s); /* every job's end now matters at once */
	/* Reload callers get ShuttingDown now; the load that runs is
	 * discarded when it completes (reload_done), and no other starts. */
	s->reload_again = false;
	Link *reload_lists[] = { &s->reload_waiters, &s->reload_next };
	for (size_t i = 0; i < ELEMENTSOF(reload_lists); i++)
		while (!list_empty(reload_lists[i])) {
			Conn *c = container_of(reload_lists[i]->next, Conn, wait_link);
			list_remove(&c->wait_link);
			reply_error(c, &c->call, PROTO_ERR_SHUTTING_DOWN, NULL);
			hold_done(c);
		}
	/* Held submitters get ShuttingDown; jobs accepted before stay. */
	for (Link *l = s->lines.next; l != &s->lines; l = l->next) {
		Line *line = container_of(l, Line, link);
		while (!list_empty(&line->room_waiters)) {
			Conn *c = container_of(line->room_waiters.next, Conn, wait_link);
			list_remove(&c->wait_link);
			submit_refuse(c, PROTO_ERR_SHUTTING_DOWN);
		}
	}
	for (Link *l = s->lines.next; l != &s->lines; l = l->next) {
		Line *line = container_of(l, Line, link);
		line_close(line);
		/* A retry may be due in an hour: the shutdown does not wait for it.
		 * Without a journal such jobs end failed; with one they end here
		 * only in memory, and resume at the next start. */
		s->keep_journal_rows = s->journal != NULL;
		pipeline_stop_retries(line->pipeline,
		                      s->journal ? "the daemon shut down; it resumes at the next start"
		                                 : "the daemon shut down");
		s->keep_journal_rows = false;
	}
	uv_timer_start(&s->deadline, on_deadline, timeout_ms, 0);
	check_shutdown_done(s);
}

/* ---- life cycle ------------------------------------------------------------- */

/* Before each poll: wake the workers owed a wake-up for jobs submitted in
 * this iteration (after the replies went out), then take the jobs that
 * ended unannounced. */
static void on_take_ended(uv_prepare_t *h)
{
	Server *s = h->data;
	s->accepts_this_turn = 0;
	while (!list_empty(&s->budget_waiters)) {
		Conn *c = container_of(s->budget_waiters.next, Conn, budget_link);
		list_remove(&c->budget_link);
		c->over_budget = false;
		c->read_bytes = 0;
		conn_update_reading(c);
	}
	if (s->accept_deferred) {
		s->accept_deferred = false;
		if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
			on_connection((uv_stream_t *)&s->listener, 0);
	}
	for (Link *l = s->lines.next; l != &s->lines; l = l->next) {
		Line *line = container_of(l, Line, link);
		if (line->wake_owed && line->pipeline) {
			line->wake_owed = false;
			pipeline_wake_deferred(line->pipeline);
		}
	}
	mailbox_flush(&s->mailbox);
}

int server_new(uv_loop_t *loop, Config *config, const char *config_path, Server **ret)
{
	Server *s = calloc(1, sizeof(*s));
	if (!s) {
		config_free(config);
		return -ENOMEM;
	}
	s->loop = loop;
	s->config = config;
	s->next_id = 1;
	s->self_uid = geteuid();
	s->config_gen = 1;
	list_init(&s->lines);
	list_init(&s->conns);
	list_init(&s->job_waiters);
	list_init(&s->watchers);
	list_init(&s->commit_waiters);
	list_init(&s->budget_waiters);
	list_init(&s->reload_waiters);
	list_init(&s->reload_next);
	on_loop_thread = true;
	s->config_path = strdup(config_path);
	int r = s->config_path ? 0 : -ENOMEM;
	if (r >= 0)
		r = jobtable_init(&s->jobs, config->retain_jobs, config->retain_bytes);
	s->jobs.on_drop = on_job_dropped;
	s->jobs.userdata = s;
	if (r >= 0)
		r = mailbox_init(&s->mailbox, loop, on_job_ended, s);
	if (r < 0) {
		jobtable_done(&s->jobs);
		free(s->config_path);
		config_free(config);
		free(s);
		return r;
	}
	uv_timer_init(loop, &s->deadline);
	s->deadline.data = s;
	uv_timer_init(loop, &s->linger);
	s->linger.data = s;
	uv_timer_init(loop, &s->expire_timer);
	s->expire_timer.data = s;
	uv_timer_init(loop, &s->accept_timer);
	s->accept_timer.data = s;
	jobtable_set_retain_age(&s->jobs, config->retain_age_usec);
	/* Before each poll: take the jobs that ended unannounced, so the
	 * mailbox never holds more than one loop iteration's worth. A prepare
	 * handle adds no wake-up: it runs only when the loop wakes anyway. */
	uv_prepare_init(loop, &s->take_ended);
	s->take_ended.data = s;
	uv_prepare_start(&s->take_ended, on_take_ended);
	notify_handles_init(s);
	prompt_update(s);
	uv_signal_init(loop, &s->sig_term);
	uv_signal_init(loop, &s->sig_int);
	uv_signal_init(loop, &s->sig_hup);
	s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
	uv_signal_start(&s->sig_term, on_signal, SIGTERM);
	uv_signal_start(&s->sig_int, on_signal, SIGINT);
	uv_signal_start(&s->sig_hup, on_signal, SIGHUP);

	for (unsigned i = 0; i < config->n_pipelines; i++) {
		Line *line;
		char err[256] = "";
		r = line_new(s, &config->pipelines[i], &line, err, sizeof(err));
		if (r < 0) {
			log_error("cannot start %s", err);
			*ret = s; /* the caller shuts down and runs the loop to free */
			s->exit_status = 1;
			server_shutdown(s, true, (uint64_t)config->shutdown_timeout_sec * 1000);
			return r;
		}
	}
	*ret = s;
	return 0;
}

/* ---- recovery ----------------------------------------------------------------- */

/* The rows journal_load hands over, as jobs, with the names they refer to. */
typedef struct Recovered {
	Job *job;
	char *pipeline, *stage;
} Recovered;

typedef struct Recovery {
	Recovered *rows;
	size_t n, cap;
} Recovery;

static char *dup_or_null(const char *s, bool *oom)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

static int recover_row(void *ud, const JournalJob *row)
{
	Recovery *rc = ud;
	if (rc->n == rc->cap) {
		size_t cap = rc->cap ? rc->cap * 2 : 256;
		Recovered *r = realloc(rc->rows, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		rc->rows = r;
		rc->cap = cap;
	}
	Job *job;
	int r = job_new(row->id, row->payload, row->payload_len, &job);
	if (r < 0)
		return r;
	bool oom = false;
	job->state = row->state == JOB_RUNNING ? JOB_QUEUED : row->state;
	job->stage = row->stage_index;
	job->attempt = row->attempt ? row->attempt : 1;
	job->runs = row->runs;
	job->retry_at_usec = row->retry_at_usec;
	job->ran_program = row->ran_program;
	job->timed_out = row->timed_out;
	job->exit_status = row->exit_status;
	job->term_signal = row->term_signal;
	job->submitted_usec = row->submitted_usec;
	job->uid = row->uid;
	job->started_usec = row->started_usec;
	job->finished_usec = row->finished_usec;
	job->key = dup_or_null(row->key, &oom);
	job->error = dup_or_null(row->error ? row->error
	                         : row->state == JOB_CANCELLED ? "cancelled"
	                                                       : NULL,
	                         &oom);
	job->workdir = dup_or_null(row->workdir, &oom);
	if (row->stderr_tail) {
		job->stderr_tail = malloc(row->stderr_len + 1);
		if (job->stderr_tail) {
			memcpy(job->stderr_tail, row->stderr_tail, row->stderr_len);
			job->stderr_tail[row->stderr_len] = '\0';
			job->stderr_len = row->stderr_len;
		} else {
			oom = true;
		}
	}
	Recovered *rec = &rc->rows[rc->n];
	rec->job = job;
	rec->pipeline = dup_or_null(row->pipeline, &oom);
	rec->stage = dup_or_null(row->stage, &oom);
	if (oom) {
		job_free(job);
		free(rec->pipeline);
		free(rec->stage);
		return -ENOMEM;
	}
	rc->n++;
	return 0;
}

static bool job_finished(const Job *job)
{
	JobState st = atomic_load_explicit(&job->state, memory_order_relaxed);
	return st == JOB_DONE || st == JOB_FAILED || st == JOB_CANCELLED;
}

static int by_finish_time(const void *a, const void *b)
{
	const Job *x = *(Job *const *)a, *y = *(Job *const *)b;
	if (x->finished_usec != y->finished_usec)
		return x->finished_usec < y->finished_usec ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int stage_index_of(const Line *line, const char *name)
{
	for (unsigned i = 0; i < line->cfg.n_stages; i++)
		if (strcmp(line->cfg.stages[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Removes the scratch directories of jobs the journal does not know (a
 * crash between a job's end and the removal of its directory) or that
 * are done. Blocks: before the loop serves anyone, and before any
 * recovered job runs. */
static void sweep_scratch(Server *s)
{
	char root[ACTION_WORKDIR_MAX];
	if (snprintf(root, sizeof(root), "%s/jobs", s->config->state_dir) >= (int)sizeof(root))
		return;
	DIR *d = opendir(root);
	if (!d)
		return;
	struct dirent *e;
	size_t removed = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char *end;
		unsigned long long id = strtoull(e->d_name, &end, 10);
		Job *job = *end == '\0' ? jobtable_get(&s->jobs, id) : NULL;
		if (job && atomic_load_explicit(&job->state, memory_order_relaxed) != JOB_DONE)
			continue;
		char path[ACTION_WORKDIR_MAX];
		if (snprintf(path, sizeof(path), "%s/%s", root, e->d_name) >= (int)sizeof(path))
			continue;
		int r = action_remove_workdir(path);
		if (r < 0)
			log_warning("cannot remove scratch directory %s: %s", path, strerror(-r));
		else
			removed++;
	}
	closedir(d);
	if (removed > 0)
		log_info("removed %zu scratch directories of jobs that are over", removed);
}

int server_recover(Server *s, Journal *journal, char *err, size_t errlen)
{
	Recovery rc = { 0 };
	uint64_t next_id = 1;
	size_t resumed = 0, kept = 0, forgotten = 0, orphaned = 0;
	Job **finished = NULL;
	size_t n_finished = 0;

	s->journal = journal;
	int r = journal_load(journal, recover_row, &rc, &next_id, err, errlen);
	if (r == -ENOMEM)
		snprintf(err, errlen, "out of memory reading the journal");
	/* Unfinished jobs of a pipeline that is gone: refuse, rather than
	 * drop jobs that were promised to run. */
	for (size_t i = 0; r >= 0 && i < rc.n; i++) {
		if (!job_finished(rc.rows[i].job) && !find_line(s, rc.rows[i].pipeline)) {
			size_t count = 0;
			for (size_t k = i; k < rc.n; k++)
				count += !job_finished(rc.rows[k].job) &&
				         strcmp(rc.rows[k].pipeline, rc.rows[i].pipeline) == 0;
			snprintf(err, errlen,
			         "the journal has %zu unfinished job%s (the first: %" PRIu64
			         ") of pipeline '%s', which the configuration no longer defines; "
			         "put the pipeline back so that they can run",
			         count, count == 1 ? "" : "s", rc.rows[i].job->id, rc.rows[i].pipeline);
			r = -ENOENT;
		}
	}
	if (r >= 0) {
		r = uv_async_init(s->loop, &s->commit_async, on_commit_async);
		if (r >= 0) {
			s->commit_async.data = s;
			s->commit_async_open = true;
			r = journal_start(journal, journal_committed_cb, s);
		}
		if (r < 0)
			snprintf(err, errlen, "cannot start the journal: %s", strerror(-r));
	}
	if (r >= 0 && !(finished = calloc(rc.n ? rc.n : 1, sizeof(*finished)))) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
	}
	if (r < 0) {
		for (size_t i = 0; i < rc.n; i++) {
			job_free(rc.rows[i].job);
			free(rc.rows[i].pipeline);
			free(rc.rows[i].stage);
		}
		free(rc.rows);
		return r;
	}
	s->next_id = next_id;

	/* Every job into the table first, in id order (as it requires). */
	for (size_t i = 0; i < rc.n; i++) {
		Recovered *rec = &rc.rows[i];
		Job *job = rec->job;
		Line *line = find_line(s, rec->pipeline);
		if (!line) { /* finished, of a pipeline that is gone */
			(void)journal_delete(journal, job->id, false);
			job_free(job);
			rec->job = NULL;
			forgotten++;
			continue;
		}
		job->tracker = line;
		line->refs++;
		jobtable_add(&s->jobs, job);
		int index = stage_index_of(line, rec->stage);
		if (!job_finished(job) && index < 0) {
			char msg[256];
			snprintf(msg, sizeof(msg),
			         "its stage '%s' is no longer in pipeline '%s' (found at start)",
			         rec->stage, line->cfg.name);
			job_set_failed(job, msg);
			job->finished_usec = real_usec();
			(void)journal_job(s, line, job, false);
			orphaned++;
		}
		if (index >= 0)
			job->stage = (unsigned)index;
		if (job_finished(job)) {
			job->ended = true;
			finished[n_finished++] = job;
			rec->job = NULL;
		}
	}
	/* Every job the journal knows is tracked, none runs yet, and none was
	 * dropped: the one moment the sweep cannot race a job or a removal. */
	sweep_scratch(s);
	/* Finished jobs into retention in the order they finished. */
	qsort(finished, n_finished, sizeof(*finished), by_finish_time);
	for (size_t i = 0; i < n_finished; i++) {
		kept++;
		jobtable_finish(&s->jobs, finished[i]); /* may drop (and delete) it */
	}
	free(finished);
	/* Then the unfinished ones back on their stages' queues. */
	for (size_t i = 0; i < rc.n; i++) {
		Recovered *rec = &rc.rows[i];
		Job *job = rec->job;
		if (job) {
			Line *line = job->tracker;
			/* A crash can come after a job's last stage removed its
			 * scratch directory and before its end was journaled: the
			 * stage runs again, and makes a new one. */
			struct stat st;
			if (job->workdir && stat(job->workdir, &st) < 0) {
				free(job->workdir);
				job->workdir = NULL;
			}
			line->in_flight++;
			/* Counts against its submitter's MaxJobsPerUser= like a
			 * new one (uncounted only if memory runs out here). */
			if (jobtable_charge(&s->jobs, job) < 0)
				log_warning("job %" PRIu64
				            ": out of memory counting it against uid "
				            "%" PRIu32 "'s jobs in flight",
				            job->id, job->uid);
			int pr = pipeline_resume(line->pipeline, job, job->stage);
			if (pr < 0) {
				/* Cannot happen at start (the pipeline is open); keep the
				 * job rather than lose it: it ends failed, on record. */
				char msg[128];
				snprintf(msg, sizeof(msg), "cannot resume at start: %s", strerror(-pr));
				log_error("job %" PRIu64 ": %s", job->id, msg);
				line->in_flight--;
				job_set_failed(job, msg);
				job->finished_usec = real_usec();
				(void)journal_job(s, line, job, false);
				jobtable_finish(&s->jobs, job);
			} else {
				resumed++;
			}
		}
		free(rec->pipeline);
		free(rec->stage);
	}
	free(rc.rows);
	if (resumed + kept + forgotten > 0)
		log_info("journal: %zu unfinished job%s resumed at the stage each had reached, "
		         "%zu finished kept for queries, next id %" PRIu64,
		         resumed, resumed == 1 ? "" : "s", kept, s->next_id);
	if (forgotten > 0)
		log_warning("journal: forgot %zu finished jobs of pipelines no longer configured",
		            forgotten);
	if (orphaned > 0)
		log_warning("journal: %zu unfinished jobs failed: their stage is no longer configured",
		            orphaned);
	expire_arm(s);
	return 0;
}

int server_exit_status(Server *s)
{
	return s->exit_status;
}

bool server_abandoned(Server *s)
{
	if (s->abandoned && s->journal_down)
		journal_join_failed(s->journal); /* the one thread that has ended */
	return s->abandoned;
}

int server_free(Server *s)
{
	if (!s)
		return 0;
	/* Every worker has been joined: nothing appends any more. */
	int r = journal_close(s->journal);
	jobtable_done(&s->jobs);
	config_free(s->config);
	free(s->config_path);
	free(s);
	return r;
}
