#include "rawjson.h"

#include <errno.h>
#include <string.h>

typedef struct Scan {
	const char *p, *end;
} Scan;

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(Scan *s)
{
	while (s->p < s->end && is_ws(*s->p))
		s->p++;
}

/* At '"': past the closing quote. *plain: no escape inside. */
static bool skip_string(Scan *s, bool *plain)
{
	bool pl = true;
	if (s->p >= s->end || *s->p != '"')
		return false;
	s->p++;
	while (s->p < s->end) {
		char c = *s->p++;
		if (c == '\\') {
			pl = false;
			if (s->p >= s->end)
				return false;
			s->p++;
		} else if (c == '"') {
			if (plain)
				*plain = pl;
			return true;
		}
	}
	return false;
}

/* Past one value: a string, a scalar, or a whole array or object. */
static bool skip_value(Scan *s, bool *compact, unsigned *depth)
{
	unsigned d = 0, max = 0;
	bool comp = true;

	*compact = true;
	*depth = 0;
	if (s->p >= s->end)
		return false;
	if (*s->p == '"')
		return skip_string(s, NULL);
	if (*s->p != '{' && *s->p != '[') { /* number, true, false, null */
		while (s->p < s->end && !is_ws(*s->p) && *s->p != ',' && *s->p != ']' &&
		       *s->p != '}')
			s->p++;
		return true;
	}
	while (s->p < s->end) {
		switch (*s->p) {
		case '"':
			if (!skip_string(s, NULL))
				return false;
			continue;
		case '{':
		case '[':
			if (++d > max)
				max = d;
			break;
		case '}':
		case ']':
			if (--d == 0) {
				s->p++;
				*compact = comp;
				*depth = max;
				return true;
			}
			break;
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			comp = false;
			break;
		}
		s->p++;
	}
	return false;
}

/* At an object: leaves s at the value of key name. */
static int find_key(Scan *s, const char *name)
{
	size_t nlen = strlen(name);
	skip_ws(s);
	if (s->p >= s->end || *s->p != '{')
		return -ENOENT;
	s->p++;
	for (;;) {
		skip_ws(s);
		if (s->p >= s->end)
			return -EBADMSG;
		if (*s->p == '}')
			return -ENOENT;
		const char *key = s->p + 1;
		bool plain = false, compact;
		unsigned depth;
		if (!skip_string(s, &plain))
			return -EBADMSG;
		size_t klen = (size_t)(s->p - key) - 1;
		skip_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return -EBADMSG;
		s->p++;
		skip_ws(s);
		if (plain && klen == nlen && memcmp(key, name, nlen) == 0)
			return 0;
		if (!skip_value(s, &compact, &depth))
			return -EBADMSG;
		skip_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		return s->p < s->end ? -ENOENT : -EBADMSG;
	}
}

static bool take(Scan *s, ProtoSlice *out)
{
	const char *start = s->p;
	if (!skip_value(s, &out->compact, &out->depth))
		return false;
	out->text = start;
	out->len = (size_t)(s->p - start);
	return true;
}

int proto_raw_param(const char *msg, size_t len, const char *name, bool elements, ProtoSlice *out,
                    size_t max)
{
	Scan s = { msg, msg + len };
	int r = find_key(&s, "parameters");
	if (r == 0)
		r = find_key(&s, name);
	if (r < 0)
		return r;
	if (!elements) {
		if (max < 1)
			return -E2BIG;
		return take(&s, &out[0]) ? 1 : -EBADMSG;
	}
	if (s.p >= s.end || *s.p != '[')
		return -ENOENT;
	s.p++;
	skip_ws(&s);
	if (s.p < s.end && *s.p == ']')
		return 0;
	for (size_t n = 0;;) {
		skip_ws(&s);
		if (n == max)
			return -E2BIG;
		if (!take(&s, &out[n++]))
			return -EBADMSG;
		skip_ws(&s);
		if (s.p >= s.end)
			return -EBADMSG;
		if (*s.p == ']')
			return (int)n;
		if (*s.p != ',')
			return -EBADMSG;
		s.p++;
	}
}
