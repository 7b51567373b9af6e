#include "program.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exectemplate.h"
#include "proto/limits.h"
#include "proto/message.h"
#include "spawn.h"
#include "util.h"

extern char **environ;

struct Program {
	ExecTemplate *tmpl;
	char *working_directory; /* NULL: the job's scratch directory */
	uint64_t timeout_usec, grace_usec;
	ProgramStdout stdout_mode;
	size_t stderr_tail;
	char **env;   /* the daemon's environment at program_new, PIPELINED_* left out */
	size_t n_env;
	char *text;   /* "exec:" + the command line */
};

/* The variables program_run adds; a PIPELINED_* the daemon inherited is
 * left out, so a program never sees two values for one name. */
enum { N_JOB_ENV = 5 };

static const char *const stdout_names[_PROGRAM_STDOUT_MAX] = {
	[PROGRAM_STDOUT_JSON] = "json",
	[PROGRAM_STDOUT_JSON_REQUIRED] = "json-required",
	[PROGRAM_STDOUT_IGNORE] = "ignore",
};

const char *program_stdout_to_string(ProgramStdout m)
{
	return m < _PROGRAM_STDOUT_MAX ? stdout_names[m] : "unknown";
}

int program_stdout_from_string(const char *s, ProgramStdout *ret)
{
	for (ProgramStdout m = 0; m < _PROGRAM_STDOUT_MAX; m++)
		if (strcmp(s, stdout_names[m]) == 0) {
			*ret = m;
			return 0;
		}
	return -EINVAL;
}

void program_free(Program *p)
{
	if (!p)
		return;
	exec_template_free(p->tmpl);
	free(p->working_directory);
	for (size_t i = 0; i < p->n_env; i++)
		free(p->env[i]);
	free(p->env);
	free(p->text);
	free(p);
}

/* What the service manager tells the daemon itself (sd_notify's socket, the
 * watchdog, socket activation): a job's program is not the service's main
 * process, and one that spoke to systemd would only be refused
 * (NotifyAccess=main) with a warning in the journal. */
static bool service_variable(const char *e)
{
	static const char *const names[] = {
		"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=",
		"LISTEN_FDS=",    "LISTEN_PID=",    "LISTEN_FDNAMES="
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strncmp(e, names[i], strlen(names[i])) == 0)
			return true;
	return false;
}

static int copy_environment(Program *p)
{
	size_t n = 0;
	for (char **e = environ; e && *e; e++)
		n++;
	p->env = calloc(n + 1, sizeof(*p->env));
	if (!p->env)
		return -ENOMEM;
	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, "PIPELINED_", 10) == 0 || service_variable(*e))
			continue;
		if (!(p->env[p->n_env] = strdup(*e)))
			return -ENOMEM;
		p->n_env++;
	}
	return 0;
}

int program_new(const ProgramOptions *o, Program **ret, char *err, size_t errlen)
{
	int r;

	if (o->stdout_mode >= _PROGRAM_STDOUT_MAX || o->stderr_tail > PROGRAM_STDERR_TAIL_MAX) {
		snprintf(err, errlen, "invalid program options");
		return -EINVAL;
	}
	if (o->working_directory && o->working_directory[0] != '/') {
		snprintf(err, errlen, "working directory must be an absolute path");
		return -EINVAL;
	}
	Program *p = calloc(1, sizeof(*p));
	if (!p)
		goto oom;
	r = exec_template_parse(o->exec, &p->tmpl, err, errlen);
	if (r < 0) {
		program_free(p);
		return r;
	}
	p->timeout_usec = o->timeout_usec;
	p->grace_usec = o->grace_usec;
	p->stdout_mode = o->stdout_mode;
	p->stderr_tail = o->stderr_tail;
	if (o->working_directory && !(p->working_directory = strdup(o->working_directory)))
		goto oom;
	if (copy_environment(p) < 0)
		goto oom;
	if (asprintf(&p->text, "exec:%s", exec_template_text(p->tmpl)) < 0) {
		p->text = NULL;
		goto oom;
	}
	*ret = p;
	return 0;
oom:
	program_free(p);
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

const char *program_text(const Program *p)
{
	return p->text;
}

/* With Stdout=json[-required]: the program's stdout as the job's next
 * payload. Returns 1 if it replaced the payload, 0 if stdout is not a JSON
 * object within the payload limits (why in err), -ENOMEM. */
static int take_stdout(const SpawnResult *res, Job *job, char *err, size_t errlen)
{
	const char *s = res->out;
	size_t n = res->out_len;
	while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
		s++, n--;
	if (res->out_total > res->out_len) {
		snprintf(err, errlen, "stdout is over %u bytes", PROGRAM_STDOUT_MAX);
		return 0;
	}
	if (n == 0 || *s != '{') {
		snprintf(err, errlen, "stdout is not a JSON object");
		return 0;
	}
	if (!proto_depth_ok(s, n, PROTO_PAYLOAD_DEPTH_MAX)) {
		snprintf(err, errlen, "stdout JSON is nested deeper than %u levels",
		         PROTO_PAYLOAD_DEPTH_MAX);
		return 0;
	}
	json_error_t jerr;
	json_t *v = json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr);
	if (!v || !json_is_object(v)) {
		if (v)
			snprintf(err, errlen, "stdout is not a JSON object");
		else
			snprintf(err, errlen, "stdout is not valid JSON: %s (line %d, column %d)",
			         jerr.text, jerr.line, jerr.column);
		json_decref(v);
		return 0;
	}
	char *text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(v);
	if (!text)
		return -ENOMEM;
	if (strlen(text) > PROTO_PAYLOAD_MAX) {
		snprintf(err, errlen, "stdout JSON is over the %u-byte payload limit",
		         PROTO_PAYLOAD_MAX);
		free(text);
		return 0;
	}
	job_take_payload(job, text);
	return 1;
}

