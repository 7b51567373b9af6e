/* Unit tests for daemon/exectemplate.c: Exec= lines parsed into templates,
 * and templates expanded with job payloads into argv. The cases are tables;
 * each valid line is also parsed back from its exec_template_text. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exectemplate.h"
#include "testutil.h"
#include "util.h"

#define WANT_MAX 8 /* longest argv in the tables, program included */

/* 64 bytes, every kind of name character: the longest field name. */
#define NAME64 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

/* The payload every parse case is expanded with. */
static const char std_payload[] =
        "{\"a\":\"A\",\"b\":\"B\",\"url\":\"http://h/p?q=1 2\","
        "\"size\":64,\"name\":\"N\",\"x-y_1\":\"ok\",\"" NAME64 "\":\"long\"}";

/* Checks that argv is exactly want (NULL-terminated). */
static void assert_argv(char **argv, const char *const *want, const char *ctx)
{
	size_t i = 0;
	for (; want[i]; i++) {
		ck_assert_msg(argv[i] != NULL, "%s: argv[%zu] missing, want '%s'", ctx, i, want[i]);
		ck_assert_msg(strcmp(argv[i], want[i]) == 0, "%s: argv[%zu] is '%s', want '%s'",
		              ctx, i, argv[i], want[i]);
	}
	ck_assert_msg(argv[i] == NULL, "%s: extra argv[%zu] '%s'", ctx, i, argv[i]);
}

static ExecTemplate *parse_ok(const char *line)
{
	ExecTemplate *t = NULL;
	char err[256] = "";
	int r = exec_template_parse(line, &t, err, sizeof(err));
	ck_assert_msg(r == 0, "'%s': %d %s", line, r, err);
	return t;
}

static int expand(const ExecTemplate *t, const char *payload, char ***argv, char *err,
                  size_t errlen)
{
	return exec_template_expand(t, payload, payload ? strlen(payload) : 0, argv, err, errlen);
}

/* ---- parsing ---- */

