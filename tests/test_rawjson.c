/* Unit tests for proto/rawjson.c: raw slices of payloads in a parsed call. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "proto/message.h"
#include "proto/rawjson.h"
#include "testutil.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

static int slices(const char *msg, const char *name, bool elements, ProtoSlice *out, size_t max)
{
	return proto_raw_param(msg, strlen(msg), name, elements, out, max);
}

static bool slice_is(const ProtoSlice *s, const char *text)
{
	return s->len == strlen(text) && memcmp(s->text, text, s->len) == 0;
}

START_TEST(test_elements_and_single_value)
{
	ProtoSlice s[4];
	const char *m =
	        "{\"method\":\"io.pipelined.SubmitBatch\",\"parameters\":{\"pipeline\":\"p\","
	        "\"payloads\":[{\"a\":1},{\"b\":[1,{\"c\":\"]}\\\"{\"}]},{}]}}";
	ck_assert_int_eq(slices(m, "payloads", true, s, 4), 3);
	ck_assert(slice_is(&s[0], "{\"a\":1}"));
	ck_assert(slice_is(&s[1], "{\"b\":[1,{\"c\":\"]}\\\"{\"}]}"));
	ck_assert(slice_is(&s[2], "{}"));
	ck_assert(s[0].compact && s[1].compact && s[2].compact);
	ck_assert_uint_eq(s[0].depth, 1);
	ck_assert_uint_eq(s[1].depth, 3); /* brackets inside the string do not count */
	ck_assert_int_eq(slices(m, "payloads", true, s, 2), -E2BIG);
	ck_assert_int_eq(slices(m, "pipeline", false, s, 1), 1);
	ck_assert(slice_is(&s[0], "\"p\""));
	ck_assert_int_eq(slices(m, "pipeline", true, s, 1), -ENOENT); /* not an array */
	ck_assert_int_eq(slices(m, "nope", true, s, 1), -ENOENT);

	/* Whitespace anywhere: found, and marked not compact inside values. */
	const char *spaced = " { \"parameters\" : { \"payload\" : { \"x\" : [ 1 , 2 ] } } ,"
	                     " \"method\" : \"io.pipelined.Submit\" } ";
	ck_assert_int_eq(slices(spaced, "payload", false, s, 1), 1);
	ck_assert(slice_is(&s[0], "{ \"x\" : [ 1 , 2 ] }"));
	ck_assert(!s[0].compact);
	ck_assert_uint_eq(s[0].depth, 2);

	/* An empty array; a key spelled with an escape is not matched. */
	ck_assert_int_eq(slices("{\"parameters\":{\"payloads\":[ ]}}", "payloads", true, s, 4), 0);
	ck_assert_int_eq(
	        slices("{\"parameters\":{\"payl\\u006fads\":[{}]}}", "payloads", true, s, 4),
	        -ENOENT);
	/* Text that ends early is refused, never read past. */
	ck_assert_int_eq(slices("{\"parameters\":{\"payloads\":[{\"a\":", "payloads", true, s, 4),
	                 -EBADMSG);
	ck_assert_int_eq(slices("{\"parameters\":{\"payloads\":[{}", "payloads", true, s, 4),
	                 -EBADMSG);
	ck_assert_int_eq(slices("{\"parameters\":{\"payloads\":[\"ab", "payloads", true, s, 4),
	                 -EBADMSG);
	ck_assert_int_eq(slices("{\"parameters\"", "payloads", true, s, 4), -EBADMSG);
	ck_assert_int_eq(slices("[]", "payloads", true, s, 4), -ENOENT);
}
END_TEST

/* Every slice parses to the same JSON as jansson's tree of that element,
 * and a compact slice is byte for byte what json_dumps(JSON_COMPACT) gives. */
START_TEST(test_slices_equal_jansson)
{
	static const char *const payloads[] = {
		"{}",
		"{\"url\":\"http://x/a b.png\",\"n\":12,\"f\":-1.5e3,\"t\":true,\"z\":null}",
		("{\"s\":\"\\\"quoted\\\\ \\u00e9 "
		 "\\n\",\"a\":[[],[{}],[[[1]]]],\"o\":{\"k\":{\"k\":{}}}}"), /* one string */
		"{\"brackets\":\"[{]}\",\"comma\":\",\"}",
	};
	json_t *arr = json_array();
	for (size_t i = 0; i < ELEMENTSOF(payloads); i++)
		json_array_append_new(arr, json_loads(payloads[i], 0, NULL));
	json_t *params = json_pack("{s:s,s:O}", "pipeline", "p", "payloads", arr);
	char *msg;
	size_t len;
	ck_assert_int_eq(proto_build_call("io.pipelined.SubmitBatch", params, 0, &msg, &len), 0);
	ProtoCall call;
	char err[128];
	ck_assert_int_eq(proto_call_parse(msg, len - 1, &call, err, sizeof(err)), 0);
	ck_assert_ptr_eq(call.raw, msg);

	ProtoSlice s[8];
	ck_assert_int_eq(proto_raw_param(call.raw, call.raw_len, "payloads", true, s, 8),
	                 (int)ELEMENTSOF(payloads));
	for (size_t i = 0; i < ELEMENTSOF(payloads); i++) {
		json_t *tree = json_array_get(json_object_get(call.parameters, "payloads"), i);
		json_t *back = json_loadb(s[i].text, s[i].len, 0, NULL);
		ck_assert_ptr_nonnull(back);
		ck_assert_msg(json_equal(tree, back), "slice %zu differs", i);
		char *dumped = json_dumps(tree, JSON_COMPACT);
		ck_assert(s[i].compact);
		ck_assert_msg(slice_is(&s[i], dumped), "slice %zu: %.*s vs %s", i, (int)s[i].len,
		              s[i].text, dumped);
		ck_assert_msg(proto_depth_ok(s[i].text, s[i].len, s[i].depth) &&
		                      (s[i].depth == 0 ||
		                       !proto_depth_ok(s[i].text, s[i].len, s[i].depth - 1)),
		              "depth of slice %zu", i);
		free(dumped);
		json_decref(back);
	}
	proto_call_done(&call);
	free(msg);
	json_decref(params);
	json_decref(arr);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("rawjson");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_elements_and_single_value);
	tcase_add_test(tc, test_slices_equal_jansson);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
