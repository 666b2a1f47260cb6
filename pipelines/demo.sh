#!/usr/bin/env bash
# faprompt demo: the GStreamer element on a short synthetic clip, end to end.
#
# The README's main job. Run it from anywhere after building (bash
# tools/setup.sh, or meson setup build && ninja -C build):
#
#   pipelines/demo.sh                     # uses build/
#   FAP_BUILD_DIR=/path/to/build pipelines/demo.sh
#
# The model: $FAPROMPT_MODEL when it names a file, else the element's default
# location ($XDG_DATA_HOME/faprompt/faprompt-vitl14-336.safetensors, made by
# faprompt-convert from the real weights: README "Real weights") when it is
# there, else a tiny random model made once in out/demo/.
#
# Everything goes to out/demo/ in the repository: sample.png (a brushed-metal surface with a painted scratch), and what
# the pipeline
#   filesrc sample.png ! pngdec ! imagefreeze (30 frames, 15 fps) ! videoconvert
#     ! faprompt inference-interval=5 post-messages=every-frame
#     ! tee -> annotated.avi (Motion-JPEG) and annotated-NN.png (every 10th frame)
# writes, with the score of each frame from the element's bus messages. With
# the random model the score and the heatmap are not meaningful detections:
# the demo then shows the path works, not that the scratch is found.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

build="${FAP_BUILD_DIR:-build}"
python=/usr/bin/python3
out=out/demo
default_model="${XDG_DATA_HOME:-$HOME/.local/share}/faprompt/faprompt-vitl14-336.safetensors"
if [[ -n "${FAPROMPT_MODEL:-}" && -f "$FAPROMPT_MODEL" ]]; then
  model="$FAPROMPT_MODEL" real=1
elif [[ -n "${FAPROMPT_MODEL:-}" ]]; then
  echo "demo: FAPROMPT_MODEL=$FAPROMPT_MODEL is not a file (see README, Real weights)" >&2
  exit 1
elif [[ -f "$default_model" ]]; then
  model="$default_model" real=1
else
  model="$out/tiny.safetensors" real=0
fi
sample="$out/sample.png"

if [[ ! -f "$build/gst/libgstfaprompt.so" ]]; then
  echo "demo: $build/gst/libgstfaprompt.so not found (in $repo). Build first: bash tools/setup.sh" >&2
  echo "      (or meson setup $build && ninja -C $build; the element needs GStreamer:" >&2
  echo "      Debian libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)" >&2
  exit 1
fi
export GST_PLUGIN_PATH="$repo/$build/gst"
case "$build" in /*) export GST_PLUGIN_PATH="$build/gst" ;; esac

mkdir -p "$out"

if [[ $real == 1 ]]; then
  echo "demo: model $model (a full ViT-L/14 on the CPU takes seconds per inference)"
elif [[ ! -f "$model" ]]; then
  echo "demo: no real model (\$FAPROMPT_MODEL or $default_model);"
  echo "      generating a tiny random model -> $model"
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

rm -f "$out"/annotated-*.png "$out/annotated.avi"
pipeline=(filesrc location="$sample" ! pngdec ! imagefreeze num-buffers=30 ! video/x-raw,framerate=15/1
  ! videoconvert ! faprompt model-file="$model" inference-interval=5 post-messages=every-frame
  ! tee name=t
  t. ! queue ! videoconvert ! jpegenc ! avimux ! filesink location="$out/annotated.avi"
  t. ! queue ! videorate drop-only=true max-rate=1 ! videoconvert ! pngenc
     ! multifilesink location="$out/annotated-%02d.png")
echo "demo: gst-launch-1.0 -m -e ${pipeline[*]}"
echo
gst-launch-1.0 -m -e "${pipeline[@]}" > "$out/gst-launch.log" 2>&1 || {
  echo "demo: the pipeline failed:" >&2
  tail -20 "$out/gst-launch.log" >&2
  exit 1
}

# One line per frame from the "faprompt" element messages.
"$python" - "$out/gst-launch.log" <<'PY' | tee "$out/result.txt"
import re, sys
rows = []
for line in open(sys.argv[1]):
    if "(element): faprompt," not in line:
        continue
    f = dict(re.findall(r"([a-z-]+)=\([a-z0-9]+\)([^,;]+)", line))
    rows.append((int(f["timestamp"]) / 1e9, float(f["score"]), f["anomalous"], f["reused"], f["region-count"]))
print(f"{'time':>6}  {'score':>6}  anomalous  reused  regions")
for t, sc, an, re_, rc in rows:
    if rows.index((t, sc, an, re_, rc)) % 5 == 0 or re_ == "false":
        print(f"{t:6.3f}  {sc:6.4f}  {an:9}  {re_:6}  {rc:>7}")
print(f"{len(rows)} frames, {sum(r[3] == 'false' for r in rows)} inferences")
PY

score="$(awk 'NR == 2 { print $2 }' "$out/result.txt")"
verdict="$(awk 'NR == 2 { print $3 }' "$out/result.txt")"
if [[ -z "$score" || ! -s "$out/annotated.avi" || ! -s "$out/annotated-00.png" ]]; then
  echo "demo: the pipeline did not produce scores, $out/annotated.avi and $out/annotated-00.png" >&2
  exit 1
fi
echo
if [[ $real == 1 ]]; then
  echo "score:     $score (anomalous: $verdict; model $model)"
else
  echo "score:     $score (anomalous: $verdict; the model's weights are random, so this is not a real detection)"
fi
echo "video:     $repo/$out/annotated.avi"
echo "frames:    $repo/$out/annotated-00.png ... (one a second)"
echo "messages:  $repo/$out/gst-launch.log"