static const struct {
	const char *line;
	const char *want[WANT_MAX]; /* argv expanded with std_payload; { NULL }: an error */
	const char *error;          /* valid: NULL; invalid: a substring of the reason */
} parse_cases[] = {
	/* Words. */
	{ "/bin/echo", { "/bin/echo" }, NULL },
	{ "/bin/echo a b  c", { "/bin/echo", "a", "b", "c" }, NULL },
	{ " \t/bin/echo\ta \t ", { "/bin/echo", "a" }, NULL },
	{ "/bin/echo \"a b\"", { "/bin/echo", "a b" }, NULL },
	{ "/bin/echo 'a  b'", { "/bin/echo", "a  b" }, NULL },
	{ "/bin/echo \"\"", { "/bin/echo", "" }, NULL },
	{ "/bin/echo '' x \"\"", { "/bin/echo", "", "x", "" }, NULL },
	{ "/bin/echo a\\ b", { "/bin/echo", "a b" }, NULL },
	{ "/bin/echo \"a\\\"b\\\\c\"", { "/bin/echo", "a\"b\\c" }, NULL },
	{ "/bin/echo 'a\\b\"c'", { "/bin/echo", "a\\b\"c" }, NULL },
	{ "/bin/echo 'abc\\' x", { "/bin/echo", "abc\\", "x" }, NULL },
	{ "/bin/echo a\"b c\"d'e f'", { "/bin/echo", "ab cde f" }, NULL },
	{ "/bin/echo \"it's\" '\"q\"'", { "/bin/echo", "it's", "\"q\"" }, NULL },
	{ "/bin/echo \\\\ \\' \\\"", { "/bin/echo", "\\", "'", "\"" }, NULL },
	{ "/bin/echo \"\\n\" \\n", { "/bin/echo", "n", "n" }, NULL }, /* no C escapes */
	{ "/bin/echo \"tab\there\"", { "/bin/echo", "tab\there" }, NULL },
	{ "/bin/echo \xc3\xa9t\xc3\xa9", { "/bin/echo", "\xc3\xa9t\xc3\xa9" }, NULL },
	{ "/bin/sh -c 'echo \"$1\" >&2' sh {name}",
	  { "/bin/sh", "-c", "echo \"$1\" >&2", "sh", "N" },
	  NULL },

	/* Placeholders: anywhere in a word, quoted or not, several per word. */
	{ "/bin/echo -fsS -o source.png -- {url}",
	  { "/bin/echo", "-fsS", "-o", "source.png", "--", "http://h/p?q=1 2" },
	  NULL },
	{ "/bin/echo source.png -resize {size}x{size} \"thumb {name}.png\"",
	  { "/bin/echo", "source.png", "-resize", "64x64", "thumb N.png" },
	  NULL },
	{ "/bin/echo {a}-{b}.png {a}{b}", { "/bin/echo", "A-B.png", "AB" }, NULL },
	{ "/bin/echo '{a}' \"{b}\"", { "/bin/echo", "A", "B" }, NULL },
	{ "/bin/echo --opt={a} x{b}", { "/bin/echo", "--opt=A", "xB" }, NULL },
	{ "/bin/echo {x-y_1} {" NAME64 "}", { "/bin/echo", "ok", "long" }, NULL },
	{ "/bin/echo {{a}} '{{' }} {{{a}}}", { "/bin/echo", "{a}", "{", "}", "{A}" }, NULL },

	/* Invalid lines. */
	{ "", { NULL }, "empty command line" },
	{ " \t  ", { NULL }, "empty command line" },
	{ "/bin/echo \"abc", { NULL }, "unterminated quote (\" at column 11)" },
	{ "/bin/echo x 'abc", { NULL }, "unterminated quote (' at column 13)" },
	{ "/bin/echo \"abc\\\"", { NULL }, "unterminated quote" },
	{ "/bin/echo abc\\", { NULL }, "trailing backslash" },
	{ "/bin/echo {", { NULL }, "bad placeholder at column 11" },
	{ "/bin/echo }", { NULL }, "bad placeholder at column 11: a lone '}'" },
	{ "/bin/echo a}b", { NULL }, "bad placeholder at column 12" },
	{ "/bin/echo {}", { NULL }, "bad placeholder at column 11" },
	{ "/bin/echo {a b}", { NULL }, "bad placeholder" },
	{ "/bin/echo {a", { NULL }, "bad placeholder" },
	{ "/bin/echo {a.b}", { NULL }, "bad placeholder" },
	{ "/bin/echo '{a b}'", { NULL }, "bad placeholder" },
	{ "/bin/echo {{a}", { NULL }, "bad placeholder at column 14: a lone '}'" },
	{ "/bin/echo {" NAME64 "x}", { NULL }, "longer than 64 bytes" },
	{ "/bin/echo \\{a}", { NULL }, "a backslash cannot escape a brace" },
	{ "/bin/echo a\nb", { NULL }, "control character 0x0a at column 12" },
	{ "/bin/echo a\rb", { NULL }, "control character 0x0d" },
	{ "{prog} x", { NULL }, "the program cannot come from the payload" },
	{ "/bin/{a}", { NULL }, "the program cannot come from the payload" },
	{ "'' x", { NULL }, "the program must be an absolute path or a name in PATH" },
	{ "bin/x", { NULL }, "the program must be an absolute path or a name in PATH" },
	{ "./echo", { NULL }, "the program must be an absolute path or a name in PATH" },
	{ "/nonexistent/prog",
	  { NULL },
	  "program '/nonexistent/prog' cannot be run: No such file" },
	{ "/tmp", { NULL }, "program '/tmp' cannot be run: Is a directory" },
	{ "/dev/null", { NULL }, "program '/dev/null' cannot be run: Permission denied" },
	{ "no-such-program-pipelined-test",
	  { NULL },
	  "program 'no-such-program-pipelined-test' not found in PATH" },
};

