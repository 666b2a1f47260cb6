/* The faprompt element's enumerated properties (backend, precision,
 * post-messages, non-blocking) and their GTypes. The values are the core's
 * (fap.h) and the result builder's (fap_results.h), so the element hands
 * them on as they are. */
#ifndef FAP_ENUMS_H
#define FAP_ENUMS_H

#include <gst/gst.h>
#include <fap.h>

#include "fap_results.h"

G_BEGIN_DECLS

typedef enum {
  GST_FA_PROMPT_BACKEND_AUTO = FAP_BACKEND_AUTO,
  GST_FA_PROMPT_BACKEND_CPU = FAP_BACKEND_CPU,
  GST_FA_PROMPT_BACKEND_CUDA = FAP_BACKEND_CUDA,
} GstFAPromptBackend;

typedef enum {
  GST_FA_PROMPT_PRECISION_AUTO = FAP_PRECISION_AUTO,
  GST_FA_PROMPT_PRECISION_F32 = FAP_PRECISION_F32,
  GST_FA_PROMPT_PRECISION_F16 = FAP_PRECISION_F16,
  GST_FA_PROMPT_PRECISION_BF16 = FAP_PRECISION_BF16,
  GST_FA_PROMPT_PRECISION_INT8 = FAP_PRECISION_INT8,
} GstFAPromptPrecision;

typedef enum {
  GST_FA_PROMPT_MESSAGES_NONE = FAP_REPORT_NONE,
  GST_FA_PROMPT_MESSAGES_EVERY_FRAME = FAP_REPORT_EVERY_FRAME,
  GST_FA_PROMPT_MESSAGES_ON_CHANGE = FAP_REPORT_ON_CHANGE,
  GST_FA_PROMPT_MESSAGES_ANOMALOUS = FAP_REPORT_ANOMALOUS,
} GstFAPromptMessages;

typedef enum {
  GST_FA_PROMPT_NON_BLOCKING_FALSE = 0,
  GST_FA_PROMPT_NON_BLOCKING_TRUE = 1,
  GST_FA_PROMPT_NON_BLOCKING_AUTO = 2,
} GstFAPromptNonBlocking;

#define GST_TYPE_FA_PROMPT_BACKEND (gst_fa_prompt_backend_get_type ())
GType gst_fa_prompt_backend_get_type (void);
#define GST_TYPE_FA_PROMPT_PRECISION (gst_fa_prompt_precision_get_type ())
GType gst_fa_prompt_precision_get_type (void);
#define GST_TYPE_FA_PROMPT_MESSAGES (gst_fa_prompt_messages_get_type ())
GType gst_fa_prompt_messages_get_type (void);
#define GST_TYPE_FA_PROMPT_NON_BLOCKING (gst_fa_prompt_non_blocking_get_type ())
GType gst_fa_prompt_non_blocking_get_type (void);

G_END_DECLS

#endif
