/* certification-server.c — a Varlink service on proto/ (frame.c,
 * message.c) that implements org.varlink.certification and
 * org.varlink.service, for varlink-go-certification in client mode:
 *
 *   certification-server SOCKET
 *
 * Binds SOCKET (which must not exist), prints "ready" on stdout once it
 * listens, then serves until SIGTERM or SIGINT, and exits 0. Each End
 * prints "end CLIENT_ID all_ok=true|false" on stdout, so that the runner
 * can tell a certification that ran from a tool that did nothing.
 *
 * The certification itself is checked here: each call must come in the
 * order of cert_steps (certification.h) with exactly the values the
 * previous reply carried; a wrong call gets CertificationError {wants, got}
 * and makes that client's End answer all_ok false. The standard errors of
 * org.varlink.service are answered as the daemon answers them
 * (PROTOCOL.md §8): InterfaceNotFound {interface}, MethodNotFound {method}
 * with the qualified name, InvalidParameter {parameter} for a parameter
 * missing, of the wrong type or unknown, ExpectedMore for Test10 without
 * "more". A message that is not a call at all (framing, JSON, envelope) is a
 * broken peer: the connection is closed, as Varlink has no error for it.
 *
 * One thread, a poll loop; replies are written with blocking sends (the
 * only peer is the tool under test). Failures are reported on stderr. */
#include "certification.h"
#include "proto/frame.h"
#include "proto/limits.h"
#include "proto/message.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Limits on what a peer can make this service hold. */
#define MAX_CONNS    16 /* connections at once; more wait in the backlog */
#define MAX_SESSIONS 64 /* client_ids between Start and End; the oldest goes */

#define SERVICE "org.varlink.service"

static const char service_description[] =
        "# The Varlink Service Interface is provided by every varlink service.\n"
        "interface org.varlink.service\n\n"
        "method GetInfo() -> (\n  vendor: string,\n  product: string,\n  version: string,\n"
        "  url: string,\n  interfaces: []string\n)\n\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n\n"
        "error InterfaceNotFound (interface: string)\n\n"
        "error MethodNotFound (method: string)\n\n"
        "error MethodNotImplemented (method: string)\n\n"
        "error InvalidParameter (parameter: string)\n\n"
        "error ExpectedMore ()\n";

typedef struct Conn {
	int fd; /* -1: slot free */
	FrameReader in;
} Conn;

/* One certification run, from Start to End. */
typedef struct Session {
	char id[40];   /* "" if the slot is free */
	unsigned next; /* index in cert_steps of the call expected next */
	bool failed;   /* a call was out of order or carried a wrong value */
} Session;

static Conn conns[MAX_CONNS];
static Session sessions[MAX_SESSIONS];
static unsigned sessions_started;
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Sends a reply (error NULL) or an error; params stolen, may be NULL.
 * Nothing is sent for a oneway call. Returns <0 if the peer is gone. */
static int send_message(Conn *c, const ProtoCall *call, const char *error, json_t *params,
                        bool continues)
{
	if (call->oneway) {
		json_decref(params);
		return 0;
	}
	char *buf;
	size_t len;
	int r = error ? proto_build_error(error, params, &buf, &len)
	              : proto_build_reply(params, continues, &buf, &len);
	json_decref(params);
	if (r < 0) {
		fprintf(stderr, "certification-server: cannot build a reply: %s\n", strerror(-r));
		return r;
	}
	r = send_all(c->fd, buf, len);
	free(buf);
	return r;
}

static int reply(Conn *c, const ProtoCall *call, json_t *params)
{
	return send_message(c, call, NULL, params, false);
}

static int reply_error(Conn *c, const ProtoCall *call, const char *error, json_t *params)
{
	return send_message(c, call, error, params, false);
}

static int invalid_parameter(Conn *c, const ProtoCall *call, const char *name)
{
	return reply_error(c, call, SERVICE ".InvalidParameter",
	                   json_pack("{s:s}", "parameter", name));
}

static int method_not_found(Conn *c, const ProtoCall *call)
{
	return reply_error(c, call, SERVICE ".MethodNotFound",
	                   json_pack("{s:s}", "method", call->method));
}

