/* pipelinectl — control pipelined from the command line.
 *
 * main parses the global options, finds the verb in the table below, parses
 * that verb's options and argument count from its entry, and runs its
 * handler. Every handler returns an exit code (ctl.h). */
#include "ctl.h"

#include <errno.h>
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef PIPELINED_VERSION
#define PIPELINED_VERSION "unknown"
#endif

#define DEFAULT_SOCKET "/run/pipelined.sock"

/* Option values beyond single characters. */
enum {
	OPT_JSON = 0x100,
	OPT_SOCKET,
	OPT_VERSION,
	OPT_FILE,
	OPT_STDIN,
	OPT_NOWAIT,
	OPT_WAIT,
	OPT_KEY,
	OPT_PIPELINE,
	OPT_STATE,
	OPT_LIMIT,
	OPT_ALL,
	OPT_NOW,
	OPT_TIMEOUT,
	OPT_FAILED,
};

/* Every verb takes --help and --json (also accepted after the verb). */
#define O_COMMON                                                                                   \
	{ "help", no_argument, NULL, 'h' },                                                        \
	{                                                                                          \
		"json", no_argument, NULL, OPT_JSON                                                \
	}
#define O_END                                                                                      \
	{                                                                                          \
		NULL, 0, NULL, 0                                                                   \
	}

static const struct option opts_plain[] = { O_COMMON, O_END };
static const struct option opts_submit[] = {
	O_COMMON,
	{ "file", required_argument, NULL, OPT_FILE },
	{ "stdin", no_argument, NULL, OPT_STDIN },
	{ "nowait", no_argument, NULL, OPT_NOWAIT },
	{ "wait", no_argument, NULL, OPT_WAIT },
	{ "key", required_argument, NULL, OPT_KEY },
	O_END,
};
static const struct option opts_list[] = {
	O_COMMON,
	{ "pipeline", required_argument, NULL, OPT_PIPELINE },
	{ "state", required_argument, NULL, OPT_STATE },
	{ "failed", no_argument, NULL, OPT_FAILED },
	{ "limit", required_argument, NULL, OPT_LIMIT },
	{ "all", no_argument, NULL, OPT_ALL },
	O_END,
};
static const struct option opts_shutdown[] = {
	O_COMMON,
	{ "now", no_argument, NULL, OPT_NOW },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	O_END,
};

typedef struct Verb {
	const char *name;
	int min_args, max_args; /* positional arguments; max -1: no limit */
	VerbRun run;
	const struct option *options;
	const char *usage;   /* after "pipelinectl VERB " */
	const char *summary; /* one line in pipelinectl --help */
	const char *help;    /* the rest of pipelinectl VERB --help */
} Verb;

