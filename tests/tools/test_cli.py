#!/usr/bin/python3
"""End-to-end runs of faprompt-infer, faprompt-eval and faprompt-calibrate on the
tiny random model and small synthetic datasets (make_dataset.py).

    test_cli.py --tools BUILD/tools --model TINY.safetensors --case infer|eval|calibrate|bad|tiles
    test_cli.py --tools BUILD/tools --model TINY.safetensors --model-ac TINY_AC.safetensors \
                --case anomalyclip|anomalyclip-png16

eval: all three layouts; the masks it used (--dump) equal the authors' PIL
preparation bit for bit, also for masks shrunk, enlarged and odd-sized; its
metrics equal reference_metrics.py on its own maps to 1e-6; CSV / JSON / Markdown
agree; --limit and --classes. infer: table, JSON lines, heatmaps, .npy and 16-bit
PNG maps, equal to eval's maps; --roi rectangles score as hand crops. calibrate: the thresholds are the order
statistics it claims, the sidecar is written and faprompt-infer applies it.
tiles: infer --tiles runs fap_tiles_layout's tiles as --roi rectangles
(the same scores, bit for bit), its map is the numpy reference of
docs/SPEC.md section 1.2, Tiles, applied to those rectangles' maps (1e-6),
the image's score the highest tile's; eval --tiles: the scores of infer
--tiles, the maps stitched at S x S; infer --tiles auto picks the grid the rule
gives and scores as that --tiles CxR; bad --tiles / --tile-overlap named.
bad: missing folders, unreadable / mismatched / 16-bit masks, broken CSV and
meta.json, missing model, broken sidecar: exit status and a clear message.
anomalyclip (an AnomalyCLIP model with out layers 2,4: L = 2): the table header
names each family; --map-dir --authors-map writes map_sum = map * L, the plain
--map-dir the result map in [0, 1]; scores and heatmaps do not change with it;
for a FAPrompt model --authors-map writes the same file as without;
faprompt-bench names the family and skips the FAPrompt-only PyTorch anchor.
anomalyclip-png16: --authors-map with --map-format png16 must not clip the
authors' map (values up to L) at 1 without a word.
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
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import tiles_ref  # noqa: E402

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
    if expect is not None and p.returncode != expect:
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
        check(lines[0].startswith(f"model {model} (faprompt): S={S}") and "file" in lines[2]
              and "anomalous" in lines[2], "infer: table header (names the family)")
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
    # --precision f32 is the exact path: the reference loops' scores to 1e-5,
    # and the table says what ran (auto: bf16 where the CPU has bf16 units)
    p32 = run([infer, model, good, "--precision", "f32", "--json"])
    pref = run([infer, model, good, "--reference", "--json"])
    if check(p32.returncode == 0 and pref.returncode == 0, "infer: --precision f32 and --reference ran"):
        s32 = [json.loads(l)["score"] for l in p32.stdout.splitlines()]
        sref = [json.loads(l)["score"] for l in pref.stdout.splitlines()]
        check(len(s32) == 3 and max(abs(a - b) for a, b in zip(s32, sref)) <= 1e-5,
              f"infer: --precision f32 scores = the reference loops' ({s32} vs {sref})")
    p = run([infer, model, good, "--precision", "f32"])
    check(p.returncode == 0 and ", f32, threshold" in p.stdout.splitlines()[0],
          "infer: the table header names the precision that runs")
    # --roi: each rectangle scores as the image cropped to it by hand; the image's
    # score is the highest; the heatmap changes nothing outside the rectangles
    img = os.path.join(good, "000.png")
    src = Image.open(img).convert("RGB")
    W, H = src.size
    rois = [(0, 0, 17, 13), (W - 21, H - 15, 21, 15), (5, 7, W // 2, H // 2)]
    crops = []
    for i, (x, y, w, h) in enumerate(rois):
        crops.append(os.path.join(tmp, f"crop{i}.png"))
        src.crop((x, y, x + w, y + h)).save(crops[i])
    hr = os.path.join(tmp, "heat-roi")
    p = run([infer, model, img, "--json", "--heatmap-dir", hr, "--pixel-threshold", "0"]
            + [a for r in rois for a in ("--roi", ",".join(map(str, r)))])
    q = run([infer, model, "--json"] + crops)
    if check(p.returncode == 0 and q.returncode == 0, "infer --roi: ran (and on the hand crops)"):
        o = json.loads(p.stdout)
        alone = [json.loads(l)["score"] for l in q.stdout.splitlines()]
        got = [r["score"] for r in o["rois"]]
        check([(r["x"], r["y"], r["width"], r["height"]) for r in o["rois"]] == rois,
              "infer --roi: the rectangles in order")
        check(max(abs(a - b) for a, b in zip(got, alone)) <= TOL,
              f"infer --roi: each rectangle scores as its hand crop ({got} vs {alone})")
        check(o["score"] == max(got) and o["anomalous"] == any(r["anomalous"] for r in o["rois"]),
              "infer --roi: the image's score is the highest, anomalous when any is")
        drawn = np.array(Image.open(os.path.join(hr, "000_heatmap.png")).convert("RGB"))
        inside = np.zeros((H, W), bool)
        for x, y, w, h in rois:
            inside[y:y + h, x:x + w] = True
        orig = np.array(src)
        check(np.array_equal(drawn[~inside], orig[~inside]) and not np.array_equal(drawn, orig),
              "infer --roi: heatmap drawn inside the rectangles only")
    p = run([infer, model, img, "--roi", f"0,0,{W + 1},5"], expect=1)
    check(p.returncode == 1 and f"width={W + 1}" in p.stderr, "infer --roi outside the image: named")
    p = run([infer, model, img, "--roi", "1,2,x,4"], expect=2)
    check(p.returncode == 2 and '"1,2,x,4"' in p.stderr, "infer --roi that does not parse: usage error")

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


def case_tiles(tools, model, tmp):
    infer = os.path.join(tools, "faprompt-infer")
    img = os.path.join(tmp, "odd.png")
    W, H = 73, 46  # odd sizes: tiles that do not divide the image
    rng = np.random.default_rng(5)
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(img)
    narrow = os.path.join(tmp, "narrow.png")
    Image.fromarray((rng.random((9, 3, 3)) * 255).astype(np.uint8)).save(narrow)
    for cols, rows, overlap in [(3, 2, 5), (2, 1, 0)]:
        tag = f"infer --tiles {cols}x{rows} --tile-overlap {overlap}"
        rects = tiles_ref.layout((0, 0, W, H), cols, rows, overlap)
        mt, mr, hm = (os.path.join(tmp, f"{x}{cols}{rows}") for x in ("mt", "mr", "hm"))
        p = run([infer, model, img, "--json", "--map-dir", mt, "--heatmap-dir", hm,
                 "--pixel-threshold", "0", "--tiles", f"{cols}x{rows}", "--tile-overlap", str(overlap)])
        q = run([infer, model, img, "--json", "--map-dir", mr]
                + [a for r in rects for a in ("--roi", ",".join(map(str, r)))])
        if not check(p.returncode == 0 and q.returncode == 0, f"{tag}: ran (and as --roi)"):
            continue
        o, by_roi = json.loads(p.stdout), json.loads(q.stdout)
        check([(t["x"], t["y"], t["width"], t["height"]) for t in o["tiles"]] == rects,
              f"{tag}: the tiles are the layout's, row-major")
        got = [t["score"] for t in o["tiles"]]
        check(got == [r["score"] for r in by_roi["rois"]],
              f"{tag}: each tile scores as the same --roi rectangle, bit for bit")
        check(o["score"] == max(got) and o["anomalous"] == (o["score"] > o["threshold"]),
              f"{tag}: the image's score is the highest tile's")
        maps = [np.load(r["map"]) for r in by_roi["rois"]]
        side = S * max(cols, rows)
        stitched = np.load(o["map"])
        want = tiles_ref.stitch((0, 0, W, H), cols, rows, overlap, maps, side, side)
        if check(stitched.shape == (side, side) and o["map_size"] == side,
                 f"{tag}: the map is S * max(C, R) = {side} squared"):
            err = float(np.max(np.abs(stitched - want)))
            check(err <= TOL, f"{tag}: the map is the tiles' maps stitched as docs/SPEC.md says "
                              f"(max error {err:.2g})")
        drawn = np.array(Image.open(os.path.join(hm, "odd_heatmap.png")).convert("RGB"))
        check(drawn.shape == (H, W, 3) and not np.array_equal(drawn, np.array(Image.open(img))),
              f"{tag}: heatmap drawn at the image's size")
    # infer --tiles auto: the grid the rule of docs/SPEC.md 1.2 (Automatic tiles) picks for
    # the image (tiny model: S = 56, P = 14, 4 patches a side), run as that --tiles CxR
    def auto_grid(k, overlap, cap=16, grid=S // 14):
        def side(n, length):
            return length if n == 1 else -(-(length + (n - 1) * overlap) // n)
        ok = [(c * r, c, r) for c in range(1, 17) for r in range(1, 17) if c * r <= cap
              and c <= W and r <= H and (c == 1 or overlap <= W - c) and (r == 1 or overlap <= H - r)
              and max(side(c, W), side(r, H)) / grid <= k]
        return min(ok, key=lambda t: (t[0], abs(t[1] - t[2])))[1:] if ok else None
    for k, overlap in [(12, 0), (7, 3), (30, 0)]:
        want = auto_grid(k, overlap)
        tag = f"infer --tiles auto --tile-max-patch-pixels {k} --tile-overlap {overlap}"
        p = run([infer, model, img, "--json", "--tiles", "auto", "--tile-max-patch-pixels", str(k),
                 "--tile-overlap", str(overlap)])
        q = run([infer, model, img, "--json", "--tiles", f"{want[0]}x{want[1]}",
                 "--tile-overlap", str(overlap)])
        if check(p.returncode == 0 and q.returncode == 0 and want is not None, f"{tag}: ran"):
            o, e = json.loads(p.stdout), json.loads(q.stdout)
            check(o["tile_grid"] == f"{want[0]}x{want[1]}", f"{tag}: grid {o['tile_grid']}, "
                  f"the rule gives {want[0]}x{want[1]}")
            check([t["score"] for t in o["tiles"]] == [t["score"] for t in e["tiles"]]
                  and o["score"] == e["score"], f"{tag}: scores as --tiles {o['tile_grid']}, bit for bit")
    p = run([infer, model, img, "--json", "--tiles", "auto", "--tile-max-patch-pixels", "1"])
    check(p.returncode == 0 and "--tile-max-patch-pixels 1" in p.stderr
          and len(json.loads(p.stdout)["tiles"]) <= 16,
          "infer --tiles auto with a bound 16 tiles cannot meet: the smallest patch, said")
    p = run([infer, model, img, "--tiles", "auto", "--tile-max-patch-pixels", "0"], expect=2)
    check(p.returncode == 2 and "--tile-max-patch-pixels 0" in p.stderr,
          "infer --tile-max-patch-pixels 0: refused, naming it")

    # faprompt-eval --tiles: the scores infer --tiles gives, the maps stitched at S x S
    data = make_dataset(os.path.join(tmp, "ds"), "mvtec", seed=6, classes=1, good=2, bad=1,
                        width=61, height=45)
    dump = os.path.join(tmp, "dump-tiles")
    grid, overlap = (3, 2), 4
    tiling = ["--tiles", f"{grid[0]}x{grid[1]}", "--tile-overlap", str(overlap)]
    p = run([os.path.join(tools, "faprompt-eval"), model, data, "--dump", dump] + tiling)
    if check(p.returncode == 0 and "3x2 tiles overlapping by 4" in p.stderr, "eval --tiles: ran"):
        d = read_dump(dump)["part0"]
        files = [smp[0] for smp in d["samples"]]
        by_file = infer_json(infer, model, files, *tiling)
        check(by_file is not None and [np.float32(by_file[f]["score"]) for f in files] == list(d["scores"]),
              "eval --tiles: the scores of infer --tiles, bit for bit")
        f0 = files[0]
        W0, H0 = Image.open(f0).size
        rects = tiles_ref.layout((0, 0, W0, H0), *grid, overlap)
        mr = os.path.join(tmp, "mr-eval")
        q = run([infer, model, f0, "--json", "--map-dir", mr]
                + [a for r in rects for a in ("--roi", ",".join(map(str, r)))])
        if check(q.returncode == 0, "eval --tiles: the tiles run as --roi"):
            maps = [np.load(r["map"]) for r in json.loads(q.stdout)["rois"]]
            want = tiles_ref.stitch((0, 0, W0, H0), *grid, overlap, maps, S, S)
            err = float(np.max(np.abs(d["maps"][0] - want)))
            check(d["maps"].shape[1:] == (S, S) and err <= TOL,
                  f"eval --tiles: the map is the tiles' maps stitched at S x S (max error {err:.2g})")
    p = run([os.path.join(tools, "faprompt-eval"), model, data, "--tiles", "2x"], expect=2)
    check(p.returncode == 2 and '"2x"' in p.stderr, "eval --tiles 2x: refused, naming it")
    p = run([os.path.join(tools, "faprompt-eval"), model, data, "--tiles", "2x2", "--tile-overlap", "50"],
            expect=1)
    check(p.returncode == 1 and "overlap 50" in p.stderr, "eval --tile-overlap 50: refused on the image, naming it")

    for args, rc, named in [(["--tiles", "0x2"], 2, '"0x2"'), (["--tiles", "3"], 2, '"3"'),
                            (["--tiles", "5x4"], 2, "20 tiles"),
                            (["--tiles", "2x2", "--roi", "0,0,5,5"], 2, "--roi"),
                            (["--tiles", "2x2", "--tile-overlap", "-1"], 2, "--tile-overlap"),
                            (["--tile-overlap", "3"], 2, "needs --tiles"),
                            (["--tiles", "2x2", "--tile-overlap", "45"], 1, "overlap 45"),
                            (["--tiles", "4x1"], 1, "4 columns")]:
        # a 3 x 9 image: more columns than pixels
        p = run([infer, model, narrow if "4x1" in args else img] + args, expect=rc)
        check(p.returncode == rc and named in p.stderr, f"infer {' '.join(args)}: refused, naming {named}")


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
    for tool in ("faprompt-infer", "faprompt-eval", "faprompt-calibrate"):
        expect_error([os.path.join(tools, tool), model, base, "--precision", "fp32"],
                     "--precision must be auto, f32, f16, bf16 or int8", f"{tool} --precision fp32", code=2)

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


AC_LAYERS = 2  # tiny-ac: out layers 2,4


def infer_json(infer, model, files, *options):
    """faprompt-infer --json: the rows by file, or None when it failed."""
    p = run([infer, model, *files, "--json", *options])
    if p.returncode != 0:
        return None
    return {o["file"]: o for o in (json.loads(l) for l in p.stdout.splitlines())}


def case_anomalyclip(tools, model, tmp, model_ac):
    data = make_dataset(os.path.join(tmp, "ds"), "mvtec", seed=8, classes=1, good=3, bad=2)
    good = os.path.join(data, "part0", "test", "good")
    files = [good, os.path.join(data, "part0", "test", "hole", "000.png")]
    stems = ["000", "001", "002"]
    infer = os.path.join(tools, "faprompt-infer")
    # the table header names the family
    for m, family in ((model_ac, "anomalyclip"), (model, "faprompt")):
        p = run([infer, m, good])
        lines = p.stdout.splitlines()
        check(p.returncode == 0 and lines and lines[0].startswith(f"model {m} ({family}): S={S},"),
              f"infer header names the family '{family}': {lines[:1]}")
    # AnomalyCLIP: plain --map-dir (the result map, [0, 1]) against --authors-map (map_sum = map * L)
    plain, authors, h1, h2 = (os.path.join(tmp, x) for x in ("plain", "authors", "heat1", "heat2"))
    rows_plain = infer_json(infer, model_ac, [good], "--map-dir", plain, "--heatmap-dir", h1)
    rows_authors = infer_json(infer, model_ac, [good], "--map-dir", authors, "--authors-map",
                              "--heatmap-dir", h2)
    if not check(rows_plain is not None and rows_authors is not None, "infer on the AnomalyCLIP model ran"):
        return
    check(rows_plain.keys() == rows_authors.keys() and len(rows_plain) == 3, "3 rows each")
    check(all(rows_plain[f]["score"] == rows_authors[f]["score"] for f in rows_plain),
          "--authors-map leaves the scores as they are")
    check(all(0 <= o["score"] <= 1 for o in rows_plain.values()), "AnomalyCLIP scores in [0, 1]")
    any_above_1 = False
    for stem in stems:
        a = np.load(os.path.join(plain, f"{stem}_map.npy"))
        b = np.load(os.path.join(authors, f"{stem}_map.npy"))
        if not check(a.shape == b.shape == (S, S) and a.dtype == b.dtype == np.float32,
                     f"{stem}: both maps float32 [S, S]"):
            continue
        check(a.min() >= 0 and a.max() <= 1, f"{stem}: the plain map is the result map, in [0, 1] "
              f"([{a.min():.4f}, {a.max():.4f}])")
        want = a.astype(np.float64) * AC_LAYERS
        err = float(np.max(np.abs(b - want) / np.maximum(np.abs(want), 1e-30)))
        check(err <= 1e-6, f"{stem}: --authors-map map = plain map * L (L = {AC_LAYERS}), "
              f"max relative error {err:.2g}")
        check(b.max() <= AC_LAYERS, f"{stem}: the authors' map lies in [0, L]")
        any_above_1 |= bool(b.max() > 1)
        # the heatmap is drawn from the result map either way
        ha = np.array(Image.open(os.path.join(h1, f"{stem}_heatmap.png")))
        hb = np.array(Image.open(os.path.join(h2, f"{stem}_heatmap.png")))
        check(np.array_equal(ha, hb), f"{stem}: heatmap the same with --authors-map")
    check(any_above_1, "the authors' maps reach above 1 somewhere (else the test cannot tell the scales)")
    # the JSON rows point at the files written
    check(all(os.path.dirname(o["map"]) == authors for o in rows_authors.values()),
          "--json 'map' names the --authors-map file")
    # --authors-map without --map-dir: nothing to change, runs as usual
    rows = infer_json(infer, model_ac, [good], "--authors-map")
    check(rows is not None and all(rows[f]["score"] == rows_plain[f]["score"] for f in rows),
          "--authors-map without --map-dir: same scores, no error")
    # FAPrompt: --authors-map writes the very same files
    fa1, fa2 = os.path.join(tmp, "fa1"), os.path.join(tmp, "fa2")
    p1 = run([infer, model, *files, "--map-dir", fa1])
    p2 = run([infer, model, *files, "--map-dir", fa2, "--authors-map"])
    if check(p1.returncode == 0 and p2.returncode == 0, "FAPrompt with and without --authors-map ran"):
        names = sorted(os.listdir(fa1))
        check(names == sorted(os.listdir(fa2)) and len(names) == 3, f"FAPrompt: the same files {names}")
        for n in names:
            same = open(os.path.join(fa1, n), "rb").read() == open(os.path.join(fa2, n), "rb").read()
            check(same, f"FAPrompt: {n} byte for byte the same with --authors-map")
    # faprompt-bench names the family; its PyTorch anchor (authors_speed.py) runs AnomalyCLIP
    bench = os.path.join(tools, "faprompt-bench")
    if os.path.exists(bench):
        p = run([bench, model_ac, "--sizes", "56", "--rounds", "1", "--frames", "1", "--threads", "1",
                 "--torch-frames", "1"])
        row = [l for l in p.stdout.splitlines() if l.startswith("| 56 |")]
        check(p.returncode == 0 and f"model {model_ac} (anomalyclip):" in p.stdout and row
              and row[0].split("|")[6].strip() not in ("", "–"),
              "faprompt-bench: names the family and times the AnomalyCLIP PyTorch anchor "
              f"({row[0] if row else p.stdout[-300:]})")
        check("| 56 |" in p.stdout, "faprompt-bench: the table row for S=56")
        p = run([bench, model, "--sizes", "56", "--rounds", "1", "--frames", "1", "--threads", "1",
                 "--no-torch"])
        check(p.returncode == 0 and f"model {model} (faprompt):" in p.stdout,
              "faprompt-bench on FAPrompt: '(faprompt)'")


def case_anomalyclip_png16(tools, model, tmp, model_ac):
    """--authors-map --map-format png16: the authors' map reaches L = 2, a
    16-bit PNG of value * 65535 holds [0, 1]. Either the tool refuses the pair
    (exit status, a message naming the options) or the PNG holds the map it
    claims; clipping every value above 1 to 65535 in silence is neither."""
    data = make_dataset(os.path.join(tmp, "ds"), "mvtec", seed=8, classes=1, good=2, bad=1)
    good = os.path.join(data, "part0", "test", "good")
    infer = os.path.join(tools, "faprompt-infer")
    npy, png = os.path.join(tmp, "npy"), os.path.join(tmp, "png")
    p = run([infer, model_ac, good, "--map-dir", npy, "--authors-map"])
    if not check(p.returncode == 0, "infer --authors-map (npy) ran"):
        return
    p = run([infer, model_ac, good, "--map-dir", png, "--authors-map", "--map-format", "png16"],
            expect=None)
    if p.returncode != 0:
        check("png16" in p.stderr and "authors-map" in p.stderr,
              f"the pair is refused with a message naming both: {p.stderr.strip()[:200]}")
        return
    for stem in ["000", "001"]:
        a = np.load(os.path.join(npy, f"{stem}_map.npy"))
        b = np.array(Image.open(os.path.join(png, f"{stem}_map.png"))).astype(np.float64)
        clipped = float(np.mean((a > 1) & (b == 65535)))
        check(a.max() > 1, f"{stem}: the authors' map reaches {a.max():.3f} > 1")
        check(clipped == 0 and "png16" in p.stderr,
              f"{stem}: png16 of the authors' map: {clipped:.0%} of the pixels (all values above 1) "
              f"written as 65535 = 1.0, and the tool said nothing (stderr {p.stderr.strip()[:120]!r})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tools", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-ac", help="an AnomalyCLIP model with out layers 2,4 (tiny-ac)")
    ap.add_argument("--case", choices=["infer", "eval", "calibrate", "bad", "tiles", "anomalyclip",
                                       "anomalyclip-png16"], required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if a.case.startswith("anomalyclip"):
            if not a.model_ac:
                ap.error(f"--case {a.case} needs --model-ac")
            {"anomalyclip": case_anomalyclip, "anomalyclip-png16": case_anomalyclip_png16}[a.case](
                os.path.abspath(a.tools), os.path.abspath(a.model), tmp, os.path.abspath(a.model_ac))
        else:
            {"infer": case_infer, "eval": case_eval, "calibrate": case_calibrate, "bad": case_bad,
             "tiles": case_tiles}[a.case](
                os.path.abspath(a.tools), os.path.abspath(a.model), tmp)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
