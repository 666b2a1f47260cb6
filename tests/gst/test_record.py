#!/usr/bin/python3
"""fapromptrecord on synthetic streams whose anomalies are placed in time (the
faprompt element's image-threshold driven by a control source: 1 = nothing is
anomalous, 0 = everything is).

    test_record.py --model TINY.safetensors --schema SCHEMA.json

- one anomaly in [3 s, 5 s): one snapshot, one sidecar (valid, event
  anomaly-started at pts 3 s), one Matroska clip covering [3 - pre, 5 + post]
  (gst-discoverer-1.0), decodable frame by frame; a bus message per file;
- H.264 ring: the clip starts on the key frame at or before 3 - pre;
- clean-snapshot: the clean frame and the annotated one differ only where
  the heatmap is drawn;
- the disk budget: the first event's files go when the second's arrive;
- an anomaly still open at EOS: its clip is closed and runs to the end;
- bad settings: an unusable folder and a bad encoder are errors, max-bytes=0
  a warning with nothing written.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstController", "1.0")
from gi.repository import Gst, GstController  # noqa: E402

failures = 0
FPS = 10


def check(cond, what, detail=""):
    global failures
    print(f"{'ok' if cond else 'FAIL':4} {what}", flush=True)
    if not cond:
        failures += 1
        if detail:
            print("     " + str(detail).strip().replace("\n", "\n     "), flush=True)


def run(model, out, seconds, anomalies, record_props="", faprompt_props="", timeout=60):
    """Runs seconds of video with anomalies [(start, end), ...] in seconds
    through faprompt ! fapromptrecord; returns (files messages, warnings,
    errors)."""
    desc = (f"videotestsrc num-buffers={seconds * FPS} pattern=ball ! "
            f"video/x-raw,format=I420,width=160,height=120,framerate={FPS}/1 ! "
            f"faprompt name=f model-file={model} {faprompt_props} ! "
            f"fapromptrecord name=r location={out} source-id=cam1 {record_props} ! "
            "fakesink sync=false")
    p = Gst.parse_launch(desc)
    f = p.get_by_name("f")
    cs = GstController.InterpolationControlSource(mode=GstController.InterpolationMode.NONE)
    cs.set(0, 1.0)
    for a, b in anomalies:
        cs.set(int(a * Gst.SECOND), 0.0)
        cs.set(int(b * Gst.SECOND), 1.0)
    f.add_control_binding(GstController.DirectControlBinding.new_absolute(f, "image-threshold", cs))
    files, warnings, errors = [], [], []
    p.set_state(Gst.State.PLAYING)
    bus = p.get_bus()
    kinds = Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.WARNING | Gst.MessageType.ELEMENT
    while True:
        m = bus.timed_pop_filtered(timeout * Gst.SECOND, kinds)
        if m is None:
            errors.append("timeout: no EOS")
            break
        if m.type == Gst.MessageType.ELEMENT:
            s = m.get_structure()
            if s.get_name() == "fapromptrecord":
                files.append((s.get_string("kind"), s.get_string("location"), s.get_value("bytes")))
        elif m.type == Gst.MessageType.WARNING:
            warnings.append(m.parse_warning()[0].message)
        elif m.type == Gst.MessageType.ERROR:
            errors.append(m.parse_error()[0].message)
            break
        else:
            break
    p.set_state(Gst.State.NULL)
    return files, warnings, errors


def duration(path):
    out = subprocess.run(["gst-discoverer-1.0", path], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", out)
    return (int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))) if m else None, out


def decoded_frames(path, decoder):
    p = Gst.parse_launch(f"filesrc location={path} ! matroskademux ! {decoder} ! "
                         "appsink name=s sync=false emit-signals=false")
    sink = p.get_by_name("s")
    p.set_state(Gst.State.PLAYING)
    n, first = 0, None
    while True:
        smp = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if smp is None:
            break
        if first is None:
            first = smp.get_buffer().pts
        n += 1
    msg = p.get_bus().pop_filtered(Gst.MessageType.ERROR)
    p.set_state(Gst.State.NULL)
    return n, first, (msg.parse_error()[0].message if msg else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--schema", required=True)
    a = ap.parse_args()
    Gst.init(None)
    import jsonschema
    validator = jsonschema.Draft202012Validator(json.load(open(a.schema)))
    tmp = tempfile.mkdtemp(prefix="fapromptrecord-")
    try:
        # ---- one anomaly, MJPEG ring ----
        out = os.path.join(tmp, "one")
        files, warns, errs = run(a.model, out, 8, [(3, 5)], "pre-seconds=1 post-seconds=1")
        check(not errs, "one anomaly: the pipeline ran to EOS", errs)
        kinds = sorted(k for k, _, _ in files)
        check(kinds == ["clip", "sidecar", "snapshot"], "one snapshot, one sidecar, one clip "
              "(a bus message each)", files)
        names = sorted(os.listdir(out))
        check(len(names) == 3 and all(re.match(r"cam1_\d{8}T\d{6}\.\d{3}Z_1\.(jpg|json|mkv)$", n)
                                      for n in names),
              "file names: <source>_<UTC time>_<n>", names)
        clip = next((loc for k, loc, _ in files if k == "clip"), None)
        side = next((loc for k, loc, _ in files if k == "sidecar"), None)
        snap = next((loc for k, loc, _ in files if k == "snapshot"), None)
        if clip:
            d, info = duration(clip)
            # [3 - pre, 5 + post] = [2, 6], plus the last frame's duration
            check(d is not None and 4.0 <= d <= 4.0 + 2.0 / FPS,
                  f"clip duration {d} s covers [3 - 1, 5 + 1] (4.0 .. 4.2)", info)
            n, first, err = decoded_frames(clip, "jpegdec")
            check(err is None and n == 41 and first == 0,
                  f"clip decodes: {n} frames (41 = 2.0 s .. 6.0 s at 10 fps), starts at 0", err)
        if side:
            doc = json.load(open(side))
            errors = [e.message for e in validator.iter_errors(doc)]
            check(not errors, "sidecar valid against the schema", errors)
            check(doc.get("event") == "anomaly-started" and doc.get("pts_ns") == 3 * 10**9
                  and doc.get("anomalous") is True and doc.get("source") == "cam1",
                  "sidecar: anomaly-started at pts 3 s, source cam1", doc)
        if snap:
            from PIL import Image
            im = Image.open(snap)
            check(im.format == "JPEG" and im.size == (160, 120), f"snapshot is a 160x120 JPEG ({im.format} {im.size})")

        # ---- H.264 ring: key frames every second ----
        if Gst.ElementFactory.find("x264enc"):
            out = os.path.join(tmp, "h264")
            files, warns, errs = run(a.model, out, 8, [(3, 5)],
                                     "pre-seconds=1.5 post-seconds=1 encoder=\"x264enc tune=zerolatency "
                                     "speed-preset=ultrafast key-int-max=10 ! h264parse\"")
            clips = [loc for k, loc, _ in files if k == "clip"]
            check(not errs and len(clips) == 1, "H.264 ring: one clip", (errs, files))
            if clips:
                d, info = duration(clips[0])
                # key frames at 0, 1, 2, ... s: the one at or before 3 - 1.5 is 1 s
                check(d is not None and 5.0 <= d <= 5.0 + 2.0 / FPS,
                      f"H.264 clip duration {d} s: from the key frame at 1 s to 6 s (5.0 .. 5.2)", info)
                n, first, err = decoded_frames(clips[0], "h264parse ! avdec_h264")
                check(err is None and n == 51, f"H.264 clip decodes from its first frame: {n} frames (51)", err)
        else:
            print("#    x264enc not installed: H.264 ring not checked")

        # ---- clean snapshot ----
        out = os.path.join(tmp, "clean")
        files, warns, errs = run(a.model, out, 5, [(2, 3)], "pre-seconds=0.5 post-seconds=0.5 clean-snapshot=true",
                                 "draw-heatmap=false pixel-threshold=0.3")
        kinds = sorted(k for k, _, _ in files)
        check(not errs and kinds == ["clip", "sidecar", "snapshot", "snapshot-clean"],
              "clean-snapshot: the clean frame and the annotated one", (errs, files))
        locs = dict((k, l) for k, l, _ in files)
        if "snapshot" in locs and "snapshot-clean" in locs:
            import numpy as np
            from PIL import Image
            c = np.asarray(Image.open(locs["snapshot-clean"]).convert("RGB"), dtype=np.int16)
            d = np.asarray(Image.open(locs["snapshot"]).convert("RGB"), dtype=np.int16)
            diff = np.abs(c - d).max(axis=2)
            frac = float((diff > 24).mean())
            check(0.01 < frac < 0.99, f"the annotated snapshot carries a heatmap the clean one has not "
                  f"({frac:.1%} of the pixels differ by more than JPEG noise)")

        # ---- disk budget: two events, room for about one ----
        out = os.path.join(tmp, "budget")
        probe, _, _ = run(a.model, os.path.join(tmp, "probe"), 4, [(1, 2)], "pre-seconds=0.5 post-seconds=0.5")
        one_event = sum(b for k, _, b in probe if k != "removed")
        budget = int(one_event * 1.5)
        files, warns, errs = run(a.model, out, 9, [(1, 2), (5, 6)],
                                 f"pre-seconds=0.5 post-seconds=0.5 max-bytes={budget}")
        removed = [l for k, l, _ in files if k == "removed"]
        left = sorted(os.listdir(out))
        total = sum(os.path.getsize(os.path.join(out, n)) for n in left)
        check(not errs and removed and total <= budget and all(n.endswith(("_2.jpg", "_2.json", "_2.mkv")) or n in left for n in left)
              and any(n.endswith("_2.mkv") for n in left),
              f"max-bytes={budget}: the oldest files removed ({len(removed)}), {total} bytes left, "
              f"the second event's clip kept", (files, left))

        # ---- anomalous at EOS ----
        out = os.path.join(tmp, "eos")
        files, warns, errs = run(a.model, out, 6, [(4, 99)], "pre-seconds=1 post-seconds=5")
        clips = [l for k, l, _ in files if k == "clip"]
        check(not errs and len(clips) == 1, "anomaly open at EOS: the clip is closed", (errs, files))
        if clips:
            d, info = duration(clips[0])
            check(d is not None and 3.0 <= d <= 3.0 + 2.0 / FPS, f"it runs from 3 s to the end (duration {d}, 3.0 .. 3.2)", info)

        # ---- bad settings ----
        files, warns, errs = run(a.model, "/etc/passwd/evidence", 2, [])
        check(errs and "evidence" in errs[0], "a folder that cannot be made: an error naming it", errs)
        files, warns, errs = run(a.model, os.path.join(tmp, "bad-enc"), 2, [], "encoder=nosuchencoder")
        check(errs and "nosuchencoder" in errs[0], "a bad encoder: an error naming it", errs)
        out = os.path.join(tmp, "zero")
        files, warns, errs = run(a.model, out, 4, [(1, 2)], "max-bytes=0")
        check(not errs and any("max-bytes=0" in w for w in warns) and not [f for f in files if f[0] != "removed"]
              and os.listdir(out) == [], "max-bytes=0: a warning, nothing written, frames pass", (warns, files))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    print(f"# {failures} failure(s)")
    sys.exit(1 if failures else 0)
