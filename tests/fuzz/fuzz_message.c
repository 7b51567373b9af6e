/* Fuzz target: the message validator (proto/message.c, proto/rawjson.c).
 *
 * The input is one message as the frame decoder hands it out (without its
 * NUL), parsed as a call (the daemon's side) and as a reply (the client's).
 * What is checked, besides the sanitizers' memory and UB checks:
 *   - proto_depth_ok agrees with the depth of the tree jansson parses: true
 *     at that depth, false one below; a call or reply deeper than
 *     PROTO_DEPTH_MAX is refused with -ELOOP, one within it never is, and
 *     text jansson refuses is never accepted.
 *   - A refused message gets a known -errno, *ret untouched and a reason
 *     that fits its buffer (small ones included) and is one line of valid
 *     UTF-8 (the daemon sends it back inside a JSON string).
 *   - A parsed call's method is a valid name (checked by a second,
 *     independent implementation of the rule, which must also agree with
 *     proto_build_call and proto_build_error on any name in the input); its
 *     parameters are an object; it has no unknown keys; no string in it
 *     holds a NUL (the daemon reads them as C strings).
 *   - Parse, build, parse gives the same call or reply back.
 *   - proto_raw_param finds, for each parameter of a parsed call, text that
 *     parses to the same value, with the right depth and compactness (the
 *     daemon stores a compact payload's text as the job's payload and
 *     checks its depth limit on that depth); in a call proto built, each
 *     plainly written parameter is found, as its exact compact text; on
 *     any other text it stays within the message.
 *   - The typed parameter readers accept exactly the values of their type
 *     (and range), as the daemon's dispatch uses them. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "proto/limits.h"
#include "proto/message.h"
#include "proto/rawjson.h"

/* Arrays and objects are one level each, scalars none. */
static unsigned tree_depth(json_t *v)
{
	unsigned max = 0;
	if (json_is_object(v)) {
		const char *k;
		json_t *c;
		json_object_foreach(v, k, c)
		{
			unsigned d = tree_depth(c);
			if (d > max)
				max = d;
		}
		return max + 1;
	}
	if (json_is_array(v)) {
		size_t i;
		json_t *c;
		json_array_foreach(v, i, c)
		{
			unsigned d = tree_depth(c);
			if (d > max)
				max = d;
		}
		return max + 1;
	}
	return 0;
}

/* No string or key holds a NUL: strlen sees all of it. */
static void check_no_nul(json_t *v)
{
	const char *k;
	json_t *c;
	size_t i;
	if (json_is_string(v))
		FUZZ_CHECK(strlen(json_string_value(v)) == json_string_length(v));
	json_object_foreach(v, k, c)
	{
		check_no_nul(c);
	}
	json_array_foreach(v, i, c)
	{
		check_no_nul(c);
	}
}

/* The name rule of PROTOCOL.md, written apart from message.c's: at least
 * two dot-separated non-empty parts of [A-Za-z0-9], the last one (the
 * method or error) starting with an upper-case letter; the other parts (the
 * interface) may also hold '-', but not first or last in a part. */
static bool ref_name_ok(const char *s)
{
	size_t parts = 0, part_len = 0;
	char part_first = 0, prev = 0;
	bool part_dash = false;
	for (const char *p = s;; p++) {
		if (*p == '.' || *p == '\0') {
			if (part_len == 0 || prev == '-')
				return false;
			parts++;
			if (*p == '\0')
				break;
			part_len = 0;
			part_dash = false;
			continue;
		}
		bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		             (*p >= '0' && *p <= '9');
		if (!alnum && *p != '-')
			return false;
		if (*p == '-' && part_len == 0)
			return false; /* a part starting with '-' */
		if (*p == '-')
			part_dash = true;
		if (part_len++ == 0)
			part_first = *p;
		prev = *p;
	}
	/* part_dash, part_first: of the last part, the method's */
	return parts >= 2 && !part_dash && part_first >= 'A' && part_first <= 'Z';
}

