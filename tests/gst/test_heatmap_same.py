#!/usr/bin/python3
"""One heatmap look everywhere: the faprompt element (in a real pipeline,
pngdec ! faprompt ! pngenc) and faprompt-infer --heatmap-dir draw the same
pixels for the same image, model and drawing settings; both are the core's
fap_blend_frame (the element through fap_overlay, the CLI directly).

  GST_PLUGIN_PATH=build/gst test_heatmap_same.py INFER MODEL      (TAP output)
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

infer, model = sys.argv[1], sys.argv[2]
env = dict(os.environ, OMP_NUM_THREADS="1", FAP_NO_PROGRESS="1")
# settings that draw part of the map, on a scale that is not [0, 1]
settings = {"pixel-threshold": "0.35", "heatmap-alpha": "0.8", "heatmap-min": "0.2",
            "heatmap-max": "0.9"}
cases = [(97, 61, "RGB"), (64, 48, "RGBA"), (33, 17, "RGB")]
print(f"1..{len(cases)}")
with tempfile.TemporaryDirectory() as tmp:
    for n, (w, h, mode) in enumerate(cases, 1):
        rng = np.random.default_rng(n)
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 5 + yy * 3) % 256, (xx * 2 + 90) % 256, (yy * 7) % 256]
                       + ([np.full_like(xx, 255)] if mode == "RGBA" else []), -1)
        img = np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
        src = os.path.join(tmp, f"in{n}.png")
        Image.fromarray(img, mode).save(src)
        hm = os.path.join(tmp, f"hm{n}")
        p = subprocess.run([infer, model, src, "--threads", "1", "--heatmap-dir", hm]
                           + [f"--{k}={v}" for k, v in settings.items()],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            print(f"not ok {n} faprompt-infer failed: {p.stderr}")
            continue
        cli = np.array(Image.open(os.path.join(hm, f"in{n}_heatmap.png")))
        out = os.path.join(tmp, f"el{n}.png")
        props = " ".join(f"{k}={v}" for k, v in settings.items())
        p = subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={src}", "!", "pngdec", "!",
                            "faprompt", f"model-file={model}", "threads=1", "non-blocking=false",
                            "post-messages=none"] + props.split() +
                           ["!", "pngenc", "!", "filesink", f"location={out}"],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            print(f"not ok {n} gst-launch failed: {p.stderr}")
            continue
        el = np.array(Image.open(out))
        orig = np.array(Image.open(src))
        drawn = int((cli != orig).any(-1).sum())
        same = cli.shape == el.shape and np.array_equal(cli, el)
        diff = "" if same else f" ({int((cli != el).any(-1).sum()) if cli.shape == el.shape else 'shape'} pixels differ)"
        ok = same and drawn > 0
        print(f"{'ok' if ok else 'not ok'} {n} {w}x{h} {mode}: element == faprompt-infer "
              f"heatmap, {drawn} of {w * h} pixels drawn{diff}")
