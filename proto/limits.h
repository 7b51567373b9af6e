/* limits.h — the protocol's limits, the one definition daemon and clients share.
 *
 * Every limit bounds memory or work a peer can make the other side spend.
 * Each has a test at the limit and one past it. */
#pragma once

/* Largest message on the wire, in bytes, including its terminating NUL. A
 * peer that sends more without a NUL is cut off (its framing is broken). */
#define PROTO_MESSAGE_MAX (1024u * 1024u)

/* Deepest nesting of arrays and objects in a message, the envelope
 * included ({"parameters":{"payload":{...}}} is depth 3 at the payload).
 * Checked before parsing, so the recursive parser never sees more. */
#define PROTO_DEPTH_MAX 64u

/* Largest job payload, in bytes of compact JSON. A payload travels through
 * every stage and is kept with finished jobs, so it is bounded apart from
 * the message: a 1 MiB batch of 1000 small jobs is fine, one 1 MiB job is not. */
#define PROTO_PAYLOAD_MAX (64u * 1024u)

/* Deepest nesting inside one payload (the payload object itself is level 1).
 * A payload sits three levels deep in a Submit call but four deep in a
 * GetJob or WaitJob reply ({"parameters":{"job":{"payload":...}}}), so it
 * must leave room for that reply to stay within PROTO_DEPTH_MAX. */
#define PROTO_PAYLOAD_DEPTH_MAX (PROTO_DEPTH_MAX - 4u)

/* Most jobs in one SubmitBatch call. */
#define PROTO_BATCH_MAX 1000u

/* ListJobs page size: default and largest. */
#define PROTO_LIST_DEFAULT 100u
#define PROTO_LIST_MAX 1000u

/* Longest idempotency key of a Submit, in bytes. Kept with the job and in
 * the journal for as long as the job is. */
#define PROTO_KEY_MAX 256u

/* Longest pipeline or stage name (the engine's STAGE_NAME_MAX). */
#define PROTO_NAME_MAX 64u
