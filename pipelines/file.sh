#!/usr/bin/env bash
# A video file in, the annotated video file out (H.264 in MP4 with x264enc,
# else Motion-JPEG in AVI), plus one "faprompt" message line per anomaly
# start/end on stdout.
#   MODEL=model.safetensors pipelines/file.sh IN OUT [extra faprompt properties...]
#   pipelines/file.sh --test OUT      # a generated 3-second clip as input
# Decoding H.264 input needs gstreamer1.0-libav (tools/setup.sh installs it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [[ "${1:-}" == "--test" ]]; then
  src=(videotestsrc num-buffers=90 pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1)
else
  src=(filesrc location="$1" ! decodebin ! videoconvert)
fi
out="$2"
shift 2
if gst-inspect-1.0 x264enc >/dev/null 2>&1 && [[ "$out" == *.mp4 ]]; then
  enc=(x264enc speed-preset=veryfast ! mp4mux)
else
  enc=(jpegenc ! avimux)
fi
gst-launch-1.0 -m -e "${src[@]}" ! faprompt "${model_arg[@]}" post-messages=on-change "$@" \
  ! videoconvert ! "${enc[@]}" ! filesink location="$out" | grep --line-buffered -E "faprompt,|ERROR" || true
echo "written: $out"
