/* ctl-format.c — numbers, durations and times for people; tables; jobs. */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *fmt_count(int64_t n, char buf[FMT_BUF])
{
	char digits[32];
	/* Via unsigned, so that INT64_MIN has a magnitude. */
	uint64_t mag = n < 0 ? -(uint64_t)n : (uint64_t)n;
	int len = snprintf(digits, sizeof(digits), "%" PRIu64, mag);
	char *p = buf;
	if (n < 0)
		*p++ = '-';
	for (int i = 0; i < len; i++) {
		if (i > 0 && (len - i) % 3 == 0)
			*p++ = ',';
		*p++ = digits[i];
	}
	*p = '\0';
	return buf;
}

char *fmt_duration(const Ctl *ctl, int64_t usec, char buf[FMT_BUF])
{
	const char *sign = "";
	if (usec < 0) {
		sign = "-";
		usec = -usec;
	}
	const int64_t ms = 1000, s = 1000 * ms, m = 60 * s, h = 60 * m, d = 24 * h;
	if (usec < ms)
		snprintf(buf, FMT_BUF, "%s%" PRId64 "%s", sign, usec, ctl->utf8 ? "µs" : "us");
	else if (usec < s)
		snprintf(buf, FMT_BUF, "%s%" PRId64 "ms", sign, usec / ms);
	else if (usec < 10 * s - 50 * ms) /* 9.96s would round up to "10.0s" */
		snprintf(buf, FMT_BUF, "%s%.1fs", sign, (double)usec / (double)s);
	else if (usec < m)
		snprintf(buf, FMT_BUF, "%s%" PRId64 "s", sign, usec / s);
	else if (usec < h)
		snprintf(buf, FMT_BUF, "%s%" PRId64 "m%02" PRId64 "s", sign, usec / m,
		         usec % m / s);
	else if (usec < d)
		snprintf(buf, FMT_BUF, "%s%" PRId64 "h%02" PRId64 "m", sign, usec / h,
		         usec % h / m);
	else
		snprintf(buf, FMT_BUF, "%s%" PRId64 "d%02" PRId64 "h", sign, usec / d,
		         usec % d / h);
	return buf;
}

