#!/usr/bin/python3
"""End-to-end runs of faprompt-infer, faprompt-eval and faprompt-calibrate on the
tiny random model and small synthetic datasets (make_dataset.py).

    test_cli.py --tools BUILD/tools --model TINY.safetensors --case infer|eval|calibrate|bad

eval: all three layouts; the masks it used (--dump) equal the authors' PIL
preparation bit for bit, also for masks shrunk, enlarged and odd-sized; its
metrics equal reference_metrics.py on its own maps to 1e-6; CSV / JSON / Markdown
agree; --limit and --classes. infer: table, JSON lines, heatmaps, .npy and 16-bit
PNG maps, equal to eval's maps. calibrate: the thresholds are the order
statistics it claims, the sidecar is written and faprompt-infer applies it.
bad: missing folders, unreadable / mismatched / 16-bit masks, broken CSV and
meta.json, missing model, broken sidecar: exit status and a clear message.
"""
import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_metrics as ref  # noqa: E402

S = 56  # the tiny model's own size: fast
TOL = 1e-6
failures = 0


def check(cond, what):
    global failures
    print(f"{'ok' if cond else 'FAIL':4} {what}", flush=True)
    if not cond:
        failures += 1
    return cond


def run(args, expect=0, env=None):
    # one thread: the tools tests run beside each other on a 2-core machine, and OpenMP
    # teams that oversubscribe the cores spin against each other
    e = dict(os.environ, FAP_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    if env:
        e.update(env)
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=e)
    if p.returncode != expect:
        print(f"command {' '.join(map(str, args))}\n exit {p.returncode} (expected {expect})\n"
              f" stdout: {p.stdout}\n stderr: {p.stderr}")
    return p


def make_dataset(out, layout, **kw):
    args = [sys.executable, os.path.join(HERE, "make_dataset.py"), out, "--layout", layout]
    for k, v in kw.items():
        args += ["--" + k, str(v)]
    subprocess.run(args, check=True, capture_output=True)
    return out


def read_dump(d):
    classes = {}
    for name in sorted(os.listdir(d)):
        c = os.path.join(d, name)
        samples = [line.rstrip("\n").split("\t") for line in open(os.path.join(c, "samples.tsv"))]
        classes[name] = dict(
            scores=np.load(os.path.join(c, "scores.npy")), labels=np.load(os.path.join(c, "labels.npy")),
            maps=np.load(os.path.join(c, "maps.npy")), masks=np.load(os.path.join(c, "masks.npy")),
            samples=samples)
    return classes


def compare_metrics(tag, got, exp):
    for key, want in exp.items():
        have = got[key]
        same = (want is None and have is None) or (
            want is not None and have is not None and abs(want - have) <= TOL)
        check(same, f"{tag} {key}: eval {have} reference {want}")


def check_eval_run(tools, model, data, tmp, tag, extra=()):
    dump, js, cs = (os.path.join(tmp, f"{tag}-{x}") for x in ("dump", "out.json", "out.csv"))
    p = run([os.path.join(tools, "faprompt-eval"), model, data, "--dump", dump, "--json", js, "--csv", cs,
             *extra])
    if not check(p.returncode == 0, f"{tag}: faprompt-eval ran"):
        return None
    check("| **mean** |" in p.stdout and "| class | images |" in p.stdout, f"{tag}: Markdown table on stdout")
    check("inference" in p.stderr and "everything else" in p.stderr, f"{tag}: timing summary on stderr")
    result = json.load(open(js))
    rows = list(csv.DictReader(open(cs)))
    check([r["class"] for r in rows] == [c["class"] for c in result["classes"]] + ["mean"],
          f"{tag}: CSV rows = JSON classes + mean")
    dumped = read_dump(dump)
    for c in result["classes"]:
        d = dumped[c["class"]]
        ref_masks = np.stack([ref.authors_mask(m or None, S, int(a)) for _, m, a, _ in d["samples"]])
        check(np.array_equal(ref_masks, d["masks"]),
              f"{tag} {c['class']}: masks equal the authors' PIL preparation ({len(ref_masks)} images)")
        check(list(d["labels"]) == [int(a) for _, _, a, _ in d["samples"]], f"{tag} {c['class']}: labels")
        exp = ref.all_metrics(d["labels"], d["scores"], ref_masks, d["maps"])
        compare_metrics(f"{tag} {c['class']}", c, exp)
        row = next(r for r in rows if r["class"] == c["class"])
        check(abs(float(row["pixel_aupro"] or "nan") - (c["pixel_aupro"] or float("nan"))) < 1e-8
              or (row["pixel_aupro"] == "" and c["pixel_aupro"] is None), f"{tag} {c['class']}: CSV = JSON")
    return result, dumped


