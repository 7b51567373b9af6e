/* rawjson.h — the raw text of values inside a message that has already
 * parsed as a valid call, without building or re-encoding them.
 *
 * The daemon stores a job's payload as JSON text. Re-encoding each payload
 * from jansson's tree (json_dumps) cost a quarter of the loop thread's time
 * in a batch submit; when the client already sent it compact, its own bytes
 * are the same JSON. This scanner finds those bytes.
 *
 * Only for text that jansson accepted (proto_call_parse): the scanner checks
 * bounds but not grammar. Keys written with escapes are not matched
 * (-ENOENT): the caller then falls back to re-encoding.
 *
 * Threads: no state; any thread. Never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct ProtoSlice {
	const char *text; /* borrowed from the message */
	size_t len;
	bool compact;   /* no whitespace outside strings: as json_dumps(JSON_COMPACT) spaces it */
	unsigned depth; /* nesting of arrays and objects; the value's own brackets are level 1 */
} ProtoSlice;

/* Finds "parameters" → name in the call msg[0..len). With elements set,
 * the value must be an array and each element becomes one slice; otherwise
 * the value itself is the one slice. Returns the number of slices stored
 * (at most max), -ENOENT if the key is not found plainly spelled or is not
 * an array when elements are wanted, -E2BIG if there are more than max
 * elements, -EBADMSG if the text ends early (not valid JSON). */
int proto_raw_param(const char *msg, size_t len, const char *name, bool elements, ProtoSlice *out,
                    size_t max);
