/* util.h — small helpers shared by every module of the daemon core.
 *
 * Header-only; no state. Safe to use from any thread. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Microseconds on CLOCK_MONOTONIC (durations) and CLOCK_REALTIME (timestamps
 * shown to users). Both cannot fail on Linux for these clocks. */
static inline uint64_t now_usec(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t mono_usec(void)
{
	return now_usec(CLOCK_MONOTONIC);
}

static inline uint64_t real_usec(void)
{
	return now_usec(CLOCK_REALTIME);
}
