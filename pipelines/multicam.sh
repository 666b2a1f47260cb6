#!/usr/bin/env bash
# Several cameras in one process sharing one model instance: every faprompt
# names the same model-instance-id, so there is one detector (one copy of the
# weights, on the GPU too) and the cameras' due frames run together in batches
# of BATCH (default: the number of cameras; each batch waits at most
# batch-timeout, 5 ms by default, for the others). Per-camera settings
# (thresholds, interval, drawing, messages) stay per element.
#   MODEL=model.safetensors pipelines/multicam.sh /dev/video0 /dev/video2 ...
#   MODEL=model.safetensors pipelines/multicam.sh --test 3   # 3 test patterns, 100 frames each
#   BATCH=8 INSTANCE=line1 ... to choose batch size and instance name
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
branches=()
if [[ "${1:-}" == "--test" ]]; then
  n="${2:-2}"
else
  n=$#
fi
shared=(model-instance-id="${INSTANCE:-cameras}" batch-size="${BATCH:-$n}")
if [[ "${1:-}" == "--test" ]]; then
  for i in $(seq 1 "$n"); do
    branches+=(videotestsrc num-buffers=100 pattern=$((i % 3 == 0 ? 18 : i)) !
      video/x-raw,width=320,height=240 ! faprompt name=cam$i "${model_arg[@]}" "${shared[@]}"
      inference-interval=5 post-messages=on-change ! fakesink)
  done
else
  i=0
  for dev in "$@"; do
    i=$((i + 1))
    branches+=(v4l2src device="$dev" ! faprompt name=cam$i "${model_arg[@]}" "${shared[@]}"
      inference-interval=30 ! autovideosink)
  done
fi
GST_DEBUG="${GST_DEBUG:-faprompt:4}" gst-launch-1.0 -m "${branches[@]}" 2>&1 |
  grep --line-buffered -E "faprompt,|loaded|shared with|model-instance-id|ERROR" |
  sed -e 's/\x1b\[[0-9;]*m//g' | cut -c1-240
