/* ctl-jobs.c — the verbs about jobs: submit, get, list, wait, cancel,
 * requeue, watch. */
#include "ctl.h"

#include "proto/errors.h"
#include "proto/limits.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define M_SUBMIT       "io.pipelined.Submit"
#define M_SUBMIT_BATCH "io.pipelined.SubmitBatch"
#define M_GET_JOB      "io.pipelined.GetJob"
#define M_LIST_JOBS    "io.pipelined.ListJobs"
#define M_WAIT_JOB     "io.pipelined.WaitJob"
#define M_CANCEL_JOB   "io.pipelined.CancelJob"
#define M_REQUEUE_JOB  "io.pipelined.RequeueJob"
#define M_WATCH        "io.pipelined.Watch"

/* The daemon's limit on a payload's own nesting (it leaves room for the
 * payload inside a GetJob reply), the same for Submit and SubmitBatch. */
#define SUBMIT_PAYLOAD_DEPTH PROTO_PAYLOAD_DEPTH_MAX
#define BATCH_PAYLOAD_DEPTH  PROTO_PAYLOAD_DEPTH_MAX

/* Batches in flight during a bulk submit: enough to keep the daemon busy
 * while the next batch is parsed and its replies travel, few enough that
 * neither side's socket buffers fill with replies nobody reads. */
#define BULK_WINDOW 4
/* WaitJob calls in flight for 'wait ID...' (the daemon answers them in
 * order anyway; the window only bounds what sits in the socket buffers). */
#define WAIT_WINDOW 64
/* Bytes of one message left for payloads after the SubmitBatch envelope;
 * the pipeline name is added per call (escaped, at worst 6 bytes a byte). */
#define BATCH_ENVELOPE 256u

/* How often the bulk progress line is rewritten, in microseconds. */
#define PROGRESS_EVERY_USEC 200000

/* JobState (io.pipelined.varlink), for checking --state before asking. */
static const char *const job_states[] = { "queued", "running", "retrying",
	                                  "done",   "failed",  "cancelled" };

static int parse_job_id(Ctl *ctl, const char *verb, const char *s, int64_t *ret)
{
	if (parse_int(s, 1, INT64_MAX, ret) < 0)
		return ctl_usage(ctl, verb, "%s: '%s' is not a job id (a positive whole number)",
		                 verb, s);
	return EXIT_OK;
}

/* Parses text[0..len) as one job payload. Returns 0 with a new object in
 * *ret and its compact size in *ret_size; else -EINVAL and a reason in err
 * that says where parsing stopped. */
static int parse_payload(const char *text, size_t len, unsigned depth_max, json_t **ret,
                         size_t *ret_size, char *err, size_t errlen)
{
	json_error_t e;
	/* The daemon refuses duplicate keys (PROTOCOL.md §2); jansson would
	 * silently keep the last one, so say so here, with the position. */
	json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
	if (!j) {
		if (e.line > 1)
			snprintf(err, errlen, "not valid JSON at line %d, column %d: %s", e.line,
			         e.column, e.text);
		else
			snprintf(err, errlen, "not valid JSON at column %d: %s", e.column, e.text);
		return -EINVAL;
	}
	if (!json_is_object(j)) {
		const char *kind = json_is_array(j)    ? "an array"
		                   : json_is_string(j) ? "a string"
		                   : json_is_number(j) ? "a number"
		                   : json_is_null(j)   ? "null"
		                                       : "a boolean";
		snprintf(err, errlen, "not a JSON object (%s)", kind);
		json_decref(j);
		return -EINVAL;
	}
	if (!proto_depth_ok(text, len, depth_max)) {
		snprintf(err, errlen, "payload nested deeper than %u levels", depth_max);
		json_decref(j);
		return -EINVAL;
	}
	size_t size = json_dumpb(j, NULL, 0, JSON_COMPACT);
	if (size > PROTO_PAYLOAD_MAX) {
		char b1[FMT_BUF], b2[FMT_BUF];
		snprintf(err, errlen,
		         "payload of %s bytes (as compact JSON) is over the limit of %s",
		         fmt_count((int64_t)size, b1), fmt_count(PROTO_PAYLOAD_MAX, b2));
		json_decref(j);
		return -EINVAL;
	}
	*ret = j;
	*ret_size = size;
	return 0;
}

/* Reads all of f, at most max bytes. Returns 0 and a new NUL-terminated
 * buffer; -EFBIG if longer; -errno. */
