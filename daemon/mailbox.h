/* mailbox.h — how worker threads hand things to the event loop thread.
 *
 * A mutex-protected singly linked list of MailNodes (embedded in what is
 * posted, so posting never allocates) plus a uv_async_t. mailbox_post wakes
 * the loop only when the list goes from empty to non-empty; the loop's
 * callback takes the whole list under the lock and processes it unlocked, in
 * the order posted. libuv coalesces async sends anyway; waking only on the
 * empty→non-empty edge also saves the syscall for every post that finds the
 * loop already due to run.
 *
 * Owns: the async handle (closed by mailbox_close) and the list links while
 * a node is queued. The nodes themselves pass to the callback (the receiver
 * owns them then).
 *
 * Threads: mailbox_post from any thread. mailbox_init, mailbox_close and the
 * callback on the loop thread only. Every thread that may post must be
 * joined before mailbox_close. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "job.h"

typedef struct Mailbox Mailbox;

/* Called on the loop thread once per node, in post order; takes the node. */
typedef void (*MailboxFn)(Mailbox *m, MailNode *node, void *userdata);

struct Mailbox {
	uv_async_t async; /* first, so the handle's data can be the Mailbox */
	pthread_mutex_t lock;
	MailNode *head, *tail; /* under lock */
	MailboxFn fn;
	void *userdata;
	/* Under lock; for tests and stats. */
	uint64_t posts;   /* nodes ever posted */
	uint64_t wakeups; /* uv_async_send calls made */
	uint64_t batches; /* callback runs that found at least one node */
	/* Whether a post wakes the loop at all (see mailbox_set_prompt). Read
	 * by posters after they drop the lock; written by the loop. */
	_Atomic bool prompt;
};

/* Initialises m (storage is the caller's, and must stay put until the close
 * callback) on loop. Returns 0 or a negative libuv error. */
int mailbox_init(Mailbox *m, uv_loop_t *loop, MailboxFn fn, void *userdata);

/* Appends node; any thread. Never blocks beyond the short list lock. */
void mailbox_post(Mailbox *m, MailNode *node);

/* prompt = true (the default): a post to an empty list wakes the loop.
 * prompt = false: posts only queue; the loop takes them when it next calls
 * mailbox_flush for a reason of its own. The daemon turns prompt off while
 * nobody waits for a job to end, so that a job ending costs the loop no
 * wake-up of its own. Turning it on delivers what is queued first, so that
 * nothing stays behind without a wake-up to come. Loop thread only. */
void mailbox_set_prompt(Mailbox *m, bool prompt);

/* Delivers what is queued now, without waiting for the async wake-up (used
 * to take every job a pipeline posted before it reported its close). Loop
 * thread only. */
void mailbox_flush(Mailbox *m);

/* Delivers whatever is still queued, then closes the async handle; close_cb
 * (may be NULL) runs when libuv has let go of it. Loop thread only. */
void mailbox_close(Mailbox *m, uv_close_cb close_cb);

/* Snapshot of the counters above. Not after mailbox_close. */
void mailbox_counters(Mailbox *m, uint64_t *ret_posts, uint64_t *ret_wakeups,
                      uint64_t *ret_batches);
