#!/usr/bin/python3
"""Throughput of faprompt on a synthetic stream, and what each frame costs.

  GST_PLUGIN_PATH=build/gst pipelines/bench.py MODEL [--frames 600] [--size 1280x720]
      [--format NV12] [--interval 30] [--non-blocking] [--image-size 336] [--live]
      [prop=value ...]
  GST_PLUGIN_PATH=build/gst pipelines/bench.py MODEL --streams N [--rounds 3] ...
      N streams into N private elements and into one shared instance
      (model-instance-id, batch-size=N), interleaved rounds: aggregate
      frames/s, per-frame time in the element p50/p99, peak RSS

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
import os
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


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_streams(a, n, shared):
    """N sources, each through its own faprompt (private detectors, or one
    shared model instance with batch-size N), as fast as they go; per frame
    the time it spent in the element (sink pad to src pad)."""
    w, h = a.size.split("x")
    inst = f" model-instance-id=bench-{os.getpid()}-{run_streams.runs} batch-size={n}" if shared else ""
    run_streams.runs += 1
    branches = []
    for i in range(n):
        branches.append(
            f"videotestsrc num-buffers={a.frames} pattern={i % 20} ! "
            f"video/x-raw,format={a.format},width={w},height={h},framerate=1000/1 ! "
            f"faprompt name=f{i} model-file={a.model} inference-interval={a.interval} "
            f"non-blocking=false image-size={a.image_size} post-messages=none{inst}"
            + "".join(" " + p for p in a.props) + f" ! fakesink name=s{i} sync=false")
    pipe = Gst.parse_launch(" ".join(branches))
    entered, lat, done, peak = [{} for _ in range(n)], [[] for _ in range(n)], [0] * n, [0.0]

    def sink_probe(pad, info, i):
        entered[i][info.get_buffer().pts] = time.monotonic()
        return Gst.PadProbeReturn.OK

    def src_probe(pad, info, i):
        t = entered[i].pop(info.get_buffer().pts, None)
        if t is not None:
            lat[i].append(time.monotonic() - t)
        done[i] += 1
        peak[0] = max(peak[0], rss_mib())
        return Gst.PadProbeReturn.OK

    for i in range(n):
        f = pipe.get_by_name(f"f{i}")
        f.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, sink_probe, i)
        f.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, src_probe, i)
    t0 = time.monotonic()
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE,
                                            Gst.MessageType.EOS | Gst.MessageType.ERROR)
    span = time.monotonic() - t0
    if msg.type == Gst.MessageType.ERROR:
        raise SystemExit(f"error: {msg.parse_error()[0].message}")
    batch = pipe.get_by_name("f0").get_property("average-batch")
    pipe.set_state(Gst.State.NULL)
    every = sorted(x for l in lat for x in l)
    pct = lambda q: every[min(len(every) - 1, int(q * len(every)))] * 1000
    return sum(done) / span, pct(0.5), pct(0.99), batch, peak[0]


run_streams.runs = 0


def main_streams(a):
    print(f"cpu: {cpu_flags()}")
    print(f"{a.streams} streams of {a.size} {a.format}, {a.frames} frames each, "
          f"inference-interval={a.interval}, blocking, model {a.model}; rounds interleaved\n")
    rows = {"private": [], "shared": []}
    for r in range(a.rounds):
        for kind in ("private", "shared"):
            rows[kind].append(run_streams(a, a.streams, kind == "shared"))
            fps, p50, p99, batch, rss = rows[kind][-1]
            print(f"  round {r + 1} {kind:7}: {fps:7.3f} frames/s, p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms, batch {batch:.2f}, RSS {rss:.0f} MiB", flush=True)
    print("\n| elements | aggregate frames/s (best) | p50 ms | p99 ms | frames per batch | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for kind in ("private", "shared"):
        best = max(rows[kind], key=lambda x: x[0])
        label = (f"{a.streams} private detectors" if kind == "private" else
                 f"1 shared instance, batch-size={a.streams}")
        print(f"| {label} | {best[0]:.3f} | {best[1]:.1f} | {best[2]:.1f} | "
              f"{best[3]:.2f} | {max(x[4] for x in rows[kind]):.0f} |")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "flags unknown"
    model = next((l.split(":", 1)[1].strip() for l in text.splitlines()
                  if l.startswith("model name")), "unknown")
    flags = next((l.split(":", 1)[1].split() for l in text.splitlines()
                  if l.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
           if f in flags]
    return f"{model}, {' '.join(isa)}, {os.cpu_count()} cores"


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
    ap.add_argument("--streams", type=int, default=0,
                    help="N streams: N private elements against one shared instance, interleaved")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("props", nargs="*")
    a = ap.parse_intermixed_args()
    Gst.init(None)
    if a.streams > 0:
        main_streams(a)
        return
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
