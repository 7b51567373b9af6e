/* util.h — small helpers shared by every module of the daemon core.
 *
 * Header-only; no state. Safe to use from any thread. */
#pragma once

#include <stdbool.h>
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

/* usec (on some clock) as a timespec: a deadline for pthread_cond_timedwait
 * on a condition variable using that clock. */
static inline struct timespec usec_to_timespec(uint64_t usec)
{
	return (struct timespec){ .tv_sec = (time_t)(usec / 1000000u),
		                  .tv_nsec = (long)(usec % 1000000u) * 1000 };
}

/* Replaces every byte of s[len] that is not part of valid UTF-8 with '?', in
 * place, so that text from outside (a program's stderr) can go into JSON.
 * Overlong forms, surrogates and code points above U+10FFFF are invalid. */
static inline void utf8_sanitize(char *s, size_t len)
{
	unsigned char *p = (unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		unsigned c = p[i];
		size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
		                                : (c & 0xF8) == 0xF0                ? 4
		                                                                    : 0;
		bool ok = n > 0 && i + n <= len;
		uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
		for (size_t k = 1; ok && k < n; k++) {
			ok = (p[i + k] & 0xC0) == 0x80;
			cp = cp << 6 | (p[i + k] & 0x3F);
		}
		if (ok && n > 1) {
			static const uint32_t min_cp[] = { 0, 0, 0x80, 0x800, 0x10000 };
			ok = cp >= min_cp[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
		}
		if (ok) {
			i += n;
		} else {
			p[i] = '?';
			i++;
		}
	}
}