static int service_call(Conn *c, const ProtoCall *call, const char *name)
{
	if (strcmp(name, "GetInfo") == 0) {
		const char *unknown =
		        proto_param_unknown(call->parameters, (const char *[]){ NULL });
		if (unknown)
			return invalid_parameter(c, call, unknown);
		return reply(c, call,
		             json_pack("{s:s,s:s,s:s,s:s,s:[s,s]}", "vendor", "pipelined",
		                       "product", "certification-server", "version", "1", "url",
		                       "https://varlink.org", "interfaces", SERVICE,
		                       CERT_INTERFACE));
	}
	if (strcmp(name, "GetInterfaceDescription") == 0) {
		static const char *const known[] = { "interface", NULL };
		const char *unknown = proto_param_unknown(call->parameters, known);
		const char *iface = NULL;
		if (unknown)
			return invalid_parameter(c, call, unknown);
		if (proto_param_string(call->parameters, "interface", true, &iface) < 0)
			return invalid_parameter(c, call, "interface");
		const char *text = strcmp(iface, SERVICE) == 0          ? service_description
		                   : strcmp(iface, CERT_INTERFACE) == 0 ? cert_interface_description
		                                                        : NULL;
		if (!text)
			return reply_error(c, call, SERVICE ".InterfaceNotFound",
			                   json_pack("{s:s}", "interface", iface));
		return reply(c, call, json_pack("{s:s}", "description", text));
	}
	return method_not_found(c, call);
}

static bool type_ok(json_t *v, CertType t)
{
	switch (t) {
	case CERT_BOOL:
		return json_is_boolean(v);
	case CERT_INT:
		return json_is_integer(v);
	case CERT_FLOAT:
		return json_is_number(v);
	case CERT_STRING:
		return json_is_string(v);
	case CERT_OBJECT:
		return json_is_object(v);
	case CERT_ARRAY:
		return json_is_array(v);
	}
	return false;
}

/* The name of the first parameter of call that step does not declare, is
 * missing or has the wrong type; NULL if they are all right. */
static const char *bad_parameter(const ProtoCall *call, const CertStep *step, bool with_id)
{
	const char *key;
	json_t *v;
	json_object_foreach(call->parameters, key, v)
	{
		bool known = with_id && strcmp(key, "client_id") == 0;
		for (const CertParam *p = step->params; p->name && !known; p++)
			known = strcmp(p->name, key) == 0;
		if (!known)
			return key;
	}
	if (with_id && !json_is_string(json_object_get(call->parameters, "client_id")))
		return "client_id";
	for (const CertParam *p = step->params; p->name; p++)
		if (!type_ok(json_object_get(call->parameters, p->name), p->type))
			return p->name;
	return NULL;
}

static Session *session_find(const char *id)
{
	for (unsigned i = 0; i < MAX_SESSIONS; i++)
		if (sessions[i].id[0] && strcmp(sessions[i].id, id) == 0)
			return &sessions[i];
	return NULL;
}

