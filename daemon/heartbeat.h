/* heartbeat.h — how a worker thread shows it is making progress.
 *
 * Each stage worker owns a Heartbeat: the CLOCK_MONOTONIC time of its last
 * sign of life. The worker beats when it starts a job; code that blocks for
 * long on its behalf beats while it waits, if it can (spawn.c beats from its
 * poll loop while a program runs). The event loop reads heartbeats to decide
 * whether every stage is making progress (the systemd watchdog, see
 * notify.h): a worker running an action whose heartbeat is older than the
 * stale threshold is stuck. A plugin call cannot beat: one that runs longer
 * than the threshold counts as stuck.
 *
 * The worker binds its heartbeat to its thread (heartbeat_bind); deeper code
 * beats with heartbeat_beat() without knowing whose heartbeat it is, and asks
 * heartbeat_period_usec() how often it must beat at least: 0 when nobody
 * watches (no watchdog, or no heartbeat bound to this thread), so that
 * without a watchdog nothing wakes up to beat.
 *
 * Threads: heartbeat_set_period before any worker starts (main); the rest
 * from any thread, each acting on its own thread's binding. */
#pragma once

#include <stdatomic.h>
#include <stdint.h>

typedef struct Heartbeat {
	_Atomic uint64_t usec; /* CLOCK_MONOTONIC µs of the last beat */
} Heartbeat;

/* How often a thread blocked on a job's behalf must beat, at most (µs); 0
 * (the default): nobody watches, never wake up just to beat. */
void heartbeat_set_period(uint64_t usec);

/* Binds hb (borrowed; NULL unbinds) to the calling thread. */
void heartbeat_bind(Heartbeat *hb);

/* Records a sign of life on the calling thread's heartbeat, if it has one. */
void heartbeat_beat(void);

/* The period for the calling thread: 0 if it has no heartbeat bound or if
 * nobody watches. */
uint64_t heartbeat_period_usec(void);
