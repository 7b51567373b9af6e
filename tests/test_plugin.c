/* Unit tests for daemon/plugin.c: loading the example plugins
 * (packaging/examples/plugins) and test plugins (tests/plugins), each found
 * by the full path meson passes in a define, and calling them as workers do. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "job.h"
#include "plugin.h"
#include "proto/limits.h"
#include "testutil.h"
#include "util.h"

static char tmpdir[PATH_MAX];

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_plugin.XXXXXX", base && *base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char p[PATH_MAX + 32];
	snprintf(p, sizeof(p), "%s/notelf.so", tmpdir);
	(void)unlink(p);
	(void)rmdir(tmpdir);
}

/* True if the dynamic linker still holds the object at path: what a plugin
 * that was closed, or failed to open, must not be. */
static bool is_loaded(const char *path)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	if (!h)
		return false;
	dlclose(h);
	return true;
}

static Plugin *open_ok(const char *path, const char *arg)
{
	Plugin *p = NULL;
	char err[256] = "";
	int r = plugin_open(path, arg, &p, err, sizeof(err));
	ck_assert_msg(r == 0, "%s: %d %s", path, r, err);
	ck_assert_ptr_nonnull(p);
	return p;
}

static pipelined_job job(const char *payload)
{
	return (pipelined_job){
		.id = 42,
		.pipeline = "pl",
		.stage = "st",
		.attempt = 1,
		.payload = payload,
		.payload_len = strlen(payload),
		.workdir = "/nonexistent/42",
	};
}

/* Runs one job with a fresh worker state (init, run, fini), as a worker
 * does; the payload it returns is the caller's. */
static int run_one(Plugin *p, const char *payload, pipelined_result *result)
{
	void *state;
	char err[256];
	ck_assert_int_eq(plugin_worker_init(p, &state, err, sizeof(err)), 0);
	pipelined_job j = job(payload);
	memset(result, 0x55, sizeof(*result)); /* plugin_run zeroes it */
	int r = plugin_run(p, state, &j, result);
	plugin_worker_fini(p, state);
	return r;
}

START_TEST(test_open_close)
{
	Plugin *p = open_ok(EXAMPLE_PLUGIN_UPPERCASE, NULL);
	ck_assert_str_eq(plugin_path(p), EXAMPLE_PLUGIN_UPPERCASE);
	ck_assert(is_loaded(EXAMPLE_PLUGIN_UPPERCASE));
	plugin_close(p);
	ck_assert(!is_loaded(EXAMPLE_PLUGIN_UPPERCASE));
	plugin_close(NULL);

	/* Two stages naming one plugin share one loaded object: closing the
	 * first must leave the second working. */
	Plugin *a = open_ok(EXAMPLE_PLUGIN_UPPERCASE, "a");
	Plugin *b = open_ok(EXAMPLE_PLUGIN_UPPERCASE, "b");
	plugin_close(a);
	pipelined_result res;
	ck_assert_int_eq(run_one(b, "{\"b\":\"x\"}", &res), PIPELINED_OK);
	ck_assert_str_eq(res.payload, "{\"b\":\"X\"}");
	free(res.payload);
	plugin_close(b);
	ck_assert(!is_loaded(EXAMPLE_PLUGIN_UPPERCASE));
}
END_TEST

enum { EXACT, PREFIX, AFTER_PATH };

static const struct {
	const char *path; /* NOTELF: a text file named .so; TMPDIR: a directory */
	int result;
	int match;
	const char *error;
} open_errors[] = {
	{ NULL, -EINVAL, EXACT, "plugin path must be absolute" },
	{ "", -EINVAL, EXACT, "plugin path must be absolute" },
	{ "noop.so", -EINVAL, EXACT, "plugin path must be absolute" },
	{ "./noop.so", -EINVAL, EXACT, "plugin path must be absolute" },
	{ "/nonexistent/noop.so", -ENOENT, EXACT,
	  "/nonexistent/noop.so: No such file or directory" },
	{ "NOTELF", -EINVAL, PREFIX, NULL }, /* "<path>: " and dlerror's reason */
	{ "TMPDIR", -EINVAL, PREFIX, NULL },
	{ TEST_PLUGIN_BADABI, -EINVAL, EXACT, "plugin ABI 99, this daemon speaks 1" },
	{ TEST_PLUGIN_NOABI, -EINVAL, AFTER_PATH, ": undefined symbol: pipelined_plugin_abi" },
	{ TEST_PLUGIN_NORUN, -EINVAL, AFTER_PATH, ": undefined symbol: pipelined_run" },
};