START_TEST(test_parse_cases)
{
	for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
		const char *line = parse_cases[i].line;
		ExecTemplate *t = (ExecTemplate *)&t; /* must stay untouched on failure */
		char err[512] = "";
		int r = exec_template_parse(line, &t, err, sizeof(err));
		if (parse_cases[i].error) {
			ck_assert_msg(r == -EINVAL, "'%s': got %d", line, r);
			ck_assert_msg(strstr(err, parse_cases[i].error),
			              "'%s': reason '%s', want '%s'", line, err,
			              parse_cases[i].error);
			ck_assert_ptr_eq(t, (ExecTemplate *)&t);
			continue;
		}
		ck_assert_msg(r == 0, "'%s': %d %s", line, r, err);

		char **argv;
		ck_assert_int_eq(expand(t, std_payload, &argv, err, sizeof(err)), 0);
		assert_argv(argv, parse_cases[i].want, line);
		exec_argv_free(argv);

		/* The text is one line and parses back into the same template. */
		const char *text = exec_template_text(t);
		ck_assert_ptr_null(strchr(text, '\n'));
		ExecTemplate *again = parse_ok(text);
		ck_assert_str_eq(exec_template_text(again), text);
		ck_assert_int_eq(expand(again, std_payload, &argv, err, sizeof(err)), 0);
		assert_argv(argv, parse_cases[i].want, text);
		exec_argv_free(argv);
		exec_template_free(again);
		exec_template_free(t);
	}
}
END_TEST

START_TEST(test_parse_without_error_buffer)
{
	ExecTemplate *t;
	ck_assert_int_eq(exec_template_parse("/bin/echo '", &t, NULL, 0), -EINVAL);
	ck_assert_int_eq(exec_template_parse(NULL, &t, NULL, 0), -EINVAL);
	char err[8];
	ck_assert_int_eq(exec_template_parse("", &t, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "empty c"); /* truncated, terminated */
	exec_template_free(NULL);
	exec_argv_free(NULL);
}
END_TEST

START_TEST(test_text)
{
	ExecTemplate *t = parse_ok("/bin/echo  'a b'   {f} {{x}}  \"\"  a\\\"b 'c\\d' -- x{g}y");
	ck_assert_str_eq(exec_template_text(t),
	                 "/bin/echo \"a b\" {f} {{x}} \"\" \"a\\\"b\" \"c\\\\d\" -- x{g}y");
	ck_assert_int_eq(exec_template_has_fields(t), 1);
	exec_template_free(t);

	t = parse_ok("/bin/echo plain");
	ck_assert_str_eq(exec_template_text(t), "/bin/echo plain");
	ck_assert_int_eq(exec_template_has_fields(t), 0);
	exec_template_free(t);
}
END_TEST

/* Words: EXEC_WORDS_MAX (the program included) parse, one more does not. */
START_TEST(test_limit_words)
{
	char line[16 + 2 * EXEC_WORDS_MAX];
	size_t n = (size_t)snprintf(line, sizeof(line), "/bin/echo");
	for (unsigned i = 1; i < EXEC_WORDS_MAX; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, " x");
	ExecTemplate *t = parse_ok(line);
	char **argv;
	ck_assert_int_eq(expand(t, NULL, &argv, NULL, 0), 0);
	size_t argc = 0;
	while (argv[argc])
		argc++;
	ck_assert_uint_eq(argc, EXEC_WORDS_MAX);
	exec_argv_free(argv);
	exec_template_free(t);

	snprintf(line + n, sizeof(line) - n, " x");
	char err[256];
	ck_assert_int_eq(exec_template_parse(line, &t, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "more than 256 words (EXEC_WORDS_MAX)");
}
END_TEST

/* Line length: EXEC_LINE_MAX bytes parse, one more does not. */
START_TEST(test_limit_line)
{
	char line[EXEC_LINE_MAX + 2];
	memset(line, 'x', sizeof(line));
	memcpy(line, "/bin/echo {f} ", 14);
	line[EXEC_LINE_MAX] = '\0';
	ExecTemplate *t = parse_ok(line);
	char **argv;
	ck_assert_int_eq(expand(t, "{\"f\":\"v\"}", &argv, NULL, 0), 0);
	ck_assert_str_eq(argv[1], "v");
	ck_assert_uint_eq(strlen(argv[2]), EXEC_LINE_MAX - 14);
	exec_argv_free(argv);
	exec_template_free(t);

	line[EXEC_LINE_MAX] = 'x';
	line[EXEC_LINE_MAX + 1] = '\0';
	char err[256];
	ck_assert_int_eq(exec_template_parse(line, &t, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "command line is longer than 4096 bytes (EXEC_LINE_MAX)");
}
END_TEST

/* ---- the program ---- */

static char tmpdir[PATH_MAX];

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_exectemplate.XXXXXX",
	         base && *base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

/* Removes tmpdir and what the tests put in it: files one or two levels down. */
static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			char p[PATH_MAX + 256];
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			if (unlink(p) < 0 && errno == EISDIR)
				remove_tree(p);
		}
		closedir(d);
	}
	(void)rmdir(dir);
}

