/* queue.h — bounded multi-producer multi-consumer blocking queue.
 *
 * A ring buffer of opaque pointers guarded by one mutex and three condition
 * variables (not empty, not full, all done). No call polls: a thread blocks
 * only until the state it needs is reached. The one wait with a deadline is
 * a getter's while a delayed item (below) is due later and nothing else is
 * queued: it sleeps until that item is due.
 *
 * Delayed items: queue_put_delayed adds an item that getters receive only
 * once its due time has passed (a job waiting for its next attempt). Due
 * items are handed out before ring items. They count against the capacity
 * like queued ones (so a stage full of retries slows the one before it),
 * but queue_put_delayed itself never blocks nor fails for lack of room: a
 * stage's worker puts back the one job it holds, so the queue never holds
 * more than capacity + workers items. A closed queue still hands out its
 * delayed items when due; getters get -EPIPE only once none is left.
 *
 * Owns: the ring buffer. Borrows: nothing. The items are the caller's; the
 * queue holds them between put and get without looking at them.
 *
 * Threads: every function but queue_new/queue_free may be called from any
 * thread at any time. queue_put, queue_get and queue_join block; the event loop
 * uses queue_try_put only.
 *
 * Join semantics (as in Python's queue.Queue): `unfinished` is +1 on every put
 * and -1 on every queue_task_done; queue_join returns once it is zero. A
 * consumer calls queue_task_done after it has finished with an item it got.
 *
 * Close: queue_close wakes every waiter. Getters still receive what is queued,
 * then -EPIPE; putters get -EPIPE at once. Close is final.
 *
 * Low-water mark: a putter blocks when the queue is full, and once blocked it
 * is signalled when the queue has drained to half its capacity (capacity / 2),
 * then refills it without blocking. (A spurious wake-up may let it put
 * earlier, as soon as a slot is free; correctness never depends on the mark.) Waking it at the
 * first free slot would cost a sleep and a wake-up per item whenever a fast stage feeds a slow one
 * (measured: 14 % of the slow stage's throughput on 2 cores; BENCHMARKS.md).
 * queue_try_put is not affected: it succeeds whenever there is room. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest capacity: the ring is allocated whole up front (8 bytes a slot), so
 * this caps one queue at 8 MiB however a configuration asks. */
#define QUEUE_CAPACITY_MAX (1u << 20)

typedef struct Queue Queue;

typedef struct QueueStats {
	size_t capacity;
	size_t length;       /* items queued now, delayed ones not included */
	size_t delayed;      /* delayed items not yet handed out */
	uint64_t unfinished; /* put but not yet task_done */
	bool closed;
	/* Monotonic counts of how many times a caller had to block. Tests use
	 * them to see that a thread is blocked without sleeping and hoping. */
	uint64_t put_waits;
	uint64_t get_waits;
	uint64_t join_waits;
	uint64_t put_wakes; /* gets that signalled a blocked putter (low-water mark reached) */
	uint64_t room_calls; /* room callbacks made (see queue_try_put_arm) */
} QueueStats;

/* New open, empty queue. capacity is 1..QUEUE_CAPACITY_MAX.
 * Returns 0 and a new Queue in *ret, -EINVAL, -ENOMEM. */
int queue_new(size_t capacity, Queue **ret);

/* Frees the queue. No thread may be inside any queue call. Items still queued
 * are passed to free_item (if not NULL). Accepts NULL. */
void queue_free(Queue *q, void (*free_item)(void *));

/* Appends item (must not be NULL), blocking while the queue is full (and,
 * once blocked, until it is down to the low-water mark).
 * Returns 0, or -EPIPE if the queue is (or becomes, while waiting) closed; on
 * error the caller keeps the item. */
int queue_put(Queue *q, void *item);

/* As queue_put but never blocks: -EAGAIN when the queue is full. */
int queue_try_put(Queue *q, void *item);

/* Room notification, for a producer that must not block (the event loop):
 * queue_try_put_arm is queue_try_put, except that when it returns -EAGAIN it
 * also arms the queue, atomically with finding it full, so that no get can
 * slip in between. The first get that then brings the queue down to its
 * low-water mark (or a close) disarms it and calls fn(userdata) once, on the
 * getter's (or closer's) thread with no queue lock held. fn must not block;
 * it may call uv_async_send. Set the callback before the queue is shared. */
typedef void (*QueueRoomFn)(void *userdata);
void queue_set_room_callback(Queue *q, QueueRoomFn fn, void *userdata);
int queue_try_put_arm(Queue *q, void *item);

/* As queue_try_put_arm, but a getter waiting for the item is not woken now:
 * the wake-up is owed until queue_wake_deferred, which the producer must
 * call before it blocks or sleeps (the event loop: before each poll). Lets
 * the loop send its reply before a worker competes with it for a core. */
int queue_try_put_arm_deferred(Queue *q, void *item);
void queue_wake_deferred(Queue *q);

/* Adds item to be handed out once CLOCK_MONOTONIC reaches due_usec (see
 * above). Never blocks; allowed on a closed queue. Returns 0, -ENOMEM, or
 * -ECANCELED after queue_refuse_delayed; on error the caller keeps the item. */
int queue_put_delayed(Queue *q, void *item, uint64_t due_usec);

/* From now on queue_put_delayed fails with -ECANCELED (a shutdown: no new
 * retries). Items already delayed stay; take them with queue_remove_if. */
void queue_refuse_delayed(Queue *q);

/* Takes the oldest item (a due delayed item first), blocking while there is
 * none and the queue is open or still holds delayed items.
 * Returns 0 and the item in *ret_item; -EPIPE when the queue is closed and
 * empty; -EINTR if interrupt_seen is not NULL and queue_interrupt was called
 * since *interrupt_seen was last updated (it is updated then). The interrupt
 * check comes first, so an interrupted getter returns even if items wait. */
int queue_get(Queue *q, void **ret_item, unsigned *interrupt_seen);

/* As queue_get, but first marks `done` items got earlier as finished, in the
 * same critical section: a consumer loop that calls queue_get_next(q, 1, ...)
 * after each item pays one lock round per item instead of two. Marking done
 * comes first, also when the call then blocks or fails. */
int queue_get_next(Queue *q, unsigned done, void **ret_item, unsigned *interrupt_seen);

/* Marks one item got earlier as finished. Calling it (or queue_get_next's
 * done) more often than put is a programmer error (assert). */
void queue_task_done(Queue *q);

/* Blocks until every item ever put has been marked finished. */
void queue_join(Queue *q);

/* Closes the queue and wakes every waiting putter and getter. Idempotent. */
void queue_close(Queue *q);

/* Takes out of the queue (delayed items included) up to max items for which match(item, userdata)
 * is true (called with the queue lock held: it must only look at the item),
 * keeping the others in order, and stores them in out[]. The items taken
 * still count as unfinished: the caller marks each done with
 * queue_task_done. Wakes blocked putters if room was made. Returns how many
 * were taken. */
size_t queue_remove_if(Queue *q, bool (*match)(void *item, void *userdata), void *userdata,
                       void **out, size_t max);

/* Makes every getter that passes interrupt_seen return -EINTR once, whether
 * it is blocked now or calls queue_get later. Used by a stage to make idle
 * workers look at a changed worker count. */
void queue_interrupt(Queue *q);

/* A consistent snapshot of the queue's counters. */
void queue_stats(Queue *q, QueueStats *ret);

/* Cheap unlocked reads for hot paths and statistics; may be momentarily stale. */
size_t queue_capacity(const Queue *q);
size_t queue_length(Queue *q);