START_TEST(test_open_errors)
{
	const char *path = open_errors[_i].path;
	char notelf[PATH_MAX + 32], want[PATH_MAX + 64];
	if (path && strcmp(path, "NOTELF") == 0) {
		snprintf(notelf, sizeof(notelf), "%s/notelf.so", tmpdir);
		FILE *f = fopen(notelf, "we");
		ck_assert_ptr_nonnull(f);
		fputs("this is not an ELF file, but it is long enough to have a header\n", f);
		ck_assert_int_eq(fclose(f), 0);
		path = notelf;
	} else if (path && strcmp(path, "TMPDIR") == 0) {
		path = tmpdir;
	}

	Plugin *p = (Plugin *)&p; /* written only on success */
	char err[PATH_MAX + 256] = "";
	ck_assert_int_eq(plugin_open(path, "arg", &p, err, sizeof(err)), open_errors[_i].result);
	ck_assert_ptr_eq(p, (Plugin *)&p);
	switch (open_errors[_i].match) {
	case EXACT:
		ck_assert_str_eq(err, open_errors[_i].error);
		break;
	case PREFIX:
		snprintf(want, sizeof(want), "%s: ", path);
		ck_assert_msg(strncmp(err, want, strlen(want)) == 0 && strlen(err) > strlen(want),
		              "%s", err);
		break;
	case AFTER_PATH:
		snprintf(want, sizeof(want), "%s%s", path, open_errors[_i].error);
		ck_assert_str_eq(err, want);
		break;
	}
	ck_assert_ptr_null(strchr(err, '\n'));
	/* A plugin refused after dlopen() is unloaded again. */
	if (path && path[0] == '/')
		ck_assert(!is_loaded(path));

	/* Any buffer size, none included. */
	char small[8];
	ck_assert_int_eq(plugin_open(path, NULL, &p, small, sizeof(small)), open_errors[_i].result);
	ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
	ck_assert_int_eq(plugin_open(path, NULL, &p, NULL, 0), open_errors[_i].result);
	ck_assert_ptr_eq(p, (Plugin *)&p);
}
END_TEST

/* A plugin without the optional entry points: worker state is NULL. An OK
 * run without a payload leaves it unchanged (NULL) with no reason. */
START_TEST(test_noop_and_optional_entry_points)
{
	Plugin *p = open_ok(EXAMPLE_PLUGIN_NOOP, NULL);
	void *state = &state;
	char err[64];
	ck_assert_int_eq(plugin_worker_init(p, &state, err, sizeof(err)), 0);
	ck_assert_ptr_null(state);
	pipelined_job j = job("{\"a\":1}");
	pipelined_result res;
	memset(&res, 0x55, sizeof(res));
	ck_assert_int_eq(plugin_run(p, state, &j, &res), PIPELINED_OK);
	ck_assert_ptr_null(res.payload);
	ck_assert_str_eq(res.error, "");
	plugin_worker_fini(p, state);
	plugin_close(p);
}
END_TEST

