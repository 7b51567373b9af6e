/* crashpoint.c — see crashpoint.h. */
#include "crashpoint.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char armed_name[64];
static unsigned long armed_at;
static atomic_bool armed;
static atomic_ulong passes;

int crashpoint_init(void)
{
	const char *v = getenv("PIPELINED_CRASH_AT");
	if (!v || !*v)
		return 0;
	const char *colon = strrchr(v, ':');
	if (!colon || colon == v || (size_t)(colon - v) >= sizeof(armed_name))
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long n = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || n == 0)
		return -EINVAL;
	memcpy(armed_name, v, (size_t)(colon - v));
	armed_name[colon - v] = '\0';
	armed_at = n;
	atomic_store(&armed, true);
	return 0;
}

void crashpoint(const char *name)
{
	if (!atomic_load_explicit(&armed, memory_order_relaxed))
		return;
	if (strcmp(name, armed_name) != 0)
		return;
	if (atomic_fetch_add(&passes, 1) + 1 == armed_at) {
		static const char msg[] = "pipelined: crash point reached\n";
		ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
		(void)r;
		_exit(CRASHPOINT_EXIT_STATUS);
	}
}
