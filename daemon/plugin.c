/* plugin.c — loads stage plugins with dlopen() and calls their entry points.
 *
 * A plugin runs inside the daemon, on the stage's worker threads, with the
 * daemon's privileges and address space. It is trusted code, exactly like the
 * configuration file that names it: a plugin that crashes, hangs, leaks or
 * scribbles over memory takes the daemon with it, and nothing here can stop
 * that. What this file does check is the plugin's side of the interface that
 * ordinary bugs get wrong: the ABI version, the required entry points, return
 * codes, the error text (NUL-terminated, one line, valid UTF-8) and the
 * returned payload (a JSON object within the engine's limits).
 *
 * A path loaded twice (two stages naming the same plugin) is one object in
 * memory: dlopen() counts references, so the plugin's global variables are
 * shared by both stages. Per-worker state is what keeps them apart. */
#include "plugin.h"

#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "job.h"
#include "proto/limits.h"
#include "proto/message.h"

typedef unsigned (*AbiFunction)(void);
typedef int (*InitFunction)(const char *arg, void **state);
typedef int (*RunFunction)(void *state, const pipelined_job *job, pipelined_result *result);
typedef void (*FiniFunction)(void *state);

struct Plugin {
	void *handle; /* from dlopen; dlclose()d by plugin_close */
	char *path;   /* owned */
	char *arg;    /* owned; "" when the stage has no PluginArg= */
	RunFunction run;
	InitFunction init; /* NULL if the plugin has no pipelined_worker_init */
	FiniFunction fini; /* NULL if the plugin has no pipelined_worker_fini */
};

/* Limits on a payload a plugin returns: the same as on any job's payload.
 * Size: the engine's own limit (job_new refuses more). Depth: what a client
 * may submit, because a job's payload is sent back inside GetJob and WaitJob
 * replies, which must stay within the protocol's nesting limit. */
#define PLUGIN_PAYLOAD_MAX       JOB_PAYLOAD_MAX
#define PLUGIN_PAYLOAD_DEPTH_MAX PROTO_PAYLOAD_DEPTH_MAX

__attribute__((format(printf, 4, 5))) static int fail(int r, char *err, size_t errlen,
                                                      const char *fmt, ...)
{
	if (!err || errlen == 0)
		return r;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

/* Length of the valid UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF) at s, or 0 if s does not start one.
 * Stops at a NUL, which is never a continuation byte. */
static size_t utf8_sequence(const unsigned char *s)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* past U+10FFFF */
	} else {
		return 0;
	}
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* Makes the plugin's reason safe to store and send: NUL-terminated within
 * the buffer, one line, valid UTF-8 (jansson refuses anything else, and the
 * reason would silently vanish from replies). Each control character and
 * each byte that does not start a valid sequence (such as one cut by the
 * truncation) becomes '?'. In place. */
static void sanitize_reason(char *s, size_t size)
{
	s[size - 1] = '\0';
	unsigned char *p = (unsigned char *)s;
	while (*p) {
		size_t n = utf8_sequence(p);
		if (n == 0 || *p < 0x20 || *p == 0x7f) {
			*p++ = '?';
			continue;
		}
		p += n;
	}
}

int plugin_open(const char *path, const char *arg, Plugin **ret, char *err, size_t errlen)
{
	struct stat st;
	const char *why;
	int r;

	assert(ret);
	if (!path || path[0] != '/')
		return fail(-EINVAL, err, errlen, "plugin path must be absolute");
	/* dlopen() reports a missing file only as text; tell it apart here. A
	 * file removed between the two calls is still refused, by dlopen. */
	if (stat(path, &st) < 0 && errno == ENOENT)
		return fail(-ENOENT, err, errlen, "%s: %s", path, strerror(ENOENT));

	Plugin *p = calloc(1, sizeof(*p));
	if (!p)
		return fail(-ENOMEM, err, errlen, "out of memory");
	p->path = strdup(path);
	p->arg = strdup(arg ? arg : "");
	if (!p->path || !p->arg) {
		r = fail(-ENOMEM, err, errlen, "out of memory");
		goto error;
	}

	/* RTLD_NOW: an unresolved symbol is an error now, not a crash on the
	 * first job. RTLD_LOCAL: the plugin's symbols do not resolve anyone
	 * else's (two plugins may both define helpers of the same name).
	 * dlerror()'s text is per thread in glibc, and dlopen() sets it. */
	p->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!p->handle) {
		why = dlerror();
		r = fail(-EINVAL, err, errlen, "%s", why ? why : "dlopen failed");
		goto error;
	}

	/* dlsym() on the handle searches the plugin and its dependencies
	 * only. A NULL result is a missing symbol: none of these can
	 * legitimately be at address 0. */
	(void)dlerror();
	AbiFunction abi = (AbiFunction)dlsym(p->handle, "pipelined_plugin_abi");
	if (!abi) {
		why = dlerror();
		r = fail(-EINVAL, err, errlen, "%s",
		         why ? why : "the plugin has no pipelined_plugin_abi");
		goto error;
	}
	unsigned version = abi();
	if (version != PIPELINED_PLUGIN_ABI) {
		r = fail(-EINVAL, err, errlen, "plugin ABI %u, this daemon speaks %u", version,
		         PIPELINED_PLUGIN_ABI);
		goto error;
	}
	(void)dlerror();
	p->run = (RunFunction)dlsym(p->handle, "pipelined_run");
	if (!p->run) {
		why = dlerror();
		r = fail(-EINVAL, err, errlen, "%s", why ? why : "the plugin has no pipelined_run");
		goto error;
	}
	p->init = (InitFunction)dlsym(p->handle, "pipelined_worker_init");
	p->fini = (FiniFunction)dlsym(p->handle, "pipelined_worker_fini");
	(void)dlerror(); /* the optional ones' "undefined symbol", if any */

	*ret = p;
	return 0;

