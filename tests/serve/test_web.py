#!/usr/bin/python3
"""faprompt-serve's web view end to end, on the tiny model.

  test_web.py --serve BUILD/serve/faprompt-serve --model tiny-a.safetensors --case CASE
              [--artefacts DIR]

CASE:
  live      GET /live/NAME.mjpg: a plain HTTP client reads parts, each a whole
            JPEG (SOI..EOI, decoded by PIL) of the configured size, at most
            live-fps a second; two clients share one encoder; nothing is
            encoded before the first client nor after the last one left
            ("viewers", "live-frames"); a client that stops reading holds
            neither its camera, nor the others, nor the HTTP server, nor a
            second client of the same camera; a camera restarted under a
            client goes on in the same stream; a camera removed ends its
            streams cleanly (the closing boundary, then the chunked end)
  evidence  GET /evidence/PATH: a snapshot fapromptrecord wrote, with its
            bytes and type (and the sidecar's); "..", %2e%2e, %2f, absolute
            paths, symbolic links leading out (a file, a folder), a folder,
            a missing file, NUL: all refused, nothing from outside served
  page      GET / in headless Chromium (Debian chromium, chromium-driver,
            python3-selenium): a tile per camera whose live view changes
            over time, the score's sparkline drawn; a camera added through
            the API with image-threshold 0 shows its anomaly, whose snapshot
            opens on a click; a screenshot is kept (--artefacts); exit 77
            when Chromium or its driver is not installed

Prints `ok   <what>` / `FAIL <what>` per check, `# N failure(s)`; exits 1 on
any failure. Shares test_serve.py's helpers (the program in a process, its
API, waits).
"""
import argparse
import hashlib
import http.client
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_serve as ts  # noqa: E402
from test_serve import R, camera, running, small  # noqa: E402

BOUNDARY = b"faprompt-live-frame"  # serve/live.h: LIVE_BOUNDARY
LIVE_WIDTH, LIVE_FPS = 128, 5
ARTEFACTS = None


class Mjpeg:
    """A client of /live/NAME.mjpg: reads the multipart stream part by part."""

    def __init__(self, port, name, timeout=30):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", f"/live/{name}.mjpg")
        self.resp = self.conn.getresponse()
        self.buf = bytearray()
        self.ended = False  # the closing boundary came

    def _more(self):
        data = self.resp.read1(65536)
        if not data:
            raise EOFError("the stream ended")
        self.buf += data

    def part(self):
        """(headers dict, JPEG bytes), or None after the closing boundary."""
        start = b"--" + BOUNDARY
        while True:
            i = self.buf.find(start)
            if i >= 0 and len(self.buf) >= i + len(start) + 2:
                break
            self._more()
        if self.buf[i + len(start):i + len(start) + 2] == b"--":
            self.ended = True
            return None
        while self.buf.find(b"\r\n\r\n", i) < 0:
            self._more()
        j = self.buf.find(b"\r\n\r\n", i)
        lines = bytes(self.buf[i + len(start):j]).decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        n = int(headers["Content-Length"])
        while len(self.buf) < j + 4 + n + 2:
            self._more()
        jpeg = bytes(self.buf[j + 4:j + 4 + n])
        del self.buf[:j + 4 + n + 2]
        return headers, jpeg

    def rest(self):
        """What is left until the end of the body (the chunked end read)."""
        data = bytes(self.buf)
        while True:
            chunk = self.resp.read1(65536)
            if not chunk:
                return data
            data += chunk

    def close(self):
        self.resp.close()  # the response holds the socket open too
        self.conn.close()


