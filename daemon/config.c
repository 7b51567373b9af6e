/* config.c — reading pipelined.conf.
 *
 * inih splits lines into comments, "[section]" headers and "key = value"
 * pairs; everything else is done here. inih (r55, as Debian builds it) has
 * three habits this module works around, all through the line reader it
 * calls (read_line):
 *
 *  - It only calls the handler for key = value lines, so an empty section
 *    ([pipeline images] has no keys) would go unseen, and it truncates
 *    section names to 49 bytes. The reader therefore reads section headers
 *    itself, before inih sees the line, and ignores inih's section argument.
 *  - It reads a line longer than its 200-byte buffer in pieces, each counted
 *    as a line of its own. The reader reads whole lines with getline and
 *    refuses those that would not fit (CONFIG_LINE_MAX).
 *  - An indented line after a key continues that key's value (Python
 *    configparser style), even across blank lines. Nobody means that in
 *    this file; the reader refuses such a line rather than let it silently
 *    replace a value.
 *
 * The first error stops the reading: the reader then returns end-of-file.
 * inih's own syntax errors (a line that is neither a header nor key = value)
 * come back as the line number ini_parse_stream returns. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "action.h"
#include "exectemplate.h"
#include "pipeline.h"
#include "plugin.h"
#include "program.h"
#include "queue.h"
#include "stage.h"
#include "util.h"

/* Longest line, in bytes without its newline: inih's line buffer is 200
 * bytes and needs room for "\n" and NUL. */
#define CONFIG_LINE_MAX 198

/* Longest socket path: sun_path holds it with its NUL. */
#define SOCKET_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

typedef enum KeyType {
	KEY_NUMBER,     /* decimal whole number in min..max */
	KEY_SIZE,       /* bytes: a number with an optional K/KiB/M/MiB/G/GiB suffix, in min..max */
	KEY_PATH,       /* absolute path of at most max bytes (0: no limit but the line's) */
	KEY_ACTION,     /* an action_parse spec, kept in canonical form */
	KEY_DURATION,   /* microseconds: a number with a unit us, ms, s, min, h, d (none: s), in
	                 * min..max; "infinity" is 0 when min is 0 */
	KEY_TEXT,       /* any text of at most max bytes */
	KEY_EXEC,       /* a command line (exec_template_parse) */
	KEY_PLUGIN,     /* the absolute path of a stage plugin that loads */
	KEY_STDOUT,     /* a ProgramStdout name */
	KEY_EXIT_CODES, /* exit statuses 1..255 and the words "timeout" and "signal" */
	KEY_DURABILITY, /* "full" or "none" (a ConfigDurability) */
	KEY_MODE,       /* permission bits in octal, 0..max */
	KEY_GROUP,      /* a group name or gid, stored as the gid */
	KEY_USER_LIST,  /* user names or uids (a ConfigIdList); given again: appended */
	KEY_GROUP_LIST, /* group names or gids, likewise */
} KeyType;

/* One key of a section: where its value goes and how it is read. Adding a
 * key is adding a line to a table below (and a field to the struct). */
typedef struct KeySpec {
	const char *name;
	KeyType type;
	size_t offset; /* of the field in Config or StageConfig */
	size_t width;  /* sizeof the field: numbers are stored as 4- or 8-byte unsigned */
	uint64_t min, max;
	uint64_t dflt;         /* numbers and sizes */
	const char *dflt_text; /* paths: the default; NULL with required */
	bool required;
	const char *why_max; /* paths: what the length limit is for */
} KeySpec;

#define FIELD(type, field) offsetof(type, field), sizeof(((type *)0)->field)
#define USEC_PER_SEC ((uint64_t)1000000)

static const KeySpec daemon_keys[] = {
	{ "Socket", KEY_PATH, FIELD(Config, socket_path), 0, SOCKET_PATH_MAX, 0,
	  CONFIG_DEFAULT_SOCKET, false, "the limit of a Unix socket address (sun_path)" },
	{ "StateDirectory", KEY_PATH, FIELD(Config, state_dir), 0, 0, 0, CONFIG_DEFAULT_STATE_DIR,
	  false, NULL },
	{ "MaxConnections", KEY_NUMBER, FIELD(Config, max_connections), 1, 65536, 4096, NULL, false,
	  NULL },
	/* 1,000,000 a second is past what one loop can accept anyway. */
	{ "MaxConnectionRate", KEY_NUMBER, FIELD(Config, max_connection_rate), 0, 1000000, 5000,
	  NULL, false, NULL },
	{ "MaxOutputBuffer", KEY_SIZE, FIELD(Config, max_output_buffer), 64 * KIB, GIB, 4 * MIB,
	  NULL, false, NULL },
	{ "RetainJobs", KEY_NUMBER, FIELD(Config, retain_jobs), 0, 10000000, 10000, NULL, false,
	  NULL },
	{ "RetainBytes", KEY_SIZE, FIELD(Config, retain_bytes), 0, 16 * GIB, 64 * MIB, NULL, false,
	  NULL },
	{ "ShutdownTimeoutSec", KEY_NUMBER, FIELD(Config, shutdown_timeout_sec), 1, 86400, 90, NULL,
	  false, NULL },
	{ "RetainAge", KEY_DURATION, FIELD(Config, retain_age_usec), 0, 3650 * 86400 * USEC_PER_SEC,
	  7 * 86400 * USEC_PER_SEC, NULL, false, NULL },
	{ "Durability", KEY_DURABILITY, FIELD(Config, durability), 0, 0, CONFIG_DURABILITY_FULL,
	  NULL, false, NULL },
	{ "JournalMinFree", KEY_SIZE, FIELD(Config, journal_min_free), 0, 16 * 1024 * GIB, 64 * MIB,
	  NULL, false, NULL },
	{ "SocketMode", KEY_MODE, FIELD(Config, socket_mode), 0, 0777, 0660, NULL, false, NULL },
	{ "SocketGroup", KEY_GROUP, FIELD(Config, socket_group), 0, 0, CONFIG_GID_UNSET, NULL,
	  false, NULL },
	{ "AllowUsers", KEY_USER_LIST, FIELD(Config, allow_users), 0, CONFIG_ID_LIST_MAX, 0, NULL,
	  false, NULL },
	{ "AllowGroups", KEY_GROUP_LIST, FIELD(Config, allow_groups), 0, CONFIG_ID_LIST_MAX, 0,
	  NULL, false, NULL },
	{ "ReadOnlyUsers", KEY_USER_LIST, FIELD(Config, read_only_users), 0, CONFIG_ID_LIST_MAX, 0,
	  NULL, false, NULL },
	{ "ReadOnlyGroups", KEY_GROUP_LIST, FIELD(Config, read_only_groups), 0, CONFIG_ID_LIST_MAX,
	  0, NULL, false, NULL },
	/* In flight, a uid's jobs are bounded by the queues anyway; the cap
	 * only has to fit them. */
	{ "MaxJobsPerUser", KEY_NUMBER, FIELD(Config, max_jobs_per_user), 0, 10000000, 0, NULL,
	  false, NULL },
};

