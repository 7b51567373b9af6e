/* ctl-call.c — reaching the daemon and turning every way a request can fail
 * into one line on stderr and an exit code. */
#include "ctl.h"

#include "proto/errors.h"
#include "proto/limits.h"

#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether a progress line is on the terminal now (ctl_error clears it). */
static bool progress_shown;

void ctl_progress(Ctl *ctl, const char *fmt, ...)
{
	if (!ctl->tty_err)
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs("\r\033[K", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
	progress_shown = true;
}

void ctl_progress_end(Ctl *ctl)
{
	if (!progress_shown)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	progress_shown = false;
}

static void verror(Ctl *ctl, const char *fmt, va_list ap)
{
	char *msg = NULL;
	ctl_progress_end(ctl);
	fflush(stdout); /* what was printed before the error comes first */
	if (vasprintf(&msg, fmt, ap) < 0) {
		fputs("pipelinectl: out of memory\n", stderr);
		return;
	}
	/* One line, whatever a daemon-supplied text (a job's error) holds. */
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	fprintf(stderr, "pipelinectl: %s\n", msg);
	free(msg);
}

void ctl_error(Ctl *ctl, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verror(ctl, fmt, ap);
	va_end(ap);
}

int ctl_usage(Ctl *ctl, const char *verb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verror(ctl, fmt, ap);
	va_end(ap);
	if (verb)
		fprintf(stderr, "Try 'pipelinectl %s --help'.\n", verb);
	else
		fputs("Try 'pipelinectl --help'.\n", stderr);
	return EXIT_USAGE;
}

int ctl_oom(Ctl *ctl)
{
	ctl_error(ctl, "out of memory");
	return EXIT_REFUSED;
}

void ctl_print_json(const json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
	fputc('\n', stdout);
}

void ctl_print_json_line(const json_t *j)
{
	json_dumpf(j, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
	fputc('\n', stdout);
	fflush(stdout);
}

/* Who may connect: the group owning the socket (or, if the socket itself
 * cannot be looked at, its directory), as "members of group 'x' may
 * connect". Empty if nothing useful can be said. */
static void access_hint(const char *path, char *buf, size_t len)
{
	struct stat st;
	buf[0] = '\0';
	if (stat(path, &st) < 0) {
		char *copy = strdup(path);
		if (!copy)
			return;
		int r = stat(dirname(copy), &st);
		free(copy);
		if (r < 0)
			return;
	}
	if (st.st_gid == 0)
		return;
	struct group *g = getgrgid(st.st_gid);
	if (g)
		snprintf(buf, len, "; members of group '%s' may connect", g->gr_name);
	else
		snprintf(buf, len, "; members of group %u may connect", (unsigned)st.st_gid);
}

int ctl_connect(Ctl *ctl)
{
	if (ctl->client)
		return EXIT_OK;
	const char *path = ctl->socket_path;
	int r = client_connect(path, &ctl->client);
	char hint[160];
	struct stat st;
	switch (r) {
	case 0:
		return EXIT_OK;
	case -ENAMETOOLONG:
		return ctl_usage(ctl, NULL, "socket path too long (%zu bytes, at most 107): %s",
		                 strlen(path), path);
	case -EINVAL:
		return ctl_usage(ctl, NULL, "empty socket path");
	case -ENOENT:
		ctl_error(ctl, "cannot connect to %s: no such file (is pipelined running?)", path);
		return EXIT_UNREACHABLE;
	case -ECONNREFUSED:
		/* Linux refuses a connect to a file that is not a socket the same way. */
		if (stat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
			ctl_error(ctl,
			          "cannot connect to %s: not a socket (is the socket path right?)",
			          path);
		else
			ctl_error(ctl,
			          "cannot connect to %s: nothing is listening (is pipelined "
			          "running?)",
			          path);
		return EXIT_UNREACHABLE;
	case -EACCES:
	case -EPERM:
		access_hint(path, hint, sizeof(hint));
		ctl_error(ctl, "cannot connect to %s: permission denied%s", path,
		          hint[0] ? hint : " (ask an administrator for access)");
		return EXIT_DENIED;
	case -ENOMEM:
		return ctl_oom(ctl);
	default:
		ctl_error(ctl, "cannot connect to %s: %s", path, strerror(-r));
		return EXIT_UNREACHABLE;
	}
}

/* "what: " or nothing. */
#define WHAT_FMT        "%s%s"
#define WHAT_ARGS(what) (what) ? (what) : "", (what) ? ": " : ""

/* A failure of the transport (not an error reply). */
static int report_transport(Ctl *ctl, const char *what, int r, bool sending)
{
	const char *path = ctl->socket_path;
	switch (r) {
	case -ENOMEM:
		return ctl_oom(ctl);
	case -ECONNRESET:
	case -EPIPE:
		ctl_error(ctl,
		          WHAT_FMT "connection to %s lost: %s (did pipelined stop or restart?)",
		          WHAT_ARGS(what), path,
		          *client_error_reason(ctl->client) ? client_error_reason(ctl->client)
		                                            : "the daemon closed the connection");
		return EXIT_UNREACHABLE;
	case -EMSGSIZE: /* sending: our call; receiving: a broken peer's reply */
		if (sending) {
			ctl_error(ctl, WHAT_FMT "request too large (a message is at most %u bytes)",
			          WHAT_ARGS(what), (unsigned)PROTO_MESSAGE_MAX);
			return EXIT_REFUSED;
		}
		__attribute__((fallthrough));
	case -EPROTO:
		ctl_error(ctl,
		          WHAT_FMT "unreadable reply from %s: %s (is that pipelined's socket?)",
		          WHAT_ARGS(what), path, client_error_reason(ctl->client));
		return EXIT_REFUSED;
	default:
		ctl_error(ctl, WHAT_FMT "%s: %s", WHAT_ARGS(what), path, strerror(-r));
		return EXIT_UNREACHABLE;
	}
}

int ctl_send_take(Ctl *ctl, const char *what, const char *method, json_t *params, unsigned flags)
{
	if (!params) {
		ctl_error(ctl,
		          WHAT_FMT "cannot build the request (out of memory, or an argument "
		                   "that is not UTF-8)",
		          WHAT_ARGS(what));
		return EXIT_REFUSED;
	}
	int ex = ctl_connect(ctl);
	if (ex != EXIT_OK) {
		json_decref(params);
		return ex;
	}
	int r = client_send(ctl->client, method, params, flags);
	json_decref(params);
	if (r < 0)
		return report_transport(ctl, what, r, true);
	return EXIT_OK;
}

int ctl_recv_reply(Ctl *ctl, const char *what, ProtoReply *ret)
{
	int r = client_recv(ctl->client, ret);
	if (r < 0)
		return report_transport(ctl, what, r, false);
	return EXIT_OK;
}

int ctl_recv(Ctl *ctl, const char *what, ProtoReply *ret)
{
	ProtoReply reply;
	int ex = ctl_recv_reply(ctl, what, &reply);
	if (ex != EXIT_OK)
		return ex;
	if (reply.error) {
		ex = ctl_report_reply(ctl, what, &reply);
		proto_reply_done(&reply);
		return ex;
	}
	*ret = reply;
	return EXIT_OK;
}

int ctl_call_take(Ctl *ctl, const char *what, const char *method, json_t *params, ProtoReply *ret)
{
	int ex = ctl_send_take(ctl, what, method, params, 0);
	if (ex != EXIT_OK)
		return ex;
	return ctl_recv(ctl, what, ret);
}

/* ---- error replies ---- */

static const char *pstr(json_t *params, const char *key)
{
	const char *s = json_string_value(json_object_get(params, key));
	return s ? s : "?";
}

static long long pint(json_t *params, const char *key)
{
	return (long long)json_integer_value(json_object_get(params, key));
}

const char *ctl_reply_names(json_t *params, const char *key, char *buf, size_t len)
{
	json_t *arr = json_object_get(params, key);
	size_t i, used = 0;
	json_t *v;
	buf[0] = '\0';
	json_array_foreach(arr, i, v)
	{
		const char *s = json_string_value(v);
		if (!s)
			continue;
		int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", s);
		if (n < 0 || (size_t)n >= len - used) {
			/* Cut at a whole name: the list is a hint, not the record. */
			snprintf(buf + used, len - used, "%s...", used ? ", " : "");
			break;
		}
		used += (size_t)n;
	}
	return buf;
}

typedef struct ErrorMap {
	const char *name;
	int exit_code;
	/* Writes the cause (after "what: ") into buf. */
	void (*cause)(json_t *params, char *buf, size_t len);
} ErrorMap;

static void cause_no_such_pipeline(json_t *p, char *buf, size_t len)
{
	char known[512];
	ctl_reply_names(p, "known", known, sizeof(known));
	if (known[0])
		snprintf(buf, len, "no such pipeline (known: %s)", known);
	else
		snprintf(buf, len, "no such pipeline (none is configured)");
}

static void cause_no_such_stage(json_t *p, char *buf, size_t len)
{
	char known[512];
	snprintf(buf, len, "no such stage (known: %s)",
	         ctl_reply_names(p, "known", known, sizeof(known)));
}

static void cause_no_such_job(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "no such job %lld (finished jobs are kept for a limited time)",
	         pint(p, "id"));
}

static void cause_busy(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "pipeline is busy (first queue full); retry after %lld ms",
	         pint(p, "retry_after_ms"));
}

static void cause_closed(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "pipeline is closed and accepts no new jobs");
}

