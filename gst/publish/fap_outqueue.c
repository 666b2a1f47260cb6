#include "fap_outqueue.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

gboolean
fap_outqueue_init (FapOutQueue * q, guint capacity)
{
  q->wake_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (q->wake_fd < 0)
    return FALSE;
  g_mutex_init (&q->lock);
  q->capacity = MAX (capacity, 1);
  q->slots = g_new0 (FapEvent, q->capacity);
  q->confirmed = g_new0 (gboolean, q->capacity);
  q->head = q->tail = q->send = 0;
  q->dropped = 0;
  return TRUE;
}

void
fap_outqueue_clear (FapOutQueue * q)
{
  if (!q->slots)
    return;
  g_free (q->slots);
  g_free (q->confirmed);
  q->slots = NULL;
  q->confirmed = NULL;
  close (q->wake_fd);
  q->wake_fd = -1;
  g_mutex_clear (&q->lock);
}

void
fap_outqueue_wake (FapOutQueue * q)
{
  guint64 one = 1;
  /* EAGAIN: the counter is already non-zero, the sender wakes anyway */
  if (write (q->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
    g_warning ("fapromptpublish: cannot wake the sender: %s",
        g_strerror (errno));
}

void
fap_outqueue_drain_wake (FapOutQueue * q)
{
  guint64 n;
  if (read (q->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
    g_warning ("fapromptpublish: wake-up read failed: %s", g_strerror (errno));
}

gboolean
fap_outqueue_push (FapOutQueue * q, const FapEvent * e)
{
  gboolean dropped = FALSE;
  guint i;

  g_mutex_lock (&q->lock);
  if (q->tail - q->head == q->capacity) {
    q->head++;
    q->send = MAX (q->send, q->head);
    q->dropped++;
    dropped = TRUE;
  }
  i = (guint) (q->tail % q->capacity);
  q->slots[i] = *e;
  q->confirmed[i] = FALSE;
  q->tail++;
  g_mutex_unlock (&q->lock);
  fap_outqueue_wake (q);
  return dropped;
}

gboolean
fap_outqueue_next (FapOutQueue * q, FapEvent * e, guint64 * index)
{
  gboolean ok = FALSE;

  g_mutex_lock (&q->lock);
  /* after a rewind: what the target confirmed meanwhile is not sent twice */
  while (q->send < q->tail && q->confirmed[q->send % q->capacity])
    q->send++;
  if (q->send < q->tail) {
    *e = q->slots[q->send % q->capacity];
    *index = q->send++;
    ok = TRUE;
  }
  g_mutex_unlock (&q->lock);
  return ok;
}

void
fap_outqueue_confirm (FapOutQueue * q, guint64 index)
{
  g_mutex_lock (&q->lock);
  if (index >= q->head && index < q->send) {    /* not dropped meanwhile */
    q->confirmed[index % q->capacity] = TRUE;
    while (q->head < q->send && q->confirmed[q->head % q->capacity])
      q->head++;
  }
  g_mutex_unlock (&q->lock);
}

void
fap_outqueue_rewind (FapOutQueue * q)
{
  g_mutex_lock (&q->lock);
  q->send = q->head;
  g_mutex_unlock (&q->lock);
}

guint
fap_outqueue_length (FapOutQueue * q)
{
  guint n;
  g_mutex_lock (&q->lock);
  n = (guint) (q->tail - q->head);
  g_mutex_unlock (&q->lock);
  return n;
}

guint64
fap_outqueue_dropped (FapOutQueue * q)
{
  guint64 n;
  g_mutex_lock (&q->lock);
  n = q->dropped;
  g_mutex_unlock (&q->lock);
  return n;
}
