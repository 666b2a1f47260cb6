#!/usr/bin/env bash
# The two-box fleet of pipelines/fleet/ on this machine: a mosquitto broker
# on 1883 (if none answers there yet), box a on 8091, box b on 8092, and
# Prometheus on 9090 scraping both (if installed). Ctrl-C stops them all.
#   MODEL=tiny.safetensors pipelines/fleet.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
serve="$build/serve/faprompt-serve"
[[ -x "$serve" ]] || { echo "$serve not built (ninja -C $build)" >&2; exit 1; }
[[ -n "${MODEL:-}" ]] || { echo "set MODEL=path/to/model.safetensors" >&2; exit 1; }
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; rm -rf "$work"' EXIT INT TERM
# the configs name model.safetensors beside them
for box in a b; do
  cp "$repo/pipelines/fleet/box-$box.conf" "$work/"
done
ln -s "$(realpath "$MODEL")" "$work/model.safetensors"
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && command -v mosquitto >/dev/null; then
  mosquitto -p 1883 & pids+=($!)
fi
"$serve" "$work/box-a.conf" & pids+=($!)
"$serve" "$work/box-b.conf" & pids+=($!)
if command -v prometheus >/dev/null; then
  prometheus --config.file="$repo/pipelines/fleet/prometheus.yml" \
    --storage.tsdb.path="$work/prometheus" --web.listen-address=127.0.0.1:9090 \
    >"$work/prometheus.log" 2>&1 & pids+=($!)
  echo "Prometheus: http://127.0.0.1:9090/graph?g0.expr=rate(faprompt_frames_total[1m])"
fi
echo "box a: http://127.0.0.1:8091/api/cameras   box b: http://127.0.0.1:8092/api/cameras"
echo "results: mosquitto_sub -t 'fleet/#' -v"
wait
