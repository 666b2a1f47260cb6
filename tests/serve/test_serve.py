#!/usr/bin/python3
"""faprompt-serve, the program, end to end on the tiny model.

  test_serve.py --serve BUILD/serve/faprompt-serve --model tiny-a.safetensors --case CASE

CASE:
  cli         configuration errors name file, group and key, exit 2, start
              nothing; a port in use; the plugin missing; the command line;
              no CONFIG: no cameras, API changes refused (403) until a token
              file is given; SIGINT exits 0
  api         test patterns, a looping file and an MJPEG camera over HTTP (a
              server in this process); the API adds, shows and
              removes a camera while the others run, refuses what it must
              (401, 400, 404, 405, 409, 413); results published to a JSON
              Lines file and evidence recorded; SIGTERM drains every camera
              (the open anomaly is ended, the clip closed) and exits 0 in time
  prometheus  promtool check metrics on a scrape, then a real Prometheus
              scraping the service until faprompt_frames_total is there
              (exit 77 when neither promtool nor prometheus is installed)
  rtsp        four RTSP cameras (tests/serve/rtsp_camera.py processes): one
              server killed and started again on its port comes back by
              itself while the other three deliver frames in every second;
              killed for good it stays in back-off, the others unaffected

Prints `ok   <what>` / `FAIL <what>` per check, `# N failure(s)`; exits 1 on
any failure. GST_PLUGIN_PATH / GST_REGISTRY come from meson's test
environment.
"""
import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SERVE = None
MODEL = None
TMP = None
# slower under the sanitizers and on a loaded machine: waits end as soon as
# their condition holds
START_S = 120
DRAIN_BOUND_S = 5.0         # serve/service.h: SERVICE_DRAIN_SECONDS
EXIT_MARGIN_S = 5.0         # the rest of a shutdown (pipelines to NULL, exit)
TOKEN = "t0ken-for-tests"


class Report:
    def __init__(self):
        self.failures = 0

    def check(self, cond, what, detail=None):
        print(f"{'ok  ' if cond else 'FAIL'} {what}", flush=True)
        if not cond:
            self.failures += 1
            if detail:
                for line in str(detail).splitlines()[-40:]:
                    print(f"     {line}", flush=True)
        return bool(cond)

    def note(self, text):
        print(f"#    {text}", flush=True)


