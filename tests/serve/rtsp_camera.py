#!/usr/bin/python3
"""A stand-in RTSP camera for faprompt-serve's tests: gst-rtsp-server on
127.0.0.1:PORT serving rtsp://127.0.0.1:PORT/cam, a live test pattern as
Motion-JPEG (RTP/JPEG: cheap to encode and to decode).

  rtsp_camera.py --port PORT [--size 160x120] [--fps 15] [--pattern ball]

Prints "ready PORT" once it listens. Binding is retried for a few seconds: a
camera restarted on the port of one just killed may find it still held.
Needs python3-gi, gir1.2-gst-rtsp-server-1.0.
"""
import argparse
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--pattern", default="ball")
    a = ap.parse_args()
    Gst.init(None)
    w, h = a.size.split("x")
    launch = (f"( videotestsrc is-live=true pattern={a.pattern} ! "
              f"video/x-raw,width={w},height={h},framerate={a.fps}/1,format=I420 ! "
              "jpegenc quality=50 ! rtpjpegpay name=pay0 pt=96 )")
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    deadline = time.monotonic() + 10
    while server.attach(None) == 0:  # 0: it could not listen
        if time.monotonic() > deadline:
            sys.exit(f"rtsp_camera: cannot listen on port {a.port}")
        time.sleep(0.2)
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
