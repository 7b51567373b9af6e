/* Unit tests for daemon/config.c: every configuration is written to a file
 * in a fresh temporary directory and read back with config_load. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "program.h"
#include "stage.h"
#include "pipeline.h"
#include "queue.h"
#include "stage.h"
#include "testutil.h"
#include "util.h"

static char tmpdir[PATH_MAX];
static char conf_path[PATH_MAX + 32];

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_config.XXXXXX", base && *base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(conf_path, sizeof(conf_path), "%s/pipelined.conf", tmpdir);
}

static void teardown(void)
{
	DIR *d = opendir(tmpdir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			char p[PATH_MAX + 256];
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
			(void)unlink(p);
		}
		closedir(d);
	}
	(void)rmdir(tmpdir);
}

/* Writes len bytes of text to the test's configuration file. */
static const char *write_conf_len(const char *text, size_t len)
{
	FILE *f = fopen(conf_path, "we");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
	return conf_path;
}

static const char *write_conf(const char *text)
{
	return write_conf_len(text, strlen(text));
}

/* A growing text for the generated configurations; the caller frees. */
typedef struct Text {
	char *s;
	size_t len, cap;
} Text;

static void __attribute__((format(printf, 2, 3))) add(Text *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	ck_assert_int_ge(n, 0);
	if (t->len + (size_t)n + 1 > t->cap) {
		t->cap = (t->len + (size_t)n + 1) * 2;
		t->s = realloc(t->s, t->cap);
		ck_assert_ptr_nonnull(t->s);
	}
	va_start(ap, fmt);
	vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
}