/* proto_build_call and proto_build_error refuse exactly the names the
 * reference refuses. */
static void check_name(json_t *name)
{
	const char *s = json_string_value(name);
	if (!s)
		return;
	char *buf = NULL;
	size_t len = 0;
	bool ok = ref_name_ok(s);
	int r = proto_build_call(s, NULL, 0, &buf, &len);
	FUZZ_CHECK(ok ? r == 0 : r == -EINVAL);
	free(buf);
	buf = NULL;
	r = proto_build_error(s, NULL, &buf, &len);
	FUZZ_CHECK(ok ? r == 0 : r == -EINVAL);
	free(buf);
}

/* A refusal's reason: non-empty, fits, one line of valid UTF-8. */
static void check_reason(const char *err, size_t errlen)
{
	size_t n = strnlen(err, errlen);
	FUZZ_CHECK(n < errlen);
	FUZZ_CHECK(n > 0 || errlen == 1);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char)err[i] >= 0x20 && err[i] != 0x7f);
	json_t *s = json_string(err); /* NULL if not valid UTF-8 */
	FUZZ_CHECK(s);
	json_decref(s);
}

/* Whether building again may exceed PROTO_MESSAGE_MAX: compact JSON can
 * be longer than what the peer sent (1e300 comes back as
 * 1.0000000000000001e+300), but not 32 times longer. scripts/fuzz's
 * -max_len keeps inputs far below this. */
static bool too_big_ok(size_t len)
{
	return len > PROTO_MESSAGE_MAX / 32;
}

/* A built message: its NUL last and nowhere before. */
static void check_built(const char *buf, size_t len)
{
	FUZZ_CHECK(len >= 1 && buf[len - 1] == '\0' && strlen(buf) == len - 1);
}

/* True if text[0..len) has whitespace outside its strings. */
static bool has_space(const char *text, size_t len)
{
	bool in_string = false;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			return true;
		}
	}
	return false;
}

static void check_slice(const ProtoSlice *sl, json_t *want)
{
	json_error_t je;
	json_t *got = json_loadb(sl->text, sl->len, JSON_DECODE_ANY, &je);
	FUZZ_CHECK(got);
	FUZZ_CHECK(json_equal(got, want));
	json_decref(got);
	FUZZ_CHECK(sl->depth == tree_depth(want));
	FUZZ_CHECK(sl->compact == !has_space(sl->text, sl->len));
}

/* The raw text of each parameter of a parsed call. -ENOENT is allowed (a
 * key written with escapes is not matched: the daemon then re-encodes),
 * a wrong slice or -EBADMSG on text jansson accepted never is. */
static void check_raw_params(const char *msg, size_t len, json_t *params)
{
	const char *key;
	json_t *v;
	json_object_foreach(params, key, v)
	{
		ProtoSlice one;
		int r = proto_raw_param(msg, len, key, false, &one, 1);
		FUZZ_CHECK(r == 1 || r == -ENOENT);
		if (r == 1)
			check_slice(&one, v);
		r = proto_raw_param(msg, len, key, false, &one, 0);
		FUZZ_CHECK(r == -E2BIG || r == -ENOENT);
		if (!json_is_array(v)) {
			r = proto_raw_param(msg, len, key, true, &one, 1);
			FUZZ_CHECK(r == -ENOENT);
			continue;
		}
		size_t n = json_array_size(v);
		ProtoSlice *sl = malloc((n + 1) * sizeof(*sl));
		FUZZ_CHECK(sl);
		r = proto_raw_param(msg, len, key, true, sl, n);
		FUZZ_CHECK(r == (int)n || r == -ENOENT);
		if (r == (int)n)
			for (size_t i = 0; i < n; i++)
				check_slice(&sl[i], json_array_get(v, i));
		if (n > 0) {
			r = proto_raw_param(msg, len, key, true, sl, n - 1);
			FUZZ_CHECK(r == -E2BIG || r == -ENOENT);
		}
		free(sl);
	}
	if (!json_object_get(params, "payload"))
		FUZZ_CHECK(proto_raw_param(msg, len, "payload", false, NULL, 0) == -ENOENT);
}

