#!/usr/bin/env bash
# A webcam, annotated live. UVC cameras emit YUY2 (or MJPEG): faprompt takes
# YUY2 as it is, no videoconvert in front.
#   MODEL=model.safetensors pipelines/camera.sh [/dev/video0] [extra faprompt properties...]
# A camera is live, so faprompt runs non-blocking by itself (non-blocking=auto):
# the picture keeps its rate and frames carry the newest result. On a CPU add
# inference-interval=30 (and image-size=336); see pipelines/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
device="${1:-/dev/video0}"
shift || true
exec gst-launch-1.0 -m v4l2src device="$device" ! faprompt "${model_arg[@]}" "$@" ! autovideosink