static void teardown(void)
{
	remove_tree(tmpdir);
}

/* dir/name into buf[len]; it fits. */
static void path_join(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);
	ck_assert(n > 0 && (size_t)n < len);
}

static void make_file(const char *dir, const char *name, mode_t mode)
{
	char p[PATH_MAX];
	path_join(p, sizeof(p), dir, name);
	FILE *f = fopen(p, "we");
	ck_assert_ptr_nonnull(f);
	fputs("#!/bin/sh\nexit 0\n", f);
	fclose(f);
	ck_assert_int_eq(chmod(p, mode), 0);
}

static void make_dir(char *buf, size_t len, const char *name)
{
	path_join(buf, len, tmpdir, name);
	ck_assert_int_eq(mkdir(buf, 0755), 0);
}

/* The line's program resolves to want, or to also when that is not NULL. */
static void assert_program(const char *line, const char *want, const char *also)
{
	ExecTemplate *t = parse_ok(line);
	char **argv;
	ck_assert_int_eq(expand(t, NULL, &argv, NULL, 0), 0);
	ck_assert_msg(strcmp(argv[0], want) == 0 || (also && strcmp(argv[0], also) == 0),
	              "%s: program %s", line, argv[0]);
	ck_assert_str_eq(argv[1], "-c");
	exec_argv_free(argv);
	exec_template_free(t);
}

START_TEST(test_program_in_path)
{
	/* "sh" resolves to an absolute path, with the environment's PATH and
	 * with the default when there is none. */
	ExecTemplate *t = parse_ok("sh -c x");
	char **argv;
	ck_assert_int_eq(expand(t, NULL, &argv, NULL, 0), 0);
	ck_assert_msg(strcmp(argv[0], "/usr/bin/sh") == 0 || strcmp(argv[0], "/bin/sh") == 0,
	              "sh is %s", argv[0]);
	ck_assert_str_eq(argv[1], "-c");
	ck_assert_str_eq(argv[2], "x");
	ck_assert_ptr_null(argv[3]);
	char text[PATH_MAX + 16];
	snprintf(text, sizeof(text), "%s -c x", argv[0]);
	ck_assert_str_eq(exec_template_text(t), text);
	exec_argv_free(argv);
	exec_template_free(t);

	ck_assert_int_eq(unsetenv("PATH"), 0);
	assert_program("sh -c x", "/usr/bin/sh", "/bin/sh"); /* /usr/local/bin:/usr/bin:/bin */
}
END_TEST

