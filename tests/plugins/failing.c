/* failing.c — a test plugin that fails the way each job's payload asks:
 *
 *   {"return":N}          return N (any int, valid or not)
 *   "reason":"text"       with this reason
 *   "fill":"x"            with result->error filled with 'x', no NUL at all
 *   "bytes":[195,169]     with these bytes as the reason (any, valid UTF-8 or not)
 *   "payload":true        and also return a new payload, which the daemon
 *                         must free without using */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "pipelined-plugin.h"

unsigned pipelined_plugin_abi(void)
{
	return PIPELINED_PLUGIN_ABI;
}

int pipelined_run(void *state, const pipelined_job *job, pipelined_result *result)
{
	int ret = 0, with_payload = 0;
	const char *reason = NULL, *fill = NULL;
	json_t *bytes = NULL;
	json_t *root = json_loads(job->payload, 0, NULL);
	if (!root || json_unpack(root, "{s:i,s?s,s?s,s?o,s?b}", "return", &ret, "reason", &reason,
	                         "fill", &fill, "bytes", &bytes, "payload", &with_payload) < 0) {
		json_decref(root);
		return PIPELINED_FAIL_PERMANENT; /* a broken test: no reason on purpose */
	}
	if (reason)
		strncpy(result->error, reason, sizeof(result->error) - 1);
	if (fill)
		memset(result->error, fill[0], sizeof(result->error));
	for (size_t i = 0; i < json_array_size(bytes) && i < sizeof(result->error); i++)
		result->error[i] = (char)json_integer_value(json_array_get(bytes, i));
	if (with_payload)
		result->payload = strdup("{\"changed\":true}");
	json_decref(root);
	return ret;
}