/* Stage keys; the indexes name bits of StageConfig.keys_set. */
enum {
	SK_ACTION,
	SK_EXEC,
	SK_PLUGIN,
	SK_PLUGIN_ARG,
	SK_WORKERS,
	SK_CAPACITY,
	SK_MAX_ATTEMPTS,
	SK_RETRY_DELAY,
	SK_RETRY_MAX_DELAY,
	SK_RETRY_EXIT_CODES,
	SK_TIMEOUT,
	SK_TIMEOUT_GRACE,
	SK_WORKING_DIRECTORY,
	SK_STDOUT,
	SK_STDERR_TAIL,
};

static const KeySpec stage_keys[] = {
	[SK_ACTION] = { "Action", KEY_ACTION, FIELD(StageConfig, action), 0, 0, 0, NULL, false,
	                NULL },
	[SK_EXEC] = { "Exec", KEY_EXEC, FIELD(StageConfig, exec), 0, 0, 0, NULL, false, NULL },
	[SK_PLUGIN] = { "Plugin", KEY_PLUGIN, FIELD(StageConfig, plugin), 0, 0, 0, NULL, false,
	                NULL },
	[SK_PLUGIN_ARG] = { "PluginArg", KEY_TEXT, FIELD(StageConfig, plugin_arg), 0, 1024, 0, NULL,
	                    false, NULL },
	[SK_WORKERS] = { "Workers", KEY_NUMBER, FIELD(StageConfig, workers), 1, STAGE_WORKERS_MAX,
	                 1, NULL, false, NULL },
	[SK_CAPACITY] = { "Capacity", KEY_NUMBER, FIELD(StageConfig, capacity), 1,
	                  QUEUE_CAPACITY_MAX, 64, NULL, false, NULL },
	[SK_MAX_ATTEMPTS] = { "MaxAttempts", KEY_NUMBER, FIELD(StageConfig, max_attempts), 1, 100,
	                      1, NULL, false, NULL },
	[SK_RETRY_DELAY] = { "RetryDelay", KEY_DURATION, FIELD(StageConfig, retry_delay_usec), 1000,
	                     86400 * USEC_PER_SEC, USEC_PER_SEC, NULL, false, NULL },
	[SK_RETRY_MAX_DELAY] = { "RetryMaxDelay", KEY_DURATION,
	                         FIELD(StageConfig, retry_max_delay_usec), 1000,
	                         86400 * USEC_PER_SEC, 300 * USEC_PER_SEC, NULL, false, NULL },
	[SK_RETRY_EXIT_CODES] = { "RetryExitCodes", KEY_EXIT_CODES,
	                          FIELD(StageConfig, retry_exit_codes), 0, 0, 0, NULL, false,
	                          NULL },
	[SK_TIMEOUT] = { "Timeout", KEY_DURATION, FIELD(StageConfig, timeout_usec), 0,
	                 7 * 86400 * USEC_PER_SEC, 0, NULL, false, NULL },
	[SK_TIMEOUT_GRACE] = { "TimeoutGrace", KEY_DURATION, FIELD(StageConfig, timeout_grace_usec),
	                       1000, 3600 * USEC_PER_SEC, 5 * USEC_PER_SEC, NULL, false, NULL },
	[SK_WORKING_DIRECTORY] = { "WorkingDirectory", KEY_PATH,
	                           FIELD(StageConfig, working_directory), 0, 0, 0, NULL, false,
	                           NULL },
	[SK_STDOUT] = { "Stdout", KEY_STDOUT, FIELD(StageConfig, stdout_mode), 0, 0,
	                PROGRAM_STDOUT_JSON, NULL, false, NULL },
	[SK_STDERR_TAIL] = { "StderrTail", KEY_SIZE, FIELD(StageConfig, stderr_tail), 0,
	                     PROGRAM_STDERR_TAIL_MAX, 4 * KIB, NULL, false, NULL },
};

/* What a stage does: exactly one of these keys. */
static const unsigned action_keys = 1u << SK_ACTION | 1u << SK_EXEC | 1u << SK_PLUGIN;
/* Keys that only mean something for a program stage. */
static const unsigned exec_only_keys = 1u << SK_RETRY_EXIT_CODES | 1u << SK_TIMEOUT |
                                       1u << SK_TIMEOUT_GRACE | 1u << SK_WORKING_DIRECTORY |
                                       1u << SK_STDOUT | 1u << SK_STDERR_TAIL;

typedef enum SectionKind {
	SECTION_NONE, /* before the first header */
	SECTION_DAEMON,
	SECTION_PIPELINE,
	SECTION_STAGE,
} SectionKind;

/* Where each pipeline and stage was declared, for error messages. */
typedef struct PipelineLines {
	unsigned line;
	unsigned stage_lines[PIPELINE_STAGES_MAX];
} PipelineLines;