static int read_all(FILE *f, size_t max, char **ret, size_t *ret_len)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (len + 1 == cap) {
			if (cap > max + 1) {
				free(buf);
				return -EFBIG;
			}
			char *b = realloc(buf, cap * 2);
			if (!b) {
				free(buf);
				return -ENOMEM;
			}
			buf = b;
			cap *= 2;
		}
		size_t n = fread(buf + len, 1, cap - 1 - len, f);
		len += n;
		if (n == 0) {
			if (ferror(f)) {
				int r = errno ? -errno : -EIO;
				free(buf);
				return r;
			}
			break;
		}
	}
	if (len > max) {
		free(buf);
		return -EFBIG;
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* Reports how an ended job ended: 0 if done, else EXIT_REFUSED with a line
 * on stderr. */
static int job_outcome(Ctl *ctl, json_t *job)
{
	JobView v;
	job_view(job, &v);
	if (job_is(&v, "done"))
		return EXIT_OK;
	const char *verb = job_is(&v, "failed")      ? "failed"
	                   : job_is(&v, "cancelled") ? "was cancelled"
	                                             : "ended";
	char buf[FMT_BUF];
	const char *reason = job_reason(&v, buf);
	ctl_error(ctl, "job %" PRId64 " %s at stage '%s'%s%s", v.id, verb, v.stage ? v.stage : "?",
	          reason ? ": " : "", reason ? reason : "");
	return EXIT_REFUSED;
}

/* ---- submit ---- */

static int submit_one(Ctl *ctl, const VerbArgs *a, json_t *payload)
{
	const char *pipeline = a->args[0];
	char what[PROTO_NAME_MAX * 4 + 64];
	snprintf(what, sizeof(what), "submit to '%s'", pipeline);

	json_t *params = json_pack("{s:s, s:O}", "pipeline", pipeline, "payload", payload);
	if (params && a->nowait)
		json_object_set_new(params, "nowait", json_true());
	if (params && a->key)
		json_object_set_new(params, "key", json_string(a->key));
	ProtoReply r;
	int ex = ctl_call_take(ctl, what, M_SUBMIT, params, &r);
	if (ex != EXIT_OK)
		return ex;
	json_int_t id = json_integer_value(json_object_get(r.parameters, "id"));
	if (!a->wait) {
		if (ctl->json)
			ctl_print_json(r.parameters);
		else
			printf("%" JSON_INTEGER_FORMAT "\n", id);
		proto_reply_done(&r);
		return EXIT_OK;
	}
	proto_reply_done(&r);

	snprintf(what, sizeof(what), "wait for job %" JSON_INTEGER_FORMAT, id);
	ctl_progress(ctl, "job %" JSON_INTEGER_FORMAT " submitted; waiting for it to end%s", id,
	             fmt_ellipsis(ctl));
	ex = ctl_call_take(ctl, what, M_WAIT_JOB, json_pack("{s:I}", "id", id), &r);
	ctl_progress_end(ctl);
	if (ex != EXIT_OK)
		return ex;
	json_t *job = json_object_get(r.parameters, "job");
	print_job(ctl, job);
	ex = job_outcome(ctl, job);
	proto_reply_done(&r);
	return ex;
}

typedef struct BulkBatch {
	size_t first_line, last_line, count;
} BulkBatch;

typedef struct Bulk {
	Ctl *ctl;
	const char *pipeline;
	bool nowait;
	size_t window; /* batches in flight at most: 1 until the first reply */
	size_t window_max;
	json_t *payloads; /* owned: the batch being filled */
	size_t bytes;     /* of payloads in the message, commas included */
	size_t budget;    /* bytes a batch's payloads may take */
	size_t first_line, last_line;
	BulkBatch sent[BULK_WINDOW]; /* in flight, oldest at head */
	size_t head, in_flight;
	uint64_t submitted;   /* jobs whose ids were printed */
	size_t next_unsent;   /* first stdin line not sent in a batch */
	size_t first_refused; /* first stdin line of the first refused batch, or 0 */
	unsigned refused;     /* batches refused */
	bool accepted_after;  /* a batch was accepted after one was refused */
	int ex;               /* the first failure's exit code, or EXIT_OK */
	bool lost;            /* the connection broke */
	int64_t start_usec;   /* monotonic */
	int64_t shown_usec;   /* when the progress line was last written */
} Bulk;

/* "no job", "1 job", "12,000 jobs". */
static const char *jobs_str(uint64_t n, char buf[FMT_BUF])
{
	char c[FMT_BUF];
	if (n == 0)
		snprintf(buf, FMT_BUF, "no job");
	else
		snprintf(buf, FMT_BUF, "%s job%s", fmt_count((int64_t)n, c), n == 1 ? "" : "s");
	return buf;
}

static void bulk_progress(Bulk *b)
{
	if (!b->ctl->tty_err)
		return;
	int64_t now = now_mono_usec();
	if (now - b->shown_usec < PROGRESS_EVERY_USEC)
		return;
	b->shown_usec = now;
	double secs = (double)(now - b->start_usec) / 1e6;
	char n[FMT_BUF], rate[FMT_BUF];
	ctl_progress(b->ctl, "submitted %s (%s/s)", jobs_str(b->submitted, n),
	             fmt_count(secs > 0 ? (int64_t)((double)b->submitted / secs) : 0, rate));
}

/* Reads the reply to the oldest batch in flight and prints its ids. */
static void bulk_recv(Bulk *b)
{
	BulkBatch batch = b->sent[b->head];

	char what[PROTO_NAME_MAX * 4 + 96];
	if (batch.first_line == batch.last_line)
		snprintf(what, sizeof(what), "submit to '%s' (stdin line %zu)", b->pipeline,
		         batch.first_line);
	else
		snprintf(what, sizeof(what), "submit to '%s' (stdin lines %zu-%zu)", b->pipeline,
		         batch.first_line, batch.last_line);
	ProtoReply r;
	int ex = ctl_recv_reply(b->ctl, what, &r);
	if (ex != EXIT_OK) {
		/* The batch stays in flight: whether it was taken is unknown. */
		b->lost = true;
		if (b->ex == EXIT_OK)
			b->ex = ex;
		return;
	}
	b->head = (b->head + 1) % BULK_WINDOW;
	b->in_flight--;
	if (r.error) {
		/* A batch held back by a full queue when the pipeline closed or
		 * the daemon began to shut down: its first jobs may have been
		 * accepted, and they run. Their ids are printed like any. */
		json_t *accepted = json_object_get(r.parameters, "accepted");
		size_t n_accepted = json_array_size(accepted), i;
		json_t *id;
		json_array_foreach(accepted, i, id)
		{
			printf("%" JSON_INTEGER_FORMAT "\n", json_integer_value(id));
		}
		b->submitted += n_accepted;
		/* The batches in flight behind a refused one are mostly refused
		 * for the same reason: one message, and a count at the end. */
		if (b->refused++ == 0) {
			b->first_refused = batch.first_line;
			if (batch.last_line - batch.first_line + 1 == batch.count)
				b->first_refused += n_accepted; /* one payload per line */
		}
		if (b->ex == EXIT_OK)
			b->ex = ctl_report_reply(b->ctl, what, &r);
		proto_reply_done(&r);
		return;
	}
	json_t *ids = json_object_get(r.parameters, "ids");
	if (json_array_size(ids) != batch.count) {
		ctl_error(b->ctl, "%s: the daemon replied with %zu ids for %zu jobs", what,
		          json_array_size(ids), batch.count);
		if (b->ex == EXIT_OK)
			b->ex = EXIT_REFUSED;
	}
	size_t i;
	json_t *id;
	ctl_progress_end(b->ctl);
	json_array_foreach(ids, i, id)
	{
		printf("%" JSON_INTEGER_FORMAT "\n", json_integer_value(id));
	}
	b->submitted += json_array_size(ids);
	b->accepted_after = b->accepted_after || b->refused > 0;
	b->window = b->window_max;
	proto_reply_done(&r);
	/* A batch's ids reach a reader downstream as soon as they are known. */
	fflush(stdout);
	bulk_progress(b);
}

/* Sends the batch being filled, after making room in the window. */
static void bulk_flush(Bulk *b)
{
	if (json_array_size(b->payloads) == 0)
		return;
	while (b->in_flight >= b->window && !b->lost)
		bulk_recv(b);
	if (b->ex == EXIT_OK) {
		json_t *params =
		        json_pack("{s:s, s:O}", "pipeline", b->pipeline, "payloads", b->payloads);
		if (params && b->nowait)
			json_object_set_new(params, "nowait", json_true());
		char what[PROTO_NAME_MAX * 4 + 32];
		snprintf(what, sizeof(what), "submit to '%s'", b->pipeline);
		/* On failure, the replies to the batches in flight may still
		 * be read: the ids the daemon sent before it went. */
		int ex = ctl_send_take(b->ctl, what, M_SUBMIT_BATCH, params, 0);
		if (ex != EXIT_OK) {
			b->ex = ex;
		} else {
			size_t tail = (b->head + b->in_flight) % BULK_WINDOW;
			b->sent[tail] = (BulkBatch){ b->first_line, b->last_line,
				                     json_array_size(b->payloads) };
			b->in_flight++;
			b->next_unsent = b->last_line + 1;
		}
	}
	/* The call held the only other reference and has dropped it. */
	json_array_clear(b->payloads);
	b->bytes = 0;
}

/* The last word after a bulk submit that did not go through: what was
 * submitted, so that the input can be resumed at the right line. */
static void bulk_summary(Bulk *b)
{
	char jobs[FMT_BUF];
	jobs_str(b->submitted, jobs);
	const char *printed = b->submitted ? " (ids printed)" : "";
	if (b->refused > 0 && b->submitted == 0 && !b->lost) {
		ctl_error(b->ctl, "no job was submitted");
	} else if (b->lost && b->in_flight > 0) {
		ctl_error(b->ctl,
		          "%s confirmed%s; stdin lines %zu-%zu may or may not have "
		          "been submitted; nothing after line %zu was sent",
		          jobs, printed, b->sent[b->head].first_line, b->next_unsent - 1,
		          b->next_unsent - 1);
	} else if (b->refused > 0 && !b->accepted_after) {
		ctl_error(b->ctl, "%s submitted%s, none from stdin line %zu on", jobs, printed,
		          b->first_refused);
	} else if (b->refused > 0) {
		ctl_error(b->ctl,
		          "%s submitted%s; %u batch%s from stdin line %zu on refused, "
		          "nothing after line %zu sent",
		          jobs, printed, b->refused, b->refused == 1 ? "" : "es", b->first_refused,
		          b->next_unsent - 1);
	} else if (b->ex != EXIT_OK) {
		ctl_error(b->ctl, "%s submitted%s, none from stdin line %zu on", jobs, printed,
		          b->next_unsent);
	}
}

static int submit_bulk(Ctl *ctl, const VerbArgs *a)
{
	Bulk b = {
		.ctl = ctl,
		.pipeline = a->args[0],
		.nowait = a->nowait,
		/* The first batch goes alone: an unknown or closed pipeline is
		 * then refused once, not once per batch in flight. With nowait a
		 * Busy batch must not be followed by an accepted one (the ids
		 * printed would skip lines), so batches go one at a time. */
		.window = 1,
		.window_max = a->nowait ? 1 : BULK_WINDOW,
		.payloads = json_array(),
		.budget = PROTO_MESSAGE_MAX - BATCH_ENVELOPE - 6 * strlen(a->args[0]),
		.next_unsent = 1,
		.start_usec = now_mono_usec(),
	};
	if (!b.payloads)
		return ctl_oom(ctl);
	/* Connect before reading input: an unreachable daemon is reported at once. */
	int ex = ctl_connect(ctl);
	if (ex != EXIT_OK) {
		json_decref(b.payloads);
		return ex;
	}

	char *line = NULL;
	size_t cap = 0, lineno = 0;
	ssize_t n;
	char bad[512] = "";
	size_t bad_line = 0;
	while (b.ex == EXIT_OK && (n = getline(&line, &cap, stdin)) >= 0) {
		lineno++;
		size_t len = (size_t)n;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (strspn(line, " \t\r\n") >= len)
			continue; /* blank */

		json_t *payload;
		size_t size;
		int r = -EINVAL;
		if (len > PROTO_MESSAGE_MAX)
			snprintf(bad, sizeof(bad),
			         "a line of %zu bytes is over any payload's limit", len);
		else
			r = parse_payload(line, len, BATCH_PAYLOAD_DEPTH, &payload, &size, bad,
			                  sizeof(bad));
		if (r < 0) {
			bad_line = lineno;
			break;
		}
		if (json_array_size(b.payloads) == PROTO_BATCH_MAX || b.bytes + size + 1 > b.budget)
			bulk_flush(&b);
		if (json_array_size(b.payloads) == 0)
			b.first_line = lineno;
		b.last_line = lineno;
		b.bytes += size + 1;
		if (json_array_append_new(b.payloads, payload) < 0) {
			b.ex = ctl_oom(ctl);
			break;
		}
	}
	int read_errno = ferror(stdin) ? errno : 0;
	free(line);
	/* What was read before a bad line is sent: the input is then
	 * submitted exactly up to that line, whatever the batch size. */
	if (b.ex == EXIT_OK && !read_errno)
		bulk_flush(&b);
	while (b.in_flight > 0 && !b.lost)
		bulk_recv(&b);
	json_decref(b.payloads);
	bulk_summary(&b);

	char jobs[FMT_BUF];
	jobs_str(b.submitted, jobs);
	if (read_errno) {
		ctl_error(ctl, "cannot read standard input after line %zu: %s", lineno,
		          strerror(read_errno));
		if (b.ex == EXIT_OK)
			b.ex = EXIT_REFUSED;
	}
	if (bad_line && b.ex == EXIT_OK) {
		ctl_error(ctl, "stdin line %zu: %s (%s submitted from the lines before it)",
		          bad_line, bad, jobs);
		b.ex = EXIT_REFUSED;
	} else if (bad_line) {
		ctl_error(ctl, "stdin line %zu: %s", bad_line, bad);
	}
	if (ctl->tty_err && b.ex == EXIT_OK) {
		char rate[FMT_BUF], took[FMT_BUF];
		int64_t usec = now_mono_usec() - b.start_usec;
		ctl_progress_end(ctl);
		fprintf(stderr, "submitted %s in %s (%s/s)\n", jobs, fmt_duration(ctl, usec, took),
		        fmt_count(usec > 0 ? (int64_t)((double)b.submitted * 1e6 / (double)usec)
		                           : 0,
		                  rate));
	}
	return b.ex;
}

int verb_submit(Ctl *ctl, const VerbArgs *a)
{
	int sources = (a->n_args == 2) + (a->file != NULL) + a->use_stdin;
	if (sources != 1)
		return ctl_usage(ctl, a->verb,
		                 "submit: give the payload one way: as an argument, --file FILE or "
		                 "--stdin");
	if (a->use_stdin && a->wait)
		return ctl_usage(ctl, a->verb,
		                 "submit: --wait takes one job; for many, pipe the ids printed by "
		                 "--stdin to 'pipelinectl wait'");
	if (a->use_stdin && a->key)
		return ctl_usage(ctl, a->verb, "submit: --key names one job; it cannot go with --stdin");
	if (a->key && (a->key[0] == '\0' || strlen(a->key) > PROTO_KEY_MAX))
		return ctl_usage(ctl, a->verb, "submit: --key must be 1 to %u bytes", PROTO_KEY_MAX);
	if (a->use_stdin)
		return submit_bulk(ctl, a);

	json_t *payload;
	size_t size;
	char err[512];
	int ex;
	if (a->n_args == 2) {
		const char *text = a->args[1];
		if (parse_payload(text, strlen(text), SUBMIT_PAYLOAD_DEPTH, &payload, &size, err,
		                  sizeof(err)) < 0) {
			ctl_error(ctl, "submit: payload: %s", err);
			return EXIT_USAGE;
		}
	} else {
		bool std = strcmp(a->file, "-") == 0;
		const char *name = std ? "standard input" : a->file;
		FILE *f = std ? stdin : fopen(a->file, "re");
		if (!f) {
			ctl_error(ctl, "submit: cannot open %s: %s", name, strerror(errno));
			return EXIT_REFUSED;
		}
		char *text = NULL;
		size_t len = 0;
		/* A payload is at most PROTO_PAYLOAD_MAX as compact JSON; a file
		 * may be indented, so reading stops only at sixteen times that. */
		int r = read_all(f, 16 * PROTO_PAYLOAD_MAX, &text, &len);
		if (!std)
			fclose(f);
		if (r == -EFBIG) {
			ctl_error(ctl,
			          "submit: %s is too large for a payload (at most %s bytes as "
			          "compact JSON)",
			          name, fmt_count(PROTO_PAYLOAD_MAX, err));
			return EXIT_REFUSED;
		}
		if (r < 0) {
			ctl_error(ctl, "submit: cannot read %s: %s", name, strerror(-r));
			return EXIT_REFUSED;
		}
		r = parse_payload(text, len, SUBMIT_PAYLOAD_DEPTH, &payload, &size, err,
		                  sizeof(err));
		free(text);
		if (r < 0) {
			ctl_error(ctl, "submit: %s: %s", name, err);
			return EXIT_REFUSED;
		}
	}
	ex = submit_one(ctl, a, payload);
	json_decref(payload);
	return ex;
}

/* ---- get, cancel, requeue ---- */

/* Words an error reply whose parameters alone would not say enough about
 * the job (e.g. only its pipeline); returns the exit code, or -1 to leave the
 * reply to ctl_report_reply. */
typedef int (*JobRefusal)(Ctl *ctl, int64_t id, const ProtoReply *r);

/* Calls method {"id": ID} for a verb whose argument is one job id (what names
 * the request in messages, may be NULL). Returns EXIT_OK with the reply in
 * *ret (the caller owns it), or an exit code, having reported why. */
static int call_on_job(Ctl *ctl, const VerbArgs *a, const char *what, const char *method,
                       JobRefusal refusal, ProtoReply *ret)
{
	int64_t id;
	int ex = parse_job_id(ctl, a->verb, a->args[0], &id);
	if (ex != EXIT_OK)
		return ex;
	ex = ctl_send_take(ctl, what, method, json_pack("{s:I}", "id", (json_int_t)id), 0);
	if (ex != EXIT_OK)
		return ex;
	ProtoReply r;
	ex = ctl_recv_reply(ctl, what, &r);
	if (ex != EXIT_OK)
		return ex;
	if (!r.error) {
		*ret = r;
		return EXIT_OK;
	}
	ex = refusal ? refusal(ctl, id, &r) : -1;
	if (ex < 0)
		ex = ctl_report_reply(ctl, what, &r);
	proto_reply_done(&r);
	return ex;
}

/* A verb that changes a job: quiet on success, the job with --json. */
static int change_job(Ctl *ctl, const VerbArgs *a, const char *method, JobRefusal refusal)
{
	ProtoReply r;
	int ex = call_on_job(ctl, a, a->verb, method, refusal, &r);
	if (ex != EXIT_OK)
		return ex;
	if (ctl->json)
		ctl_print_json(json_object_get(r.parameters, "job"));
	proto_reply_done(&r);
	return EXIT_OK;
}

int verb_get(Ctl *ctl, const VerbArgs *a)
{
	ProtoReply r;
	int ex = call_on_job(ctl, a, NULL, M_GET_JOB, NULL, &r);
	if (ex != EXIT_OK)
		return ex;
	print_job(ctl, json_object_get(r.parameters, "job"));
	proto_reply_done(&r);
	return EXIT_OK;
}

int verb_cancel(Ctl *ctl, const VerbArgs *a)
{
	return change_job(ctl, a, M_CANCEL_JOB, NULL);
}

/* RequeueJob's refusals that name only the pipeline (or the stage) where the
 * job failed: said from the job's side. NoSuchJob and JobNotRequeueable
 * carry the id and read well as they are. */
static int requeue_refusal(Ctl *ctl, int64_t id, const ProtoReply *r)
{
	json_t *p = r->parameters;
	const char *pipeline = json_string_value(json_object_get(p, "pipeline"));
	const char *stage = json_string_value(json_object_get(p, "stage"));
	if (!pipeline)
		pipeline = "?";
	if (strcmp(r->error, PROTO_ERR_NO_SUCH_STAGE) == 0) {
		char known[512];
		ctl_reply_names(p, "known", known, sizeof(known));
		ctl_error(ctl,
		          "requeue: job %" PRId64 " failed at stage '%s' of pipeline '%s', which "
		          "no longer exists%s%s%s",
		          id, stage ? stage : "?", pipeline, known[0] ? " (known: " : "", known,
		          known[0] ? ")" : "");
		return EXIT_REFUSED;
	}
	/* Not among RequeueJob's errors, but what a reload that removed the
	 * whole pipeline might well answer. */
	if (strcmp(r->error, PROTO_ERR_NO_SUCH_PIPELINE) == 0) {
		ctl_error(ctl, "requeue: job %" PRId64 "'s pipeline '%s' no longer exists", id,
		          pipeline);
		return EXIT_REFUSED;
	}
	if (strcmp(r->error, PROTO_ERR_BUSY) == 0) {
		ctl_error(ctl,
		          "requeue: pipeline '%s' is busy (the queue of job %" PRId64 "'s stage is "
		          "full); retry after %" JSON_INTEGER_FORMAT " ms",
		          pipeline, id, json_integer_value(json_object_get(p, "retry_after_ms")));
		return EXIT_BUSY;
	}
	if (strcmp(r->error, PROTO_ERR_PIPELINE_CLOSED) == 0) {
		ctl_error(ctl,
		          "requeue: job %" PRId64 "'s pipeline '%s' is closed and takes no jobs "
		          "back",
		          id, pipeline);
		return EXIT_REFUSED;
	}
	return -1;
}

int verb_requeue(Ctl *ctl, const VerbArgs *a)
{
	return change_job(ctl, a, M_REQUEUE_JOB, requeue_refusal);
}

/* ---- list ---- */

/* The ERROR cell: why the job failed; for a retrying job, when it runs next
 * first (so that cutting the cell keeps it). Returns 0 and a new string, or
 * NULL if there is nothing to say; -ENOMEM. */
static int error_cell(const Ctl *ctl, const JobView *v, int64_t now, char **ret)
{
	char why[FMT_BUF], next[FMT_BUF];
	const char *reason = job_reason(v, why);
	int n;
	*ret = NULL;
	if (job_is(v, "retrying") && v->retry_at_usec > 0)
		n = asprintf(ret, "(retry %s)%s%s",
		             fmt_retry_when(ctl, v->retry_at_usec, now, next), reason ? " " : "",
		             reason ? reason : "");
	else if (reason)
		n = asprintf(ret, "%s", reason);
	else
		return 0;
	return n < 0 ? -ENOMEM : 0;
}

static void print_job_table(Ctl *ctl, json_t *jobs)
{
	static const char *const headers[] = { "ID",    "PIPELINE", "USER", "STATE",
		                               "STAGE", "RUNS",     "AGE",  "ERROR" };
	Table *t = table_new(8, headers);
	if (!t) {
		ctl_oom(ctl);
		return;
	}
	table_fit(t, ctl->columns, fmt_ellipsis(ctl));
	int64_t now = now_realtime_usec();
	size_t i;
	json_t *job;
	json_array_foreach(jobs, i, job)
	{
		JobView v;
		char id[FMT_BUF], runs[FMT_BUF], age[FMT_BUF], user[FMT_BUF], *error;
		job_view(job, &v);
		if (error_cell(ctl, &v, now, &error) < 0) {
			ctl_oom(ctl);
			break;
		}
		snprintf(id, sizeof(id), "%" PRId64, v.id);
		snprintf(runs, sizeof(runs), "%" PRId64, v.runs);
		fmt_duration(ctl, v.submitted_usec > 0 ? now - v.submitted_usec : 0, age);
		/* Absent (a job recorded before uids were): "-". */
		json_t *uid = json_object_get(job, "uid");
		bool has_uid = json_is_integer(uid) && json_integer_value(uid) >= 0 &&
		               json_integer_value(uid) < UINT32_MAX;
		if (has_uid)
			ctl_user_name((uint32_t)json_integer_value(uid), user);
		const char *cells[] = {
			id,   v.pipeline, has_uid ? user : NULL, v.state, v.stage,
			runs, age,        error ? error : "",
		};
		int r = table_add(t, cells);
		free(error);
		if (r < 0) {
			ctl_oom(ctl);
			break;
		}
	}
	if (table_rows(t) == 0)
		printf("no jobs\n");
	else
		table_print(t, stdout);
	table_free(t);
}

/* Checks --state and --failed; the state to ask for (NULL: any) in *ret. */
static int list_state(Ctl *ctl, const VerbArgs *a, const char **ret)
{
	const char *state = a->state;
	if (a->failed && state && strcmp(state, "failed") != 0)
		return ctl_usage(ctl, a->verb,
		                 "list: --failed means --state failed; give one state, not both");
	if (a->failed)
		state = "failed";
	if (state) {
		char names[128];
		size_t used = 0;
		bool known = false;
		for (size_t i = 0; i < sizeof(job_states) / sizeof(job_states[0]); i++) {
			known = known || strcmp(state, job_states[i]) == 0;
			used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
			                         i ? ", " : "", job_states[i]);
		}
		if (!known)
			return ctl_usage(ctl, a->verb, "list: no job state '%s' (states: %s)",
			                 state, names);
	}
	*ret = state;
	return EXIT_OK;
}

