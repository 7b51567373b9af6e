#include "queue.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "util.h"

/* A delayed item: a slot of the min-heap ordered by due time. */
typedef struct Delayed {
	uint64_t due_usec; /* CLOCK_MONOTONIC */
	void *item;
} Delayed;

struct Queue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty; /* signalled on put, broadcast on close and interrupt;
	                           * CLOCK_MONOTONIC, for the wait on a delayed item */
	pthread_cond_t not_full;  /* signalled on get, broadcast on close */
	pthread_cond_t all_done;  /* broadcast when unfinished reaches 0 */

	void **ring;     /* capacity slots; items at head .. head+length-1 (mod capacity) */
	size_t capacity; /* immutable after queue_new */
	size_t head;
	_Atomic size_t length; /* written under lock; read unlocked by queue_length */
	bool closed;
	unsigned interrupts; /* generation, bumped by queue_interrupt */

	Delayed *delayed;     /* min-heap by due_usec, n_delayed items */
	size_t n_delayed, delayed_alloc;
	bool refuse_delayed;  /* queue_refuse_delayed was called */

	uint64_t unfinished; /* put and not yet marked done; see queue_get_next */

	/* How many threads are blocked on each condition, so that a put or get
	 * that nobody waits for costs no signal. */
	unsigned waiting_getters;
	unsigned waiting_putters;
	unsigned waiting_joiners;

	uint64_t put_waits, get_waits, join_waits, put_wakes, room_calls; /* see QueueStats */

	QueueRoomFn room_fn; /* immutable once shared */
	void *room_userdata;
	bool room_wanted; /* armed by a failed queue_try_put_arm */
	unsigned deferred_wakes; /* signals owed to waiting getters (queue_wake_deferred) */
};

int queue_new(size_t capacity, Queue **ret)
{
	if (capacity == 0 || capacity > QUEUE_CAPACITY_MAX)
		return -EINVAL;

	Queue *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->ring = calloc(capacity, sizeof(*q->ring));
	if (!q->ring) {
		free(q);
		return -ENOMEM;
	}
	q->capacity = capacity;
	/* Adaptive: a thread that finds the lock held spins for a moment
	 * before sleeping in the kernel. Critical sections here are a few
	 * dozen instructions, so the holder is nearly always about to let go. */
	pthread_mutexattr_t attr;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&q->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	pthread_condattr_t cattr;
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&q->not_empty, &cattr);
	pthread_condattr_destroy(&cattr);
	pthread_cond_init(&q->not_full, NULL);
	pthread_cond_init(&q->all_done, NULL);
	*ret = q;
	return 0;
}

void queue_free(Queue *q, void (*free_item)(void *))
{
	if (!q)
		return;
	size_t n = atomic_load(&q->length);
	for (size_t i = 0; free_item && i < n; i++)
		free_item(q->ring[(q->head + i) % q->capacity]);
	for (size_t i = 0; free_item && i < q->n_delayed; i++)
		free_item(q->delayed[i].item);
	free(q->delayed);
	pthread_cond_destroy(&q->all_done);
	pthread_cond_destroy(&q->not_full);
	pthread_cond_destroy(&q->not_empty);
	pthread_mutex_destroy(&q->lock);
	free(q->ring);
	free(q);
}

/* Items counted against the capacity: queued and delayed. With the lock held. */
static size_t occupancy_locked(Queue *q)
{
	return atomic_load_explicit(&q->length, memory_order_relaxed) + q->n_delayed;
}

/* Called with the lock held and room in the ring. Returns whether a getter
 * is waiting, to be signalled once the lock is dropped: a thread woken while
 * we still hold the mutex would only block again on it. The waiter counted
 * here is inside pthread_cond_wait (it registered under the lock we hold), so
 * the late signal cannot be lost. */
static bool push_locked(Queue *q, void *item)
{
	size_t len = atomic_load_explicit(&q->length, memory_order_relaxed);
	q->ring[(q->head + len) % q->capacity] = item;
	atomic_store_explicit(&q->length, len + 1, memory_order_relaxed);
	q->unfinished++;
	return q->waiting_getters > 0;
}

int queue_put(Queue *q, void *item)
{
	assert(item);
	pthread_mutex_lock(&q->lock);
	while (!q->closed && occupancy_locked(q) >= q->capacity) {
		q->put_waits++;
		q->waiting_putters++;
		pthread_cond_wait(&q->not_full, &q->lock);
		q->waiting_putters--;
	}
	if (q->closed) {
		pthread_mutex_unlock(&q->lock);
		return -EPIPE;
	}
	bool wake = push_locked(q, item);
	pthread_mutex_unlock(&q->lock);
	if (wake)
		pthread_cond_signal(&q->not_empty);
	return 0;
}