START_TEST(test_program_path_search_order)
{
	/* The first PATH entry holding an executable regular file wins: a
	 * directory and a file without x permission of that name are skipped. */
	char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], d[PATH_MAX];
	make_dir(a, sizeof(a), "a");
	make_dir(b, sizeof(b), "b");
	make_dir(c, sizeof(c), "c");
	make_dir(d, sizeof(d), "d");
	char sub[PATH_MAX];
	path_join(sub, sizeof(sub), a, "tool");
	ck_assert_int_eq(mkdir(sub, 0755), 0);
	make_file(b, "tool", 0644);
	make_file(c, "tool", 0755);
	make_file(d, "tool", 0755);

	char path[4 * PATH_MAX + 8], want[PATH_MAX];
	snprintf(path, sizeof(path), "%s:%s:%s:%s", a, b, c, d);
	ck_assert_int_eq(setenv("PATH", path, 1), 0);
	path_join(want, sizeof(want), c, "tool");
	assert_program("tool -c", want, NULL);

	/* Empty and relative entries are not the working directory. */
	ck_assert_int_eq(chdir(c), 0);
	char err[PATH_MAX + 128];
	ExecTemplate *t;
	const char *paths[] = { "", ":", ".", "c", "::.:c:" };
	for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
		ck_assert_int_eq(setenv("PATH", paths[i], 1), 0);
		ck_assert_int_eq(exec_template_parse("tool", &t, err, sizeof(err)), -EINVAL);
		ck_assert_msg(strstr(err, "program 'tool' not found in PATH"), "%s", err);
	}
	ck_assert_int_eq(chdir("/"), 0);
}
END_TEST

START_TEST(test_program_absolute)
{
	char err[PATH_MAX + 128], path[PATH_MAX];
	ExecTemplate *t;

	/* A file without x permission (we may be root: access(X_OK) still
	 * needs one x bit). */
	make_file(tmpdir, "plain", 0644);
	path_join(path, sizeof(path), tmpdir, "plain");
	ck_assert_int_eq(exec_template_parse(path, &t, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "cannot be run: Permission denied"), "%s", err);

	/* An executable one, with a blank in its directory's name. */
	char dir[PATH_MAX];
	make_dir(dir, sizeof(dir), "with blank");
	make_file(dir, "run", 0700);
	char line[2 * PATH_MAX];
	snprintf(line, sizeof(line), "'%s/run' {f}", dir);
	t = parse_ok(line);
	char **argv;
	ck_assert_int_eq(expand(t, "{\"f\":1}", &argv, err, sizeof(err)), 0);
	path_join(path, sizeof(path), dir, "run");
	ck_assert_str_eq(argv[0], path);
	ck_assert_str_eq(argv[1], "1");
	exec_argv_free(argv);
	/* The text quotes it, so it still parses. */
	snprintf(line, sizeof(line), "\"%s/run\" {f}", dir);
	ck_assert_str_eq(exec_template_text(t), line);
	exec_template_free(t);
}
END_TEST

/* ---- expansion ---- */