int verb_list(Ctl *ctl, const VerbArgs *a)
{
	const char *state = NULL;
	int ex = list_state(ctl, a, &state);
	if (ex != EXIT_OK)
		return ex;
	if (a->all && a->limit)
		return ctl_usage(ctl, a->verb, "list: give --all or --limit N, not both");

	char what[PROTO_NAME_MAX * 4 + 32] = "list jobs";
	if (a->pipeline)
		snprintf(what, sizeof(what), "list jobs of '%s'", a->pipeline);
	json_t *jobs = json_array();
	if (!jobs)
		return ctl_oom(ctl);
	/* Neither --all nor --limit: one page of the daemon's default size. */
	int64_t remaining = a->limit;
	json_int_t after = 0;
	bool more = false;
	for (;;) {
		json_t *params = json_object();
		if (params && a->pipeline)
			json_object_set_new(params, "pipeline", json_string(a->pipeline));
		if (params && state)
			json_object_set_new(params, "state", json_string(state));
		if (params && after > 0)
			json_object_set_new(params, "after_id", json_integer(after));
		if (params && a->limit)
			json_object_set_new(params, "limit",
			                    json_integer(remaining < PROTO_LIST_MAX
			                                         ? remaining
			                                         : PROTO_LIST_MAX));
		else if (params && a->all)
			json_object_set_new(params, "limit", json_integer(PROTO_LIST_MAX));
		ProtoReply r;
		ex = ctl_call_take(ctl, what, M_LIST_JOBS, params, &r);
		if (ex != EXIT_OK)
			break;
		json_t *page = json_object_get(r.parameters, "jobs");
		json_t *next = json_object_get(r.parameters, "next_after_id");
		/* A daemon sending more than asked is cut to --limit. */
		size_t take = json_array_size(page);
		if (a->limit && (int64_t)take > remaining)
			take = (size_t)remaining;
		for (size_t i = 0; i < take; i++)
			json_array_append(jobs, json_array_get(page, i));
		remaining -= (int64_t)take;
		/* next_after_id must move forward, or paging would never end. */
		more = json_is_integer(next) && json_integer_value(next) > after;
		if (more)
			after = json_integer_value(next);
		proto_reply_done(&r);
		if (!more || (!a->all && !a->limit) || (a->limit && remaining <= 0))
			break;
	}
	if (ex == EXIT_OK) {
		if (ctl->json) {
			ctl_print_json(jobs);
		} else {
			print_job_table(ctl, jobs);
			if (more && !a->all && ctl->tty_err) {
				fflush(stdout);
				fprintf(stderr, "(more jobs follow: --all shows every one)\n");
			}
		}
	}
	json_decref(jobs);
	return ex;
}

