/* exectemplate.c — Exec= lines: words and placeholders at parse time, one
 * job's argv at expand time.
 *
 * Parsing is one pass over the line. Each word becomes a run of parts, a part
 * being either literal bytes or a field name; adjacent literal bytes form one
 * part, so a word without placeholders has at most one part (none when it is
 * the empty word ""). Braces are recognised in every quoting state, because
 * quoting only groups blanks: '{x}' is a placeholder like {x}, and {{ }} are
 * the one way to write a literal brace (a backslash before a brace is refused
 * rather than given a second meaning).
 *
 * Expansion concatenates each word's parts with the payload's values and
 * never splits the result, so a value is always inside exactly one argument.
 * A template without placeholders is expanded without reading the payload.
 *
 * The argv is one allocation: the pointer array, then the strings. */
#include "exectemplate.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest expanded command line, in bytes: every argument with its NUL,
 * argv[0] included. Linux refuses a single argument of 128 KiB or more
 * (MAX_ARG_STRLEN) and the whole argv plus environment beyond a quarter of
 * the stack limit (2 MiB by default); 128 KiB in total stays clear of both,
 * so execve never fails with E2BIG for a job whose template parsed. A value
 * of the 64 KiB a payload may hold, used in a few words, already reaches it. */
#define EXEC_ARGV_BYTES_MAX      (128u * 1024u)
#define EXEC_ARGV_BYTES_MAX_TEXT "128 KiB"

/* Longest field name in a placeholder; names are [A-Za-z0-9_-]. */
#define EXEC_FIELD_NAME_MAX 64u

/* PATH when the daemon's environment has none (glibc's execvp default
 * without the current directory). */
#define EXEC_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

typedef struct Part {
	uint32_t off; /* in arena: the literal bytes or the field name, NUL-terminated */
	uint32_t len; /* without the NUL */
	bool field;
} Part;

typedef struct Word {
	uint32_t first, n; /* its parts: parts[first .. first + n) */
	/* Starts with a placeholder (no literal byte before it) and no literal
	 * "--" word comes before it: its expansion must not start with '-'. */
	bool option_check;
} Word;

struct ExecTemplate {
	char *program;  /* argv[0]: an absolute path to an executable regular file */
	Word *words;    /* the arguments after the program, n_words of them */
	size_t n_words; /* < EXEC_WORDS_MAX */
	Part *parts;    /* of every word, the program's included */
	size_t n_parts;
	char *arena;          /* text of the parts; arena[0] is a NUL */
	size_t n_fields;      /* parts that are placeholders */
	size_t literal_bytes; /* the argv's size without values: literals and NULs */
	char *text;           /* for exec_template_text */
};