static const struct {
	const char *line;
	const char *payload;
	int result;
	const char *want[WANT_MAX]; /* argv[1...] on success */
	const char *error;          /* a substring of the reason on failure */
} expand_cases[] = {
	/* Values never split, never get re-read by a shell, never get lost. */
	{ "/bin/echo {f}", "{\"f\":\"a b c\"}", 0, { "a b c" }, NULL },
	{ "/bin/echo {f}", "{\"f\":\"x\\\"; rm -rf /\"}", 0, { "x\"; rm -rf /" }, NULL },
	{ "/bin/echo {f}",
	  "{\"f\":\"$(id) `id` ${HOME} *\"}",
	  0,
	  { "$(id) `id` ${HOME} *" },
	  NULL },
	{ "/bin/echo {f}", "{\"f\":\"l1\\nl2\\t\"}", 0, { "l1\nl2\t" }, NULL },
	{ "/bin/echo {f}", "{\"f\":\"{g}\",\"g\":\"no\"}", 0, { "{g}" }, NULL },
	{ "/bin/echo {f}", "{\"f\":\"\\u00e9\xc3\xa9\"}", 0, { "\xc3\xa9\xc3\xa9" }, NULL },
	{ "/bin/echo {f} x", "{\"f\":\"\"}", 0, { "", "x" }, NULL },
	{ "/bin/echo {f} {f}{f}", "{\"f\":\"ab\"}", 0, { "ab", "abab" }, NULL },

	/* Types. */
	{ "/bin/echo {f}", "{\"f\":3}", 0, { "3" }, NULL },
	{ "/bin/echo {f}", "{\"f\":12345678901234567}", 0, { "12345678901234567" }, NULL },
	{ "/bin/echo {f}", "{\"f\":1.5}", 0, { "1.5" }, NULL },
	{ "/bin/echo {f}", "{\"f\":0.1}", 0, { "0.1" }, NULL },
	{ "/bin/echo {f}", "{\"f\":2.0}", 0, { "2.0" }, NULL },
	{ "/bin/echo {f}", "{\"f\":1e300}", 0, { "1e300" }, NULL },
	{ "/bin/echo {f} {g}", "{\"f\":true,\"g\":false}", 0, { "true", "false" }, NULL },
	{ "/bin/echo {f}", "{\"f\":null}", -EINVAL, { NULL }, "payload field 'f' is null" },
	{ "/bin/echo {f}",
	  "{\"f\":{\"a\":1}}",
	  -EINVAL,
	  { NULL },
	  "payload field 'f' is an object; only strings, numbers and booleans can be substituted" },
	{ "/bin/echo {f}", "{\"f\":[1]}", -EINVAL, { NULL }, "payload field 'f' is an array" },
	{ "/bin/echo {f}",
	  "{\"f\":\"a\\u0000b\"}",
	  -EINVAL,
	  { NULL },
	  "payload field 'f' contains a NUL byte" },
	{ "/bin/echo {f}", "{\"g\":1}", -EINVAL, { NULL }, "payload has no field 'f'" },
	{ "/bin/echo {f}", "{\"F\":1}", -EINVAL, { NULL }, "payload has no field 'f'" },

	/* Payloads that are not one JSON object. */
	{ "/bin/echo {f}", "[1]", -EINVAL, { NULL }, "payload is not a JSON object" },
	{ "/bin/echo {f}", "3", -EINVAL, { NULL }, "payload is not a JSON object" },
	{ "/bin/echo {f}", "{\"f\":1", -EINVAL, { NULL }, "payload is not a JSON object" },
	{ "/bin/echo {f}", "", -EINVAL, { NULL }, "payload is not a JSON object" },
	{ "/bin/echo {f}",
	  "{\"f\":\"a\",\"f\":\"-x\"}",
	  -EINVAL,
	  { NULL },
	  "payload is not a JSON object (duplicate object key" },
	/* Without placeholders the payload is not read at all. */
	{ "/bin/echo {{f}}", "not json", 0, { "{f}" }, NULL },

	/* Options: a word starting with a placeholder must not start with '-'... */
	{ "/bin/echo {f}",
	  "{\"f\":\"--version\"}",
	  -EINVAL,
	  { NULL },
	  "payload field 'f' starts with '-' and would be read as an option; put -- before it "
	  "in Exec=, or write it as --opt={f}" },
	{ "/bin/echo {f}", "{\"f\":\"-rf\"}", -EINVAL, { NULL }, "field 'f' starts with '-'" },
	{ "/bin/echo {f}", "{\"f\":-3}", -EINVAL, { NULL }, "field 'f' starts with '-'" },
	{ "/bin/echo {f}", "{\"f\":-0.5}", -EINVAL, { NULL }, "field 'f' starts with '-'" },
	{ "/bin/echo \"{f}\"", "{\"f\":\"-x\"}", -EINVAL, { NULL }, "field 'f' starts with '-'" },
	{ "/bin/echo ''{f}", "{\"f\":\"-x\"}", -EINVAL, { NULL }, "field 'f' starts with '-'" },
	{ "/bin/echo {e}{f}",
	  "{\"e\":\"\",\"f\":\"-x\"}",
	  -EINVAL,
	  { NULL },
	  "field 'f' starts with '-'" },
	{ "/bin/echo {e}-x",
	  "{\"e\":\"\"}",
	  -EINVAL,
	  { NULL },
	  "payload field 'e' is empty, so argument 1 would start with '-'" },
	{ "/bin/echo --x {f}", "{\"f\":\"-x\"}", -EINVAL, { NULL }, "field 'f' starts with '-'" },
	{ "/bin/echo {f} -- {g}",
	  "{\"f\":\"-x\",\"g\":1}",
	  -EINVAL,
	  { NULL },
	  "field 'f' starts with '-'" },
	{ "/bin/echo {d} {f}",
	  "{\"d\":\"--\",\"f\":\"-x\"}",
	  -EINVAL,
	  { NULL },
	  "field 'd' starts with '-'" },
	/* ...unless a literal "--" comes before it, or a literal prefix. */
	{ "/bin/echo -- {f}", "{\"f\":\"-rf\"}", 0, { "--", "-rf" }, NULL },
	{ "/bin/echo -- {f}", "{\"f\":-3}", 0, { "--", "-3" }, NULL },
	{ "/bin/echo \"--\" x {f}", "{\"f\":\"--version\"}", 0, { "--", "x", "--version" }, NULL },
	{ "/bin/echo --opt={f}", "{\"f\":\"-x\"}", 0, { "--opt=-x" }, NULL },
	{ "/bin/echo x{f}", "{\"f\":\"-x\"}", 0, { "x-x" }, NULL },
	{ "/bin/echo {e}{f}", "{\"e\":\"a\",\"f\":\"-x\"}", 0, { "a-x" }, NULL },
	{ "/bin/echo {f}", "{\"f\":\"a-\"}", 0, { "a-" }, NULL },
};