static int cert_start(Conn *c, const ProtoCall *call)
{
	/* Unique for the life of the process, and not guessable from a
	 * neighbour's: a counter and random bits. */
	unsigned long long rnd = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (read(fd, &rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
			rnd = 0;
		close(fd);
	}
	Session *s = &sessions[sessions_started % MAX_SESSIONS];
	*s = (Session){ .next = 1 };
	snprintf(s->id, sizeof(s->id), "%u-%016llx", sessions_started, rnd);
	sessions_started++;
	return reply(c, call, json_pack("{s:s}", "client_id", s->id));
}

/* Refuses a call of s: out of order or with a wrong value. wants and got
 * stolen. */
static int cert_refuse(Conn *c, const ProtoCall *call, Session *s, json_t *wants, json_t *got)
{
	s->failed = true;
	char *w = json_dumps(wants, JSON_COMPACT | JSON_SORT_KEYS);
	char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
	fprintf(stderr, "certification-server: %s: wants %s, got %s%s\n", call->method, w ? w : "?",
	        g ? g : "?", call->oneway ? " (oneway: not answered)" : "");
	free(w);
	free(g);
	return reply_error(c, call, CERT_ERR_CERTIFICATION,
	                   json_pack("{s:o,s:o}", "wants", wants, "got", got));
}

static int cert_call(Conn *c, const ProtoCall *call, const char *name)
{
	const CertStep *step = cert_step_find(name);
	if (!step)
		return method_not_found(c, call);
	unsigned index = (unsigned)(step - cert_steps);
	const char *bad = bad_parameter(call, step, index > 0);
	if (bad)
		return invalid_parameter(c, call, bad);
	if (step->more && !call->more)
		return reply_error(c, call, SERVICE ".ExpectedMore", NULL);
	if (index == 0)
		return cert_start(c, call);

	const char *id = json_string_value(json_object_get(call->parameters, "client_id"));
	Session *s = session_find(id);
	if (!s)
		return reply_error(c, call, CERT_ERR_CLIENT_ID, NULL);
	if (index == cert_nsteps - 1) {
		bool ok = !s->failed && s->next == index;
		printf("end %s all_ok=%s\n", s->id, ok ? "true" : "false");
		fflush(stdout);
		*s = (Session){ 0 };
		return reply(c, call, json_pack("{s:b}", "all_ok", ok));
	}
	if (s->next != index)
		return cert_refuse(c, call, s,
		                   json_pack("{s:s}", "method", cert_steps[s->next].method),
		                   json_pack("{s:s}", "method", name));
	json_t *got = json_deep_copy(call->parameters);
	if (!got)
		return -ENOMEM;
	json_object_del(got, "client_id");
	json_t *want = cert_json(step->params_json);
	if (!cert_json_match(want, got))
		return cert_refuse(c, call, s, want, got);
	json_decref(want);
	json_decref(got);
	s->next++;

	if (!step->more)
		return reply(c, call, cert_json(step->reply_json));
	for (unsigned i = 1; i <= CERT_MORE_REPLIES; i++) {
		char text[32];
		snprintf(text, sizeof(text), "Reply number %u", i);
		int r = send_message(c, call, NULL, json_pack("{s:s}", "string", text),
		                     i < CERT_MORE_REPLIES);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Answers one message. <0: close the connection. */
static int handle_message(Conn *c, const char *msg, size_t len)
{
	ProtoCall call = { 0 };
	char err[256];
	int r = proto_call_parse(msg, len, &call, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "certification-server: not a call (%s); closing\n", err);
		return r;
	}
	const char *dot = strrchr(call.method, '.');
	size_t iface_len = (size_t)(dot - call.method);
	char iface[256];
	if (iface_len >= sizeof(iface)) {
		r = reply_error(c, &call, SERVICE ".InterfaceNotFound",
		                json_pack("{s:s#}", "interface", call.method, (int)iface_len));
	} else {
		memcpy(iface, call.method, iface_len);
		iface[iface_len] = '\0';
		if (strcmp(iface, SERVICE) == 0)
			r = service_call(c, &call, dot + 1);
		else if (strcmp(iface, CERT_INTERFACE) == 0)
			r = cert_call(c, &call, dot + 1);
		else
			r = reply_error(c, &call, SERVICE ".InterfaceNotFound",
			                json_pack("{s:s}", "interface", iface));
	}
	proto_call_done(&call);
	return r;
}

static void conn_close(Conn *c)
{
	close(c->fd);
	c->fd = -1;
	frame_reader_free(&c->in);
}

static void conn_readable(Conn *c)
{
	char buf[64 * 1024];
	ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0 || frame_reader_feed(&c->in, buf, (size_t)n) < 0) {
		conn_close(c);
		return;
	}
	const char *msg;
	size_t len;
	int r;
	while ((r = frame_reader_next(&c->in, &msg, &len)) > 0)
		if (handle_message(c, msg, len) < 0) {
			conn_close(c);
			return;
		}
	if (r < 0)
		conn_close(c);
	else
		frame_reader_compact(&c->in);
}

static int listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "certification-server: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		fprintf(stderr, "certification-server: %s: %m\n", path);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: certification-server SOCKET\n");
		return 2;
	}
	/* SIGTERM and SIGINT are only taken inside ppoll, so a stop request
	 * can never fall between the check of stopping and the wait. */
	sigset_t block, waitmask;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int lfd = listen_on(argv[1]);
	if (lfd < 0)
		return 1;
	for (unsigned i = 0; i < MAX_CONNS; i++)
		conns[i].fd = -1;
	printf("ready\n");
	fflush(stdout);

	while (!stopping) {
		struct pollfd p[MAX_CONNS + 1];
		Conn *who[MAX_CONNS + 1];
		nfds_t n = 0;
		unsigned open_conns = 0;
		for (unsigned i = 0; i < MAX_CONNS; i++)
			if (conns[i].fd >= 0) {
				p[n] = (struct pollfd){ .fd = conns[i].fd, .events = POLLIN };
				who[n++] = &conns[i];
				open_conns++;
			}
		if (open_conns < MAX_CONNS) {
			p[n] = (struct pollfd){ .fd = lfd, .events = POLLIN };
			who[n++] = NULL;
		}
		if (ppoll(p, n, NULL, &waitmask) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "certification-server: poll: %m\n");
			return 1;
		}
		for (nfds_t i = 0; i < n; i++) {
			if (!p[i].revents)
				continue;
			if (who[i]) {
				conn_readable(who[i]);
				continue;
			}
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			for (unsigned k = 0; k < MAX_CONNS; k++)
				if (conns[k].fd < 0) {
					conns[k].fd = fd;
					frame_reader_init(&conns[k].in, PROTO_MESSAGE_MAX);
					break;
				}
		}
	}
	for (unsigned i = 0; i < MAX_CONNS; i++)
		if (conns[i].fd >= 0)
			conn_close(&conns[i]);
	close(lfd);
	unlink(argv[1]);
	return 0;
}