/* Writes the reason (when the caller gave room for one) and returns r. */
__attribute__((format(printf, 4, 5))) static int fail(int r, char *err, size_t errlen,
                                                      const char *fmt, ...)
{
	if (err && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* ---- parsing ---- */

/* The parse state. Bounds: every part consumes at least one byte of the
 * line, and its text is no longer than the bytes it consumed, so a line of
 * len bytes needs at most len parts and 2 * len + 1 arena bytes. */
typedef struct Parser {
	ExecTemplate *t;
	const char *line;
	size_t len;
	size_t pos; /* next byte of line */
	size_t arena_used;
	bool in_word;
	bool literal_open; /* the current word's last part is a literal being written */
	char *err;
	size_t errlen;
} Parser;

static int start_word(Parser *p)
{
	ExecTemplate *t = p->t;
	if (t->n_words == EXEC_WORDS_MAX)
		return fail(-EINVAL, p->err, p->errlen, "more than %u words (EXEC_WORDS_MAX)",
		            EXEC_WORDS_MAX);
	t->words[t->n_words++] = (Word){ .first = (uint32_t)t->n_parts };
	p->in_word = true;
	p->literal_open = false;
	return 0;
}

static void close_literal(Parser *p)
{
	if (p->literal_open) {
		p->t->arena[p->arena_used++] = '\0';
		p->literal_open = false;
	}
}

static void end_word(Parser *p)
{
	close_literal(p);
	p->in_word = false;
}

static void literal_byte(Parser *p, char c)
{
	ExecTemplate *t = p->t;
	assert(p->arena_used + 2 <= 2 * p->len + 1 && t->n_parts < p->len);
	if (!p->literal_open) {
		t->parts[t->n_parts++] = (Part){ .off = (uint32_t)p->arena_used };
		t->words[t->n_words - 1].n++;
		p->literal_open = true;
	}
	t->arena[p->arena_used++] = c;
	t->parts[t->n_parts - 1].len++;
}

/* At a brace: "{{", "}}" or "{name}". */
static int brace(Parser *p)
{
	const char *s = p->line;
	size_t i = p->pos, col = i + 1;
	char c = s[i];

	if (i + 1 < p->len && s[i + 1] == c) {
		literal_byte(p, c);
		p->pos = i + 2;
		return 0;
	}
	if (c == '}')
		return fail(
		        -EINVAL, p->err, p->errlen,
		        "bad placeholder at column %zu: a lone '}' (write }} for a literal brace)",
		        col);

	size_t j = i + 1;
	while (j < p->len && is_name_char(s[j]))
		j++;
	size_t n = j - i - 1;
	if (n == 0 || j == p->len || s[j] != '}')
		return fail(-EINVAL, p->err, p->errlen,
		            "bad placeholder at column %zu: '{' must begin {name}, a name of "
		            "A-Z a-z 0-9 _ - (write {{ for a literal brace)",
		            col);
	if (n > EXEC_FIELD_NAME_MAX)
		return fail(-EINVAL, p->err, p->errlen,
		            "bad placeholder at column %zu: the name is longer than %u bytes", col,
		            EXEC_FIELD_NAME_MAX);

	ExecTemplate *t = p->t;
	close_literal(p);
	t->parts[t->n_parts++] =
	        (Part){ .off = (uint32_t)p->arena_used, .len = (uint32_t)n, .field = true };
	t->words[t->n_words - 1].n++;
	memcpy(t->arena + p->arena_used, s + i + 1, n);
	p->arena_used += n;
	t->arena[p->arena_used++] = '\0';
	t->n_fields++;
	p->pos = j + 1;
	return 0;
}

/* Splits the line into words and parts. */
static int split(Parser *p)
{
	const char *s = p->line;
	char quote = 0; /* '"' or '\'' while inside quotes */
	size_t quote_col = 0;
	int r;

	while (p->pos < p->len) {
		char c = s[p->pos];
		if (!quote && (c == ' ' || c == '\t')) {
			if (p->in_word)
				end_word(p);
			p->pos++;
			continue;
		}
		if (!p->in_word && (r = start_word(p)) < 0)
			return r;
		if (c == '{' || c == '}') {
			if ((r = brace(p)) < 0)
				return r;
			continue;
		}
		if (quote == '\'') {
			if (c == '\'')
				quote = 0;
			else
				literal_byte(p, c);
			p->pos++;
			continue;
		}
		if (c == '\\') {
			if (p->pos + 1 == p->len)
				break; /* reported below */
			char next = s[p->pos + 1];
			if (next == '{' || next == '}')
				return fail(-EINVAL, p->err, p->errlen,
				            "a backslash cannot escape a brace (column %zu); write "
				            "{{ or }} for a literal brace",
				            p->pos + 1);
			literal_byte(p, next);
			p->pos += 2;
			continue;
		}
		if (c == '"' || (c == '\'' && !quote)) {
			if (quote) {
				quote = 0;
			} else {
				quote = c;
				quote_col = p->pos + 1;
			}
			p->pos++;
			continue;
		}
		literal_byte(p, c);
		p->pos++;
	}
	if (quote)
		return fail(-EINVAL, p->err, p->errlen, "unterminated quote (%c at column %zu)",
		            quote, quote_col);
	if (p->pos < p->len)
		return fail(-EINVAL, p->err, p->errlen,
		            "trailing backslash at the end of the line");
	if (p->in_word)
		end_word(p);
	return 0;
}

/* 0 if path names an executable regular file, else -errno (-EISDIR for a
 * directory, -EACCES for another kind of file, as execve says). */
static int check_executable(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return S_ISDIR(st.st_mode) ? -EISDIR : -EACCES;
	if (access(path, X_OK) < 0)
		return -errno;
	return 0;
}

/* Resolves the program word (name[len], no NUL inside) into a new string
 * in *ret: an absolute path is checked, a bare name is searched in PATH.
 * PATH entries that are empty or relative are skipped: the daemon never
 * runs a program found through its working directory. */
static int resolve_program(const char *name, size_t len, char **ret, char *err, size_t errlen)
{
	char ebuf[128];
	int r;

	if (len == 0 || (memchr(name, '/', len) && name[0] != '/'))
		return fail(-EINVAL, err, errlen,
		            "the program must be an absolute path or a name in PATH, not '%s'",
		            name);
	if (name[0] == '/') {
		if ((r = check_executable(name)) < 0)
			return fail(-EINVAL, err, errlen, "program '%s' cannot be run: %s", name,
			            strerror_r(-r, ebuf, sizeof(ebuf)));
		char *copy = strdup(name);
		if (!copy)
			return -ENOMEM;
		*ret = copy;
		return 0;
	}

	const char *path = getenv("PATH");
	if (!path)
		path = EXEC_DEFAULT_PATH;
	for (const char *dir = path; *dir;) {
		size_t dlen = strcspn(dir, ":");
		if (dlen > 0 && dir[0] == '/' && dlen + 1 + len < PATH_MAX) {
			char candidate[PATH_MAX];
			snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)dlen, dir, name);
			if (check_executable(candidate) == 0) {
				char *copy = strdup(candidate);
				if (!copy)
					return -ENOMEM;
				*ret = copy;
				return 0;
			}
		}
		dir += dlen;
		if (*dir == ':')
			dir++;
	}
	return fail(-EINVAL, err, errlen, "program '%s' not found in PATH (%s)", name, path);
}

