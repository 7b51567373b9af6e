#include "notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "util.h"

static bool enabled;
static uint64_t watchdog_usec;
static bool stopping;
static char last_status[NOTIFY_STATUS_MAX];

int notify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	enabled = e && e[0];
	uint64_t usec = 0;
	/* unset_environment = 1: the stages' programs must not inherit them. */
	int r = sd_watchdog_enabled(1, &usec);
	watchdog_usec = enabled && r > 0 ? usec : 0;
	return r < 0 ? r : 0;
}

bool notify_enabled(void)
{
	return enabled;
}

uint64_t notify_watchdog_usec(void)
{
	return watchdog_usec;
}

uint64_t notify_stale_usec(void)
{
	return watchdog_usec;
}

/* Sends text plus, if status is not NULL, STATUS=status (remembered). */
static void send_with_status(const char *text, const char *status)
{
	if (!enabled)
		return;
	if (!status) {
		if (text[0])
			(void)sd_notify(0, text);
		return;
	}
	snprintf(last_status, sizeof(last_status), "%s", status);
	(void)sd_notifyf(0, "%s%sSTATUS=%s", text, text[0] ? "\n" : "", last_status);
}

void notify_ready(const char *status)
{
	send_with_status("READY=1", status);
}

void notify_reloading(void)
{
	if (!enabled)
		return;
	(void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
	                 (unsigned long long)mono_usec());
	snprintf(last_status, sizeof(last_status), "reloading");
}

void notify_stopping(const char *status)
{
	send_with_status(stopping ? "" : "STOPPING=1", status);
	stopping = true;
}

void notify_status(const char *status)
{
	char cut[NOTIFY_STATUS_MAX];
	snprintf(cut, sizeof(cut), "%s", status);
	if (strcmp(cut, last_status) != 0)
		send_with_status("", cut);
}

void notify_watchdog(void)
{
	if (enabled && watchdog_usec > 0)
		(void)sd_notify(0, "WATCHDOG=1");
}
