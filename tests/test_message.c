/* Unit tests for proto/message.c: parsing, validating and building Varlink
 * messages, typed parameters, the compiled-in interface description.
 *
 * Parsing cases are data: tests/data/calls.txt and tests/data/replies.txt
 * (the format is described at the top of calls.txt), one Check test each. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proto/limits.h"
#include "proto/message.h"
#include "testutil.h"

#ifndef TEST_DATA_DIR
#error "TEST_DATA_DIR must name tests/data (set in tests/meson.build)"
#endif
#ifndef TEST_VARLINK_FILE
#error "TEST_VARLINK_FILE must name proto/io.pipelined.varlink (set in tests/meson.build)"
#endif

/* ---- data-driven parse cases ---- */

typedef struct Case {
	char *file;
	unsigned line;
	int expected; /* 0 or a positive errno */
	char *reason; /* NULL: not checked */
	char *text;   /* as in the file (a directive is generated at run time) */
} Case;

typedef struct CaseList {
	Case *v;
	size_t n;
} CaseList;

/* Filled by main before the suite runs; forked tests inherit them. */
static CaseList calls, replies;

static const struct {
	const char *name;
	int value;
} errnos[] = {
	{ "ok", 0 },
	{ "EBADMSG", EBADMSG },
	{ "ELOOP", ELOOP },
	{ "EPROTO", EPROTO },
	{ "EPROTONOSUPPORT", EPROTONOSUPPORT },
};

/* Reads one data file; exits on a malformed line, so a typo in the data
 * cannot turn into a case that silently checks nothing. */
static void load_cases(const char *name, CaseList *list)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", TEST_DATA_DIR, name);
	FILE *f = fopen(path, "re");
	if (!f) {
		fprintf(stderr, "%s: %m\n", path);
		exit(EXIT_FAILURE);
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	unsigned lineno = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		char *tab1 = strchr(line, '\t');
		char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
		if (!tab2) {
			fprintf(stderr, "%s:%u: expected EXPECTED<TAB>REASON<TAB>MESSAGE\n", path,
			        lineno);
			exit(EXIT_FAILURE);
		}
		*tab1 = *tab2 = '\0';
		Case c = { .file = strdup(name), .line = lineno, .expected = -1 };
		for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
			if (strcmp(line, errnos[i].name) == 0)
				c.expected = errnos[i].value;
		if (c.expected < 0) {
			fprintf(stderr, "%s:%u: unknown expectation '%s'\n", path, lineno, line);
			exit(EXIT_FAILURE);
		}
		c.reason = strcmp(tab1 + 1, "-") == 0 ? NULL : strdup(tab1 + 1);
		c.text = strdup(tab2 + 1);
		list->v = realloc(list->v, (list->n + 1) * sizeof(Case));
		if (!list->v || !c.file || !c.text) {
			fprintf(stderr, "out of memory\n");
			exit(EXIT_FAILURE);
		}
		list->v[list->n++] = c;
	}
	free(line);
	fclose(f);
}

static void append(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s);
	if (*len + n + 1 > *cap) {
		while (*len + n + 1 > *cap)
			*cap = *cap ? *cap * 2 : 256;
		*buf = realloc(*buf, *cap);
		ck_assert_ptr_nonnull(*buf);
	}
	memcpy(*buf + *len, s, n + 1);
	*len += n;
}

/* A message nesting exactly depth levels: the envelope and its parameters
 * are two, arrays under "x" the rest. With strings, every array also holds
 * a string of brackets and escapes that must not count. */
static char *nested(bool call, unsigned depth, bool strings)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	ck_assert_uint_ge(depth, 2);
	append(&buf, &len, &cap,
	       call ? "{\"method\":\"io.pipelined.Stats\",\"parameters\":{\"x\":"
	            : "{\"parameters\":{\"x\":");
	for (unsigned i = 2; i < depth; i++)
		append(&buf, &len, &cap, strings ? "[\"[{\\\"\\\\\",\"\\\\\",\"]]\"," : "[");
	append(&buf, &len, &cap, "0");
	for (unsigned i = 2; i < depth; i++)
		append(&buf, &len, &cap, "]");
	append(&buf, &len, &cap, "}}");
	return buf;
}

/* The message a case stands for, new from malloc. */
static char *case_message(const Case *c, bool call)
{
	unsigned n;
	if (sscanf(c->text, "@depth %u", &n) == 1)
		return nested(call, n, false);
	if (sscanf(c->text, "@depth-strings %u", &n) == 1)
		return nested(call, n, true);
	if (sscanf(c->text, "@open %u", &n) == 1) {
		char *s = malloc(n + 1);
		ck_assert_ptr_nonnull(s);
		memset(s, '[', n);
		s[n] = '\0';
		return s;
	}
	ck_assert_msg(c->text[0] != '@', "%s:%u: unknown directive %s", c->file, c->line, c->text);
	return strdup(c->text);
}

/* A reason is one line of valid UTF-8 (jansson must accept it as a string:
 * the daemon sends it back in InvalidMessage). */
