#!/usr/bin/env bash
# faprompt demo: score one synthetic image and write its heatmap, end to end.
#
# The README's main job until the GStreamer element exists. Run it from
# anywhere after building (bash tools/setup.sh, or meson setup build && ninja -C build):
#
#   pipelines/demo.sh                     # uses build/
#   FAP_BUILD_DIR=/path/to/build pipelines/demo.sh
#
# Everything goes to out/demo/ in the repository: a tiny random model (made
# once), sample.png (a brushed-metal surface with a painted scratch), and the
# tool's outputs sample_heatmap.png and sample_map.npy. The model's weights are
# random, so the score and the map are not meaningful detections: the demo
# shows the path works, not that the scratch is found.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

build="${FAP_BUILD_DIR:-build}"
infer="$build/tools/faprompt-infer"
python=/usr/bin/python3
out=out/demo
model="$out/tiny.safetensors"
sample="$out/sample.png"

if [[ ! -x "$infer" ]]; then
  echo "demo: $infer not found (in $repo). Build first: bash tools/setup.sh" >&2
  echo "      (or meson setup $build && ninja -C $build; faprompt-infer is only built when" >&2
  echo "      gdk-pixbuf is found, Debian: libgdk-pixbuf-2.0-dev)" >&2
  exit 1
fi

mkdir -p "$out"

if [[ ! -f "$model" ]]; then
  echo "demo: generating a tiny random model -> $model"
  "$python" models/faprompt-gen-random --preset tiny --seed 1 -o "$model"
fi

echo "demo: writing a synthetic part with a scratch -> $sample"
"$python" - "$sample" <<'PY'
import sys

import numpy as np
from PIL import Image, ImageDraw

size, ss = 256, 4  # output side; supersampling of the scratch mask
rng = np.random.default_rng(7)

# Brushed metal: per-pixel noise smeared along x (box filter via cumsum), a
# gentle diagonal light gradient, a little fine grain.
noise = rng.normal(0.0, 1.0, (size, size + 32))
c = np.cumsum(noise, axis=1)
streaks = (c[:, 32:] - c[:, :-32]) / np.sqrt(32)
yy, xx = np.mgrid[0:size, 0:size] / size
base = 150 + 30 * (0.6 * xx + 0.4 * yy - 0.5) + 9 * streaks + rng.normal(0, 2, (size, size))

# The scratch: a thin curved groove drawn on a supersampled mask, downsampled
# for anti-aliasing; dark in the groove, a faint bright rim just above it.
mask = Image.new("L", (size * ss, size * ss), 0)
t = np.linspace(0, 1, 200)
p0, p1, p2 = np.array([45, 80]), np.array([120, 210]), np.array([215, 150])
pts = ((1 - t)[:, None] ** 2 * p0 + 2 * ((1 - t) * t)[:, None] * p1 + t[:, None] ** 2 * p2) * ss
ImageDraw.Draw(mask).line([tuple(q) for q in pts], fill=255, width=3 * ss, joint="curve")
groove = np.asarray(mask.resize((size, size), Image.LANCZOS), dtype=np.float64) / 255.0
rim = np.roll(groove, -2, axis=0) * (1 - groove)

grey = np.clip(base - 85 * groove + 35 * rim, 0, 255)
tint = np.array([1.0, 0.99, 0.96])  # slightly warm steel
rgb = np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)
Image.fromarray(rgb, "RGB").save(sys.argv[1])
PY

echo "demo: $infer $model $sample --heatmap-dir $out --map-dir $out"
echo
"$infer" "$model" "$sample" --heatmap-dir "$out" --map-dir "$out" | tee "$out/result.txt"

# The table row of the sample: file, WxH, score, anomalous, ms.
score="$(awk -v f="$sample" '$1 == f { print $3 }' "$out/result.txt")"
verdict="$(awk -v f="$sample" '$1 == f { print $4 }' "$out/result.txt")"
heatmap="$out/$(basename "$sample" .png)_heatmap.png"
map="$out/$(basename "$sample" .png)_map.npy"
if [[ -z "$score" || ! -s "$heatmap" || ! -s "$map" ]]; then
  echo "demo: faprompt-infer did not produce a score, $heatmap and $map" >&2
  exit 1
fi
echo
echo "score:   $score (anomalous: $verdict; the model's weights are random, so this is not a real detection)"
echo "heatmap: $repo/$heatmap"
echo "map:     $repo/$map"