static const Verb verbs[] = {
	{ "submit", 1, 2, verb_submit, opts_submit,
	  "PIPELINE (PAYLOAD | --file FILE | --stdin) [--key KEY] [--nowait | --wait]",
	  "submit a job (or many) to a pipeline",
	  "Submits a job whose payload is a JSON object and prints its id.\n"
	  "\n"
	  "  PAYLOAD       the payload as JSON text on the command line\n"
	  "  --file FILE   read one JSON object from FILE ('-': standard input)\n"
	  "  --stdin       bulk: one JSON object per line on standard input (blank\n"
	  "                lines skipped), sent in batches; prints every id, one per\n"
	  "                line, in input order. A line that is not a JSON object\n"
	  "                stops the input: the lines before it are submitted, none\n"
	  "                from it on, and the exit status is 1.\n"
	  "  --nowait      if the pipeline's first queue is full, fail at once with\n"
	  "                exit status 75 instead of waiting for room\n"
	  "  --wait        wait for the job to end and print it as 'get' does; the\n"
	  "                exit status is 1 if it failed or was cancelled\n"
	  "  --key KEY     idempotency key (1..256 bytes): if the daemon still knows a\n"
	  "                job submitted with KEY, print its id instead of submitting\n"
	  "                again (safe to repeat after a lost reply; not with --stdin)\n"
	  "\n"
	  "A payload on the command line that is not valid JSON is a usage error\n"
	  "(exit status 2); in a file or on standard input it is bad data (1).\n"
	  "\n"
	  "Examples:\n"
	  "  pipelinectl submit images '{\"url\": \"https://example.com/a.png\"}'\n"
	  "  jq -c '.[]' jobs.json | pipelinectl submit images --stdin > ids\n" },
	{ "get", 1, 1, verb_get, opts_plain, "ID", "show one job",
	  "Shows a job: its pipeline, state, stage, attempt at that stage, runs,\n"
	  "times, error, how its last program ended (exit status, signal, timeout),\n"
	  "its scratch directory, (once it has ended) its payload, and last the end\n"
	  "of its last program's stderr. With --json, the Job object.\n" },
	{ "list", 0, 0, verb_list, opts_list,
	  "[--pipeline P] [--state S | --failed] [--limit N] [--all]", "list jobs",
	  "Lists jobs in id order as a table (ID PIPELINE STATE STAGE RUNS AGE ERROR),\n"
	  "or with --json as one JSON array. STAGE is where the job is, or where it\n"
	  "ended; ERROR why it failed or was cancelled (for a retrying job: when it\n"
	  "runs next and why its last attempt failed), cut to fit a terminal's width.\n"
	  "\n"
	  "  --pipeline P  only jobs of pipeline P\n"
	  "  --state S     only jobs in state S: queued, running, retrying, done,\n"
	  "                failed, cancelled\n"
	  "  --failed      only failed jobs (--state failed); 'requeue ID' runs one again\n"
	  "  --limit N     at most N jobs (default: the daemon's page, 100)\n"
	  "  --all         every job, page after page\n" },
	{ "wait", 1, -1, verb_wait, opts_plain, "ID...", "wait for jobs to end",
	  "Waits until every job named has ended. Exit status 0 if all are done, 1 if\n"
	  "any failed, was cancelled or does not exist (each is named on stderr).\n"
	  "With --json, prints the ended jobs as one JSON array.\n" },
	{ "cancel", 1, 1, verb_cancel, opts_plain, "ID", "cancel a queued or retrying job",
	  "Cancels a job waiting in a queue or for its next attempt; it never runs\n"
	  "again. A running or ended job cannot be cancelled. Quiet on success\n"
	  "(--json prints the job).\n" },
	{ "requeue", 1, 1, verb_requeue, opts_plain, "ID", "run a failed job again",
	  "Sends a failed job back to the stage where it failed (not to the start),\n"
	  "with that stage's attempts counted afresh and the payload that stage\n"
	  "received. Only failed jobs can be requeued ('list --failed' shows them).\n"
	  "Quiet on success (--json prints the job, queued again). If that stage's\n"
	  "queue is full the exit status is 75: try again later.\n" },
	{ "watch", 0, 1, verb_watch, opts_plain, "[PIPELINE]", "follow events as they happen",
	  "Prints one line per event (jobs accepted and ended, stages paused, resumed,\n"
	  "scaled, pipelines drained and closed), of every pipeline or of PIPELINE,\n"
	  "until the daemon ends the stream or you press Ctrl-C. With --json, each\n"
	  "event as one JSON line (the first is {\"event\": \"watching\"}).\n" },
	{ "stats", 0, 1, verb_stats, opts_plain, "[PIPELINE]", "show pipeline statistics",
	  "Shows each pipeline (or PIPELINE): its stages, state and job counts, the\n"
	  "bottleneck if there is one, and a table of its stages. With --json, the\n"
	  "daemon's array of PipelineStats exactly.\n" },
	{ "pause", 2, 2, verb_pause, opts_plain, "PIPELINE STAGE", "pause a stage",
	  "A paused stage's workers take no new job; those running finish theirs.\n" },
	{ "resume", 2, 2, verb_resume, opts_plain, "PIPELINE STAGE", "resume a paused stage",
	  "Lets a paused stage's workers take jobs again.\n" },
	{ "scale", 3, 3, verb_scale, opts_plain, "PIPELINE STAGE N", "set a stage's worker count",
	  "Sets the number of workers of STAGE to N (1..1024) while jobs flow.\n" },
	{ "close", 1, 1, verb_close, opts_plain, "PIPELINE", "stop intake and let jobs finish",
	  "Stops accepting jobs; every job already accepted runs to its end. Returns\n"
	  "when every worker of the pipeline has exited.\n" },
	{ "drain", 1, 1, verb_drain, opts_plain, "PIPELINE", "wait until a pipeline is idle",
	  "Returns when no job is queued or running in PIPELINE. Does not close it.\n" },
	{ "reload", 0, 0, verb_reload, opts_plain, "", "re-read the configuration",
	  "Makes the daemon re-read its configuration file and prints what changed\n"
	  "(added, removed, replaced, rescaled pipelines) or \"no changes\". An invalid\n"
	  "file changes nothing: the error names the file and line.\n" },
	{ "shutdown", 0, 0, verb_shutdown, opts_shutdown, "[--now] [--timeout SEC]",
	  "stop the daemon",
	  "Stops intake on every pipeline and makes the daemon exit once every\n"
	  "accepted job has finished.\n"
	  "\n"
	  "  --now          discard queued jobs (they end cancelled); running ones finish\n"
	  "  --timeout SEC  exit anyway after SEC seconds (default: the daemon's\n"
	  "                 ShutdownTimeoutSec)\n" },
	{ "info", 0, 0, verb_info, opts_plain, "", "show the daemon's version and interfaces",
	  "Shows what org.varlink.service.GetInfo answers: vendor, product, version,\n"
	  "URL and interfaces.\n" },
};

