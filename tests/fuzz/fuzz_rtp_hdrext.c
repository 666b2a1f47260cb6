/* libFuzzer target: the RTP header extension's parser, the bytes a network
 * peer controls (gst/common/gstrtphdrextfaprompt.c, faprompt_read through the
 * GstRTPHeaderExtension API). An accepted extension must leave a readable
 * meta on the buffer. */
#include <gst/gst.h>
#include <stdint.h>
#include <gst/rtp/gstrtphdrext.h>

#include "gstfapromptmeta.h"
#include "gstrtphdrextfaprompt.h"

static GstRTPHeaderExtension *ext;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  gst_init(NULL, NULL);
  ext = g_object_new(GST_TYPE_RTP_HEADER_EXTENSION_FAPROMPT, NULL);
  gst_rtp_header_extension_set_id(ext, 1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  GstBuffer *buf = gst_buffer_new();
  /* twice: the second read of one frame must keep the first result */
  for (int i = 0; i < 2; i++)
    if (gst_rtp_header_extension_read(ext, GST_RTP_HEADER_EXTENSION_TWO_BYTE, data, size, buf)) {
      GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(buf);
      if (!m || m->map_width == 0 || m->map_width > 255)
        __builtin_trap();
      volatile float v = gst_faprompt_meta_map_at(m, (gint)m->width - 1, (gint)m->height - 1);
      (void)v;
    }
  gst_buffer_unref(buf);
  return 0;
}
