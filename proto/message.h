/* message.h — Varlink messages: parsing and validating calls and replies,
 * building them, and reading typed parameters. The one definition of the
 * wire format that the daemon and every client share (see PROTOCOL.md).
 *
 * A message is one JSON object followed by a NUL byte (framing: frame.h).
 *   call:  {"method": "iface.Method", "parameters": {...}, "more": true,
 *           "oneway": true}            (parameters, more, oneway optional)
 *   reply: {"parameters": {...}, "continues": true}
 *   error: {"error": "iface.Error", "parameters": {...}}
 *
 * Ownership follows jansson: functions say whether a json_t is borrowed
 * (the caller keeps its reference) or stolen. Buffers returned in ret_* are
 * new, from malloc, and the caller frees them.
 *
 * Errors are -errno; jansson's -1/NULL never leaks out of this module.
 * Threads: no shared state; any thread. Never logs. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed call. root is the only reference held; the rest borrow from it. */
typedef struct ProtoCall {
	json_t *root;       /* owned */
	const char *method; /* borrowed from root: "iface.Method" */
	json_t *parameters; /* borrowed from root: always an object ({} if absent) */
	bool more;          /* the caller accepts several replies */
	bool oneway;        /* the caller wants no reply */
	/* The message text parsed (borrowed from proto_call_parse's caller):
	 * valid only while that buffer is, so never in a call kept for later. */
	const char *raw;
	size_t raw_len;
} ProtoCall;

/* A parsed reply or error. */
typedef struct ProtoReply {
	json_t *root;       /* owned */
	const char *error;  /* borrowed: the error name, NULL for a normal reply */
	json_t *parameters; /* borrowed: always an object ({} if absent) */
	bool continues;     /* more replies to this call follow */
} ProtoReply;

/* Parses msg[0..len) (a message without its NUL) as a call. Checks, in this
 * order: nesting no deeper than PROTO_DEPTH_MAX (before parsing, so a deep
 * message never reaches the recursive parser), valid JSON, a JSON object,
 * "method" a string of the form "iface.Method", "parameters" absent or an
 * object, "more"/"oneway" absent or booleans, no other keys besides
 * "upgrade" (refused: -EPROTONOSUPPORT).
 * Returns 0 and fills *ret; on failure -EBADMSG (not JSON), -ELOOP (too
 * deep), -EPROTO (valid JSON but not a call), -EPROTONOSUPPORT (upgrade),
 * -ENOMEM, and a one-line reason in err[errlen] that names the problem (for
 * JSON errors: line, column and jansson's text). */
int proto_call_parse(const char *msg, size_t len, ProtoCall *ret, char *err, size_t errlen);
void proto_call_done(ProtoCall *c); /* drops root; accepts a zeroed struct */

/* As proto_call_parse, for a reply or an error (client side). Checks depth,
 * JSON, object, "error" absent or a string, "parameters" absent or an object,
 * "continues" absent or a boolean. */
int proto_reply_parse(const char *msg, size_t len, ProtoReply *ret, char *err, size_t errlen);
void proto_reply_done(ProtoReply *r);

/* True if msg[0..len) nests arrays/objects no deeper than max (strings and
 * escapes inside them are skipped correctly). Linear, no allocation. */
bool proto_depth_ok(const char *msg, size_t len, unsigned max);

/* Building messages. Each returns 0 and a new buffer in *ret holding the
 * compact JSON text followed by its NUL; *ret_len counts the NUL too (the
 * exact number of bytes to send). params is borrowed and may be NULL ({}).
 * -ENOMEM, -EMSGSIZE if the message would exceed PROTO_MESSAGE_MAX. */
#define PROTO_CALL_MORE 1u
#define PROTO_CALL_ONEWAY 2u
int proto_build_call(const char *method, json_t *params, unsigned flags, char **ret,
                     size_t *ret_len);
int proto_build_reply(json_t *params, bool continues, char **ret, size_t *ret_len);
int proto_build_error(const char *error, json_t *params, char **ret, size_t *ret_len);

/* Typed parameter readers for the daemon's dispatch. params is the call's
 * parameters object (borrowed). A missing optional parameter leaves *ret
 * untouched and returns 0; a missing required one or a value of the wrong
 * type or out of [min, max] returns -EINVAL. Values returned are borrowed
 * from params. Integers must be JSON integers (not reals). */
int proto_param_string(json_t *params, const char *name, bool required, const char **ret);
int proto_param_int(json_t *params, const char *name, bool required, int64_t min, int64_t max,
                    int64_t *ret);
int proto_param_bool(json_t *params, const char *name, bool required, bool *ret);
int proto_param_object(json_t *params, const char *name, bool required, json_t **ret);
int proto_param_array(json_t *params, const char *name, bool required, json_t **ret);
/* The first key of params not in the NULL-terminated list known, or NULL.
 * Unknown parameters are refused (InvalidParameter), so a typo is never
 * silently ignored. */
const char *proto_param_unknown(json_t *params, const char *const *known);

/* The interface description of io.pipelined (proto/io.pipelined.varlink),
 * compiled in. Static. */
extern const char proto_interface_description[];