static void check_reason(const Case *c, const char *err)
{
	ck_assert_msg(err[0] != '\0', "%s:%u: empty reason", c->file, c->line);
	ck_assert_msg(!strchr(err, '\n'), "%s:%u: reason not one line: %s", c->file, c->line, err);
	json_t *s = json_string(err);
	ck_assert_msg(s, "%s:%u: reason not UTF-8: %s", c->file, c->line, err);
	json_decref(s);
	if (c->reason)
		ck_assert_msg(strstr(err, c->reason), "%s:%u: reason '%s' lacks '%s'", c->file,
		              c->line, err, c->reason);
}

START_TEST(test_call_cases)
{
	const Case *c = &calls.v[_i];
	char *msg = case_message(c, true);
	char err[256] = "";
	ProtoCall call, untouched;
	memset(&call, 0xa5, sizeof(call));
	untouched = call;

	int r = proto_call_parse(msg, strlen(msg), &call, err, sizeof(err));
	ck_assert_msg(r == -c->expected, "%s:%u: %s: got %d (%s), expected %d", c->file, c->line,
	              c->text, r, err, -c->expected);
	if (r == 0) {
		ck_assert_ptr_nonnull(call.root);
		ck_assert_str_eq(call.method,
		                 json_string_value(json_object_get(call.root, "method")));
		ck_assert(json_is_object(call.parameters));
		ck_assert_ptr_eq(call.parameters, json_object_get(call.root, "parameters"));
		ck_assert(call.more == json_is_true(json_object_get(call.root, "more")));
		ck_assert(call.oneway == json_is_true(json_object_get(call.root, "oneway")));
		proto_call_done(&call);
		ck_assert_ptr_null(call.root);
	} else {
		check_reason(c, err);
		ck_assert_msg(memcmp(&call, &untouched, sizeof(call)) == 0,
		              "%s:%u: *ret written on failure", c->file, c->line);
	}
	free(msg);
}
END_TEST

START_TEST(test_reply_cases)
{
	const Case *c = &replies.v[_i];
	char *msg = case_message(c, false);
	char err[256] = "";
	ProtoReply rep, untouched;
	memset(&rep, 0xa5, sizeof(rep));
	untouched = rep;

	int r = proto_reply_parse(msg, strlen(msg), &rep, err, sizeof(err));
	ck_assert_msg(r == -c->expected, "%s:%u: %s: got %d (%s), expected %d", c->file, c->line,
	              c->text, r, err, -c->expected);
	if (r == 0) {
		json_t *e = json_object_get(rep.root, "error");
		if (e)
			ck_assert_str_eq(rep.error, json_string_value(e));
		else
			ck_assert_ptr_null(rep.error);
		ck_assert(json_is_object(rep.parameters));
		ck_assert_ptr_eq(rep.parameters, json_object_get(rep.root, "parameters"));
		ck_assert(rep.continues == json_is_true(json_object_get(rep.root, "continues")));
		proto_reply_done(&rep);
	} else {
		check_reason(c, err);
		ck_assert_msg(memcmp(&rep, &untouched, sizeof(rep)) == 0,
		              "%s:%u: *ret written on failure", c->file, c->line);
	}
	free(msg);
}
END_TEST

START_TEST(test_cases_loaded)
{
	/* Guards against a data file that lost its cases. */
	ck_assert_uint_ge(calls.n, 50);
	ck_assert_uint_ge(replies.n, 15);
}
END_TEST

/* ---- depth ---- */

static bool depth_ok(const char *s, unsigned max)
{
	return proto_depth_ok(s, strlen(s), max);
}

START_TEST(test_depth_at_and_past_limit)
{
	for (int strings = 0; strings <= 1; strings++) {
		char *at = nested(true, PROTO_DEPTH_MAX, strings);
		char *past = nested(true, PROTO_DEPTH_MAX + 1, strings);
		ck_assert(depth_ok(at, PROTO_DEPTH_MAX));
		ck_assert(!depth_ok(past, PROTO_DEPTH_MAX));
		ck_assert(depth_ok(past, PROTO_DEPTH_MAX + 1));
		ck_assert(!depth_ok(at, PROTO_DEPTH_MAX - 1));
		free(at);
		free(past);
	}
}
END_TEST

