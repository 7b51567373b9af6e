/* ctl.h — what the parts of pipelinectl share: the invocation's context, the
 * parsed arguments of a verb, exit codes, error reporting and human units.
 *
 *   pipelinectl.c   main, global options, the table of verbs, help texts
 *   ctl-call.c      connecting, calling, mapping every failure to a message
 *                   and an exit code
 *   ctl-format.c    human units (durations, counts, times) and tables
 *   ctl-jobs.c      submit, get, list, wait, cancel, watch
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
	Client *client;          /* owned; connected on the first call */
} Ctl;

/* A verb's arguments after option parsing. Strings borrow from argv. */
typedef struct VerbArgs {
	const char *verb;
	char **args; /* positional arguments */
	int n_args;
	/* options; which a verb accepts is in its table entry */
	const char *file;
	bool use_stdin, nowait, wait, all, now;
	const char *pipeline, *state;
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

/* 1234567 → "1,234,567". Returns buf. */
char *fmt_count(int64_t n, char buf[FMT_BUF]);
/* Microseconds → "850us", "380ms", "1.2s", "42s", "3m05s", "2h05m", "3d04h". */
char *fmt_duration(const Ctl *ctl, int64_t usec, char buf[FMT_BUF]);
/* CLOCK_REALTIME microseconds → local "2024-05-01 12:00:01.123"; with
 * time_only "12:00:01.123". */
char *fmt_time(int64_t usec, bool time_only, char buf[FMT_BUF]);
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
/* Adds a row of n_cols strings (NULL shows as "-"). -ENOMEM. */
int table_add(Table *t, const char *const *cells);
size_t table_rows(const Table *t);
void table_print(const Table *t, FILE *f);

/* Writes s with line breaks turned into blanks (one line of a table or a
 * stream). */
void print_oneline(FILE *f, const char *s);

/* A job's fields, read leniently for display (absent → 0 / NULL). */
typedef struct JobView {
	int64_t id, runs, submitted_usec, started_usec, finished_usec;
	const char *pipeline, *state, *stage, *error; /* borrowed from the Job object */
	json_t *payload;                              /* borrowed, may be NULL */
} JobView;
void job_view(json_t *job, JobView *ret);
/* Prints a job as "key: value" lines (people) or as its JSON (--json). */
void print_job(const Ctl *ctl, json_t *job);