R = Report()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """One faprompt-serve process, its stderr in a file."""

    def __init__(self, config=None, args=(), env=None, name="serve"):
        self.log_path = os.path.join(TMP, f"{name}.log")
        argv = [SERVE]
        if config is not None:
            self.config_path = os.path.join(TMP, f"{name}.conf")
            with open(self.config_path, "w") as f:
                f.write(config)
            argv.append(self.config_path)
        argv += list(args)
        self.log = open(self.log_path, "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        self.port = None

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_listening(self):
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.text())
            if m:
                self.port = int(m.group(1))
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM):
        """(exit status or None if it hung, seconds it took)"""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.wait_exit(DRAIN_BOUND_S + EXIT_MARGIN_S)
        took = time.monotonic() - t0
        if rc is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return rc, took

    def request(self, method, path, body=None, token=None, headers=None):
        """(status, parsed JSON or text, headers)"""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read().decode()
        conn.close()
        try:
            parsed = json.loads(data) if r.getheader("Content-Type", "").startswith(
                "application/json") else data
        except ValueError:
            parsed = data
        return r.status, parsed, dict(r.getheaders())

    def cameras(self):
        status, data, _ = self.request("GET", "/api/cameras")
        assert status == 200, (status, data)
        return {c["name"]: c for c in data["cameras"]}

    def wait_for(self, cond, timeout=START_S, every=0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cams = self.cameras()
            if cond(cams):
                return cams
            time.sleep(every)
        return None


def running(names, frames=1):
    return lambda cams: all(n in cams and cams[n]["state"] == "running" and
                            cams[n]["frames"] >= frames for n in names)


def camera(name, source, **keys):
    lines = [f"[camera {name}]", f"source = {source}", f"model = {keys.pop('model', MODEL)}"]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n\n"


def small(pattern, fps=15):
    return f"test://{pattern}?width=160&height=120&framerate={fps}"


# ---- cli ----------------------------------------------------------------------

def case_cli():
    def refused(config, parts, what, args=(), env=None):
        s = Serve(config, ("--listen", "127.0.0.1:0") + tuple(args), env=env, name="bad")
        rc = s.wait_exit(60)
        if rc is None:
            s.proc.kill()
            s.proc.wait()
        s.log.close()
        out = s.text()
        R.check(rc == 2 and all(p in out for p in parts) and "listening" not in out and
                "running" not in out, f"refused: {what}", f"exit {rc}\n{out}")

    conf = lambda: os.path.join(TMP, "bad.conf")  # noqa: E731
    refused(camera("door", small("ball"), **{"inference-interval": "abc"}),
            [conf() + ": [camera door] inference-interval:", '"abc"'], "a bad value")
    refused(camera("door", small("ball"), treshold="0.3"),
            [conf() + ": [camera door] treshold: unknown key"], "an unknown key")
    refused(camera("good", small("ball")) +
            camera("bad", small("ball"), **{"draw-heatmap": "perhaps"}),
            [conf() + ": [camera bad] draw-heatmap:"], "a good camera before a bad one")
    refused("[service]\nstall-timeout = never\n" + camera("door", small("ball")),
            [conf() + ": [service] stall-timeout:"], "a bad service value")
    refused(camera("door", small("ball")) + camera("door", small("snow")),
            [conf() + ":5: [camera door] again (first at line 1)"], "a camera given twice")
    junk = os.path.join(TMP, "junk.safetensors")
    with open(junk, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}         not a model")
    refused(camera("door", small("ball"), model=junk),
            ["camera door: model " + junk + " does not load"], "a model that does not load")
    # no plugin at all, not even an installed faprompt (an RTSP source: a
    # test pattern is checked against videotestsrc while the file is read)
    env = dict(os.environ, GST_PLUGIN_PATH=os.path.join(TMP, "no-plugins"),
               GST_PLUGIN_SYSTEM_PATH_1_0=os.path.join(TMP, "no-plugins"),
               GST_REGISTRY=os.path.join(TMP, "registry-no-plugin.bin"))
    refused(camera("door", "rtsp://127.0.0.1:9/cam"),
            ["camera door: the GStreamer element faprompt is missing"], "the plugin missing",
            env=env)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        s = Serve(camera("door", small("ball")), ("--listen", f"127.0.0.1:{port}"), name="taken")
        rc = s.wait_exit(60)
        s.log.close()
        R.check(rc == 2 and f"cannot listen on 127.0.0.1:{port}" in s.text() and
                "running" not in s.text(), "refused: a port in use", f"exit {rc}\n{s.text()}")
    for args, part, what in ((["a.conf", "b.conf"], "one CONFIG file at most", "two configs"),
                             (["--colour"], "Unknown option", "an unknown option"),
                             (["--token-file", "/nonexistent/token"], "--token-file",
                              "a token file that is not there")):
        r = subprocess.run([SERVE] + args, capture_output=True, text=True, timeout=60)
        R.check(r.returncode == 2 and part in r.stderr, f"command line refused: {what}",
                f"exit {r.returncode}\n{r.stderr}")
    r = subprocess.run([SERVE, "--version"], capture_output=True, text=True, timeout=60)
    R.check(r.returncode == 0 and re.match(r"faprompt-serve \d+\.\d+", r.stdout),
            "--version", r.stdout + r.stderr)

    # no CONFIG: no cameras, changes refused until a token is given
    s = Serve(None, ("--listen", "127.0.0.1:0"), name="bare")
    if not R.check(s.wait_listening(), "no CONFIG: listening", s.text()):
        s.stop(signal.SIGKILL)
        return
    status, data, _ = s.request("GET", "/api/cameras")
    R.check(status == 200 and data == {"cameras": []}, "no CONFIG: no cameras", data)
    status, data, _ = s.request("POST", "/api/cameras", {"name": "x", "source": small("ball"),
                                                         "model": MODEL}, token=TOKEN)
    R.check(status == 403 and "--token-file" in data.get("error", ""),
            "no token file: changes refused with 403 saying how to allow them", (status, data))
    status, text, hdrs = s.request("GET", "/metrics")
    R.check(status == 200 and "faprompt_cameras 0" in text and
            hdrs.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
            "no CONFIG: metrics", text[:500])
    rc, took = s.stop(signal.SIGINT)
    R.check(rc == 0, f"SIGINT: exit 0 ({took:.2f} s)", s.text())


# ---- api ----------------------------------------------------------------------

def make_clip(path, frames=15):
    r = subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}",
                        "pattern=smpte", "!", "video/x-raw,width=160,height=120,framerate=15/1",
                        "!", "jpegenc", "!", "avimux", "!", "filesink", f"location={path}"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, GST_REGISTRY=os.path.join(TMP, "reg-clip.bin"),
                                GST_PLUGIN_PATH=""))
    assert r.returncode == 0 and os.path.getsize(path) > 0, r.stderr