START_TEST(test_expand_cases)
{
	for (size_t i = 0; i < ELEMENTSOF(expand_cases); i++) {
		ExecTemplate *t = parse_ok(expand_cases[i].line);
		char ctx[256];
		snprintf(ctx, sizeof(ctx), "%s with %s", expand_cases[i].line,
		         expand_cases[i].payload);
		char **argv = (char **)&argv; /* must stay untouched on failure */
		char err[512] = "";
		int r = expand(t, expand_cases[i].payload, &argv, err, sizeof(err));
		ck_assert_msg(r == expand_cases[i].result, "%s: got %d (%s)", ctx, r, err);
		if (r == 0) {
			const char *want[WANT_MAX + 1] = { "/bin/echo" };
			for (size_t j = 0; expand_cases[i].want[j]; j++)
				want[j + 1] = expand_cases[i].want[j];
			assert_argv(argv, want, ctx);
			exec_argv_free(argv);
		} else {
			ck_assert_msg(strstr(err, expand_cases[i].error),
			              "%s: reason '%s', want '%s'", ctx, err,
			              expand_cases[i].error);
			ck_assert_ptr_eq(argv, (char **)&argv);
		}
		exec_template_free(t);
	}
}
END_TEST

/* A payload of one string field f of len bytes ('v's). */
static char *payload_of(size_t len)
{
	char *p = malloc(len + 16);
	ck_assert_ptr_nonnull(p);
	memcpy(p, "{\"f\":\"", 6);
	memset(p + 6, 'v', len);
	memcpy(p + 6 + len, "\"}", 3);
	return p;
}

/* The expanded argv, every string with its NUL, argv[0] included: at most
 * 128 KiB. "/bin/echo" takes 10 bytes. */
