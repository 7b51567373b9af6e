/* ctl.h — what the parts of pipelinectl share: the invocation's context, the
 * parsed arguments of a verb, exit codes, error reporting and human units.
 *
 *   pipelinectl.c   main, global options, the table of verbs, help texts
 *   ctl-call.c      connecting, calling, mapping every failure to a message
 *                   and an exit code
 *   ctl-format.c    human units (durations, counts, times) and tables
 *   ctl-jobs.c      submit, get, list, wait, cancel, requeue, watch
 *   ctl-admin.c     stats, pause, resume, scale, close, drain, reload,
 *                   shutdown, info
 *
 * Only pipelinectl writes to stdout/stderr; the client library never does.
 * Single-threaded. */
#pragma once

#include "client.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: stable, documented in --help and client/README.md. */
enum {
	EXIT_OK = 0,
	EXIT_REFUSED = 1,     /* the daemon refused, a job failed, bad input data */
	EXIT_USAGE = 2,       /* bad arguments, unknown verb, bad payload on the command line */
	EXIT_UNREACHABLE = 3, /* cannot connect, or the connection was lost */
	EXIT_DENIED = 4,      /* permission denied (socket or PermissionDenied) */
	EXIT_BUSY = 75,       /* EX_TEMPFAIL: pipeline busy, retry later */
};

typedef struct Ctl {
	const char *socket_path; /* borrowed from argv / environ, or the default */
	bool json;               /* --json */
	bool tty_out, tty_err;   /* stdout / stderr are terminals */
	bool utf8;               /* the locale's charset can show → … µ */
	size_t columns;          /* stdout's terminal width; 0 if it is not a terminal */
	Client *client;          /* owned; connected on the first call */
} Ctl;

/* A verb's arguments after option parsing. Strings borrow from argv. */
typedef struct VerbArgs {
	const char *verb;
	char **args; /* positional arguments */
	int n_args;
	/* options; which a verb accepts is in its table entry */
	const char *file;
	bool use_stdin, nowait, wait, all, now, failed;
	const char *pipeline, *state;
	const char *key; /* submit --key */
	int64_t limit;      /* --limit, 0 if absent */
	int64_t timeout_ms; /* --timeout, -1 if absent */
} VerbArgs;

typedef int (*VerbRun)(Ctl *ctl, const VerbArgs *a);

/* Verb handlers; each returns an exit code. */
int verb_submit(Ctl *ctl, const VerbArgs *a);
int verb_get(Ctl *ctl, const VerbArgs *a);
int verb_list(Ctl *ctl, const VerbArgs *a);
int verb_wait(Ctl *ctl, const VerbArgs *a);
int verb_cancel(Ctl *ctl, const VerbArgs *a);
int verb_requeue(Ctl *ctl, const VerbArgs *a);
int verb_watch(Ctl *ctl, const VerbArgs *a);
int verb_stats(Ctl *ctl, const VerbArgs *a);
int verb_pause(Ctl *ctl, const VerbArgs *a);
int verb_resume(Ctl *ctl, const VerbArgs *a);
int verb_scale(Ctl *ctl, const VerbArgs *a);
int verb_close(Ctl *ctl, const VerbArgs *a);
int verb_drain(Ctl *ctl, const VerbArgs *a);
int verb_reload(Ctl *ctl, const VerbArgs *a);
int verb_shutdown(Ctl *ctl, const VerbArgs *a);
int verb_info(Ctl *ctl, const VerbArgs *a);

/* ---- ctl-call.c ---- */

/* "pipelinectl: " + the formatted message + newline, on stderr. Clears a
 * progress line first. */
