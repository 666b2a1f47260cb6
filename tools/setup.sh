#!/usr/bin/env bash
# Installs what faprompt needs on Debian 12 (apt-get, as root), then
# configures and builds it in ./build (or $FAP_BUILD_DIR). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  gcc g++ meson ninja-build pkg-config   # g++: nvcc's host compiler, the CUDA kernel emulator
  libglib2.0-dev libjson-glib-dev
  libopenblas-openmp-dev     # OpenBLAS sharing our OpenMP threads (see meson.build)
  libdnnl-dev                # oneDNN: the CPU backend's bf16 / int8 linear layers
  libgdk-pixbuf-2.0-dev      # image decoding for tools/faprompt-infer, -eval, -calibrate
  libpng-dev                 # 16-bit PNG maps (faprompt-infer --map-format png16)
  python3-torch python3-numpy python3-scipy python3-pil   # reference + generator, /usr/bin/python3
  python3-sklearn python3-skimage   # the authors' metrics, to check faprompt-eval against
  valgrind
  dpkg-dev lintian           # packaging/make-debs.sh: dpkg-shlibdeps, the package check
  clang libclang-rt-14-dev   # tests/fuzz: libFuzzer with ASan + UBSan (the runtimes)
  # fapromptpublish (MQTT) and its tests: a real broker, clients, the schema check
  libmosquitto-dev mosquitto mosquitto-clients python3-paho-mqtt python3-jsonschema openssl
  # the GStreamer element (gst/), its tests and the example pipelines
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-base-apps
  gstreamer1.0-rtsp gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0
  python3-gi python3-gst-1.0   # Python readers: the overrides turn GstValueArray (regions) into a list
  gstreamer1.0-plugins-ugly gstreamer1.0-libav   # x264enc, H.264 decoding (pipelines/ only)
  # frames in CUDA memory (memory:CUDAMemory): GStreamer's CUDA library to build
  # against, nvcodec (nvh264dec, cudaupload) to run with where there is a GPU
  libgstreamer-plugins-bad1.0-dev gstreamer1.0-plugins-bad
  # faprompt-serve (serve/): its HTTP server, and a real Prometheus to scrape it in its tests
  libsoup-3.0-dev prometheus
  # faprompt-serve's web page, driven in its tests by a headless browser
  chromium chromium-driver python3-selenium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The CUDA backend builds wherever a CUDA toolkit is found (nvcc in PATH, in
# $CUDA_PATH/bin or /usr/local/cuda/bin; -Dcuda=auto), and its tests then run on
# the host kernel emulator where there is no GPU. FAP_CUDA=enabled makes a
# missing toolkit an error, FAP_CUDA=disabled leaves the backend out.
build=${FAP_BUILD_DIR:-build}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dcuda="${FAP_CUDA:-auto}"
fi
ninja -C "$build"
