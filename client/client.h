/* client.h — a blocking connection to pipelined's control socket.
 *
 * A Client owns one connected Unix stream socket and the framing state of the
 * replies read from it. It sends calls built by proto_build_call and reads
 * replies parsed by proto_reply_parse (proto/message.h). Calls on one
 * connection are answered in the order they were sent, so a caller may send
 * several calls and then read their replies (pipelining). A call sent with
 * PROTO_CALL_MORE may be answered by several replies: each but the last has
 * continues = true.
 *
 * All I/O blocks. EINTR is retried and never returned; short writes are
 * completed; SIGPIPE is never raised (MSG_NOSIGNAL). Errors are -errno, and
 * the transport errors tell a vanished peer from a peer speaking nonsense:
 *   -ECONNRESET  the daemon closed or reset the connection (also mid-reply)
 *   -EPIPE       the daemon closed its end while a call was being sent
 *   -EPROTO      a reply that is not a Varlink reply (client_error_reason)
 *   -EMSGSIZE    (client_recv) a reply over PROTO_MESSAGE_MAX
 * After any of these the Client is broken: every later send or receive
 * returns the same error at once (where the next reply begins is unknown).
 * One exception: after a send failed with -EPIPE / -ECONNRESET, replies the
 * daemon sent before it went can still be received, until the end of them
 * (-ECONNRESET).
 * An error *reply* from the daemon ({"error": ...}) is not a failure of these
 * functions: they return 0 with reply->error set.
 *
 * Owns: the socket and its read buffer. Borrows: nothing past a call.
 * Threads: one thread at a time per Client. Never logs. */
#pragma once

#include "proto/message.h"

#include <stdbool.h>

typedef struct Client Client;

/* Connects to the Unix stream socket at path (SOCK_CLOEXEC). Returns 0 and a
 * new Client in *ret; -EINVAL (empty path), -ENAMETOOLONG (path of 108 bytes
 * or more: it would not fit sockaddr_un), -ENOMEM, or connect(2)'s error
 * (-ENOENT, -ECONNREFUSED, -EACCES, ...). */
int client_connect(const char *path, Client **ret);

/* Closes the socket and frees the Client. Replies not read are dropped.
 * Accepts NULL. */
void client_free(Client *c);

/* Sends one call. params is borrowed and may be NULL ({}). flags are
 * PROTO_CALL_MORE / PROTO_CALL_ONEWAY (proto/message.h); a oneway call gets
 * no reply and is not counted as pending. Returns 0 once the whole message is
 * written to the socket; -EMSGSIZE if the call would exceed PROTO_MESSAGE_MAX
 * (nothing sent, the Client stays usable); -ENOMEM; a transport error. */
int client_send(Client *c, const char *method, json_t *params, unsigned flags);

/* Reads the next reply; it answers the oldest pending call. Returns 0 and
 * fills *ret (the caller owns it: proto_reply_done); -EINVAL if no call is
 * pending (it would block for ever); -ENOMEM; a transport error. A reply
 * with continues = false (or an error reply) ends its call. */
int client_recv(Client *c, ProtoReply *ret);

/* client_send + client_recv for a call with one reply. Returns -EBUSY if
 * other calls are still pending (their replies would come first). */
int client_call(Client *c, const char *method, json_t *params, ProtoReply *ret);

/* 0, or the transport error that broke the connection, sending or
 * receiving (see the top). */
int client_broken(const Client *c);

/* Calls sent whose last reply has not been read yet. */
unsigned client_pending(const Client *c);

/* A one-line reason for the last -EPROTO or -EMSGSIZE (static storage inside
 * the Client, valid until the next call); "" if there is none. */
const char *client_error_reason(const Client *c);

/* The socket, e.g. to poll it. Still owned by the Client. */
int client_fd(const Client *c);
