#!/usr/bin/python3
"""Throughput of faprompt on a synthetic stream, and what each frame costs.

  GST_PLUGIN_PATH=build/gst pipelines/bench.py MODEL [--frames 600] [--size 1280x720]
      [--format NV12] [--interval 30] [--non-blocking] [--image-size 336] [prop=value ...]

Runs  videotestsrc num-buffers=N ! video/x-raw,format=F,width=W,height=H,framerate=1000/1
      ! faprompt ... ! fakesink sync=false
and the same pipeline without faprompt (the source's own cost), then prints
frames per second end to end, the element's average-inference-ms and
average-frame-ms (a frame that ran no inference itself: metas, regions,
overlay of the reused map, hand-off to the worker).
"""
import argparse
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def run(desc):
    pipe = Gst.parse_launch(desc)
    bus = pipe.get_bus()
    t0 = time.monotonic()
    pipe.set_state(Gst.State.PLAYING)
    msg = bus.timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    wall = time.monotonic() - t0
    if msg.type == Gst.MessageType.ERROR:
        raise SystemExit(f"error: {msg.parse_error()[0].message}")
    fap = pipe.get_by_name("fap")
    stats = None
    if fap is not None:
        stats = {k: fap.get_property(k) for k in
                 ("frames-processed", "inferences", "average-inference-ms", "average-frame-ms")}
    pipe.set_state(Gst.State.NULL)
    return wall, stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--format", default="NV12")
    ap.add_argument("--interval", type=int, default=30)
    ap.add_argument("--non-blocking", action="store_true")
    ap.add_argument("--image-size", type=int, default=0)
    ap.add_argument("--pattern", default="smpte")
    ap.add_argument("props", nargs="*")
    a = ap.parse_intermixed_args()
    Gst.init(None)
    w, h = a.size.split("x")
    src = (f"videotestsrc num-buffers={a.frames} pattern={a.pattern} ! video/x-raw,format={a.format},"
           f"width={w},height={h},framerate=1000/1")
    fap = (f"faprompt name=fap model-file={a.model} inference-interval={a.interval} "
           f"non-blocking={'true' if a.non_blocking else 'false'} image-size={a.image_size} "
           f"post-messages=none " + " ".join(a.props))
    base_wall, _ = run(f"{src} ! fakesink sync=false")
    desc = f"{src} ! {fap} ! fakesink sync=false"
    wall, s = run(desc)
    print(f"pipeline: gst-launch-1.0 {desc}")
    print(f"  {a.frames} frames in {wall:.2f} s: {a.frames / wall:.1f} fps "
          f"(source alone: {a.frames / base_wall:.1f} fps)")
    print(f"  inferences {s['inferences']}, average-inference-ms {s['average-inference-ms']:.1f}, "
          f"average-frame-ms {s['average-frame-ms']:.2f} (frames without an inline inference)")


if __name__ == "__main__":
    main()