def jpeg_ok(data, size):
    from PIL import Image
    if not (data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"):
        return False, "no SOI/EOI"
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # noqa: BLE001 (any decoding failure is the answer)
        return False, str(e)
    return im.size == size, im.size


def live_config(extra=""):
    return (f"[service]\nlive-width = {LIVE_WIDTH}\nlive-fps = {LIVE_FPS}\n{extra}\n" +
            camera("cam-1", small("ball")) + camera("cam-2", small("snow")) +
            camera("cam-3", small("ball")))


# ---- live ---------------------------------------------------------------------

class CutMjpegCamera(ts.MjpegCamera):
    """test_serve's MJPEG camera, whose connections can be cut once: the
    camera's pipeline then fails and starts again on the same server."""

    def cut(self):
        self.server.stopping = True
        time.sleep(0.3)
        self.server.stopping = False


def case_live():
    token_file = os.path.join(ts.TMP, "token")
    with open(token_file, "w") as f:
        f.write(ts.TOKEN + "\n")
    web = None
    names = ["cam-1", "cam-2", "cam-3", "loop"]
    extra = f"token-file = {token_file}\nstall-timeout = 3\n"
    clip = os.path.join(ts.TMP, "clip.avi")
    ts.make_clip(clip)  # 15 frames: a pass a second
    cams_conf = live_config(extra) + camera("loop", f"file://{clip}", record="false")
    if os.environ.get("FAP_SANITIZE_PRELOAD"):
        R.note("under the sanitizers: no MJPEG camera (souphttpsrc's own leak at teardown); "
               "the restart under a client is not checked")
    else:
        ts.make_jpegs(os.path.join(ts.TMP, "jpegs"))
        web = CutMjpegCamera(os.path.join(ts.TMP, "jpegs"))
        cams_conf += camera("web", web.url, record="false")
        names.append("web")
    s = ts.Serve(cams_conf, ("--listen", "127.0.0.1:0"))
    try:
        live_with(s, names, web)
    finally:
        if s.proc.poll() is None:
            s.stop(signal.SIGKILL)
        if web:
            web.stop()


def live_with(s, names, web):
    if not R.check(s.wait_listening() and s.wait_for(running(names, 5)),
                   f"cameras running ({', '.join(names)})", s.text()):
        return
    cams = s.cameras()
    R.check(all(cams[n]["viewers"] == 0 and cams[n]["live-frames"] == 0 for n in names),
            "no client yet: no viewer, nothing encoded",
            {n: (cams[n]["viewers"], cams[n]["live-frames"]) for n in names})
    status, data, _ = s.request("GET", "/live/nobody.mjpg")
    R.check(status == 404 and "no camera named" in data.get("error", ""),
            "/live/ of an unknown camera: 404", (status, data))
    status, data, _ = s.request("GET", "/evidence/anything.jpg")
    R.check(status == 404 and "no evidence folder" in data.get("error", ""),
            "/evidence/ without an evidence folder: 404", (status, data))

    # one client: whole JPEGs of the configured size, at most live-fps a second
    a = Mjpeg(s.port, "cam-1")
    ctype = a.resp.getheader("Content-Type", "")
    R.check(a.resp.status == 200 and ctype.startswith("multipart/x-mixed-replace") and
            "boundary=" + BOUNDARY.decode() in ctype, "200 multipart/x-mixed-replace", ctype)
    first = [a.part() for _ in range(3)]
    t0 = time.monotonic()
    parts = first + [a.part() for _ in range(2 * LIVE_FPS)]
    took = time.monotonic() - t0
    size = (LIVE_WIDTH, LIVE_WIDTH * 120 // 160)
    bad = [(i, why) for i, (h, j) in enumerate(parts)
           for ok, why in [jpeg_ok(j, size)] if not ok or h.get("Content-Type") != "image/jpeg"]
    R.check(not bad, f"{len(parts)} parts, each a whole JPEG of {size[0]}x{size[1]}", bad)
    R.check(len({hashlib.sha1(j).digest() for _, j in parts}) > 1,
            "the pictures change (a moving ball)")
    rate = 2 * LIVE_FPS / took
    R.check(rate <= LIVE_FPS * 1.3, f"{rate:.1f} parts a second (live-fps {LIVE_FPS})", took)

    # a second client of the same camera shares the encoder
    b = Mjpeg(s.port, "cam-1")
    b.part()
    c0 = s.cameras()["cam-1"]
    t0 = time.monotonic()
    for _ in range(2 * LIVE_FPS):
        a.part()
        b.part()
    c1 = s.cameras()["cam-1"]
    encoded = (c1["live-frames"] - c0["live-frames"]) / (time.monotonic() - t0)
    R.check(c1["viewers"] == 2 and encoded <= LIVE_FPS * 1.3,
            f"two clients, one encoder: {encoded:.1f} JPEGs a second", (c0, c1))
    others = s.cameras()
    R.check(all(others[n]["viewers"] == 0 and others[n]["live-frames"] == 0
                for n in names if n != "cam-1"),
            "the cameras nobody watches encode nothing")

    # a client that stops reading: a socket with a small receive buffer,
    # the request sent, nothing read again
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", s.port))
    slow.sendall(b"GET /live/cam-2.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    fast = Mjpeg(s.port, "cam-2")
    fast.part()
    samples = []
    got = 0
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:  # frames of every camera go on, the API answers
        t0 = time.monotonic()
        cams = s.cameras()
        samples.append((time.monotonic() - t0, {n: cams[n]["frames"] for n in names}))
        for _ in range(LIVE_FPS):
            fast.part()
            got += 1
        a.part()  # cam-1's clients keep reading too
        b.part()
    lat = max(x for x, _ in samples)
    stalled = [n for n in names
               if not all(q[1][n] > p[1][n] for p, q in zip(samples, samples[1:]))]
    R.check(not stalled and lat < 2.0,
            f"a client that stops reading: every camera's frames go on in each of "
            f"{len(samples) - 1} windows, the API answers within {lat:.2f} s",
            (stalled, samples))
    R.check(got >= LIVE_FPS * 4 and s.cameras()["cam-2"]["viewers"] == 2,
            f"cam-2's other client read {got} parts meanwhile")
    slow.close()
    fast.close()

    # a looping file under a client: the branch follows its seeks (flush,
    # end of stream) and neither holds the camera back
    f = Mjpeg(s.port, "loop")
    before = s.cameras()["loop"]
    parts = [f.part() for _ in range(4 * LIVE_FPS)]  # four passes of the file
    after = s.cameras()["loop"]
    R.check(all(p is not None for p in parts) and after["restarts"] == 0 and
            after["frames"] >= before["frames"] + 3 * 15,
            f"a looping file watched: {len(parts)} parts over its loops, "
            f"{after['frames'] - before['frames']} frames, no restart", (before, after))
    f.close()

    # a camera restarted under a client: the stream goes on
    if web:
        w = Mjpeg(s.port, "web")
        w.part()
        before = s.cameras()["web"]["restarts"]
        web.cut()
        back = s.wait_for(lambda c: c["web"]["restarts"] > before and
                          c["web"]["state"] == "running", timeout=60)
        parts_after = [w.part() for _ in range(3)]
        R.check(back is not None and all(p is not None for p in parts_after),
                "a camera restarted under a client: its stream goes on with the new pipeline",
                s.text()[-2000:])
        # removed: the stream ends cleanly
        status, data, _ = s.request("DELETE", "/api/cameras/web", token=ts.TOKEN)
        end = None
        try:
            while True:
                if w.part() is None:
                    end = w.rest()
                    break
        except (EOFError, OSError, http.client.HTTPException) as e:
            end = e
        R.check(status == 200 and w.ended and isinstance(end, bytes),
                "a camera removed: its stream ends with the closing boundary and the "
                "chunked end", (status, end))
        w.close()

    # everybody gone: the branches idle again
    a.close()
    b.close()
    idle = s.wait_for(lambda c: all(c[n]["viewers"] == 0 for n in c), timeout=20)
    R.check(idle is not None, "every client gone: no viewer left", s.cameras())
    if idle:
        time.sleep(1.0)  # a frame in the branch when the valve closed
        c0 = s.cameras()
        time.sleep(2.0)
        c1 = s.cameras()
        R.check(all(c1[n]["live-frames"] == c0[n]["live-frames"] and
                    c1[n]["frames"] > c0[n]["frames"] for n in c1),
                "then nothing is encoded while the cameras run on",
                {n: (c0[n]["live-frames"], c1[n]["live-frames"]) for n in c1})
    rc, took = s.stop()
    R.check(rc == 0, f"SIGTERM: exit 0 ({took:.2f} s)", s.text()[-2000:])


# ---- evidence -----------------------------------------------------------------

def raw_get(port, path, method="GET"):
    """(status, body, headers) of a request for @path sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_accept_encoding=True)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body, dict(r.getheaders())


def case_evidence():
    evidence = os.path.join(ts.TMP, "evidence")
    os.makedirs(evidence)
    secret = b"outside the evidence folder: never served"
    outside = os.path.join(ts.TMP, "secret.txt")
    with open(outside, "wb") as f:
        f.write(secret)
    os.symlink(outside, os.path.join(evidence, "link.jpg"))
    os.symlink(ts.TMP, os.path.join(evidence, "out"))
    os.makedirs(os.path.join(evidence, "folder"))
    os.makedirs(os.path.join(evidence, "inner"))
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
    with open(os.path.join(evidence, "inner", "ok.png"), "wb") as f:
        f.write(png)
    os.mkfifo(os.path.join(evidence, "fifo.jpg"))
    config = (f"[service]\nevidence = {evidence}\n\n" +
              camera("hot", small("ball"), **{"image-threshold": 0}))
    s = ts.Serve(config, ("--listen", "127.0.0.1:0"))
    try:
        evidence_with(s, evidence, secret, png)
    finally:
        if s.proc.poll() is None:
            s.stop(signal.SIGKILL)


def evidence_with(s, evidence, secret, png):
    if not R.check(s.wait_listening() and s.wait_for(running(["hot"], 5)), "camera running",
                   s.text()):
        return
    snap = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not snap:
        status, data, _ = s.request("GET", "/api/cameras/hot/events")
        evs = data.get("events", []) if status == 200 else []
        snap = evs[0]["snapshot"] if evs and evs[0]["snapshot"] else None
        time.sleep(0.3)
    if not R.check(snap and snap.startswith("/evidence/hot_") and snap.endswith("_1.jpg"),
                   "the anomaly's event names its snapshot", data):
        return
    R.check(evs[0]["score"] >= 0 and evs[0]["time"].endswith("Z") and data["total"] >= 1,
            "the event: time and score", evs[0])
    name = snap[len("/evidence/"):]
    with open(os.path.join(evidence, name), "rb") as f:
        want = f.read()
    status, body, hdrs = raw_get(s.port, snap)
    R.check(status == 200 and body == want and hdrs.get("Content-Type") == "image/jpeg" and
            hdrs.get("X-Content-Type-Options") == "nosniff",
            f"the snapshot served: {len(body)} bytes, the file's, image/jpeg",
            (status, hdrs, len(body), len(want)))
    side = snap[:-4] + ".json"
    status, body, hdrs = raw_get(s.port, side)
    with open(os.path.join(evidence, name[:-4] + ".json"), "rb") as f:
        R.check(status == 200 and body == f.read() and
                hdrs.get("Content-Type") == "application/json", "its sidecar: application/json",
                (status, hdrs))
    status, body, hdrs = raw_get(s.port, "/evidence/inner/ok.png")
    R.check(status == 200 and body == png and hdrs.get("Content-Type") == "image/png",
            "a file in a folder inside: served, image/png", (status, hdrs))
    status, body, hdrs = raw_get(s.port, snap, "HEAD")
    R.check(status == 200 and body == b"" and int(hdrs.get("Content-Length", -1)) == len(want),
            "HEAD: the length, no body", (status, hdrs))

    attacks = [
        ("/evidence/../secret.txt", "..", (400, 404)),
        ("/evidence/%2e%2e/secret.txt", "%2e%2e/", (400, 404)),
        ("/evidence/%2E%2E%2Fsecret.txt", "%2E%2E%2F", (400, 404)),
        ("/evidence/..%2fsecret.txt", "..%2f", (400, 404)),
        ("/evidence/inner/%2e%2e/%2e%2e/secret.txt", "inner/%2e%2e/%2e%2e/", (400, 404)),
        # the URI's own dot-segment removal makes this "/": the page, no file
        ("/evidence/%2e%2e", "%2e%2e alone", (200, 400, 404)),
        ("/evidence/..\\secret.txt", "a backslash", (400, 404)),
        ("/evidence/" + ts.TMP + "/secret.txt", "an absolute path (//)", (404,)),
        ("/evidence/%2f" + ts.TMP.lstrip("/") + "/secret.txt", "an absolute path (%2f)", (404,)),
        ("/evidence/link.jpg", "a symbolic link to a file outside", (404,)),
        ("/evidence/out/secret.txt", "a symbolic link to a folder outside", (404,)),
        ("/evidence/folder", "a folder", (404,)),
        ("/evidence/folder/", "a folder/", (404,)),
        ("/evidence/", "the folder itself", (404,)),
        ("/evidence", "the route alone", (404,)),
        ("/evidence/missing.jpg", "a missing file", (404,)),
        ("/evidence/fifo.jpg", "a FIFO", (404,)),
        ("/evidence/a%00.jpg", "a NUL", (400, 404)),
        ("/evidence/./" + name, "a . segment", (200, 400, 404)),
    ]
    for path, what, want_status in attacks:
        status, body, _ = raw_get(s.port, path)
        page = body.startswith(b"<!DOCTYPE html>")
        R.check(status in want_status and secret not in body and (status != 200 or page or
                                                                  path.endswith(name)),
                f"{what}: {status}, nothing from outside", (path, status, body[:200]))
    status, body, hdrs = raw_get(s.port, snap, "POST")
    R.check(status == 405 and "GET" in hdrs.get("Allow", ""), "POST: 405", (status, hdrs))
    rc, took = s.stop()
    R.check(rc == 0, f"SIGTERM: exit 0 ({took:.2f} s)", s.text()[-2000:])


# ---- page -----------------------------------------------------------------------

PIXELS_JS = """
const img = arguments[0];
if (!img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d');
g.drawImage(img, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data;
let h = 0;
for (let i = 0; i < d.length; i += 1) h = (h * 31 + d[i]) >>> 0;
return [c.width, c.height, h];
"""

INK_JS = """
const c = arguments[0];
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
return n;
"""


def find_chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    return browser, driver


def case_page():
    browser, driver_path = find_chromium()
    try:
        import selenium  # noqa: F401
        have_selenium = True
    except ImportError:
        have_selenium = False
    if not browser or not driver_path or not have_selenium:
        missing = [p for p, ok in (("chromium", browser), ("chromium-driver", driver_path),
                                   ("python3-selenium", have_selenium)) if not ok]
        print(f"# SKIP: {', '.join(missing)} not installed (Debian packages; tools/setup.sh "
              "installs them)", flush=True)
        sys.exit(77)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By

    token_file = os.path.join(ts.TMP, "token")
    with open(token_file, "w") as f:
        f.write(ts.TOKEN + "\n")
    evidence = os.path.join(ts.TMP, "evidence")
    config = (f"[service]\nlive-width = 160\nlive-fps = {LIVE_FPS}\ntoken-file = {token_file}\n"
              f"evidence = {evidence}\n\n" +
              camera("cam-1", small("ball"), **{"image-threshold": 1}) +
              camera("cam-2", small("snow"), **{"image-threshold": 1}))
    s = ts.Serve(config, ("--listen", "127.0.0.1:0"))
    driver = None
    try:
        if not R.check(s.wait_listening() and s.wait_for(running(["cam-1", "cam-2"], 5)),
                       "two cameras running", s.text()):
            return
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                    f"--user-data-dir={os.path.join(ts.TMP, 'chromium')}"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=DriverService(driver_path), options=opts)
        driver.set_page_load_timeout(60)
        page_with(s, driver, By)
    finally:
        if driver:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001 (a browser that died already)
                pass
        if s.proc.poll() is None:
            rc, took = s.stop()
            R.check(rc == 0, f"SIGTERM: exit 0 ({took:.2f} s)", s.text()[-2000:])


def wait_until(fn, timeout, every=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    return None


def page_with(s, driver, By):
    driver.get(f"http://127.0.0.1:{s.port}/")
    R.check(driver.title == "faprompt-serve", "the page loads", driver.title)

    def tile(name):
        found = driver.find_elements(By.CSS_SELECTOR, f'section.tile[data-camera="{name}"]')
        return found[0] if found else None

    def pixels(name):
        t = tile(name)
        return t and driver.execute_script(PIXELS_JS, t.find_element(By.CSS_SELECTOR, "img.live"))

    for name in ("cam-1", "cam-2"):
        first = wait_until(lambda: pixels(name), 30)
        seen = {first[2]} if first else set()
        end = time.monotonic() + 5
        while first and len(seen) < 3 and time.monotonic() < end:
            seen.add(pixels(name)[2])
            time.sleep(0.3)
        R.check(first and first[:2] == [160, 120] and len(seen) >= 3,
                f"{name}: its tile's live view shows {first and first[:2]} frames that change "
                f"({len(seen)} different pictures drawn)", first)
        state = tile(name).find_element(By.CSS_SELECTOR, ".state").text
        R.check(state == "running", f"{name}: the tile says running", state)
    cams = s.cameras()
    R.check(all(cams[n]["viewers"] == 1 for n in ("cam-1", "cam-2")),
            "one viewer per camera: the page's", {n: cams[n]["viewers"] for n in cams})
    ink = wait_until(lambda: driver.execute_script(
        INK_JS, tile("cam-1").find_element(By.CSS_SELECTOR, "canvas.spark")), 15)
    R.check(ink and ink > 50, f"cam-1's sparkline is drawn ({ink} pixels)")

    # an anomaly: a camera added with image-threshold 0
    status, data, _ = s.request("POST", "/api/cameras",
                                {"name": "hot", "source": small("ball"), "model": ts.MODEL,
                                 "image-threshold": 0}, token=ts.TOKEN)
    R.check(status == 201, "a camera added with image-threshold 0", (status, data))

    def event_button():
        t = tile("hot")
        if not t:
            return None
        found = t.find_elements(By.CSS_SELECTOR, ".events button[data-snapshot]")
        return found[0] if found else None

    button = wait_until(event_button, 60)
    if not R.check(button is not None, "its anomaly appears in its tile, with a snapshot",
                   driver.page_source[-3000:]):
        return
    url = button.get_attribute("data-snapshot")
    button.click()
    loaded = wait_until(lambda: driver.execute_script(
        "const v = document.getElementById('viewer'), i = document.getElementById('snapshot');"
        "return !v.hidden && i.complete && i.naturalWidth > 0 ? "
        "[i.naturalWidth, i.naturalHeight, new URL(i.src).pathname] : null;"), 15)
    R.check(loaded and loaded[2] == url and loaded[:2] == [160, 120],
            f"a click shows the snapshot {url} ({loaded})", loaded)
    shot = os.path.join(ARTEFACTS, "serve-web-page.png")
    os.makedirs(ARTEFACTS, exist_ok=True)
    driver.save_screenshot(shot)
    R.note(f"screenshot: {shot}")
    driver.find_element(By.ID, "viewer-close").click()
    driver.quit()
    gone = s.wait_for(lambda c: all(c[n]["viewers"] == 0 for n in c), timeout=20)
    R.check(gone is not None, "the page closed: no viewer left", s.cameras())


def main():
    global ARTEFACTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--case", required=True, choices=["live", "evidence", "page"])
    ap.add_argument("--artefacts", default=None, help="folder for the page's screenshot")
    a = ap.parse_args()
    ts.SERVE = os.path.abspath(a.serve)
    ts.MODEL = os.path.realpath(a.model)
    ts.TMP = tempfile.mkdtemp(prefix=f"fap-serve-web-{a.case}-")
    ARTEFACTS = os.path.abspath(a.artefacts or ts.TMP)
    try:
        {"live": case_live, "evidence": case_evidence, "page": case_page}[a.case]()
    finally:
        if R.failures:
            R.note(f"logs kept in {ts.TMP}")
        else:
            shutil.rmtree(ts.TMP, ignore_errors=True)
    print(f"# {R.failures} failure(s)", flush=True)
    sys.exit(1 if R.failures else 0)


if __name__ == "__main__":
    main()