START_TEST(test_uppercase)
{
	pipelined_result res;

	/* PluginArg= unset: the field is "text". Only ASCII letters change;
	 * the order of the fields is kept. */
	Plugin *p = open_ok(EXAMPLE_PLUGIN_UPPERCASE, NULL);
	ck_assert_int_eq(run_one(p, "{\"n\":1,\"text\":\"hello, w\u00f6rld\",\"x\":\"y\"}", &res),
	                 PIPELINED_OK);
	ck_assert_str_eq(res.payload, "{\"n\":1,\"text\":\"HELLO, W\u00f6RLD\",\"x\":\"y\"}");
	ck_assert_str_eq(res.error, "");
	free(res.payload);

	ck_assert_int_eq(run_one(p, "{\"title\":\"hello\"}", &res), PIPELINED_FAIL_PERMANENT);
	ck_assert_ptr_null(res.payload);
	ck_assert_str_eq(res.error, "payload has no field \"text\"");
	ck_assert_int_eq(run_one(p, "{\"text\":[\"hello\"]}", &res), PIPELINED_FAIL_PERMANENT);
	ck_assert_str_eq(res.error, "field \"text\" is not a string");
	plugin_close(p);

	p = open_ok(EXAMPLE_PLUGIN_UPPERCASE, "title");
	ck_assert_int_eq(run_one(p, "{\"text\":\"a\",\"title\":\"b\"}", &res), PIPELINED_OK);
	ck_assert_str_eq(res.payload, "{\"text\":\"a\",\"title\":\"B\"}");
	free(res.payload);
	ck_assert_int_eq(run_one(p, "{\"text\":\"a\"}", &res), PIPELINED_FAIL_PERMANENT);
	ck_assert_str_eq(res.error, "payload has no field \"title\"");
	plugin_close(p);
}
END_TEST

/* One worker, many jobs of changing sizes: the buffer it reuses grows,
 * is given back now and then, and never leaks (ASan) or mixes jobs up. */
START_TEST(test_uppercase_reuses_its_buffer)
{
	enum { JOBS = 3000, BIG = 100 * 1000 };
	Plugin *p = open_ok(EXAMPLE_PLUGIN_UPPERCASE, NULL);
	void *state;
	char err[64];
	ck_assert_int_eq(plugin_worker_init(p, &state, err, sizeof(err)), 0);
	char *in = malloc(BIG + 32), *want = malloc(BIG + 32);
	for (unsigned i = 0; i < JOBS; i++) {
		size_t n = i % 1000 == 1 ? BIG : i % 17; /* a big job now and then */
		int o = sprintf(in, "{\"text\":\"");
		int w = sprintf(want, "{\"text\":\"");
		for (size_t k = 0; k < n; k++) {
			in[o++] = (char)('a' + (i + k) % 26);
			want[w++] = (char)('A' + (i + k) % 26);
		}
		strcpy(in + o, "\"}");
		strcpy(want + w, "\"}");
		pipelined_job j = job(in);
		pipelined_result res;
		ck_assert_int_eq(plugin_run(p, state, &j, &res), PIPELINED_OK);
		ck_assert_str_eq(res.payload, want);
		free(res.payload);
	}
	free(in);
	free(want);
	plugin_worker_fini(p, state);
	plugin_close(p);
}
END_TEST

static char *repeat(const char *s, unsigned n)
{
	size_t len = strlen(s);
	char *r = malloc(len * n + 1);
	for (unsigned i = 0; i < n; i++)
		memcpy(r + i * len, s, len);
	r[len * n] = '\0';
	return r;
}

/* What plugin_run makes of each return value and reason (failing.c does what
 * the job's payload says). */
static const struct {
	const char *payload;
	int result;
	const char *error;
} run_cases[] = {
	{ "{\"return\":1,\"reason\":\"disk full\"}", PIPELINED_FAIL, "disk full" },
	{ "{\"return\":1}", PIPELINED_FAIL, "plugin failed without a reason" },
	{ "{\"return\":2,\"reason\":\"bad input\"}", PIPELINED_FAIL_PERMANENT, "bad input" },
	{ "{\"return\":2}", PIPELINED_FAIL_PERMANENT, "plugin failed without a reason" },
	{ "{\"return\":7}", PIPELINED_FAIL, "plugin returned 7" },
	{ "{\"return\":3,\"reason\":\"odd\"}", PIPELINED_FAIL, "plugin returned 3: odd" },
	{ "{\"return\":-1}", PIPELINED_FAIL, "plugin returned -1" },
	{ "{\"return\":-2147483648}", PIPELINED_FAIL, "plugin returned -2147483648" },
	/* A reason given with success means nothing. */
	{ "{\"return\":0,\"reason\":\"all good\"}", PIPELINED_OK, "" },
	/* One line, whatever the plugin wrote. */
	{ "{\"return\":1,\"reason\":\"one\\ntwo\\tthree\\u007f \\u00e9\"}", PIPELINED_FAIL,
	  "one?two?three? \u00e9" },
	/* A failed run's payload is dropped (and freed: ASan). */
	{ "{\"return\":1,\"reason\":\"r\",\"payload\":true}", PIPELINED_FAIL, "r" },
	{ "{\"return\":2,\"payload\":true}", PIPELINED_FAIL_PERMANENT,
	  "plugin failed without a reason" },
	{ "{\"return\":5,\"payload\":true}", PIPELINED_FAIL, "plugin returned 5" },
};

