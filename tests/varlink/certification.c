#include "certification.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Test05's values, and the struct Test06 returns and Test07 takes. */
#define VALUES "\"bool\":false,\"int\":2,\"float\":3.141592653589793,\"string\":\"a lot of string\""
#define MAP    "{\"foo\":\"Foo\",\"bar\":\"Bar\"}"
#define SET    "{\"one\":{},\"two\":{},\"three\":{}}"
/* MyType as the reference implementation sends it. nullable and
 * nullable_array_struct are optional and absent; Interface.foo mixes null
 * and maps of the enum (foo, bar, baz). */
#define MYTYPE                                                                                     \
	"{\"object\":{\"method\":\"org.varlink.certification.Test09\","                            \
	"\"parameters\":{\"map\":" MAP "}},"                                                       \
	"\"enum\":\"two\",\"struct\":{\"first\":1,\"second\":\"2\"},"                              \
	"\"array\":[\"one\",\"two\",\"three\"],\"dictionary\":" MAP ",\"stringset\":" SET ","      \
	"\"interface\":{\"foo\":[null,{\"Foo\":\"foo\",\"Bar\":\"bar\"},null,"                     \
	"{\"one\":\"foo\",\"two\":\"bar\"}],\"anon\":{\"foo\":true,\"bar\":false}}}"
#define REPLIES                                                                                    \
	"[\"Reply number 1\",\"Reply number 2\",\"Reply number 3\",\"Reply number 4\","            \
	"\"Reply number 5\",\"Reply number 6\",\"Reply number 7\",\"Reply number 8\","             \
	"\"Reply number 9\",\"Reply number 10\"]"

const CertStep cert_steps[] = {
	{ "Start", { { NULL } }, "{}", NULL, false, false },
	{ "Test01", { { NULL } }, "{}", "{\"bool\":true}", false, false },
	{ "Test02",
	  { { "bool", CERT_BOOL }, { NULL } },
	  "{\"bool\":true}",
	  "{\"int\":1}",
	  false,
	  false },
	{ "Test03",
	  { { "int", CERT_INT }, { NULL } },
	  "{\"int\":1}",
	  "{\"float\":1.0}",
	  false,
	  false },
	{ "Test04",
	  { { "float", CERT_FLOAT }, { NULL } },
	  "{\"float\":1.0}",
	  "{\"string\":\"ping\"}",
	  false,
	  false },
	{ "Test05",
	  { { "string", CERT_STRING }, { NULL } },
	  "{\"string\":\"ping\"}",
	  "{" VALUES "}",
	  false,
	  false },
	{ "Test06",
	  { { "bool", CERT_BOOL },
	    { "int", CERT_INT },
	    { "float", CERT_FLOAT },
	    { "string", CERT_STRING },
	    { NULL } },
	  "{" VALUES "}",
	  "{\"struct\":{" VALUES "}}",
	  false,
	  false },
	{ "Test07",
	  { { "struct", CERT_OBJECT }, { NULL } },
	  "{\"struct\":{" VALUES "}}",
	  "{\"map\":" MAP "}",
	  false,
	  false },
	{ "Test08",
	  { { "map", CERT_OBJECT }, { NULL } },
	  "{\"map\":" MAP "}",
	  "{\"set\":" SET "}",
	  false,
	  false },
	{ "Test09",
	  { { "set", CERT_OBJECT }, { NULL } },
	  "{\"set\":" SET "}",
	  "{\"mytype\":" MYTYPE "}",
	  false,
	  false },
	{ "Test10",
	  { { "mytype", CERT_OBJECT }, { NULL } },
	  "{\"mytype\":" MYTYPE "}",
	  NULL,
	  true,
	  false },
	{ "Test11",
	  { { "last_more_replies", CERT_ARRAY }, { NULL } },
	  "{\"last_more_replies\":" REPLIES "}",
	  "{}",
	  false,
	  true },
	{ "End", { { NULL } }, "{}", "{\"all_ok\":true}", false, false },
};
const unsigned cert_nsteps = sizeof(cert_steps) / sizeof(cert_steps[0]);

const CertStep *cert_step_find(const char *method)
{
	for (unsigned i = 0; i < cert_nsteps; i++)
		if (strcmp(cert_steps[i].method, method) == 0)
			return &cert_steps[i];
	return NULL;
}

json_t *cert_json(const char *s)
{
	json_error_t e;
	json_t *v = json_loads(s, JSON_DECODE_ANY, &e);
	if (!v) {
		fprintf(stderr, "certification table: %s: %s\n", e.text, s);
		abort();
	}
	return v;
}

bool cert_json_match(json_t *want, json_t *got)
{
	if (json_is_real(want))
		return json_is_number(got) && json_number_value(got) == json_real_value(want);
	if (json_is_object(want)) {
		if (!json_is_object(got))
			return false;
		const char *key;
		json_t *v;
		json_object_foreach(want, key, v)
		{
			json_t *g = json_object_get(got, key);
			if (!g ? !json_is_null(v) : !cert_json_match(v, g))
				return false;
		}
		/* Members only got has must be null (absent in want). */
		json_object_foreach(got, key, v)
		{
			if (!json_object_get(want, key) && !json_is_null(v))
				return false;
		}
		return true;
	}
	if (json_is_array(want)) {
		if (!json_is_array(got) || json_array_size(got) != json_array_size(want))
			return false;
		for (size_t i = 0; i < json_array_size(want); i++)
			if (!cert_json_match(json_array_get(want, i), json_array_get(got, i)))
				return false;
		return true;
	}
	return json_equal(want, got);
}
