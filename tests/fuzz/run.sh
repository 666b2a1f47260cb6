#!/usr/bin/env bash
# Builds the fuzz targets with clang (libFuzzer + ASan + UBSan) and runs each
# on its seed corpus for a fixed time:
#   bash tests/fuzz/run.sh [SECONDS per target, default 30] [TARGET...]
#   FAP_FUZZ_RUNS=1000000 bash tests/fuzz/run.sh 7200   # a campaign: 1 M
#                                                       # executions each
# Targets: safetensors (the container reader), model (the schema check on
# top), calibration (the sidecar JSON), rtp-hdrext (the RTP header
# extension's parser), element (the faprompt element through GstHarness: an
# inference per frame, slow; a campaign runs it for >= 1 h rather than 1 M
# executions). Work folder: $FAP_FUZZ_DIR (default build-fuzz/):
# corpus/<target> grows across runs, crash-<target>-* are kept there and
# fail the run (each becomes a regression input in seeds/<target>/).
# Exit status: 0 clean, 1 a target crashed, 2 usage, 3 a target did not build.
# Beside the table, $FAP_FUZZ_DIR/results.jsonl: one JSON line per target
# run, in the shape of meson's test log ({"name": "fuzz-TARGET", "result":
# "OK" or "FAIL", ...}), which tests/run.sh counts with the other tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
seconds="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors model calibration rtp-hdrext element)
work="${FAP_FUZZ_DIR:-$repo/build-fuzz}"
mkdir -p "$work"
results="$work/results.jsonl"
rm -f "$results"   # a run that stops before its targets leaves none
cc=${CLANG:-clang}
command -v "$cc" >/dev/null || { echo "fuzz: clang not found (Debian: clang)" >&2; exit 2; }

flags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -DFAP_VERSION=\"fuzz\" -I"$repo/core" -I"$repo/gst/common" -I"$repo/gst/faprompt"
       $(pkg-config --cflags glib-2.0 json-glib-1.0 gstreamer-rtp-1.0 gstreamer-video-1.0)
       -Wno-unknown-pragmas)
core=("$repo"/core/{safetensors,log,names,half}.c)
glib_libs=$(pkg-config --libs glib-2.0 json-glib-1.0)
# The element target: the plugin's sources that faprompt needs, without
# gstreamer-cuda (system memory only, as gst/meson.build builds it where
# there is no CUDA toolkit), and the core's CPU sources (core/meson.build)
# with OpenBLAS as meson.build links it: the OpenMP build by path, with an
# rpath. No -fopenmp: threads=1, and libFuzzer wants one thread of ours.
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
blas_dir=/usr/lib/$multiarch/openblas-openmp
blas_inc=/usr/include/$multiarch/openblas-openmp
if [ -d "$blas_dir" ] && [ -d "$blas_inc" ]; then
  blas=(-DFAP_HAVE_OPENBLAS=1 -I"$blas_inc" -L"$blas_dir" -Wl,-rpath,"$blas_dir" -lopenblas)
elif pkg-config --exists openblas; then
  blas=(-DFAP_HAVE_OPENBLAS=1 $(pkg-config --cflags --libs openblas))
else
  blas=()
fi
# the core's sources as core/meson.build lists them (core_sources; built
# here without oneDNN, so linear_dnnl.c is its f32-only stub)
core_cpu=$(sed -n '/^core_sources *= *files(/,/)/p' "$repo/core/meson.build" |
           grep -o "'[^']*\.c'" | tr -d "'")
# the element's helpers and what the elements share, as gst/faprompt/meson.build
# and gst/common/meson.build list them (gst_helper_sources, gst_common_sources)
sources_of() { # LIST FOLDER: the .c files of meson list LIST in gst/FOLDER/meson.build
  sed -n "/^$1 *= *files(/,/)/p" "$repo/gst/$2/meson.build" | grep -o "'[^']*\.c'" | tr -d "'" |
    while read -r f; do echo "$repo/gst/$2/$f"; done
}
element_srcs=("$here/fuzz_element.c" "$repo/gst/faprompt/gstfaprompt.c" "$repo/gst/common/gstfapromptmeta.c"
  $(sources_of gst_helper_sources faprompt) $(sources_of gst_common_sources common)
  $(for f in $core_cpu; do echo "$repo/core/$f"; done) "$repo/core/backend_loader.c"
  "$here/seeds/model/micro-f16.safetensors")
