#!/usr/bin/python3
"""RTSP in -> faprompt -> annotated RTSP out, the result riding along.

Serves rtsp://HOST:PORT/faprompt: the input (an RTSP camera, or a test
pattern) runs through faprompt, is encoded (Motion-JPEG by default, H.264 with
--codec h264) and payloaded with the rtphdrextfaprompt RTP header extension:
every frame's score, decision and a 15x15 map travel in the RTP packets, and a
client's depayloader (auto-header-extension, the default) attaches them to the
received frames again, as metas (see pipelines/README.md).

  GST_PLUGIN_PATH=build/gst pipelines/rtsp_server.py --model M [--input rtsp://cam/stream]
      [--port 8554] [--codec jpeg|h264] [faprompt properties, e.g. inference-interval=30]

Client: pipelines/read_meta.py --rtsp rtsp://127.0.0.1:8554/faprompt, or
  gst-launch-1.0 rtspsrc location=rtsp://127.0.0.1:8554/faprompt ! rtpjpegdepay ! jpegdec ! autovideosink
Needs gir1.2-gst-rtsp-server-1.0 and python3-gi (tools/setup.sh installs them).
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtp, GstRtspServer  # noqa: E402

URI = "urn:faprompt:rtp-hdrext:result"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model file (default: the element's default location)")
    ap.add_argument("--input", help="rtsp:// URI of a camera (default: a test pattern)")
    ap.add_argument("--address", default="0.0.0.0")
    ap.add_argument("--port", default="8554")
    ap.add_argument("--mount", default="/faprompt")
    ap.add_argument("--codec", choices=["jpeg", "h264"], default="jpeg")
    ap.add_argument("--size", default="640x360", help="test pattern size")
    ap.add_argument("props", nargs="*", help="faprompt properties, name=value")
    a = ap.parse_args()
    Gst.init(None)
    if Gst.ElementFactory.find("faprompt") is None:
        sys.exit("faprompt element not found: set GST_PLUGIN_PATH to the build's gst/")

    if a.input:
        src = f"rtspsrc location={a.input} latency=200 ! decodebin ! videoconvert"
    else:
        w, h = a.size.split("x")
        src = f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},framerate=30/1"
    fap = "faprompt name=fap " + (f"model-file={a.model} " if a.model else "") + " ".join(a.props)
    if a.codec == "jpeg":  # RTP/JPEG carries 4:2:0 / 4:2:2 only
        enc = "videoconvert ! video/x-raw,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=96"
    else:
        enc = ("videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency "
               "speed-preset=ultrafast ! rtph264pay name=pay0 pt=96 config-interval=1")
    launch = f"( {src} ! videoconvert ! {fap} ! {enc} )"

    server = GstRtspServer.RTSPServer()
    server.set_address(a.address)
    server.set_service(a.port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)  # one pipeline (one faprompt) for every client

    def configure(factory, media):
        pay = media.get_element().get_by_name("pay0")
        ext = GstRtp.RTPHeaderExtension.create_from_uri(URI)
        ext.set_id(1)
        pay.emit("add-extension", ext)

    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(a.mount, factory)
    server.attach(None)
    print(f"serving rtsp://{a.address}:{server.get_bound_port()}{a.mount}\n  {launch}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