#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))

static const char exit_codes_help[] =
        "Exit status:\n"
        "  0   success\n"
        "  1   the daemon refused the request, a job failed or was cancelled, or the\n"
        "      input data (a file, standard input) is invalid\n"
        "  2   usage error: bad arguments, unknown verb, invalid JSON on the command line\n"
        "  3   cannot reach the daemon: connecting failed or the connection was lost\n"
        "  4   permission denied\n"
        "  75  busy: a queue is full (submit --nowait, requeue); try again later\n";

static void print_main_help(void)
{
	printf("Usage: pipelinectl [--socket PATH] [--json] VERB [ARGS...]\n"
	       "\n"
	       "Controls pipelined, the local job pipeline daemon.\n"
	       "\n"
	       "Verbs:\n");
	for (size_t i = 0; i < N_VERBS; i++)
		printf("  %-9s %s\n", verbs[i].name, verbs[i].summary);
	printf("\n"
	       "Options:\n"
	       "  --socket PATH  the daemon's socket (default: $PIPELINED_SOCKET, else\n"
	       "                 " DEFAULT_SOCKET ")\n"
	       "  --json         JSON for programs instead of text for people\n"
	       "  -h, --help     this help; 'pipelinectl VERB --help' for a verb\n"
	       "  --version      pipelinectl's version\n"
	       "\n"
	       "%s"
	       "\n"
	       "Environment:\n"
	       "  PIPELINED_SOCKET  the socket to use when --socket is not given\n"
	       "  NO_COLOR          (no colour is used in any case)\n",
	       exit_codes_help);
}

static void print_verb_help(const Verb *v)
{
	printf("Usage: pipelinectl [--socket PATH] [--json] %s%s%s\n\n%s", v->name,
	       v->usage[0] ? " " : "", v->usage, v->help);
	printf("\n%s", exit_codes_help);
}

static const Verb *find_verb(const char *name)
{
	for (size_t i = 0; i < N_VERBS; i++)
		if (strcmp(verbs[i].name, name) == 0)
			return &verbs[i];
	return NULL;
}

/* The option getopt just refused, as the user typed it. */
static const char *bad_option(char **argv, char *buf, size_t len)
{
	/* optopt is the short option, or a long one's value (not a character). */
	if (optopt > 0 && optopt < 0x80)
		snprintf(buf, len, "-%c", optopt);
	else
		snprintf(buf, len, "%s", argv[optind - 1]);
	return buf;
}

/* Parses a verb's options and arguments (argv[0] is the verb) into *a and
 * runs it. Returns an exit code. */