START_TEST(test_return_values_and_reasons)
{
	Plugin *p = open_ok(TEST_PLUGIN_FAILING, NULL);
	pipelined_result res;
	ck_assert_int_eq(run_one(p, run_cases[_i].payload, &res), run_cases[_i].result);
	ck_assert_ptr_null(res.payload);
	ck_assert_str_eq(res.error, run_cases[_i].error);
	plugin_close(p);
}
END_TEST

/* Reasons that fill result->error: NUL-terminated within it, and valid
 * UTF-8 (a reply carrying anything else would lose the reason). */
START_TEST(test_reasons_cut_to_fit)
{
	Plugin *p = open_ok(TEST_PLUGIN_FAILING, NULL);
	pipelined_result res;
	const size_t max = sizeof(res.error) - 1;

	/* No NUL anywhere: the last byte gives way. */
	char *want = repeat("x", max);
	ck_assert_int_eq(run_one(p, "{\"return\":1,\"fill\":\"x\"}", &res), PIPELINED_FAIL);
	ck_assert_str_eq(res.error, want);

	/* The same, from a plugin that also returned nonsense. */
	memcpy(want, "plugin returned 9: ", strlen("plugin returned 9: "));
	ck_assert_int_eq(run_one(p, "{\"return\":9,\"fill\":\"x\"}", &res), PIPELINED_FAIL);
	ck_assert_str_eq(res.error, want);
	free(want);

	/* Bytes that start no valid character (here 0xc3 after 0xc3). */
	want = repeat("?", max);
	ck_assert_int_eq(run_one(p, "{\"return\":1,\"fill\":\"\\u00e9\"}", &res), PIPELINED_FAIL);
	ck_assert_str_eq(res.error, want);
	free(want);

	/* 256 two-byte characters: the buffer holds 255 and a half, and the
	 * half must not survive as a broken character. */
	char *e = repeat("\u00e9", 256);
	char *payload = malloc(strlen(e) + 64);
	sprintf(payload, "{\"return\":1,\"reason\":\"%s\"}", e);
	ck_assert_int_eq(run_one(p, payload, &res), PIPELINED_FAIL);
	e[255 * 2] = '?';
	e[255 * 2 + 1] = '\0';
	ck_assert_str_eq(res.error, e);
	free(payload);
	free(e);
	plugin_close(p);
}
END_TEST

/* The reason's bytes, one by one: a valid UTF-8 character stays, each byte
 * of anything else (RFC 3629: no overlong forms, surrogates or code points
 * past U+10FFFF; no control characters) becomes '?'. */
static const struct {
	const char *bytes; /* JSON array */
	const char *error;
} utf8_cases[] = {
	{ "[65,195,169,66]", "A\u00e9B" },
	{ "[224,160,128]", "\u0800" },
	{ "[237,159,191]", "\ud7ff" },
	{ "[240,144,128,128]", "\U00010000" },
	{ "[244,143,191,191]", "\U0010ffff" },
	{ "[192,128]", "??" },           /* overlong NUL */
	{ "[193,191]", "??" },           /* overlong */
	{ "[224,159,191]", "???" },      /* overlong */
	{ "[237,160,128]", "???" },      /* surrogate */
	{ "[240,143,191,191]", "????" }, /* overlong */
	{ "[244,144,128,128]", "????" }, /* past U+10FFFF */
	{ "[245,128,128,128]", "????" },
	{ "[255,254]", "??" },
	{ "[65,128,66]", "A?B" },         /* lone continuation byte */
	{ "[226,130]", "??" },            /* cut short by the end */
	{ "[226,130,65]", "??A" },        /* cut short by an ASCII byte */
	{ "[27,91,51,49,109]", "?[31m" }, /* a terminal escape */
};