typedef struct Parser {
	FILE *f;   /* borrowed */
	Config *c; /* borrowed: being filled */
	char *line;
	size_t line_cap;
	unsigned lineno; /* of the line last handed to inih */
	bool after_key;  /* a key line since the last header: inih would continue it */
	int read_errno;

	SectionKind section;
	unsigned pipeline, stage; /* indexes of the current [pipeline] or [stage] */

	int error; /* 0, or the -errno of the first error, described in err */
	ConfigError err;

	PipelineLines lines[CONFIG_PIPELINES_MAX];
} Parser;

/* Copies src into dst[len], ending it with "..." if it does not fit. */
static void copy_ellipsized(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);
	if (n < len) {
		memcpy(dst, src, n + 1);
		return;
	}
	memcpy(dst, src, len - 4);
	memcpy(dst + len - 4, "...", 4);
}

/* Records the first error; later ones are dropped. Returns 0, the value an
 * inih handler returns to report an error. */
static int __attribute__((format(printf, 5, 6)))
fail(Parser *p, int code, unsigned line, const char *key, const char *fmt, ...)
{
	if (p->error < 0)
		return 0;
	p->error = code;
	p->err.line = line;
	copy_ellipsized(p->err.key, sizeof(p->err.key), key);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err.reason, sizeof(p->err.reason), fmt, ap);
	va_end(ap);
	return 0;
}

static int fail_oom(Parser *p, const char *key)
{
	return fail(p, -ENOMEM, p->lineno, key, "out of memory");
}

