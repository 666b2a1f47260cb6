#!/usr/bin/env bash
# A camera on the line: faprompt scores each frame, fapromptpublish sends the
# anomaly events to an MQTT broker (where a PLC / MES / Node-RED listens),
# fapromptrecord keeps the evidence (snapshot, JSON sidecar, a clip from 5 s
# before to 5 s after) in $EVIDENCE (default out/evidence), the picture goes
# to the screen.
#   MODEL=model.safetensors BROKER=host[:port] SOURCE=cam1 pipelines/publish.sh [/dev/video0]
#   pipelines/publish.sh --test      # no camera, no broker of yours: a test
#                                    # pattern, a mosquitto started here, the
#                                    # consumer printing, 8 s
# Listen with pipelines/mqtt_consumer.py (or mosquitto_sub -t 'faprompt/#' -v).
# Options of the element: gst-inspect-1.0 fapromptpublish (TLS, user and
# password file, QoS, policy, JSON Lines files instead of MQTT).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
source_id="${SOURCE:-cam1}"
evidence="${EVIDENCE:-$repo/out/evidence}"
broker="${BROKER:-127.0.0.1:1883}"
host="${broker%%:*}" port="${broker##*:}"
[[ "$port" == "$broker" ]] && port=1883

if [[ "${1:-}" == "--test" ]]; then
  command -v mosquitto >/dev/null || { echo "publish.sh --test needs mosquitto (Debian: mosquitto)" >&2; exit 1; }
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  host=127.0.0.1
  mosquitto -p "$port" > /dev/null 2>&1 &
  broker_pid=$!
  trap 'kill $broker_pid 2>/dev/null' EXIT
  sleep 0.5
  [[ -n "${MODEL:-}" ]] || model_arg=(model-file="$build/tests/tiny-a.safetensors")
  timeout 8 /usr/bin/python3 "$repo/pipelines/mqtt_consumer.py" "$host" "$port" &
  sub_pid=$!
  sleep 0.3
  gst-launch-1.0 -q videotestsrc is-live=true num-buffers=150 ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! faprompt "${model_arg[@]}" inference-interval=3 \
    ! fapromptpublish target=mqtt host="$host" port="$port" source-id="$source_id" policy=every-frame max-rate=2 \
    ! fapromptrecord location="$evidence" source-id="$source_id" pre-seconds=1 post-seconds=1 \
    ! fakesink
  echo "evidence in $evidence:"; ls "$evidence" | tail -3
  wait $sub_pid 2>/dev/null || true
  exit 0
fi

device="${1:-/dev/video0}"
exec gst-launch-1.0 -m v4l2src device="$device" ! faprompt "${model_arg[@]}" inference-interval=30 \
  ! fapromptpublish target=mqtt host="$host" port="$port" source-id="$source_id" policy=on-change \
  ! fapromptrecord location="$evidence" source-id="$source_id" pre-seconds=5 post-seconds=5 \
  ! videoconvert ! autovideosink