START_TEST(test_reason_utf8)
{
	Plugin *p = open_ok(TEST_PLUGIN_FAILING, NULL);
	pipelined_result res;
	char payload[128];
	snprintf(payload, sizeof(payload), "{\"return\":1,\"bytes\":%s}", utf8_cases[_i].bytes);
	ck_assert_int_eq(run_one(p, payload, &res), PIPELINED_FAIL);
	ck_assert_str_eq(res.error, utf8_cases[_i].error);
	plugin_close(p);
}
END_TEST

/* A successful run's payload: kept if it is a JSON object as a client could
 * submit it, otherwise dropped and the job failed for good. */
static const struct {
	const char *payload;
	const char *error; /* NULL: accepted; ending in ": ": jansson's reason follows */
} payload_cases[] = {
	{ "{}", NULL },
	{ "{\"a\":[1,{\"b\":null}],\"c\":\"\u00e9\"}", NULL },
	{ " {\"a\":1} ", NULL },
	{ "[1,2]", "plugin returned a payload that is not a JSON object" },
	{ "\"text\"", "plugin returned a payload that is not a JSON object" },
	{ "1", "plugin returned a payload that is not a JSON object" },
	{ "null", "plugin returned a payload that is not a JSON object" },
	{ "", "plugin returned a payload that is not a JSON object: " },
	{ "{", "plugin returned a payload that is not a JSON object: " },
	{ "{\"a\":1} x", "plugin returned a payload that is not a JSON object: " },
	{ "{\"a\":1}{}", "plugin returned a payload that is not a JSON object: " },
	{ "{\"a\":1,\"a\":2}", "plugin returned a payload that is not a JSON object: " },
	{ "{\"a\":\"\\u0000\"}", "plugin returned a payload that is not a JSON object: " },
	{ "{'a':1}", "plugin returned a payload that is not a JSON object: " },
};

START_TEST(test_payload_checked)
{
	Plugin *p = open_ok(TEST_PLUGIN_ECHO, NULL);
	pipelined_result res;
	const char *error = payload_cases[_i].error;
	int r = run_one(p, payload_cases[_i].payload, &res);
	if (!error) {
		ck_assert_int_eq(r, PIPELINED_OK);
		ck_assert_str_eq(res.payload, payload_cases[_i].payload);
		ck_assert_str_eq(res.error, "");
		free(res.payload);
	} else {
		ck_assert_int_eq(r, PIPELINED_FAIL_PERMANENT);
		ck_assert_ptr_null(res.payload);
		size_t n = strlen(error);
		if (error[n - 1] == ' ') {
			ck_assert_msg(strncmp(res.error, error, n) == 0 && strlen(res.error) > n,
			              "%s", res.error);
		} else {
			ck_assert_str_eq(res.error, error);
		}
	}
	plugin_close(p);
}
END_TEST

/* The payload limits: a job's size (JOB_PAYLOAD_MAX) and a submitted
 * payload's depth (PROTO_PAYLOAD_DEPTH_MAX), at the limit and one past. */