START_TEST(test_limit_argv_bytes)
{
	const size_t max = 128 * 1024;
	char err[256];
	char **argv;

	ExecTemplate *t = parse_ok("/bin/echo {f}");
	char *p = payload_of(max - 10 - 1);
	ck_assert_int_eq(expand(t, p, &argv, err, sizeof(err)), 0);
	ck_assert_uint_eq(strlen(argv[1]), max - 11);
	exec_argv_free(argv);
	free(p);

	p = payload_of(max - 10);
	ck_assert_int_eq(expand(t, p, &argv, err, sizeof(err)), -E2BIG);
	ck_assert_str_eq(err, "command line for this job is over 128 KiB");
	free(p);
	exec_template_free(t);

	/* A value used three times counts three times. */
	t = parse_ok("/bin/echo {f} x{f} {f}");
	/* 10 + (n + 1) + (n + 2) + (n + 1) bytes: exactly the limit. */
	size_t n = (max - 14) / 3;
	ck_assert_uint_eq(14 + 3 * n, max);
	p = payload_of(n);
	ck_assert_int_eq(expand(t, p, &argv, err, sizeof(err)), 0);
	exec_argv_free(argv);
	free(p);
	p = payload_of(n + 1);
	ck_assert_int_eq(expand(t, p, &argv, err, sizeof(err)), -E2BIG);
	free(p);
	exec_template_free(t);
}
END_TEST

/* ---- threads ---- */

typedef struct Worker {
	pthread_t thread;
	const ExecTemplate *fields, *plain;
	unsigned id;
	unsigned failures;
} Worker;

static void *worker(void *arg)
{
	Worker *w = arg;
	char payload[128], want_size[32], want_name[32];
	snprintf(payload, sizeof(payload), "{\"size\":%u,\"name\":\"thread %u\",\"r\":0.25}", w->id,
	         w->id);
	snprintf(want_size, sizeof(want_size), "--size=%u", w->id);
	snprintf(want_name, sizeof(want_name), "thread %u", w->id);
	for (int i = 0; i < 2000; i++) {
		char **argv;
		char err[256];
		if (exec_template_expand(w->fields, payload, strlen(payload), &argv, err,
		                         sizeof(err)) < 0) {
			w->failures++;
			continue;
		}
		const char *want[] = { "/bin/echo", want_size, "--", want_name, "0.25", NULL };
		for (size_t j = 0; j < ELEMENTSOF(want); j++)
			if (!want[j] ? argv[j] != NULL : !argv[j] || strcmp(argv[j], want[j]) != 0)
				w->failures++;
		exec_argv_free(argv);

		if (exec_template_expand(w->plain, NULL, 0, &argv, err, sizeof(err)) < 0 ||
		    strcmp(argv[1], "plain") != 0)
			w->failures++;
		else
			exec_argv_free(argv);
	}
	return NULL;
}

START_TEST(test_expand_from_threads)
{
	ExecTemplate *fields = parse_ok("/bin/echo --size={size} -- {name} {r}");
	ExecTemplate *plain = parse_ok("/bin/echo plain");
	Worker w[4];
	for (unsigned i = 0; i < ELEMENTSOF(w); i++) {
		w[i] = (Worker){ .fields = fields, .plain = plain, .id = i + 1 };
		ck_assert_int_eq(pthread_create(&w[i].thread, NULL, worker, &w[i]), 0);
	}
	for (unsigned i = 0; i < ELEMENTSOF(w); i++) {
		ck_assert_int_eq(pthread_join(w[i].thread, NULL), 0);
		ck_assert_uint_eq(w[i].failures, 0);
	}
	exec_template_free(fields);
	exec_template_free(plain);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("exectemplate");
	TCase *tc = tcase("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_parse_cases);
	tcase_add_test(tc, test_parse_without_error_buffer);
	tcase_add_test(tc, test_text);
	tcase_add_test(tc, test_limit_words);
	tcase_add_test(tc, test_limit_line);
	tcase_add_test(tc, test_program_in_path);
	tcase_add_test(tc, test_program_path_search_order);
	tcase_add_test(tc, test_program_absolute);
	tcase_add_test(tc, test_expand_cases);
	tcase_add_test(tc, test_limit_argv_bytes);
	tcase_add_test(tc, test_expand_from_threads);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