/* "64KiB", "1GiB", "0", "1000": the largest unit that divides v. */
static void format_size(uint64_t v, char *buf, size_t len)
{
	if (v != 0 && v % GIB == 0)
		snprintf(buf, len, "%lluGiB", (unsigned long long)(v / GIB));
	else if (v != 0 && v % MIB == 0)
		snprintf(buf, len, "%lluMiB", (unsigned long long)(v / MIB));
	else if (v != 0 && v % KIB == 0)
		snprintf(buf, len, "%lluKiB", (unsigned long long)(v / KIB));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* Reads the decimal digits at the start of s (at least one, no sign).
 * Returns false on overflow or when s does not start with a digit. */
static bool read_digits(const char *s, const char **ret_end, uint64_t *ret)
{
	uint64_t v = 0;
	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*ret_end = s;
	*ret = v;
	return true;
}

static bool parse_number(const char *s, uint64_t *ret)
{
	const char *end;
	uint64_t v;
	if (!read_digits(s, &end, &v) || *end != '\0')
		return false;
	*ret = v;
	return true;
}

/* A unit suffix and what one of it is worth. */
typedef struct Unit {
	const char *suffix;
	uint64_t factor;
} Unit;

/* A whole number, optional blanks, then one of units[] (which may include
 * ""): the number times the unit. False on anything else or on overflow. */
static bool parse_with_unit(const char *s, const Unit *units, size_t n_units, uint64_t *ret)
{
	const char *end;
	uint64_t v;
	if (!read_digits(s, &end, &v))
		return false;
	while (*end == ' ' || *end == '\t')
		end++;
	for (size_t i = 0; i < n_units; i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		if (v > UINT64_MAX / units[i].factor)
			return false;
		*ret = v * units[i].factor;
		return true;
	}
	return false;
}

static bool parse_size(const char *s, uint64_t *ret)
{
	static const Unit units[] = {
		{ "", 1 },      { "K", KIB }, { "KiB", KIB }, { "M", MIB },
		{ "MiB", MIB }, { "G", GIB }, { "GiB", GIB },
	};
	return parse_with_unit(s, units, ELEMENTSOF(units), ret);
}

/* "30s", "500ms", "2min", "1h", "250us", "10" (seconds); "infinity" is 0. */
static bool parse_duration(const char *s, uint64_t *ret)
{
	static const Unit units[] = {
		{ "", USEC_PER_SEC }, { "us", 1 },  { "ms", 1000 }, { "s", USEC_PER_SEC },
		{ "sec", USEC_PER_SEC }, { "min", 60 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC },
		{ "d", 86400 * USEC_PER_SEC },
	};
	if (strcmp(s, "infinity") == 0) {
		*ret = 0;
		return true;
	}
	return parse_with_unit(s, units, ELEMENTSOF(units), ret);
}

/* "75 69 timeout signal" into a policy's fields. Returns false on a bad word. */
static bool parse_exit_codes(const char *s, RetryPolicy *ret)
{
	RetryPolicy p = { 0 };
	char word[32];
	bool any = false;
	while (*s) {
		size_t n = strcspn(s, " \t,");
		if (n > 0) {
			if (n >= sizeof(word))
				return false;
			memcpy(word, s, n);
			word[n] = '\0';
			uint64_t v;
			if (strcmp(word, "timeout") == 0)
				p.on_timeout = true;
			else if (strcmp(word, "signal") == 0)
				p.on_signal = true;
			else if (parse_number(word, &v) && v >= 1 && v <= 255)
				p.exit_codes[v / 8] |= (uint8_t)(1u << (v % 8));
			else
				return false;
			any = true;
		}
		s += n;
		s += strspn(s, " \t,");
	}
	if (!any)
		return false;
	ret->on_timeout = p.on_timeout;
	ret->on_signal = p.on_signal;
	memcpy(ret->exit_codes, p.exit_codes, sizeof(p.exit_codes));
	ret->any_exit_code = false;
	return true;
}

void config_stage_retry(const StageConfig *st, RetryPolicy *ret)
{
	*ret = (RetryPolicy){
		.max_attempts = st->max_attempts,
		.delay_usec = st->retry_delay_usec,
		.max_delay_usec = st->retry_max_delay_usec,
		.any_exit_code = true,
		.on_timeout = true,
		.on_signal = true,
	};
	if (st->retry_exit_codes)
		(void)parse_exit_codes(st->retry_exit_codes, ret); /* validated when read */
}

static void store_number(void *field, size_t width, uint64_t v)
{
	if (width == sizeof(uint32_t)) {
		uint32_t x = (uint32_t)v;
		memcpy(field, &x, sizeof(x));
	} else {
		memcpy(field, &v, sizeof(v));
	}
}

static void store_string(void *field, char *s)
{
	char *old;
	memcpy(&old, field, sizeof(old));
	free(old);
	memcpy(field, &s, sizeof(s));
}

/* Fills base (a Config or StageConfig) with the defaults of keys[]. */
static int apply_defaults(void *base, const KeySpec *keys, size_t n_keys)
{
	for (size_t i = 0; i < n_keys; i++) {
		void *field = (char *)base + keys[i].offset;
		if (keys[i].type == KEY_NUMBER || keys[i].type == KEY_SIZE ||
		    keys[i].type == KEY_DURATION || keys[i].type == KEY_STDOUT ||
		    keys[i].type == KEY_DURABILITY || keys[i].type == KEY_MODE ||
		    keys[i].type == KEY_GROUP) {
			store_number(field, keys[i].width, keys[i].dflt);
		} else if (keys[i].dflt_text) {
			char *s = strdup(keys[i].dflt_text);
			if (!s)
				return -ENOMEM;
			store_string(field, s);
		}
	}
	return 0;
}

/* A uid or gid written as a number: digits only, below (uint32_t)-1, which
 * means "none" to chown and setresuid. -EINVAL if s is not a number at all,
 * -ERANGE if it is one out of range. */
static int parse_id(const char *s, uint32_t *ret)
{
	uint64_t v;
	if (!parse_number(s, &v))
		return -EINVAL;
	if (v >= UINT32_MAX)
		return -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

/* Looks a user (is_group false) or group name up through NSS. Returns 0,
 * -ENOENT if there is none, -ENOMEM, or another -errno from NSS. */
static int lookup_name(const char *name, bool is_group, uint32_t *ret)
{
	size_t size = 1024;
	for (;;) {
		char *buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		int r;
		uint32_t id = 0;
		bool found = false;
		if (is_group) {
			struct group g, *res = NULL;
			r = getgrnam_r(name, &g, buf, size, &res);
			if (r == 0 && res) {
				found = true;
				id = res->gr_gid;
			}
		} else {
			struct passwd pw, *res = NULL;
			r = getpwnam_r(name, &pw, buf, size, &res);
			if (r == 0 && res) {
				found = true;
				id = res->pw_uid;
			}
		}
		free(buf);
		if (r == ERANGE && size < 1024 * 1024) {
			size *= 4;
			continue;
		}
		if (r != 0)
			return -r;
		if (!found)
			return -ENOENT;
		*ret = id;
		return 0;
	}
}

/* One word of SocketGroup= or of an access list: an id or a name. Returns 1,
 * or 0 with the error recorded. */
static int resolve_id(Parser *p, const KeySpec *k, const char *word, bool is_group, uint32_t *ret)
{
	const char *what = is_group ? "group" : "user";
	int r = parse_id(word, ret);
	if (r == 0)
		return 1;
	if (r == -ERANGE)
		return fail(p, -EINVAL, p->lineno, k->name, "%s id %s out of range (0..%u)", what,
		            word, UINT32_MAX - 1);
	r = lookup_name(word, is_group, ret);
	if (r == -ENOMEM)
		return fail_oom(p, k->name);
	if (r == -ENOENT)
		return fail(p, -EINVAL, p->lineno, k->name, "unknown %s '%s'", what, word);
	if (r < 0)
		return fail(p, -EINVAL, p->lineno, k->name, "cannot look %s '%s' up: %s", what,
		            word, strerror(-r));
	return 1;
}

/* Adds the words of value to the list at field (an empty value empties it). */
static int set_id_list(Parser *p, const KeySpec *k, void *field, const char *value, bool is_group)
{
	ConfigIdList *l = field;
	if (value[strspn(value, " \t")] == '\0') {
		free(l->ids);
		*l = (ConfigIdList){ 0 };
		return 1;
	}
	while (*value) {
		value += strspn(value, " \t");
		size_t n = strcspn(value, " \t");
		if (n == 0)
			break;
		char word[CONFIG_LINE_MAX + 1];
		memcpy(word, value, n);
		word[n] = '\0';
		value += n;
		uint32_t id;
		if (!resolve_id(p, k, word, is_group, &id))
			return 0;
		if (l->n >= k->max)
			return fail(p, -EINVAL, p->lineno, k->name, "more than %llu %ss",
			            (unsigned long long)k->max, is_group ? "group" : "user");
		uint32_t *a = realloc(l->ids, (l->n + 1) * sizeof(*a));
		if (!a)
			return fail_oom(p, k->name);
		l->ids = a;
		l->ids[l->n++] = id;
	}
	return 1;
}

/* Reads value for key k into base. Returns 1, or 0 with the error recorded. */
static int set_key(Parser *p, void *base, const KeySpec *k, const char *value)
{
	void *field = (char *)base + k->offset;
	char lo[32], hi[32];
	uint64_t v;

	switch (k->type) {
	case KEY_NUMBER:
		if (!parse_number(value, &v) || v < k->min || v > k->max)
			return fail(p, -EINVAL, p->lineno, k->name,
			            "not a whole number in %llu..%llu", (unsigned long long)k->min,
			            (unsigned long long)k->max);
		store_number(field, k->width, v);
		return 1;
	case KEY_SIZE:
		if (!parse_size(value, &v) || v < k->min || v > k->max) {
			format_size(k->min, lo, sizeof(lo));
			format_size(k->max, hi, sizeof(hi));
			return fail(p, -EINVAL, p->lineno, k->name,
			            "not a size in %s..%s (a whole number with an optional suffix "
			            "K, KiB, M, MiB, G or GiB)",
			            lo, hi);
		}
		store_number(field, k->width, v);
		return 1;
	case KEY_PATH: {
		if (value[0] != '/')
			return fail(p, -EINVAL, p->lineno, k->name, "not an absolute path");
		if (k->max > 0 && strlen(value) > k->max)
			return fail(p, -EINVAL, p->lineno, k->name,
			            "path longer than %llu bytes, %s", (unsigned long long)k->max,
			            k->why_max);
		char *s = strdup(value);
		if (!s)
			return fail_oom(p, k->name);
		store_string(field, s);
		return 1;
	}
	case KEY_ACTION: {
		Action *a;
		const char *why = "invalid";
		int r = action_parse(value, &a, &why);
		if (r == -ENOMEM)
			return fail_oom(p, k->name);
		if (r < 0)
			return fail(p, -EINVAL, p->lineno, k->name, "%s", why);
		/* Canonical, so that "fail" and "fail:1" compare equal in
		 * config_pipeline_same_shape. */
		char buf[ACTION_SPEC_MAX + 1];
		action_format(a, buf, sizeof(buf));
		action_free(a);
		char *s = strdup(buf);
		if (!s)
			return fail_oom(p, k->name);
		store_string(field, s);
		return 1;
	}
	case KEY_DURATION:
		if (!parse_duration(value, &v) || (v < k->min && !(v == 0 && k->min == 0)) ||
		    v > k->max) {
			return fail(p, -EINVAL, p->lineno, k->name,
			            "not a duration in %s (a whole number with a unit us, ms, s, "
			            "min, h or d%s)",
			            k->min == 0 ? "range" : "range, above 0",
			            k->min == 0 ? "; infinity for none" : "");
		}
		store_number(field, k->width, v);
		return 1;
	case KEY_STDOUT: {
		ProgramStdout m;
		if (program_stdout_from_string(value, &m) < 0)
			return fail(p, -EINVAL, p->lineno, k->name,
			            "unknown value (known: json, json-required, ignore)");
		store_number(field, k->width, m);
		return 1;
	}
	case KEY_MODE: {
		/* Octal digits only, as chmod and systemd's SocketMode= take them. */
		char *end;
		errno = 0;
		unsigned long m = strtoul(value, &end, 8);
		if (value[0] < '0' || value[0] > '7' || *end != '\0' || errno != 0 || m > k->max ||
		    strlen(value) > 4)
			return fail(p, -EINVAL, p->lineno, k->name,
			            "not an octal mode in 0000..%04llo (e.g. 0660)",
			            (unsigned long long)k->max);
		store_number(field, k->width, m);
		return 1;
	}
	case KEY_GROUP: {
		uint32_t gid;
		if (!resolve_id(p, k, value, true, &gid))
			return 0;
		store_number(field, k->width, gid);
		return 1;
	}
	case KEY_USER_LIST:
	case KEY_GROUP_LIST:
		return set_id_list(p, k, field, value, k->type == KEY_GROUP_LIST);
	case KEY_DURABILITY:
		if (strcmp(value, "full") == 0)
			v = CONFIG_DURABILITY_FULL;
		else if (strcmp(value, "none") == 0)
			v = CONFIG_DURABILITY_NONE;
		else
			return fail(p, -EINVAL, p->lineno, k->name, "unknown value (known: full, none)");
		store_number(field, k->width, v);
		return 1;
	case KEY_EXIT_CODES: {
		RetryPolicy pol;
		if (!parse_exit_codes(value, &pol))
			return fail(p, -EINVAL, p->lineno, k->name,
			            "expected exit statuses 1..255 and the words timeout and signal, "
			            "separated by spaces");
		break; /* stored as text below */
	}
	case KEY_TEXT:
		if (strlen(value) > k->max)
			return fail(p, -EINVAL, p->lineno, k->name, "longer than %llu bytes",
			            (unsigned long long)k->max);
		break;
	case KEY_EXEC: {
		ExecTemplate *t;
		char why[256];
		int r = exec_template_parse(value, &t, why, sizeof(why));
		if (r == -ENOMEM)
			return fail_oom(p, k->name);
		if (r < 0)
			return fail(p, -EINVAL, p->lineno, k->name, "%s", why);
		exec_template_free(t);
		break;
	}
	case KEY_PLUGIN: {
		/* Loaded now, so that a bad plugin is a configuration error with
		 * its line, not a surprise when the pipeline starts. */
		Plugin *pl;
		char why[256];
		int r = plugin_open(value, NULL, &pl, why, sizeof(why));
		if (r == -ENOMEM)
			return fail_oom(p, k->name);
		if (r < 0)
			return fail(p, -EINVAL, p->lineno, k->name, "%s", why);
		plugin_close(pl);
		break;
	}
	}
	char *copy = strdup(value);
	if (!copy)
		return fail_oom(p, k->name);
	store_string(field, copy);
	return 1;
}

static int unknown_key(Parser *p, const char *name, const char *section, const KeySpec *keys,
                       size_t n_keys)
{
	char known[400] = "";
	size_t used = 0;
	for (size_t i = 0; i < n_keys && used < sizeof(known); i++)
		used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
		                         keys[i].name);
	if (n_keys == 0)
		return fail(p, -EINVAL, p->lineno, name, "unknown key ([%s] sections take no keys)",
		            section);
	return fail(p, -EINVAL, p->lineno, name, "unknown key in [%s] (known: %s)", section, known);
}

/* The CONFIG_SET_* bit a [daemon] key sets when given, or 0. */
static unsigned set_bit(const KeySpec *k)
{
	switch (k->type) {
	case KEY_MODE:
		return CONFIG_SET_SOCKET_MODE;
	case KEY_GROUP:
		return CONFIG_SET_SOCKET_GROUP;
	case KEY_USER_LIST:
	case KEY_GROUP_LIST:
		return CONFIG_SET_ACCESS;
	default:
		return 0;
	}
}

/* The inih handler: one key = value line of the current section. */
static int handle_key(void *userdata, const char *section_ignored, const char *name,
                      const char *value)
{
	Parser *p = userdata;
	const KeySpec *keys = NULL;
	size_t n_keys = 0;
	void *base = NULL;
	const char *section_name = NULL;

	if (p->error < 0)
		return 0;
	if (name[0] == '\0')
		return fail(p, -EINVAL, p->lineno, "",
		            "syntax error (expected [section] or key = value)");

	switch (p->section) {
	case SECTION_NONE:
		return fail(p, -EINVAL, p->lineno, name,
		            "key before the first section header (expected [daemon], [pipeline "
		            "NAME] or [stage PIPELINE/STAGE] above it)");
	case SECTION_DAEMON:
		keys = daemon_keys;
		n_keys = ELEMENTSOF(daemon_keys);
		base = p->c;
		section_name = "daemon";
		break;
	case SECTION_PIPELINE:
		section_name = "pipeline";
		break;
	case SECTION_STAGE:
		keys = stage_keys;
		n_keys = ELEMENTSOF(stage_keys);
		base = &p->c->pipelines[p->pipeline].stages[p->stage];
		section_name = "stage";
		break;
	}

	for (size_t i = 0; i < n_keys; i++)
		if (strcmp(name, keys[i].name) == 0) {
			if (keys == stage_keys)
				((StageConfig *)base)->keys_set |= 1u << i;
			else
				p->c->keys_set |= set_bit(&keys[i]);
			return set_key(p, base, &keys[i], value);
		}
	return unknown_key(p, name, section_name, keys, n_keys);
}

static const char name_rule[] = "1..64 characters of A-Z a-z 0-9 _ . -";

static int pipeline_index(const Config *c, const char *name, unsigned *ret)
{
	for (unsigned i = 0; i < c->n_pipelines; i++)
		if (strcmp(c->pipelines[i].name, name) == 0) {
			*ret = i;
			return 0;
		}
	return -ENOENT;
}

static int begin_pipeline(Parser *p, const char *header, const char *name)
{
	Config *c = p->c;
	unsigned i;

	if (name[0] == '\0')
		return fail(p, -EINVAL, p->lineno, header, "missing name: [pipeline NAME]");
	if (!stage_name_is_valid(name))
		return fail(p, -EINVAL, p->lineno, header, "invalid pipeline name (%s)", name_rule);
	if (pipeline_index(c, name, &i) == 0)
		return fail(p, -EINVAL, p->lineno, header,
		            "duplicate pipeline '%s' (first declared on line %u)", name,
		            p->lines[i].line);
	if (c->n_pipelines >= CONFIG_PIPELINES_MAX)
		return fail(p, -EINVAL, p->lineno, header, "too many pipelines (at most %u)",
		            CONFIG_PIPELINES_MAX);

	PipelineConfig *a = realloc(c->pipelines, (c->n_pipelines + 1) * sizeof(*a));
	if (!a)
		return fail_oom(p, header);
	c->pipelines = a;
	char *s = strdup(name);
	if (!s)
		return fail_oom(p, header);
	c->pipelines[c->n_pipelines] = (PipelineConfig){ .name = s };
	p->lines[c->n_pipelines].line = p->lineno;
	p->pipeline = c->n_pipelines++;
	p->section = SECTION_PIPELINE;
	return 1;
}

/* arg is "PIPELINE/STAGE", modified in place. */
static int begin_stage(Parser *p, const char *header, char *arg)
{
	char *slash = strchr(arg, '/');
	unsigned pi;

	if (!slash)
		return fail(p, -EINVAL, p->lineno, header, "expected [stage PIPELINE/STAGE]");
	*slash = '\0';
	const char *pname = arg, *sname = slash + 1;
	if (pipeline_index(p->c, pname, &pi) < 0)
		return fail(p, -EINVAL, p->lineno, header,
		            "pipeline '%s' is not declared above (put a [pipeline %s] section "
		            "before its stages)",
		            pname, pname);
	if (!stage_name_is_valid(sname))
		return fail(p, -EINVAL, p->lineno, header, "invalid stage name (%s)", name_rule);

	PipelineConfig *pl = &p->c->pipelines[pi];
	for (unsigned i = 0; i < pl->n_stages; i++)
		if (strcmp(pl->stages[i].name, sname) == 0)
			return fail(p, -EINVAL, p->lineno, header,
			            "duplicate stage '%s' in pipeline '%s' (first declared on line "
			            "%u)",
			            sname, pname, p->lines[pi].stage_lines[i]);
	if (pl->n_stages >= PIPELINE_STAGES_MAX)
		return fail(p, -EINVAL, p->lineno, header,
		            "too many stages in pipeline '%s' (at most %u)", pname,
		            PIPELINE_STAGES_MAX);

	StageConfig *a = realloc(pl->stages, (pl->n_stages + 1) * sizeof(*a));
	if (!a)
		return fail_oom(p, header);
	pl->stages = a;
	StageConfig *st = &pl->stages[pl->n_stages];
	*st = (StageConfig){ .name = strdup(sname) };
	if (!st->name)
		return fail_oom(p, header);
	pl->n_stages++; /* counted now, so that config_free frees it */
	if (apply_defaults(st, stage_keys, ELEMENTSOF(stage_keys)) < 0)
		return fail_oom(p, header);
	p->lines[pi].stage_lines[pl->n_stages - 1] = p->lineno;
	p->pipeline = pi;
	p->stage = pl->n_stages - 1;
	p->section = SECTION_STAGE;
	return 1;
}

/* A "[...]" line, start at its '['. Returns 1, or 0 with the error recorded. */
static int begin_section(Parser *p, const char *start)
{
	char body[CONFIG_LINE_MAX + 1], header[CONFIG_LINE_MAX + 3];
	const char *close = strchr(start, ']');
	if (!close)
		return fail(p, -EINVAL, p->lineno, "",
		            "syntax error (expected [section] or key = value)");
	const char *rest = close + 1;
	while (isspace((unsigned char)*rest))
		rest++;
	if (*rest != '\0' && *rest != ';' && *rest != '#')
		return fail(p, -EINVAL, p->lineno, "", "syntax error (text after ']')");

	size_t n = (size_t)(close - start - 1);
	memcpy(body, start + 1, n);
	body[n] = '\0';
	snprintf(header, sizeof(header), "[%s]", body);

	/* "kind" or "kind argument" */
	char *arg = body + strcspn(body, " \t");
	if (*arg != '\0') {
		*arg++ = '\0';
		while (*arg == ' ' || *arg == '\t')
			arg++;
	}

	if (strcmp(body, "daemon") == 0) {
		if (*arg != '\0')
			return fail(p, -EINVAL, p->lineno, header, "[daemon] takes no name");
		p->section = SECTION_DAEMON;
		return 1;
	}
	if (strcmp(body, "pipeline") == 0)
		return begin_pipeline(p, header, arg);
	if (strcmp(body, "stage") == 0)
		return begin_stage(p, header, arg);
	return fail(p, -EINVAL, p->lineno, header,
	            "unknown section (known: [daemon], [pipeline NAME], [stage PIPELINE/STAGE])");
}

/* inih's reader: hands it one whole line at a time, after looking at it
 * (see the top of this file). Returns NULL at end of file and after the
 * first error. */
static char *read_line(char *buf, int size, void *userdata)
{
	Parser *p = userdata;

	if (p->error < 0)
		return NULL;
	errno = 0;
	ssize_t n = getline(&p->line, &p->line_cap, p->f);
	if (n < 0) {
		if (ferror(p->f))
			p->read_errno = errno ? errno : EIO;
		else if (errno == ENOMEM)
			fail_oom(p, "");
		return NULL;
	}
	p->lineno++;

	char *line = p->line;
	if (p->lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
		line += 3; /* UTF-8 byte order mark */
		n -= 3;
	}
	if (strlen(line) != (size_t)n) {
		fail(p, -EINVAL, p->lineno, "", "line contains a NUL byte");
		return NULL;
	}
	size_t content = (size_t)n - (n > 0 && line[n - 1] == '\n');
	if (content > CONFIG_LINE_MAX || (size_t)n + 1 > (size_t)size) {
		fail(p, -EINVAL, p->lineno, "", "line longer than %d bytes", CONFIG_LINE_MAX);
		return NULL;
	}

	/* Classified in inih's order: comment, continuation, section, key. */
	const char *start = line;
	while (isspace((unsigned char)*start))
		start++;
	if (*start == '\0' || *start == ';' || *start == '#') {
		/* blank or comment */
	} else if (start > line && p->after_key) {
		fail(p, -EINVAL, p->lineno, "",
		     "indented line: it would continue the value of the key above (remove the "
		     "leading whitespace)");
		return NULL;
	} else if (*start == '[') {
		if (!begin_section(p, start))
			return NULL;
		p->after_key = false;
	} else {
		p->after_key = true;
	}

	memcpy(buf, line, (size_t)n + 1);
	return buf;
}

/* What is wrong with a stage's combination of keys, or NULL; *ret_key
 * names the key to blame. */
static const char *stage_problem(const StageConfig *st, const char **ret_key, char *buf,
                                 size_t len)
{
	unsigned set = (unsigned)st->keys_set;
	unsigned what = set & action_keys;

	*ret_key = "";
	if (what == 0)
		return "the stage does nothing: give one of Exec=, Plugin= or Action=";
	if (what & (what - 1)) {
		*ret_key = stage_keys[__builtin_ctz(what & (what - 1))].name;
		return "give only one of Exec=, Plugin= and Action=";
	}
	for (unsigned k = 0; k < ELEMENTSOF(stage_keys); k++) {
		bool misplaced = ((exec_only_keys >> k) & 1u && !(set & 1u << SK_EXEC)) ||
		                 (k == SK_PLUGIN_ARG && !(set & 1u << SK_PLUGIN));
		if (!((set >> k) & 1u) || !misplaced)
			continue;
		*ret_key = stage_keys[k].name;
		snprintf(buf, len, "only a stage with %s= takes this key",
		         k == SK_PLUGIN_ARG ? "Plugin" : "Exec");
		return buf;
	}
	return NULL;
}

/* Checks done once the whole file is read: every stage says what it does
 * and every pipeline has a stage. Records the error nearest the top. */
static void check_complete(Parser *p)
{
	const Config *c = p->c;
	unsigned best = 0;
	char header[2 * STAGE_NAME_MAX + 16], reason[256];
	const char *key = "", *why = NULL;

	if (c->n_pipelines == 0) {
		fail(p, -EINVAL, 0, "", "no pipeline defined (add a [pipeline NAME] section)");
		return;
	}
	for (unsigned i = 0; i < c->n_pipelines; i++) {
		const PipelineConfig *pl = &c->pipelines[i];
		if (pl->n_stages == 0 && (best == 0 || p->lines[i].line < best)) {
			best = p->lines[i].line;
			snprintf(header, sizeof(header), "[pipeline %s]", pl->name);
			snprintf(reason, sizeof(reason),
			         "pipeline '%s' has no stages (add a [stage %s/NAME] section)",
			         pl->name, pl->name);
			key = header;
			why = reason;
		}
		for (unsigned j = 0; j < pl->n_stages; j++) {
			unsigned line = p->lines[i].stage_lines[j];
			char buf[128];
			const char *k, *w = stage_problem(&pl->stages[j], &k, buf, sizeof(buf));
			if (!w || (best != 0 && line >= best))
				continue;
			best = line;
			snprintf(header, sizeof(header), "[stage %s/%s]", pl->name,
			         pl->stages[j].name);
			snprintf(reason, sizeof(reason), "%s", w);
			key = k[0] ? k : header;
			why = reason;
		}
	}
	if (why)
		fail(p, -EINVAL, best, key, "%s", why);
}

static void pipeline_config_done(PipelineConfig *pl)
{
	for (unsigned j = 0; j < pl->n_stages; j++) {
		StageConfig *st = &pl->stages[j];
		free(st->name);
		free(st->action);
		free(st->exec);
		free(st->plugin);
		free(st->plugin_arg);
		free(st->retry_exit_codes);
		free(st->working_directory);
	}
	free(pl->stages);
	free(pl->name);
}

void config_free(Config *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->n_pipelines; i++)
		pipeline_config_done(&c->pipelines[i]);
	free(c->pipelines);
	free(c->path);
	free(c->socket_path);
	free(c->state_dir);
	free(c->allow_users.ids);
	free(c->allow_groups.ids);
	free(c->read_only_users.ids);
	free(c->read_only_groups.ids);
	free(c);
}