START_TEST(test_payload_limits)
{
	Plugin *p = open_ok(TEST_PLUGIN_ECHO, NULL);
	pipelined_result res;
	char want[128];

	/* Depth: {"a":{"a":...{}...}} with the outer object at level 1. */
	for (unsigned depth = PROTO_PAYLOAD_DEPTH_MAX; depth <= PROTO_PAYLOAD_DEPTH_MAX + 1;
	     depth++) {
		char *s = malloc(depth * 6 + 1), *o = s;
		ck_assert_ptr_nonnull(s);
		for (unsigned i = 1; i < depth; i++)
			o += sprintf(o, "{\"a\":");
		o += sprintf(o, "{}");
		for (unsigned i = 1; i < depth; i++)
			*o++ = '}';
		*o = '\0';
		int r = run_one(p, s, &res);
		if (depth <= PROTO_PAYLOAD_DEPTH_MAX) {
			ck_assert_int_eq(r, PIPELINED_OK);
			ck_assert_str_eq(res.payload, s);
			free(res.payload);
		} else {
			ck_assert_int_eq(r, PIPELINED_FAIL_PERMANENT);
			ck_assert_ptr_null(res.payload);
			snprintf(want, sizeof(want),
			         "plugin returned a payload nested deeper than %u levels",
			         PROTO_PAYLOAD_DEPTH_MAX);
			ck_assert_str_eq(res.error, want);
		}
		free(s);
	}

	/* Size: {"a":"xxx...x"}, JOB_PAYLOAD_MAX bytes, then one more. */
	char *s = malloc(JOB_PAYLOAD_MAX + 2);
	for (size_t len = JOB_PAYLOAD_MAX; len <= JOB_PAYLOAD_MAX + 1; len++) {
		memset(s, 'x', len);
		memcpy(s, "{\"a\":\"", 6);
		memcpy(s + len - 2, "\"}", 3);
		int r = run_one(p, s, &res);
		if (len <= JOB_PAYLOAD_MAX) {
			ck_assert_int_eq(r, PIPELINED_OK);
			ck_assert_uint_eq(strlen(res.payload), len);
			free(res.payload);
		} else {
			ck_assert_int_eq(r, PIPELINED_FAIL_PERMANENT);
			ck_assert_ptr_null(res.payload);
			snprintf(want, sizeof(want),
			         "plugin returned a payload of more than %u bytes",
			         JOB_PAYLOAD_MAX);
			ck_assert_str_eq(res.error, want);
		}
	}
	free(s);
	plugin_close(p);
}
END_TEST

/* A worker whose init fails gets no state (even though the plugin wrote
 * one) and the reason. */
