#!/usr/bin/python3
"""faprompt-eval's metrics against scikit-learn / scikit-image implementations
of the authors' formulas (reference_metrics.py), to 1e-6, on random results fed
through its hidden --scores-from: ties in scores and maps, thresholds that fall
on map values, the 201-threshold case of np.arange, classes without anomalies,
all-anomalous classes, anomalous images with empty masks, constant maps.

    test_metrics.py BUILD_TOOLS_DIR
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_metrics as ref  # noqa: E402

TOL = 1e-6


def blobs(rng, size, n_blobs):
    """A 0/1 mask with n_blobs random rectangles / diagonal strokes (8-connected
    shapes that are not 4-connected included)."""
    m = np.zeros((size, size), dtype=np.uint8)
    for _ in range(n_blobs):
        kind = rng.integers(0, 3)
        x, y = rng.integers(0, size, 2)
        if kind == 0:
            w, h = rng.integers(1, size // 3 + 1, 2)
            m[y:y + h, x:x + w] = 1
        elif kind == 1:  # diagonal stroke: 8-connected only
            for k in range(rng.integers(2, size // 2)):
                if 0 <= y + k < size and 0 <= x + k < size:
                    m[y + k, x + k] = 1
        else:
            m[y, x] = 1
    return m


def smooth(rng, n, size, levels=None):
    a = rng.random((n, size, size))
    for _ in range(2):
        a = (a + np.roll(a, 1, 1) + np.roll(a, 1, 2) + np.roll(a, -1, 1)) / 4
    a = (a - a.min()) / (a.max() - a.min())
    if levels:  # quantised: many ties, thresholds land on values
        a = np.round(a * levels) / levels
    return a.astype(np.float32)


def make_class(rng, n, size, kind):
    labels = (rng.random(n) < 0.5).astype(np.uint8)
    labels[0], labels[-1] = 0, 1
    if kind == "no-anomaly":
        labels[:] = 0
    if kind == "all-anomalous":
        labels[:] = 1
    scores = rng.random(n).astype(np.float32)
    if kind in ("ties", "no-anomaly"):
        scores = (np.round(scores * 4) / 4).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        if labels[i] and not (kind == "ties" and i % 3 == 0):  # some anomalous with empty masks
            masks[i] = blobs(rng, size, int(rng.integers(1, 4)))
    maps = smooth(rng, n, size, levels=32 if kind == "ties" else None)
    maps += 0.3 * masks * rng.random((n, size, size)).astype(np.float32)  # informative, imperfect
    maps = maps.astype(np.float32)
    if kind == "constant":
        maps[:] = np.float32(0.25)
    if kind == "grid":  # min 0, max 1, values on a 1/200 grid: thresholds hit values exactly
        maps = (np.round(rng.random((n, size, size)) * 200) / 200).astype(np.float32)
        maps.flat[0], maps.flat[1] = 0.0, 1.0
    return labels, scores, masks, maps


def pair_with_201_thresholds(rng):
    while True:
        a, b = np.sort(rng.random(2).astype(np.float32))
        if a < b and len(ref.pro_thresholds(np.array([a, b], dtype=np.float32))) == 201:
            return a, b


def main():
    tools = sys.argv[1]
    evalbin = os.path.join(tools, "faprompt-eval")
    rng = np.random.default_rng(20250)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "scores")
        expected = {}
        cases = [("continuous", 14, 24), ("ties", 16, 20), ("no-anomaly", 6, 16),
                 ("all-anomalous", 7, 16), ("constant", 6, 12), ("grid", 8, 16),
                 ("arange201", 10, 20), ("big", 40, 48)]
        for name, n, size in cases:
            labels, scores, masks, maps = make_class(rng, n, size, name)
            if name == "arange201":
                a, b = pair_with_201_thresholds(rng)
                maps = (a + (b - a) * smooth(rng, n, size)).astype(np.float32)
                maps.flat[0], maps.flat[-1] = a, b
                maps += (masks * 1e-7).astype(np.float32)
                maps = np.clip(maps, a, b).astype(np.float32)
                assert len(ref.pro_thresholds(maps)) == 201
            d = os.path.join(root, name)
            os.makedirs(d)
            np.save(os.path.join(d, "scores.npy"), scores)
            np.save(os.path.join(d, "labels.npy"), labels.astype(bool) if name == "ties" else labels)
            np.save(os.path.join(d, "maps.npy"), maps)
            np.save(os.path.join(d, "masks.npy"), masks)
            exp = ref.all_metrics(labels, scores, masks, maps)
            try:
                exp["aupro_thresholds"] = len(ref.pro_thresholds(maps))
            except ValueError:
                exp["aupro_thresholds"] = 0
            expected[name] = exp
        out = os.path.join(tmp, "out.json")
        p = subprocess.run([evalbin, "--scores-from", root, "--json", out, "--csv", os.path.join(tmp, "o.csv")],
                           capture_output=True, text=True)
        print(p.stdout)
        if p.returncode != 0:
            print("faprompt-eval failed:", p.stderr)
            return 1
        got = {c["class"]: c for c in json.load(open(out))["classes"]}
        for name, exp in expected.items():
            for key, want in exp.items():
                have = got[name][key]
                ok = (want is None and have is None) or (
                    want is not None and have is not None and abs(want - have) <= TOL)
                status = "ok" if ok else "FAIL"
                if not ok:
                    failures += 1
                print(f"{status:4} {name:14} {key:18} eval={have!s:24} reference={want!s}")
        # expected undefined values where the authors' code cannot compute them
        checks = [("no-anomaly", "image_auroc"), ("no-anomaly", "pixel_auroc"), ("no-anomaly", "pixel_aupro"),
                  ("all-anomalous", "image_auroc"), ("constant", "pixel_aupro")]
        for name, key in checks:
            if got[name][key] is not None:
                print(f"FAIL {name} {key} should be null")
                failures += 1
        if got["arange201"]["aupro_thresholds"] != 201:
            print("FAIL arange201: expected 201 thresholds")
            failures += 1
        # the mean row: over the classes where a metric is defined
        mean = json.load(open(out))["mean"]
        for key in ["image_auroc", "pixel_aupro"]:
            vals = [e[key] for e in expected.values() if e[key] is not None]
            if abs(mean[key] - sum(vals) / len(vals)) > TOL:
                print(f"FAIL mean {key}")
                failures += 1

        # bad --scores-from inputs: clear errors, exit 1
        bad = os.path.join(tmp, "bad", "c")
        os.makedirs(bad)
        np.save(os.path.join(bad, "scores.npy"), np.zeros(3, np.float32))
        np.save(os.path.join(bad, "labels.npy"), np.array([0, 1, 2], np.uint8))
        np.save(os.path.join(bad, "maps.npy"), np.zeros((3, 4, 4), np.float32))
        np.save(os.path.join(bad, "masks.npy"), np.zeros((3, 4, 4), np.uint8))
        for fix, needle in [(None, "expected 0 or 1"),
                            (("labels.npy", np.array([0, 1, 1], np.uint8)), "masks.npy"),
                            (("maps.npy", np.zeros((2, 4, 4), np.float32)), "expected float32 [N, S, S]")]:
            if fix:
                np.save(os.path.join(bad, fix[0]), fix[1])
            if fix and fix[0] == "labels.npy":
                np.save(os.path.join(bad, "masks.npy"), np.zeros((3, 5, 5), np.uint8))
            p = subprocess.run([evalbin, "--scores-from", os.path.dirname(bad)], capture_output=True, text=True)
            ok = p.returncode == 1 and needle in p.stderr
            print(f"{'ok' if ok else 'FAIL':4} bad --scores-from input -> {p.stderr.strip()}")
            failures += not ok
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
