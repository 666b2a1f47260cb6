#!/usr/bin/env bash
# Installs ONNX Runtime as a speed anchor for faprompt-bench (--onnx,
# --onnx-int8): what users who ship CLIP detectors deploy instead. For the
# benchmark only: nothing of faprompt links or loads it, and tools/setup.sh
# does not install it.
#
#   bash tools/setup-onnxruntime.sh [DIR]      (default: ${FAP_BUILD_DIR:-build}/onnxruntime)
#
# Puts into DIR:
#   node_modules/onnxruntime-node   npm's package: the Node binding over the
#                                   same libonnxruntime.so the C API loads
#                                   (its CPU provider; the bench's server is
#                                   tests/reference/ort_speed.js);
# and installs with apt-get (as root, or through sudo):
#   python3-onnx     the int8 rewrite of the exported graph
#                    (tests/reference/export_onnx.py; torch.onnx.export itself
#                    does not need it);
#   libjemalloc2     the PyTorch anchor with freed memory kept (faprompt-bench
#                    preloads it when found; glibc malloc tunables otherwise);
#   nodejs npm       when node is missing.
# faprompt-bench finds DIR as <build>/onnxruntime (beside its tools/ folder),
# or where --onnx-dir or $FAP_ONNXRUNTIME_DIR says. Safe to re-run: what is
# there already is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version pinned: the one the figures in docs/BENCHMARKS.md were taken with.
ORT_VERSION=${FAP_ONNXRUNTIME_VERSION:-1.30.0}
dir=${1:-${FAP_BUILD_DIR:-build}/onnxruntime}

packages=(python3-onnx libjemalloc2)
command -v node > /dev/null && command -v npm > /dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-onnxruntime: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pkg="$dir/node_modules/onnxruntime-node/package.json"
have=$(node -p "require('$pkg').version" 2>/dev/null || true)
if [ "$have" != "$ORT_VERSION" ]; then
  echo "setup-onnxruntime: npm install onnxruntime-node@$ORT_VERSION into $dir"
  # a package.json of its own, so npm installs here and not into a parent
  [ -f "$dir/package.json" ] ||
    echo '{"name": "faprompt-onnxruntime-anchor", "private": true}' > "$dir/package.json"
  # ONNXRUNTIME_NODE_INSTALL=skip: its post-install step downloads a CUDA
  # provider from outside the npm registry (and fails offline); the CPU
  # provider is in the package itself.
  (cd "$dir" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --save-exact \
    "onnxruntime-node@$ORT_VERSION")
fi
# The binding loads: the same check the bench's server does first.
node -e "require('$dir/node_modules/onnxruntime-node');
console.log('setup-onnxruntime: onnxruntime-node ' + require('$pkg').version + ' loads');"
echo "setup-onnxruntime: node $(node --version) at $(command -v node)"
echo "setup-onnxruntime: ONNX Runtime in $dir"
echo "setup-onnxruntime: python3-onnx $(/usr/bin/python3 -c 'import onnx; print(onnx.__version__)')"
jemalloc=$(/sbin/ldconfig -p | awk '/libjemalloc\.so\.2 /{p = $NF} END {print p}')
echo "setup-onnxruntime: jemalloc ${jemalloc:-not found}"