/* Text of a word for exec_template_text, quoted when needed so that the text
 * parses back into the same template: braces doubled, and inside the quotes
 * '"' and '\\' escaped. */
static bool needs_quotes(const char *s)
{
	return strpbrk(s, " \t\"'\\") != NULL;
}

static char *text_literal(char *out, const char *s, bool quoted)
{
	for (; *s; s++) {
		if (*s == '{' || *s == '}')
			*out++ = *s;
		else if (quoted && (*s == '"' || *s == '\\'))
			*out++ = '\\';
		*out++ = *s;
	}
	return out;
}

static char *text_word(char *out, const ExecTemplate *t, const Word *w)
{
	const Part *parts = t->parts + w->first;
	bool quoted = w->n == 0; /* the empty word is written "" */
	for (size_t i = 0; i < w->n && !quoted; i++)
		quoted = !parts[i].field && needs_quotes(t->arena + parts[i].off);
	if (quoted)
		*out++ = '"';
	for (size_t i = 0; i < w->n; i++) {
		if (parts[i].field) {
			*out++ = '{';
			memcpy(out, t->arena + parts[i].off, parts[i].len);
			out += parts[i].len;
			*out++ = '}';
		} else
			out = text_literal(out, t->arena + parts[i].off, quoted);
	}
	if (quoted)
		*out++ = '"';
	return out;
}

static int build_text(ExecTemplate *t)
{
	/* Worst case: every byte doubled ({{ or \\"), two quotes and a blank per
	 * word, and a NUL; a field's braces fit in the doubling of its name. */
	size_t cap = 2 * strlen(t->program) + 2 + 1;
	for (size_t i = 0; i < t->n_parts; i++)
		cap += 2 * (size_t)t->parts[i].len;
	cap += 3 * t->n_words;

	char *out = t->text = malloc(cap);
	if (!out)
		return -ENOMEM;
	bool quoted = needs_quotes(t->program);
	if (quoted)
		*out++ = '"';
	out = text_literal(out, t->program, quoted);
	if (quoted)
		*out++ = '"';
	for (size_t i = 0; i < t->n_words; i++) {
		*out++ = ' ';
		out = text_word(out, t, &t->words[i]);
	}
	*out = '\0';
	assert((size_t)(out - t->text) < cap);
	return 0;
}

