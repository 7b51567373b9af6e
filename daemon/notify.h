/* notify.h — what the daemon tells systemd (sd_notify(3)): READY=1,
 * STATUS=, RELOADING=1, STOPPING=1, WATCHDOG=1.
 *
 * notify_init reads the environment once: NOTIFY_SOCKET (without it every
 * call here does nothing, and the daemon starts no timer for systemd's sake)
 * and the watchdog settings (WATCHDOG_USEC, and WATCHDOG_PID if set, as
 * sd_watchdog_enabled(3) reads them; then removed from the environment, so
 * that programs the stages run do not see them).
 *
 * The watchdog (systemd.service(5) WatchdogSec=): the loop pings at half the
 * interval, and only while every stage makes progress (see heartbeat.h and
 * the server's watchdog section): a worker silent for longer than
 * notify_stale_usec() stops the pings.
 *
 * Owns: process-wide state, set once by notify_init. Threads: the loop's
 * thread only (notify_init from main before any thread starts). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Longest STATUS= text sent; longer is cut. */
#define NOTIFY_STATUS_MAX 256u

/* Reads the environment (see above). Returns 0, or -errno when the
 * watchdog settings are malformed (they are then ignored). */
int notify_init(void);

/* True if NOTIFY_SOCKET is set: someone listens to what we send. */
bool notify_enabled(void);

/* The watchdog interval in µs, or 0 when there is no watchdog (or nobody to
 * ping: no NOTIFY_SOCKET). */
uint64_t notify_watchdog_usec(void);

/* How long a worker may run an action without a heartbeat before it counts
 * as stuck: the watchdog interval itself, so that a stuck stage is noticed
 * within 1.5 intervals and systemd acts one interval later. */
uint64_t notify_stale_usec(void);

/* READY=1 with status (may be NULL). */
void notify_ready(const char *status);

/* RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC now), as systemd 253's
 * Type=notify-reload expects and 252's Type=notify accepts. */
void notify_reloading(void);

/* STOPPING=1 with status (may be NULL); once: later calls send only the
 * status. */
void notify_stopping(const char *status);

/* STATUS=status, unless it is what was sent last. */
void notify_status(const char *status);

/* WATCHDOG=1. */
void notify_watchdog(void);