/* ---- wait ---- */

int verb_wait(Ctl *ctl, const VerbArgs *a)
{
	size_t n = (size_t)a->n_args;
	int64_t *ids = calloc(n, sizeof(*ids));
	if (!ids)
		return ctl_oom(ctl);
	for (size_t i = 0; i < n; i++) {
		int ex = parse_job_id(ctl, a->verb, a->args[i], &ids[i]);
		if (ex != EXIT_OK) {
			free(ids);
			return ex;
		}
	}
	json_t *ended = ctl->json ? json_array() : NULL;
	int ex = ctl_connect(ctl);
	int result = EXIT_OK;
	size_t sent = 0, done = 0;
	while (ex == EXIT_OK && done < n) {
		/* Keep the window full, then take the oldest reply. */
		while (ex == EXIT_OK && sent < n && sent - done < WAIT_WINDOW) {
			ex = ctl_send_take(ctl, "wait", M_WAIT_JOB,
			                   json_pack("{s:I}", "id", (json_int_t)ids[sent]), 0);
			sent++;
		}
		if (ex != EXIT_OK)
			break;
		ctl_progress(ctl, "waiting for %zu job%s to end: %zu ended%s", n, n == 1 ? "" : "s",
		             done, fmt_ellipsis(ctl));
		ProtoReply r;
		int rx = ctl_recv(ctl, NULL, &r);
		done++;
		if (rx != EXIT_OK) {
			if (client_broken(ctl->client))
				ex = rx;
			else if (result == EXIT_OK)
				result = rx; /* e.g. no such job: named, then on to the next */
			continue;
		}
		json_t *job = json_object_get(r.parameters, "job");
		if (job_outcome(ctl, job) != EXIT_OK && result == EXIT_OK)
			result = EXIT_REFUSED;
		if (ended)
			json_array_append(ended, job);
		proto_reply_done(&r);
	}
	ctl_progress_end(ctl);
	if (ex == EXIT_OK && ended)
		ctl_print_json(ended);
	json_decref(ended);
	free(ids);
	return ex != EXIT_OK ? ex : result;
}

