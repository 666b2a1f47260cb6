/* rtphdrextfaprompt: carries the faprompt result of each video frame in an
 * RTP header extension (two-byte form), so that the result crosses an RTP /
 * RTSP hop together with the encoded frame. See gst/README.md. */
#ifndef __GST_RTP_HDREXT_FAPROMPT_H__
#define __GST_RTP_HDREXT_FAPROMPT_H__

#include <gst/gst.h>
#include <gst/rtp/gstrtphdrext.h>

G_BEGIN_DECLS

#define FAPROMPT_HDREXT_URI "urn:faprompt:rtp-hdrext:result"
/* side of the coarse map sent with every frame (u8 cells) */
#define FAPROMPT_HDREXT_MAP_SIDE 15

#define GST_TYPE_RTP_HEADER_EXTENSION_FAPROMPT \
  (gst_rtp_header_extension_faprompt_get_type ())
G_DECLARE_FINAL_TYPE (GstRTPHeaderExtensionFAPrompt,
    gst_rtp_header_extension_faprompt, GST, RTP_HEADER_EXTENSION_FAPROMPT,
    GstRTPHeaderExtension)

GST_ELEMENT_REGISTER_DECLARE (rtphdrextfaprompt);

G_END_DECLS

#endif
