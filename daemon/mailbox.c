#include "mailbox.h"

#include <stddef.h>

static void deliver_all(Mailbox *m)
{
	pthread_mutex_lock(&m->lock);
	MailNode *n = m->head;
	m->head = m->tail = NULL;
	if (n)
		m->batches++;
	pthread_mutex_unlock(&m->lock);

	while (n) {
		MailNode *next = n->next; /* read first: fn takes n */
		n->next = NULL;
		m->fn(m, n, m->userdata);
		n = next;
	}
}

void mailbox_flush(Mailbox *m)
{
	deliver_all(m);
}

void mailbox_set_prompt(Mailbox *m, bool prompt)
{
	atomic_store(&m->prompt, prompt);
	if (prompt)
		deliver_all(m); /* what was queued while nobody was woken */
}

static void on_async(uv_async_t *handle)
{
	deliver_all((Mailbox *)handle);
}

int mailbox_init(Mailbox *m, uv_loop_t *loop, MailboxFn fn, void *userdata)
{
	*m = (Mailbox){ .fn = fn, .userdata = userdata, .prompt = true };
	int r = uv_async_init(loop, &m->async, on_async);
	if (r < 0)
		return r;
	pthread_mutex_init(&m->lock, NULL);
	return 0;
}

void mailbox_post(Mailbox *m, MailNode *node)
{
	node->next = NULL;
	pthread_mutex_lock(&m->lock);
	bool was_empty = m->head == NULL;
	if (was_empty)
		m->head = node;
	else
		m->tail->next = node;
	m->tail = node;
	m->posts++;
	/* Read under the lock: mailbox_set_prompt(true) stores before it
	 * takes the lock to deliver, so a post that finds the list empty after
	 * that delivery sees prompt set. */
	bool wake = was_empty && atomic_load_explicit(&m->prompt, memory_order_relaxed);
	if (wake)
		m->wakeups++;
	pthread_mutex_unlock(&m->lock);

	/* Outside the lock: the loop may run the callback before this returns,
	 * which is fine — it takes the list under the lock. A node posted to a
	 * non-empty list is picked up by the wake-up its first node caused (or,
	 * with prompt off, by the loop's next flush). */
	if (wake)
		uv_async_send(&m->async);
}

void mailbox_close(Mailbox *m, uv_close_cb close_cb)
{
	/* No thread posts any more (the caller joined them), so after this
	 * last delivery the list stays empty and the lock is unused. */
	deliver_all(m);
	pthread_mutex_destroy(&m->lock);
	uv_close((uv_handle_t *)&m->async, close_cb);
}

void mailbox_counters(Mailbox *m, uint64_t *ret_posts, uint64_t *ret_wakeups, uint64_t *ret_batches)
{
	pthread_mutex_lock(&m->lock);
	if (ret_posts)
		*ret_posts = m->posts;
	if (ret_wakeups)
		*ret_wakeups = m->wakeups;
	if (ret_batches)
		*ret_batches = m->batches;
	pthread_mutex_unlock(&m->lock);
}
