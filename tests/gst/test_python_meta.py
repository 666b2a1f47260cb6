#!/usr/bin/python3
"""The structure-backed meta and the messages, read from Python (python3-gi)
without our C headers, agree with each other and with the documented fields.

  GST_PLUGIN_PATH=build/gst test_python_meta.py MODEL      (TAP output)
"""
import array
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

Gst.init(None)
model = sys.argv[1]
pipe = Gst.parse_launch(
    "videotestsrc num-buffers=6 pattern=ball ! video/x-raw,format=YUY2,width=96,height=72 ! "
    f"faprompt model-file={model} inference-interval=3 post-messages=every-frame "
    "pixel-threshold=0.3 ! fakesink name=sink"
)
seen = []


def probe(pad, info):
    buf = info.get_buffer()
    meta = buf.get_custom_meta("GstFAPromptStructureMeta")
    assert meta is not None, "no GstFAPromptStructureMeta"
    s = meta.get_structure()
    w, h = s.get_uint("map-width")[1], s.get_uint("map-height")[1]
    data = array.array("f", s.get_value("map").get_data())
    assert len(data) >= w * h and w == h > 0
    assert s.get_uint("width")[1] == 96 and s.get_uint("height")[1] == 72
    regions = s.get_value("regions")
    assert len(regions) == s.get_uint("region-count")[1]
    for r in regions:
        assert r.get_double("peak")[1] > 0.3 and r.get_uint("width")[1] > 0
    seen.append((buf.pts, s.get_double("score")[1], s.get_boolean("reused")[1],
                 s.get_uint64("inference-timestamp")[1]))
    return Gst.PadProbeReturn.OK


pipe.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
pipe.set_state(Gst.State.PLAYING)
messages = []
bus = pipe.get_bus()
while True:
    msg = bus.timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.ELEMENT | Gst.MessageType.EOS
                                 | Gst.MessageType.ERROR)
    assert msg is not None, "timeout"
    if msg.type == Gst.MessageType.ERROR:
        raise SystemExit(msg.parse_error()[0].message)
    if msg.type == Gst.MessageType.EOS:
        break
    if msg.get_structure().has_name("faprompt"):
        s = msg.get_structure()
        messages.append((s.get_uint64("timestamp")[1], s.get_double("score")[1],
                         s.get_boolean("reused")[1], s.get_uint64("inference-timestamp")[1]))
pipe.set_state(Gst.State.NULL)

print("1..3")
print("ok 1 meta on every buffer" if len(seen) == 6 else f"not ok 1 {len(seen)} metas")
print("ok 2 messages equal metas" if messages == seen else f"not ok 2 {messages} != {seen}")
reused = [r for _, _, r, _ in seen]
ok = reused == [False, True, True, False, True, True] and seen[1][3] == seen[0][0]
print("ok 3 interval reuse" if ok else f"not ok 3 {seen}")