build() { # TARGET SOURCES... -- LIBS
  local name=$1 out="$work/fuzz_$1"; shift
  local srcs=() libs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do srcs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  libs=("$@")
  local newest=0 f
  for f in "${srcs[@]}" "$0" "$repo"/core/*.h "$repo"/gst/*/*.h; do [ "$f" -nt "$out" ] && newest=1; done
  [ -x "$out" ] && [ $newest = 0 ] && return 0
  local cfiles=() f2
  for f2 in "${srcs[@]}"; do case $f2 in *.c) cfiles+=("$f2") ;; esac; done
  "$cc" "${flags[@]}" "${cfiles[@]}" -o "$out" "${libs[@]}" -lm || {
    echo "fuzz: building fuzz_$name failed (clang with libFuzzer and the sanitizer runtimes:" \
         "Debian clang libclang-rt-14-dev)" >&2
    exit 3
  }
}
for t in "${targets[@]}"; do
  case $t in
    safetensors) build safetensors "$here/fuzz_safetensors.c" "${core[@]}" -- $glib_libs ;;
    model) build model "$here/fuzz_model.c" "$repo/core/model.c" "${core[@]}" -- $glib_libs ;;
    calibration) build calibration "$here/fuzz_calibration.c" "$repo/core/model.c" "${core[@]}" -- $glib_libs ;;
    rtp-hdrext) build rtp-hdrext "$here/fuzz_rtp_hdrext.c" "$repo/gst/common/gstrtphdrextfaprompt.c" \
                  "$repo/gst/common/gstfapromptmeta.c" "$repo/gst/common/fap_regions.c" -- $(pkg-config --libs gstreamer-rtp-1.0 gstreamer-video-1.0) ;;
    element) build element "${element_srcs[@]}" -- -O2 \
               -DFAP_MULTIARCH=\"$multiarch\" -DVERSION=\"fuzz\" -DPACKAGE=\"faprompt\" -DORIGIN=\"faprompt\" \
               -DFAP_FUZZ_MODEL_SEED=\"$here/seeds/model/micro-f16.safetensors\" -DHAVE_GDK_PIXBUF=1 \
               $(pkg-config --cflags --libs gstreamer-check-1.0 gstreamer-base-1.0 gstreamer-video-1.0 gio-2.0 json-glib-1.0 gdk-pixbuf-2.0) \
               "${blas[@]}" -ldl -lpthread ;;
    *) echo "fuzz: unknown target $t" >&2; exit 2 ;;
  esac
done

rc=0
printf '%-12s %10s %10s %8s %s\n' target executions exec/s corpus result
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus"
  cp -n "$here/seeds/$t"/* "$corpus/" 2>/dev/null || true
  log="$work/$t.log"
  started=$SECONDS
  set +e
  # Leaks are checked after every input that allocated more than it freed
  # (libFuzzer's own check); not at exit, where GLib's allocation in its ELF
  # constructor (no pointer LSan can see, and ld.so unsymbolised on a plain
  # Debian) would be reported against no input at all.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=leak_check_at_exit=0 \
  UBSAN_OPTIONS=print_stacktrace=1 \
    "$work/fuzz_$t" ${FAP_FUZZ_RUNS:+-runs=$FAP_FUZZ_RUNS} -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$work/crash-$t-" -print_final_stats=1 "$corpus" > "$log" 2>&1
  status=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  files=$(ls "$corpus" | wc -l)
  if [ $status -eq 0 ]; then result=ok; else result="CRASH (see $log)"; rc=1; fi
  printf '{"name": "fuzz-%s", "result": "%s", "duration": %d, "executions": %s, "log": "%s"}\n' \
    "$t" "$([ $status -eq 0 ] && echo OK || echo FAIL)" $((SECONDS - started)) "${execs:-null}" \
    "$log" >> "$results"
  printf '%-12s %10s %10s %8s %s\n' "$t" "${execs:-?}" "${speed:-?}" "$files" "$result"
  [ $status -eq 0 ] || grep -m5 -E "ERROR|runtime error|SUMMARY" "$log" | sed 's/^/    /'
done
exit $rc
