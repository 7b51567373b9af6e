#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void frame_reader_init(FrameReader *r, size_t max_message)
{
	*r = (FrameReader){ .max_message = max_message ? max_message : 1 };
}

void frame_reader_free(FrameReader *r)
{
	free(r->buf);
	*r = (FrameReader){ 0 };
}

int frame_reader_feed(FrameReader *r, const void *data, size_t n)
{
	if (r->broken)
		return -EMSGSIZE;
	if (n == 0)
		return 0;

	/* Drop what was handed out, then make room. */
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->len - r->start);
		r->len -= r->start;
		r->start = 0;
	}
	if (r->len + n > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		while (cap < r->len + n)
			cap *= 2;
		char *b = realloc(r->buf, cap);
		if (!b)
			return -ENOMEM;
		r->buf = b;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;

	/* Only the new bytes are scanned, so a message trickled in one byte
	 * at a time costs O(length), not O(length²). A message of max_message
	 * bytes has max_message - 1 bytes before its NUL: an unfinished one
	 * that long can no longer end in time. Whole messages are checked by
	 * frame_reader_next as they are taken. */
	const char *last_nul = memrchr(data, '\0', n);
	if (last_nul)
		r->unfinished = n - (size_t)(last_nul - (const char *)data) - 1;
	else
		r->unfinished += n;
	if (r->unfinished >= r->max_message) {
		r->broken = true;
		return -EMSGSIZE;
	}
	return 0;
}

int frame_reader_next(FrameReader *r, const char **ret_msg, size_t *ret_len)
{
	if (r->broken)
		return -EMSGSIZE;
	size_t n = r->len - r->start;
	/* Nothing unscanned: return before touching buf, which is NULL before
	 * the first feed and after a compact (NULL + 0 is undefined). */
	if (n <= r->scanned) {
		r->scanned = n;
		return 0;
	}
	char *tail = r->buf + r->start;
	char *nul = memchr(tail + r->scanned, '\0', n - r->scanned);
	if (!nul) {
		r->scanned = n;
		return 0;
	}
	size_t len = (size_t)(nul - tail);
	if (len + 1 > r->max_message) {
		r->broken = true;
		return -EMSGSIZE;
	}
	*ret_msg = tail;
	*ret_len = len;
	r->start += len + 1;
	r->scanned = 0;
	return 1;
}

void frame_reader_compact(FrameReader *r)
{
	if (r->start < r->len || r->cap <= FRAME_BUFFER_KEEP)
		return;
	/* Everything was handed out: give back a buffer a large message grew. */
	free(r->buf);
	r->buf = NULL;
	r->len = r->cap = r->start = r->scanned = 0;
}

size_t frame_reader_pending(const FrameReader *r)
{
	return r->len - r->start;
}
