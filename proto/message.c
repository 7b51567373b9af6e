#include "message.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/limits.h"

/* Length of the valid UTF-8 sequence at p (2 to 4), or 0 if there is none:
 * overlong forms, surrogates and code points past U+10FFFF are invalid, as
 * they are to jansson. */
static size_t utf8_seq_len(const unsigned char *p)
{
	size_t n;
	uint32_t cp, min;
	if (p[0] >= 0xc0 && p[0] < 0xe0) {
		n = 2;
		cp = p[0] & 0x1f;
		min = 0x80;
	} else if (p[0] >= 0xe0 && p[0] < 0xf0) {
		n = 3;
		cp = p[0] & 0x0f;
		min = 0x800;
	} else if (p[0] >= 0xf0 && p[0] < 0xf8) {
		n = 4;
		cp = p[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0; /* also stops at the NUL: it is no continuation byte */
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* Copies s into err[errlen] as one line of valid UTF-8: control bytes and
 * bytes outside a valid UTF-8 sequence become '?', and a character that does
 * not fit whole is dropped. The reason goes back to the peer inside a JSON
 * string (InvalidMessage), and jansson refuses to build a string that is not
 * valid UTF-8, so a reason quoting a key or jansson's "near '...'" must never
 * carry half a character or a newline. */
static void copy_reason(char *err, size_t errlen, const char *s)
{
	if (!err || errlen == 0)
		return;
	const unsigned char *p = (const unsigned char *)s;
	size_t o = 0;
	while (*p) {
		size_t n = *p >= 0x80 ? utf8_seq_len(p) : 1;
		if (o + (n ? n : 1) >= errlen)
			break;
		if (n == 0 || *p < 0x20 || *p == 0x7f) {
			err[o++] = '?';
			p++;
			continue;
		}
		memcpy(err + o, p, n);
		o += n;
		p += n;
	}
	err[o] = '\0';
}

/* Writes the reason and returns r, so that a check reads
 * "return fail(-EPROTO, ...)". */
__attribute__((format(printf, 4, 5))) static int fail(int r, char *err, size_t errlen,
                                                      const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	copy_reason(err, errlen, buf);
	return r;
}

bool proto_depth_ok(const char *msg, size_t len, unsigned max)
{
	size_t depth = 0;
	bool in_string = false;
	for (size_t i = 0; i < len; i++) {
		char c = msg[i];
		if (in_string) {
			if (c == '\\')
				i++; /* the escaped byte cannot end the string; \uXXXX holds no
				        quote */
			else if (c == '"')
				in_string = false;
			continue;
		}
		switch (c) {
		case '"':
			in_string = true;
			break;
		case '[':
		case '{':
			if (++depth > max)
				return false;
			break;
		case ']':
		case '}':
			/* Unbalanced closers are the parser's to refuse. */
			if (depth > 0)
				depth--;
			break;
		default:
			break;
		}
	}
	return true;
}

/* Depth, JSON, object: the checks calls and replies share. On success
 * *ret_root is a new reference. */
static int parse_object(const char *msg, size_t len, json_t **ret_root, char *err, size_t errlen)
{
	if (!proto_depth_ok(msg, len, PROTO_DEPTH_MAX))
		return fail(-ELOOP, err, errlen, "nesting deeper than %u levels", PROTO_DEPTH_MAX);

	/* No JSON_ALLOW_NUL: a "\u0000" would silently cut every string the
	 * daemon reads as a C string (method, pipeline and stage names).
	 * JSON_DECODE_ANY lets `1` or `"x"` parse, so that they are refused as
	 * "not an object" (-EPROTO) rather than as broken JSON. */
	json_error_t je;
	json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	if (!root) {
		/* jansson 2.14 reports most allocation failures while parsing
		 * as syntax errors ("invalid token"); only those that leave the
		 * error text empty can be told apart. The others come out as
		 * -EBADMSG: a wrong reason, but a clean refusal. */
		if (json_error_code(&je) == json_error_out_of_memory || je.text[0] == '\0')
			return fail(-ENOMEM, err, errlen, "out of memory parsing JSON");
		return fail(-EBADMSG, err, errlen, "invalid JSON at line %d column %d: %s", je.line,
		            je.column, je.text);
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return fail(-EPROTO, err, errlen, "message is not a JSON object");
	}
	*ret_root = root;
	return 0;
}

/* The "parameters" member as a borrowed object, added as {} when absent so
 * that it is still borrowed from root. */
static int parameters_of(json_t *root, json_t **ret, char *err, size_t errlen)
{
	json_t *p = json_object_get(root, "parameters");
	if (!p) {
		if (json_object_set_new(root, "parameters", json_object()) < 0)
			return fail(-ENOMEM, err, errlen, "out of memory");
		p = json_object_get(root, "parameters");
	} else if (!json_is_object(p)) {
		return fail(-EPROTO, err, errlen, "\"parameters\" must be an object");
	}
	*ret = p;
	return 0;
}

/* An absent flag is false. */
static int flag_of(json_t *root, const char *key, bool *ret, char *err, size_t errlen)
{
	json_t *v = json_object_get(root, key);
	if (v && !json_is_boolean(v))
		return fail(-EPROTO, err, errlen, "\"%s\" must be a boolean", key);
	*ret = json_is_true(v);
	return 0;
}

/* "iface.Name": dot-separated non-empty parts of [A-Za-z0-9], at least two,
 * the last starting with an upper-case letter. Method and error names share
 * this form. As in Varlink, the interface's parts may also hold '-', but
 * neither first nor last in a part, and the method's name may not: a call
 * to "org.example-x.Foo" must be answered InterfaceNotFound, not refused as
 * malformed. */
static bool qualified_name_ok(const char *s)
{
	const char *last = strrchr(s, '.');
	if (!last || last == s || !(last[1] >= 'A' && last[1] <= 'Z'))
		return false;
	char prev = '.';
	for (const char *p = s; *p; prev = *p++) {
		char c = *p;
		if (c == '.') {
			if (prev == '.' || prev == '-')
				return false; /* an empty part, or one ending in '-' */
		} else if (c == '-') {
			if (prev == '.' || p > last)
				return false; /* a part starting with '-', or in the method */
		} else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		             (c >= '0' && c <= '9'))) {
			return false;
		}
	}
	return true;
}

int proto_call_parse(const char *msg, size_t len, ProtoCall *ret, char *err, size_t errlen)
{
	static const char *const known[] = { "method", "parameters", "more",
		                             "oneway", "upgrade",    NULL };
	json_t *root = NULL;
	ProtoCall c = { 0 };
	bool upgrade = false;
	int r = parse_object(msg, len, &root, err, errlen);
	if (r < 0)
		return r;

	json_t *m = json_object_get(root, "method");
	if (!m) {
		r = fail(-EPROTO, err, errlen, "\"method\" is missing");
		goto out;
	}
	if (!json_is_string(m)) {
		r = fail(-EPROTO, err, errlen, "\"method\" must be a string");
		goto out;
	}
	if (!qualified_name_ok(json_string_value(m))) {
		r = fail(-EPROTO, err, errlen,
		         "\"method\" must be of the form interface.Method, not \"%s\"",
		         json_string_value(m));
		goto out;
	}
	c.raw = msg;
	c.raw_len = len;
	r = parameters_of(root, &c.parameters, err, errlen);
	if (r < 0)
		goto out;
	r = flag_of(root, "more", &c.more, err, errlen);
	if (r < 0)
		goto out;
	r = flag_of(root, "oneway", &c.oneway, err, errlen);
	if (r < 0)
		goto out;
	r = flag_of(root, "upgrade", &upgrade, err, errlen);
	if (r < 0)
		goto out;
	if (upgrade) {
		r = fail(-EPROTONOSUPPORT, err, errlen, "\"upgrade\" is not supported");
		goto out;
	}
	const char *unknown = proto_param_unknown(root, known);
	if (unknown) {
		r = fail(-EPROTO, err, errlen, "unknown key \"%s\" in call", unknown);
		goto out;
	}

	c.root = root;
	c.method = json_string_value(m);
	*ret = c;
	return 0;
out:
	json_decref(root);
	return r;
}

void proto_call_done(ProtoCall *c)
{
	json_decref(c->root);
	*c = (ProtoCall){ 0 };
}

int proto_reply_parse(const char *msg, size_t len, ProtoReply *ret, char *err, size_t errlen)
{
	json_t *root = NULL;
	ProtoReply rp = { 0 };
	int r = parse_object(msg, len, &root, err, errlen);
	if (r < 0)
		return r;

	/* Unknown keys are let through: a client should still read replies
	 * from a newer daemon. */
	json_t *e = json_object_get(root, "error");
	if (e && !json_is_string(e)) {
		r = fail(-EPROTO, err, errlen, "\"error\" must be a string");
		goto out;
	}
	r = parameters_of(root, &rp.parameters, err, errlen);
	if (r < 0)
		goto out;
	r = flag_of(root, "continues", &rp.continues, err, errlen);
	if (r < 0)
		goto out;

	rp.root = root;
	rp.error = e ? json_string_value(e) : NULL;
	*ret = rp;
	return 0;
out:
	json_decref(root);
	return r;
}

void proto_reply_done(ProtoReply *r)
{
	json_decref(r->root);
	*r = (ProtoReply){ 0 };
}

/* Encodes root (borrowed) as compact JSON plus its NUL. The size is
 * measured first, so a message over the limit costs no allocation. */
static int encode(json_t *root, char **ret, size_t *ret_len)
{
	size_t n = json_dumpb(root, NULL, 0, JSON_COMPACT);
	/* 0: jansson could not allocate its cycle-detection table, or params
	 * holds a cycle (a programmer's mistake it cannot tell apart). */
	if (n == 0)
		return -ENOMEM;
	if (n >= PROTO_MESSAGE_MAX)
		return -EMSGSIZE; /* n + 1 bytes with the NUL */
	char *buf = malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	if (json_dumpb(root, buf, n, JSON_COMPACT) != n) {
		free(buf);
		return -ENOMEM;
	}
	buf[n] = '\0';
	*ret = buf;
	*ret_len = n + 1;
	return 0;
}

/* Sets root[key] to params (borrowed), or to a new {} when params is NULL. */
static int set_params(json_t *root, json_t *params)
{
	if (!params)
		return json_object_set_new(root, "parameters", json_object()) < 0 ? -ENOMEM : 0;
	if (!json_is_object(params))
		return -EINVAL;
	return json_object_set(root, "parameters", params) < 0 ? -ENOMEM : 0;
}

int proto_build_call(const char *method, json_t *params, unsigned flags, char **ret,
                     size_t *ret_len)
{
	if (!method || !qualified_name_ok(method) ||
	    (flags & ~(PROTO_CALL_MORE | PROTO_CALL_ONEWAY)) != 0)
		return -EINVAL;
	json_t *root = json_object();
	if (!root)
		return -ENOMEM;
	int r = -ENOMEM;
	/* The name is ASCII, so json_string fails only for want of memory. */
	if (json_object_set_new(root, "method", json_string(method)) < 0)
		goto out;
	r = set_params(root, params);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	if ((flags & PROTO_CALL_MORE) && json_object_set_new(root, "more", json_true()) < 0)
		goto out;
	if ((flags & PROTO_CALL_ONEWAY) && json_object_set_new(root, "oneway", json_true()) < 0)
		goto out;
	r = encode(root, ret, ret_len);
out:
	json_decref(root);
	return r;
}

int proto_build_reply(json_t *params, bool continues, char **ret, size_t *ret_len)
{
	json_t *root = json_object();
	if (!root)
		return -ENOMEM;
	int r = set_params(root, params);
	if (r < 0)
		goto out;
	if (continues && json_object_set_new(root, "continues", json_true()) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = encode(root, ret, ret_len);
out:
	json_decref(root);
	return r;
}

int proto_build_error(const char *error, json_t *params, char **ret, size_t *ret_len)
{
	if (!error || !qualified_name_ok(error))
		return -EINVAL;
	json_t *root = json_object();
	if (!root)
		return -ENOMEM;
	int r = -ENOMEM;
	if (json_object_set_new(root, "error", json_string(error)) < 0)
		goto out;
	r = set_params(root, params);
	if (r < 0)
		goto out;
	r = encode(root, ret, ret_len);
out:
	json_decref(root);
	return r;
}

/* The value of params[name] (borrowed) in *ret, or NULL when absent or null
 * (Varlink's ?type: null and absent mean the same). Returns -EINVAL if
 * params is not an object or a required parameter is missing. */
static int param_get(json_t *params, const char *name, bool required, json_t **ret)
{
	if (!json_is_object(params) || !name)
		return -EINVAL;
	json_t *v = json_object_get(params, name);
	if (json_is_null(v))
		v = NULL;
	if (!v && required)
		return -EINVAL;
	*ret = v;
	return 0;
}

int proto_param_string(json_t *params, const char *name, bool required, const char **ret)
{
	json_t *v;
	int r = param_get(params, name, required, &v);
	if (r < 0 || !v)
		return r;
	if (!json_is_string(v))
		return -EINVAL;
	*ret = json_string_value(v);
	return 0;
}

int proto_param_int(json_t *params, const char *name, bool required, int64_t min, int64_t max,
                    int64_t *ret)
{
	json_t *v;
	int r = param_get(params, name, required, &v);
	if (r < 0 || !v)
		return r;
	if (!json_is_integer(v))
		return -EINVAL;
	/* json_int_t is long long: at least 64 bits, and jansson refuses
	 * integers it cannot hold, so nothing is lost before the bounds check. */
	json_int_t i = json_integer_value(v);
	if (i < min || i > max)
		return -EINVAL;
	*ret = (int64_t)i;
	return 0;
}

int proto_param_bool(json_t *params, const char *name, bool required, bool *ret)
{
	json_t *v;
	int r = param_get(params, name, required, &v);
	if (r < 0 || !v)
		return r;
	if (!json_is_boolean(v))
		return -EINVAL;
	*ret = json_is_true(v);
	return 0;
}

int proto_param_object(json_t *params, const char *name, bool required, json_t **ret)
{
	json_t *v;
	int r = param_get(params, name, required, &v);
	if (r < 0 || !v)
		return r;
	if (!json_is_object(v))
		return -EINVAL;
	*ret = v;
	return 0;
}

int proto_param_array(json_t *params, const char *name, bool required, json_t **ret)
{
	json_t *v;
	int r = param_get(params, name, required, &v);
	if (r < 0 || !v)
		return r;
	if (!json_is_array(v))
		return -EINVAL;
	*ret = v;
	return 0;
}

const char *proto_param_unknown(json_t *params, const char *const *known)
{
	const char *key;
	json_t *v;
	/* Keys iterate in the order the message gave them (jansson >= 2.8). */
	json_object_foreach(params, key, v)
	{
		const char *const *k = known;
		while (*k && strcmp(*k, key) != 0)
			k++;
		if (!*k)
			return key;
	}
	return NULL;
}
