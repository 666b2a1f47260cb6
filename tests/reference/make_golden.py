#!/usr/bin/python3
"""Writes a golden file for the core's parity tests.

Runs the PyTorch reference of the model's family on a deterministic test image
and stores the input and every intermediate it names: faprompt_ref.py (FAPrompt,
the intermediates of core/fap.h) or anomalyclip_ref.py (`family` "anomalyclip"
in the model's __metadata__; its INTERMEDIATES, all F32):

    input.rgb            U8  [H, W, 3]
    <intermediate>       F32 (topk_index: I32), shapes as in core/fap.h
    __metadata__         image_size, sigma (decimal strings), model (basename),
                         family (only for a family other than faprompt, so that
                         FAPrompt goldens stay as they were; absent = faprompt)

    make_golden.py --model M --image-size S --width W --height H --seed N \
                   [--sigma X] [--image PATH.npy] -o golden.safetensors
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import anomalyclip_ref  # noqa: E402
import fapfile  # noqa: E402
import faprompt_ref  # noqa: E402

# model family (__metadata__ "family", absent = faprompt) -> reference module
REFERENCES = {"faprompt": faprompt_ref, anomalyclip_ref.FAMILY: anomalyclip_ref}


def make_test_image(width, height, seed):
    """uint8 RGB [H, W, 3]: smooth gradients, a few bright blobs and rectangles, noise.

    The gradients make the resampling non-trivial everywhere, the blobs and sharp
    rectangles give localised "anomalies" and bicubic overshoot at edges, and the
    noise keeps ties out of the top-M selection.
    """
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    img = np.stack([
        0.2 + 0.5 * u,
        0.3 + 0.4 * v,
        0.4 + 0.2 * np.sin(2 * np.pi * (u + v)),
    ], axis=-1) * 255.0
    for _ in range(3):  # Gaussian blobs
        cx, cy = rs.uniform(0, width), rs.uniform(0, height)
        r = rs.uniform(0.03, 0.12) * min(width, height) + 1.0
        amp = rs.uniform(80, 160, size=3)
        img += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
    for _ in range(2):  # hard-edged rectangles
        x0, y0 = rs.randint(0, width), rs.randint(0, height)
        w = rs.randint(1, max(2, width // 4))
        h = rs.randint(1, max(2, height // 4))
        img[y0:y0 + h, x0:x0 + w] = rs.uniform(0, 255, size=3)
    img += rs.normal(0, 6.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def reference(family):
    if family not in REFERENCES:
        raise ValueError(f"unknown model family {family!r} (known: {', '.join(REFERENCES)})")
    return REFERENCES[family]


def load_model(path):
    """The model file as its family's reference reads it."""
    return reference(anomalyclip_ref.model_family(path)).Model(path)


def golden_tensors(model, image, image_size, sigma):
    ref = reference(getattr(model, "family", "faprompt"))
    out = ref.run(model, image, image_size, sigma)
    tensors = {"input.rgb": np.ascontiguousarray(image, dtype=np.uint8)}
    for name in ref.INTERMEDIATES:
        arr = out[name].contiguous().numpy()
        tensors[name] = arr.astype(np.int32 if name == "topk_index" else np.float32)
    return tensors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image-size", type=int, default=0, help="S (0 = the model's)")
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=72)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sigma", type=float, default=-1.0, help="< 0 = the model's")
    ap.add_argument("--image", help="use this HxWx3 uint8 .npy instead of the test image")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)

    try:
        model = load_model(args.model)
    except ValueError as e:
        sys.exit(f"make_golden: {e}")
    if args.image:
        image = np.load(args.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            sys.exit(f"{args.image}: need a uint8 HxWx3 array, got {image.dtype} {image.shape}")
    else:
        image = make_test_image(args.width, args.height, args.seed)
    s = args.image_size or model.cfg["image_size"]
    sigma = model.cfg["sigma"] if args.sigma < 0 else args.sigma
    tensors = golden_tensors(model, image, s, sigma)
    md = {"image_size": str(s), "sigma": repr(float(sigma)),
          "model": os.path.basename(args.model)}
    family = getattr(model, "family", "faprompt")
    if family != "faprompt":
        md["family"] = family
    nbytes = fapfile.write(args.output, tensors, md)
    print(f"make_golden: S={s} sigma={sigma} input {image.shape[1]}x{image.shape[0]} "
          f"score={float(tensors['score'][0]):.6f} -> {args.output} ({nbytes} bytes)")


if __name__ == "__main__":
    main()
