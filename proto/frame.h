/* frame.h — Varlink framing: each message is a JSON text ended by one NUL byte.
 *
 * FrameReader collects bytes read from a stream and hands out whole
 * messages. It holds at most max_message bytes of an unfinished message; a
 * longer one is a framing error (-EMSGSIZE) after which the reader refuses
 * more input (the connection must be closed: where the next message starts
 * is unknown).
 *
 * Owns: its buffer. Threads: one thread at a time per reader. Never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct FrameReader {
	char *buf; /* owned; buf[0..len) holds bytes not yet handed out */
	size_t len, cap;
	size_t start;       /* where the next message begins within buf */
	size_t scanned;     /* bytes from start already known to hold no NUL */
	size_t unfinished;  /* bytes after the last NUL in buf (the message in progress) */
	size_t max_message; /* including the NUL */
	bool broken;        /* a message overran max_message */
} FrameReader;

/* max_message: largest message including its NUL, >= 1. */
void frame_reader_init(FrameReader *r, size_t max_message);
void frame_reader_free(FrameReader *r);

/* Appends n bytes. Returns 0; -EMSGSIZE if an unfinished message now
 * exceeds the limit (the reader is then broken for good); -ENOMEM. */
int frame_reader_feed(FrameReader *r, const void *data, size_t n);

/* Takes the next whole message. Returns 1 with *ret_msg pointing at it
 * (NUL-terminated, length without the NUL in *ret_len; borrowed, valid until
 * the next feed or free); 0 if no whole message is buffered; -EMSGSIZE if
 * the reader is broken. */
int frame_reader_next(FrameReader *r, const char **ret_msg, size_t *ret_len);

/* Frees the buffer if everything in it has been handed out and it is larger
 * than FRAME_BUFFER_KEEP, so that one large message does not pin its memory
 * for the life of the connection. Call when done with the messages taken
 * (it invalidates them). */
#define FRAME_BUFFER_KEEP (64u * 1024u)
void frame_reader_compact(FrameReader *r);

/* Bytes not yet handed out (an unfinished message, or whole ones not taken). */
size_t frame_reader_pending(const FrameReader *r);