char *fmt_time(int64_t usec, bool time_only, char buf[FMT_BUF])
{
	time_t t = (time_t)(usec / 1000000);
	struct tm tm;
	if (!localtime_r(&t, &tm)) {
		snprintf(buf, FMT_BUF, "@%" PRId64, usec);
		return buf;
	}
	size_t n = strftime(buf, FMT_BUF, time_only ? "%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf + n, FMT_BUF - n, ".%03d", (int)(usec % 1000000 / 1000));
	return buf;
}

const char *fmt_ellipsis(const Ctl *ctl)
{
	return ctl->utf8 ? "…" : "...";
}

static int64_t clock_usec(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t now_realtime_usec(void)
{
	return clock_usec(CLOCK_REALTIME);
}

int64_t now_mono_usec(void)
{
	return clock_usec(CLOCK_MONOTONIC);
}

int parse_int(const char *s, int64_t min, int64_t max, int64_t *ret)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end != '\0' || s[0] == ' ' || s[0] == '\t' || s[0] == '+')
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

/* Columns a UTF-8 string takes on a terminal, counting each code point as
 * one (no wide or combining characters in names and messages we show). */
static size_t text_width(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

/* Reads the character at s[i] (i < len) for display and returns how many
 * bytes it takes; *ret is what to show: '?' for a control character, a
 * blank for a line break or a tab when oneline, else '\n' for a line break
 * and the byte itself otherwise. The C1 controls are checked because some
 * terminals obey U+009B like ESC [. */
static size_t display_char(const char *s, size_t i, size_t len, bool oneline, char *ret)
{
	unsigned char c = (unsigned char)s[i];
	unsigned char next = i + 1 < len ? (unsigned char)s[i + 1] : 0;
	if (c == '\n' || (c == '\r' && next == '\n')) {
		*ret = oneline ? ' ' : '\n';
		return c == '\r' ? 2 : 1;
	}
	if (oneline && (c == '\r' || c == '\t')) {
		*ret = ' ';
		return 1;
	}
	if ((c < 0x20 && c != '\t') || c == 0x7f) {
		*ret = '?';
		return 1;
	}
	if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {
		*ret = '?';
		return 2;
	}
	*ret = (char)c;
	return 1;
}

/* Least room the last column of a fitted table keeps, in columns. */
#define TABLE_LAST_MIN 16

struct Table {
	size_t n_cols;
	size_t n_lines, cap_lines; /* lines held, the header included */
	char **cells;              /* n_lines * n_cols owned strings, header first */
	size_t *width;
	size_t fit;           /* table_fit's columns, 0 for none */
	const char *ellipsis; /* borrowed, static */
};

Table *table_new(size_t n_cols, const char *const *headers)
{
	Table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->n_cols = n_cols;
	t->width = calloc(n_cols, sizeof(*t->width));
	if (!t->width || table_add(t, headers) < 0) {
		table_free(t);
		return NULL;
	}
	return t;
}

void table_free(Table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_lines * t->n_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->width);
	free(t);
}

int table_add(Table *t, const char *const *cells)
{
	if (t->n_lines == t->cap_lines) {
		size_t cap = t->cap_lines ? t->cap_lines * 2 : 16;
		char **c = realloc(t->cells, cap * t->n_cols * sizeof(*c));
		if (!c)
			return -ENOMEM;
		t->cells = c;
		t->cap_lines = cap;
	}
	char **line = t->cells + t->n_lines * t->n_cols;
	for (size_t i = 0; i < t->n_cols; i++) {
		char *s = strdup(cells[i] ? cells[i] : "-");
		if (!s) {
			while (i-- > 0)
				free(line[i]);
			return -ENOMEM;
		}
		/* A cell is one line: a stray newline would break the columns.
		 * Shown characters never take more bytes than read: in place. */
		size_t len = strlen(s), out = 0;
		for (size_t in = 0; in < len;)
			in += display_char(s, in, len, true, &s[out++]);
		s[out] = '\0';
		line[i] = s;
	}
	for (size_t i = 0; i < t->n_cols; i++) {
		size_t w = text_width(line[i]);
		if (w > t->width[i])
			t->width[i] = w;
	}
	t->n_lines++;
	return 0;
}

size_t table_rows(const Table *t)
{
	return t->n_lines - 1;
}

void table_fit(Table *t, size_t columns, const char *ellipsis)
{
	t->fit = columns;
	t->ellipsis = ellipsis;
}

/* Writes the last cell of a line that starts at column at, cut to fit. */
static void print_last_cell(const Table *t, const char *cell, size_t at, FILE *f)
{
	size_t width = text_width(cell);
	size_t room = t->fit > at + TABLE_LAST_MIN ? t->fit - at : TABLE_LAST_MIN;
	if (t->fit == 0 || width <= room) {
		fprintf(f, "%s\n", cell);
		return;
	}
	size_t keep = room - text_width(t->ellipsis);
	/* Cut before the first byte of code point keep + 1. */
	const char *p = cell;
	for (size_t n = 0; *p; p++)
		if (((unsigned char)*p & 0xc0) != 0x80 && n++ == keep)
			break;
	fprintf(f, "%.*s%s\n", (int)(p - cell), cell, t->ellipsis);
}

void table_print(const Table *t, FILE *f)
{
	for (size_t r = 0; r < t->n_lines; r++) {
		char **line = t->cells + r * t->n_cols;
		/* No padding after the last cell with text: no trailing blanks. */
		size_t last = t->n_cols;
		while (last > 1 && line[last - 1][0] == '\0')
			last--;
		size_t at = 0;
		for (size_t i = 0; i < last; i++) {
			if (i + 1 == last) {
				print_last_cell(t, line[i], at, f);
			} else {
				fprintf(f, "%s%*s", line[i],
				        (int)(t->width[i] - text_width(line[i]) + 2), "");
				at += t->width[i] + 2;
			}
		}
	}
}

void print_text(FILE *f, const char *s, size_t len, const char *indent)
{
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	for (size_t i = 0; i < len;) {
		char c;
		i += display_char(s, i, len, !indent, &c);
		fputc(c, f);
		if (c == '\n')
			fputs(indent, f);
	}
}

/* The key column of print_job, as wide as "submitted: ". */
static const char key_blank[] = "           ";

/* "key:" padded to the value column, then the value; a value of several
 * lines continues under the first. */
static void print_field(const char *key, const char *value)
{
	printf("%-*s", (int)strlen(key_blank), key);
	print_text(stdout, value, strlen(value), key_blank);
	putchar('\n');
}

/* An optional integer field; absent (or not an integer): dflt. */
static int64_t opt_int(json_t *job, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(job, key);
	return json_is_integer(v) ? json_integer_value(v) : dflt;
}

void job_view(json_t *job, JobView *ret)
{
	json_t *err = json_object_get(job, "stderr");
	*ret = (JobView){
		.id = opt_int(job, "id", 0),
		.runs = opt_int(job, "runs", 0),
		.attempt = opt_int(job, "attempt", 0),
		.submitted_usec = opt_int(job, "submitted_usec", 0),
		.started_usec = opt_int(job, "started_usec", 0),
		.finished_usec = opt_int(job, "finished_usec", 0),
		.retry_at_usec = opt_int(job, "retry_at_usec", 0),
		.exit_status = opt_int(job, "exit_status", -1),
		.signal = opt_int(job, "signal", -1),
		.timed_out = json_is_true(json_object_get(job, "timed_out")),
		.pipeline = json_string_value(json_object_get(job, "pipeline")),
		.state = json_string_value(json_object_get(job, "state")),
		.stage = json_string_value(json_object_get(job, "stage")),
		.error = json_string_value(json_object_get(job, "error")),
		.workdir = json_string_value(json_object_get(job, "workdir")),
		.stderr_tail = json_string_value(err),
		.stderr_len = json_string_length(err),
		.payload = json_object_get(job, "payload"),
	};
}

bool job_is(const JobView *v, const char *state)
{
	return v->state && strcmp(v->state, state) == 0;
}

const char *fmt_run_end(const JobView *v, char buf[FMT_BUF])
{
	const char *timed_out = v->timed_out ? "timed out, " : "";
	if (v->signal > 0) {
		const char *name = v->signal <= INT32_MAX ? sigabbrev_np((int)v->signal) : NULL;
		snprintf(buf, FMT_BUF, "%skilled by signal %" PRId64 "%s%s%s", timed_out, v->signal,
		         name ? " (SIG" : "", name ? name : "", name ? ")" : "");
	} else if (v->exit_status >= 0) {
		snprintf(buf, FMT_BUF, "%sexit status %" PRId64, timed_out, v->exit_status);
	} else if (v->timed_out) {
		snprintf(buf, FMT_BUF, "timed out");
	} else {
		return NULL;
	}
	return buf;
}

const char *job_reason(const JobView *v, char buf[FMT_BUF])
{
	if (v->error && v->error[0])
		return v->error;
	/* A done job's last program exited 0: that is no reason. */
	if (job_is(v, "failed") || job_is(v, "retrying"))
		return fmt_run_end(v, buf);
	return NULL;
}

char *fmt_retry_when(const Ctl *ctl, int64_t retry_at_usec, int64_t now, char buf[FMT_BUF])
{
	char d[FMT_BUF];
	if (retry_at_usec > now)
		snprintf(buf, FMT_BUF, "in %s", fmt_duration(ctl, retry_at_usec - now, d));
	else if (now - retry_at_usec < 1000000)
		snprintf(buf, FMT_BUF, "due now");
	else
		snprintf(buf, FMT_BUF, "was due %s ago", fmt_duration(ctl, now - retry_at_usec, d));
	return buf;
}

/* What became of the job's scratch directory (PROTOCOL: removed when the job
 * is done or cancelled, kept when it fails). */
static const char *workdir_note(const JobView *v)
{
	if (job_is(v, "failed"))
		return " (kept: the job failed)";
	if (job_is(v, "done") || job_is(v, "cancelled"))
		return " (removed)";
	return "";
}

/* The end of the last program's stderr as a block under a heading. */
static void print_stderr_tail(const JobView *v)
{
	const char *s = v->stderr_tail;
	size_t len = v->stderr_len;
	char n[FMT_BUF];
	if (!s || strspn(s, "\r\n") == len)
		return; /* nothing, or only line breaks */
	printf("stderr (last %s byte%s):\n  ", fmt_count((int64_t)len, n), len == 1 ? "" : "s");
	print_text(stdout, s, len, "  ");
	putchar('\n');
}

const char *ctl_describe_user(uint32_t uid, char *buf, size_t len)
{
	char pwbuf[1024];
	struct passwd pw, *res = NULL;
	if (getpwuid_r((uid_t)uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res)
		snprintf(buf, len, "%s (uid %" PRIu32 ")", res->pw_name, uid);
	else
		snprintf(buf, len, "uid %" PRIu32, uid);
	return buf;
}

bool ctl_method_is_read_only(const char *method)
{
	static const char *const read_only[] = {
		"io.pipelined.GetJob", "io.pipelined.ListJobs", "io.pipelined.WaitJob",
		"io.pipelined.Watch",  "io.pipelined.Stats",
	};
	for (size_t i = 0; i < sizeof(read_only) / sizeof(read_only[0]); i++)
		if (strcmp(method, read_only[i]) == 0)
			return true;
	return false;
}

/* The name of uid for a table cell, or its number; the last answer is
 * remembered (a listing has runs of one submitter). Returns buf. */
const char *ctl_user_name(uint32_t uid, char buf[FMT_BUF])
{
	static uint32_t last_uid;
	static char last[FMT_BUF];
	static bool have_last;
	if (!have_last || last_uid != uid) {
		char pwbuf[1024];
		struct passwd pw, *res = NULL;
		if (getpwuid_r((uid_t)uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res &&
		    strlen(res->pw_name) < sizeof(last))
			snprintf(last, sizeof(last), "%s", res->pw_name);
		else
			snprintf(last, sizeof(last), "%" PRIu32, uid);
		last_uid = uid;
		have_last = true;
	}
	memcpy(buf, last, FMT_BUF);
	return buf;
}

void print_job(const Ctl *ctl, json_t *job)
{
	if (ctl->json) {
		ctl_print_json(job);
		return;
	}
	JobView v;
	char b1[FMT_BUF], b2[FMT_BUF];
	job_view(job, &v);
	int64_t now = now_realtime_usec();
	printf("id:        %" PRId64 "\n", v.id);
	printf("pipeline:  %s\n", v.pipeline ? v.pipeline : "-");
	printf("state:     %s\n", v.state ? v.state : "-");
	printf("stage:     %s\n", v.stage ? v.stage : "-");
	bool retrying = job_is(&v, "retrying");
	if (v.attempt > 1 || (retrying && v.attempt > 0))
		printf("attempt:   %" PRId64 "\n", v.attempt);
	if (retrying && v.retry_at_usec > 0)
		printf("retrying:  next attempt %s\n",
		       fmt_retry_when(ctl, v.retry_at_usec, now, b1));
	printf("runs:      %" PRId64 "\n", v.runs);
	const char *key = json_string_value(json_object_get(job, "key"));
	if (key)
		print_field("key:", key); /* the client's text: shown safely */
	json_t *uid = json_object_get(job, "uid");
	if (json_is_integer(uid) && json_integer_value(uid) >= 0 &&
	    json_integer_value(uid) < UINT32_MAX) {
		char who[128];
		printf("user:      %s\n",
		       ctl_describe_user((uint32_t)json_integer_value(uid), who, sizeof(who)));
	}
	if (v.submitted_usec > 0)
		printf("submitted: %s (%s ago)\n", fmt_time(v.submitted_usec, false, b1),
		       fmt_duration(ctl, now - v.submitted_usec, b2));
	if (v.started_usec > 0)
		printf("started:   %s (waited %s)\n", fmt_time(v.started_usec, false, b1),
		       fmt_duration(ctl, v.started_usec - v.submitted_usec, b2));
	if (v.finished_usec > 0)
		printf("finished:  %s (took %s)\n", fmt_time(v.finished_usec, false, b1),
		       fmt_duration(ctl,
		                    v.finished_usec - (v.started_usec > 0 ? v.started_usec
		                                                          : v.submitted_usec),
		                    b2));
	if (v.error)
		print_field("error:", v.error);
	if (fmt_run_end(&v, b1))
		printf("last run:  %s\n", b1);
	if (v.workdir) {
		printf("workdir:   ");
		print_text(stdout, v.workdir, strlen(v.workdir), NULL);
		printf("%s\n", workdir_note(&v));
	}
	if (v.payload) {
		/* JSON escapes C0 controls but not C1: print_text it too. */
		char *p = json_dumps(v.payload, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("payload:   ");
		print_text(stdout, p ? p : "?", p ? strlen(p) : 1, NULL);
		putchar('\n');
		free(p);
	}
	print_stderr_tail(&v);
}