static int run_verb(Ctl *ctl, const Verb *v, int argc, char **argv)
{
	VerbArgs a = { .verb = v->name, .timeout_ms = -1 };
	char buf[128];
	int64_t n;
	int c;

	optind = 0; /* GNU: start over, arguments may be permuted again */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", v->options, NULL)) != -1) {
		switch (c) {
		case 'h':
			print_verb_help(v);
			return EXIT_OK;
		case OPT_JSON:
			ctl->json = true;
			break;
		case OPT_FILE:
			a.file = optarg;
			break;
		case OPT_STDIN:
			a.use_stdin = true;
			break;
		case OPT_NOWAIT:
			a.nowait = true;
			break;
		case OPT_WAIT:
			a.wait = true;
			break;
		case OPT_KEY:
			a.key = optarg;
			break;
		case OPT_PIPELINE:
			a.pipeline = optarg;
			break;
		case OPT_STATE:
			a.state = optarg;
			break;
		case OPT_LIMIT:
			if (parse_int(optarg, 1, INT64_MAX, &n) < 0)
				return ctl_usage(ctl, v->name,
				                 "%s: --limit '%s' is not a positive whole number",
				                 v->name, optarg);
			a.limit = n;
			break;
		case OPT_ALL:
			a.all = true;
			break;
		case OPT_FAILED:
			a.failed = true;
			break;
		case OPT_NOW:
			a.now = true;
			break;
		case OPT_TIMEOUT: {
			char *end;
			errno = 0;
			double sec = strtod(optarg, &end);
			if (end == optarg || *end || errno || !(sec >= 0) || sec > 86400.0 * 365)
				return ctl_usage(ctl, v->name,
				                 "%s: --timeout '%s' is not a number of seconds",
				                 v->name, optarg);
			a.timeout_ms = (int64_t)(sec * 1000.0 + 0.5);
			break;
		}
		case ':':
			return ctl_usage(ctl, v->name, "%s: option %s needs a value", v->name,
			                 bad_option(argv, buf, sizeof(buf)));
		default:
			return ctl_usage(ctl, v->name, "%s: unknown option '%s'", v->name,
			                 bad_option(argv, buf, sizeof(buf)));
		}
	}
	a.args = argv + optind;
	a.n_args = argc - optind;
	if (a.n_args < v->min_args || (v->max_args >= 0 && a.n_args > v->max_args)) {
		if (v->max_args == 0)
			return ctl_usage(ctl, v->name, "%s takes no arguments ('%s' given)",
			                 v->name, a.args[0]);
		return ctl_usage(ctl, v->name, "%s: %s arguments (usage: pipelinectl %s %s)",
		                 v->name, a.n_args < v->min_args ? "missing" : "too many", v->name,
		                 v->usage);
	}
	return v->run(ctl, &a);
}

int main(int argc, char **argv)
{
	static const struct option global[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		O_END,
	};
	Ctl ctl = {
		.tty_out = isatty(STDOUT_FILENO),
		.tty_err = isatty(STDERR_FILENO),
	};
	struct winsize ws;
	if (ctl.tty_out) {
		const char *cols = getenv("COLUMNS");
		int64_t n;
		if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
			ctl.columns = ws.ws_col;
		else if (cols && parse_int(cols, 1, 10000, &n) == 0)
			ctl.columns = (size_t)n;
		else
			ctl.columns = 80;
	}
	/* Only the character set: numbers and JSON stay in the C locale. */
	setlocale(LC_CTYPE, "");
	ctl.utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;

	const char *env = getenv("PIPELINED_SOCKET");
	ctl.socket_path = env && env[0] ? env : DEFAULT_SOCKET;

	char buf[128];
	int c;
	opterr = 0;
	/* '+': stop at the verb; the verb's options are its own. */
	while ((c = getopt_long(argc, argv, "+:h", global, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET:
			ctl.socket_path = optarg;
			break;
		case OPT_JSON:
			ctl.json = true;
			break;
		case 'h':
			print_main_help();
			return EXIT_OK;
		case OPT_VERSION:
			printf("pipelinectl %s\n", PIPELINED_VERSION);
			return EXIT_OK;
		case ':':
			return ctl_usage(&ctl, NULL, "option %s needs a value",
			                 bad_option(argv, buf, sizeof(buf)));
		default:
			return ctl_usage(&ctl, NULL, "unknown option '%s'",
			                 bad_option(argv, buf, sizeof(buf)));
		}
	}
	if (optind >= argc)
		return ctl_usage(&ctl, NULL, "no verb given (e.g. 'pipelinectl stats')");

	const Verb *v = find_verb(argv[optind]);
	int ex;
	if (!v) {
		char names[256];
		size_t used = 0;
		for (size_t i = 0; i < N_VERBS; i++)
			used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
			                         i ? ", " : "", verbs[i].name);
		ex = ctl_usage(&ctl, NULL, "unknown verb '%s' (verbs: %s)", argv[optind], names);
	} else {
		ex = run_verb(&ctl, v, argc - optind, argv + optind);
	}
	client_free(ctl.client);

	/* Output that could not be written is a failure, not a success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ctl_progress_end(&ctl);
		fprintf(stderr, "pipelinectl: cannot write to standard output: %s\n",
		        strerror(errno));
		if (ex == EXIT_OK)
			ex = EXIT_REFUSED;
	}
	return ex;
}
