#!/usr/bin/python3
"""Throughput of faprompt on a synthetic stream, and what each frame costs.

  GST_PLUGIN_PATH=build/gst pipelines/bench.py MODEL [--frames 600] [--size 1280x720]
      [--format NV12] [--interval 30] [--non-blocking] [--image-size 336] [--live]
      [prop=value ...]

Runs  videotestsrc num-buffers=N ! video/x-raw,format=F,width=W,height=H,framerate=R
      ! faprompt ... ! fakesink
as fast as it goes (framerate 1000/1, sync=false), or with --live as a 30 fps
live camera would (is-live, sync=true). Timing starts at the first frame that
reaches the sink (model loading excluded) and ends at the last. Prints frames
per second, the longest gap between two frames at the sink, how many frames
carried a result, and the element's average-inference-ms and average-frame-ms
(a frame that ran no inference itself: metas, regions, overlay of the reused
map, hand-off to the worker).
"""
import argparse
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def run(desc):
    pipe = Gst.parse_launch(desc)
    arrivals, with_meta = [], [0]

    def probe(pad, info):
        arrivals.append(time.monotonic())
        if info.get_buffer().get_custom_meta("GstFAPromptStructureMeta") is not None:
            with_meta[0] += 1
        return Gst.PadProbeReturn.OK

    pipe.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE,
                                            Gst.MessageType.EOS | Gst.MessageType.ERROR)
    if msg.type == Gst.MessageType.ERROR:
        raise SystemExit(f"error: {msg.parse_error()[0].message}")
    fap = pipe.get_by_name("fap")
    stats = None
    if fap is not None:
        stats = {k: fap.get_property(k) for k in
                 ("frames-processed", "inferences", "average-inference-ms", "average-frame-ms")}
    pipe.set_state(Gst.State.NULL)
    span = arrivals[-1] - arrivals[0]
    gap = max(b - a for a, b in zip(arrivals, arrivals[1:]))
    return (len(arrivals) - 1) / span, gap, with_meta[0], stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--format", default="NV12")
    ap.add_argument("--interval", type=int, default=30)
    ap.add_argument("--non-blocking", action="store_true")
    ap.add_argument("--image-size", type=int, default=0)
    ap.add_argument("--live", action="store_true")
    ap.add_argument("--pattern", default="smpte")
    ap.add_argument("props", nargs="*")
    a = ap.parse_intermixed_args()
    Gst.init(None)
    w, h = a.size.split("x")
    rate, live, sync = ("30/1", "true", "true") if a.live else ("1000/1", "false", "false")
    src = (f"videotestsrc num-buffers={a.frames} is-live={live} pattern={a.pattern} ! "
           f"video/x-raw,format={a.format},width={w},height={h},framerate={rate}")
    fap = (f"faprompt name=fap model-file={a.model} inference-interval={a.interval} "
           f"non-blocking={'true' if a.non_blocking else 'false'} image-size={a.image_size} "
           f"post-messages=none" + "".join(" " + p for p in a.props))
    desc = f"{src} ! {fap} ! fakesink name=sink sync={sync}"
    fps, gap, metas, s = run(desc)
    print(f"pipeline: gst-launch-1.0 {desc}")
    print(f"  {fps:.1f} fps over {a.frames} frames, longest gap {gap * 1000:.0f} ms, "
          f"{metas} frames with a result")
    print(f"  inferences {s['inferences']}, average-inference-ms {s['average-inference-ms']:.1f}, "
          f"average-frame-ms {s['average-frame-ms']:.2f} (frames without an inline inference)",
          flush=True)


if __name__ == "__main__":
    main()