/* ---- watch ---- */

static void print_event(Ctl *ctl, json_t *ev)
{
	const char *event = json_string_value(json_object_get(ev, "event"));
	const char *pipeline = json_string_value(json_object_get(ev, "pipeline"));
	const char *stage = json_string_value(json_object_get(ev, "stage"));
	json_t *job = json_object_get(ev, "job");
	char when[FMT_BUF];
	fmt_time(now_realtime_usec(), true, when);
	if (!event)
		event = "?";
	if (strcmp(event, "watching") == 0)
		return;

	if (job) {
		JobView v;
		job_view(job, &v);
		printf("%s %s job %" PRId64 " %s", when, event, v.id,
		       v.pipeline ? v.pipeline
		       : pipeline ? pipeline
		                  : "?");
		if (strcmp(event, "ended") == 0) {
			char buf[FMT_BUF];
			const char *reason = job_reason(&v, buf);
			printf(" %s", v.state ? v.state : "?");
			if (v.state && strcmp(v.state, "done") != 0 && v.stage)
				printf(" at %s", v.stage);
			if (job_is(&v, "failed") && v.attempt > 1)
				printf(" after %" PRId64 " attempts", v.attempt);
			if (reason) {
				fputs(": ", stdout);
				print_text(stdout, reason, strlen(reason), NULL);
			}
		}
		putchar('\n');
	} else if (stage) {
		printf("%s %s %s/%s\n", when, event, pipeline ? pipeline : "?", stage);
	} else {
		printf("%s %s %s\n", when, event, pipeline ? pipeline : "");
	}
	fflush(stdout);
}