/* On any text, parsed or not: rawjson.h promises bounds checks, not
 * grammar, so no read outside msg[0..len) (ASan) and slices within it. */
static void check_raw_any(const char *msg, size_t len)
{
	ProtoSlice sl[4];
	for (int elements = 0; elements < 2; elements++) {
		int r = proto_raw_param(msg, len, "payloads", elements, sl, 4);
		FUZZ_CHECK(r == -ENOENT || r == -EBADMSG || r == -E2BIG || (r >= 0 && r <= 4));
		for (int i = 0; i < r; i++)
			FUZZ_CHECK(sl[i].text >= msg && sl[i].len <= len &&
			           sl[i].text + sl[i].len <= msg + len);
	}
}

/* Whether jansson writes key as it is (no quote, backslash or control
 * byte to escape). */
static bool plain_key(const char *key)
{
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		if (*p == '"' || *p == '\\' || *p < 0x20)
			return false;
	return true;
}

/* A slice of a message built by proto/: exactly the compact text of want. */
static void check_built_slice(const ProtoSlice *sl, json_t *want)
{
	char *text = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
	FUZZ_CHECK(text);
	FUZZ_CHECK(sl->compact && sl->len == strlen(text) && memcmp(sl->text, text, sl->len) == 0);
	FUZZ_CHECK(sl->depth == tree_depth(want));
	free(text);
}

/* In a call proto_build_call wrote (what pipelinectl sends), every plainly
 * written parameter is found, and is its compact text: the daemon's fast
 * path (no re-encoding) must not quietly fall back for its own client. */
static void check_raw_built(const char *msg, size_t len, json_t *params)
{
	const char *key;
	json_t *v;
	json_object_foreach(params, key, v)
	{
		if (!plain_key(key))
			continue;
		ProtoSlice one;
		FUZZ_CHECK(proto_raw_param(msg, len, key, false, &one, 1) == 1);
		check_built_slice(&one, v);
		if (!json_is_array(v))
			continue;
		size_t n = json_array_size(v);
		ProtoSlice *sl = malloc((n + 1) * sizeof(*sl));
		FUZZ_CHECK(sl);
		FUZZ_CHECK(proto_raw_param(msg, len, key, true, sl, n) == (int)n);
		for (size_t i = 0; i < n; i++)
			check_built_slice(&sl[i], json_array_get(v, i));
		free(sl);
	}
}

/* The typed readers, on every parameter, as the daemon's dispatch calls them. */
static void check_param_readers(json_t *params)
{
	static const char *const known[] = { "pipeline", "payload", "nowait", "key", NULL };
	const char *key, *unknown = NULL;
	json_t *v;
	json_object_foreach(params, key, v)
	{
		bool null = json_is_null(v);
		const char *s = NULL;
		int64_t i = -1;
		bool b = false;
		json_t *o = NULL;

		FUZZ_CHECK(proto_param_string(params, key, true, &s) ==
		           (json_is_string(v) ? 0 : -EINVAL));
		FUZZ_CHECK(proto_param_string(params, key, false, &s) ==
		           (json_is_string(v) || null ? 0 : -EINVAL));
		FUZZ_CHECK(!json_is_string(v) || s == json_string_value(v));

		bool id_ok = json_is_integer(v) && json_integer_value(v) >= 1;
		FUZZ_CHECK(proto_param_int(params, key, true, 1, INT64_MAX, &i) ==
		           (id_ok ? 0 : -EINVAL));
		FUZZ_CHECK(!id_ok || i == json_integer_value(v));
		bool ms_ok = json_is_integer(v) && json_integer_value(v) >= 0 &&
		             json_integer_value(v) <= 86400000;
		FUZZ_CHECK(proto_param_int(params, key, false, 0, 86400000, &i) ==
		           (ms_ok || null ? 0 : -EINVAL));

		FUZZ_CHECK(proto_param_bool(params, key, true, &b) ==
		           (json_is_boolean(v) ? 0 : -EINVAL));
		FUZZ_CHECK(!json_is_boolean(v) || b == json_is_true(v));
		FUZZ_CHECK(proto_param_object(params, key, true, &o) ==
		           (json_is_object(v) ? 0 : -EINVAL));
		FUZZ_CHECK(proto_param_array(params, key, true, &o) ==
		           (json_is_array(v) ? 0 : -EINVAL));

		bool is_known = false;
		for (const char *const *k = known; *k; k++)
			is_known |= strcmp(*k, key) == 0;
		if (!is_known && !unknown)
			unknown = key;
	}
	const char *got = proto_param_unknown(params, known);
	FUZZ_CHECK(got == unknown || (got && unknown && strcmp(got, unknown) == 0));
}

