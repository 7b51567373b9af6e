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

/* Is the unfinished message (the bytes after the last NUL) already too long
 * to end within the limit? A message of max_message bytes has
 * max_message - 1 bytes before its NUL. Whole messages before it are checked
 * by frame_reader_next as they are taken. */
static bool overlong(const FrameReader *r)
{
	const char *tail = r->buf + r->start;
	size_t n = r->len - r->start;
	const char *last_nul = memrchr(tail, '\0', n);
	size_t unfinished = last_nul ? n - (size_t)(last_nul - tail) - 1 : n;
	return unfinished >= r->max_message;
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

	if (overlong(r)) {
		r->broken = true;
		return -EMSGSIZE;
	}
	return 0;
}

int frame_reader_next(FrameReader *r, const char **ret_msg, size_t *ret_len)
{
	if (r->broken)
		return -EMSGSIZE;
	char *tail = r->buf + r->start;
	size_t n = r->len - r->start;
	char *nul = n > r->scanned ? memchr(tail + r->scanned, '\0', n - r->scanned) : NULL;
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

size_t frame_reader_pending(const FrameReader *r)
{
	return r->len - r->start;
}