static void fill_error(ConfigError *err, const char *path, unsigned line, const char *key,
                       const char *reason)
{
	if (!err)
		return;
	*err = (ConfigError){ .line = line };
	copy_ellipsized(err->file, sizeof(err->file), path);
	copy_ellipsized(err->key, sizeof(err->key), key);
	copy_ellipsized(err->reason, sizeof(err->reason), reason);
}

static int cmp_id(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int config_load(const char *path, Config **ret, ConfigError *err)
{
	char ebuf[128];
	int r;

	FILE *f = fopen(path, "re");
	if (!f) {
		r = -errno;
		fill_error(err, path, 0, "", strerror_r(-r, ebuf, sizeof(ebuf)));
		return r;
	}

	Parser *p = calloc(1, sizeof(*p));
	Config *c = calloc(1, sizeof(*c));
	if (!p || !c || !(c->path = strdup(path)) ||
	    apply_defaults(c, daemon_keys, ELEMENTSOF(daemon_keys)) < 0) {
		r = -ENOMEM;
		fill_error(err, path, 0, "", "out of memory");
		goto out;
	}
	p->f = f;
	p->c = c;

	r = ini_parse_stream(read_line, p, handle_key, p);
	if (r > 0 && (p->error == 0 || (unsigned)r < p->err.line)) {
		/* inih found a line that is neither a header nor key = value,
		 * above any error of ours: that one comes first. */
		p->error = 0;
		fail(p, -EINVAL, (unsigned)r, "",
		     "syntax error (expected [section] or key = value)");
	} else if (r < 0) {
		fail(p, -ENOMEM, 0, "", "out of memory");
	}
	if (p->error == 0 && p->read_errno != 0)
		fail(p, -p->read_errno, 0, "", "cannot read: %s",
		     strerror_r(p->read_errno, ebuf, sizeof(ebuf)));
	if (p->error == 0)
		check_complete(p);
	if (p->error == 0) {
		ConfigIdList *lists[] = { &c->allow_users, &c->allow_groups, &c->read_only_users,
			                  &c->read_only_groups };
		for (size_t i = 0; i < ELEMENTSOF(lists); i++)
			if (lists[i]->n > 1)
				qsort(lists[i]->ids, lists[i]->n, sizeof(uint32_t), cmp_id);
	}

	r = p->error;
	if (r < 0) {
		fill_error(err, path, p->err.line, p->err.key, p->err.reason);
		goto out;
	}
	*ret = c;
	c = NULL;
out:
	config_free(c);
	if (p)
		free(p->line);
	free(p);
	fclose(f);
	return r;
}

void config_error_format(const ConfigError *err, char *buf, size_t len)
{
	char line[16] = "";
	if (err->line > 0)
		snprintf(line, sizeof(line), ":%u", err->line);
	snprintf(buf, len, "%s%s: %s%s%s", err->file, line, err->key, err->key[0] ? ": " : "",
	         err->reason);
}

const PipelineConfig *config_find_pipeline(const Config *c, const char *name)
{
	unsigned i;
	if (!c || !name || pipeline_index(c, name, &i) < 0)
		return NULL;
	return &c->pipelines[i];
}

bool config_pipeline_same_shape(const PipelineConfig *a, const PipelineConfig *b)
{
	if (a->n_stages != b->n_stages)
		return false;
	for (unsigned i = 0; i < a->n_stages; i++) {
		const StageConfig *x = &a->stages[i], *y = &b->stages[i];
		const char *const xs[] = { x->name, x->action, x->exec, x->plugin, x->plugin_arg,
			                   x->retry_exit_codes, x->working_directory };
		const char *const ys[] = { y->name, y->action, y->exec, y->plugin, y->plugin_arg,
			                   y->retry_exit_codes, y->working_directory };
		for (size_t k = 0; k < ELEMENTSOF(xs); k++)
			if ((xs[k] == NULL) != (ys[k] == NULL) ||
			    (xs[k] && strcmp(xs[k], ys[k]) != 0))
				return false;
		if (x->capacity != y->capacity || x->max_attempts != y->max_attempts ||
		    x->retry_delay_usec != y->retry_delay_usec ||
		    x->retry_max_delay_usec != y->retry_max_delay_usec ||
		    x->timeout_usec != y->timeout_usec ||
		    x->timeout_grace_usec != y->timeout_grace_usec ||
		    x->stdout_mode != y->stdout_mode || x->stderr_tail != y->stderr_tail)
			return false;
	}
	return true;
}

static bool id_list_has(const ConfigIdList *l, uint32_t id)
{
	return l->n > 0 && bsearch(&id, l->ids, l->n, sizeof(uint32_t), cmp_id);
}

/* gid or one of groups is in l. */
static bool groups_in(const ConfigIdList *l, uint32_t gid, const uint32_t *groups, size_t n_groups)
{
	if (id_list_has(l, gid))
		return true;
	for (size_t i = 0; i < n_groups; i++)
		if (id_list_has(l, groups[i]))
			return true;
	return false;
}

ConfigAccess config_access(const Config *c, uint32_t uid, uint32_t gid, const uint32_t *groups,
                           size_t n_groups, uint32_t self_uid)
{
	if (uid == 0 || uid == self_uid || !(c->keys_set & CONFIG_SET_ACCESS))
		return CONFIG_ACCESS_ALL;
	if (id_list_has(&c->allow_users, uid) || groups_in(&c->allow_groups, gid, groups, n_groups))
		return CONFIG_ACCESS_ALL;
	if (id_list_has(&c->read_only_users, uid) ||
	    groups_in(&c->read_only_groups, gid, groups, n_groups))
		return CONFIG_ACCESS_READ_ONLY;
	return CONFIG_ACCESS_NONE;
}