static void check_call(const char *msg, size_t len, const ProtoCall *c)
{
	static const char *const keys[] = { "method", "parameters", "more", "oneway", "upgrade" };
	FUZZ_CHECK(c->root && json_is_object(c->root));
	FUZZ_CHECK(ref_name_ok(c->method));
	FUZZ_CHECK(c->method == json_string_value(json_object_get(c->root, "method")));
	FUZZ_CHECK(json_is_object(c->parameters));
	FUZZ_CHECK(c->parameters == json_object_get(c->root, "parameters"));
	FUZZ_CHECK(c->more == json_is_true(json_object_get(c->root, "more")));
	FUZZ_CHECK(c->oneway == json_is_true(json_object_get(c->root, "oneway")));
	FUZZ_CHECK(!json_is_true(json_object_get(c->root, "upgrade")));
	FUZZ_CHECK(c->raw == msg && c->raw_len == len);
	const char *key;
	json_t *v;
	json_object_foreach(c->root, key, v)
	{
		bool known = false;
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			known |= strcmp(keys[i], key) == 0;
		FUZZ_CHECK(known);
	}
	FUZZ_CHECK(tree_depth(c->root) <= PROTO_DEPTH_MAX);
	check_no_nul(c->root);

	/* Round trip. */
	char *buf = NULL, err[256];
	size_t blen = 0;
	unsigned flags = (c->more ? PROTO_CALL_MORE : 0) | (c->oneway ? PROTO_CALL_ONEWAY : 0);
	int r = proto_build_call(c->method, c->parameters, flags, &buf, &blen);
	if (r == -EMSGSIZE && too_big_ok(len))
		goto raw;
	FUZZ_CHECK(r == 0);
	check_built(buf, blen);
	ProtoCall again;
	FUZZ_CHECK(proto_call_parse(buf, blen - 1, &again, err, sizeof(err)) == 0);
	FUZZ_CHECK(strcmp(again.method, c->method) == 0);
	FUZZ_CHECK(json_equal(again.parameters, c->parameters));
	FUZZ_CHECK(again.more == c->more && again.oneway == c->oneway);
	proto_call_done(&again);
	check_raw_built(buf, blen - 1, c->parameters);
	free(buf);

raw:
	check_raw_params(msg, len, c->parameters);
	check_param_readers(c->parameters);
}

