#!/usr/bin/python3
"""faprompt-serve against plain gst-launch pipelines: what the service costs.
A benchmark, run by hand (not in any test suite):

  GST_PLUGIN_PATH=build/gst /usr/bin/python3 tests/serve/bench_serve.py \
      --serve build/serve/faprompt-serve --model build/tests/tiny-a.safetensors \
      [--cameras 8] [--size 640x480] [--fps 30] [--seconds 10] [--warmup 4] [--rounds 2]

Two set-ups on the same CAMERAS live test patterns (SIZE at FPS, the CPU
backend), interleaved ROUNDS times so that a machine getting busier hurts
both alike:

  service  one faprompt-serve process, one camera group per pattern (its
           chain: videotestsrc ! capsfilter ! videoconvert ! faprompt
           [shared model instance] ! tee ! queue ! fakesink)
  plain    CAMERAS gst-launch-1.0 processes, each videotestsrc ! capsfilter
           ! videoconvert ! faprompt ! tee ! queue ! fpsdisplaysink
           (fakesink inside, counting frames)

For each, over SECONDS after WARMUP seconds of running (the processes
started, the model loaded): frames per second each camera achieved against
the source's rate, and CPU seconds per frame (utime + stime of
/proc/PID/stat over that window, divided by every camera's frames in it);
the service's own overhead per frame is the difference. Then an
RTSP camera (tests/serve/rtsp_camera.py) is killed and started again:
the seconds from its server's return to the camera's first frame, against
the target of 2 s plus the back-off in effect. Prints the CPU it ran on.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_serve as ts  # noqa: E402

PATTERNS = ["ball", "smpte", "snow", "gradient", "pinwheel", "circular", "checkers-4", "spokes"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def cpu_info():
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
              "avx512_bf16", "amx_tile", "amx_bf16"]
    return model, [f for f in wanted if f in flags], os.cpu_count()


def run_service(a, w, h):
    conf = "[service]\nlisten = 127.0.0.1:0\nbackend = cpu\n\n" + "".join(
        f"[camera cam{i}]\nsource = test://{PATTERNS[i % len(PATTERNS)]}?width={w}&height={h}"
        f"&framerate={a.fps}\nmodel = {ts.MODEL}\n\n" for i in range(a.cameras))
    s = ts.Serve(conf, (), name="bench-service")
    if not s.wait_listening():
        raise RuntimeError(s.text())
    time.sleep(a.warmup)
    cams0, cpu0, t0 = s.cameras(), cpu_seconds(s.proc.pid), time.monotonic()
    time.sleep(a.seconds)
    cams, cpu, t1 = s.cameras(), cpu_seconds(s.proc.pid), time.monotonic()
    s.stop()
    names = [f"cam{i}" for i in range(a.cameras)]
    frames = [cams[n]["frames"] - cams0[n]["frames"] for n in names]
    lost = [cams[n]["frames-received"] - cams[n]["frames"] for n in names]
    return [f / (t1 - t0) for f in frames], cpu - cpu0, sum(frames), max(lost)


def run_plain(a, w, h):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    procs = []
    for i in range(a.cameras):
        out = open(os.path.join(ts.TMP, f"plain{i}.log"), "w+")
        argv = ["gst-launch-1.0", "-v", "videotestsrc", "is-live=true",
                f"pattern={PATTERNS[i % len(PATTERNS)]}", "!",
                f"video/x-raw,width={w},height={h},framerate={a.fps}/1", "!", "videoconvert", "!",
                "faprompt", f"model-file={ts.MODEL}", "backend=cpu", "post-messages=none", "!",
                "tee", "!", "queue", "!", "fpsdisplaysink", "text-overlay=false", "sync=false",
                "video-sink=fakesink", "fps-update-interval=500"]
        procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env), out))

    def rendered():
        # fpsdisplaysink's newest count (printed every 500 ms: both ends of
        # the window are as stale, which cancels out)
        counts = []
        for _, out in procs:
            out.seek(0)
            found = re.findall(r"rendered: (\d+)", out.read())
            counts.append(int(found[-1]) if found else 0)
        return counts
    time.sleep(a.warmup)
    f0, c0, t0 = rendered(), [cpu_seconds(p.pid) for p, _ in procs], time.monotonic()
    time.sleep(a.seconds)
    f1, c1, t1 = rendered(), [cpu_seconds(p.pid) for p, _ in procs], time.monotonic()
    for p, out in procs:
        p.send_signal(signal.SIGINT)
        p.wait(30)
        out.close()
    frames = [b - a for a, b in zip(f0, f1)]
    return [f / (t1 - t0) for f in frames], sum(c1) - sum(c0), sum(frames)


def rtsp_comeback(a):
    port = ts.free_port()
    srv = ts.RtspCamera(port, "bench-rtsp")
    if not srv.start():
        return None
    conf = (f"[service]\nlisten = 127.0.0.1:0\nstall-timeout = 3\n\n[camera rtsp]\n"
            f"source = rtsp://127.0.0.1:{port}/cam\nmodel = {ts.MODEL}\n")
    s = ts.Serve(conf, (), name="bench-rtsp-serve")
    try:
        s.wait_listening()
        s.wait_for(ts.running(["rtsp"], 10), timeout=60)
        srv.kill()
        s.wait_for(lambda c: c["rtsp"]["state"] != "running", timeout=30)
        time.sleep(3)
        down = s.cameras()["rtsp"]
        srv.start()
        back_at = time.monotonic()
        got = s.wait_for(lambda c: c["rtsp"]["frames"] > down["frames"], timeout=60, every=0.05)
        took = time.monotonic() - back_at if got else None
        failures = got["rtsp"]["restarts"] if got else down["restarts"]
        # the back-off before the try that succeeded: 0.5 s doubled at each
        # failure before it (serve/camera.h)
        backoff = min(0.5 * 2 ** max(0, failures - 1), 30.0)
        return took, backoff, failures
    finally:
        s.stop()
        srv.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=4)
    a = ap.parse_args()
    ts.SERVE = os.path.abspath(a.serve)
    ts.MODEL = os.path.realpath(a.model)
    ts.TMP = tempfile.mkdtemp(prefix="fap-serve-bench-")
    w, h = (int(x) for x in a.size.split("x"))
    model, flags, ncpu = cpu_info()
    print(f"CPU: {model}, {ncpu} logical CPUs; flags: {' '.join(flags)}")
    print(f"{a.cameras} cameras, {a.size} at {a.fps}/s, {a.seconds:g} s measured after "
          f"{a.warmup:g} s, "
          f"{a.rounds} round(s) interleaved; model {os.path.basename(ts.MODEL)}, CPU backend")
    runs = {"service": [], "plain": []}
    for r in range(a.rounds):
        for kind in ("service", "plain") if r % 2 == 0 else ("plain", "service"):
            if kind == "service":
                fps, cpu, frames, lag = run_service(a, w, h)
            else:
                (fps, cpu, frames), lag = run_plain(a, w, h), None
            runs[kind].append((fps, cpu, frames, lag))
            print(f"  round {r + 1} {kind:8s}: {statistics.mean(fps):6.2f} frames/s a camera "
                  f"(min {min(fps):.2f}), {cpu:.2f} CPU s, {frames} frames", flush=True)
    print()
    print(f"{'':10s} {'fps/camera':>11s} {'min':>7s} {'of source':>9s} {'CPU ms/frame':>13s}")
    per = {}
    for kind, rs in runs.items():
        fps = [f for r in rs for f in r[0]]
        per[kind] = 1000 * sum(r[1] for r in rs) / max(1, sum(r[2] for r in rs))
        print(f"{kind:10s} {statistics.mean(fps):11.2f} {min(fps):7.2f} "
              f"{100 * statistics.mean(fps) / a.fps:8.1f}% {per[kind]:13.3f}")
    print(f"service's own overhead: {per['service'] - per['plain']:+.3f} CPU ms a frame "
          f"({100 * (per['service'] - per['plain']) / per['plain']:+.1f}%)")
    lags = [r[3] for r in runs["service"]]
    print(f"service: frames into the detector minus frames out at the last reading: "
          f"at most {max(lags)}")
    res = rtsp_comeback(a)
    if res is None:
        print("RTSP comeback: not measured (no gst-rtsp-server for Python)")
    else:
        took, backoff, failures = res
        if took is None:
            print("RTSP comeback: the camera did not come back within 60 s")
        else:
            print(f"RTSP comeback: first frame {took:.2f} s after its server returned "
                  f"(target: 2 s + the back-off in effect, {backoff:g} s after {failures} "
                  f"failed start(s): {'met' if took <= 2 + backoff else 'MISSED'})")


if __name__ == "__main__":
    main()