int exec_template_parse(const char *line, ExecTemplate **ret, char *err, size_t errlen)
{
	int r;

	assert(ret);
	size_t len = line ? strnlen(line, EXEC_LINE_MAX + 1) : 0;
	if (len > EXEC_LINE_MAX)
		return fail(-EINVAL, err, errlen,
		            "command line is longer than %u bytes (EXEC_LINE_MAX)", EXEC_LINE_MAX);
	/* Control characters would break the one-line text and logs; a config
	 * line cannot hold a newline anyway. Tab is a blank. */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return fail(-EINVAL, err, errlen, "control character 0x%02x at column %zu",
			            c, i + 1);
	}

	ExecTemplate *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->words = calloc(EXEC_WORDS_MAX, sizeof(*t->words));
	t->parts = calloc(len > 0 ? len : 1, sizeof(*t->parts));
	t->arena = calloc(2 * len + 1, 1);
	if (!t->words || !t->parts || !t->arena) {
		r = -ENOMEM;
		goto out;
	}
	t->arena[0] = '\0';

	Parser p = {
		.t = t, .line = line, .len = len, .arena_used = 1, .err = err, .errlen = errlen
	};
	if ((r = split(&p)) < 0)
		goto out;
	if (t->n_words == 0) {
		r = fail(-EINVAL, err, errlen, "empty command line");
		goto out;
	}

	/* The program: words[0] becomes t->program, the rest shift down. */
	const Word *w0 = &t->words[0];
	for (size_t i = 0; i < w0->n; i++)
		if (t->parts[w0->first + i].field) {
			r = fail(-EINVAL, err, errlen,
			         "the program cannot come from the payload (a placeholder in the "
			         "first word)");
			goto out;
		}
	const char *name = w0->n > 0 ? t->arena + t->parts[w0->first].off : "";
	if ((r = resolve_program(name, strlen(name), &t->program, err, errlen)) < 0)
		goto out;
	t->n_words--;
	memmove(t->words, t->words + 1, t->n_words * sizeof(*t->words));

	bool after_dashes = false;
	t->literal_bytes = strlen(t->program) + 1;
	for (size_t i = 0; i < t->n_words; i++) {
		Word *w = &t->words[i];
		const Part *first = &t->parts[w->first];
		w->option_check = w->n > 0 && first->field && !after_dashes;
		if (w->n == 1 && !first->field && strcmp(t->arena + first->off, "--") == 0)
			after_dashes = true;
		t->literal_bytes++;
		for (size_t j = 0; j < w->n; j++)
			if (!first[j].field)
				t->literal_bytes += first[j].len;
	}

	if ((r = build_text(t)) < 0)
		goto out;
	*ret = t;
	return 0;
out:
	exec_template_free(t);
	return r;
}

/* ---- expansion ---- */

/* One placeholder's value, as bytes. */
typedef struct Value {
	const char *s; /* into the JSON tree, num, or owned */
	size_t len;
	char *owned;  /* a real's text from json_dumps */
	char num[24]; /* an integer's text: "%lld" fits in 21 bytes */
} Value;

/* A real as the shortest JSON text (15, 16 or 17 significant digits) that
 * reads back as the same double: 0.1 is "0.1", not "0.10000000000000001". */
static char *real_text(const json_t *v)
{
	double d = json_real_value(v);
	for (int precision = 15; precision <= 17; precision++) {
		char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT |
		                                JSON_REAL_PRECISION(precision));
		if (!s || precision == 17 || strtod(s, NULL) == d)
			return s;
		free(s);
	}
	return NULL; /* not reached */
}

static int field_value(json_t *root, const char *name, Value *val, char *err, size_t errlen)
{
	json_t *v = json_object_get(root, name);
	const char *kind;

	switch (v ? json_typeof(v) : JSON_NULL) {
	case JSON_STRING:
		val->s = json_string_value(v);
		val->len = json_string_length(v);
		if (memchr(val->s, '\0', val->len))
			return fail(-EINVAL, err, errlen, "payload field '%s' contains a NUL byte",
			            name);
		return 0;
	case JSON_INTEGER:
		val->len = (size_t)snprintf(val->num, sizeof(val->num), "%" JSON_INTEGER_FORMAT,
		                            json_integer_value(v));
		val->s = val->num;
		return 0;
	case JSON_REAL:
		val->owned = real_text(v);
		if (!val->owned)
			return -ENOMEM;
		val->s = val->owned;
		val->len = strlen(val->owned);
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		val->s = json_is_true(v) ? "true" : "false";
		val->len = strlen(val->s);
		return 0;
	case JSON_NULL:
		if (!v)
			return fail(-EINVAL, err, errlen, "payload has no field '%s'", name);
		kind = "null";
		break;
	case JSON_OBJECT:
		kind = "an object";
		break;
	case JSON_ARRAY:
	default:
		kind = "an array";
		break;
	}
	return fail(-EINVAL, err, errlen,
	            "payload field '%s' is %s; only strings, numbers and booleans can be "
	            "substituted",
	            name, kind);
}

/* The argv block for total bytes of strings; pointers are set by the caller. */
static char **argv_alloc(size_t n_args, size_t total, char **ret_strings)
{
	char **argv = malloc((n_args + 1) * sizeof(char *) + total);
	if (argv)
		*ret_strings = (char *)(argv + n_args + 1);
	return argv;
}

/* A template without placeholders: its words, without looking at the payload. */
static int expand_literal(const ExecTemplate *t, char ***ret_argv)
{
	char *out;
	char **argv = argv_alloc(1 + t->n_words, t->literal_bytes, &out);
	if (!argv)
		return -ENOMEM;
	size_t n = strlen(t->program) + 1;
	argv[0] = memcpy(out, t->program, n);
	out += n;
	for (size_t i = 0; i < t->n_words; i++) {
		const Word *w = &t->words[i];
		const char *s = w->n > 0 ? t->arena + t->parts[w->first].off : t->arena;
		n = (w->n > 0 ? t->parts[w->first].len : 0) + 1;
		argv[1 + i] = memcpy(out, s, n);
		out += n;
	}
	argv[1 + t->n_words] = NULL;
	*ret_argv = argv;
	return 0;
}