int verb_watch(Ctl *ctl, const VerbArgs *a)
{
	const char *pipeline = a->n_args > 0 ? a->args[0] : NULL;
	char what[PROTO_NAME_MAX * 4 + 32] = "watch";
	json_t *params = json_object();
	if (pipeline) {
		snprintf(what, sizeof(what), "watch '%s'", pipeline);
		if (params)
			json_object_set_new(params, "pipeline", json_string(pipeline));
	}
	int ex = ctl_send_take(ctl, what, M_WATCH, params, PROTO_CALL_MORE);
	if (ex != EXIT_OK)
		return ex;
	bool first = true;
	for (;;) {
		ProtoReply r;
		ex = ctl_recv(ctl, what, &r);
		if (ex != EXIT_OK)
			return ex;
		if (first && !ctl->json && ctl->tty_err) {
			fprintf(stderr, "watching %s%s%s; Ctrl-C stops\n",
			        pipeline ? "'" : "every pipeline", pipeline ? pipeline : "",
			        pipeline ? "'" : "");
		}
		first = false;
		if (ctl->json)
			ctl_print_json_line(r.parameters);
		else
			print_event(ctl, r.parameters);
		bool more = r.continues;
		proto_reply_done(&r);
		if (!more)
			return EXIT_OK;
	}
}
