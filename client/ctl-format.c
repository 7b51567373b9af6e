/* ctl-format.c — numbers, durations and times for people; tables; jobs. */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
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

struct Table {
	size_t n_cols;
	size_t n_lines, cap_lines; /* lines held, the header included */
	char **cells;              /* n_lines * n_cols owned strings, header first */
	size_t *width;
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
		/* A cell is one line: a stray newline would break the columns. */
		for (char *p = s; *p; p++)
			if (*p == '\n' || *p == '\r' || *p == '\t')
				*p = ' ';
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

void table_print(const Table *t, FILE *f)
{
	for (size_t r = 0; r < t->n_lines; r++) {
		char **line = t->cells + r * t->n_cols;
		/* No padding after the last cell with text: no trailing blanks. */
		size_t last = t->n_cols;
		while (last > 1 && line[last - 1][0] == '\0')
			last--;
		for (size_t i = 0; i < last; i++) {
			if (i + 1 == last)
				fprintf(f, "%s\n", line[i]);
			else
				fprintf(f, "%s%*s", line[i],
				        (int)(t->width[i] - text_width(line[i]) + 2), "");
		}
	}
}

void print_oneline(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc(*s == '\n' || *s == '\r' ? ' ' : *s, f);
}

/* "key:" padded to the value column, then the value; a value of several
 * lines continues under the first. */
static void print_field(const char *key, const char *value)
{
	printf("%-11s", key);
	for (; *value; value++) {
		putchar(*value);
		if (*value == '\n' && value[1])
			printf("%11s", "");
	}
	putchar('\n');
}

void job_view(json_t *job, JobView *ret)
{
	*ret = (JobView){
		.id = json_integer_value(json_object_get(job, "id")),
		.runs = json_integer_value(json_object_get(job, "runs")),
		.submitted_usec = json_integer_value(json_object_get(job, "submitted_usec")),
		.started_usec = json_integer_value(json_object_get(job, "started_usec")),
		.finished_usec = json_integer_value(json_object_get(job, "finished_usec")),
		.pipeline = json_string_value(json_object_get(job, "pipeline")),
		.state = json_string_value(json_object_get(job, "state")),
		.stage = json_string_value(json_object_get(job, "stage")),
		.error = json_string_value(json_object_get(job, "error")),
		.payload = json_object_get(job, "payload"),
	};
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
	printf("runs:      %" PRId64 "\n", v.runs);
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
	if (v.payload) {
		char *p = json_dumps(v.payload, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("payload:   %s\n", p ? p : "?");
		free(p);
	}
}