static int try_put(Queue *q, void *item, bool arm, bool defer)
{
	assert(item);
	int r = 0;
	bool wake = false;
	pthread_mutex_lock(&q->lock);
	if (q->closed)
		r = -EPIPE;
	else if (occupancy_locked(q) >= q->capacity) {
		r = -EAGAIN;
		if (arm && q->room_fn)
			q->room_wanted = true;
	} else {
		wake = push_locked(q, item);
		if (wake && defer) {
			q->deferred_wakes++;
			wake = false;
		}
	}
	pthread_mutex_unlock(&q->lock);
	if (wake)
		pthread_cond_signal(&q->not_empty);
	return r;
}

int queue_try_put(Queue *q, void *item)
{
	return try_put(q, item, false, false);
}

int queue_try_put_arm(Queue *q, void *item)
{
	return try_put(q, item, true, false);
}

int queue_try_put_arm_deferred(Queue *q, void *item)
{
	return try_put(q, item, true, true);
}

void queue_wake_deferred(Queue *q)
{
	pthread_mutex_lock(&q->lock);
	unsigned n = q->deferred_wakes;
	q->deferred_wakes = 0;
	pthread_mutex_unlock(&q->lock);
	/* A getter woken for an item another took meanwhile waits again. */
	while (n-- > 0)
		pthread_cond_signal(&q->not_empty);
}

void queue_set_room_callback(Queue *q, QueueRoomFn fn, void *userdata)
{
	q->room_fn = fn;
	q->room_userdata = userdata;
}

/* With the lock held: disarms and returns whether the room callback is due. */
static bool take_room_locked(Queue *q)
{
	if (!q->room_wanted)
		return false;
	q->room_wanted = false;
	q->room_calls++;
	return true;
}

/* Marks n items done; with the lock held. */
static void done_locked(Queue *q, unsigned n)
{
	assert(q->unfinished >= n);
	q->unfinished -= n;
	if (n > 0 && q->unfinished == 0 && q->waiting_joiners > 0)
		pthread_cond_broadcast(&q->all_done);
}

static void heap_swap(Delayed *h, size_t a, size_t b)
{
	Delayed t = h[a];
	h[a] = h[b];
	h[b] = t;
}

static void heap_up(Delayed *h, size_t i)
{
	while (i > 0 && h[(i - 1) / 2].due_usec > h[i].due_usec) {
		heap_swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(Delayed *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && h[l].due_usec < h[m].due_usec)
			m = l;
		if (r < n && h[r].due_usec < h[m].due_usec)
			m = r;
		if (m == i)
			return;
		heap_swap(h, i, m);
		i = m;
	}
}

int queue_put_delayed(Queue *q, void *item, uint64_t due_usec)
{
	assert(item);
	pthread_mutex_lock(&q->lock);
	if (q->refuse_delayed) {
		pthread_mutex_unlock(&q->lock);
		return -ECANCELED;
	}
	if (q->n_delayed == q->delayed_alloc) {
		size_t n = q->delayed_alloc ? 2 * q->delayed_alloc : 8;
		Delayed *h = realloc(q->delayed, n * sizeof(*h));
		if (!h) {
			pthread_mutex_unlock(&q->lock);
			return -ENOMEM;
		}
		q->delayed = h;
		q->delayed_alloc = n;
	}
	q->delayed[q->n_delayed] = (Delayed){ .due_usec = due_usec, .item = item };
	heap_up(q->delayed, q->n_delayed++);
	q->unfinished++;
	/* A waiting getter recomputes how long to sleep. */
	bool wake = q->waiting_getters > 0;
	pthread_mutex_unlock(&q->lock);
	if (wake)
		pthread_cond_signal(&q->not_empty);
	return 0;
}

void queue_refuse_delayed(Queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->refuse_delayed = true;
	pthread_mutex_unlock(&q->lock);
}

/* With the lock held: takes the earliest delayed item if it is due. */
static void *take_due_locked(Queue *q)
{
	if (q->n_delayed == 0 || q->delayed[0].due_usec > mono_usec())
		return NULL;
	void *item = q->delayed[0].item;
	q->delayed[0] = q->delayed[--q->n_delayed];
	heap_down(q->delayed, q->n_delayed, 0);
	return item;
}

/* Sleeps on not_empty (lock held), until the earliest delayed item is due if
 * there is one. */
static void wait_not_empty_locked(Queue *q)
{
	q->get_waits++;
	q->waiting_getters++;
	if (q->n_delayed > 0) {
		struct timespec ts = usec_to_timespec(q->delayed[0].due_usec);
		pthread_cond_timedwait(&q->not_empty, &q->lock, &ts);
	} else {
		pthread_cond_wait(&q->not_empty, &q->lock);
	}
	q->waiting_getters--;
}

int queue_get(Queue *q, void **ret_item, unsigned *interrupt_seen)
{
	return queue_get_next(q, 0, ret_item, interrupt_seen);
}