static void cause_shutting_down(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "the daemon is shutting down (try again once it is back)");
}

static void cause_not_cancellable(json_t *p, char *buf, size_t len)
{
	const char *state = pstr(p, "state");
	if (strcmp(state, "running") == 0)
		snprintf(buf, len,
		         "job %lld is running and cannot be cancelled (only queued or retrying "
		         "jobs can)",
		         pint(p, "id"));
	else
		snprintf(buf, len, "job %lld has already ended (%s)", pint(p, "id"), state);
}

static void cause_not_requeueable(json_t *p, char *buf, size_t len)
{
	const char *state = pstr(p, "state");
	snprintf(buf, len, "job %lld is %s%s; only failed jobs can be requeued", pint(p, "id"),
	         state, strcmp(state, "retrying") == 0 ? " (it runs again by itself)" : "");
}

static void cause_invalid_message(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len,
	         "the daemon could not read the request: %s (are pipelinectl and pipelined of "
	         "different versions?)",
	         pstr(p, "reason"));
}

static void cause_too_large(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "request too large for the daemon (at most %lld bytes a message)",
	         pint(p, "max"));
}

static void cause_limit(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s is over the daemon's limit of %lld", pstr(p, "parameter"),
	         pint(p, "max"));
}

static void cause_expected_more(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len,
	         "the daemon expected a streaming call (is pipelined newer than "
	         "pipelinectl?)");
}