START_TEST(test_depth_strings_and_escapes)
{
	ck_assert(depth_ok("", 0));
	ck_assert(depth_ok("1", 0));
	ck_assert(depth_ok("\"[{\"", 0));
	ck_assert(!depth_ok("{}", 0));
	ck_assert(depth_ok("{}", 1));
	ck_assert(depth_ok("[][][]{}", 1)); /* siblings do not add up */
	ck_assert(!depth_ok("[[]]", 1));
	/* Brackets inside strings do not count, nor does an escaped quote end
	 * the string... */
	ck_assert(depth_ok("{\"a\":\"[[[[\"}", 1));
	ck_assert(depth_ok("{\"a\":\"\\\"[[[[\"}", 1));
	ck_assert(depth_ok("{\"[{\\\"\":\"\\\"]}\\\\[\"}", 1));
	/* ...but an escaped backslash does not escape the quote after it. */
	ck_assert(!depth_ok("{\"a\\\\\":[]}", 1));
	ck_assert(depth_ok("{\"a\\\\\":[]}", 2));
	ck_assert(!depth_ok("[\"\\\\\",[]]", 1));
	/* \u escapes hold no quote. */
	ck_assert(depth_ok("[\"\\u0022[\"]", 1));
	/* Closers the parser will refuse do not let depth go negative. */
	ck_assert(depth_ok("]]]][", 1));
	ck_assert(!depth_ok("]]]][[", 1));
	/* An unterminated string hides what follows: the parser refuses it. */
	ck_assert(depth_ok("[\"[[[[", 1));
	/* A trailing backslash must not read past the end. */
	ck_assert(depth_ok("[\"\\", 1));
	/* Only len bytes are looked at. */
	ck_assert(proto_depth_ok("[[", 1, 1));
	ck_assert(!proto_depth_ok("[[", 2, 1));
}
END_TEST

START_TEST(test_deep_message_is_refused_before_parsing)
{
	/* A message of PROTO_MESSAGE_MAX - 1 opening brackets: the recursive
	 * parser would need a frame per bracket, jansson's own limit would
	 * answer a different error. Checked first: ELOOP. */
	size_t n = PROTO_MESSAGE_MAX - 1;
	char *msg = malloc(n);
	ck_assert_ptr_nonnull(msg);
	memset(msg, '{', n);
	char err[128];
	ProtoCall c = { 0 };
	ProtoReply rep = { 0 };
	ck_assert_int_eq(proto_call_parse(msg, n, &c, err, sizeof(err)), -ELOOP);
	ck_assert_str_eq(err, "nesting deeper than 64 levels");
	ck_assert_int_eq(proto_reply_parse(msg, n, &rep, err, sizeof(err)), -ELOOP);
	free(msg);
}
END_TEST

/* ---- reasons ---- */

START_TEST(test_invalid_json_reason_names_line_and_column)
{
	static const char msg[] = "{\n  \"method\": \"io.pipelined.Stats\",\n  \"more\": tru\n}";
	char err[256];
	ProtoCall c = { 0 };
	ck_assert_int_eq(proto_call_parse(msg, strlen(msg), &c, err, sizeof(err)), -EBADMSG);
	ck_assert_msg(strncmp(err, "invalid JSON at line 3 column ", 30) == 0, "%s", err);
	ck_assert_msg(strstr(err, ": "), "no jansson text: %s", err);
	ck_assert_ptr_null(c.root);
}
END_TEST

START_TEST(test_reason_fits_any_buffer)
{
	/* The unknown key mixes 3- and 4-byte characters: truncated at every length,
	 * the reason stays valid UTF-8 and NUL-terminated. */
	static const char msg[] = "{\"method\":\"a.B\",\"\u20ac\U0001F600\u20ac\U0001F600\":1}";
	char full[256];
	ProtoCall c = { 0 };
	ck_assert_int_eq(proto_call_parse(msg, strlen(msg), &c, full, sizeof(full)), -EPROTO);
	ck_assert_str_eq(full, "unknown key \"\u20ac\U0001F600\u20ac\U0001F600\" in call");
	for (size_t n = 1; n <= strlen(full) + 1; n++) {
		char err[256];
		memset(err, 'x', sizeof(err));
		ck_assert_int_eq(proto_call_parse(msg, strlen(msg), &c, err, n), -EPROTO);
		ck_assert_uint_lt(strlen(err), n);
		ck_assert(strncmp(err, full, strlen(err)) == 0);
		ck_assert_uint_ge(strlen(err) + 4, n - 1); /* at most one character dropped */
		json_t *s = json_string(err);
		ck_assert_msg(s, "not UTF-8 at errlen %zu", n);
		json_decref(s);
		ck_assert_int_eq(err[n], 'x');
	}
	/* No buffer at all. */
	ck_assert_int_eq(proto_call_parse(msg, strlen(msg), &c, NULL, 0), -EPROTO);
}
END_TEST

START_TEST(test_raw_control_and_invalid_bytes)
{
	/* Bytes jansson refuses must not reach the reason raw. */
	static const char *const msgs[] = {
		"{\"method\":\"a.B\",\"parameters\":{\"s\":\"x\ny\"}}",
		"{\"method\":\"a.B\",\"parameters\":{\"s\":\"\xff\xfe\"}}",
		"{\"method\":\"a.B\",\"parameters\":{\"s\":\"\xc3\"}}",
		"{\"method\":\"a.B\",\"parameters\":{\"s\":\"\xed\xa0\x80\"}}", /* a surrogate */
		"{\"method\":\"a.B\"}\x01",
	};
	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		char err[256];
		ProtoCall c = { 0 };
		ck_assert_int_eq(proto_call_parse(msgs[i], strlen(msgs[i]), &c, err, sizeof(err)),
		                 -EBADMSG);
		ck_assert_msg(!strchr(err, '\n'), "%s", err);
		json_t *s = json_string(err);
		ck_assert_msg(s, "reason %zu not UTF-8", i);
		json_decref(s);
	}
	/* A raw NUL inside the message (the framing never hands one out, but
	 * len is what counts). */
	static const char nul[] = "{\"method\":\"a.B\0\"}";
	char err[256];
	ProtoCall c = { 0 };
	ck_assert_int_eq(proto_call_parse(nul, sizeof(nul) - 1, &c, err, sizeof(err)), -EBADMSG);
}
END_TEST