error:
	plugin_close(p);
	return r;
}

int plugin_worker_init(Plugin *p, void **state, char *err, size_t errlen)
{
	assert(p && state);
	if (!p->init) {
		*state = NULL;
		return 0;
	}
	void *s = NULL;
	int r = p->init(p->arg, &s);
	if (r != 0)
		return fail(-EINVAL, err, errlen, "pipelined_worker_init returned %d", r);
	*state = s;
	return 0;
}

/* Checks the payload the plugin returned. Returns PIPELINED_OK, or a failure
 * code with the reason in result->error. Never frees the payload. */
static int check_payload(pipelined_result *result)
{
	char *why = result->error;
	size_t whylen = sizeof(result->error);
	const char *text = result->payload;
	size_t len = strnlen(text, PLUGIN_PAYLOAD_MAX + 1);

	if (len > PLUGIN_PAYLOAD_MAX)
		return fail(PIPELINED_FAIL_PERMANENT, why, whylen,
		            "plugin returned a payload of more than %u bytes", PLUGIN_PAYLOAD_MAX);
	/* Before parsing, so that a deep payload costs no recursion. */
	if (!proto_depth_ok(text, len, PLUGIN_PAYLOAD_DEPTH_MAX))
		return fail(PIPELINED_FAIL_PERMANENT, why, whylen,
		            "plugin returned a payload nested deeper than %u levels",
		            PLUGIN_PAYLOAD_DEPTH_MAX);

	/* The flags a submitted payload is parsed with (proto/message.c): no
	 * duplicate keys, no "\u0000". JSON_DECODE_ANY lets 1 or "x" parse, so
	 * that they are refused as not an object rather than as broken JSON. */
	json_error_t je;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	if (!root) {
		/* Not the plugin's fault: worth another attempt. */
		if (json_error_code(&je) == json_error_out_of_memory || je.text[0] == '\0')
			return fail(PIPELINED_FAIL, why, whylen,
			            "out of memory checking the plugin's payload");
		return fail(PIPELINED_FAIL_PERMANENT, why, whylen,
		            "plugin returned a payload that is not a JSON object: %s", je.text);
	}
	bool object = json_is_object(root);
	json_decref(root);
	if (!object)
		return fail(PIPELINED_FAIL_PERMANENT, why, whylen,
		            "plugin returned a payload that is not a JSON object");
	return PIPELINED_OK;
}

int plugin_run(Plugin *p, void *state, const pipelined_job *job, pipelined_result *result)
{
	assert(p && job && result);
	memset(result, 0, sizeof(*result));
	int r = p->run(state, job, result);
	sanitize_reason(result->error, sizeof(result->error));

	if (r != PIPELINED_OK && r != PIPELINED_FAIL && r != PIPELINED_FAIL_PERMANENT) {
		char reason[sizeof(result->error)];
		memcpy(reason, result->error, sizeof(reason));
		if (reason[0])
			fail(0, result->error, sizeof(result->error), "plugin returned %d: %s", r,
			     reason);
		else
			fail(0, result->error, sizeof(result->error), "plugin returned %d", r);
		/* The prefix may have pushed a multi-byte character over the end. */
		sanitize_reason(result->error, sizeof(result->error));
		r = PIPELINED_FAIL;
	}

	if (r != PIPELINED_OK) {
		/* A failed run leaves the job as it was. */
		free(result->payload);
		result->payload = NULL;
		if (!result->error[0])
			snprintf(result->error, sizeof(result->error),
			         "plugin failed without a reason");
		return r;
	}

	result->error[0] = '\0'; /* a reason given with PIPELINED_OK means nothing */
	if (result->payload) {
		r = check_payload(result);
		if (r != PIPELINED_OK) {
			free(result->payload);
			result->payload = NULL;
		}
	}
	return r;
}

void plugin_worker_fini(Plugin *p, void *state)
{
	assert(p);
	if (p->fini)
		p->fini(state);
}

const char *plugin_path(const Plugin *p)
{
	return p->path;
}

void plugin_close(Plugin *p)
{
	if (!p)
		return;
	/* dlclose() fails only for a handle that is not one; nothing to tell. */
	if (p->handle)
		(void)dlclose(p->handle);
	free(p->path);
	free(p->arg);
	free(p);
}
