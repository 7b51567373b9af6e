/* log.h — the daemon's log lines: "pipelined: <message>" on stderr, which
 * systemd sends to the journal. Only the edges log (main, connection
 * handling, a worker's top frame); library-like modules return errors.
 *
 * Threads: any (one fprintf per line; stdio locks the stream). */
#pragma once

#include <stdio.h>

#define log_error(...)   log_line("error", __VA_ARGS__)
#define log_warning(...) log_line("warning", __VA_ARGS__)
#define log_info(...)    log_line(NULL, __VA_ARGS__)

__attribute__((format(printf, 2, 3))) void log_line(const char *level, const char *fmt, ...);
