/* limits.h — the protocol's limits, the one definition daemon and clients share.
 *
 * Every limit bounds memory a peer can make the other side hold. */
#pragma once

/* Largest message on the wire, in bytes, including its terminating NUL. A
 * peer that sends more without a NUL is cut off (its framing is broken). */
#define PROTO_MESSAGE_MAX (1024u * 1024u)
