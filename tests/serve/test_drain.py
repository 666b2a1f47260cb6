#!/usr/bin/python3
"""faprompt-serve's SIGTERM drain against a real MQTT broker, evidence on.

  test_drain.py --serve BUILD/serve/faprompt-serve --model tiny-a.safetensors

A mosquitto broker of the test's own, a subscriber (mosquitto_sub) started
before the service; three cameras whose image-threshold 0 makes every result
anomalous, publishing to the broker (two every frame, one on change) and
recording evidence. After SIGTERM: exit 0 within the drain bound; every
document was delivered (each every-frame camera's sequence numbers run
without a gap from its first document to its last, and there are at least
as many as frames had left its detector before the signal); the on-change
camera's last document is its anomaly-ended; every evidence clip is closed
and playable (gst-discoverer-1.0 gives it a duration, a decode pipeline
reads it to its end). Exit 77 when mosquitto is not installed.

Prints `ok`/`FAIL` per check; exits 1 on any failure.
"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_case  # noqa: E402
import test_serve as ts  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"


class Broker:
    """mosquitto on 127.0.0.1, a config file of its own."""

    def __init__(self, folder):
        self.port = ts.free_port()
        conf = os.path.join(folder, "mosquitto.conf")
        lines = ["user root"] if os.getuid() == 0 else []  # else it drops to `mosquitto`
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                  "persistence false", f"log_dest file {folder}/mosquitto.log"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto on port {self.port} did not accept connections")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Subscriber:
    """mosquitto_sub on TOPIC/#, one JSON document a line into a file; ready
    once it has received a probe published after it started."""

    def __init__(self, port, topic, path):
        self.path = path
        self.out = open(path, "w")
        self.proc = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port),
                                      "-q", "1", "-t", topic + "/#"],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                            "-t", topic + "/probe", "-m", '{"probe": true}'], timeout=10)
            time.sleep(0.2)
            if "probe" in open(path).read():
                return
        raise RuntimeError("mosquitto_sub did not receive the probe")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.out.close()
        docs = []
        with open(self.path) as f:
            for line in f:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if "source" in d:
                    docs.append(d)
        return docs


def case_drain():
    R, camera, small = ts.R, ts.camera, ts.small
    if not (os.access(MOSQUITTO, os.X_OK) and shutil.which("mosquitto_sub") and
            shutil.which("mosquitto_pub")):
        print("# SKIP: mosquitto, mosquitto_sub or mosquitto_pub is not installed (Debian: "
              "mosquitto, mosquitto-clients)", flush=True)
        sys.exit(77)
    broker = Broker(ts.TMP)
    sub = None
    try:
        sub = Subscriber(broker.port, "drain", os.path.join(ts.TMP, "received.jsonl"))
        evidence = os.path.join(ts.TMP, "evidence")
        target = f"mqtt://127.0.0.1:{broker.port}/drain/{{source}}/result"
        every = {"image-threshold": 0, "publish": target, "publish-policy": "every-frame"}
        config = ("[service]\nlisten = 127.0.0.1:0\n" f"evidence = {evidence}\n\n" +
                  camera("flow-1", small("ball"), **every) +
                  camera("flow-2", small("snow"), **every) +
                  camera("event", small("smpte"), **{"image-threshold": 0, "publish": target,
                                                     "publish-policy": "on-change"}))
        s = ts.Serve(config, (), name="drain")
        names = ["flow-1", "flow-2", "event"]
        # the frames out before a camera's first result carry none, so no
        # document: at most the count when the API first shows a score
        before_result = {}

        def first_results(cams):
            for n in names:
                if n in cams and n not in before_result and cams[n]["last-score"] is not None:
                    before_result[n] = cams[n]["frames"]
            return len(before_result) == len(names)
        if not R.check(s.wait_listening() and s.wait_for(first_results, every=0.02) and
                       s.wait_for(ts.running(names, 10)),
                       "three anomalous cameras running, publishing and recording", s.text()):
            s.stop(signal.SIGKILL)
            return
        cams = s.wait_for(lambda c: all(c[n]["anomalies"] >= 1 for n in names), timeout=30)
        R.check(cams is not None, "every camera anomalous", s.cameras())
        time.sleep(3)  # clips under way
        last = s.cameras()
        rc, took = s.stop()
        R.check(rc == 0 and took <= ts.DRAIN_BOUND_S + ts.EXIT_MARGIN_S,
                f"SIGTERM: exit 0 in {took:.2f} s (bound {ts.DRAIN_BOUND_S + ts.EXIT_MARGIN_S} s)",
                s.text()[-2000:])
        time.sleep(1.0)  # the broker forwards the last ones
        docs = sub.stop()
        sub = None
        for n in ("flow-1", "flow-2"):
            seqs = sorted({d["sequence"] for d in docs if d["source"] == n})
            gapless = bool(seqs) and seqs == list(range(seqs[0], seqs[-1] + 1))
            want = last[n]["frames"] - (before_result[n] - 1)
            R.check(gapless and seqs[0] == 1 and len(seqs) >= want,
                    f"{n}: {len(seqs)} documents delivered, sequence {seqs[0] if seqs else '-'}.."
                    f"{seqs[-1] if seqs else '-'} without a gap, at least the {want} frames with "
                    f"a result out before SIGTERM ({last[n]['frames']} frames, at most "
                    f"{before_result[n] - 1} before the first result)",
                    [s for s in seqs[:5]] + ["..."] + seqs[-5:])
        events = [d.get("event") for d in docs if d["source"] == "event"]
        R.check(events[:1] == ["anomaly-started"] and events[-1:] == ["anomaly-ended"],
                "event: its anomaly started, and ended by the drain (the last document)", events)

        clips = sorted(glob.glob(os.path.join(evidence, "*.mkv")))
        R.check({os.path.basename(c).split("_")[0] for c in clips} == set(names),
                f"a clip of every camera ({len(clips)})", os.listdir(evidence)
                if os.path.isdir(evidence) else "no evidence folder")
        env = dict(os.environ, GST_PLUGIN_PATH="",
                   GST_REGISTRY=os.path.join(ts.TMP, "reg-plain.bin"))
        for clip in clips:
            r = subprocess.run(["gst-discoverer-1.0", clip], capture_output=True, text=True,
                               timeout=60, env=env)
            d = subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={clip}", "!",
                                "decodebin", "!", "fakesink"], capture_output=True, text=True,
                               timeout=60, env=env)
            R.check(r.returncode == 0 and "Duration: 0:00:00.000000000" not in r.stdout and
                    "Duration:" in r.stdout and d.returncode == 0,
                    f"{os.path.basename(clip)}: closed (a duration), decoded to its end",
                    r.stdout + r.stderr + d.stdout + d.stderr)
    finally:
        if sub:
            sub.stop()
        broker.stop()


if __name__ == "__main__":
    serve_case.main(__doc__, "drain", lambda a: case_drain())