void ctl_error(Ctl *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A usage error: the message, a pointer to --help; returns EXIT_USAGE. */
int ctl_usage(Ctl *ctl, const char *verb, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Connects if not yet connected. Returns EXIT_OK, or reports why it cannot
 * and returns EXIT_UNREACHABLE / EXIT_DENIED / EXIT_USAGE. */
int ctl_connect(Ctl *ctl);

/* Sends one call (params stolen, may be NULL) without reading its reply.
 * what names the request in messages ("submit to 'images'"). Returns an
 * exit code, having reported any failure. */
int ctl_send_take(Ctl *ctl, const char *what, const char *method, json_t *params, unsigned flags);
/* Reads the next reply. Returns EXIT_OK with *ret filled (the caller owns
 * it) for a normal reply; for an error reply reports it and returns its exit
 * code (*ret untouched); likewise for a transport failure. */
int ctl_recv(Ctl *ctl, const char *what, ProtoReply *ret);
/* As ctl_recv, but an error reply is returned in *ret (EXIT_OK, ret->error
 * set) for the caller to report; only a transport failure is reported. */
int ctl_recv_reply(Ctl *ctl, const char *what, ProtoReply *ret);
/* ctl_send_take + ctl_recv. */
int ctl_call_take(Ctl *ctl, const char *what, const char *method, json_t *params, ProtoReply *ret);
/* Reports an error reply (r->error set) naming what; returns its exit code. */
int ctl_report_reply(Ctl *ctl, const char *what, const ProtoReply *r);
/* Reports an out-of-memory failure; returns EXIT_REFUSED. */
int ctl_oom(Ctl *ctl);
/* An error reply's parameter key holding an array of names, as "a, b, c"
 * in buf (cut at a whole name, with "...", if it does not fit). Returns
 * buf; "" if there are none. */
const char *ctl_reply_names(json_t *params, const char *key, char *buf, size_t len);

/* A user for people: "alice (uid 1001)", or "uid 1001" when the name does
 * not resolve. Returns buf. */
const char *ctl_describe_user(uint32_t uid, char *buf, size_t len);
/* True for the methods a read-only caller may call (ReadOnlyUsers=): the
 * daemon's classes, for the hint of a PermissionDenied message. */
bool ctl_method_is_read_only(const char *method);

/* Progress on stderr, only when it is a terminal: a line rewritten in place
 * (\r), cleared by ctl_progress_end or by any ctl_error. */
void ctl_progress(Ctl *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ctl_progress_end(Ctl *ctl);

/* JSON for programs: one document on stdout, indented, then a newline.
 * Borrowed. */
void ctl_print_json(const json_t *j);
/* One compact line (JSON lines for streams), flushed. Borrowed. */
void ctl_print_json_line(const json_t *j);

/* ---- ctl-format.c ---- */

#define FMT_BUF 64

/* A job's submitter for a table cell: the user name, or the uid when it
 * does not resolve. Returns buf. */
const char *ctl_user_name(uint32_t uid, char buf[FMT_BUF]);

/* 1234567 → "1,234,567". Returns buf. */
char *fmt_count(int64_t n, char buf[FMT_BUF]);
/* Microseconds → "850us", "380ms", "1.2s", "42s", "3m05s", "2h05m", "3d04h". */
char *fmt_duration(const Ctl *ctl, int64_t usec, char buf[FMT_BUF]);
/* CLOCK_REALTIME microseconds → local "2024-05-01 12:00:01.123"; with
 * time_only "12:00:01.123". */
char *fmt_time(int64_t usec, bool time_only, char buf[FMT_BUF]);
/* "…", or "..." where the charset has no such character. */
const char *fmt_ellipsis(const Ctl *ctl);
/* Microseconds since the epoch now. */
int64_t now_realtime_usec(void);
/* Monotonic microseconds, for rates. */
int64_t now_mono_usec(void);

/* Parses a decimal integer in [min, max]; the whole string. -EINVAL / -ERANGE. */
int parse_int(const char *s, int64_t min, int64_t max, int64_t *ret);

/* A table for people: columns left-aligned, two spaces apart, the last one
 * unpadded. Cells are copied. */
typedef struct Table Table;
Table *table_new(size_t n_cols, const char *const *headers);
void table_free(Table *t);
/* Adds a row of n_cols strings (NULL shows as "-"), made one line each and
 * safe for a terminal as print_text does. -ENOMEM. */
int table_add(Table *t, const char *const *cells);
size_t table_rows(const Table *t);
/* Makes table_print cut the last column's cells, ending them with ellipsis
 * (borrowed, static), so that lines fit in columns; 0: never cut. The last
 * column keeps some room however wide the others are. */
void table_fit(Table *t, size_t columns, const char *ellipsis);
void table_print(const Table *t, FILE *f);

/* Writes s[0..len) (text from the daemon or from a job's program) so that it
 * cannot act on a terminal: control characters other than line breaks and
 * tabs, DEL and the C1 controls (U+0080..U+009F) show as '?'; "\r\n" is a
 * line break. Trailing line breaks are dropped. Each other line break is
 * written as a newline and indent, or with indent NULL as a blank (one line
 * of a table or a stream, where tabs and lone '\r' are blanks too). */
void print_text(FILE *f, const char *s, size_t len, const char *indent);

/* A job's fields, read leniently for display: absent numbers are 0 and
 * absent strings NULL, except where said. Protocol-1 daemons send none of
 * attempt, retry_at_usec, exit_status, signal, timed_out, stderr, workdir. */
typedef struct JobView {
	int64_t id, runs, attempt, submitted_usec, started_usec, finished_usec;
	int64_t retry_at_usec; /* when a "retrying" job runs next */
	/* How the last program run on the job ended: -1 when absent. */
	int64_t exit_status, signal;
	bool timed_out;
	/* Borrowed from the Job object. */
	const char *pipeline, *state, *stage, *error, *workdir;
	const char *stderr_tail; /* the end of that program's stderr, may hold NULs */
	size_t stderr_len;       /* its length in bytes */
	json_t *payload;         /* may be NULL */
} JobView;
void job_view(json_t *job, JobView *ret);
/* Whether the job is in state ("failed", ...); false if it has none. */
bool job_is(const JobView *v, const char *state);
/* How the last program run on the job ended, e.g. "exit status 3", "killed by
 * signal 9 (SIGKILL)", "timed out, killed by signal 15 (SIGTERM)"; NULL if
 * the job has no such record. Returns buf or NULL. */
const char *fmt_run_end(const JobView *v, char buf[FMT_BUF]);
/* Why the job failed or was cancelled (while retrying: why its last attempt
 * failed), for one line: its error, else for a failed or retrying job how its
 * last program ended, else NULL. Borrowed from v or written in buf. */
const char *job_reason(const JobView *v, char buf[FMT_BUF]);
/* When a retrying job runs next: "in 3.2s", "due now" or "was due 12s ago"
 * (it waits for room or a worker), from retry_at_usec seen at now (both
 * CLOCK_REALTIME µs). Returns buf. */
char *fmt_retry_when(const Ctl *ctl, int64_t retry_at_usec, int64_t now, char buf[FMT_BUF]);
/* Prints a job as "key: value" lines (people), its program's stderr last as
 * an indented block, or as its JSON (--json). */
void print_job(const Ctl *ctl, json_t *job);
