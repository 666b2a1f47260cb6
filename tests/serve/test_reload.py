#!/usr/bin/python3
"""faprompt-serve's SIGHUP: the configuration file read again, its difference
applied (serve/README.md, "Reloading the configuration").

  test_reload.py --serve BUILD/serve/faprompt-serve --model tiny-a.safetensors

Five cameras from a file and one added through the API run; the file is
rewritten with one camera added, one removed, one whose source changed (it
starts again), one whose thresholds, interval, drawing and model changed (set
on its running element: no restart, the model hot-swapped), one untouched.
The untouched camera and the API's camera deliver frames in every window
around the SIGHUP at the source's rate, their counts never go back and they
are never restarted. Then a new token file is taken, a changed listen
address is reported as needing a restart, and an invalid file (and one
naming the API's camera) is refused as a whole: the log names the file, the
group, the key and what is wrong, and nothing changes.

Prints `ok`/`FAIL` per check; exits 1 on any failure.
"""
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_case  # noqa: E402
import test_serve as ts  # noqa: E402  the Serve process, camera groups, checks

FPS = 15


def sample(s, seconds, into):
    """/api/cameras about once a second for @seconds into @into."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        into.append((t, s.cameras()))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))


def steady(samples, name, what):
    """@name delivered frames in every window at about the source's rate,
    its count never went back, it never restarted."""
    R = ts.R
    seen = [(t, c[name]) for t, c in samples if name in c]
    deltas = [b["frames"] - a["frames"] for (_, a), (_, b) in zip(seen, seen[1:])]
    span = seen[-1][0] - seen[0][0]
    rate = (seen[-1][1]["frames"] - seen[0][1]["frames"]) / span if span > 0 else 0
    R.check(len(seen) == len(samples) and all(d > 0 for d in deltas) and rate >= 0.8 * FPS and
            {c["state"] for _, c in seen} == {"running"} and
            all(c["restarts"] == 0 for _, c in seen),
            f"{what}: frames in each of {len(deltas)} windows, {rate:.1f}/s over {span:.0f} s "
            f"(source {FPS}/s), never restarted", (deltas, [c["state"] for _, c in seen]))
    return seen


def write(path, text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def case_reload():
    R, camera, small = ts.R, ts.camera, ts.small
    token_file = os.path.join(ts.TMP, "token")
    write(token_file, ts.TOKEN + "\n")
    model2 = os.path.join(ts.TMP, "model-copy.safetensors")
    shutil.copyfile(ts.MODEL, model2)
    # listen in the file (not --listen, which would override it at every reload)
    head = f"[service]\nlisten = 127.0.0.1:0\ntoken-file = {token_file}\nstall-timeout = 10\n\n"
    live0 = {"image-threshold": "0.9", "inference-interval": "1", "draw-heatmap": "true"}
    live1 = {"image-threshold": "0.25", "pixel-threshold": "0.5", "inference-interval": "3",
             "draw-heatmap": "false", "model": model2}
    first = (head + camera("keep", small("ball", FPS)) + camera("gone", small("smpte", FPS)) +
             camera("moved", small("snow", FPS)) + camera("tuned", small("gradient", FPS), **live0))
    s = ts.Serve(first, (), name="reload")
    if not R.check(s.wait_listening(), "listening", s.text()):
        s.stop(signal.SIGKILL)
        return
    names = ["keep", "gone", "moved", "tuned"]
    status, data, _ = s.request("POST", "/api/cameras",
                                {"name": "api-cam", "source": small("pinwheel", FPS),
                                 "model": ts.MODEL}, ts.TOKEN)
    R.check(status == 201, "a camera added through the API", (status, data))
    cams = s.wait_for(ts.running(names + ["api-cam"], 5))
    if not R.check(cams is not None, "five cameras running", s.text()):
        s.stop(signal.SIGKILL)
        return
    s.wait_for(lambda c: c["tuned"]["model-generation"] == 1, timeout=30)

    second = (head + camera("keep", small("ball", FPS)) +
              camera("moved", small("checkers-4", FPS)) +
              camera("tuned", small("gradient", FPS), **live1) +
              camera("new", small("circular", FPS)))
    samples = []
    sample(s, 3, samples)
    before = samples[-1][1]
    write(s.config_path, second)
    s.proc.send_signal(signal.SIGHUP)
    R.note("SIGHUP with one camera added, one removed, one moved, one tuned")
    sample(s, 6, samples)
    after = s.wait_for(ts.running(["keep", "moved", "tuned", "new", "api-cam"], 5), timeout=60)
    sample(s, 2, samples)
    log = s.text()
    R.check(after is not None and "gone" not in after and set(after) ==
            {"keep", "moved", "tuned", "new", "api-cam"},
            "after the SIGHUP: new added, gone removed, the others there", (after, log[-2000:]))
    if after is None:
        s.stop(signal.SIGKILL)
        return
    R.check("1 added, 1 removed, 1 started again, 1 changed while running, 1 unchanged" in log,
            "the log sums the reload up", log[-2000:])
    steady(samples, "keep", "the untouched camera")
    steady(samples, "api-cam", "the API's camera across the SIGHUP")
    for n in ("keep", "api-cam"):
        R.check(after[n]["frames"] > before[n]["frames"] and
                after[n]["frames-received"] >= after[n]["frames"] >= before[n]["frames"],
                f"{n}: its counts went on (not a new camera)", (before[n], after[n]))
    m = after["moved"]
    R.check(m["source"] == small("checkers-4", FPS) and m["frames"] < before["moved"]["frames"] + 200,
            "moved: runs its new source (a camera started again)", m)
    t, t0 = after["tuned"], before["tuned"]
    R.check(t["image-threshold"] == 0.25 and t["pixel-threshold"] == 0.5 and
            t["inference-interval"] == 3 and t["draw-heatmap"] is False and t["model"] == model2,
            "tuned: its new settings shown", t)
    tuned = steady(samples, "tuned", "tuned (set while running, not restarted)")
    R.check(tuned[-1][1]["frames"] > t0["frames"], "tuned: its counts went on", (t0, t))
    swapped = s.wait_for(lambda c: (c["tuned"]["model-generation"] or 0) >= 2, timeout=60)
    R.check(swapped is not None and swapped["tuned"]["restarts"] == 0,
            "tuned: the new model took over by the element's hot swap (model-generation 2)",
            s.cameras()["tuned"])
    inf0 = s.cameras()["tuned"]
    time.sleep(3)
    inf1 = s.cameras()["tuned"]
    frames, infs = inf1["frames"] - inf0["frames"], inf1["inferences"] - inf0["inferences"]
    R.check(frames > 0 and abs(infs - frames / 3) <= 2,
            f"tuned: inference-interval 3 in effect ({infs} inferences for {frames} frames)",
            (inf0, inf1))

    # the token file read again; a new listen address needs the process again
    write(token_file, "n3w-t0ken\n")
    write(s.config_path, second.replace("listen = 127.0.0.1:0", "listen = 127.0.0.1:1"))
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and s.text().count("reload: ") < 3:
        time.sleep(0.2)
    time.sleep(0.5)
    status, data, _ = s.request("DELETE", "/api/cameras/nobody", token=ts.TOKEN)
    R.check(status == 401, "the old token refused after the token file changed", (status, data))
    status, data, _ = s.request("DELETE", "/api/cameras/nobody", token="n3w-t0ken")
    R.check(status == 404, "the new token taken", (status, data))
    R.check("[service] listen changed to 127.0.0.1:1: it takes effect when the process starts "
            "again" in s.text(), "a new listen address: reported as needing a restart",
            s.text()[-1500:])

    # invalid: refused as a whole, nothing changes
    for bad, parts, what in (
            (second + camera("worse", small("ball"), **{"inference-interval": "often"}),
             [f"{s.config_path}: [camera worse] inference-interval:", '"often"'], "a bad value"),
            (second + camera("api-cam", small("ball")),
             [f"{s.config_path}: [camera api-cam]: a camera of that name was added through the "
              "API"], "a file naming the API's camera"),
            (second + camera("keep", small("snow")),
             [f"{s.config_path}:", "[camera keep] again"], "a camera given twice")):
        mark = len(s.text())
        cams0 = s.cameras()
        write(s.config_path, bad.replace("[camera moved]", "[camera moved2]"))
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "reload refused" not in s.text()[mark:]:
            time.sleep(0.2)
        time.sleep(1.0)
        cams1 = s.cameras()
        tail = s.text()[mark:]
        R.check("reload refused, nothing changed" in tail and all(p in tail for p in parts),
                f"refused: {what} (the log names it)", tail)
        R.check(set(cams1) == set(cams0) and
                all(cams1[n]["restarts"] == cams0[n]["restarts"] and
                    cams1[n]["frames"] > cams0[n]["frames"] and
                    cams1[n]["source"] == cams0[n]["source"] for n in cams0),
                f"refused: {what}: every camera as it was, delivering frames",
                (cams0, cams1))
    rc, took = s.stop()
    R.check(rc == 0, f"SIGTERM: exit 0 ({took:.2f} s)", s.text()[-2000:])


if __name__ == "__main__":
    serve_case.main(__doc__, "reload", lambda a: case_reload())