def case_eval(tools, model, tmp):
    for layout in ["mvtec", "visa", "meta"]:
        data = make_dataset(os.path.join(tmp, layout), layout, seed=3)
        r = check_eval_run(tools, model, data, tmp, layout)
        if r:
            check(r[0]["run"]["layout"] == layout, f"{layout}: layout detected")
            check(all(c["images"] == 9 and c["anomalous"] == 5 for c in r[0]["classes"]),
                  f"{layout}: 2 classes x (4 good + 5 defective)")
    # masks of every shape: shrunk, enlarged, identity, odd aspect; values > 0 count
    data = os.path.join(tmp, "sizes")
    rng = np.random.default_rng(5)
    entries = []
    for i, (w, h) in enumerate([(30, 20), (57, 91), (200, 150), (56, 56), (300, 40), (13, 111), (112, 112)]):
        os.makedirs(os.path.join(data, "img"), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(data, "img", f"{i}.png"))
        m = np.zeros((h, w), np.uint8)
        for _ in range(4):
            x, y = rng.integers(0, w), rng.integers(0, h)
            m[y:y + rng.integers(1, max(2, h // 3)), x:x + rng.integers(1, max(2, w // 3))] = rng.integers(1, 256)
        mode = "L"
        if i == 2:  # an RGB mask: PIL's convert('L') weights apply (pure blue 1 -> 0)
            rgb = np.zeros((h, w, 3), np.uint8)
            rgb[..., 2] = (m > 0) * 1
            rgb[: h // 2, :, 0] = (m[: h // 2] > 0) * 200
            Image.fromarray(rgb, "RGB").save(os.path.join(data, "img", f"{i}_mask.png"))
        else:
            Image.fromarray(m, mode).save(os.path.join(data, "img", f"{i}_mask.png"))
        entries.append(dict(img_path=f"img/{i}.png", mask_path=f"img/{i}_mask.png", cls_name="sizes",
                            specie_name="x", anomaly=1))
    entries.append(dict(img_path="img/0.png", mask_path="", cls_name="sizes", specie_name="good", anomaly=0))
    entries.append(dict(img_path="img/1.png", mask_path="", cls_name="sizes", specie_name="x", anomaly=1))
    json.dump({"train": {}, "test": {"sizes": entries}}, open(os.path.join(data, "meta.json"), "w"))
    r = check_eval_run(tools, model, data, tmp, "sizes", extra=["--any-mask-size"])
    # --limit: evenly spread, both labels kept; --classes
    data = os.path.join(tmp, "mvtec")
    js = os.path.join(tmp, "limit.json")
    p = run([os.path.join(tools, "faprompt-eval"), model, data, "--limit", "3", "--classes", "part1", "--json", js])
    if check(p.returncode == 0, "--limit 3 --classes part1 ran"):
        res = json.load(open(js))
        check([c["class"] for c in res["classes"]] == ["part1"], "--classes keeps only part1")
        check(res["classes"][0]["images"] == 3 and 0 < res["classes"][0]["anomalous"] < 3,
              "--limit 3: three images, normal and anomalous")


def case_infer(tools, model, tmp):
    data = make_dataset(os.path.join(tmp, "ds"), "mvtec", seed=4, classes=1, good=3, bad=2)
    good = os.path.join(data, "part0", "test", "good")
    infer = os.path.join(tools, "faprompt-infer")
    hm, mp, mp16 = (os.path.join(tmp, x) for x in ("heat", "maps", "maps16"))
    p = run([infer, model, good, os.path.join(data, "part0", "test", "hole", "000.png"), "--heatmap-dir", hm,
             "--map-dir", mp])
    if check(p.returncode == 0, "infer: table run"):
        lines = p.stdout.splitlines()
        check(lines[0].startswith(f"model {model}: S={S}") and "file" in lines[2] and "anomalous" in lines[2],
              "infer: table header")
        check(sum(1 for l in lines if l.startswith(data)) == 4 and "4 images:" in p.stdout, "infer: one row per image")
        for stem in ["000", "001", "002"]:
            a = np.load(os.path.join(mp, f"{stem}_map.npy"))
            check(a.shape == (S, S) and a.dtype == np.float32, f"infer: {stem}_map.npy float32 [S, S]")
            im = Image.open(os.path.join(hm, f"{stem}_heatmap.png"))
            src = Image.open(os.path.join(good, f"{stem}.png"))
            check(im.size == src.size and im.mode == "RGB",
                  f"infer: {stem}_heatmap.png RGB at the image's own size")
        check("share the name '000'" in p.stderr, "infer: warns when two inputs share an output name")
    p = run([infer, model, good, "--map-dir", mp])  # good/000 again (the run above ended with hole/000)
    p = run([infer, model, good, "--json", "--map-dir", mp16, "--map-format", "png16"])
    if check(p.returncode == 0, "infer: --json run"):
        objs = [json.loads(l) for l in p.stdout.splitlines()]
        check(len(objs) == 3 and all({"file", "score", "anomalous", "threshold", "map"} <= o.keys() for o in objs),
              "infer: one JSON object per image")
        for o in objs:
            stem = os.path.splitext(os.path.basename(o["file"]))[0]
            a = np.load(os.path.join(mp, f"{stem}_map.npy"))
            b = np.array(Image.open(o["map"]))
            check(b.dtype in (np.int32, np.uint16) and np.array_equal(np.round(np.clip(a, 0, 1) * 65535), b),
                  f"infer: 16-bit PNG map of {stem} = round(npy * 65535)")
            check(o["anomalous"] == (o["score"] > o["threshold"]), f"infer: anomalous = score > threshold ({stem})")
    # the same maps as faprompt-eval computes for these files
    dump = os.path.join(tmp, "dump")
    p = run([os.path.join(tools, "faprompt-eval"), model, data, "--dump", dump])
    if check(p.returncode == 0, "infer vs eval: eval ran"):
        d = read_dump(dump)["part0"]
        for i, (img, _, _, _) in enumerate(d["samples"]):
            if "/good/" in img:
                stem = os.path.splitext(os.path.basename(img))[0]
                check(np.array_equal(np.load(os.path.join(mp, f"{stem}_map.npy")), d["maps"][i]),
                      f"infer map of good/{stem} = eval's")


def case_calibrate(tools, model_src, tmp):
    model = os.path.join(tmp, "m.safetensors")
    shutil.copy(model_src, model)
    data = make_dataset(os.path.join(tmp, "ds"), "mvtec", seed=6, classes=1, good=8, bad=1)
    good = os.path.join(data, "part0", "test", "good")
    cal, infer = os.path.join(tools, "faprompt-calibrate"), os.path.join(tools, "faprompt-infer")
    sidecar = model + ".calibration.json"
    p = run([cal, model, good, "--false-alarm-rate", "0.25", "--pixel-false-alarm-rate", "0.01", "--dry-run"])
    check(p.returncode == 0 and not os.path.exists(sidecar) and "(dry run)" in p.stdout, "calibrate: --dry-run writes nothing")
    p = run([cal, model, good, "--false-alarm-rate", "0.25", "--pixel-false-alarm-rate", "0.01"])
    if not check(p.returncode == 0 and os.path.exists(sidecar), "calibrate: sidecar written"):
        return
    c = json.load(open(sidecar))
    check({"image_threshold", "pixel_threshold", "false_alarm_rate", "n_images", "method"} <= c.keys(),
          "calibrate: sidecar fields")
    # recompute the order statistics from infer's scores and maps (infer now applies the sidecar)
    maps = os.path.join(tmp, "maps")
    p = run([infer, model, good, "--json", "--map-dir", maps])
    objs = [json.loads(l) for l in p.stdout.splitlines()]
    scores = np.array(sorted((o["score"] for o in objs), reverse=True), np.float32)
    n = len(scores)
    k = int(np.floor(0.25 * n))
    check(c["n_images"] == n == 8, "calibrate: n_images")
    check(np.float32(c["image_threshold"]) == scores[k], f"calibrate: image threshold = {k + 1}-th highest score")
    px = np.sort(np.concatenate([np.load(os.path.join(maps, f)).ravel() for f in os.listdir(maps)]))[::-1]
    kp = int(np.floor(0.01 * px.size))
    check(np.float32(c["pixel_threshold"]) == px[kp], f"calibrate: pixel threshold = {kp + 1}-th highest value")
    check(sum(s > scores[k] for s in scores) <= k, "calibrate: at most k normal images above")
    check(all(o["threshold"] == c["image_threshold"] for o in objs), "infer applies the sidecar's image_threshold")
    p = run([infer, model, good])
    check("(the model's image_threshold)" in p.stdout, "infer table names the model's threshold")
    p = run([infer, model, good, "--verbose"])
    check("calibration applied" in p.stderr, "the core logs (info) that the sidecar was applied")
    # a broken sidecar stops the load, naming the file
    open(sidecar, "w").write('{"image_threshold": 7}')
    p = run([infer, model, good], expect=1)
    check(p.returncode == 1 and sidecar in p.stderr and "[0, 1]" in p.stderr, "broken sidecar: load fails naming it")
    p = run([cal, model, good], expect=1)
    check(p.returncode == 1 and "delete that file" in p.stderr, "calibrate: hint to delete a broken sidecar")
    os.unlink(sidecar)
    p = run([cal, model, os.path.join(tmp, "nothing-here")], expect=1)
    check(p.returncode == 1 and "does not exist" in p.stderr, "calibrate: missing input")


def case_bad(tools, model, tmp):
    ev = os.path.join(tools, "faprompt-eval")

    def expect_error(args, needle, what, code=1):
        p = run(args, expect=code)
        check(p.returncode == code and needle in p.stderr, f"{what}: exit {code}, '{needle}'  [{p.stderr.strip()[:160]}]")

    base = make_dataset(os.path.join(tmp, "base"), "mvtec", seed=7, classes=1, good=2, bad=3)

    def variant(name, layout=None):
        d = os.path.join(tmp, name)
        if layout:
            make_dataset(d, layout, seed=7, classes=1, good=2, bad=3)
        else:
            shutil.copytree(base, d)
        return d

    expect_error([ev, model, os.path.join(tmp, "missing")], "does not exist", "missing dataset folder")
    os.makedirs(os.path.join(tmp, "empty"))
    expect_error([ev, model, os.path.join(tmp, "empty")], "no class folders", "empty dataset folder")
    d = variant("nogt")
    shutil.rmtree(os.path.join(d, "part0", "ground_truth", "hole"))
    expect_error([ev, model, d], "missing folder", "missing ground_truth/<defect> folder")
    d = variant("nomask")
    os.unlink(os.path.join(d, "part0", "ground_truth", "scratch", "000_mask.png"))
    expect_error([ev, model, d], "no mask for", "missing mask file")
    d = variant("badmask")
    open(os.path.join(d, "part0", "ground_truth", "hole", "000_mask.png"), "wb").write(b"not a png at all")
    expect_error([ev, model, d], "cannot read mask", "unreadable mask")
    d = variant("sizemask")
    mp = os.path.join(d, "part0", "ground_truth", "hole", "000_mask.png")
    Image.open(mp).resize((40, 30)).save(mp)
    expect_error([ev, model, d], "but its image", "mask size differs from its image's")
    p = run([ev, model, d, "--any-mask-size"])
    check(p.returncode == 0, "--any-mask-size accepts it")
    d = variant("mask16")
    mp = os.path.join(d, "part0", "ground_truth", "hole", "000_mask.png")
    Image.fromarray(np.array(Image.open(mp)).astype(np.uint16) * 200).save(mp)
    expect_error([ev, model, d], "16-bit", "16-bit mask")
    d = variant("badimg")
    open(os.path.join(d, "part0", "test", "good", "000.png"), "wb").write(b"\x89PNG\r\n\x1a\nbroken")
    expect_error([ev, model, d], "cannot read image", "unreadable image")
    d = variant("visa-label", "visa")
    csvp = os.path.join(d, "split_csv", "1cls.csv")
    text = open(csvp).read()
    open(csvp, "w").write(text.replace("anomaly", "broken", 1))
    expect_error([ev, model, d], "expected normal or anomaly", "VisA: bad label")
    d = variant("visa-col", "visa")
    csvp = os.path.join(d, "split_csv", "1cls.csv")
    text = open(csvp).read().split("\n", 1)
    open(csvp, "w").write(text[0].replace("mask", "maks") + "\n" + text[1])
    expect_error([ev, model, d], "no 'mask' column", "VisA: missing column")
    d = variant("visa-mask", "visa")
    os.unlink(os.path.join(d, "part0", "Data", "Masks", "Anomaly", "001.png"))
    expect_error([ev, model, d], "does not exist", "VisA: mask listed but missing")
    d = variant("meta-bad", "meta")
    open(os.path.join(d, "meta.json"), "w").write('{"test": {"part0": [{"img_path": 3}]}}')
    expect_error([ev, model, d], "img_path", "meta.json: bad entry")
    open(os.path.join(d, "meta.json"), "w").write('{"test": ')
    expect_error([ev, model, d], "meta.json", "meta.json: not JSON")
    d = variant("meta-empty-mask", "meta")
    mj = json.load(open(os.path.join(d, "meta.json")))
    mj["test"]["part0"][-1]["mask_path"] = ""
    json.dump(mj, open(os.path.join(d, "meta.json"), "w"))
    p = run([ev, model, d])
    check(p.returncode == 0 and "all-zero mask" in p.stderr, "meta.json: anomalous without mask -> warning, zeros")
    expect_error([ev, os.path.join(tmp, "nomodel.safetensors"), base], "make one with", "missing model")
    expect_error([ev, model], "a MODEL and a DATASET", "usage: one argument", code=2)
    expect_error([ev, model, base, "--layout", "bogus"], "--layout", "usage: bad layout", code=2)
    expect_error([ev, model, base, "--classes", "nope"], "no class 'nope'", "unknown class")
    expect_error([os.path.join(tools, "faprompt-infer"), model, os.path.join(tmp, "none.png")], "cannot read image",
                 "infer: missing file")
    os.makedirs(os.path.join(tmp, "noimages"))
    expect_error([os.path.join(tools, "faprompt-calibrate"), model, os.path.join(tmp, "noimages")], "no image files",
                 "calibrate: folder without images")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tools", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--case", choices=["infer", "eval", "calibrate", "bad"], required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        {"infer": case_infer, "eval": case_eval, "calibrate": case_calibrate, "bad": case_bad}[a.case](
            os.path.abspath(a.tools), os.path.abspath(a.model), tmp)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
