/* Fuzz target: the frame decoder (proto/frame.c).
 *
 * The input is a script for one FrameReader: its first byte picks the
 * limit, the rest is a list of operations, so the fuzzer chooses how the
 * stream is cut into reads as well as its bytes:
 *   byte 0       max_message: b + 1 for b < 0xf0 (1 to 240 bytes, so every
 *                limit path is reached by short inputs), else PROTO_MESSAGE_MAX
 *   0nnnnnnn     feed the next n input bytes (n = 0: an empty read)
 *   10xxxxxc     take every whole message, then compact if c
 *   110nnnnn     take at most n messages
 *   111nnnnn     take at most n messages (n < 31), then compact
 *   11111111 c h l   feed byte c, ((h << 8 | l) + 1) * 128 times in one read
 *                (128 B to 8 MiB: past PROTO_MESSAGE_MAX with a short
 *                input; at most RUN_BUDGET bytes of runs per input, and
 *                NUL_RUN_MAX for a run of NULs, so that the fuzzer stays fast)
 * and at the end every whole message is taken and the reader compacted.
 *
 * A model (every byte fed, and where its NULs are) says what each call
 * must return; the target checks that the reader agrees: each message is
 * the bytes up to the next NUL, holds no NUL, is NUL-terminated and fits
 * max_message; an unfinished message of max_message bytes or a longer
 * whole one breaks the reader, and broken is sticky; pending() counts the
 * bytes not handed out; the buffer grows at most to twice what it holds
 * and compact gives back a large empty one. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proto/frame.h"
#include "proto/limits.h"

/* Bytes fed by runs per input: one message past PROTO_MESSAGE_MAX, and a
 * bit more. */
#define RUN_BUDGET (PROTO_MESSAGE_MAX + PROTO_MESSAGE_MAX / 2)
/* A run of NULs is that many empty messages, each taken and checked: a
 * million of them would make one input take a second. */
#define NUL_RUN_MAX 4096u

/* What the reader must hold: stream[0..len) is every byte fed, the first
 * taken of them handed out; nuls[head..count) are the offsets of the NULs
 * not yet handed out, in order. */
typedef struct Model {
	uint8_t *stream;
	size_t len, cap, taken;
	size_t *nuls;
	size_t head, count, nuls_cap;
	size_t max_message;
	bool broken;
} Model;

static void model_append(Model *m, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2;
		m->stream = realloc(m->stream, m->cap);
		FUZZ_CHECK(m->stream);
	}
	memcpy(m->stream + m->len, p, n);
	/* memchr, not a loop over bytes: the fuzzer instruments this file's
	 * comparisons, and a byte loop over a 1 MiB run took most of its time. */
	const uint8_t *at = p, *end = p + n;
	while ((at = memchr(at, 0, (size_t)(end - at)))) {
		if (m->count == m->nuls_cap) {
			m->nuls_cap = m->nuls_cap ? m->nuls_cap * 2 : 64;
			m->nuls = realloc(m->nuls, m->nuls_cap * sizeof(*m->nuls));
			FUZZ_CHECK(m->nuls);
		}
		m->nuls[m->count++] = m->len + (size_t)(at - p);
		if (++at == end)
			break;
	}
	m->len += n;
}

/* Bytes after the last NUL fed: the message in progress. */
static size_t model_unfinished(const Model *m)
{
	return m->count > 0 ? m->len - m->nuls[m->count - 1] - 1 : m->len;
}

static void check_state(const FrameReader *r, const Model *m)
{
	FUZZ_CHECK(r->broken == m->broken);
	if (!m->broken)
		FUZZ_CHECK(frame_reader_pending(r) == m->len - m->taken);
}