/* ---- building ---- */

START_TEST(test_build_exact_bytes)
{
	char *buf;
	size_t len;
	ck_assert_int_eq(proto_build_reply(NULL, false, &buf, &len), 0);
	ck_assert_str_eq(buf, "{\"parameters\":{}}");
	ck_assert_uint_eq(len, strlen(buf) + 1);
	free(buf);

	json_t *p = json_pack("{s:i}", "id", 7);
	ck_assert_int_eq(proto_build_reply(p, true, &buf, &len), 0);
	ck_assert_str_eq(buf, "{\"parameters\":{\"id\":7},\"continues\":true}");
	ck_assert_uint_eq(len, strlen(buf) + 1);
	ck_assert_int_eq(buf[len - 1], '\0');
	free(buf);

	ck_assert_int_eq(proto_build_call("io.pipelined.GetJob", p, 0, &buf, &len), 0);
	ck_assert_str_eq(buf, "{\"method\":\"io.pipelined.GetJob\",\"parameters\":{\"id\":7}}");
	free(buf);
	ck_assert_int_eq(proto_build_call("io.pipelined.Watch", NULL,
	                                  PROTO_CALL_MORE | PROTO_CALL_ONEWAY, &buf, &len),
	                 0);
	ck_assert_str_eq(buf, "{\"method\":\"io.pipelined.Watch\",\"parameters\":{},\"more\":true,"
	                      "\"oneway\":true}");
	free(buf);

	ck_assert_int_eq(proto_build_error("io.pipelined.NoSuchJob", p, &buf, &len), 0);
	ck_assert_str_eq(buf, "{\"error\":\"io.pipelined.NoSuchJob\",\"parameters\":{\"id\":7}}");
	free(buf);
	ck_assert_int_eq(proto_build_error("io.pipelined.ShuttingDown", NULL, &buf, &len), 0);
	ck_assert_str_eq(buf, "{\"error\":\"io.pipelined.ShuttingDown\",\"parameters\":{}}");
	free(buf);

	/* params is borrowed: still ours, unchanged. */
	ck_assert_int_eq(p->refcount, 1);
	ck_assert_int_eq(json_object_size(p), 1);
	json_decref(p);
}
END_TEST

START_TEST(test_build_parse_round_trip)
{
	json_t *p = json_pack("{s:s, s:{s:[i,f,b,n,s]}, s:s}", "pipeline", "resize", "payload", "a",
	                      1, 2.5, 1, "caf\u00e9 \"[{\\", "empty", "");
	ck_assert_ptr_nonnull(p);
	static const unsigned flag_sets[] = { 0, PROTO_CALL_MORE, PROTO_CALL_ONEWAY,
		                              PROTO_CALL_MORE | PROTO_CALL_ONEWAY };
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		char *buf;
		size_t len;
		ck_assert_int_eq(
		        proto_build_call("io.pipelined.Submit", p, flag_sets[i], &buf, &len), 0);
		ck_assert_uint_eq(strlen(buf) + 1, len);
		ProtoCall c;
		char err[128];
		ck_assert_int_eq(proto_call_parse(buf, len - 1, &c, err, sizeof(err)), 0);
		ck_assert_str_eq(c.method, "io.pipelined.Submit");
		ck_assert(json_equal(c.parameters, p));
		ck_assert(c.more == !!(flag_sets[i] & PROTO_CALL_MORE));
		ck_assert(c.oneway == !!(flag_sets[i] & PROTO_CALL_ONEWAY));
		proto_call_done(&c);
		free(buf);
	}

	for (int cont = 0; cont <= 1; cont++) {
		char *buf;
		size_t len;
		ProtoReply r;
		char err[128];
		ck_assert_int_eq(proto_build_reply(p, cont, &buf, &len), 0);
		ck_assert_int_eq(proto_reply_parse(buf, len - 1, &r, err, sizeof(err)), 0);
		ck_assert_ptr_null(r.error);
		ck_assert(json_equal(r.parameters, p));
		ck_assert(r.continues == cont);
		proto_reply_done(&r);
		ck_assert_ptr_null(r.root);
		free(buf);
	}

	char *buf;
	size_t len;
	ProtoReply r;
	char err[128];
	json_t *ip = json_pack("{s:s}", "parameter", "id");
	ck_assert_int_eq(proto_build_error("org.varlink.service.InvalidParameter", ip, &buf, &len),
	                 0);
	json_decref(ip); /* borrowed by the builder, not kept */
	ck_assert_int_eq(proto_reply_parse(buf, len - 1, &r, err, sizeof(err)), 0);
	ck_assert_str_eq(r.error, "org.varlink.service.InvalidParameter");
	ck_assert_str_eq(json_string_value(json_object_get(r.parameters, "parameter")), "id");
	ck_assert(!r.continues);
	proto_reply_done(&r);
	free(buf);
	json_decref(p);
}
END_TEST