static void cause_config(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s:%lld: %s (nothing changed; fix the file and reload again)",
	         pstr(p, "file"), pint(p, "line"), pstr(p, "reason"));
}

static void cause_invalid_parameter(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len,
	         "the daemon refused parameter '%s' (are pipelinectl and pipelined of different "
	         "versions?)",
	         pstr(p, "parameter"));
}

static void cause_no_method(json_t *p, char *buf, size_t len)
{
	snprintf(buf, len, "the daemon does not know %s (is pipelined older than pipelinectl?)",
	         json_string_value(json_object_get(p, "method")) ? pstr(p, "method")
	                                                         : pstr(p, "interface"));
}

/* io.pipelined.PermissionDenied names the method; another interface's
 * (systemd sends org.varlink.service.PermissionDenied) may not. */
static void cause_permission(json_t *p, char *buf, size_t len)
{
	const char *method = json_string_value(json_object_get(p, "method"));
	char who[128];
	ctl_describe_user((uint32_t)getuid(), who, sizeof(who));
	if (!method) {
		snprintf(buf, len,
		         "permission denied by the daemon to %s (ask its administrator "
		         "for access)",
		         who);
		return;
	}
	snprintf(buf, len,
	         "permission denied: %s may not call %s (the daemon's administrator grants it "
	         "with AllowUsers= or AllowGroups=%s in pipelined.conf)",
	         who, method,
	         ctl_method_is_read_only(method) ? ", or ReadOnlyUsers= or ReadOnlyGroups=" : "");
}