int queue_get_next(Queue *q, unsigned done, void **ret_item, unsigned *interrupt_seen)
{
	void *item;

	pthread_mutex_lock(&q->lock);
	done_locked(q, done);
	for (;;) {
		if (interrupt_seen && *interrupt_seen != q->interrupts) {
			*interrupt_seen = q->interrupts;
			pthread_mutex_unlock(&q->lock);
			return -EINTR;
		}
		if ((item = take_due_locked(q)))
			break;
		size_t len = atomic_load_explicit(&q->length, memory_order_relaxed);
		if (len > 0) {
			item = q->ring[q->head];
			q->ring[q->head] = NULL;
			q->head = (q->head + 1) % q->capacity;
			/* Under the lock, so a plain store will do: no read-modify-write. */
			atomic_store_explicit(&q->length, len - 1, memory_order_relaxed);
			break;
		}
		if (q->closed && q->n_delayed == 0) {
			pthread_mutex_unlock(&q->lock);
			return -EPIPE;
		}
		wait_not_empty_locked(q);
	}
	*ret_item = item;
	size_t occ = occupancy_locked(q);
	/* Low-water mark: a putter that found the queue full sleeps until the
	 * queue is down to half, then refills it in one go. Waking it at the
	 * first free slot would cost a sleep and a wake-up per item while a
	 * fast stage feeds a slow one. Signalled unlocked, as in push_locked. */
	bool wake = q->waiting_putters > 0 && occ <= q->capacity / 2;
	q->put_wakes += wake;
	bool room = occ <= q->capacity / 2 && take_room_locked(q);
	pthread_mutex_unlock(&q->lock);
	if (wake)
		pthread_cond_signal(&q->not_full);
	if (room)
		q->room_fn(q->room_userdata);
	return 0;
}

void queue_task_done(Queue *q)
{
	pthread_mutex_lock(&q->lock);
	done_locked(q, 1);
	pthread_mutex_unlock(&q->lock);
}

void queue_join(Queue *q)
{
	pthread_mutex_lock(&q->lock);
	while (q->unfinished > 0) {
		q->join_waits++;
		q->waiting_joiners++;
		pthread_cond_wait(&q->all_done, &q->lock);
		q->waiting_joiners--;
	}
	pthread_mutex_unlock(&q->lock);
}

void queue_close(Queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	pthread_cond_broadcast(&q->not_empty);
	pthread_cond_broadcast(&q->not_full);
	bool room = take_room_locked(q); /* the armed producer learns of the close */
	pthread_mutex_unlock(&q->lock);
	if (room)
		q->room_fn(q->room_userdata);
}

size_t queue_remove_if(Queue *q, bool (*match)(void *item, void *userdata), void *userdata,
                       void **out, size_t max)
{
	size_t taken = 0;
	pthread_mutex_lock(&q->lock);
	size_t len = atomic_load_explicit(&q->length, memory_order_relaxed), kept = 0;
	for (size_t i = 0; i < len; i++) {
		void **slot = &q->ring[(q->head + i) % q->capacity];
		void *item = *slot;
		if (taken < max && match(item, userdata))
			out[taken++] = item;
		else
			q->ring[(q->head + kept++) % q->capacity] = item;
	}
	for (size_t i = kept; i < len; i++)
		q->ring[(q->head + i) % q->capacity] = NULL;
	atomic_store_explicit(&q->length, kept, memory_order_relaxed);
	size_t n = q->n_delayed;
	q->n_delayed = 0;
	for (size_t i = 0; i < n; i++) {
		Delayed d = q->delayed[i];
		if (taken < max && match(d.item, userdata)) {
			out[taken++] = d.item;
		} else {
			q->delayed[q->n_delayed] = d;
			heap_up(q->delayed, q->n_delayed++);
		}
	}
	bool wake = taken > 0 && q->waiting_putters > 0;
	/* A getter sleeping until a delayed item is due must recompute: that
	 * item may be gone (and a closed queue now empty: it must exit). */
	bool wake_getters = n != q->n_delayed && q->waiting_getters > 0;
	pthread_mutex_unlock(&q->lock);
	if (wake)
		pthread_cond_broadcast(&q->not_full);
	if (wake_getters)
		pthread_cond_broadcast(&q->not_empty);
	return taken;
}

void queue_interrupt(Queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->interrupts++;
	pthread_cond_broadcast(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
}

void queue_stats(Queue *q, QueueStats *ret)
{
	pthread_mutex_lock(&q->lock);
	*ret = (QueueStats){
		.capacity = q->capacity,
		.length = atomic_load_explicit(&q->length, memory_order_relaxed),
		.delayed = q->n_delayed,
		.unfinished = q->unfinished,
		.closed = q->closed,
		.put_waits = q->put_waits,
		.get_waits = q->get_waits,
		.join_waits = q->join_waits,
		.put_wakes = q->put_wakes,
		.room_calls = q->room_calls,
	};
	pthread_mutex_unlock(&q->lock);
}

size_t queue_capacity(const Queue *q)
{
	return q->capacity;
}

size_t queue_length(Queue *q)
{
	return atomic_load_explicit(&q->length, memory_order_relaxed);
}
