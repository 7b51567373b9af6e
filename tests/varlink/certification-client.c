/* certification-client.c — drives the certification sequence of
 * org.varlink.certification (Start, Test01..Test11, End) against a Varlink
 * service, on pipelined's client library (client/client.h), for
 * varlink-go-certification in service mode:
 *
 *   certification-client unix:SOCKET | SOCKET
 *
 * Each call passes back the values the previous reply carried, as the
 * interface asks, and each reply is checked against the values the interface's
 * reference implementations send (cert_steps, certification.h): exactly the
 * members expected, no others; Test10 streams CERT_MORE_REPLIES replies,
 * each but the last with "continues"; Test11 is oneway and gets no reply
 * (the next reply read is End's); End answers all_ok true. Before the
 * sequence, GetInfo must list the interface and GetInterfaceDescription
 * describe it; after, a call with an unknown client_id gets ClientIdError
 * and an unknown method MethodNotFound.
 *
 * Exits 0 when all of that held; 1 on the first mismatch, naming the step,
 * what was expected and what came; 2 on a usage or connection error. */
#include "certification.h"
#include "client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static Client *conn;
static const char *step_name = "connect";

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "certification-client: %s: ", step_name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static char *dump(json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	return s ? s : strdup("?");
}

/* params stolen, may be NULL. */
static void send_call(const char *method, json_t *params, unsigned flags)
{
	int r = client_send(conn, method, params, flags);
	json_decref(params);
	if (r < 0)
		fail("cannot send %s: %s", method, strerror(-r));
}

/* The next reply; fails on a transport error. */
static ProtoReply recv_reply(void)
{
	ProtoReply rp;
	int r = client_recv(conn, &rp);
	if (r < 0)
		fail("no reply: %s %s", strerror(-r), client_error_reason(conn));
	return rp;
}

/* Reads a normal reply and checks its parameters match want (stolen) and
 * that its "continues" is as expected. Returns the parameters (a new
 * reference). */
static json_t *expect_reply(json_t *want, bool continues)
{
	ProtoReply rp = recv_reply();
	if (rp.error) {
		char *p = dump(rp.parameters);
		fail("error %s %s, expected a reply", rp.error, p);
	}
	if (!cert_json_match(want, rp.parameters)) {
		char *w = dump(want), *g = dump(rp.parameters);
		fail("reply %s, expected %s", g, w);
	}
	if (rp.continues != continues)
		fail("reply %s \"continues\", expected %s", rp.continues ? "with" : "without",
		     continues ? "true" : "none");
	json_t *params = json_incref(rp.parameters);
	json_decref(want);
	proto_reply_done(&rp);
	return params;
}

static void expect_error(const char *name)
{
	ProtoReply rp = recv_reply();
	if (!rp.error || strcmp(rp.error, name) != 0) {
		char *p = dump(rp.parameters);
		fail("%s %s, expected error %s", rp.error ? rp.error : "reply", p, name);
	}
	proto_reply_done(&rp);
}

static void check_service(void)
{
	step_name = "GetInfo";
	send_call("org.varlink.service.GetInfo", NULL, 0);
	ProtoReply rp = recv_reply();
	json_t *ifaces = json_object_get(rp.parameters, "interfaces");
	bool found = false;
	for (size_t i = 0; i < json_array_size(ifaces); i++)
		found = found || strcmp(json_string_value(json_array_get(ifaces, i)) ?: "",
		                        CERT_INTERFACE) == 0;
	if (rp.error || !found)
		fail("%s does not list %s", dump(rp.root), CERT_INTERFACE);
	proto_reply_done(&rp);

	step_name = "GetInterfaceDescription";
	send_call("org.varlink.service.GetInterfaceDescription",
	          json_pack("{s:s}", "interface", CERT_INTERFACE), 0);
	rp = recv_reply();
	const char *text = json_string_value(json_object_get(rp.parameters, "description"));
	if (rp.error || !text || !strstr(text, "interface " CERT_INTERFACE "\n"))
		fail("%s is not the description of %s", dump(rp.root), CERT_INTERFACE);
	proto_reply_done(&rp);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: certification-client unix:SOCKET\n");
		return 2;
	}
	const char *path = argv[1];
	if (strncmp(path, "unix:", 5) == 0)
		path += 5;
	int r = client_connect(path, &conn);
	if (r < 0) {
		fprintf(stderr, "certification-client: %s: %s\n", path, strerror(-r));
		return 2;
	}
	check_service();

	char *client_id = NULL;
	json_t *prev = NULL; /* the previous reply's parameters */
	json_t *more_replies = json_array();
	for (unsigned i = 0; i < cert_nsteps; i++) {
		const CertStep *st = &cert_steps[i];
		char method[128];
		step_name = st->method;
		snprintf(method, sizeof(method), CERT_INTERFACE ".%s", st->method);

		/* What the step takes, built from what came back before. */
		json_t *params = json_object();
		if (i > 0)
			json_object_set_new(params, "client_id", json_string(client_id));
		if (st->oneway)
			json_object_set(params, "last_more_replies", more_replies);
		else if (prev && i < cert_nsteps - 1)
			json_object_update(params, prev);
		/* The values sent are checked too: a reply that matched but
		 * would not round-trip is the service's bug, not ours. */
		json_t *sent = json_deep_copy(params);
		json_object_del(sent, "client_id");
		json_t *want = cert_json(st->params_json);
		if (!cert_json_match(want, sent))
			fail("would send %s, the interface wants %s", dump(sent), dump(want));
		json_decref(want);
		json_decref(sent);

		unsigned flags =
		        (st->more ? PROTO_CALL_MORE : 0) | (st->oneway ? PROTO_CALL_ONEWAY : 0);
		send_call(method, params, flags);
		json_decref(prev);
		prev = NULL;

		if (i == 0) {
			ProtoReply rp = recv_reply();
			const char *id =
			        json_string_value(json_object_get(rp.parameters, "client_id"));
			if (rp.error || !id || !id[0] || json_object_size(rp.parameters) != 1)
				fail("reply %s, expected {\"client_id\": a string}", dump(rp.root));
			client_id = strdup(id);
			proto_reply_done(&rp);
		} else if (st->more) {
			for (unsigned k = 1; k <= CERT_MORE_REPLIES; k++) {
				char text[32];
				snprintf(text, sizeof(text), "Reply number %u", k);
				json_t *p = expect_reply(json_pack("{s:s}", "string", text),
				                         k < CERT_MORE_REPLIES);
				json_array_append(more_replies, json_object_get(p, "string"));
				json_decref(p);
			}
		} else if (st->oneway) {
			if (client_pending(conn) != 0)
				fail("a oneway call counted as waiting for a reply");
		} else {
			prev = expect_reply(cert_json(st->reply_json), false);
		}
		printf("%s: ok\n", st->method);
	}
	json_decref(prev);
	json_decref(more_replies);

	step_name = "unknown client_id";
	send_call(CERT_INTERFACE ".Test01", json_pack("{s:s}", "client_id", "no-such-client"), 0);
	expect_error(CERT_ERR_CLIENT_ID);
	step_name = "unknown method";
	send_call(CERT_INTERFACE ".Test99", json_pack("{s:s}", "client_id", client_id), 0);
	expect_error("org.varlink.service.MethodNotFound");
	printf("certified\n");
	free(client_id);
	client_free(conn);
	return 0;
}