START_TEST(test_worker_init_fails)
{
	Plugin *p = open_ok(TEST_PLUGIN_INITFAIL, "x");
	void *state = &state;
	char err[64];
	ck_assert_int_eq(plugin_worker_init(p, &state, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_eq(state, &state);
	ck_assert_str_eq(err, "pipelined_worker_init returned -1");
	char small[4];
	ck_assert_int_eq(plugin_worker_init(p, &state, small, sizeof(small)), -EINVAL);
	ck_assert_str_eq(small, "pip");
	ck_assert_int_eq(plugin_worker_init(p, &state, NULL, 0), -EINVAL);
	plugin_close(p);
}
END_TEST

typedef void (*StatsFunction)(unsigned *inits, unsigned *finis, unsigned long *runs,
                              unsigned *wrong_thread);

static void counting_stats(unsigned *inits, unsigned *finis, unsigned long *runs,
                           unsigned *wrong_thread)
{
	void *h = dlopen(TEST_PLUGIN_COUNTING, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	ck_assert_ptr_nonnull(h);
	StatsFunction f = (StatsFunction)dlsym(h, "counting_stats");
	ck_assert_ptr_nonnull(f);
	f(inits, finis, runs, wrong_thread);
	dlclose(h);
}

/* PluginArg= reaches worker_init; an unset one arrives as "". */
START_TEST(test_arg_reaches_workers)
{
	static const struct {
		const char *arg, *payload;
	} cases[] = {
		{ NULL, "{\"arg\":\"\",\"worker\":0,\"run\":1}" },
		{ "", "{\"arg\":\"\",\"worker\":0,\"run\":1}" },
		{ "some words", "{\"arg\":\"some words\",\"worker\":0,\"run\":1}" },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		Plugin *p = open_ok(TEST_PLUGIN_COUNTING, cases[i].arg);
		pipelined_result res;
		ck_assert_int_eq(run_one(p, "{}", &res), PIPELINED_OK);
		ck_assert_str_eq(res.payload, cases[i].payload);
		free(res.payload);
		plugin_close(p); /* unloaded: its counters start again at 0 */
	}
}
END_TEST

enum { WORKERS = 4, JOBS_PER_WORKER = 1000 };

typedef struct Worker {
	pthread_t thread;
	Plugin *plugin;
	pthread_barrier_t *barrier;
	int init_result;
	int number;              /* the "worker" the plugin reported, -1 if they differed */
	unsigned ok, wrong_runs; /* runs that gave the expected payload, and the others */
} Worker;

static void *worker_main(void *arg)
{
	Worker *w = arg;
	void *state;
	char err[128];

	/* All at once: every init before any run, every state alive together. */
	pthread_barrier_wait(w->barrier);
	w->init_result = plugin_worker_init(w->plugin, &state, err, sizeof(err));
	pthread_barrier_wait(w->barrier);
	if (w->init_result < 0)
		return NULL;
	w->number = -2;
	for (unsigned i = 1; i <= JOBS_PER_WORKER; i++) {
		pipelined_job j = job("{}");
		pipelined_result res;
		int number = -1;
		unsigned run = 0;
		char tail = 0;
		if (plugin_run(w->plugin, state, &j, &res) == PIPELINED_OK && res.payload &&
		    sscanf(res.payload, "{\"arg\":\"shared\",\"worker\":%d,\"run\":%u%c", &number,
		           &run, &tail) == 3 &&
		    tail == '}' && run == i && (w->number == -2 || w->number == number)) {
			w->number = number;
			w->ok++;
		} else {
			w->wrong_runs++;
		}
		free(res.payload);
	}
	plugin_worker_fini(w->plugin, state);
	return NULL;
}

/* Four workers of one stage at once: init runs once on each, run sees that
 * worker's own state (its own count, 1 to 1000), fini once on each, on the
 * same thread as its init. TSan watches the lot. */
START_TEST(test_workers_have_their_own_state)
{
	Plugin *p = open_ok(TEST_PLUGIN_COUNTING, "shared");
	pthread_barrier_t barrier;
	Worker w[WORKERS];
	unsigned inits, finis, wrong_thread;
	unsigned long runs;

	ck_assert_int_eq(pthread_barrier_init(&barrier, NULL, WORKERS), 0);
	for (unsigned i = 0; i < WORKERS; i++) {
		w[i] = (Worker){ .plugin = p, .barrier = &barrier, .number = -1 };
		ck_assert_int_eq(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
	}
	for (unsigned i = 0; i < WORKERS; i++)
		ck_assert_int_eq(pthread_join(w[i].thread, NULL), 0);
	pthread_barrier_destroy(&barrier);

	bool seen[WORKERS] = { false };
	for (unsigned i = 0; i < WORKERS; i++) {
		ck_assert_int_eq(w[i].init_result, 0);
		ck_assert_uint_eq(w[i].ok, JOBS_PER_WORKER);
		ck_assert_uint_eq(w[i].wrong_runs, 0);
		ck_assert_int_ge(w[i].number, 0);
		ck_assert_int_lt(w[i].number, WORKERS);
		ck_assert(!seen[w[i].number]); /* each worker its own state */
		seen[w[i].number] = true;
	}
	counting_stats(&inits, &finis, &runs, &wrong_thread);
	ck_assert_uint_eq(inits, WORKERS);
	ck_assert_uint_eq(finis, WORKERS);
	ck_assert_uint_eq(runs, WORKERS * JOBS_PER_WORKER);
	ck_assert_uint_eq(wrong_thread, 0);
	plugin_close(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("plugin");
	TCase *tc = tcase("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_open_close);
	tcase_add_loop_test(tc, test_open_errors, 0, (int)ELEMENTSOF(open_errors));
	tcase_add_test(tc, test_noop_and_optional_entry_points);
	tcase_add_test(tc, test_uppercase);
	tcase_add_test(tc, test_uppercase_reuses_its_buffer);
	tcase_add_loop_test(tc, test_return_values_and_reasons, 0, (int)ELEMENTSOF(run_cases));
	tcase_add_test(tc, test_reasons_cut_to_fit);
	tcase_add_loop_test(tc, test_reason_utf8, 0, (int)ELEMENTSOF(utf8_cases));
	tcase_add_loop_test(tc, test_payload_checked, 0, (int)ELEMENTSOF(payload_cases));
	tcase_add_test(tc, test_payload_limits);
	tcase_add_test(tc, test_worker_init_fails);
	tcase_add_test(tc, test_arg_reaches_workers);
	tcase_add_test(tc, test_workers_have_their_own_state);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
