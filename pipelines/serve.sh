#!/usr/bin/env bash
# faprompt-serve (serve/README.md) on N test patterns (default 2), the HTTP
# port on 127.0.0.1:8090 (LISTEN=addr:port to change): metrics on /metrics,
# the cameras on /api/cameras. Ctrl-C drains and stops it.
#   MODEL=tiny.safetensors pipelines/serve.sh [N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
serve="$build/serve/faprompt-serve"
[[ -x "$serve" ]] || { echo "$serve not built (ninja -C $build)" >&2; exit 1; }
[[ -n "${MODEL:-}" ]] || { echo "set MODEL=path/to/model.safetensors" >&2; exit 1; }
n="${1:-2}"
patterns=(ball smpte snow gradient pinwheel circular checkers-4 spokes)
conf="$(mktemp --suffix=.conf)"
trap 'rm -f "$conf"' EXIT
{
  printf '[service]\nlisten = %s\n\n' "${LISTEN:-127.0.0.1:8090}"
  for i in $(seq 1 "$n"); do
    printf '[camera cam%d]\nsource = test://%s?width=320&height=240&framerate=15\n' \
      "$i" "${patterns[$(((i - 1) % ${#patterns[@]}))]}"
    printf 'model = %s\ninference-interval = 5\n\n' "$(realpath "$MODEL")"
  done
} >"$conf"
echo "config: $conf (kill -HUP the process after editing it: serve/README.md)"
"$serve" "$conf"