class MjpegCamera:
    """An HTTP Motion-JPEG camera in a thread of this process: JPEG files
    served as multipart/x-mixed-replace at 15 frames a second."""

    def __init__(self, folder):
        import http.server
        import threading
        frames = [open(f, "rb").read() for f in sorted(glob.glob(os.path.join(folder, "*.jpg")))]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not server.stopping:
                        f = frames[i % len(frames)]
                        i += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n%s\r\n" % (len(f), f))
                        time.sleep(1 / 15)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.stopping = False
        server.daemon_threads = True
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.stopping = True
        self.server.shutdown()
        self.server.server_close()


def make_jpegs(folder, frames=10):
    os.makedirs(folder)
    r = subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}",
                        "pattern=ball", "!", "video/x-raw,width=160,height=120", "!", "jpegenc",
                        "!", "multifilesink", f"location={folder}/f%02d.jpg"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, GST_REGISTRY=os.path.join(TMP, "reg-clip.bin"),
                                GST_PLUGIN_PATH=""))
    assert r.returncode == 0, r.stderr


def case_api():
    token_file = os.path.join(TMP, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    evidence = os.path.join(TMP, "evidence")
    results = os.path.join(TMP, "results.jsonl")
    clip = os.path.join(TMP, "clip.avi")
    make_clip(clip)
    # Under the sanitizers (tests/sanitize/run-test) no MJPEG camera: GStreamer
    # 1.22's souphttpsrc loses 48 bytes at each pipeline's teardown (valgrind
    # sees it too), allocated by GObject while the pipeline's soup-session
    # context is freed, on a stack that names none of its own code, so no
    # suppression could tell it from a leak of ours.
    web = None
    if os.environ.get("FAP_SANITIZE_PRELOAD"):
        R.note("under the sanitizers: no MJPEG camera (souphttpsrc's own leak at teardown)")
    else:
        make_jpegs(os.path.join(TMP, "jpegs"))
        web = MjpegCamera(os.path.join(TMP, "jpegs"))
    config = (f"# cameras of the api case\n[service]\ntoken-file = {token_file}\n"
              f"evidence = {evidence}\n\n" +
              camera("cam-a", small("ball"), **{"image-threshold": 0, "inference-interval": 2,
                                                "publish": f"file://{results}"}) +
              camera("cam-b", small("smpte"), record="false") +
              camera("loop", f"file://{clip}", record="false") +
              (camera("web", web.url, record="false") if web else ""))
    try:
        api_with(config, results, evidence, ["cam-a", "cam-b", "loop"] + (["web"] if web else []))
    finally:
        if web:
            web.stop()


def api_with(config, results, evidence, names):
    s = Serve(config, ("--listen", "127.0.0.1:0"))
    if not R.check(s.wait_listening(), "listening", s.text()):
        s.stop(signal.SIGKILL)
        return
    cams = s.wait_for(running(names, 5))
    if not R.check(cams is not None, f"cameras running ({', '.join(names)}: test patterns, a "
                   "file, MJPEG over HTTP)", s.text()):
        s.stop(signal.SIGKILL)
        return
    a = cams["cam-a"]
    R.check(a["source"] == small("ball") and a["model"] == MODEL and a["restarts"] == 0 and
            a["reason"] is None and a["image-threshold"] == 0 and a["record"] is True and
            a["publish"] == f"file://{results}", "GET /api/cameras: settings and state", a)
    s.wait_for(lambda c: c["cam-b"]["fps"] > 0, timeout=30)
    status, one, _ = s.request("GET", "/api/cameras/cam-b")
    R.check(status == 200 and one["name"] == "cam-b" and one["state"] == "running" and
            one["fps"] > 0 and one["record"] is False, "GET /api/cameras/cam-b", one)

    new = {"name": "cam-c", "source": small("snow"), "model": MODEL, "inference-interval": 3,
           "record": False}
    refusals = [
        ("POST", "/api/cameras", new, None, {}, 401, "Bearer", "no token: 401"),
        ("POST", "/api/cameras", new, "not-the-token", {}, 401, "does not match",
         "a wrong token: 401"),
        ("POST", "/api/cameras", '{"name": "cam-c", "source": ', TOKEN, {}, 400, "not JSON",
         "malformed JSON: 400 with the reason"),
        ("POST", "/api/cameras", dict(new, **{"inference-interval": "often"}), TOKEN, {}, 400,
         "camera cam-c: inference-interval:", "a bad value: 400 naming the key"),
        ("POST", "/api/cameras", dict(new, name="a b"), TOKEN, {}, 400, "cannot name a camera",
         "a bad name: 400"),
        ("POST", "/api/cameras", "{" + " " * (200 * 1024) + "}", TOKEN, {}, 413, "larger than",
         "a 200 KiB body: 413"),
        ("GET", "/api/cameras/nobody", None, None, {}, 404, "no camera named",
         "an unknown camera: 404"),
        ("DELETE", "/api/cameras/nobody", None, TOKEN, {}, 404, "no camera named",
         "deleting an unknown camera: 404"),
        ("PATCH", "/api/cameras/cam-a", "{}", TOKEN, {}, 405, "GET, DELETE",
         "a method a camera does not take: 405"),
        ("POST", "/api/cameras", dict(new, name="cam-a"), TOKEN, {}, 409, "exists already",
         "a name taken: 409"),
    ]
    for method, path, body, token, hdrs, want, part, what in refusals:
        status, data, _ = s.request(method, path, body, token, hdrs)
        err = data.get("error", "") if isinstance(data, dict) else str(data)
        R.check(status == want and part in err, what, (status, data))

    # a body without a length (chunked) is cut off at the limit as it arrives
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    conn.request("POST", "/api/cameras", body=(b" " * 8192 for _ in range(25)),
                 headers={"Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
    r = conn.getresponse()
    data = r.read().decode()
    conn.close()
    R.check(r.status == 413 and "larger than" in data, "a 200 KiB chunked body: 413",
            (r.status, data))

    before = s.cameras()
    status, data, hdrs = s.request("POST", "/api/cameras", new, TOKEN)
    R.check(status == 201 and data["name"] == "cam-c" and
            hdrs.get("Location") == "/api/cameras/cam-c", "POST a camera: 201", (status, data))
    cams = s.wait_for(running(["cam-c"], 5), timeout=60)
    R.check(cams is not None, "the added camera runs", s.text())
    status, data, _ = s.request("DELETE", "/api/cameras/cam-c", token=TOKEN)
    R.check(status == 200 and data == {"removed": "cam-c"}, "DELETE the camera: 200", data)
    status, _, _ = s.request("GET", "/api/cameras/cam-c")
    R.check(status == 404, "the removed camera is gone", status)
    time.sleep(1.0)
    after = s.cameras()
    for n in names:
        R.check(after[n]["state"] == "running" and after[n]["restarts"] == 0 and
                after[n]["frames"] > before[n]["frames"],
                f"{n} ran on through the add and the removal", (before[n], after[n]))
    looped = s.wait_for(lambda c: c["loop"]["frames"] > 2 * 15, timeout=60)
    R.check(looped and looped["loop"]["restarts"] == 0 and looped["loop"]["reason"] is None,
            "the 15-frame file plays in a loop", looped and looped["loop"])
    R.check(after["cam-a"]["anomalies"] >= 1 and after["cam-a"]["last-score"] is not None,
            "cam-a (threshold 0) is anomalous", after["cam-a"])

    rc, took = s.stop()
    R.check(rc == 0 and took <= DRAIN_BOUND_S + EXIT_MARGIN_S and "stopped" in s.text(),
            f"SIGTERM: drained, exit 0 in {took:.2f} s", s.text())
    docs = []
    if os.path.exists(results):
        with open(results) as f:
            docs = [json.loads(line) for line in f if line.strip()]
    events = [d.get("event") for d in docs if d.get("source") == "cam-a"]
    R.check("anomaly-started" in events and events[-1] == "anomaly-ended",
            "results published to the file, the anomaly ended at the drain", docs[-3:])
    files = sorted(os.listdir(evidence)) if os.path.isdir(evidence) else []
    kinds = {os.path.splitext(f)[1] for f in files if f.startswith("cam-a_")}
    R.check({".jpg", ".json", ".mkv"} <= kinds and not any(f.startswith("cam-b") for f in files),
            "evidence of cam-a (snapshot, sidecar, clip), none of cam-b", files)
    clips = glob.glob(os.path.join(evidence, "cam-a_*.mkv"))
    if clips and shutil.which("gst-discoverer-1.0"):
        r = subprocess.run(["gst-discoverer-1.0", clips[0]], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, GST_PLUGIN_PATH="",
                                                GST_REGISTRY=os.path.join(TMP, "reg-clip.bin")))
        R.check(r.returncode == 0 and "Duration: 0:00:00.000000000" not in r.stdout,
                "the clip was closed at the drain (it has a duration)", r.stdout + r.stderr)


# ---- prometheus ---------------------------------------------------------------

def promtool_check(text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    return r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


def check_exposition(text):
    """The families our README promises, HELP and TYPE for each, histograms
    cumulative with +Inf equal to the count."""
    problems = []
    for name in ("faprompt_frames_total", "faprompt_frames_received_total",
                 "faprompt_camera_restarts_total", "faprompt_frames_per_second",
                 "faprompt_inference_duration_seconds", "faprompt_last_score",
                 "faprompt_anomalies_total", "faprompt_camera_state",
                 "faprompt_last_frame_age_seconds", "faprompt_batch_frames_average",
                 "faprompt_instance_queue_frames",
                 "process_resident_memory_bytes"):
        if f"# TYPE {name} " not in text or f"# HELP {name} " not in text:
            problems.append(f"no HELP/TYPE for {name}")
    buckets = {}
    for m in re.finditer(r'^faprompt_inference_duration_seconds_bucket\{camera="([^"]+)",'
                         r'model="[^"]*",le="([^"]+)"\} (\d+)$', text, re.M):
        buckets.setdefault(m.group(1), []).append((m.group(2), int(m.group(3))))
    for cam, bs in buckets.items():
        counts = [c for _, c in bs]
        if counts != sorted(counts) or bs[-1][0] != "+Inf":
            problems.append(f"{cam}: buckets not cumulative: {bs}")
        m = re.search(r'^faprompt_inference_duration_seconds_count\{camera="%s",[^}]*\} (\d+)$'
                      % re.escape(cam), text, re.M)
        if not m or int(m.group(1)) != counts[-1]:
            problems.append(f"{cam}: +Inf is not the count")
    m = re.search(r'^faprompt_batch_frames_average\{camera="cam-1",[^}]*\} (\S+)$', text, re.M)
    if not m or not 1.0 <= float(m.group(1)) <= 16.0:
        problems.append(f"cam-1's batch average: {m.group(1) if m else 'absent'}")
    m = re.search(r'^faprompt_instance_queue_frames\{camera="cam-1",[^}]*\} (\d+)$', text, re.M)
    if not m or int(m.group(1)) > 16:
        problems.append(f"cam-1's instance queue: {m.group(1) if m else 'absent'}")
    states = re.findall(r'^faprompt_camera_state\{camera="cam-1",[^}]*,state="(\w+)"\} 1$',
                        text, re.M)
    if states != ["running"]:
        problems.append(f"cam-1's state series: {states}")
    return problems


def case_prometheus():
    have_promtool, have_prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if not have_promtool and not have_prometheus:
        print("# SKIP: neither promtool nor prometheus is installed (Debian: prometheus; "
              "tools/setup.sh installs it)", flush=True)
        sys.exit(77)
    s = Serve("[service]\n\n" + camera("cam-1", small("ball")) + camera("cam-2", small("snow")),
              ("--listen", "127.0.0.1:0"))
    if not R.check(s.wait_listening() and s.wait_for(running(["cam-1", "cam-2"], 5)),
                   "two cameras running", s.text()):
        s.stop(signal.SIGKILL)
        return
    time.sleep(1.5)  # a frame rate measured, results in the histogram
    status, text, _ = s.request("GET", "/metrics")
    problems = check_exposition(text)
    R.check(status == 200 and not problems, "the exposition's families and histograms",
            "\n".join(problems) + "\n" + text[:3000])
    if have_promtool:
        ok, out = promtool_check(text)
        R.check(ok, "promtool check metrics: no problem", out + "\n" + text[:3000])
    else:
        R.note("promtool not installed: not run")

    if have_prometheus:
        port = free_port()
        pdir = os.path.join(TMP, "prometheus")
        os.makedirs(pdir)
        conf = os.path.join(pdir, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: faprompt\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{s.port}']\n")
        plog = open(os.path.join(pdir, "prometheus.log"), "w")
        prom = subprocess.Popen(["prometheus", f"--config.file={conf}",
                                 f"--storage.tsdb.path={os.path.join(pdir, 'data')}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdin=subprocess.DEVNULL, stdout=plog, stderr=subprocess.STDOUT)
        found, up = {}, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(found) < 2 or up != "1"):
            time.sleep(0.5)
            try:
                def query(q):
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    c.request("GET", "/api/v1/query?query=" + urllib.parse.quote(q))
                    data = json.loads(c.getresponse().read())
                    c.close()
                    return data["data"]["result"]
                found = {r["metric"]["camera"]: float(r["value"][1])
                         for r in query("faprompt_frames_total")}
                ups = query('up{job="faprompt"}')
                up = ups[0]["value"][1] if ups else None
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                continue
        prom.send_signal(signal.SIGTERM)
        try:
            prc = prom.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()
            prc = prom.wait()
        plog.close()
        with open(os.path.join(pdir, "prometheus.log")) as f:
            plog_text = f.read()
        R.check(set(found) == {"cam-1", "cam-2"} and all(v > 0 for v in found.values()) and
                up == "1", "Prometheus scraped faprompt_frames_total of both cameras",
                f"{found}, up={up}\n{plog_text[-3000:]}")
        R.check(prc == 0, "Prometheus stopped", plog_text[-2000:])
    else:
        R.note("prometheus not installed: the real scrape was not run")
    rc, took = s.stop()
    R.check(rc == 0, f"SIGTERM: exit 0 ({took:.2f} s)", s.text())


# ---- rtsp ---------------------------------------------------------------------

class RtspCamera:
    """tests/serve/rtsp_camera.py in a process of its own, without our plugin
    (its GStreamer never loads the instrumented plugin of a sanitizer build)."""

    def __init__(self, port, name):
        self.port, self.name = port, name
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if k != "GST_PLUGIN_PATH"}
        env["GST_REGISTRY"] = os.path.join(TMP, "registry-rtsp-camera.bin")
        self.log = open(os.path.join(TMP, f"{self.name}.log"), "a")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "rtsp_camera.py"),
                                      "--port", str(self.port)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env,
                                     text=True)
        line = self.proc.stdout.readline()
        return line.startswith("ready")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
            self.log.close()
        self.proc = None


def case_rtsp():
    fps = 15
    names = [f"cam{i}" for i in range(1, 5)]
    servers = {n: RtspCamera(free_port(), n + "-server") for n in names}
    try:
        for n, srv in servers.items():
            if not R.check(srv.start(), f"RTSP camera {n} on port {srv.port}"):
                return
        config = "[service]\nstall-timeout = 3\n\n" + "".join(
            camera(n, f"rtsp://127.0.0.1:{srv.port}/cam", **{"inference-interval": 2})
            for n, srv in servers.items())
        # the element's INFO lines say when a start loaded the model and when
        # it joined the model already loaded (the shared instance)
        env = dict(os.environ, GST_DEBUG="faprompt:4", GST_DEBUG_NO_COLOR="1")
        s = Serve(config, ("--listen", "127.0.0.1:0"), env=env)
        if not R.check(s.wait_listening() and s.wait_for(running(names, 5)),
                       "four RTSP cameras running", s.text()):
            s.stop(signal.SIGKILL)
            return
        samples = []  # (time, {name: camera})

        def sample_for(seconds, until=None):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                samples.append((time.monotonic(), s.cameras()))
                if until and until(samples[-1][1]):
                    return samples[-1][1]
                time.sleep(max(0.0, 1.0 - (time.monotonic() - samples[-1][0])))
            return None

        sample_for(3)
        servers["cam2"].kill()
        killed = time.monotonic()
        R.note("cam2's server killed")
        down = sample_for(15, lambda c: c["cam2"]["state"] != "running")
        R.check(down is not None, "cam2 left running after its server died",
                samples[-1][1]["cam2"])
        if down is None:
            down = samples[-1][1]
        sample_for(max(0.0, killed + 4 - time.monotonic()))  # down for about 4 s
        R.check(servers["cam2"].start(), "cam2's server started again on its port")
        back = sample_for(45, lambda c: c["cam2"]["state"] == "running" and
                          c["cam2"]["frames"] > down["cam2"]["frames"] + 5)
        R.check(back is not None and back["cam2"]["restarts"] >= 1 and
                back["cam2"]["reason"], "cam2 came back by itself (restarted, the reason kept)",
                samples[-1][1]["cam2"])
        sample_for(3)
        servers["cam2"].kill()
        R.note("cam2's server killed for good")
        sample_for(15, lambda c: c["cam2"]["state"] != "running")
        gone_at = len(samples)
        tries = samples[-1][1]["cam2"]["restarts"]
        # the back-off has grown (it is reset after 60 s of health only): wait
        # for one more try, then a second
        sample_for(40, lambda c: c["cam2"]["restarts"] > tries)
        sample_for(1)
        after = [c["cam2"] for _, c in samples[gone_at:]]
        R.check(all(c["state"] in ("backoff", "starting") for c in after) and
                after[-1]["restarts"] > after[0]["restarts"] and
                after[-1]["frames"] == after[0]["frames"],
                "cam2 without its server stays in back-off, trying again",
                [(c["state"], c["restarts"], c["frames"], c["reason"]) for c in after])
        R.note(f"cam2's reason: {after[-1]['reason']}")

        # the other three: frames in every second of it, never restarted
        windows = [samples[0]]
        for smp in samples[1:]:
            if smp[0] - windows[-1][0] >= 0.9:  # a sample taken early by `until` is skipped
                windows.append(smp)
        for n in ("cam1", "cam3", "cam4"):
            deltas = [b[1][n]["frames"] - a[1][n]["frames"] for a, b in zip(windows, windows[1:])]
            span = samples[-1][0] - samples[0][0]
            rate = (samples[-1][1][n]["frames"] - samples[0][1][n]["frames"]) / span
            states = {c[n]["state"] for _, c in samples}
            R.check(all(d > 0 for d in deltas) and states == {"running"} and
                    samples[-1][1][n]["restarts"] == 0 and rate >= 0.5 * fps,
                    f"{n}: frames in each of {len(deltas)} windows, {rate:.1f}/s over "
                    f"{span:.0f} s, never restarted", (deltas, states))
        status, text, _ = s.request("GET", "/metrics")
        m = re.search(r'^faprompt_camera_restarts_total\{camera="cam2",[^}]*\} (\d+)$', text, re.M)
        R.check(m and int(m.group(1)) >= 2, "faprompt_camera_restarts_total of cam2", text[:2000])
        R.check(re.search(r'^faprompt_camera_state\{camera="cam2",[^}]*,state="(backoff|starting)"'
                          r'\} 1$', text, re.M), "cam2's state in the metrics", text[:2000])
        rc, took = s.stop()
        R.check(rc == 0 and took <= DRAIN_BOUND_S + EXIT_MARGIN_S,
                f"SIGTERM with a camera in back-off: exit 0 in {took:.2f} s", s.text())
        log = s.text()
        loads = re.findall(r"model \S+ loaded \(", log)
        joins = re.findall(r"model \S+ shared with another element", log)
        # the three others at the start, and cam2 when it came back (a try cut
        # short by the shutdown may not have got as far as the detector)
        R.check(len(loads) == 1 and len(joins) >= 4,
                f"one model load for every start of every camera ({len(joins)} joined it): "
                "the shared instance outlived cam2's restarts",
                "\n".join(line for line in log.splitlines() if "model " in line))
        for line in log.splitlines():
            if "camera cam2" in line:
                R.note(line)
    finally:
        for srv in servers.values():
            srv.kill()


def main():
    global SERVE, MODEL, TMP
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--case", required=True, choices=["cli", "api", "prometheus", "rtsp"])
    a = ap.parse_args()
    SERVE = os.path.abspath(a.serve)
    MODEL = os.path.realpath(a.model)
    TMP = tempfile.mkdtemp(prefix=f"fap-serve-{a.case}-")
    try:
        {"cli": case_cli, "api": case_api, "prometheus": case_prometheus,
         "rtsp": case_rtsp}[a.case]()
    finally:
        if R.failures:
            R.note(f"logs kept in {TMP}")
        else:
            shutil.rmtree(TMP, ignore_errors=True)
    print(f"# {R.failures} failure(s)", flush=True)
    sys.exit(1 if R.failures else 0)


if __name__ == "__main__":
    main()
