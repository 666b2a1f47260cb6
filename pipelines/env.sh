# Sourced by the pipeline scripts: finds the plugin in the build tree (or an
# installed one) and a model. Not meant to be run on its own.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FAP_BUILD_DIR:-$repo/build}"
case "$build" in /*) ;; *) build="$repo/$build" ;; esac
if [[ -f "$build/gst/libgstfaprompt.so" ]]; then
  export GST_PLUGIN_PATH="$build/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
fi
if ! gst-inspect-1.0 faprompt >/dev/null 2>&1; then
  echo "faprompt element not found: build first (bash tools/setup.sh), or set FAP_BUILD_DIR" >&2
  exit 1
fi
# Model: $MODEL, else $FAPROMPT_MODEL, else the element's default location
# (gst-inspect-1.0 faprompt shows it). A random test model, if you have none:
#   /usr/bin/python3 models/faprompt-gen-random --preset tiny -o tiny.safetensors
model_arg=()
if [[ -n "${MODEL:-}" ]]; then model_arg=(model-file="$MODEL"); fi
