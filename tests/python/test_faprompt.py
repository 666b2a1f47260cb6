#!/usr/bin/python3
"""Tests the faprompt Python module (python/faprompt, ctypes over libfaprompt).

  test_faprompt.py --lib BUILD/core/libfaprompt.so.0 --infer BUILD/tools/faprompt-infer \
                   --model MODEL.safetensors [--model-ac ANOMALYCLIP.safetensors] [--pythonpath DIR]

Scores and maps must equal faprompt-infer's on the same pixels (the same
core, so within 1e-6), also with non-default detector options, which catches
a ctypes structure that does not match core/fap.h. Tiles: tile_layout and
stitch_tiles against the numpy reference of the rule. Then strided inputs, bad
inputs, errors and handle lifetimes. With --model-ac (an AnomalyCLIP model
with out layers 2,4, tests/meson.build: tiny-ac): Config.family /
.out_layers of both families, and a Detector on it equal to faprompt-infer.
Prints one line per check; exit status
1 when any failed. Needs numpy and PIL (Debian: python3-numpy, python3-pil).
"""
import argparse
import ctypes
import dataclasses
import gc
import json
import logging
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-6  # stated tolerance: the module and the CLI run the same core

failures = 0


def report(ok, name, detail=""):
    global failures
    failures += not ok
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)


def check(name):
    """Decorator: runs the check now; it returns None (ok) or a failure text,
    or raises (a failure too, with the traceback's last line)."""
    def run(fn):
        try:
            problem = fn()
        except Exception as e:  # noqa: BLE001 - any exception is a failed check
            tb = traceback.extract_tb(e.__traceback__)[-1]
            problem = f"{type(e).__name__}: {e} (line {tb.lineno})"
        report(problem is None, name, problem or "")
        return fn
    return run


def raises(exc_types, fn, *args, **kwargs):
    """The exception fn raises, which must be one of exc_types."""
    try:
        fn(*args, **kwargs)
    except exc_types as e:
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)} did not raise {exc_types}")


class Collect(logging.Handler):
    """Keeps the messages logged to it, at any level."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="libfaprompt.so.0 to test")
    ap.add_argument("--infer", required=True, help="faprompt-infer, for the expected results")
    ap.add_argument("--model", required=True,
                    help="a model file (e.g. BUILD/tests/tiny-a.safetensors)")
    ap.add_argument("--model-ac",
                    help="an AnomalyCLIP model with out layers 2,4 (BUILD/tests/tiny-ac.safetensors)")
    ap.add_argument("--pythonpath", default=os.path.join(HERE, "..", "..", "python"),
                    help="directory holding the faprompt package (default: the source tree's)")
    args = ap.parse_args()

    os.environ["FAPROMPT_LIBRARY"] = os.path.abspath(args.lib)  # read at import
    sys.path.insert(0, os.path.abspath(args.pythonpath))
    import numpy as np
    from PIL import Image
    import faprompt

    tmp = tempfile.mkdtemp(prefix="faprompt-py-")
    try:
        run_checks(args, tmp, np, Image, faprompt)
    except Exception as e:  # noqa: BLE001 - outside a check: setup (e.g. the first runs)
        report(False, "setup", f"{type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'FAILED' if failures else 'passed'}: {failures} check(s) failed")
    return 1 if failures else 0


def config_problem(path, model):
    """None when model.config (and parameter_count) match the file's
    __metadata__ and tensors, else why."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = header["__metadata__"]
    cfg = model.config
    for name in cfg.__dataclass_fields__:
        got = getattr(cfg, name)
        if name == "family":  # absent = FAPrompt (files from before the key)
            if got != meta.get("family", "faprompt"):
                return f"family {got!r}, the file says {meta.get('family')!r}"
        elif name == "out_layers":  # FAPrompt: the last layer
            want = (tuple(int(x) for x in meta["out_layers"].split(","))
                    if "out_layers" in meta else (int(meta["vision_layers"]),))
            if got != want:
                return f"out_layers {got!r}, the file says {want!r}"
        elif name in meta:
            want = type(got)(float(meta[name]))
            if not math.isclose(got, want, rel_tol=1e-6):
                return f"{name} = {got}, the file says {meta[name]}"
        elif name in ("image_threshold", "pixel_threshold"):
            if got >= 0:
                return f"{name} = {got} without metadata (expected < 0)"
        else:
            return f"{name} not in the file's metadata"
    total = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    if model.parameter_count != total:
        return f"parameter_count {model.parameter_count}, the file holds {total}"
    return None


