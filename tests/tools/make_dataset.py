#!/usr/bin/python3
"""Small synthetic anomaly-detection test sets in the layouts faprompt-eval reads.

    make_dataset.py OUT --layout mvtec|visa|meta [--classes N] [--good G] [--bad B]
                    [--width W] [--height H] [--seed S]

Each class is a texture (brushed metal, weave, speckled stone, ...); a defective
image has one to three painted defects (scratches, blobs, holes) and a mask that
marks them. Some masks are deliberately awkward: a defect of a few pixels that
vanishes when the mask is shrunk to S x S, and (VisA, meta) masks whose values
are small class indices rather than 255, as VisA's are.

Layouts (paths as faprompt-eval and the authors' loaders expect them):
  mvtec  OUT/<class>/test/good/NNN.png, OUT/<class>/test/<defect>/NNN.png,
         OUT/<class>/ground_truth/<defect>/NNN_mask.png, OUT/<class>/train/good/...
  visa   OUT/<class>/Data/Images/{Normal,Anomaly}/NNN.JPG,
         OUT/<class>/Data/Masks/Anomaly/NNN.png, OUT/split_csv/1cls.csv
  meta   the mvtec tree plus OUT/meta.json ({"train": ..., "test": {class: [...]}})
"""
import argparse
import csv
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

TEXTURES = ["metal", "weave", "stone", "wood"]
DEFECTS = ["scratch", "hole", "stain"]


def texture(kind, w, h, rng):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "metal":
        noise = rng.normal(0, 1, (h, w + 16))
        c = np.cumsum(noise, axis=1)
        base = 140 + 8 * (c[:, 16:] - c[:, :-16]) / 4 + 20 * (xx / w - 0.5)
        rgb = np.stack([base, base * 0.99, base * 0.96], -1)
    elif kind == "weave":
        p = 6 + rng.integers(0, 3)
        base = 120 + 40 * (np.sin(xx * np.pi / p) * np.sin(yy * np.pi / p) > 0) + rng.normal(0, 6, (h, w))
        rgb = np.stack([base * 0.8, base * 0.9, base], -1)
    elif kind == "stone":
        base = 110 + rng.normal(0, 18, (h, w))
        for _ in range(3):
            base = (base + np.roll(base, 1, 0) + np.roll(base, 1, 1) + np.roll(base, -1, 0)) / 4
        base = (base - base.mean()) * 3 + 120
        rgb = np.stack([base, base * 0.95, base * 0.9], -1)
    else:
        rings = np.sin(np.hypot(xx - w * 0.3, (yy - h * 2.0) * 0.2) * 0.5 + rng.normal(0, 0.1, (h, w)))
        base = 130 + 25 * rings
        rgb = np.stack([base * 1.1, base * 0.8, base * 0.55], -1)
    return np.clip(rgb, 0, 255)


def paint_defects(img, w, h, rng, n_defects, tiny=False):
    """Paints defects on img (float HxWx3) and returns (img, mask uint8 0/1)."""
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    if tiny:  # one or two pixels: gone after a shrink to S x S
        x, y = int(rng.integers(2, w - 2)), int(rng.integers(2, h - 2))
        draw.point([(x, y)], fill=1)
    else:
        for _ in range(n_defects):
            kind = DEFECTS[int(rng.integers(0, len(DEFECTS)))]
            x, y = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
            if kind == "scratch":
                dx, dy = rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.3, 0.3) * h
                draw.line([(x, y), (x + dx, y + dy)], fill=1, width=int(max(2, w // 40)))
            else:
                r = rng.uniform(0.04, 0.12) * min(w, h)
                draw.ellipse([x - r, y - r * rng.uniform(0.5, 1.0), x + r, y + r], fill=1)
    m = np.array(mask, dtype=np.uint8)
    shade = rng.choice([-70.0, 60.0])
    tint = np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.5, 1.0)])
    img = np.where(m[..., None] > 0, np.clip(img + shade * tint, 0, 255), img)
    return img, m


