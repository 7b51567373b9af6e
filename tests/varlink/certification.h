/* certification.h — what the test service and the test client of the
 * Varlink certification share: the interface org.varlink.certification
 * (org.varlink.certification.varlink, served by varlink-go-certification
 * and embedded here), the sequence of calls Start, Test01..Test11, End with
 * the value each step carries, and the comparison of JSON values the
 * interface's types call for.
 *
 * The sequence: every call passes the previous reply's values back (plus
 * client_id), so each step's reply is also the next step's parameters.
 * Values are those of the reference implementations (varlink-go, python,
 * rust): the certification tool checks our side against them, in both
 * directions, so a wrong value here fails the tests rather than passing
 * silently on both sides.
 *
 * Static data and pure functions; any thread. Never logs. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#define CERT_INTERFACE         "org.varlink.certification"
#define CERT_ERR_CLIENT_ID     CERT_INTERFACE ".ClientIdError"
#define CERT_ERR_CERTIFICATION CERT_INTERFACE ".CertificationError"

/* Test10 streams this many replies ("Reply number 1".."Reply number 10");
 * Test11 gets them back as last_more_replies. */
#define CERT_MORE_REPLIES 10

/* The parameter types the interface uses, as JSON types. CERT_FLOAT accepts
 * any JSON number: a float 1.0 is sent as 1 by Go's encoder. */
typedef enum CertType {
	CERT_BOOL,
	CERT_INT,
	CERT_FLOAT,
	CERT_STRING,
	CERT_OBJECT, /* structs, maps, sets, object */
	CERT_ARRAY,
} CertType;

typedef struct CertParam {
	const char *name;
	CertType type;
} CertParam;

/* One step of the sequence. */
typedef struct CertStep {
	const char *method; /* short name: "Test01" */
	/* The parameters besides client_id, in order (NULL name ends), and
	 * their values as JSON text ("{}" for none). */
	CertParam params[6];
	const char *params_json;
	/* The reply's parameters as JSON text; for Test10 each of its
	 * replies is {"string": "Reply number N"}, built by the callers. */
	const char *reply_json;
	bool more;   /* called with "more": true (Test10) */
	bool oneway; /* called with "oneway": true (Test11) */
} CertStep;

/* Start, Test01..Test11, End, in order. */
extern const CertStep cert_steps[];
extern const unsigned cert_nsteps;

/* The step named method (short name), or NULL. */
const CertStep *cert_step_find(const char *method);

/* Parses s, which the table holds and must be valid JSON: a new reference.
 * Aborts on an invalid text (a mistake in the table, not input). */
json_t *cert_json(const char *s);

/* Whether got equals want as values of the interface: objects with the same
 * members (a member absent on one side equals null on the other, as
 * Varlink's optional ?type says), arrays element by element, numbers by
 * value where want is a real (1 equals 1.0), anything else by json_equal.
 * Both borrowed. */
bool cert_json_match(json_t *want, json_t *got);

/* The description of org.varlink.certification (embedded at build time
 * from org.varlink.certification.varlink). Static. */
extern const char cert_interface_description[];
