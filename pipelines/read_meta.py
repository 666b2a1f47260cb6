#!/usr/bin/python3
"""Read faprompt results from Python without our C headers.

Two ways, both shown: the structure-backed meta on each buffer (a pad probe),
and the "faprompt" element messages on the bus.

  GST_PLUGIN_PATH=build/gst /usr/bin/python3 pipelines/read_meta.py MODEL [N_FRAMES]
  GST_PLUGIN_PATH=build/gst /usr/bin/python3 pipelines/read_meta.py --rtsp URI [N_FRAMES]

With --rtsp the results come from the server (pipelines/rtsp_server.py) in the
RTP header extension: no faprompt runs here, the depayloader attaches the
meta (the map is the 15x15 coarse one) and it survives jpegdec.

Needs python3-gi, gir1.2-gstreamer-1.0 and python3-gst-1.0 (Debian): the last
is GStreamer's Python overrides, which turn the `regions` field (a
GstValueArray) into a list; plain PyGObject cannot convert that type.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

META = "GstFAPromptStructureMeta"


def on_buffer(pad, info, state):
    buf = info.get_buffer()
    state["frames"] += 1
    if state["frames"] >= state["n"] and state["n"] > 0 and state["rtsp"]:
        GLib.idle_add(state["loop"].quit)
    meta = buf.get_custom_meta(META)
    if meta is None:  # no result yet (non-blocking mode, first frames)
        return Gst.PadProbeReturn.OK
    s = meta.get_structure()
    w, h = s.get_uint("map-width")[1], s.get_uint("map-height")[1]
    stride = s.get_uint("map-stride")[1]
    data = s.get_value("map").get_data()  # GLib.Bytes -> bytes, float32 rows
    peak = max(memoryview(data).cast("f"))
    try:
        regions = s.get_value("regions") or []  # Gst.Structure list (not sent over RTP)
    except TypeError:  # GstValueArray without the overrides: say so once, stop
        state["error"] = ("read_meta: install python3-gst-1.0 (GStreamer's Python "
                          "overrides) to read the regions list")
        GLib.idle_add(state["loop"].quit)
        return Gst.PadProbeReturn.OK
    print(
        f"buffer pts={buf.pts / Gst.SECOND:.3f}s score={s.get_double('score')[1]:.4f} "
        f"anomalous={s.get_boolean('anomalous')[1]} reused={s.get_boolean('reused')[1]} "
        f"map={w}x{h} (stride {stride}) peak={peak:.3f} regions={len(regions)}"
        + "".join(
            f" [{r.get_int('x')[1]},{r.get_int('y')[1]} {r.get_uint('width')[1]}x"
            f"{r.get_uint('height')[1]} peak {r.get_double('peak')[1]:.3f}]"
            for r in regions
        )
    )
    return Gst.PadProbeReturn.OK


def main():
    Gst.init(None)
    model = sys.argv[1]
    if model == "--rtsp":
        uri = sys.argv[2]
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 5
        pipe = Gst.parse_launch(
            f"rtspsrc location={uri} latency=100 ! rtpjpegdepay ! jpegdec ! fakesink name=sink"
        )
    else:
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 5
        pipe = Gst.parse_launch(
            f"videotestsrc num-buffers={n} pattern=ball ! video/x-raw,width=160,height=120 ! "
            f"faprompt name=fap model-file={model} post-messages=every-frame "
            f"inference-interval=2 pixel-threshold=0.4 ! fakesink name=sink"
        )
    loop = GLib.MainLoop()
    state = {"frames": 0, "n": n, "rtsp": model == "--rtsp", "loop": loop, "error": None}
    pipe.get_by_name("sink").get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER, on_buffer, state
    )

    def on_message(bus, msg):
        if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().has_name("faprompt"):
            s = msg.get_structure()
            print(
                f"message   ts={s.get_uint64('timestamp')[1] / Gst.SECOND:.3f}s "
                f"running-time={s.get_uint64('running-time')[1] / Gst.SECOND:.3f}s "
                f"score={s.get_double('score')[1]:.4f} anomalous={s.get_boolean('anomalous')[1]} "
                f"region-count={s.get_uint('region-count')[1]}"
            )
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print("error:", err.message, file=sys.stderr)
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipe.set_state(Gst.State.PLAYING)
    loop.run()
    if state["error"]:
        pipe.set_state(Gst.State.NULL)
        sys.exit(state["error"])
    fap = pipe.get_by_name("fap")
    if fap is None:
        pipe.set_state(Gst.State.NULL)
        return
    print(
        f"frames-processed={fap.get_property('frames-processed')} "
        f"inferences={fap.get_property('inferences')} "
        f"average-inference-ms={fap.get_property('average-inference-ms'):.2f}"
    )
    pipe.set_state(Gst.State.NULL)


if __name__ == "__main__":
    main()