static const ErrorMap error_map[] = {
	{ PROTO_ERR_NO_SUCH_PIPELINE, EXIT_REFUSED, cause_no_such_pipeline },
	{ PROTO_ERR_NO_SUCH_STAGE, EXIT_REFUSED, cause_no_such_stage },
	{ PROTO_ERR_NO_SUCH_JOB, EXIT_REFUSED, cause_no_such_job },
	{ PROTO_ERR_BUSY, EXIT_BUSY, cause_busy },
	{ PROTO_ERR_PIPELINE_CLOSED, EXIT_REFUSED, cause_closed },
	{ PROTO_ERR_SHUTTING_DOWN, EXIT_REFUSED, cause_shutting_down },
	{ PROTO_ERR_JOB_NOT_CANCELLABLE, EXIT_REFUSED, cause_not_cancellable },
	{ PROTO_ERR_JOB_NOT_REQUEUEABLE, EXIT_REFUSED, cause_not_requeueable },
	{ PROTO_ERR_INVALID_MESSAGE, EXIT_REFUSED, cause_invalid_message },
	{ PROTO_ERR_MESSAGE_TOO_LARGE, EXIT_REFUSED, cause_too_large },
	{ PROTO_ERR_LIMIT_EXCEEDED, EXIT_REFUSED, cause_limit },
	{ PROTO_ERR_CONFIG_INVALID, EXIT_REFUSED, cause_config },
	{ PROTO_ERR_INVALID_PARAMETER, EXIT_REFUSED, cause_invalid_parameter },
	{ PROTO_ERR_METHOD_NOT_FOUND, EXIT_REFUSED, cause_no_method },
	{ PROTO_ERR_METHOD_NOT_IMPLEMENTED, EXIT_REFUSED, cause_no_method },
	{ PROTO_ERR_INTERFACE_NOT_FOUND, EXIT_REFUSED, cause_no_method },
	{ PROTO_ERR_EXPECTED_MORE, EXIT_REFUSED, cause_expected_more },
};

/* io.pipelined.PermissionDenied, or any interface's (systemd sends
 * org.varlink.service.PermissionDenied): the same to a user. */
static bool is_permission_denied(const char *name)
{
	const char *dot = strrchr(name, '.');
	return dot && strcmp(dot + 1, "PermissionDenied") == 0;
}

int ctl_report_reply(Ctl *ctl, const char *what, const ProtoReply *r)
{
	char cause[1024];
	/* Sent unasked, before closing, to a connection over the daemon's
	 * maximum (PROTOCOL.md §6): the daemon is there but cannot be used. */
	if (strcmp(r->error, PROTO_ERR_LIMIT_EXCEEDED) == 0 &&
	    strcmp(pstr(r->parameters, "parameter"), "connections") == 0) {
		ctl_error(ctl,
		          WHAT_FMT "the daemon accepts no more connections (at most %lld at once); "
		                   "try again later",
		          WHAT_ARGS(what), pint(r->parameters, "max"));
		return EXIT_UNREACHABLE;
	}
	for (size_t i = 0; i < sizeof(error_map) / sizeof(error_map[0]); i++) {
		if (strcmp(r->error, error_map[i].name) != 0)
			continue;
		error_map[i].cause(r->parameters, cause, sizeof(cause));
		ctl_error(ctl, WHAT_FMT "%s", WHAT_ARGS(what), cause);
		return error_map[i].exit_code;
	}
	if (is_permission_denied(r->error)) {
		cause_permission(r->parameters, cause, sizeof(cause));
		ctl_error(ctl, WHAT_FMT "%s", WHAT_ARGS(what), cause);
		return EXIT_DENIED;
	}
	/* An error this pipelinectl does not know: its name and parameters. */
	char *params = json_dumps(r->parameters, JSON_COMPACT);
	ctl_error(ctl, WHAT_FMT "the daemon replied %s %s", WHAT_ARGS(what), r->error,
	          params ? params : "{}");
	free(params);
	return EXIT_REFUSED;
}