/* Appends ": <last non-empty line of stderr>" to msg, so that a failure says
 * why in the program's own words ("exited with status 22: curl: (22) ..."). */
static void append_last_line(char *msg, size_t len, const char *tail, size_t tail_len)
{
	size_t end = tail_len;
	while (end > 0 && (tail[end - 1] == '\n' || tail[end - 1] == '\r' || tail[end - 1] == ' '))
		end--;
	if (end == 0)
		return;
	size_t start = end;
	while (start > 0 && tail[start - 1] != '\n')
		start--;
	size_t used = strlen(msg);
	if (used + 3 >= len)
		return;
	int shown = (int)(end - start < 300 ? end - start : 300);
	snprintf(msg + used, len - used, ": %.*s", shown, tail + start);
	/* Control characters would break a one-line message. */
	for (char *c = msg + used; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = '?';
}

int program_argv(const Program *p, const Job *job, char ***ret_argv, char *err, size_t errlen)
{
	int r = exec_template_expand(p->tmpl, job->payload, job->payload_len, ret_argv, err,
	                             errlen);
	if (r < 0)
		return r == -ENOMEM ? r : -EPERM; /* the same payload would fail again */
	return 0;
}

int program_run(Program *p, char **argv, const char *pipeline, const char *stage,
                const char *workdir, Job *job, char *err, size_t errlen)
{
	char **envp = NULL;
	char vars[N_JOB_ENV][PROGRAM_ENV_VALUE_MAX];
	SpawnResult res;
	int r;

	envp = malloc((p->n_env + N_JOB_ENV + 1) * sizeof(*envp));
	if (!envp) {
		exec_argv_free(argv);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(envp, p->env, p->n_env * sizeof(*envp));
	snprintf(vars[0], sizeof(vars[0]), "PIPELINED_JOB_ID=%llu", (unsigned long long)job->id);
	snprintf(vars[1], sizeof(vars[1]), "PIPELINED_PIPELINE=%s", pipeline);
	snprintf(vars[2], sizeof(vars[2]), "PIPELINED_STAGE=%s", stage);
	snprintf(vars[3], sizeof(vars[3]), "PIPELINED_ATTEMPT=%u", job->attempt);
	snprintf(vars[4], sizeof(vars[4]), "PIPELINED_WORKDIR=%s", workdir);
	for (size_t i = 0; i < N_JOB_ENV; i++)
		envp[p->n_env + i] = vars[i];
	envp[p->n_env + N_JOB_ENV] = NULL;

	SpawnRequest req = {
		.argv = argv,
		.envp = envp,
		.cwd = p->working_directory ? p->working_directory : workdir,
		.input = job->payload,
		.input_len = job->payload_len,
		.stdout_max = p->stdout_mode == PROGRAM_STDOUT_IGNORE ? 0 : PROGRAM_STDOUT_MAX,
		.stderr_tail = p->stderr_tail,
		.timeout_usec = p->timeout_usec,
		.grace_usec = p->grace_usec,
	};
	r = spawn_run(&req, &res, err, errlen);
	free(envp);
	exec_argv_free(argv);
	if (r < 0)
		return r == -EPERM ? -EACCES : r; /* -EPERM means "never retry" to the stage */

	job->ran_program = true;
	job->exit_status = res.exit_status;
	job->term_signal = res.term_signal;
	job->timed_out = res.timed_out;
	if (res.err_len > 0) {
		utf8_sanitize(res.err, res.err_len);
		job_take_stderr(job, res.err, res.err_len);
		res.err = NULL;
	} else {
		job_take_stderr(job, NULL, 0);
	}

	if (res.exit_status != 0 || res.timed_out) {
		spawn_result_describe(&res, &req, err, errlen);
		if (job->stderr_tail)
			append_last_line(err, errlen, job->stderr_tail, job->stderr_len);
		r = -EIO;
	} else if (p->stdout_mode != PROGRAM_STDOUT_IGNORE) {
		char why[256];
		r = take_stdout(&res, job, why, sizeof(why));
		if (r == 0 && p->stdout_mode == PROGRAM_STDOUT_JSON_REQUIRED) {
			snprintf(err, errlen, "exited with status 0 but %s (Stdout=json-required)", why);
			r = -EIO;
		} else if (r == -ENOMEM) {
			snprintf(err, errlen, "out of memory");
		} else {
			r = 0;
		}
	}
	spawn_result_free(&res);
	return r;
}