START_TEST(test_build_output_is_compact)
{
	json_t *p = json_pack("{s:{s:[i,i,{s:s}]}}", "a", "b", 1, 2, "c", "d");
	char *buf;
	size_t len;
	ck_assert_int_eq(proto_build_reply(p, true, &buf, &len), 0);
	ck_assert_ptr_null(strchr(buf, ' '));
	ck_assert_ptr_null(strchr(buf, '\n'));
	ck_assert_uint_eq(len, strlen(buf) + 1);
	free(buf);
	json_decref(p);
}
END_TEST

START_TEST(test_build_refuses_bad_arguments)
{
	char *buf = (char *)"untouched";
	size_t len = 12345;
	json_t *arr = json_array();
	ck_assert_int_eq(proto_build_call(NULL, NULL, 0, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_call("Stats", NULL, 0, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_call("io.pipelined.stats", NULL, 0, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_call("io.pipelined.Stats", arr, 0, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_call("io.pipelined.Stats", NULL, 4, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_reply(arr, false, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_error(NULL, NULL, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_error("Busy", NULL, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_build_error("io.pipelined.Busy", arr, &buf, &len), -EINVAL);
	ck_assert_str_eq(buf, "untouched");
	ck_assert_uint_eq(len, 12345);
	ck_assert_int_eq(arr->refcount, 1);
	json_decref(arr);
}
END_TEST

/* {"s": "xxx..."} with the string sized so that the message built by
 * build(), NUL included, is exactly total bytes. */
typedef int (*BuildFn)(json_t *params, char **ret, size_t *ret_len);

static int build_call_fn(json_t *p, char **ret, size_t *ret_len)
{
	return proto_build_call("io.pipelined.Submit", p, PROTO_CALL_MORE, ret, ret_len);
}
static int build_reply_fn(json_t *p, char **ret, size_t *ret_len)
{
	return proto_build_reply(p, true, ret, ret_len);
}
static int build_error_fn(json_t *p, char **ret, size_t *ret_len)
{
	return proto_build_error("io.pipelined.LimitExceeded", p, ret, ret_len);
}

static int build_sized(BuildFn build, size_t total, char **ret, size_t *ret_len)
{
	json_t *p = json_pack("{s:s}", "s", "");
	char *buf;
	size_t overhead;
	ck_assert_int_eq(build(p, &buf, &overhead), 0);
	free(buf);
	json_decref(p);

	ck_assert_uint_ge(total, overhead);
	size_t n = total - overhead;
	char *s = malloc(n + 1);
	memset(s, 'x', n);
	s[n] = '\0';
	p = json_pack("{s:s}", "s", s);
	free(s);
	int r = build(p, ret, ret_len);
	json_decref(p);
	return r;
}

START_TEST(test_build_message_limit_at_and_past)
{
	static const BuildFn builds[] = { build_call_fn, build_reply_fn, build_error_fn };
	for (size_t i = 0; i < sizeof(builds) / sizeof(builds[0]); i++) {
		char *buf = NULL;
		size_t len = 0;
		ck_assert_int_eq(build_sized(builds[i], PROTO_MESSAGE_MAX, &buf, &len), 0);
		ck_assert_uint_eq(len, PROTO_MESSAGE_MAX);
		ck_assert_int_eq(buf[len - 1], '\0');
		ck_assert_uint_eq(strlen(buf), PROTO_MESSAGE_MAX - 1);
		/* What may be sent can be read back. */
		char err[128];
		if (i == 0) {
			ProtoCall c;
			ck_assert_int_eq(proto_call_parse(buf, len - 1, &c, err, sizeof(err)), 0);
			proto_call_done(&c);
		} else {
			ProtoReply r;
			ck_assert_int_eq(proto_reply_parse(buf, len - 1, &r, err, sizeof(err)), 0);
			proto_reply_done(&r);
		}
		free(buf);

		buf = (char *)"untouched";
		len = 1;
		ck_assert_int_eq(build_sized(builds[i], PROTO_MESSAGE_MAX + 1, &buf, &len),
		                 -EMSGSIZE);
		ck_assert_str_eq(buf, "untouched");
		ck_assert_uint_eq(len, 1);
	}
}
END_TEST

/* ---- parameters ---- */

static json_t *sample_params(void)
{
	json_t *p = json_pack("{s:s, s:I, s:I, s:I, s:f, s:f, s:b, s:b, s:{}, s:[], s:n, s:s}",
	                      "str", "hello", "int", (json_int_t)42, "big", (json_int_t)INT64_MAX,
	                      "neg", (json_int_t)INT64_MIN, "real", 1.5, "whole_real", 3.0, "yes",
	                      1, "no", 0, "obj", "arr", "nil", "num_str", "7");
	ck_assert_ptr_nonnull(p);
	return p;
}

START_TEST(test_param_string)
{
	json_t *p = sample_params();
	const char *s = "untouched";
	ck_assert_int_eq(proto_param_string(p, "str", true, &s), 0);
	ck_assert_str_eq(s, "hello");
	ck_assert_ptr_eq(s, json_string_value(json_object_get(p, "str"))); /* borrowed */
	s = "untouched";
	ck_assert_int_eq(proto_param_string(p, "missing", false, &s), 0);
	ck_assert_str_eq(s, "untouched");
	ck_assert_int_eq(proto_param_string(p, "missing", true, &s), -EINVAL);
	ck_assert_int_eq(proto_param_string(p, "int", false, &s), -EINVAL);
	ck_assert_int_eq(proto_param_string(p, "obj", true, &s), -EINVAL);
	ck_assert_int_eq(proto_param_string(p, "yes", true, &s), -EINVAL);
	/* null is Varlink's "absent" for an optional (?string) parameter. */
	ck_assert_int_eq(proto_param_string(p, "nil", false, &s), 0);
	ck_assert_int_eq(proto_param_string(p, "nil", true, &s), -EINVAL);
	ck_assert_str_eq(s, "untouched");
	json_decref(p);
}
END_TEST

START_TEST(test_param_int)
{
	json_t *p = sample_params();
	int64_t v = -1;
	ck_assert_int_eq(proto_param_int(p, "int", true, 0, 100, &v), 0);
	ck_assert_int_eq(v, 42);
	/* At the bounds and one past. */
	v = -1;
	ck_assert_int_eq(proto_param_int(p, "int", true, 42, 42, &v), 0);
	ck_assert_int_eq(v, 42);
	v = -1;
	ck_assert_int_eq(proto_param_int(p, "int", true, 43, 100, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(p, "int", true, 0, 41, &v), -EINVAL);
	ck_assert_int_eq(v, -1);
	ck_assert_int_eq(proto_param_int(p, "big", true, 0, INT64_MAX, &v), 0);
	ck_assert(v == INT64_MAX);
	ck_assert_int_eq(proto_param_int(p, "big", true, 0, INT64_MAX - 1, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(p, "neg", true, INT64_MIN, 0, &v), 0);
	ck_assert(v == INT64_MIN);
	ck_assert_int_eq(proto_param_int(p, "neg", true, INT64_MIN + 1, 0, &v), -EINVAL);
	/* Reals are not integers, even whole ones; nor are strings of digits. */
	v = -1;
	ck_assert_int_eq(proto_param_int(p, "real", false, INT64_MIN, INT64_MAX, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(p, "whole_real", false, INT64_MIN, INT64_MAX, &v),
	                 -EINVAL);
	ck_assert_int_eq(proto_param_int(p, "num_str", false, INT64_MIN, INT64_MAX, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(p, "yes", false, INT64_MIN, INT64_MAX, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(p, "missing", false, 0, 1, &v), 0);
	ck_assert_int_eq(proto_param_int(p, "missing", true, 0, 1, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(p, "nil", false, 0, 1, &v), 0);
	ck_assert_int_eq(v, -1);
	json_decref(p);

	/* Integers as they arrive on the wire. */
	static const char msg[] = "{\"method\":\"a.B\",\"parameters\":{\"a\":1024,\"b\":1025,"
	                          "\"c\":1,\"d\":0,\"e\":1e3,\"f\":-0}}";
	ProtoCall c;
	char err[128];
	ck_assert_int_eq(proto_call_parse(msg, strlen(msg), &c, err, sizeof(err)), 0);
	ck_assert_int_eq(proto_param_int(c.parameters, "a", true, 1, 1024, &v), 0);
	ck_assert_int_eq(proto_param_int(c.parameters, "b", true, 1, 1024, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(c.parameters, "c", true, 1, 1024, &v), 0);
	ck_assert_int_eq(proto_param_int(c.parameters, "d", true, 1, 1024, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(c.parameters, "e", true, 1, 1024, &v), -EINVAL);
	ck_assert_int_eq(proto_param_int(c.parameters, "f", true, 0, 0, &v), 0);
	ck_assert_int_eq(v, 0);
	proto_call_done(&c);
}
END_TEST

START_TEST(test_param_bool)
{
	json_t *p = sample_params();
	bool b = false;
	ck_assert_int_eq(proto_param_bool(p, "yes", true, &b), 0);
	ck_assert(b);
	ck_assert_int_eq(proto_param_bool(p, "no", true, &b), 0);
	ck_assert(!b);
	b = true;
	ck_assert_int_eq(proto_param_bool(p, "missing", false, &b), 0);
	ck_assert(b);
	ck_assert_int_eq(proto_param_bool(p, "missing", true, &b), -EINVAL);
	ck_assert_int_eq(proto_param_bool(p, "int", true, &b), -EINVAL);
	ck_assert_int_eq(proto_param_bool(p, "str", true, &b), -EINVAL);
	ck_assert_int_eq(proto_param_bool(p, "nil", true, &b), -EINVAL);
	ck_assert(b);
	json_decref(p);
}
END_TEST

START_TEST(test_param_object_and_array)
{
	json_t *p = sample_params();
	json_t *v = NULL;
	ck_assert_int_eq(proto_param_object(p, "obj", true, &v), 0);
	ck_assert_ptr_eq(v, json_object_get(p, "obj"));
	ck_assert_int_eq(v->refcount, 1); /* borrowed */
	v = NULL;
	ck_assert_int_eq(proto_param_object(p, "arr", true, &v), -EINVAL);
	ck_assert_int_eq(proto_param_object(p, "str", true, &v), -EINVAL);
	ck_assert_int_eq(proto_param_object(p, "missing", true, &v), -EINVAL);
	ck_assert_int_eq(proto_param_object(p, "missing", false, &v), 0);
	ck_assert_int_eq(proto_param_object(p, "nil", false, &v), 0);
	ck_assert_ptr_null(v);

	ck_assert_int_eq(proto_param_array(p, "arr", true, &v), 0);
	ck_assert_ptr_eq(v, json_object_get(p, "arr"));
	v = NULL;
	ck_assert_int_eq(proto_param_array(p, "obj", true, &v), -EINVAL);
	ck_assert_int_eq(proto_param_array(p, "str", false, &v), -EINVAL);
	ck_assert_int_eq(proto_param_array(p, "missing", true, &v), -EINVAL);
	ck_assert_int_eq(proto_param_array(p, "missing", false, &v), 0);
	ck_assert_ptr_null(v);
	json_decref(p);
}
END_TEST

START_TEST(test_param_not_an_object)
{
	json_t *arr = json_array();
	const char *s = NULL;
	ck_assert_int_eq(proto_param_string(arr, "x", false, &s), -EINVAL);
	ck_assert_int_eq(proto_param_string(NULL, "x", false, &s), -EINVAL);
	static const char *const known[] = { NULL };
	ck_assert_ptr_null(proto_param_unknown(arr, known));
	json_decref(arr);
}
END_TEST

START_TEST(test_param_unknown)
{
	static const char *const submit[] = { "pipeline", "payload", "nowait", NULL };
	static const char *const none[] = { NULL };
	json_t *p = json_object();
	ck_assert_ptr_null(proto_param_unknown(p, submit));
	ck_assert_ptr_null(proto_param_unknown(p, none));
	json_object_set_new(p, "pipeline", json_string("x"));
	json_object_set_new(p, "payload", json_object());
	ck_assert_ptr_null(proto_param_unknown(p, submit));
	ck_assert_str_eq(proto_param_unknown(p, none), "pipeline");
	/* The first unknown key in message order; close misspellings count. */
	json_object_set_new(p, "no_wait", json_true());
	json_object_set_new(p, "Payload", json_true());
	ck_assert_str_eq(proto_param_unknown(p, submit), "no_wait");
	json_decref(p);

	static const char msg[] = "{\"method\":\"io.pipelined.Submit\",\"parameters\":"
	                          "{\"pipeline\":\"p\",\"payloads\":[],\"payload\":{},\"z\":1}}";
	ProtoCall c;
	char err[128];
	ck_assert_int_eq(proto_call_parse(msg, strlen(msg), &c, err, sizeof(err)), 0);
	ck_assert_str_eq(proto_param_unknown(c.parameters, submit), "payloads");
	proto_call_done(&c);
}
END_TEST

/* ---- the interface description ---- */

START_TEST(test_interface_description)
{
	const char *d = proto_interface_description;
	ck_assert(strncmp(d, "# The control interface of pipelined", 36) == 0);
	ck_assert_ptr_nonnull(strstr(d, "\ninterface io.pipelined\n"));
	ck_assert_ptr_nonnull(strstr(d, "method Submit("));
	ck_assert_ptr_nonnull(strstr(d, "error ConfigInvalid ("));

	/* Byte for byte the file in the source tree: the escaping lost nothing. */
	FILE *f = fopen(TEST_VARLINK_FILE, "re");
	ck_assert_msg(f, "%s: %m", TEST_VARLINK_FILE);
	static char file[64 * 1024];
	size_t n = fread(file, 1, sizeof(file) - 1, f);
	ck_assert(feof(f));
	fclose(f);
	file[n] = '\0';
	ck_assert_uint_eq(strlen(d), n);
	ck_assert_str_eq(d, file);
}
END_TEST

START_TEST(test_call_done_accepts_zeroed)
{
	ProtoCall c = { 0 };
	proto_call_done(&c);
	ProtoReply r = { 0 };
	proto_reply_done(&r);
	ck_assert_ptr_null(c.root);
	ck_assert_ptr_null(r.root);
}
END_TEST

/* ---- allocation failures ---- */

/* jansson's allocations fail from the Nth on (0: never). */
static unsigned alloc_fail_at, alloc_count;

static void *failing_malloc(size_t n)
{
	if (alloc_fail_at && ++alloc_count >= alloc_fail_at)
		return NULL;
	return malloc(n);
}

START_TEST(test_allocation_failures)
{
	static const char msg[] =
	        "{\"method\":\"io.pipelined.Submit\",\"more\":true,"
	        "\"parameters\":{\"pipeline\":\"p\",\"payload\":{\"a\":[1,\"x\"]}}}";
	static const char nop[] = "{\"method\":\"io.pipelined.Stats\"}"; /* {} is added */
	json_set_alloc_funcs(failing_malloc, free);
	json_t *p = json_pack("{s:s}", "pipeline", "p");
	bool done[5] = { false };
	/* Fail the Nth allocation for N = 1, 2, ... until every operation
	 * has succeeded once: each fails cleanly (ASan checks for leaks). */
	for (unsigned n = 1; n < 1000; n++) {
		char err[256];
		ProtoCall c;
		ProtoReply rep;
		char *buf;
		size_t len;
		int r[5];
		alloc_count = 0, alloc_fail_at = n;
		r[0] = proto_call_parse(msg, strlen(msg), &c, err, sizeof(err));
		if (r[0] == 0)
			proto_call_done(&c);
		alloc_count = 0;
		r[1] = proto_call_parse(nop, strlen(nop), &c, err, sizeof(err));
		if (r[1] == 0)
			proto_call_done(&c);
		alloc_count = 0;
		r[2] = proto_reply_parse("{\"error\":\"a.B\"}", 15, &rep, err, sizeof(err));
		if (r[2] == 0)
			proto_reply_done(&rep);
		alloc_count = 0;
		r[3] = proto_build_call("io.pipelined.Submit", p, PROTO_CALL_MORE, &buf, &len);
		if (r[3] == 0)
			free(buf);
		alloc_count = 0;
		r[4] = proto_build_error("io.pipelined.Busy", NULL, &buf, &len);
		if (r[4] == 0)
			free(buf);
		alloc_fail_at = 0;
		if (n == 1) /* jansson's first allocation: it says nothing, so ENOMEM */
			ck_assert_int_eq(r[0], -ENOMEM);
		bool all = true;
		for (int i = 0; i < 5; i++) {
			/* jansson reports most allocation failures in its parser as
			 * syntax errors: parsing may answer -EBADMSG, building not. */
			ck_assert_msg(r[i] == 0 || r[i] == -ENOMEM || (i <= 2 && r[i] == -EBADMSG),
			              "op %d, alloc %u: %d", i, n, r[i]);
			done[i] |= r[i] == 0;
			all &= done[i];
		}
		if (all)
			break;
	}
	for (int i = 0; i < 5; i++)
		ck_assert_msg(done[i], "op %d never succeeded", i);
	json_decref(p);
}
END_TEST

int main(void)
{
	load_cases("calls.txt", &calls);
	load_cases("replies.txt", &replies);

	Suite *s = suite_create("message");
	TCase *tc = tcase("data");
	tcase_add_test(tc, test_cases_loaded);
	tcase_add_loop_test(tc, test_call_cases, 0, (int)calls.n);
	tcase_add_loop_test(tc, test_reply_cases, 0, (int)replies.n);
	suite_add_tcase(s, tc);

	tc = tcase("depth");
	tcase_add_test(tc, test_depth_at_and_past_limit);
	tcase_add_test(tc, test_depth_strings_and_escapes);
	tcase_add_test(tc, test_deep_message_is_refused_before_parsing);
	suite_add_tcase(s, tc);

	tc = tcase("reasons");
	tcase_add_test(tc, test_invalid_json_reason_names_line_and_column);
	tcase_add_test(tc, test_reason_fits_any_buffer);
	tcase_add_test(tc, test_raw_control_and_invalid_bytes);
	suite_add_tcase(s, tc);

	tc = tcase("build");
	tcase_add_test(tc, test_build_exact_bytes);
	tcase_add_test(tc, test_build_parse_round_trip);
	tcase_add_test(tc, test_build_output_is_compact);
	tcase_add_test(tc, test_build_refuses_bad_arguments);
	tcase_add_test(tc, test_build_message_limit_at_and_past);
	suite_add_tcase(s, tc);

	tc = tcase("params");
	tcase_add_test(tc, test_param_string);
	tcase_add_test(tc, test_param_int);
	tcase_add_test(tc, test_param_bool);
	tcase_add_test(tc, test_param_object_and_array);
	tcase_add_test(tc, test_param_not_an_object);
	tcase_add_test(tc, test_param_unknown);
	suite_add_tcase(s, tc);

	tc = tcase("misc");
	tcase_add_test(tc, test_interface_description);
	tcase_add_test(tc, test_call_done_accepts_zeroed);
	tcase_add_test(tc, test_allocation_failures);
	suite_add_tcase(s, tc);

	return run_suite(s);
}