def make_class(cls_index, n_good, n_bad, w, h, rng):
    """Yields (kind, index, rgb uint8, mask uint8 0/1 or None, defect name)."""
    kind = TEXTURES[cls_index % len(TEXTURES)]
    for i in range(n_good):
        yield "good", i, texture(kind, w, h, rng).astype(np.uint8), None, "good"
    for i in range(n_bad):
        img = texture(kind, w, h, rng)
        tiny = i == n_bad - 1 and n_bad >= 3
        img, m = paint_defects(img, w, h, rng, 1 + i % 3, tiny=tiny)
        defect = DEFECTS[i % 2]  # two defect folders per class
        yield "bad", i, img.astype(np.uint8), m, defect


def write_mvtec(out, args, rng, meta=None):
    meta_test = {}
    for c in range(args.classes):
        name = f"part{c}"
        entries = []
        counters = {}
        for kind, i, rgb, m, defect in make_class(c, args.good, args.bad, args.width, args.height, rng):
            idx = counters.get(defect, 0)
            counters[defect] = idx + 1
            rel = f"{name}/test/{defect}/{idx:03d}.png"
            os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
            Image.fromarray(rgb, "RGB").save(os.path.join(out, rel))
            mask_rel = ""
            if m is not None:
                mask_rel = f"{name}/ground_truth/{defect}/{idx:03d}_mask.png"
                os.makedirs(os.path.dirname(os.path.join(out, mask_rel)), exist_ok=True)
                # MVTec masks are 0 / 255; the meta layout uses class indices (>0 counts).
                value = 255 if meta is None else 1 + (idx % 3)
                Image.fromarray((m * value).astype(np.uint8), "L").save(os.path.join(out, mask_rel))
            entries.append(dict(img_path=rel, mask_path=mask_rel, cls_name=name,
                                specie_name=defect, anomaly=0 if m is None else 1))
        train = os.path.join(out, name, "train", "good")
        os.makedirs(train, exist_ok=True)
        Image.fromarray(texture(TEXTURES[c % len(TEXTURES)], args.width, args.height, rng).astype(np.uint8)).save(
            os.path.join(train, "000.png"))
        meta_test[name] = entries
    if meta is not None:
        with open(os.path.join(out, "meta.json"), "w") as f:
            json.dump({"train": {}, "test": meta_test}, f, indent=4)


def write_visa(out, args, rng):
    rows = []
    for c in range(args.classes):
        name = f"part{c}"
        for kind, i, rgb, m, defect in make_class(c, args.good, args.bad, args.width, args.height, rng):
            sub = "Normal" if m is None else "Anomaly"
            rel = f"{name}/Data/Images/{sub}/{i:03d}.JPG"
            os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
            Image.fromarray(rgb, "RGB").save(os.path.join(out, rel), quality=95)
            mask_rel = ""
            if m is not None:
                mask_rel = f"{name}/Data/Masks/Anomaly/{i:03d}.png"
                os.makedirs(os.path.dirname(os.path.join(out, mask_rel)), exist_ok=True)
                Image.fromarray((m * (1 + c)).astype(np.uint8), "L").save(os.path.join(out, mask_rel))
            rows.append([name, "test", "normal" if m is None else "anomaly", rel, mask_rel])
        # a train row, which the evaluator must skip
        rel = f"{name}/Data/Images/Normal/train000.JPG"
        Image.fromarray(texture(TEXTURES[c % len(TEXTURES)], args.width, args.height, rng).astype(np.uint8)).save(
            os.path.join(out, rel))
        rows.insert(0, [name, "train", "normal", rel, ""])
    os.makedirs(os.path.join(out, "split_csv"), exist_ok=True)
    with open(os.path.join(out, "split_csv", "1cls.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["object", "split", "label", "image", "mask"])
        wr.writerows(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layout", choices=["mvtec", "visa", "meta"], required=True)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--good", type=int, default=4)
    ap.add_argument("--bad", type=int, default=5)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    if args.layout == "visa":
        write_visa(args.out, args, rng)
    else:
        write_mvtec(args.out, args, rng, meta={} if args.layout == "meta" else None)
    n = args.classes * (args.good + args.bad)
    print(f"make_dataset: {args.layout} layout, {args.classes} classes, {n} test images -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
