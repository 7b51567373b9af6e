/* ctl-admin.c — the verbs about pipelines and the daemon: stats, pause,
 * resume, scale, close, drain, reload, shutdown, info. */
#include "ctl.h"

#include "proto/errors.h"
#include "proto/limits.h"

#include <inttypes.h>
#include <string.h>

#define M_STATS       "io.pipelined.Stats"
#define M_PAUSE       "io.pipelined.PauseStage"
#define M_RESUME      "io.pipelined.ResumeStage"
#define M_SET_WORKERS "io.pipelined.SetWorkers"
#define M_CLOSE       "io.pipelined.Close"
#define M_DRAIN       "io.pipelined.Drain"
#define M_RELOAD      "io.pipelined.Reload"
#define M_SHUTDOWN    "io.pipelined.Shutdown"
#define M_GET_INFO    PROTO_SERVICE_INTERFACE ".GetInfo"

/* SetWorkers' range (io.pipelined.varlink). */
#define WORKERS_MIN 1
#define WORKERS_MAX 1024

/* Room for "verb stage 'S' of 'P'" with names as long as a user types them. */
#define WHAT_MAX (4 * PROTO_NAME_MAX + 64)

static int64_t iget(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *sget(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "?";
}

/* " a, b, c" and a newline: an array of names after "key:". */
static void print_names(json_t *names)
{
	size_t i;
	json_t *n;
	json_array_foreach(names, i, n)
	{
		const char *s = json_string_value(n);
		printf("%s %s", i ? "," : "", s ? s : "?");
	}
	putchar('\n');
}

/* ---- stats ---- */

/* The stage holding the pipeline back: every worker busy, and of those the
 * fullest input queue, if it is over half full. NULL if none. */
static json_t *bottleneck(json_t *stages)
{
	json_t *best = NULL, *st;
	double best_fill = 0.5;
	size_t i;
	json_array_foreach(stages, i, st)
	{
		int64_t workers = iget(st, "workers"), busy = iget(st, "busy");
		int64_t len = iget(st, "queue_length"), cap = iget(st, "queue_capacity");
		if (workers <= 0 || busy < workers || cap <= 0)
			continue;
		double fill = (double)len / (double)cap;
		if (fill > best_fill) {
			best = st;
			best_fill = fill;
		}
	}
	return best;
}

static void print_pipeline_stats(Ctl *ctl, json_t *p)
{
	const char *sep = ctl->utf8 ? " · " : ", ";
	char b[5][FMT_BUF];
	json_t *stages = json_object_get(p, "stages");
	json_t *st;
	size_t i;

	printf("%s:", sget(p, "name"));
	json_array_foreach(stages, i, st)
	{
		const char *arrow = ctl->utf8 ? " → " : " -> ";
		printf("%s%s", i == 0 ? " " : arrow, sget(st, "name"));
	}
	printf("    %s%s%s accepted%s%s in flight%s%s done%s%s failed%s%s cancelled\n",
	       sget(p, "state"), sep, fmt_count(iget(p, "accepted"), b[0]), sep,
	       fmt_count(iget(p, "in_flight"), b[1]), sep, fmt_count(iget(p, "done"), b[2]), sep,
	       fmt_count(iget(p, "failed"), b[3]), sep, fmt_count(iget(p, "cancelled"), b[4]));

	json_t *bn = bottleneck(stages);
	if (bn) {
		int64_t len = iget(bn, "queue_length"), cap = iget(bn, "queue_capacity");
		printf("bottleneck: %s %s %s/%s workers busy, input queue %s%s/%s%s\n",
		       sget(bn, "name"), ctl->utf8 ? "—" : "-", fmt_count(iget(bn, "busy"), b[0]),
		       fmt_count(iget(bn, "workers"), b[1]), len >= cap ? "full (" : "",
		       fmt_count(len, b[2]), fmt_count(cap, b[3]), len >= cap ? ")" : "");
	}
	putchar('\n');

	static const char *const headers[] = { "STAGE",  "WORKERS", "QUEUE",  "DONE",
		                               "FAILED", "RETRIES", "PAUSED", "ACTION" };
	Table *t = table_new(8, headers);
	if (!t) {
		ctl_oom(ctl);
		return;
	}
	table_fit(t, ctl->columns, fmt_ellipsis(ctl));
	json_array_foreach(stages, i, st)
	{
		char workers[2 * FMT_BUF + 1], queue[3 * FMT_BUF + 16], retrying[FMT_BUF + 16] = "";
		snprintf(workers, sizeof(workers), "%s/%s", fmt_count(iget(st, "busy"), b[0]),
		         fmt_count(iget(st, "workers"), b[1]));
		/* Jobs waiting for another attempt take room in the queue. */
		if (iget(st, "retrying") > 0)
			snprintf(retrying, sizeof(retrying), " (%s retrying)",
			         fmt_count(iget(st, "retrying"), b[0]));
		snprintf(queue, sizeof(queue), "%s/%s%s", fmt_count(iget(st, "queue_length"), b[0]),
		         fmt_count(iget(st, "queue_capacity"), b[1]), retrying);
		const char *cells[] = {
			sget(st, "name"),
			workers,
			queue,
			fmt_count(iget(st, "succeeded"), b[2]),
			fmt_count(iget(st, "failed"), b[3]),
			fmt_count(iget(st, "retries"), b[4]),
			json_is_true(json_object_get(st, "paused")) ? "yes" : "no",
			sget(st, "action"),
		};
		if (table_add(t, cells) < 0) {
			ctl_oom(ctl);
			break;
		}
	}
	table_print(t, stdout);
	table_free(t);
}

/* "1.5 MiB": sizes in the journal line. */
static const char *fmt_bytes(int64_t n, char buf[FMT_BUF])
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	snprintf(buf, FMT_BUF, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
	return buf;
}

/* The journal's line under the pipelines: where durability stands. */
static void print_journal_stats(json_t *j)
{
	const char *durability = json_string_value(json_object_get(j, "durability"));
	if (!durability || strcmp(durability, "full") != 0) {
		printf("\njournal: none (Durability=none: jobs live in memory only)\n");
		return;
	}
	char db[FMT_BUF], wal[FMT_BUF], free_b[FMT_BUF], floor_b[FMT_BUF];
	int64_t free_bytes = json_integer_value(json_object_get(j, "free_bytes"));
	int64_t commits = json_integer_value(json_object_get(j, "commits"));
	int64_t jobs = json_integer_value(json_object_get(j, "jobs"));
	/* Rates over the daemon's last 10 s; jobs per commit since it started. */
	printf("\njournal: %s (WAL %s), %.1f commits/s, %.1f changes/commit, %.1f jobs/commit, "
	       "%s free\n",
	       fmt_bytes(json_integer_value(json_object_get(j, "db_bytes")) +
	                         json_integer_value(json_object_get(j, "wal_bytes")),
	                 db),
	       fmt_bytes(json_integer_value(json_object_get(j, "wal_bytes")), wal),
	       json_number_value(json_object_get(j, "commits_per_sec")),
	       json_number_value(json_object_get(j, "changes_per_commit")),
	       commits > 0 ? (double)jobs / (double)commits : 0.0, fmt_bytes(free_bytes, free_b));
	if (json_is_true(json_object_get(j, "space_low")))
		printf("journal: below the free-space floor (%s): new submits are refused\n",
		       fmt_bytes(json_integer_value(json_object_get(j, "min_free_bytes")), floor_b));
	if (json_is_true(json_object_get(j, "failed")))
		printf("journal: FAILED (see the daemon's log)\n");
}

int verb_stats(Ctl *ctl, const VerbArgs *a)
{
	const char *pipeline = a->n_args > 0 ? a->args[0] : NULL;
	char what[WHAT_MAX] = "stats";
	json_t *params = json_object();
	if (pipeline) {
		snprintf(what, sizeof(what), "stats of '%s'", pipeline);
		if (params)
			json_object_set_new(params, "pipeline", json_string(pipeline));
	}
	ProtoReply r;
	int ex = ctl_call_take(ctl, what, M_STATS, params, &r);
	if (ex != EXIT_OK)
		return ex;
	json_t *pipelines = json_object_get(r.parameters, "pipelines");
	if (ctl->json) {
		if (pipelines)
			ctl_print_json(pipelines);
		else
			printf("[]\n");
	} else if (json_array_size(pipelines) == 0) {
		printf("no pipelines\n");
	} else {
		size_t i;
		json_t *p;
		json_array_foreach(pipelines, i, p)
		{
			if (i > 0)
				putchar('\n');
			print_pipeline_stats(ctl, p);
		}
	}
	json_t *journal = json_object_get(r.parameters, "journal");
	if (!ctl->json && !pipeline && journal)
		print_journal_stats(journal);
	proto_reply_done(&r);
	return EXIT_OK;
}

/* ---- pause, resume, scale ---- */

/* Calls a method whose reply is empty; quiet on success. */
static int call_quiet(Ctl *ctl, const char *what, const char *method, json_t *params)
{
	ProtoReply r;
	int ex = ctl_call_take(ctl, what, method, params, &r);
	if (ex == EXIT_OK)
		proto_reply_done(&r);
	return ex;
}

static int stage_call(Ctl *ctl, const VerbArgs *a, const char *method)
{
	char what[WHAT_MAX];
	snprintf(what, sizeof(what), "%s stage '%s' of '%s'", a->verb, a->args[1], a->args[0]);
	return call_quiet(ctl, what, method,
	                  json_pack("{s:s, s:s}", "pipeline", a->args[0], "stage", a->args[1]));
}

int verb_pause(Ctl *ctl, const VerbArgs *a)
{
	return stage_call(ctl, a, M_PAUSE);
}

int verb_resume(Ctl *ctl, const VerbArgs *a)
{
	return stage_call(ctl, a, M_RESUME);
}

int verb_scale(Ctl *ctl, const VerbArgs *a)
{
	int64_t n;
	if (parse_int(a->args[2], WORKERS_MIN, WORKERS_MAX, &n) < 0)
		return ctl_usage(ctl, a->verb,
		                 "scale: '%s' is not a worker count (a whole number from %d to %d)",
		                 a->args[2], WORKERS_MIN, WORKERS_MAX);
	char what[WHAT_MAX];
	snprintf(what, sizeof(what), "scale stage '%s' of '%s'", a->args[1], a->args[0]);
	return call_quiet(ctl, what, M_SET_WORKERS,
	                  json_pack("{s:s, s:s, s:I}", "pipeline", a->args[0], "stage", a->args[1],
	                            "workers", (json_int_t)n));
}

/* ---- close, drain ---- */

/* A call that may take long: progress on a terminal while it runs. */
static int pipeline_wait_call(Ctl *ctl, const VerbArgs *a, const char *method, const char *doing)
{
	char what[WHAT_MAX];
	snprintf(what, sizeof(what), "%s '%s'", a->verb, a->args[0]);
	/* Connect first, so that "closing…" never precedes "cannot connect". */
	int ex = ctl_connect(ctl);
	if (ex != EXIT_OK)
		return ex;
	ctl_progress(ctl, "%s %s%s", doing, a->args[0], fmt_ellipsis(ctl));
	ex = call_quiet(ctl, what, method, json_pack("{s:s}", "pipeline", a->args[0]));
	ctl_progress_end(ctl);
	return ex;
}

int verb_close(Ctl *ctl, const VerbArgs *a)
{
	return pipeline_wait_call(ctl, a, M_CLOSE, "closing");
}

int verb_drain(Ctl *ctl, const VerbArgs *a)
{
	return pipeline_wait_call(ctl, a, M_DRAIN, "draining");
}

/* ---- reload, shutdown, info ---- */

int verb_reload(Ctl *ctl, const VerbArgs *a)
{
	static const char *const kinds[] = { "added", "removed", "replaced", "rescaled" };
	ProtoReply r;
	int ex = ctl_call_take(ctl, "reload", M_RELOAD, json_object(), &r);
	if (ex != EXIT_OK)
		return ex;
	if (ctl->json) {
		ctl_print_json(r.parameters);
		proto_reply_done(&r);
		return EXIT_OK;
	}
	bool any = false;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		json_t *names = json_object_get(r.parameters, kinds[k]);
		if (json_array_size(names) == 0)
			continue;
		printf("%s:", kinds[k]);
		print_names(names);
		any = true;
	}
	if (!any)
		printf("no changes\n");
	proto_reply_done(&r);
	return EXIT_OK;
}

int verb_shutdown(Ctl *ctl, const VerbArgs *a)
{
	json_t *params = json_pack("{s:s}", "mode", a->now ? "now" : "drain");
	if (params && a->timeout_ms >= 0)
		json_object_set_new(params, "timeout_ms", json_integer(a->timeout_ms));
	return call_quiet(ctl, "shutdown", M_SHUTDOWN, params);
}

int verb_info(Ctl *ctl, const VerbArgs *a)
{
	ProtoReply r;
	int ex = ctl_call_take(ctl, "info", M_GET_INFO, json_object(), &r);
	if (ex != EXIT_OK)
		return ex;
	json_t *p = r.parameters;
	if (ctl->json) {
		ctl_print_json(p);
	} else {
		printf("socket:     %s\n", ctl->socket_path);
		printf("vendor:     %s\n", sget(p, "vendor"));
		printf("product:    %s\n", sget(p, "product"));
		printf("version:    %s\n", sget(p, "version"));
		printf("url:        %s\n", sget(p, "url"));
		printf("interfaces:");
		print_names(json_object_get(p, "interfaces"));
	}
	proto_reply_done(&r);
	return EXIT_OK;
}