int exec_template_expand(const ExecTemplate *t, const char *payload, size_t len, char ***ret_argv,
                         char *err, size_t errlen)
{
	assert(t && ret_argv);
	if (t->n_fields == 0)
		return expand_literal(t, ret_argv);

	/* Duplicate keys are refused as the protocol refuses them: parsers
	 * disagree on which one wins, and the program may read the payload too. */
	json_error_t je;
	json_t *root = json_loadb(payload, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return fail(-EINVAL, err, errlen, "payload is not a JSON object (%s)", je.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return fail(-EINVAL, err, errlen, "payload is not a JSON object");
	}

	Value *vals = calloc(t->n_fields, sizeof(*vals));
	char **argv = NULL;
	int r = 0;
	if (!vals) {
		r = -ENOMEM;
		goto out;
	}

	/* First pass: the values, the refusals and the size. */
	size_t total = t->literal_bytes, k = 0;
	for (size_t i = 0; i < t->n_words; i++) {
		const Word *w = &t->words[i];
		bool first_byte_seen = !w->option_check;
		for (size_t j = 0; j < w->n; j++) {
			const Part *part = &t->parts[w->first + j];
			const char *name = t->arena + part->off;
			size_t plen = part->len;
			const char *s = name;
			if (part->field) {
				Value *v = &vals[k++];
				if ((r = field_value(root, name, v, err, errlen)) < 0)
					goto out;
				s = v->s;
				plen = v->len;
				/* plen is at most the payload's length: no overflow. */
				total += plen;
				if (total > EXEC_ARGV_BYTES_MAX) {
					r = fail(-E2BIG, err, errlen,
					         "command line for this job is over %s",
					         EXEC_ARGV_BYTES_MAX_TEXT);
					goto out;
				}
			}
			if (first_byte_seen || plen == 0)
				continue;
			first_byte_seen = true;
			if (s[0] != '-')
				continue;
			if (part->field) {
				r = fail(-EINVAL, err, errlen,
				         "payload field '%s' starts with '-' and would be read as "
				         "an "
				         "option; put -- before it in Exec=, or write it as "
				         "--opt={%s}",
				         name, name);
			} else {
				/* {a}-x with a empty: the '-' is the template's own. */
				const char *field = t->arena + t->parts[w->first].off;
				r = fail(-EINVAL, err, errlen,
				         "payload field '%s' is empty, so argument %zu would start "
				         "with '-' and be read as an option; put -- before it in "
				         "Exec=",
				         field, i + 1);
			}
			goto out;
		}
	}
	/* Second pass: copy. */
	char *out;
	argv = argv_alloc(1 + t->n_words, total, &out);
	if (!argv) {
		r = -ENOMEM;
		goto out;
	}
	size_t n = strlen(t->program) + 1;
	argv[0] = memcpy(out, t->program, n);
	out += n;
	k = 0;
	for (size_t i = 0; i < t->n_words; i++) {
		const Word *w = &t->words[i];
		argv[1 + i] = out;
		for (size_t j = 0; j < w->n; j++) {
			const Part *part = &t->parts[w->first + j];
			if (part->field) {
				memcpy(out, vals[k].s, vals[k].len);
				out += vals[k].len;
				k++;
			} else {
				memcpy(out, t->arena + part->off, part->len);
				out += part->len;
			}
		}
		*out++ = '\0';
	}
	argv[1 + t->n_words] = NULL;
	assert((size_t)(out - (char *)(argv + t->n_words + 2)) == total);
	*ret_argv = argv;
	argv = NULL;
out:
	if (vals)
		for (size_t i = 0; i < t->n_fields; i++)
			free(vals[i].owned);
	free(vals);
	free(argv);
	json_decref(root);
	return r;
}

void exec_argv_free(char **argv)
{
	free(argv); /* one block: the pointers and the strings */
}

const char *exec_template_text(const ExecTemplate *t)
{
	return t->text;
}

int exec_template_has_fields(const ExecTemplate *t)
{
	return t->n_fields > 0;
}

void exec_template_free(ExecTemplate *t)
{
	if (!t)
		return;
	free(t->program);
	free(t->words);
	free(t->parts);
	free(t->arena);
	free(t->text);
	free(t);
}
