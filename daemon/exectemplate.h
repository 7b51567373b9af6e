/* exectemplate.h — a stage's Exec= command line, and the argv it becomes
 * for one job.
 *
 *   Exec = /usr/bin/curl -fsS -o source.png -- {url}
 *
 * The line is split into words like a systemd ExecStart= line: words are
 * separated by blanks; "double quotes" and 'single quotes' group blanks into
 * one word; inside double quotes and outside quotes a backslash escapes the
 * next character. No shell runs unless the administrator writes one
 * (Exec = /bin/sh -c '...').
 *
 * {field} inside a word is replaced by the job payload's top-level field of
 * that name (names: [A-Za-z0-9_-], 1..64 bytes): a string as is, a number
 * as its JSON text, true/false. "{{" and "}}" are literal braces, and the
 * only way to write one: quoting groups blanks but does not hide braces
 * ('{x}' is a placeholder), and a backslash before a brace is an error. A value
 * always stays inside its one word: it can never become several arguments.
 * It can never become an option either: a word that *starts* with a
 * placeholder and expands to text starting with '-' is refused, unless a
 * literal "--" word comes before it. The program (the first word) cannot
 * contain a placeholder; it is an absolute path, or a name looked up in
 * PATH when the line is parsed.
 *
 * Owns: its words. Threads: parse and free from the owner; expand from any
 * number of threads at once (the template is read-only after parse). */
#pragma once

#include <stddef.h>

typedef struct ExecTemplate ExecTemplate;

/* Longest Exec= line and most words in one. */
#define EXEC_LINE_MAX 4096u
#define EXEC_WORDS_MAX 256u

/* Parses line. Returns 0 and a new template in *ret; -EINVAL with a
 * one-line reason in err[errlen] (unbalanced quote, bad placeholder, empty,
 * program not found...; err may be NULL); -ENOMEM. */
int exec_template_parse(const char *line, ExecTemplate **ret, char *err, size_t errlen);

/* The argv for a job whose payload is the JSON object text payload[len].
 * Returns 0 and a NULL-terminated argv (free with exec_argv_free); -EINVAL
 * with a reason naming the field ("payload has no field 'url'", "payload
 * field 'url' is an object; only strings, numbers and booleans can be
 * substituted", "payload field 'file' starts with '-' ..."); -E2BIG when
 * the argv's strings, with their NULs, would pass 128 KiB; -ENOMEM. A
 * template without placeholders never reads the payload (it may be NULL). */
int exec_template_expand(const ExecTemplate *t, const char *payload, size_t len,
                         char ***ret_argv, char *err, size_t errlen);

/* The argv is one allocation, strings included: free only the whole. */
void exec_argv_free(char **argv); /* accepts NULL */

/* The words joined by single spaces, with the program resolved; for stats
 * and logs. One line, quoted so that it parses back into the same template. Borrowed; valid while t lives. */
const char *exec_template_text(const ExecTemplate *t);

/* True if any word has a placeholder (the payload must then be parsed). */
int exec_template_has_fields(const ExecTemplate *t);

void exec_template_free(ExecTemplate *t); /* accepts NULL */
