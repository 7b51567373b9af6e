/* Unit tests for proto/frame.c: Varlink NUL framing. */
#include <errno.h>
#include <string.h>

#include "proto/frame.h"
#include "proto/limits.h"
#include "testutil.h"

static int feed(FrameReader *r, const char *s, size_t n)
{
	return frame_reader_feed(r, s, n);
}

START_TEST(test_split_and_joined_messages)
{
	FrameReader r;
	const char *msg;
	size_t len;
	frame_reader_init(&r, 64);

	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 0); /* nothing yet */
	ck_assert_int_eq(feed(&r, "{\"a\"", 4), 0);
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 0);
	ck_assert_uint_eq(frame_reader_pending(&r), 4);
	ck_assert_int_eq(feed(&r, ":1}\0{}\0{\"b", 10), 0);
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	ck_assert_str_eq(msg, "{\"a\":1}");
	ck_assert_uint_eq(len, 7);
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	ck_assert_str_eq(msg, "{}");
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 0);
	ck_assert_int_eq(feed(&r, "\"}\0", 3), 0);
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	ck_assert_str_eq(msg, "{\"b\"}");
	ck_assert_int_eq(feed(&r, "\0", 1), 0); /* an empty message is framed fine */
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	ck_assert_uint_eq(len, 0);
	ck_assert_uint_eq(frame_reader_pending(&r), 0);
	frame_reader_free(&r);
}
END_TEST

START_TEST(test_one_byte_at_a_time)
{
	static const char stream[] = "{\"x\":[1,2,3]}\0{\"y\":null}\0";
	FrameReader r;
	const char *msg;
	size_t len;
	unsigned got = 0;
	frame_reader_init(&r, 64);
	for (size_t i = 0; i < sizeof(stream) - 1; i++) {
		ck_assert_int_eq(feed(&r, &stream[i], 1), 0);
		while (frame_reader_next(&r, &msg, &len) == 1)
			got++;
	}
	ck_assert_uint_eq(got, 2);
	frame_reader_free(&r);
}
END_TEST

START_TEST(test_message_limit_at_and_past)
{
	enum { MAX = 16 };
	char buf[MAX + 2];
	FrameReader r;
	const char *msg;
	size_t len;

	/* MAX bytes including the NUL: accepted. */
	frame_reader_init(&r, MAX);
	memset(buf, 'a', MAX - 1);
	buf[MAX - 1] = '\0';
	ck_assert_int_eq(feed(&r, buf, MAX), 0);
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	ck_assert_uint_eq(len, MAX - 1);
	/* An unfinished message of MAX - 1 bytes could still end in time. */
	ck_assert_int_eq(feed(&r, buf, MAX - 1), 0);
	/* One byte more can no longer: broken, and it stays broken. */
	ck_assert_int_eq(feed(&r, "a", 1), -EMSGSIZE);
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), -EMSGSIZE);
	ck_assert_int_eq(feed(&r, "\0", 1), -EMSGSIZE);
	frame_reader_free(&r);

	/* An over-long message that arrives whole, behind a good one. */
	frame_reader_init(&r, MAX);
	memset(buf, 'b', MAX + 1);
	buf[MAX] = '\0';
	ck_assert_int_eq(feed(&r, "{}\0", 3), 0);
	ck_assert_int_eq(feed(&r, buf, MAX + 1), 0); /* whole: checked when taken */
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	ck_assert_str_eq(msg, "{}");
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), -EMSGSIZE);
	frame_reader_free(&r);
}
END_TEST

START_TEST(test_protocol_limit_is_sane)
{
	ck_assert_uint_ge(PROTO_MESSAGE_MAX, 64 * 1024);
	FrameReader r;
	frame_reader_init(&r, PROTO_MESSAGE_MAX);
	char *big = malloc(PROTO_MESSAGE_MAX);
	memset(big, ' ', PROTO_MESSAGE_MAX);
	ck_assert_int_eq(feed(&r, big, PROTO_MESSAGE_MAX - 1), 0);
	ck_assert_int_eq(feed(&r, "", 1), 0); /* the NUL: exactly at the limit */
	const char *msg;
	size_t len;
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	ck_assert_uint_eq(len, PROTO_MESSAGE_MAX - 1);
	ck_assert_uint_gt(r.cap, FRAME_BUFFER_KEEP);
	frame_reader_compact(&r); /* all handed out: the big buffer goes */
	ck_assert_ptr_null(r.buf);
	ck_assert_uint_eq(r.cap, 0);
	ck_assert_int_eq(feed(&r, "{}\0{", 4), 0);
	ck_assert_int_eq(frame_reader_next(&r, &msg, &len), 1);
	frame_reader_compact(&r); /* small, and "{" still pending: kept */
	ck_assert_uint_eq(frame_reader_pending(&r), 1);
	ck_assert_int_eq(feed(&r, big, PROTO_MESSAGE_MAX), -EMSGSIZE);
	free(big);
	frame_reader_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("frame");
	TCase *tc = tcase("core");
	tcase_add_test(tc, test_split_and_joined_messages);
	tcase_add_test(tc, test_one_byte_at_a_time);
	tcase_add_test(tc, test_message_limit_at_and_past);
	tcase_add_test(tc, test_protocol_limit_is_sane);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
