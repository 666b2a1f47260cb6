/* The bounded, ordered queue between a streaming thread and a sender
 * (fapromptpublish): a ring of preallocated FapEvent slots. Entries stay
 * until the target confirms them (an MQTT PUBACK, a line written), so a lost
 * connection resends every unconfirmed one, in order. When full, the oldest
 * entry is dropped and counted: the streaming thread never waits. */
#ifndef FAP_OUTQUEUE_H
#define FAP_OUTQUEUE_H

#include "fap_event.h"

typedef struct {
  GMutex lock;
  FapEvent *slots;
  gboolean *confirmed;
  guint capacity;
  guint64 head, tail;           /* queued: [head, tail), slot i % capacity */
  guint64 send;                 /* handed to the target: [head, send) */
  guint64 dropped;
  gint wake_fd;                 /* eventfd: readable when something was pushed */
} FapOutQueue;

/* FALSE (with errno) when the wake-up descriptor cannot be made. */
gboolean fap_outqueue_init (FapOutQueue * q, guint capacity);
void fap_outqueue_clear (FapOutQueue * q);

/* Copies @e in (streaming thread); drops the oldest entry when full.
 * Returns TRUE when one was dropped. */
gboolean fap_outqueue_push (FapOutQueue * q, const FapEvent * e);

/* The oldest entry not yet handed over: copied to @e, *@index its ticket. */
gboolean fap_outqueue_next (FapOutQueue * q, FapEvent * e, guint64 * index);
/* The target has it; confirmed entries leave from the front, in order. */
void fap_outqueue_confirm (FapOutQueue * q, guint64 index);
/* The target lost what it had not confirmed: hand it over again. */
void fap_outqueue_rewind (FapOutQueue * q);

guint fap_outqueue_length (FapOutQueue * q);
guint64 fap_outqueue_dropped (FapOutQueue * q);
/* Empties the wake-up descriptor (the sender, after poll said readable). */
void fap_outqueue_drain_wake (FapOutQueue * q);
/* Wakes the sender without pushing (stop, a setting changed). */
void fap_outqueue_wake (FapOutQueue * q);

#endif
