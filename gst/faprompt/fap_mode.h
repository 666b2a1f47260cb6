/* Blocking or non-blocking: the non-blocking property's true and false are
 * taken at start (); auto is decided once per start from whether upstream
 * is live, by the first LATENCY answer that passes through the element
 * (the pipeline's latency query) or, failing that, by the element asking
 * upstream itself from the streaming thread. A live source (a camera) runs
 * non-blocking, so the video keeps its rate; anything else (a file, a test)
 * blocking, so every due frame is scored. */
#ifndef FAP_MODE_H
#define FAP_MODE_H

#include <gst/gst.h>

#include "fap_enums.h"

typedef struct {
  GMutex lock;
  gboolean decided;
  gboolean non_blocking;
  guint queries;                /* LATENCY queries upstream did not answer
                                 * (streaming thread only) */
} FapMode;

void fap_mode_init (FapMode * m);       /* once per element: decided */
void fap_mode_clear (FapMode * m);
/* start (): the property's setting; auto leaves it undecided */
void fap_mode_reset (FapMode * m, GstFAPromptNonBlocking setting);

/* A LATENCY answer from upstream (@live) decides auto if nothing has yet;
 * @element names it in the debug log. Any thread. */
void fap_mode_decide (FapMode * m, GstElement * element, gboolean live);
/* Streaming thread, every frame: while undecided, asks upstream through
 * @element's sink pad (an upstream that cannot answer yet is asked again
 * for a while, the frames meanwhile run blocking; then it counts as not
 * live). TRUE when running non-blocking. */
gboolean fap_mode_settle (FapMode * m, GstElement * element);

gboolean fap_mode_non_blocking (FapMode * m);
gboolean fap_mode_decided (FapMode * m);

#endif
