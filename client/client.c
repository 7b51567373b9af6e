#include "client.h"

#include "proto/frame.h"
#include "proto/limits.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Bytes asked of one recv(2). Replies are mostly small; a SubmitBatch reply
 * of 1000 ids is about 8 KiB. */
#define CLIENT_READ_CHUNK (64u * 1024u)

#define REASON_TOO_LONG "a reply longer than the protocol's limit of 1 MiB"
_Static_assert(PROTO_MESSAGE_MAX == 1024u * 1024u, "REASON_TOO_LONG names the limit");

struct Client {
	int fd;
	FrameReader reader;
	unsigned pending; /* calls whose last reply is still to come */
	int broken;       /* 0, or the transport error every call now returns */
	int send_broken;  /* 0, or why sending failed: replies may still be read */
	char reason[256]; /* why the connection broke with -EPROTO / -EMSGSIZE */
};

/* connect(2) interrupted by a signal goes on in the background and cannot
 * simply be retried (EALREADY): wait for it to finish and read its result. */
static int connect_finish(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	for (;;) {
		int n = poll(&p, 1, -1);
		if (n >= 0)
			break;
		if (errno != EINTR)
			return -errno;
	}
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

int client_connect(const char *path, Client **ret)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(path);
	if (len == 0)
		return -EINVAL;
	/* Room for the terminating NUL: a path that fills sun_path exactly is
	 * accepted by Linux but not portable, and not what a user meant. */
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len + 1);

	Client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		int r = -errno;
		free(c);
		return r;
	}
	int r = 0;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		r = errno == EINTR ? connect_finish(c->fd) : -errno;
	if (r < 0) {
		close(c->fd);
		free(c);
		return r;
	}
	frame_reader_init(&c->reader, PROTO_MESSAGE_MAX);
	*ret = c;
	return 0;
}

void client_free(Client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	frame_reader_free(&c->reader);
	free(c);
}

static int client_break(Client *c, int r, const char *reason)
{
	c->broken = r;
	snprintf(c->reason, sizeof(c->reason), "%s", reason);
	return r;
}

static int write_all(Client *c, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* EPIPE / ECONNRESET: the daemon has gone, but replies
			 * it sent before going may still be buffered for us. */
			c->send_broken = -errno;
			return c->send_broken;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int client_send(Client *c, const char *method, json_t *params, unsigned flags)
{
	if (c->broken)
		return c->broken;
	if (c->send_broken)
		return c->send_broken;
	char *msg = NULL;
	size_t len = 0;
	int r = proto_build_call(method, params, flags, &msg, &len);
	if (r < 0)
		return r;
	r = write_all(c, msg, len);
	free(msg);
	if (r < 0)
		return r;
	if (!(flags & PROTO_CALL_ONEWAY))
		c->pending++;
	return 0;
}

/* Reads once from the socket into the frame reader. 0 on progress. */
static int read_some(Client *c)
{
	char buf[CLIENT_READ_CHUNK];
	ssize_t n;
	do
		n = recv(c->fd, buf, sizeof(buf), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return client_break(c, -errno, "");
	if (n == 0)
		return client_break(
		        c, -ECONNRESET,
		        frame_reader_pending(&c->reader) > 0
		                ? "the daemon closed the connection in the middle of a reply"
		                : "the daemon closed the connection");
	int r = frame_reader_feed(&c->reader, buf, (size_t)n);
	if (r == -EMSGSIZE)
		return client_break(c, r, REASON_TOO_LONG);
	return r;
}

int client_recv(Client *c, ProtoReply *ret)
{
	if (c->broken)
		return c->broken;
	if (c->pending == 0)
		return -EINVAL;

	const char *msg;
	size_t len;
	int r;
	while ((r = frame_reader_next(&c->reader, &msg, &len)) == 0) {
		/* Hand back the memory of a large reply before growing again. */
		frame_reader_compact(&c->reader);
		r = read_some(c);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return client_break(c, r, REASON_TOO_LONG);

	ProtoReply reply;
	char err[200];
	r = proto_reply_parse(msg, len, &reply, err, sizeof(err));
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		/* Not JSON, too deep, or not a reply: either way this is not the
		 * daemon we expected, and the order of replies is lost. */
		char reason[sizeof(c->reason)];
		snprintf(reason, sizeof(reason), "not a Varlink reply: %s", err);
		return client_break(c, -EPROTO, reason);
	}
	if (!reply.continues || reply.error)
		c->pending--;
	*ret = reply;
	return 0;
}

int client_call(Client *c, const char *method, json_t *params, ProtoReply *ret)
{
	if (c->pending > 0)
		return -EBUSY;
	int r = client_send(c, method, params, 0);
	if (r < 0)
		return r;
	return client_recv(c, ret);
}

int client_broken(const Client *c)
{
	return c->broken ? c->broken : c->send_broken;
}

unsigned client_pending(const Client *c)
{
	return c->pending;
}

const char *client_error_reason(const Client *c)
{
	return c->reason;
}

int client_fd(const Client *c)
{
	return c->fd;
}