static void check_reply(const ProtoReply *rp, size_t len)
{
	json_t *e = json_object_get(rp->root, "error");
	FUZZ_CHECK(rp->error == (e ? json_string_value(e) : NULL));
	FUZZ_CHECK(json_is_object(rp->parameters));
	FUZZ_CHECK(rp->parameters == json_object_get(rp->root, "parameters"));
	FUZZ_CHECK(rp->continues == json_is_true(json_object_get(rp->root, "continues")));
	FUZZ_CHECK(tree_depth(rp->root) <= PROTO_DEPTH_MAX);
	check_no_nul(rp->root);

	char *buf = NULL, err[256];
	size_t blen = 0;
	int r = rp->error ? proto_build_error(rp->error, rp->parameters, &buf, &blen)
	                  : proto_build_reply(rp->parameters, rp->continues, &buf, &blen);
	if (rp->error && !ref_name_ok(rp->error)) {
		/* Replies are read leniently, but never built with a bad name. */
		FUZZ_CHECK(r == -EINVAL);
		return;
	}
	if (r == -EMSGSIZE && too_big_ok(len))
		return;
	FUZZ_CHECK(r == 0);
	check_built(buf, blen);
	ProtoReply again;
	FUZZ_CHECK(proto_reply_parse(buf, blen - 1, &again, err, sizeof(err)) == 0);
	FUZZ_CHECK(rp->error ? again.error && strcmp(again.error, rp->error) == 0 : !again.error);
	FUZZ_CHECK(json_equal(again.parameters, rp->parameters));
	FUZZ_CHECK(again.continues == (rp->error ? false : rp->continues));
	proto_reply_done(&again);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool seeded;
	if (!seeded) {
		json_object_seed(1); /* the same hash order in every run */
		seeded = true;
	}
	const char *msg = (const char *)data;

	/* jansson's own reading of the text, for reference. */
	json_error_t je;
	json_t *ref = json_loadb(msg, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	unsigned depth = ref ? tree_depth(ref) : 0;
	if (ref) {
		FUZZ_CHECK(proto_depth_ok(msg, size, depth));
		FUZZ_CHECK(depth == 0 || !proto_depth_ok(msg, size, depth - 1));
		check_name(json_object_get(ref, "method"));
		check_name(json_object_get(ref, "error"));
	}

	check_raw_any(msg, size);

	/* As a call. */
	char err[256];
	ProtoCall call, untouched;
	memset(&call, 0xa5, sizeof(call));
	untouched = call;
	int r = proto_call_parse(msg, size, &call, err, sizeof(err));
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -ELOOP || r == -EPROTO ||
	           r == -EPROTONOSUPPORT || r == -ENOMEM);
	if (ref && depth <= PROTO_DEPTH_MAX)
		FUZZ_CHECK(r != -EBADMSG && r != -ELOOP && (json_is_object(ref) || r == -EPROTO));
	else if (ref)
		FUZZ_CHECK(r == -ELOOP);
	else
		FUZZ_CHECK(r == -EBADMSG || r == -ELOOP || r == -ENOMEM);
	if (r == 0) {
		check_call(msg, size, &call);
		proto_call_done(&call);
	} else {
		FUZZ_CHECK(memcmp(&call, &untouched, sizeof(call)) == 0);
		check_reason(err, sizeof(err));
	}

	/* As a reply, with a reason buffer of 1 to 64 bytes: cut short. */
	ProtoReply reply, untouched_reply;
	size_t errlen = 1 + size % 64;
	memset(&reply, 0xa5, sizeof(reply));
	untouched_reply = reply;
	r = proto_reply_parse(msg, size, &reply, err, errlen);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -ELOOP || r == -EPROTO || r == -ENOMEM);
	if (ref && depth <= PROTO_DEPTH_MAX)
		FUZZ_CHECK(r != -EBADMSG && r != -ELOOP && (json_is_object(ref) || r == -EPROTO));
	else if (ref)
		FUZZ_CHECK(r == -ELOOP);
	if (r == 0) {
		check_reply(&reply, size);
		proto_reply_done(&reply);
	} else {
		FUZZ_CHECK(memcmp(&reply, &untouched_reply, sizeof(reply)) == 0);
		check_reason(err, errlen);
	}

	json_decref(ref);
	return 0;
}