def run_checks(args, tmp, np, Image, faprompt):
    rng = np.random.default_rng(7)

    # ---- test images: noise plus a bright patch, odd sizes ----------------
    paths = []
    for h, w in ((48, 64), (47, 33), (90, 120)):
        a = rng.integers(0, 200, size=(h, w, 3), dtype=np.uint8)
        a[h // 4:h // 2, w // 3:w // 2] = 255
        paths.append(os.path.join(tmp, f"img{h}x{w}.png"))
        Image.fromarray(a).save(paths[-1])
    rgba = rng.integers(0, 256, size=(40, 52, 4), dtype=np.uint8)  # alpha: noise
    rgba_path = os.path.join(tmp, "rgba40x52.png")
    Image.fromarray(rgba, "RGBA").save(rgba_path)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]

    def infer(files, *options, model=args.model):
        """faprompt-infer's JSON lines and maps, by file."""
        map_dir = tempfile.mkdtemp(dir=tmp)
        out = subprocess.run([args.infer, "--json", "--map-dir", map_dir, *options, model, *files],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert len(rows) == len(files), f"faprompt-infer printed {len(rows)} results"
        for row in rows:
            row["map_array"] = np.load(row["map"])
        return rows

    def differs(result, row):
        """None when a Python Result matches a faprompt-infer row, else why."""
        if result.map.shape != row["map_array"].shape:
            return f"map shape {result.map.shape} vs the CLI's {row['map_array'].shape}"
        ds = abs(result.score - row["score"])
        dm = float(np.max(np.abs(result.map - row["map_array"])))
        if not (ds <= TOL and dm <= TOL):
            return f"{row['file']}: score diff {ds:.3g}, map max diff {dm:.3g} (> {TOL})"
        if result.anomalous != row["anomalous"] or abs(result.threshold - row["threshold"]) > TOL:
            return (f"{row['file']}: anomalous {result.anomalous} @ {result.threshold} vs "
                    f"the CLI's {row['anomalous']} @ {row['threshold']}")
        return None

    def same(a, b, tol=0.0):
        """None when two Results agree within tol, else why."""
        ds = abs(a.score - b.score)
        dm = float(np.max(np.abs(a.map - b.map)))
        return None if ds <= tol and dm <= tol else f"score diff {ds:.3g}, map max diff {dm:.3g}"

    model = faprompt.Model(args.model)
    det = faprompt.Detector(model, backend="cpu")
    expected = infer(paths)
    results = [det.run(img) for img in images]

    @check("faprompt.__version__ is the loaded library's, as the build's")
    def _():
        want = re.search(r"version\s*:\s*'([^']+)'",
                         open(os.path.join(HERE, "..", "..", "meson.build")).read()).group(1)
        return None if faprompt.__version__ == want else f"{faprompt.__version__} != {want}"

    # ---- equal to the CLI ------------------------------------------------
    @check("run() equals faprompt-infer (score, map, anomalous) on 3 images")
    def _():
        for r, row in zip(results, expected):
            problem = differs(r, row)
            if problem:
                return problem
        return None

    @check("Result fields: map float32 [S,S] owned copy, stage names, times, byte counters")
    def _():
        r, row = results[0], expected[0]
        s = det.image_size
        if r.map.dtype != np.float32 or r.map.shape != (s, s) or not r.map.flags.owndata:
            return f"map {r.map.dtype} {r.map.shape} owndata={r.map.flags.owndata}"
        if set(r.stage_ms) != set(row["stage_ms"]) or list(r.stage_ms) != list(row["stage_ms"]):
            return f"stages {list(r.stage_ms)} vs the CLI's {list(row['stage_ms'])}"
        if not (r.total_ms > 0 and all(v >= 0 for v in r.stage_ms.values())
                and sum(r.stage_ms.values()) <= r.total_ms * 1.01 + 0.01):
            return f"implausible times: {r.stage_ms} total {r.total_ms}"
        if (r.frame_bytes_to_device, r.frame_bytes_from_device) != (0, 0):
            return f"CPU frame bytes {r.frame_bytes_to_device}, {r.frame_bytes_from_device}"
        return None

    @check("the map stays the caller's after the next run")
    def _():
        r = det.run(images[0])
        kept = r.map.copy()
        det.run(images[2])
        return None if np.array_equal(r.map, kept) else "the map changed under the caller"

    @check("fap_config matches the file's __metadata__ (every field)")
    def _():
        return config_problem(args.model, model)

    @check("detector getters: backend cpu, S, batch 1, precision auto's choice, threshold 0.5")
    def _():
        # auto is bf16 where the CPU has bf16 units (where a bf16 request runs
        # bf16, unemulated), f32 elsewhere
        with faprompt.Detector(model, backend="cpu", precision="bf16") as b:
            auto = b.precision
        got = (det.backend, det.image_size, det.batch, det.precision, det.threshold)
        want = ("cpu", model.config.image_size, 1, auto, 0.5)
        return None if got == want else f"{got} != {want}"

    # Non-default option fields land where fap.h has them only if the
    # fap_detector_options layout is right: a misplaced one changes the map.
    for opts, cli in (({"image_size": 84, "sigma": 0.0}, ["--image-size", "84", "--sigma", "0"]),
                      ({"sigma": 4.5, "threads": 1, "reference": True},
                       ["--sigma", "4.5", "--threads", "1", "--reference"])):
        @check(f"Detector({opts}) equals faprompt-infer {' '.join(cli)}")
        def _():
            with faprompt.Detector(model, backend="cpu", **opts) as d:
                if "image_size" in opts and d.image_size != opts["image_size"]:
                    return f"image_size {d.image_size}"
                rows = infer(paths, "--backend", "cpu", *cli)
                for img, row in zip(images, rows):
                    problem = differs(d.run(img), row)
                    if problem:
                        return problem
                # and the options really changed the map (else this proves little)
                r = d.run(images[0])
                if r.map.shape == results[0].map.shape and same(r, results[0], 1e-4) is None:
                    return "the options did not change the map"
            return None

    @check("RGBA input (H x W x 4) equals faprompt-infer on an RGBA PNG, alpha ignored")
    def _():
        img = np.asarray(Image.open(rgba_path))
        if img.shape[2] != 4:
            return f"PIL decoded {img.shape}"
        r = det.run(img)
        problem = differs(r, infer([rgba_path])[0])
        return problem or same(r, det.run(np.ascontiguousarray(img[..., :3])))

    @check("calibration sidecar: config thresholds, default threshold, CLI agrees")
    def _():
        cal = os.path.join(tmp, "calibrated.safetensors")
        shutil.copyfile(args.model, cal)
        with open(cal + ".calibration.json", "w") as f:
            json.dump({"image_threshold": 0.3125, "pixel_threshold": 0.75}, f)
        seen = Collect()
        logger = logging.getLogger("faprompt")
        logger.addHandler(seen)
        logger.setLevel(logging.INFO)  # info lines are below the default WARNING
        try:
            m = faprompt.Model(cal)
        finally:
            logger.removeHandler(seen)
            logger.setLevel(logging.NOTSET)
        if not any("calibration applied" in t for t in seen.messages):
            return f"the core's info line did not reach the 'faprompt' logger: {seen.messages}"
        with m, faprompt.Detector(m, backend="cpu") as d:
            c = m.config
            if (c.image_threshold, c.pixel_threshold, d.threshold) != (0.3125, 0.75, 0.3125):
                return f"thresholds {c.image_threshold}, {c.pixel_threshold}, {d.threshold}"
            for img, row in zip(images, infer(paths, model=cal)):
                problem = differs(d.run(img), row)
                if problem:
                    return problem
        return None

    @check("after a call the thread's sink is the default again (stderr), not the binding's")
    def _():
        raises(faprompt.Error, faprompt.Model, os.path.join(tmp, "first.safetensors"))
        seen = Collect()
        logging.getLogger("faprompt").addHandler(seen)
        saved = os.dup(2)
        with tempfile.TemporaryFile() as err:
            os.dup2(err.fileno(), 2)  # the core's default sink writes to fd 2
            try:  # a raw core call, outside the binding's capture
                handle = ctypes.c_void_p()
                faprompt._lib.fap_model_load(b"/nonexistent/raw.safetensors", ctypes.byref(handle))
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                logging.getLogger("faprompt").removeHandler(seen)
            err.seek(0)
            text = err.read().decode()
        if seen.messages:
            return f"the binding's sink got {seen.messages}"
        return None if "raw.safetensors" in text else f"stderr got {text!r}"

    @check("run(threshold=...) decides anomalous as score > threshold")
    def _():
        r = results[0]
        lo, hi = det.run(images[0], threshold=r.score - 1e-3), det.run(images[0], threshold=r.score)
        ok = lo.anomalous and not hi.anomalous and hi.threshold == r.score
        return None if ok else f"score {r.score}: {lo.anomalous} / {hi.anomalous}"

    # ---- run_batch -------------------------------------------------------
    for b in (1, 2):
        @check(f"run_batch(3 images) on a batch={b} detector equals run()")
        def _():
            with faprompt.Detector(model, backend="cpu", batch=b) as d:
                if d.batch != b:
                    return f"batch {d.batch}"
                got = d.run_batch(images)
                if len(got) != len(images):
                    return f"{len(got)} results"
                for x, y in zip(got, results):
                    problem = same(x, y, TOL)
                    if problem:
                        return problem
                return None if d.run_batch([]) == [] else "run_batch([]) is not []"

    # ---- regions of interest -----------------------------------------------
    @check("run_rois: each rectangle scores as the image cropped to it, in one batch")
    def _():
        img = images[1]
        h, w = img.shape[:2]
        rois = [(0, 0, 17, 13), (w - 21, h - 15, 21, 15), (5, 7, w // 2, h // 2)]
        with faprompt.Detector(model, backend="cpu", batch=3) as d:
            got = d.run_rois(img, rois)
            for r, (x, y, rw, rh) in zip(got, rois):
                alone = d.run(np.ascontiguousarray(img[y:y + rh, x:x + rw]))
                problem = same(r, alone, TOL)
                if problem or r.roi != (x, y, rw, rh):
                    return f"roi {r.roi}: {problem}"
            e = raises(faprompt.Error, d.run_rois, img, [(w - 5, 0, 6, 5)])
            if f"width=6" not in str(e):
                return f"a rectangle past the image: {e}"
            e = raises(ValueError, d.run_rois, img, rois + [(0, 0, 1, 1)])
            if "1 .. 3" not in str(e):
                return f"4 rectangles into a batch of 3: {e}"
        return None

    # ---- tiles -------------------------------------------------------------
    sys.path.insert(0, os.path.join(HERE, "..", "reference"))
    import tiles_ref  # the numpy reference of docs/SPEC.md 1.2, Tiles

    @check("tile_layout: the rectangles of docs/SPEC.md 1.2, Tiles (numpy reference)")
    def _():
        for area, grid, overlap in (((0, 0, 120, 90), (3, 2), 7), ((5, 3, 33, 47), (2, 3), 0),
                                    ((0, 0, 64, 48), (1, 1), 0)):
            got = faprompt.tile_layout(area, grid, overlap)
            want = tiles_ref.layout(area, *grid, overlap)
            if got != want:
                return f"{area} {grid} overlap {overlap}: {got} != {want}"
        return None

    @check("run_rois on tile_layout, stitch_tiles: the tiles' maps stitched as the reference")
    def _():
        img = images[2]
        h, w = img.shape[:2]
        area, grid, overlap = (0, 0, w, h), (2, 2), 9
        with faprompt.Detector(model, backend="cpu", batch=4) as d:
            rs = d.run_rois(img, faprompt.tile_layout(area, grid, overlap))
        maps = [r.map for r in rs]
        for size in (None, (61, 37)):
            got = faprompt.stitch_tiles(area, grid, maps, overlap, size=size)
            ow, oh = size or (w, h)
            want = tiles_ref.stitch(area, *grid, overlap, maps, ow, oh)
            err = float(np.max(np.abs(got - want)))
            if got.dtype != np.float32 or got.shape != (oh, ow) or err > TOL:
                return f"size {size}: {got.dtype} {got.shape}, max error {err:.3g}"
        return None

    @check("tiles_auto: the grid of docs/SPEC.md 1.2, Automatic tiles (every grid tried)")
    def _():
        def worst_of(areas, grid, cols, rows, overlap):
            """largest patch of the grid over the areas, None if a layout is invalid"""
            worst = 0.0
            for area in areas:
                try:
                    t = faprompt.tile_layout(area, (cols, rows), overlap)
                except faprompt.Error:
                    return None
                worst = max(worst, max(t[0][2], t[0][3]) / grid)
            return worst

        for areas, grid, k, overlap, cap in (([(0, 0, 1920, 1080)], 24, 32, 0, 16),
                                             ([(0, 0, 3840, 2160)], 24, 32, 16, 16),
                                             ([(0, 0, 640, 480), (10, 20, 300, 200)], 37, 8, 0, 8),
                                             ([(0, 0, 50, 40)], 24, 32, 0, 16)):
            cols, rows, met, worst = faprompt.tiles_auto(areas, grid, k, overlap, cap)
            n = len(areas)
            if n * cols * rows > cap and cols * rows > 1:
                return f"{areas}: {cols}x{rows} exceeds the cap {cap}"
            if abs(worst - worst_of(areas, grid, cols, rows, overlap)) > 1e-9:
                return f"{areas}: worst {worst} is not the grid's"
            grids = [(c, r, worst_of(areas, grid, c, r, overlap))
                     for c in range(1, 17) for r in range(1, 17) if n * c * r <= cap or c * r == 1]
            grids = [(c, r, w) for c, r, w in grids if w is not None]
            meeting = [(c * r, abs(c - r), c, r) for c, r, w in grids if w <= k]
            if meeting:
                want = min(meeting)[2:]
                if not met or (cols, rows) != want:
                    return f"{areas} K={k}: {cols}x{rows} met={met}, the rule gives {want}"
            else:
                best = min((w, c * r) for c, r, w in grids)
                if met or (worst, cols * rows) != best:
                    return f"{areas} K={k}: {cols}x{rows} worst {worst}, the rule gives {best}"
        cols, rows, met, worst = faprompt.tiles_auto([(0, 0, 1920, 1080)], 24, 32)
        if (cols, rows, met) != (3, 2, True):
            return f"1080p on a 336 model at 32 pixels a patch: {cols}x{rows} met={met}"
        e = raises(faprompt.Error, faprompt.tiles_auto, [(0, 0, 10, 10)], 24, 0)
        if "0" not in str(e) or e.status != faprompt.Status.INVALID_ARGUMENT:
            return f"a bound of 0: {e}"
        return None

    @check("tiles: bad grids -> faprompt.Error naming the value, ValueError for the maps")
    def _():
        e = raises(faprompt.Error, faprompt.tile_layout, (0, 0, 20, 10), (2, 1), 19)
        if "overlap 19" not in str(e) or e.status != faprompt.Status.INVALID_ARGUMENT:
            return f"overlap 19: {e!r}"
        e = raises(faprompt.Error, faprompt.tile_layout, (0, 0, 20, 10), (0, 1))
        if "0 columns" not in str(e):
            return f"0 columns: {e!r}"
        m = np.zeros((4, 4), np.float32)
        e = raises(ValueError, faprompt.stitch_tiles, (0, 0, 20, 10), (2, 2), [m, m, m])
        if "3 maps" not in str(e):
            return f"3 maps for 2 x 2: {e!r}"
        e = raises(ValueError, faprompt.stitch_tiles, (0, 0, 20, 10), (2, 1),
                   [m, np.zeros((5, 5), np.float32)])
        return None if "square and of one size" in str(e) else f"two sizes: {e!r}"

    # ---- strided inputs --------------------------------------------------
    base = images[2]
    views = {"img[:, ::-1]": base[:, ::-1], "img[::2]": base[::2],
             "img[::2, ::3]": base[::2, ::3], "img[5:60, 7:100] (crop)": base[5:60, 7:100],
             "img[..., ::-1] (BGR view)": base[..., ::-1], "img[::-1]": base[::-1],
             "broadcast row": np.broadcast_to(base[:1], base.shape), "1-column": base[:, 4:5]}
    for name, view in views.items():
        @check(f"non-contiguous {name} equals its contiguous copy exactly")
        def _():
            a, b = det.run(view), det.run(np.ascontiguousarray(view))
            return same(a, b)

    # ---- bad inputs --------------------------------------------------------
    bad = {"float32 image -> TypeError": (TypeError, np.zeros((8, 8, 3), np.float32), "float32"),
           "2-D image -> ValueError": (ValueError, np.zeros((8, 8), np.uint8), "(8, 8)"),
           "H x W x 5 -> ValueError": (ValueError, np.zeros((8, 8, 5), np.uint8), "(8, 8, 5)"),
           "0 x 0 image -> ValueError": (ValueError, np.zeros((0, 0, 3), np.uint8), "empty"),
           "0-row image -> ValueError": (ValueError, np.zeros((0, 9, 3), np.uint8), "empty")}
    for name, (exc, img, text) in bad.items():
        @check(name)
        def _():
            e = raises(exc, det.run, img)
            e2 = raises(exc, det.run_batch, [images[0], img])
            return None if text in str(e) and text in str(e2) else f"message {e!r} lacks {text!r}"

    @check("missing model -> faprompt.Error naming the path")
    def _():
        missing = os.path.join(tmp, "no-such-model.safetensors")
        e = raises(faprompt.Error, faprompt.Model, missing)
        ok = missing in str(e) and e.status == faprompt.Status.IO and e.messages
        return None if ok else f"{e!r} status {e.status!r}"

    @check("truncated model -> faprompt.Error with the core's message")
    def _():
        cut = os.path.join(tmp, "truncated.safetensors")
        with open(args.model, "rb") as f, open(cut, "wb") as g:
            g.write(f.read(100))
        e = raises(faprompt.Error, faprompt.Model, cut)
        ok = (e.messages and all(m in str(e) for m in e.messages) and cut in e.messages[0]
              and e.status == faprompt.Status.FORMAT and e.status_string in str(e))
        return None if ok else f"{e!r} status {e.status!r} messages {e.messages}"

    @check("backend='cuda' without a GPU -> faprompt.Error mentioning CUDA")
    def _():
        try:
            d = faprompt.Detector(model, backend="cuda")
        except faprompt.Error as e:
            return None if any("CUDA" in m for m in e.messages) else f"{e!r}"
        backend = d.backend
        d.close()
        return None if backend == "cuda" else f"backend {backend}"  # a GPU is present: fine

    @check("bad options -> ValueError (backend, precision) / faprompt.Error (image_size)")
    def _():
        raises(ValueError, faprompt.Detector, model, backend="tpu")
        raises(ValueError, faprompt.Detector, model, precision="f8")
        raises(ValueError, faprompt.Detector, model, image_size=2**40)
        raises(TypeError, faprompt.Detector, model, threads=1.5)
        e = raises(faprompt.Error, faprompt.Detector, model, image_size=13)
        return None if "13" in str(e) and e.status == faprompt.Status.INVALID_ARGUMENT else repr(e)

    # ---- lifetimes ---------------------------------------------------------
    @check("closed model -> error, not a crash; close twice is fine")
    def _():
        m = faprompt.Model(args.model)
        m.close()
        m.close()
        raises((faprompt.Error, ValueError), faprompt.Detector, m)
        with faprompt.Model(args.model) as m2:
            pass
        raises((faprompt.Error, ValueError), faprompt.Detector, m2)
        return None if m.closed and m2.closed else "not closed"

    @check("closed detector -> error, not a crash (run, run_batch)")
    def _():
        d = faprompt.Detector(model, backend="cpu")
        d.close()
        d.close()
        raises(ValueError, d.run, images[0])
        raises(ValueError, d.run_batch, images)
        with faprompt.Detector(model, backend="cpu") as d2:
            pass
        raises(ValueError, d2.run, images[0])
        return None

    @check("Model dropped (del + gc.collect) while its Detector runs: still the same results")
    def _():
        m = faprompt.Model(args.model)
        d = faprompt.Detector(m, backend="cpu")
        gone = weakref.ref(m)
        del m
        gc.collect()
        if gone() is not None:
            return "the Detector keeps the Python Model alive (the test proves nothing)"
        r = d.run(images[1])
        d.close()
        return same(r, results[1])

    @check("per-thread messages: concurrent failing loads each name their own path")
    def _():
        problems = []

        def load_missing(i):
            path = os.path.join(tmp, f"missing-{i}.safetensors")
            for _ in range(20):
                e = raises(faprompt.Error, faprompt.Model, path)
                if len(e.messages) != 1 or path not in e.messages[0]:
                    problems.append(f"thread {i}: {e.messages}")

        def run_meanwhile():
            try:
                for _ in range(20):
                    det.run(images[0])
            except Exception as e:  # noqa: BLE001 - reported as the check's failure
                problems.append(f"run on another thread: {e!r}")

        threads = [threading.Thread(target=load_missing, args=(i,)) for i in range(4)]
        runner = threading.Thread(target=run_meanwhile)
        for t in threads + [runner]:
            t.start()
        for t in threads + [runner]:
            t.join()
        return problems[0] if problems else None

    @check("no leak: 60 x (Model + Detector + run), closed or dropped, keep RSS flat")
    def _():
        # Under AddressSanitizer (tests/sanitize/run-test) RSS says nothing:
        # freed blocks wait in ASan's quarantine (up to 256 MB) before reuse.
        # There the heap in use, as ASan's allocator counts it, is judged.
        try:
            asan_heap = ctypes.CDLL(None).__sanitizer_get_current_allocated_bytes
            asan_heap.restype = ctypes.c_size_t
        except AttributeError:
            asan_heap = None

        def rss_mb():
            if asan_heap:
                return asan_heap() / 2**20
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

        def cycle(i):
            m = faprompt.Model(args.model)
            d = faprompt.Detector(m, backend="cpu", threads=1)
            d.run(images[1])
            if i % 2:  # alternately explicit close and garbage collection
                d.close()
                m.close()

        for i in range(10):  # warm up allocator pools
            cycle(i)
        gc.collect()
        before = rss_mb()
        for i in range(60):
            cycle(i)
        gc.collect()
        grown = rss_mb() - before
        # One tiny model alone is ~1.3 MB of f32 weights: a leaked handle
        # would add tens of MB here.
        what = "ASan heap in use" if asan_heap else "RSS"
        return None if grown < 8 else f"{what} grew {grown:.1f} MB"

    # ---- model families ------------------------------------------------
    @check("FAPrompt model: config.family 'faprompt', out_layers (vision_layers,) as ints")
    def _():
        c = model.config
        if c.family != "faprompt" or c.out_layers != (c.vision_layers,):
            return f"family {c.family!r}, out_layers {c.out_layers!r}"
        if type(c.out_layers) is not tuple or not all(type(x) is int for x in c.out_layers):
            return f"out_layers {c.out_layers!r} is not a tuple of ints"
        if "family" not in repr(c) or "out_layers" not in repr(c):
            return f"repr lacks the fields: {c!r}"
        try:  # frozen like the rest of Config
            c.family = "x"
        except dataclasses.FrozenInstanceError:
            return None
        return "Config.family is writable"

    if args.model_ac:
        check_anomalyclip(args, np, faprompt, images, paths, infer, differs, same)

    det.close()
    model.close()


def check_anomalyclip(args, np, faprompt, images, paths, infer, differs, same):
    ac = faprompt.Model(args.model_ac)

    @check("AnomalyCLIP model: config.family 'anomalyclip', out_layers (2, 4), n_prompts 1")
    def _():
        c = ac.config
        got = (c.family, c.out_layers, c.n_prompts, c.top_m, c.prior_hidden)
        want = ("anomalyclip", (2, 4), 1, 0, 0)
        if got != want:
            return f"{got} != {want}"
        if not all(type(x) is int for x in c.out_layers):
            return f"out_layers {c.out_layers!r} are not ints"
        return None

    @check("AnomalyCLIP model: fap_config matches the file's __metadata__ (every field)")
    def _():
        return config_problem(args.model_ac, ac)

    @check("AnomalyCLIP model: the config has the FAPrompt model's fields, in the same order")
    def _():
        with faprompt.Model(args.model) as fa:
            a, b = list(dataclasses.asdict(ac.config)), list(dataclasses.asdict(fa.config))
        return None if a == b else f"{a} vs {b}"

    with faprompt.Detector(ac, backend="cpu") as d:
        s = d.image_size
        results = [d.run(img) for img in images]

        @check("AnomalyCLIP Detector.run: map float32 [S, S] in [0, 1], score in [0, 1]")
        def _():
            for r in results:
                if r.map.dtype != np.float32 or r.map.shape != (s, s):
                    return f"map {r.map.dtype} {r.map.shape}"
                if not (0 <= r.map.min() and r.map.max() <= 1 and 0 <= r.score <= 1):
                    return f"map [{r.map.min()}, {r.map.max()}], score {r.score}"
            if same(results[0], results[1], 1e-6) is None:
                return "two different images gave the same result"
            return None

        @check("AnomalyCLIP Detector.run equals faprompt-infer on the same model (3 images)")
        def _():
            for r, row in zip(results, infer(paths, "--backend", "cpu", model=args.model_ac)):
                problem = differs(r, row)
                if problem:
                    return problem
            return None

        @check("AnomalyCLIP: stage_ms prior, text, map2 are 0 (no prior, static text)")
        def _():
            r = results[0]
            zero = {k: r.stage_ms[k] for k in ("prior", "text", "map2")}
            if any(v != 0 for v in zero.values()) or not r.stage_ms["vision"] > 0:
                return f"{r.stage_ms}"
            return None

        @check("AnomalyCLIP: run_batch(3 images) on a batch=3 detector equals run()")
        def _():
            with faprompt.Detector(ac, backend="cpu", batch=3) as db:
                for x, y in zip(db.run_batch(images), results):
                    problem = same(x, y, 1e-6)
                    if problem:
                        return problem
            return None

        @check("AnomalyCLIP and FAPrompt models give different maps for the same image")
        def _():
            with faprompt.Model(args.model) as fa, faprompt.Detector(fa, backend="cpu") as df:
                r = df.run(images[0])
            if r.map.shape == results[0].map.shape and same(r, results[0], 1e-4) is None:
                return "the same result from two different model families"
            return None
    ac.close()


if __name__ == "__main__":
    sys.exit(main())
