#include "heartbeat.h"

#include <stddef.h>

#include "util.h"

static _Atomic uint64_t period_usec;
static _Thread_local Heartbeat *bound;

void heartbeat_set_period(uint64_t usec)
{
	atomic_store_explicit(&period_usec, usec, memory_order_relaxed);
}

void heartbeat_bind(Heartbeat *hb)
{
	bound = hb;
}

void heartbeat_beat(void)
{
	if (bound)
		atomic_store_explicit(&bound->usec, mono_usec(), memory_order_release);
}

uint64_t heartbeat_period_usec(void)
{
	return bound ? atomic_load_explicit(&period_usec, memory_order_relaxed) : 0;
}
