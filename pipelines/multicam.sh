#!/usr/bin/env bash
# Several cameras in one process sharing one loaded model: every faprompt
# names the same model-file, so the weights are mapped and widened once (each
# element keeps its own detector); the elements' model-shared property says so.
#   MODEL=model.safetensors pipelines/multicam.sh /dev/video0 /dev/video2 ...
#   MODEL=model.safetensors pipelines/multicam.sh --test 3   # 3 test patterns, 100 frames each
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
branches=()
if [[ "${1:-}" == "--test" ]]; then
  for i in $(seq 1 "${2:-2}"); do
    branches+=(videotestsrc num-buffers=100 pattern=$((i % 3 == 0 ? 18 : i)) !
      video/x-raw,width=320,height=240 ! faprompt name=cam$i "${model_arg[@]}"
      inference-interval=5 post-messages=on-change ! fakesink)
  done
else
  i=0
  for dev in "$@"; do
    i=$((i + 1))
    branches+=(v4l2src device="$dev" ! faprompt name=cam$i "${model_arg[@]}" inference-interval=30
      non-blocking=true ! autovideosink)
  done
fi
GST_DEBUG="${GST_DEBUG:-faprompt:4}" gst-launch-1.0 -m "${branches[@]}" 2>&1 |
  grep --line-buffered -E "faprompt,|loaded|shared with|ERROR" | sed -e 's/\x1b\[[0-9;]*m//g' | cut -c1-240