static Config *load_ok(const char *text)
{
	Config *c = NULL;
	ConfigError err;
	char msg[1024];
	int r = config_load(write_conf(text), &c, &err);
	if (r < 0)
		config_error_format(&err, msg, sizeof(msg));
	ck_assert_msg(r == 0, "config_load: %d: %s\n%s", r, r < 0 ? msg : "", text);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* Loads text, which must be refused with code at line, naming key, with
 * reason_part somewhere in the reason. *ret must stay untouched. */
static void expect_error(const char *text, int code, unsigned line, const char *key,
                         const char *reason_part)
{
	Config *sentinel = (Config *)&sentinel, *c = sentinel;
	ConfigError err;
	memset(&err, 0xA5, sizeof(err));
	int r = config_load(write_conf(text), &c, &err);
	ck_assert_msg(r == code, "got %d, want %d for:\n%s", r, code, text);
	ck_assert_ptr_eq(c, sentinel);
	ck_assert_str_eq(err.file, conf_path);
	ck_assert_msg(err.line == line, "line %u, want %u (%s: %s) for:\n%s", err.line, line,
	              err.key, err.reason, text);
	ck_assert_msg(strcmp(err.key, key) == 0, "key '%s', want '%s' (%s) for:\n%s", err.key, key,
	              err.reason, text);
	ck_assert_msg(strstr(err.reason, reason_part), "reason '%s' lacks '%s' for:\n%s",
	              err.reason, reason_part, text);
}

/* A pipeline that makes an otherwise valid file complete. */
#define OK_PIPELINE "[pipeline p]\n[stage p/s]\nAction = noop\n"
/* The same, with room for one key (line 3) in its stage before the Action. */
#define STAGE_KEY(kv)  "[pipeline p]\n[stage p/s]\n" kv "\nAction = noop\n"
#define DAEMON_KEY(kv) "[daemon]\n" kv "\n" OK_PIPELINE
/* A program stage with room for one key (line 4). */
#define EXEC_KEY(kv) "[pipeline p]\n[stage p/s]\nExec = /bin/true\n" kv "\n"

static const char syntax[] = "syntax error (expected [section] or key = value)";
static const char workers_range[] = "not a whole number in 1..1024";
static const char capacity_range[] = "not a whole number in 1..1048576";
static const char output_range[] = "not a size in 64KiB..1GiB";
static const char mode_range[] = "not an octal mode in 0000..0777 (e.g. 0660)";

static const struct {
	const char *text;
	unsigned line;
	const char *key;
	const char *reason;
} invalid[] = {
	/* Syntax. */
	{ "[daemon]\nSocket /run/x.sock\n" OK_PIPELINE, 2, "", syntax },
	{ "[daemon\n" OK_PIPELINE, 1, "", syntax },
	{ "[daemon] MaxConnections = 3\n" OK_PIPELINE, 1, "", "text after ']'" },
	{ "[daemon]\n= 5\n" OK_PIPELINE, 2, "", syntax },
	{ "[daemon]\nMaxConnections = 3\n  ShutdownTimeoutSec = 5\n" OK_PIPELINE, 3, "",
	  "indented line" },
	{ "[daemon]\nMaxConnections = 3\n\n\tShutdownTimeoutSec = 5\n" OK_PIPELINE, 4, "",
	  "indented line" },
	/* Sections. */
	{ "[daemons]\n" OK_PIPELINE, 1, "[daemons]", "unknown section (known: [daemon]" },
	{ "[Daemon]\n" OK_PIPELINE, 1, "[Daemon]", "unknown section" },
	{ "[]\n" OK_PIPELINE, 1, "[]", "unknown section" },
	{ "[daemon main]\n" OK_PIPELINE, 1, "[daemon main]", "takes no name" },
	{ "MaxConnections = 3\n" OK_PIPELINE, 1, "MaxConnections", "before the first section" },
	{ "[pipeline]\n" OK_PIPELINE, 1, "[pipeline]", "missing name" },
	{ "[pipeline a b]\n" OK_PIPELINE, 1, "[pipeline a b]", "invalid pipeline name" },
	{ "[pipeline caf\xC3\xA9]\n" OK_PIPELINE, 1, "[pipeline caf\xC3\xA9]",
	  "invalid pipeline name" },
	{ OK_PIPELINE "[pipeline q]\n[pipeline p]\n", 5, "[pipeline p]",
	  "duplicate pipeline 'p' (first declared on line 1)" },
	{ "[stage p/s]\nAction = noop\n" OK_PIPELINE, 1, "[stage p/s]",
	  "pipeline 'p' is not declared above" },
	{ OK_PIPELINE "[stage q/s]\nAction = noop\n", 4, "[stage q/s]", "'q' is not declared" },
	{ OK_PIPELINE "[stage p]\n", 4, "[stage p]", "expected [stage PIPELINE/STAGE]" },
	{ OK_PIPELINE "[stage p/]\n", 4, "[stage p/]", "invalid stage name" },
	{ OK_PIPELINE "[stage p/a/b]\n", 4, "[stage p/a/b]", "invalid stage name" },
	{ OK_PIPELINE "[stage p/t]\nAction = noop\n[stage p/s]\nAction = noop\n", 6, "[stage p/s]",
	  "duplicate stage 's' in pipeline 'p' (first declared on line 2)" },
	/* Keys. */
	{ DAEMON_KEY("socket = /run/x.sock"), 2, "socket",
	  "unknown key in [daemon] (known: Socket, StateDirectory, MaxConnections, "
	  "MaxConnectionRate, MaxOutputBuffer, RetainJobs, RetainBytes, ShutdownTimeoutSec, RetainAge, Durability, "
	  "JournalMinFree, SocketMode, SocketGroup, AllowUsers, AllowGroups, ReadOnlyUsers, "
	  "ReadOnlyGroups, MaxJobsPerUser)" },
	{ "[pipeline p]\nWorkers = 2\n[stage p/s]\nAction = noop\n", 2, "Workers",
	  "unknown key ([pipeline] sections take no keys)" },
	/* Numbers. */
	{ STAGE_KEY("Workers = 0"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 1025"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = -1"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = +1"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 12abc"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 1.5"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 0x10"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 2 # two"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers ="), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 18446744073709551617"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 99999999999999999999999999"), 3, "Workers", workers_range },
	{ STAGE_KEY("Capacity = 0"), 3, "Capacity", capacity_range },
	{ STAGE_KEY("Capacity = 64K"), 3, "Capacity", capacity_range },
	{ DAEMON_KEY("MaxConnections = 0"), 2, "MaxConnections", "not a whole number in 1..65536" },
	{ DAEMON_KEY("MaxConnections = 65537"), 2, "MaxConnections", "1..65536" },
	{ DAEMON_KEY("MaxConnectionRate = 1000001"), 2, "MaxConnectionRate", "in 0..1000000" },
	{ DAEMON_KEY("MaxConnectionRate = -1"), 2, "MaxConnectionRate", "in 0..1000000" },
	{ DAEMON_KEY("RetainJobs = 10000001"), 2, "RetainJobs", "in 0..10000000" },
	{ DAEMON_KEY("RetainJobs = -0"), 2, "RetainJobs", "in 0..10000000" },
	{ DAEMON_KEY("ShutdownTimeoutSec = 0"), 2, "ShutdownTimeoutSec", "in 1..86400" },
	{ DAEMON_KEY("Durability = fsync"), 2, "Durability", "unknown value (known: full, none)" },
	{ DAEMON_KEY("Durability = "), 2, "Durability", "unknown value (known: full, none)" },
	{ DAEMON_KEY("RetainAge = 3651d"), 2, "RetainAge", "not a duration in range" },
	{ DAEMON_KEY("RetainAge = 2 weeks"), 2, "RetainAge", "not a duration in range" },
	{ DAEMON_KEY("JournalMinFree = 16385G"), 2, "JournalMinFree", "not a size in 0..16384GiB" },
	{ DAEMON_KEY("ShutdownTimeoutSec = 86401"), 2, "ShutdownTimeoutSec", "in 1..86400" },
	/* Access control. */
	{ DAEMON_KEY("SocketMode = 0778"), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketMode = 1777"), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketMode = 01000"), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketMode = 00660"), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketMode = 660x"), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketMode = rw-rw----"), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketMode = -660"), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketMode = "), 2, "SocketMode", mode_range },
	{ DAEMON_KEY("SocketGroup = no-such-group-pipelined"), 2, "SocketGroup",
	  "unknown group 'no-such-group-pipelined'" },
	{ DAEMON_KEY("SocketGroup = 4294967295"), 2, "SocketGroup",
	  "group id 4294967295 out of range (0..4294967294)" },
	{ DAEMON_KEY("AllowUsers = root no-such-user-pipelined 5"), 2, "AllowUsers",
	  "unknown user 'no-such-user-pipelined'" },
	{ DAEMON_KEY("ReadOnlyUsers = 99999999999"), 2, "ReadOnlyUsers",
	  "user id 99999999999 out of range" },
	{ DAEMON_KEY("AllowGroups = root no-such-group-pipelined"), 2, "AllowGroups",
	  "unknown group 'no-such-group-pipelined'" },
	{ DAEMON_KEY("ReadOnlyGroups = -1"), 2, "ReadOnlyGroups", "unknown group '-1'" },
	{ DAEMON_KEY("MaxJobsPerUser = 10000001"), 2, "MaxJobsPerUser", "in 0..10000000" },
	{ DAEMON_KEY("MaxJobsPerUser = -1"), 2, "MaxJobsPerUser", "in 0..10000000" },
	/* Sizes. */
	{ DAEMON_KEY("MaxOutputBuffer = 65535"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = 63K"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = 1073741825"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = 2G"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = 4MB"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = 4m"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = 4KiBx"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = M"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = -4M"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer ="), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("MaxOutputBuffer = 18014398509481984K"), 2, "MaxOutputBuffer", output_range },
	{ DAEMON_KEY("RetainBytes = 17179869185"), 2, "RetainBytes", "not a size in 0..16GiB" },
	{ DAEMON_KEY("RetainBytes = 17G"), 2, "RetainBytes", "not a size in 0..16GiB" },
	/* 2^54 KiB is 2^64 bytes: would wrap to 0, which is in range. */
	{ DAEMON_KEY("RetainBytes = 18014398509481984K"), 2, "RetainBytes",
	  "not a size in 0..16GiB" },
	/* Paths. */
	{ DAEMON_KEY("Socket = run/x.sock"), 2, "Socket", "not an absolute path" },
	{ DAEMON_KEY("Socket ="), 2, "Socket", "not an absolute path" },
	{ DAEMON_KEY("StateDirectory = var/lib/pipelined"), 2, "StateDirectory",
	  "not an absolute path" },
	{ DAEMON_KEY("StateDirectory = ~/state"), 2, "StateDirectory", "not an absolute path" },
	/* Actions. */
	{ STAGE_KEY("Action = frobnicate"), 3, "Action", "unknown action (known: noop" },
	{ STAGE_KEY("Action = sleep:0"), 3, "Action",
	  "argument is not a whole number in the allowed range" },
	{ STAGE_KEY("Action ="), 3, "Action", "empty action" },
	{ "[pipeline p]\n[stage p/s]\nWorkers = 2\n", 2, "[stage p/s]",
	  "the stage does nothing: give one of Exec=, Plugin= or Action=" },
	/* Program and plugin stages. */
	{ EXEC_KEY("Exec = /bin/true\nAction = noop"), 2, "Exec",
	  "give only one of Exec=, Plugin= and Action=" },
	{ STAGE_KEY("Timeout = 5s"), 2, "Timeout", "only a stage with Exec= takes this key" },
	{ STAGE_KEY("Stdout = ignore"), 2, "Stdout", "only a stage with Exec= takes this key" },
	{ STAGE_KEY("RetryExitCodes = 75"), 2, "RetryExitCodes",
	  "only a stage with Exec= takes this key" },
	{ EXEC_KEY("PluginArg = x"), 2, "PluginArg", "only a stage with Plugin= takes this key" },
	{ EXEC_KEY("Timeout = 5x"), 4, "Timeout", "not a duration" },
	{ EXEC_KEY("Timeout = -1s"), 4, "Timeout", "not a duration" },
	{ EXEC_KEY("Timeout = 8d"), 4, "Timeout", "not a duration" },
	{ EXEC_KEY("TimeoutGrace = 0"), 4, "TimeoutGrace", "not a duration in range, above 0" },
	{ EXEC_KEY("RetryDelay = 0"), 4, "RetryDelay", "not a duration" },
	{ EXEC_KEY("RetryExitCodes = 256"), 4, "RetryExitCodes", "expected exit statuses 1..255" },
	{ EXEC_KEY("RetryExitCodes = 0"), 4, "RetryExitCodes", "expected exit statuses 1..255" },
	{ EXEC_KEY("RetryExitCodes = 75 sometimes"), 4, "RetryExitCodes",
	  "expected exit statuses 1..255" },
	{ EXEC_KEY("RetryExitCodes ="), 4, "RetryExitCodes", "expected exit statuses 1..255" },
	{ EXEC_KEY("MaxAttempts = 0"), 4, "MaxAttempts", "not a whole number in 1..100" },
	{ EXEC_KEY("MaxAttempts = 101"), 4, "MaxAttempts", "not a whole number in 1..100" },
	{ EXEC_KEY("Stdout = yaml"), 4, "Stdout",
	  "unknown value (known: json, json-required, ignore)" },
	{ EXEC_KEY("StderrTail = 65K"), 4, "StderrTail", "not a size in 0..64KiB" },
	{ EXEC_KEY("WorkingDirectory = tmp"), 4, "WorkingDirectory", "not an absolute path" },
	{ "[pipeline p]\n[stage p/s]\nExec = bin/true\n", 3, "Exec", "absolute path" },
	{ "[pipeline p]\n[stage p/s]\nExec = /no/such/program\n", 3, "Exec", "/no/such/program" },
	{ "[pipeline p]\n[stage p/s]\nExec = /bin/echo 'open\n", 3, "Exec", "unterminated" },
	{ "[pipeline p]\n[stage p/s]\nExec = /bin/echo {bad field}\n", 3, "Exec", "placeholder" },
	{ "[pipeline p]\n[stage p/s]\nExec =\n", 3, "Exec", "empty" },
	{ "[pipeline p]\n[stage p/s]\nPlugin = plugin.so\n", 3, "Plugin", "absolute" },
	{ "[pipeline p]\n[stage p/s]\nPlugin = /no/such/plugin.so\n", 3, "Plugin",
	  "/no/such/plugin.so" },
	/* Whole-file checks: the one nearest the top is reported. */
	{ "[pipeline a]\n" OK_PIPELINE, 1, "[pipeline a]",
	  "pipeline 'a' has no stages (add a [stage a/NAME] section)" },
	{ OK_PIPELINE "[pipeline b]\n[stage b/x]\nWorkers = 1\n[pipeline a]\n", 5, "[stage b/x]",
	  "the stage does nothing" },
	{ OK_PIPELINE "[pipeline a]\n[pipeline b]\n[stage b/x]\nWorkers = 1\n", 4, "[pipeline a]",
	  "has no stages" },
	{ "", 0, "", "no pipeline defined" },
	{ "# nothing but a comment\n[daemon]\nMaxConnections = 5\n", 0, "", "no pipeline defined" },
	/* The first error is the one reported. */
	{ STAGE_KEY("Workers = 0\nCapacity = 0"), 3, "Workers", workers_range },
	{ STAGE_KEY("Workers = 0\nnot a key"), 3, "Workers", workers_range },
	{ STAGE_KEY("not a key\nWorkers = 0"), 3, "", syntax },
	{ STAGE_KEY("not a key\n[nonsense]"), 3, "", syntax },
	{ "[nonsense]\nnot a key\n" OK_PIPELINE, 1, "[nonsense]", "unknown section" },
	{ "[pipeline a]\nWorkers = 0\n", 2, "Workers", "unknown key" },
};

START_TEST(test_invalid)
{
	expect_error(invalid[_i].text, -EINVAL, invalid[_i].line, invalid[_i].key,
	             invalid[_i].reason);
}
END_TEST

START_TEST(test_missing_file_and_unreadable)
{
	Config *sentinel = (Config *)&sentinel, *c = sentinel;
	ConfigError err;
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/nope.conf", tmpdir);
	ck_assert_int_eq(config_load(path, &c, &err), -ENOENT);
	ck_assert_ptr_eq(c, sentinel);
	ck_assert_str_eq(err.file, path);
	ck_assert_uint_eq(err.line, 0);
	ck_assert_str_eq(err.key, "");
	ck_assert_str_eq(err.reason, "No such file or directory");

	/* A directory opens but cannot be read. */
	ck_assert_int_eq(config_load(tmpdir, &c, &err), -EISDIR);
	ck_assert_ptr_eq(c, sentinel);
	ck_assert_uint_eq(err.line, 0);
	ck_assert_str_eq(err.reason, "cannot read: Is a directory");
}
END_TEST

START_TEST(test_nul_byte_and_long_lines)
{
	static const char with_nul[] = "[daemon]\nMaxConnections = 3\0 junk\n" OK_PIPELINE;
	Config *c = NULL;
	ConfigError err;
	write_conf_len(with_nul, sizeof(with_nul) - 1);
	ck_assert_int_eq(config_load(conf_path, &c, &err), -EINVAL);
	ck_assert_uint_eq(err.line, 2);
	ck_assert_str_eq(err.reason, "line contains a NUL byte");

	/* 198 bytes without the newline fit inih's buffer; 199 do not. */
	char line[256];
	for (int len = 198; len <= 199; len++) {
		Text t = { 0 };
		memset(line, 'x', sizeof(line));
		line[0] = '#';
		line[len] = '\0';
		add(&t, "%s\n%s\n" OK_PIPELINE, line, line);
		if (len == 198) {
			config_free(load_ok(t.s));
			/* Also as the last line, without its newline. */
			t.s[t.len - 1] = '\0';
			add(&t, "\n%s", line);
			config_free(load_ok(t.s));
		} else {
			expect_error(t.s, -EINVAL, 1, "", "line longer than 198 bytes");
			/* Also as the last line, without its newline. */
			free(t.s);
			t = (Text){ 0 };
			add(&t, OK_PIPELINE "%s", line);
			expect_error(t.s, -EINVAL, 4, "", "line longer than 198 bytes");
		}
		free(t.s);
	}

	/* Line numbers after long lines are still right (inih alone would
	 * count a long line in 200-byte pieces). */
	char dir[181], comment[199];
	memset(dir, 'd', sizeof(dir) - 1);
	dir[0] = '/';
	dir[sizeof(dir) - 1] = '\0';
	memset(comment, 'c', sizeof(comment) - 1);
	comment[0] = ';';
	comment[sizeof(comment) - 1] = '\0';
	Text t = { 0 };
	add(&t, "[daemon]\nStateDirectory = %s\n%s\nMaxConnections = 0\n" OK_PIPELINE, dir,
	    comment);
	expect_error(t.s, -EINVAL, 4, "MaxConnections", "1..65536");
	free(t.s);
}
END_TEST

START_TEST(test_defaults)
{
	Config *c = load_ok("[pipeline p]\n[stage p/s]\nAction = noop\n");
	ck_assert_str_eq(c->path, conf_path);
	ck_assert_str_eq(c->socket_path, CONFIG_DEFAULT_SOCKET);
	ck_assert_str_eq(c->state_dir, CONFIG_DEFAULT_STATE_DIR);
	ck_assert_uint_eq(c->max_connections, 4096);
	ck_assert_uint_eq(c->max_output_buffer, 4 * 1024 * 1024);
	ck_assert_uint_eq(c->retain_jobs, 10000);
	ck_assert_uint_eq(c->retain_bytes, 64 * 1024 * 1024);
	ck_assert_uint_eq(c->shutdown_timeout_sec, 90);
	ck_assert_uint_eq(c->n_pipelines, 1);
	ck_assert_str_eq(c->pipelines[0].name, "p");
	ck_assert_uint_eq(c->pipelines[0].n_stages, 1);
	ck_assert_str_eq(c->pipelines[0].stages[0].name, "s");
	ck_assert_str_eq(c->pipelines[0].stages[0].action, "noop");
	ck_assert_uint_eq(c->pipelines[0].stages[0].workers, 1);
	ck_assert_uint_eq(c->pipelines[0].stages[0].capacity, 64);
	config_free(c);
	config_free(NULL);

	/* A UTF-8 byte order mark before the first header is skipped. */
	c = load_ok("\xEF\xBB\xBF[pipeline p]\n[stage p/s]\nAction = noop\n");
	ck_assert_str_eq(c->pipelines[0].name, "p");
	config_free(c);
}
END_TEST

START_TEST(test_program_stage_keys)
{
	Config *c = load_ok("[pipeline p]\n"
	                    "[stage p/a]\n"
	                    "Exec = /bin/sh -c 'cat' sh {name}\n"
	                    "Timeout = 1500ms\n"
	                    "TimeoutGrace = 2s\n"
	                    "WorkingDirectory = /tmp\n"
	                    "Stdout = json-required\n"
	                    "StderrTail = 64KiB\n"
	                    "MaxAttempts = 100\n"
	                    "RetryDelay = 2ms\n"
	                    "RetryMaxDelay = 2min\n"
	                    "RetryExitCodes = 75 69,timeout\n"
	                    "[stage p/b]\n"
	                    "Exec = /bin/true\n"
	                    "Timeout = infinity\n"
	                    "[stage p/c]\n"
	                    "Action = fail:2\n"
	                    "MaxAttempts = 3\n"
	                    "RetryDelay = 1h\n");
	const StageConfig *a = &c->pipelines[0].stages[0], *b = &c->pipelines[0].stages[1],
	                  *st = &c->pipelines[0].stages[2];
	ck_assert_str_eq(a->exec, "/bin/sh -c 'cat' sh {name}");
	ck_assert_ptr_null(a->action);
	ck_assert_uint_eq(a->timeout_usec, 1500000);
	ck_assert_uint_eq(a->timeout_grace_usec, 2000000);
	ck_assert_str_eq(a->working_directory, "/tmp");
	ck_assert_uint_eq(a->stdout_mode, PROGRAM_STDOUT_JSON_REQUIRED);
	ck_assert_uint_eq(a->stderr_tail, 65536);
	ck_assert_uint_eq(a->max_attempts, 100);
	ck_assert_uint_eq(a->retry_delay_usec, 2000);
	ck_assert_uint_eq(a->retry_max_delay_usec, 120000000);

	RetryPolicy pol;
	config_stage_retry(a, &pol);
	ck_assert(!pol.any_exit_code && pol.on_timeout && !pol.on_signal);
	ck_assert(pol.exit_codes[75 / 8] & (1u << (75 % 8)));
	ck_assert(pol.exit_codes[69 / 8] & (1u << (69 % 8)));
	ck_assert(!(pol.exit_codes[1 / 8] & (1u << (1 % 8))));

	/* Defaults. */
	ck_assert_uint_eq(b->timeout_usec, 0);
	ck_assert_uint_eq(b->timeout_grace_usec, 5000000);
	ck_assert_ptr_null(b->working_directory);
	ck_assert_uint_eq(b->stdout_mode, PROGRAM_STDOUT_JSON);
	ck_assert_uint_eq(b->stderr_tail, 4096);
	ck_assert_uint_eq(b->max_attempts, 1);
	ck_assert_uint_eq(b->retry_delay_usec, 1000000);
	ck_assert_uint_eq(b->retry_max_delay_usec, 300000000);
	config_stage_retry(b, &pol);
	ck_assert(pol.any_exit_code && pol.on_timeout && pol.on_signal);
	ck_assert_uint_eq(pol.max_attempts, 1);

	/* Retries apply to built-in actions too. */
	ck_assert_str_eq(st->action, "fail:2");
	ck_assert_uint_eq(st->max_attempts, 3);
	ck_assert_uint_eq(st->retry_delay_usec, 3600000000u);
	config_free(c);
}
END_TEST

START_TEST(test_every_key_and_order)
{
	Config *c = load_ok("\xEF\xBB\xBF; a byte order mark, then a comment\n"
	                    "[daemon]\n"
	                    "Socket = /tmp/p.sock\n"
	                    "StateDirectory = /srv/pipelined ; an inline comment\n"
	                    "MaxConnections = 65536\n"
	                    "MaxOutputBuffer = 1GiB\n"
	                    "RetainJobs = 0\n"
	                    "RetainBytes = 16GiB\n"
	                    "ShutdownTimeoutSec: 86400\n"
	                    "\n"
	                    "# stages of b come first in the file, b is still second\n"
	                    "[pipeline a]\n"
	                    "[pipeline b]\n"
	                    "[stage b/z]\n"
	                    "Action = rewrite\n"
	                    "[stage a/zeta]\n"
	                    "Action = fail\n"
	                    "Workers = 1024\n"
	                    "Capacity = 1048576\n"
	                    "[stage a/alpha]\n"
	                    "Workers = 7\n"
	                    "Action = sleep:20\n"
	                    "   ; an indented comment is still a comment\n"
	                    "Capacity = 1\n"
	                    "[stage a/mid]\n"
	                    "Action = busy:5\n"
	                    "[daemon] ; a second [daemon] section adds to the first\n"
	                    "MaxConnections=1\n");
	ck_assert_uint_eq(c->durability, CONFIG_DURABILITY_FULL); /* the defaults */
	ck_assert_uint_eq(c->retain_age_usec, 7 * 86400 * UINT64_C(1000000));
	ck_assert_uint_eq(c->journal_min_free, 64 * 1024 * 1024);
	ck_assert_str_eq(c->socket_path, "/tmp/p.sock");
	ck_assert_str_eq(c->state_dir, "/srv/pipelined");
	ck_assert_uint_eq(c->max_connections, 1);
	ck_assert_uint_eq(c->max_output_buffer, 1024 * 1024 * 1024);
	ck_assert_uint_eq(c->retain_jobs, 0);
	ck_assert_uint_eq(c->retain_bytes, 16ULL << 30);
	ck_assert_uint_eq(c->shutdown_timeout_sec, 86400);

	ck_assert_uint_eq(c->n_pipelines, 2);
	const PipelineConfig *a = &c->pipelines[0], *b = &c->pipelines[1];
	ck_assert_str_eq(a->name, "a");
	ck_assert_str_eq(b->name, "b");
	ck_assert_uint_eq(a->n_stages, 3);
	ck_assert_str_eq(a->stages[0].name, "zeta");
	ck_assert_str_eq(a->stages[0].action, "fail:1"); /* canonical */
	ck_assert_uint_eq(a->stages[0].workers, STAGE_WORKERS_MAX);
	ck_assert_uint_eq(a->stages[0].capacity, QUEUE_CAPACITY_MAX);
	ck_assert_str_eq(a->stages[1].name, "alpha");
	ck_assert_str_eq(a->stages[1].action, "sleep:20");
	ck_assert_uint_eq(a->stages[1].workers, 7);
	ck_assert_uint_eq(a->stages[1].capacity, 1);
	ck_assert_str_eq(a->stages[2].name, "mid");
	ck_assert_str_eq(a->stages[2].action, "busy:5");
	ck_assert_uint_eq(b->n_stages, 1);
	ck_assert_str_eq(b->stages[0].name, "z");
	ck_assert_str_eq(b->stages[0].action, "rewrite");

	ck_assert_ptr_eq(config_find_pipeline(c, "a"), a);
	ck_assert_ptr_eq(config_find_pipeline(c, "b"), b);
	ck_assert_ptr_null(config_find_pipeline(c, "A"));
	ck_assert_ptr_null(config_find_pipeline(c, "z"));
	ck_assert_ptr_null(config_find_pipeline(c, ""));
	config_free(c);
}
END_TEST

START_TEST(test_later_value_wins)
{
	Config *c = load_ok("[daemon]\nSocket = /a.sock\nSocket = /b.sock\n"
	                    "[pipeline p]\n[stage p/s]\nAction = fail:3\nWorkers = 5\n"
	                    "Action = noop\nWorkers = 2\n");
	ck_assert_str_eq(c->socket_path, "/b.sock");
	ck_assert_str_eq(c->pipelines[0].stages[0].action, "noop");
	ck_assert_uint_eq(c->pipelines[0].stages[0].workers, 2);
	config_free(c);

	/* An invalid later value is an error even after a valid one. */
	expect_error(STAGE_KEY("Workers = 2\nWorkers = 0"), -EINVAL, 4, "Workers", workers_range);
}
END_TEST

static const struct {
	const char *text;
	uint64_t bytes;
} sizes[] = {
	{ "65536", 65536 },        { "64K", 64 << 10 }, { "64KiB", 64 << 10 },
	{ "64 KiB", 64 << 10 },    { "1M", 1 << 20 },   { "3MiB", 3 << 20 },
	{ "1G", 1 << 30 },         { "1GiB", 1 << 30 }, { "0001024K", 1 << 20 },
	{ "1073741824", 1 << 30 },
};

START_TEST(test_sizes)
{
	char text[256];
	snprintf(text, sizeof(text), DAEMON_KEY("MaxOutputBuffer = %s"), sizes[_i].text);
	Config *c = load_ok(text);
	ck_assert_uint_eq(c->max_output_buffer, sizes[_i].bytes);
	config_free(c);

	snprintf(text, sizeof(text), DAEMON_KEY("RetainBytes = %s"), sizes[_i].text);
	c = load_ok(text);
	ck_assert_uint_eq(c->retain_bytes, sizes[_i].bytes);
	config_free(c);
}
END_TEST

START_TEST(test_size_and_number_limits)
{
	Config *c = load_ok(DAEMON_KEY("RetainBytes = 0"));
	ck_assert_uint_eq(c->retain_bytes, 0);
	config_free(c);
	c = load_ok(DAEMON_KEY("RetainBytes = 17179869184"));
	ck_assert_uint_eq(c->retain_bytes, 16ULL << 30);
	config_free(c);
	c = load_ok(DAEMON_KEY("MaxOutputBuffer = 64KiB"));
	ck_assert_uint_eq(c->max_output_buffer, 65536);
	config_free(c);
	c = load_ok(DAEMON_KEY("RetainJobs = 10000000"));
	ck_assert_uint_eq(c->retain_jobs, 10000000);
	config_free(c);

	/* Workers and Capacity at their limits, and one past. */
	char text[256];
	snprintf(text, sizeof(text), STAGE_KEY("Workers = %u"), STAGE_WORKERS_MAX);
	c = load_ok(text);
	ck_assert_uint_eq(c->pipelines[0].stages[0].workers, STAGE_WORKERS_MAX);
	config_free(c);
	snprintf(text, sizeof(text), STAGE_KEY("Workers = %u"), STAGE_WORKERS_MAX + 1);
	expect_error(text, -EINVAL, 3, "Workers", workers_range);

	snprintf(text, sizeof(text), STAGE_KEY("Capacity = %u"), QUEUE_CAPACITY_MAX);
	c = load_ok(text);
	ck_assert_uint_eq(c->pipelines[0].stages[0].capacity, QUEUE_CAPACITY_MAX);
	config_free(c);
	snprintf(text, sizeof(text), STAGE_KEY("Capacity = %u"), QUEUE_CAPACITY_MAX + 1);
	expect_error(text, -EINVAL, 3, "Capacity", capacity_range);
}
END_TEST

START_TEST(test_socket_path_length)
{
	/* sun_path holds 107 bytes and the NUL. */
	char path[128], text[256];
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[107] = '\0';
	snprintf(text, sizeof(text), DAEMON_KEY("Socket = %s"), path);
	Config *c = load_ok(text);
	ck_assert_str_eq(c->socket_path, path);
	ck_assert_uint_eq(strlen(c->socket_path), 107);
	config_free(c);

	path[107] = 'a';
	path[108] = '\0';
	snprintf(text, sizeof(text), DAEMON_KEY("Socket = %s"), path);
	expect_error(text, -EINVAL, 2, "Socket",
	             "path longer than 107 bytes, the limit of a Unix socket address");
}
END_TEST

START_TEST(test_name_length)
{
	char n64[STAGE_NAME_MAX + 1], n65[STAGE_NAME_MAX + 2], text[512];
	memset(n64, 'n', STAGE_NAME_MAX);
	n64[STAGE_NAME_MAX] = '\0';
	memset(n65, 'm', STAGE_NAME_MAX + 1);
	n65[STAGE_NAME_MAX + 1] = '\0';

	snprintf(text, sizeof(text), "[pipeline %s]\n[stage %s/%s]\nAction = noop\n", n64, n64,
	         n64);
	Config *c = load_ok(text);
	ck_assert_str_eq(c->pipelines[0].name, n64);
	ck_assert_str_eq(c->pipelines[0].stages[0].name, n64);
	ck_assert_ptr_eq(config_find_pipeline(c, n64), &c->pipelines[0]);
	config_free(c);

	/* The key names the section, shortened to fit ConfigError.key. */
	snprintf(text, sizeof(text), "[pipeline %s]\n[stage %s/s]\nAction = noop\n", n65, n65);
	Config *sentinel = (Config *)&sentinel;
	c = sentinel;
	ConfigError err;
	ck_assert_int_eq(config_load(write_conf(text), &c, &err), -EINVAL);
	ck_assert_ptr_eq(c, sentinel);
	ck_assert_uint_eq(err.line, 1);
	ck_assert_str_eq(err.reason,
	                 "invalid pipeline name (1..64 characters of A-Z a-z 0-9 _ . -)");
	ck_assert_uint_eq(strlen(err.key), sizeof(err.key) - 1);
	ck_assert(strncmp(err.key, "[pipeline mmm", 13) == 0);
	ck_assert_str_eq(err.key + sizeof(err.key) - 4, "...");

	snprintf(text, sizeof(text), "[pipeline p]\n[stage p/%s]\nAction = noop\n", n65);
	ck_assert_int_eq(config_load(write_conf(text), &c, &err), -EINVAL);
	ck_assert_uint_eq(err.line, 2);
	ck_assert(strstr(err.reason, "invalid stage name"));
}
END_TEST

START_TEST(test_stage_count_limit)
{
	for (unsigned n = PIPELINE_STAGES_MAX; n <= PIPELINE_STAGES_MAX + 1; n++) {
		Text t = { 0 };
		add(&t, "[pipeline p]\n");
		for (unsigned i = 0; i < n; i++)
			add(&t, "[stage p/s%u]\nAction = noop\n", i);
		if (n == PIPELINE_STAGES_MAX) {
			Config *c = load_ok(t.s);
			ck_assert_uint_eq(c->pipelines[0].n_stages, PIPELINE_STAGES_MAX);
			for (unsigned i = 0; i < n; i++) {
				char name[16];
				snprintf(name, sizeof(name), "s%u", i);
				ck_assert_str_eq(c->pipelines[0].stages[i].name, name);
			}
			config_free(c);
		} else {
			expect_error(t.s, -EINVAL, 2 + 2 * PIPELINE_STAGES_MAX, "[stage p/s64]",
			             "too many stages in pipeline 'p' (at most 64)");
		}
		free(t.s);
	}
}
END_TEST

START_TEST(test_pipeline_count_limit)
{
	for (unsigned n = CONFIG_PIPELINES_MAX; n <= CONFIG_PIPELINES_MAX + 1; n++) {
		Text t = { 0 };
		for (unsigned i = 0; i < n; i++)
			add(&t, "[pipeline p%u]\n[stage p%u/s]\nAction = noop\n", i, i);
		if (n == CONFIG_PIPELINES_MAX) {
			Config *c = load_ok(t.s);
			ck_assert_uint_eq(c->n_pipelines, CONFIG_PIPELINES_MAX);
			ck_assert_str_eq(c->pipelines[255].name, "p255");
			ck_assert_ptr_eq(config_find_pipeline(c, "p255"), &c->pipelines[255]);
			config_free(c);
		} else {
			expect_error(t.s, -EINVAL, 1 + 3 * CONFIG_PIPELINES_MAX, "[pipeline p256]",
			             "too many pipelines (at most 256)");
		}
		free(t.s);
	}
}
END_TEST

START_TEST(test_same_shape)
{
	Config *c = load_ok("[pipeline base]\n"
	                    "[stage base/a]\nAction = fail\n"
	                    "[stage base/b]\nAction = sleep:5\nCapacity = 8\n"
	                    /* Only worker counts differ, and fail vs fail:1: same. */
	                    "[pipeline workers]\n"
	                    "[stage workers/a]\nAction = fail:1\nWorkers = 9\n"
	                    "[stage workers/b]\nAction = sleep:5\nCapacity = 8\nWorkers = 3\n"
	                    "[pipeline capacity]\n"
	                    "[stage capacity/a]\nAction = fail\n"
	                    "[stage capacity/b]\nAction = sleep:5\nCapacity = 9\n"
	                    "[pipeline action]\n"
	                    "[stage action/a]\nAction = fail\n"
	                    "[stage action/b]\nAction = sleep:6\nCapacity = 8\n"
	                    "[pipeline names]\n"
	                    "[stage names/a]\nAction = fail\n"
	                    "[stage names/c]\nAction = sleep:5\nCapacity = 8\n"
	                    "[pipeline order]\n"
	                    "[stage order/b]\nAction = sleep:5\nCapacity = 8\n"
	                    "[stage order/a]\nAction = fail\n"
	                    "[pipeline longer]\n"
	                    "[stage longer/a]\nAction = fail\n"
	                    "[stage longer/b]\nAction = sleep:5\nCapacity = 8\n"
	                    "[stage longer/c]\nAction = noop\n"
	                    "[pipeline shorter]\n"
	                    "[stage shorter/a]\nAction = fail\n");
	const PipelineConfig *base = config_find_pipeline(c, "base");
	ck_assert_ptr_nonnull(base);
	ck_assert(config_pipeline_same_shape(base, base));
	ck_assert(config_pipeline_same_shape(base, config_find_pipeline(c, "workers")));
	ck_assert(config_pipeline_same_shape(config_find_pipeline(c, "workers"), base));
	static const char *const differ[] = { "capacity", "action", "names",
		                              "order",    "longer", "shorter" };
	for (size_t i = 0; i < ELEMENTSOF(differ); i++) {
		const PipelineConfig *o = config_find_pipeline(c, differ[i]);
		ck_assert_ptr_nonnull(o);
		ck_assert_msg(!config_pipeline_same_shape(base, o), "%s", differ[i]);
		ck_assert_msg(!config_pipeline_same_shape(o, base), "%s", differ[i]);
	}
	config_free(c);

	/* Program stages: every key counts, and Exec= vs Action= differ. */
	c = load_ok("[pipeline base]\n[stage base/a]\nExec = /bin/true {x}\nTimeout = 5s\n"
	            "[pipeline w]\n[stage w/a]\nExec = /bin/true {x}\nTimeout = 5s\nWorkers = 4\n"
	            "[pipeline t]\n[stage t/a]\nExec = /bin/true {x}\nTimeout = 6s\n"
	            "[pipeline e]\n[stage e/a]\nExec = /bin/true {y}\nTimeout = 5s\n"
	            "[pipeline m]\n[stage m/a]\nExec = /bin/true {x}\nTimeout = 5s\nMaxAttempts = 2\n"
	            "[pipeline r]\n[stage r/a]\nExec = /bin/true {x}\nTimeout = 5s\n"
	            "RetryExitCodes = 3\n"
	            "[pipeline o]\n[stage o/a]\nExec = /bin/true {x}\nTimeout = 5s\nStdout = ignore\n"
	            "[pipeline n]\n[stage n/a]\nAction = noop\n");
	base = config_find_pipeline(c, "base");
	ck_assert(config_pipeline_same_shape(base, config_find_pipeline(c, "w")));
	static const char *const differ2[] = { "t", "e", "m", "r", "o", "n" };
	for (size_t i = 0; i < ELEMENTSOF(differ2); i++) {
		const PipelineConfig *o = config_find_pipeline(c, differ2[i]);
		ck_assert_msg(!config_pipeline_same_shape(base, o), "%s", differ2[i]);
		ck_assert_msg(!config_pipeline_same_shape(o, base), "%s", differ2[i]);
	}
	config_free(c);
}
END_TEST

START_TEST(test_error_format)
{
	ConfigError err = { .file = "pipelined.conf",
		            .line = 12,
		            .key = "Workers",
		            .reason = "not a whole number in 1..1024" };
	char buf[512];
	config_error_format(&err, buf, sizeof(buf));
	ck_assert_str_eq(buf, "pipelined.conf:12: Workers: not a whole number in 1..1024");
	err.line = 0;
	config_error_format(&err, buf, sizeof(buf));
	ck_assert_str_eq(buf, "pipelined.conf: Workers: not a whole number in 1..1024");
	err.key[0] = '\0';
	config_error_format(&err, buf, sizeof(buf));
	ck_assert_str_eq(buf, "pipelined.conf: not a whole number in 1..1024");
	err.line = 3;
	config_error_format(&err, buf, sizeof(buf));
	ck_assert_str_eq(buf, "pipelined.conf:3: not a whole number in 1..1024");
	config_error_format(&err, buf, 10); /* truncated, still terminated */
	ck_assert_str_eq(buf, "pipelined");

	/* And from a real load. */
	Config *c;
	ck_assert_int_eq(config_load(write_conf(STAGE_KEY("Workers = 1025")), &c, &err), -EINVAL);
	config_error_format(&err, buf, sizeof(buf));
	char want[PATH_MAX + 96];
	snprintf(want, sizeof(want), "%s:3: Workers: not a whole number in 1..1024", conf_path);
	ck_assert_str_eq(buf, want);
}
END_TEST

START_TEST(test_example_file)
{
	Config *c = NULL;
	ConfigError err;
	char msg[1024] = "";
	int r = config_load(EXAMPLE_CONF, &c, &err);
	if (r < 0)
		config_error_format(&err, msg, sizeof(msg));
	ck_assert_msg(r == 0, "%s", msg);
	/* It states the defaults. */
	ck_assert_str_eq(c->socket_path, CONFIG_DEFAULT_SOCKET);
	ck_assert_str_eq(c->state_dir, CONFIG_DEFAULT_STATE_DIR);
	ck_assert_uint_eq(c->max_connections, 4096);
	ck_assert_uint_eq(c->max_connection_rate, 5000);
	ck_assert_uint_eq(c->max_output_buffer, 4 << 20);
	ck_assert_uint_eq(c->retain_jobs, 10000);
	ck_assert_uint_eq(c->retain_bytes, 64 << 20);
	ck_assert_uint_eq(c->shutdown_timeout_sec, 90);
	ck_assert_uint_eq(c->socket_mode, 0660);
	ck_assert_uint_eq(c->socket_group, CONFIG_GID_UNSET);
	ck_assert_uint_eq(c->keys_set & CONFIG_SET_ACCESS, 0); /* examples are commented out */
	ck_assert_uint_eq(c->max_jobs_per_user, 0);

	ck_assert_uint_eq(c->n_pipelines, 2);
	const PipelineConfig *images = config_find_pipeline(c, "images");
	ck_assert_ptr_eq(images, &c->pipelines[0]);
	ck_assert_uint_eq(images->n_stages, 3);
	static const struct {
		const char *name, *action;
		unsigned workers;
	} want[] = {
		{ "download", "sleep:20", 3 },
		{ "resize", "sleep:50", 4 },
		{ "upload", "sleep:10", 2 },
	};
	for (unsigned i = 0; i < ELEMENTSOF(want); i++) {
		ck_assert_str_eq(images->stages[i].name, want[i].name);
		ck_assert_str_eq(images->stages[i].action, want[i].action);
		ck_assert_uint_eq(images->stages[i].workers, want[i].workers);
	}
	const PipelineConfig *echo = config_find_pipeline(c, "echo");
	ck_assert_ptr_eq(echo, &c->pipelines[1]);
	ck_assert_uint_eq(echo->n_stages, 1);
	ck_assert_str_eq(echo->stages[0].action, "noop");
	config_free(c);
}
END_TEST

/* The durability keys at their limits. */
START_TEST(test_durability_keys)
{
	Config *c = load_ok(DAEMON_KEY("Durability = none\nRetainAge = 3650d\n"
	                               "JournalMinFree = 16384GiB"));
	ck_assert_uint_eq(c->durability, CONFIG_DURABILITY_NONE);
	ck_assert_uint_eq(c->retain_age_usec, 3650 * 86400 * UINT64_C(1000000));
	ck_assert_uint_eq(c->journal_min_free, UINT64_C(16384) << 30);
	config_free(c);
	c = load_ok(DAEMON_KEY("Durability = full\nRetainAge = infinity\nJournalMinFree = 0"));
	ck_assert_uint_eq(c->durability, CONFIG_DURABILITY_FULL);
	ck_assert_uint_eq(c->retain_age_usec, 0);
	ck_assert_uint_eq(c->journal_min_free, 0);
	config_free(c);
	c = load_ok(DAEMON_KEY("RetainAge = 90min"));
	ck_assert_uint_eq(c->retain_age_usec, 90 * 60 * UINT64_C(1000000));
	config_free(c);
}
END_TEST

/* The access keys: defaults, values at their limits, ids and names, lists
 * that grow when given again, and the decision config_access makes. */
START_TEST(test_access_keys)
{
	Config *c = load_ok(OK_PIPELINE);
	ck_assert_uint_eq(c->socket_mode, 0660);
	ck_assert_uint_eq(c->socket_group, CONFIG_GID_UNSET);
	ck_assert_uint_eq(c->keys_set, 0);
	ck_assert_uint_eq(c->allow_users.n + c->allow_groups.n + c->read_only_users.n +
	                          c->read_only_groups.n,
	                  0);
	ck_assert_uint_eq(c->max_jobs_per_user, 0);
	ck_assert_uint_eq(c->max_connection_rate, 5000);
	/* No access key: everyone who can open the socket may do everything. */
	ck_assert_int_eq(config_access(c, 1234, 1234, NULL, 0, 999), CONFIG_ACCESS_ALL);
	config_free(c);

	c = load_ok(DAEMON_KEY("MaxConnectionRate = 0"));
	ck_assert_uint_eq(c->max_connection_rate, 0); /* no pacing */
	config_free(c);
	c = load_ok(DAEMON_KEY("MaxConnectionRate = 1000000"));
	ck_assert_uint_eq(c->max_connection_rate, 1000000);
	config_free(c);

	c = load_ok(DAEMON_KEY("SocketMode = 0\nSocketGroup = 0\nMaxJobsPerUser = 10000000"));
	ck_assert_uint_eq(c->socket_mode, 0);
	ck_assert_uint_eq(c->socket_group, 0);
	ck_assert_uint_eq(c->keys_set, CONFIG_SET_SOCKET_MODE | CONFIG_SET_SOCKET_GROUP);
	ck_assert_uint_eq(c->max_jobs_per_user, 10000000);
	config_free(c);
	c = load_ok(DAEMON_KEY("SocketMode = 0777\nSocketGroup = root\nMaxJobsPerUser = 1"));
	ck_assert_uint_eq(c->socket_mode, 0777);
	ck_assert_uint_eq(c->socket_group, 0); /* the group root is gid 0 everywhere */
	ck_assert_uint_eq(c->max_jobs_per_user, 1);
	config_free(c);
	c = load_ok(DAEMON_KEY("SocketMode = 755\nSocketGroup = 4294967294"));
	ck_assert_uint_eq(c->socket_mode, 0755);
	ck_assert_uint_eq(c->socket_group, 4294967294u);
	config_free(c);

	/* Out of order on purpose: the lists come back sorted. */
	c = load_ok(DAEMON_KEY("AllowUsers = 1001 root\n"
	                       "AllowUsers = 4294967294\t 1002\n"
	                       "AllowGroups = 2000\n"
	                       "ReadOnlyUsers = 3000\n"
	                       "ReadOnlyGroups = 4000 root"));
	ck_assert_uint_eq(c->keys_set, CONFIG_SET_ACCESS);
	ck_assert_uint_eq(c->allow_users.n, 4);
	ck_assert_uint_eq(c->allow_users.ids[0], 0);
	ck_assert_uint_eq(c->allow_users.ids[1], 1001);
	ck_assert_uint_eq(c->allow_users.ids[2], 1002);
	ck_assert_uint_eq(c->allow_users.ids[3], 4294967294u);
	ck_assert_uint_eq(c->allow_groups.n, 1);
	ck_assert_uint_eq(c->read_only_users.n, 1);
	ck_assert_uint_eq(c->read_only_groups.n, 2);
	ck_assert_uint_eq(c->read_only_groups.ids[0], 0);
	const uint32_t self = 999;
	uint32_t groups[] = { 50, 4000 };
	ck_assert_int_eq(config_access(c, 1001, 100, NULL, 0, self), CONFIG_ACCESS_ALL);
	ck_assert_int_eq(config_access(c, 5000, 2000, NULL, 0, self), CONFIG_ACCESS_ALL);
	uint32_t admin[] = { 7, 2000 };
	ck_assert_int_eq(config_access(c, 5000, 100, admin, 2, self), CONFIG_ACCESS_ALL);
	ck_assert_int_eq(config_access(c, 3000, 100, NULL, 0, self), CONFIG_ACCESS_READ_ONLY);
	ck_assert_int_eq(config_access(c, 5000, 100, groups, 2, self), CONFIG_ACCESS_READ_ONLY);
	ck_assert_int_eq(config_access(c, 5000, 4000, NULL, 0, self), CONFIG_ACCESS_READ_ONLY);
	ck_assert_int_eq(config_access(c, 5000, 100, groups, 1, self), CONFIG_ACCESS_NONE);
	ck_assert_int_eq(config_access(c, 5000, 100, NULL, 0, self), CONFIG_ACCESS_NONE);
	/* uid 0 and the daemon's own uid always may. */
	ck_assert_int_eq(config_access(c, 0, 100, NULL, 0, self), CONFIG_ACCESS_ALL);
	ck_assert_int_eq(config_access(c, self, 100, NULL, 0, self), CONFIG_ACCESS_ALL);
	config_free(c);

	/* An empty value empties the list, and still puts a policy in force. */
	c = load_ok(DAEMON_KEY("AllowUsers = 1001 1002\nAllowUsers ="));
	ck_assert_uint_eq(c->allow_users.n, 0);
	ck_assert_uint_eq(c->keys_set, CONFIG_SET_ACCESS);
	ck_assert_int_eq(config_access(c, 1001, 1001, NULL, 0, 999), CONFIG_ACCESS_NONE);
	config_free(c);
}
END_TEST

/* An access list holds CONFIG_ID_LIST_MAX ids, over as many lines as it
 * takes; one more is refused on the line that adds it. */
START_TEST(test_access_list_limit)
{
	for (unsigned extra = 0; extra <= 1; extra++) {
		Text t = { 0 };
		add(&t, "[daemon]\n");
		unsigned lines = 0, n = CONFIG_ID_LIST_MAX + extra;
		for (unsigned i = 0; i < n; i += 16, lines++) {
			add(&t, "ReadOnlyGroups =");
			for (unsigned k = i; k < i + 16 && k < n; k++)
				add(&t, " %u", 10000 + k);
			add(&t, "\n");
		}
		add(&t, OK_PIPELINE);
		if (extra == 0) {
			Config *c = load_ok(t.s);
			ck_assert_uint_eq(c->read_only_groups.n, CONFIG_ID_LIST_MAX);
			ck_assert_uint_eq(c->read_only_groups.ids[CONFIG_ID_LIST_MAX - 1],
			                  10000 + CONFIG_ID_LIST_MAX - 1);
			config_free(c);
		} else {
			expect_error(t.s, -EINVAL, 1 + lines, "ReadOnlyGroups",
			             "more than 1024 groups");
		}
		free(t.s);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_invalid, 0, (int)ELEMENTSOF(invalid));
	tcase_add_test(tc, test_missing_file_and_unreadable);
	tcase_add_test(tc, test_nul_byte_and_long_lines);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_every_key_and_order);
	tcase_add_test(tc, test_program_stage_keys);
	tcase_add_test(tc, test_later_value_wins);
	tcase_add_loop_test(tc, test_sizes, 0, (int)ELEMENTSOF(sizes));
	tcase_add_test(tc, test_size_and_number_limits);
	tcase_add_test(tc, test_socket_path_length);
	tcase_add_test(tc, test_name_length);
	tcase_add_test(tc, test_stage_count_limit);
	tcase_add_test(tc, test_pipeline_count_limit);
	tcase_add_test(tc, test_same_shape);
	tcase_add_test(tc, test_error_format);
	tcase_add_test(tc, test_example_file);
	tcase_add_test(tc, test_durability_keys);
	tcase_add_test(tc, test_access_keys);
	tcase_add_test(tc, test_access_list_limit);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
