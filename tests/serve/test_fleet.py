#!/usr/bin/python3
"""The two-box fleet example of pipelines/fleet/ run as written: both
faprompt-serve configurations, one mosquitto broker, one real Prometheus
with pipelines/fleet/prometheus.yml.

  test_fleet.py --serve BUILD/serve/faprompt-serve --model tiny-a.safetensors \
                --fleet SOURCE/pipelines/fleet

The files are copied into a temporary folder with only their ports (free
ones, so the test never collides with a running fleet) and the model link
changed. Checks through Prometheus's HTTP API that faprompt_frames_total of
every camera of both boxes is there, each with its box's `box` label and
`instance`, that up{job="faprompt"} is 1 for both targets, and that the
broker delivered results named after both boxes' cameras. Exit 77 without
prometheus or mosquitto.

Prints `ok`/`FAIL` per check; exits 1 on any failure.
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_drain as td  # noqa: E402  the broker and the subscriber
import serve_case  # noqa: E402
import test_serve as ts  # noqa: E402

CAMERAS = {"a": {"a.door", "a.yard"}, "b": {"b.gate", "b.dock"}}


def query(port, q):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/api/v1/query?query=" + urllib.parse.quote(q))
    data = json.loads(c.getresponse().read())
    c.close()
    return data["data"]["result"]


def case_fleet(fleet):
    R = ts.R
    if not shutil.which("prometheus") or not os.access(td.MOSQUITTO, os.X_OK) or \
            not shutil.which("mosquitto_sub"):
        print("# SKIP: prometheus or mosquitto is not installed (Debian: prometheus, mosquitto, "
              "mosquitto-clients)", flush=True)
        sys.exit(77)
    work = os.path.join(ts.TMP, "fleet")
    os.makedirs(work)
    os.symlink(ts.MODEL, os.path.join(work, "model.safetensors"))
    broker = td.Broker(ts.TMP)
    ports = {"a": ts.free_port(), "b": ts.free_port()}
    prom_port = ts.free_port()
    procs, sub = {}, None
    try:
        sub = td.Subscriber(broker.port, "fleet", os.path.join(ts.TMP, "received.jsonl"))
        for box in ("a", "b"):
            with open(os.path.join(fleet, f"box-{box}.conf")) as f:
                text = f.read()
            text = text.replace(f"listen = 127.0.0.1:{8090 + ord(box) - ord('a') + 1}",
                                f"listen = 127.0.0.1:{ports[box]}")
            text = text.replace("mqtt://127.0.0.1:1883/", f"mqtt://127.0.0.1:{broker.port}/")
            # the results of every frame, so the broker's side has something
            # to show whatever the scores
            text = re.sub(r"(publish = .*\n)", r"\1publish-policy = every-frame\n", text)
            R.check(f"127.0.0.1:{ports[box]}" in text and str(broker.port) in text,
                    f"box-{box}.conf: its port and broker moved to free ones")
            path = os.path.join(work, f"box-{box}.conf")
            with open(path, "w") as f:
                f.write(text)
            log = open(os.path.join(ts.TMP, f"box-{box}.log"), "w")
            procs[box] = (subprocess.Popen([ts.SERVE, path], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT), log)
        with open(os.path.join(fleet, "prometheus.yml")) as f:
            text = f.read()
        for box in ("a", "b"):
            text = text.replace(f"127.0.0.1:{8090 + ord(box) - ord('a') + 1}",
                                f"127.0.0.1:{ports[box]}")
        text = text.replace("scrape_interval: 5s", "scrape_interval: 1s").replace(
            "scrape_timeout: 4s", "scrape_timeout: 1s")
        conf = os.path.join(work, "prometheus.yml")
        with open(conf, "w") as f:
            f.write(text)
        plog = open(os.path.join(ts.TMP, "prometheus.log"), "w")
        prom = subprocess.Popen(["prometheus", f"--config.file={conf}",
                                 f"--storage.tsdb.path={os.path.join(work, 'data')}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdin=subprocess.DEVNULL, stdout=plog, stderr=subprocess.STDOUT)
        procs["prometheus"] = (prom, plog)
        found, ups = {}, {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                found = {}
                for r in query(prom_port, "faprompt_frames_total"):
                    m = r["metric"]
                    found[(m.get("box"), m.get("instance"), m["camera"])] = float(r["value"][1])
                ups = {r["metric"].get("box"): r["value"][1]
                       for r in query(prom_port, 'up{job="faprompt"}')}
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                continue
            if len(found) == 4 and all(v > 0 for v in found.values()) and \
                    ups == {"a": "1", "b": "1"}:
                break
        want = {(box, f"127.0.0.1:{ports[box]}", cam)
                for box, cams in CAMERAS.items() for cam in cams}
        R.check(set(found) == want and all(v > 0 for v in found.values()),
                "Prometheus has faprompt_frames_total of all four cameras, each with its box's "
                "`box` and `instance` labels", f"{found}\nwanted {sorted(want)}")
        R.check(ups == {"a": "1", "b": "1"}, "up{job=\"faprompt\"} is 1 for both boxes", ups)
        per_box = {r["metric"]["box"]: float(r["value"][1]) for r in
                   query(prom_port, "sum by (box) (faprompt_cameras)")}
        R.check(per_box == {"a": 2.0, "b": 2.0}, "sum by (box) (faprompt_cameras): 2 and 2",
                per_box)
        time.sleep(1.0)
    finally:
        for name, (p, log) in procs.items():
            p.send_signal(signal.SIGTERM)
        rcs = {}
        for name, (p, log) in procs.items():
            try:
                rcs[name] = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                rcs[name] = p.wait()
            log.close()
        docs = sub.stop() if sub else []
        broker.stop()
    sources = {d["source"] for d in docs}
    R.check(CAMERAS["a"] | CAMERAS["b"] <= sources,
            "the broker delivered results of every camera of both boxes", sorted(sources))
    R.check(rcs.get("a") == 0 and rcs.get("b") == 0 and rcs.get("prometheus") == 0,
            "both boxes and Prometheus stopped with exit 0", rcs)


if __name__ == "__main__":
    serve_case.main(__doc__, "fleet", lambda a: case_fleet(os.path.abspath(a.fleet)),
                    (("--fleet", "pipelines/fleet/ of the source tree"),))