static void feed(FrameReader *r, Model *m, const uint8_t *p, size_t n)
{
	size_t cap_before = r->cap;
	int ret = frame_reader_feed(r, p, n);
	if (m->broken) {
		FUZZ_CHECK(ret == -EMSGSIZE);
		check_state(r, m);
		return;
	}
	if (ret == -ENOMEM) /* nothing was added: the model stays as it is */
		return;
	model_append(m, p, n);
	if (model_unfinished(m) >= m->max_message) {
		FUZZ_CHECK(ret == -EMSGSIZE);
		m->broken = true;
	} else {
		FUZZ_CHECK(ret == 0);
	}
	/* Growth by doubling from 4096: never more than twice what it holds. */
	size_t held = r->len;
	FUZZ_CHECK(r->cap == cap_before || r->cap <= 4096 || r->cap < 2 * held);
	check_state(r, m);
}

/* Takes at most limit messages; returns when the reader has no whole one. */
static void take(FrameReader *r, Model *m, size_t limit)
{
	for (size_t i = 0; i < limit; i++) {
		const char *msg = NULL;
		size_t len = 0;
		int ret = frame_reader_next(r, &msg, &len);
		if (m->broken) {
			FUZZ_CHECK(ret == -EMSGSIZE);
			check_state(r, m);
			return;
		}
		if (m->head == m->count) {
			FUZZ_CHECK(ret == 0);
			check_state(r, m);
			return;
		}
		size_t want = m->nuls[m->head] - m->taken;
		if (want + 1 > m->max_message) {
			FUZZ_CHECK(ret == -EMSGSIZE);
			m->broken = true;
			check_state(r, m);
			return;
		}
		FUZZ_CHECK(ret == 1);
		FUZZ_CHECK(len == want);
		FUZZ_CHECK(len + 1 <= m->max_message);
		FUZZ_CHECK(memchr(msg, '\0', len) == NULL);
		FUZZ_CHECK(msg[len] == '\0');
		FUZZ_CHECK(memcmp(msg, m->stream + m->taken, len) == 0);
		m->taken += len + 1;
		m->head++;
		check_state(r, m);
	}
}

static void compact(FrameReader *r, Model *m)
{
	frame_reader_compact(r);
	check_state(r, m);
	if (!m->broken && m->taken == m->len)
		FUZZ_CHECK(r->cap <= FRAME_BUFFER_KEEP);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	/* Kept from one input to the next: a megabyte allocated and faulted
	 * in for every input made page faults most of the fuzzer's time. */
	static uint8_t *run;
	static Model m;
	if (!run) {
		run = malloc(RUN_BUDGET);
		FUZZ_CHECK(run);
	}
	m.len = m.taken = m.head = m.count = 0;
	m.broken = false;
	m.max_message = data[0] < 0xf0 ? data[0] + 1u : PROTO_MESSAGE_MAX;

	const uint8_t *p = data + 1, *end = data + size;
	FrameReader r;
	frame_reader_init(&r, m.max_message);

	size_t budget = RUN_BUDGET;
	while (p < end) {
		uint8_t op = *p++;
		if (op < 0x80) {
			size_t n = (size_t)(end - p) < op ? (size_t)(end - p) : op;
			feed(&r, &m, p, n);
			p += n;
		} else if (op < 0xc0) {
			take(&r, &m, SIZE_MAX);
			if (op & 1)
				compact(&r, &m);
		} else if (op < 0xff) {
			take(&r, &m, op & 0x1f);
			if (op & 0x20)
				compact(&r, &m);
		} else {
			if (end - p < 3) {
				p = end;
				break;
			}
			size_t n = (((size_t)p[1] << 8 | p[2]) + 1) * 128;
			if (n > budget)
				n = budget;
			if (p[0] == 0 && n > NUL_RUN_MAX)
				n = NUL_RUN_MAX;
			budget -= n;
			memset(run, p[0], n);
			p += 3;
			feed(&r, &m, run, n);
		}
	}
	take(&r, &m, SIZE_MAX);
	compact(&r, &m);

	frame_reader_free(&r);
	return 0;
}
