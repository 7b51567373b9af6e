/* uppercase.c — an example stage plugin: upper-cases one string field of
 * each job's payload.
 *
 *     [stage shout/upper]
 *     Plugin = /usr/local/lib/pipelined/uppercase.so
 *     PluginArg = title          # the field; "text" when PluginArg= is unset
 *
 * turns {"title":"hello","n":1} into {"title":"HELLO","n":1}. Only ASCII
 * letters change; other characters (UTF-8 included) pass through as they
 * are. A payload without the field, or whose field is not a string, fails the
 * job permanently: another attempt would see the same payload.
 *
 * Build:  cc -shared -fPIC -O2 -o uppercase.so uppercase.c -ljansson
 *
 * What it shows, besides the four entry points:
 *   - per-worker state: each worker thread gets its own struct worker from
 *     pipelined_worker_init and hands it back to pipelined_worker_fini, so
 *     pipelined_run needs no lock even though several workers run it at once;
 *   - a buffer reused from job to job, and a per-worker job counter that
 *     decides when to give a large buffer back;
 *   - reading the payload with jansson and returning a new one, which the
 *     daemon takes and frees;
 *   - failing with a reason, permanently (bad input) or not (out of memory).
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pipelined-plugin.h>

/* A worker keeps the largest buffer it has needed so far, so that a stream
 * of similar jobs never allocates for it; but one huge job should not pin
 * its memory for the worker's whole life. Every TRIM_EVERY jobs, a buffer
 * larger than TRIM_ABOVE bytes is given back. */
#define TRIM_EVERY 1024u
#define TRIM_ABOVE (64u * 1024u)

/* One per worker thread; only that thread ever touches it. */
struct worker {
	char *field;        /* the field to upper-case: PluginArg=, copied */
	char *buf;          /* scratch for the upper-cased text, reused across jobs */
	size_t cap;         /* bytes allocated at buf */
	unsigned long jobs; /* jobs this worker has run */
};

unsigned pipelined_plugin_abi(void)
{
	/* The version of <pipelined-plugin.h> this file was compiled against;
	 * the daemon refuses to load a plugin built for another. */
	return PIPELINED_PLUGIN_ABI;
}

/* Runs on each worker thread before its first job. arg is the stage's
 * PluginArg= ("" when unset); copy what you keep. A non-zero return means
 * this worker cannot run jobs (each it takes then fails); clean up first,
 * as pipelined_worker_fini is not called for it. */
int pipelined_worker_init(const char *arg, void **state)
{
	struct worker *w = calloc(1, sizeof(*w));
	if (!w)
		return -1;
	w->field = strdup(arg[0] ? arg : "text");
	if (!w->field) {
		free(w);
		return -1;
	}
	*state = w;
	return 0;
}

/* Runs on the worker thread as it exits, with what init stored. */
void pipelined_worker_fini(void *state)
{
	struct worker *w = state;
	free(w->buf);
	free(w->field);
	free(w);
}

/* Writes the reason (always NUL-terminated by snprintf) and returns code. */
__attribute__((format(printf, 3, 4))) static int fail(pipelined_result *result, int code,
                                                      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(result->error, sizeof(result->error), fmt, ap);
	va_end(ap);
	return code;
}

/* Makes room for n bytes at w->buf. Returns 0, or -1 out of memory. */
static int reserve(struct worker *w, size_t n)
{
	if (n <= w->cap)
		return 0;
	char *b = realloc(w->buf, n);
	if (!b)
		return -1;
	w->buf = b;
	w->cap = n;
	return 0;
}

/* Runs on a worker thread, once per job. job and everything it points to
 * are borrowed for this call. result arrives zeroed. */
int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	struct worker *w = state;

	if (++w->jobs % TRIM_EVERY == 0 && w->cap > TRIM_ABOVE) {
		free(w->buf);
		w->buf = NULL;
		w->cap = 0;
	}

	/* The daemon only passes JSON objects; parsing can still run out of
	 * memory, which is worth another attempt. */
	json_error_t je;
	json_t *root = json_loadb(job->payload, job->payload_len, 0, &je);
	if (!root)
		return json_error_code(&je) == json_error_out_of_memory
		               ? fail(result, PIPELINED_FAIL, "out of memory")
		               : fail(result, PIPELINED_FAIL_PERMANENT, "payload is not JSON: %s",
		                      je.text);

	json_t *value = json_object_get(root, w->field); /* borrowed from root */
	if (!value || !json_is_string(value)) {
		int r = fail(result, PIPELINED_FAIL_PERMANENT,
		             value ? "field \"%s\" is not a string" : "payload has no field \"%s\"",
		             w->field);
		json_decref(root);
		return r;
	}

	const char *s = json_string_value(value);
	size_t len = json_string_length(value);
	if (reserve(w, len + 1) < 0) {
		json_decref(root);
		return fail(result, PIPELINED_FAIL, "out of memory");
	}
	for (size_t i = 0; i < len; i++)
		w->buf[i] = s[i] >= 'a' && s[i] <= 'z' ? (char)(s[i] - 'a' + 'A') : s[i];

	/* json_object_set_new takes the new string (and frees it on failure);
	 * the old one goes with it. */
	if (json_object_set_new(root, w->field, json_stringn(w->buf, len)) < 0) {
		json_decref(root);
		return fail(result, PIPELINED_FAIL, "out of memory");
	}

	/* The new payload: a malloc()ed JSON object text (json_dumps
	 * allocates with malloc unless the process changes jansson's
	 * allocator, which pipelined does not). The daemon frees it. */
	result->payload = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!result->payload)
		return fail(result, PIPELINED_FAIL, "out of memory");
	return PIPELINED_OK;
}
