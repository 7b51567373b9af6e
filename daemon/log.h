/* log.h — the daemon's log lines, on stderr, which systemd sends to the
 * journal. Only the edges log (main, connection handling, a worker's top
 * frame); library-like modules return errors.
 *
 * Two forms. When stderr is the journal's stream (JOURNAL_STREAM names
 * stderr's device and inode, systemd.exec(5)), each line starts with its
 * priority as sd-daemon(3) prefixes it ("<3>" error, "<4>" warning, "<6>"
 * info) and nothing else: the journal already records who wrote it.
 * Otherwise (a terminal, a file, a test): "pipelined: error: <message>",
 * "pipelined: warning: <message>", "pipelined: <message>".
 *
 * Threads: log_init from main before any thread starts; log_line from any
 * (one fprintf per line; stdio locks the stream). */
#pragma once

#include <stdio.h>
#include <syslog.h>

#define log_error(...)   log_line(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_line(LOG_WARNING, __VA_ARGS__)
#define log_info(...)    log_line(LOG_INFO, __VA_ARGS__)

/* Decides the form (see above) by looking at JOURNAL_STREAM and stderr. */
void log_init(void);

/* One line at priority (LOG_ERR, LOG_WARNING, LOG_INFO). */
__attribute__((format(printf, 2, 3))) void log_line(int priority, const char *fmt, ...);
