#!/usr/bin/env bash
# Everything a GPU machine checks for the CUDA backend, in one go (budget: 8
# minutes including the build):
#   1. build: -Dcuda=enabled, tests on, no GStreamer (build-gpu/)
#   2. models: the tiny random ones (meson) and the full-size ViT-L/14@336px
#      random model (models/faprompt-gen-random --preset vitl14-336, f16)
#   3. GPU tests (meson suite 'gpu'): every kernel and op against the CPU
#      backend, the detector CUDA vs CPU on the tiny models, hostile cases
#   4. full-size parity, S=518: CUDA f16 and bf16 against the CPU fp32 path
#      (targets: map <= 1e-2, score <= 5e-3)
#   5. benchmark: S 336 / 518 x B 1 / 8 x f16 / bf16, and the PyTorch
#      reference the authors' way on the same GPU (fp32, fp16 autocast); the
#      tiled path: a 1920x1080 frame in 4x2 tiles (overlap 32) at S 336, f16,
#      per frame, per tile and the stitching of the maps
#   6. compute-sanitizer memcheck / racecheck on the kernel tests, as time allows
#   7. a short table last: results against the targets (docs/BENCHMARKS.md)
# Full logs go to $OUT when set (a folder the caller collects afterwards; this
# writes 9 files), else to build-gpu/logs.
#
#   bash tests/gpu/run.sh             # on the GPU machine
#   bash tests/gpu/run.sh --dry-run   # anywhere: no GPU; builds with the CUDA
#       toolkit if there is one, runs the kernel-emulator suite in place of
#       the GPU one, the benchmark on the emulator with a tiny model (numbers
#       meaningless) and the PyTorch reference on the CPU, and says what it
#       left out
#
# Needs: a C/C++ compiler, CUDA (nvcc, cuBLASLt), python3 with torch and
# numpy, meson and ninja, and GLib / json-glib / OpenBLAS development files:
# where pkg-config does not find them, the bundle .gpu-deps (or
# .gpu-deps.tar.xz) made by tests/gpu/bundle-deps.sh is used. Nothing is
# installed.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
build=${FAP_GPU_BUILD:-build-gpu}
logs=${OUT:-$build/logs}
mkdir -p "$logs" "$build"
log=$logs/run.log
: > "$log"
t0=$SECONDS
status=0
declare -a summary notes

say() { echo "$*" | tee -a "$log"; }
elapsed() { echo "$((SECONDS - t0))s"; }
step() { say ""; say "== [$(elapsed)] $*"; }
fail() { say "!! $*"; status=1; notes+=("FAILED: $*"); }
run() { # run a command with its output into the log (and the terminal)
  say "\$ $*"
  "$@" 2>&1 | tee -a "$log"
  return "${PIPESTATUS[0]}"
}

# ---- 0. environment -------------------------------------------------------------------
step "environment"
if [ -f .gpu-deps.tar.xz ] && [ ! -d .gpu-deps ]; then
  mkdir -p .gpu-deps && tar -C .gpu-deps -xJf .gpu-deps.tar.xz
fi
if ! pkg-config --exists 'glib-2.0 >= 2.74' json-glib-1.0 2>/dev/null; then
  if [ -f .gpu-deps/env.sh ]; then
    # shellcheck disable=SC1091
    source .gpu-deps/env.sh
    say "GLib / json-glib / OpenBLAS / pkg-config from the bundle .gpu-deps"
  else
    say "no GLib / json-glib development files and no .gpu-deps bundle:" \
        "run 'bash tests/gpu/bundle-deps.sh' where apt-get works and bring .gpu-deps.tar.xz"
  fi
elif ! pkg-config --exists openblas 2>/dev/null && [ ! -d /usr/lib/x86_64-linux-gnu/openblas-openmp ] &&
     [ -f .gpu-deps/env.sh ]; then
  source .gpu-deps/env.sh
  say "OpenBLAS from the bundle .gpu-deps (GLib from the system)"
fi
py=${PYTHON:-$(command -v python3)}
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
  for cand in /opt/torch/.venv/bin/python3 /usr/bin/python3; do
    if [ -x "$cand" ] && "$cand" -c 'import torch, numpy' 2>/dev/null; then py=$cand; break; fi
  done
fi
say "python: $py ($("$py" -c 'import torch; print("torch", torch.__version__,
  "cuda" if torch.cuda.is_available() else "no cuda")' 2>&1 | tail -1))"
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
say "nvcc: ${nvcc:-none} $([ -n "$nvcc" ] && "$nvcc" --version | tail -2 | head -1)"
say "meson $(meson --version 2>&1), ninja $(ninja --version 2>&1), $(nproc) cores"
if command -v nvidia-smi >/dev/null; then
  run nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
elif [ $dry = 0 ]; then
  say "nvidia-smi not found"
fi
have_gpu=0
if [ $dry = 0 ]; then
  have_gpu=1
else
  say "dry run: no GPU is used"
fi

# ---- 1. build ---------------------------------------------------------------------------------
step "build ($build)"
cuda_opt=enabled
[ $dry = 1 ] && cuda_opt=auto
if [ -f "$build/build.ninja" ]; then
  run meson setup --reconfigure "$build" -Dcuda=$cuda_opt -Dtests=enabled -Dgst=disabled \
    -Dpython="$py" >/dev/null || fail "meson setup"
else
  run meson setup "$build" --buildtype=release -Dcuda=$cuda_opt -Dtests=enabled -Dgst=disabled \
    -Dpython="$py" || fail "meson setup"
fi
if ! run ninja -C "$build" -j "$(nproc)"; then
  fail "build"
  say "build failed; the log is in $log"
  exit 1
fi
have_cuda=0
[ -x "$build/tests/gpu/test_cuda_ops" ] && have_cuda=1
say "build done at $(elapsed); CUDA backend built: $([ $have_cuda = 1 ] && echo yes || echo no)"
summary+=("build: $(elapsed) (CUDA backend $([ $have_cuda = 1 ] && echo built || echo NOT built))")
if [ $dry = 0 ] && [ $have_cuda = 0 ]; then
  fail "the CUDA backend was not built"
  exit 1
fi

# ---- 2. models ----------------------------------------------------------------------------------
step "models"
full=$build/vitl14-336-random-f16.safetensors
full_ac=$build/vitl14-336-anomalyclip-random-f16.safetensors
if [ $dry = 0 ]; then
  [ -f "$full" ] || run "$py" models/faprompt-gen-random --preset vitl14-336 --dtype f16 --seed 0 \
    -o "$full" || fail "full-size model"
  # AnomalyCLIP: the published configuration; CUDA runs it through the op table
  [ -f "$full_ac" ] || run "$py" models/faprompt-gen-random --preset vitl14-336 --dtype f16 \
    --seed 0 --family anomalyclip -o "$full_ac" || fail "full-size AnomalyCLIP model"
else
  say "dry run: the full-size model is not generated (its CPU and emulator runs would take hours)"
  notes+=("dry run: no full-size model, parity at S=518 and the real benchmark left out")
fi

# each meson test run's results and logs, kept before the next run replaces them
: > "$build/tests.jsonl"
: > "$logs/testlog.txt"
keep_testlog() {
  cat "$build/meson-logs/testlog.json" >> "$build/tests.jsonl" 2>/dev/null
  cat "$build/meson-logs/testlog.txt" >> "$logs/testlog.txt" 2>/dev/null
}

# ---- 3. test suites ---------------------------------------------------------------------------------
if [ $have_gpu = 1 ]; then
  step "GPU tests (meson suite gpu)"
  OMP_NUM_THREADS=$(nproc) run meson test -C "$build" --suite gpu --print-errorlogs \
    --num-processes 1 || fail "GPU test suite"
  keep_testlog
  suite=gpu
else
  step "kernel-emulator tests in place of the GPU ones (meson suites emu, unit/frames)"
  run meson test -C "$build" --suite emu --print-errorlogs --num-processes 2 || fail "emu suite"
  keep_testlog
  run meson test -C "$build" frames --print-errorlogs || fail "frames test"
  keep_testlog
  suite=emu
fi
summary+=("tests ($suite): $("$py" - "$build/tests.jsonl" <<'PY'
import json, sys
r = [json.loads(l)["result"] for l in open(sys.argv[1]) if l.strip()]
ok, skip = r.count("OK"), r.count("SKIP")
print("%d passed, %d skipped, %d failed" % (ok, skip, len(r) - ok - skip))
PY
)")

# ---- 4. full-size parity ------------------------------------------------------------------------------
if [ $have_gpu = 1 ]; then
  step "full-size parity, S=518 (CUDA f16 / bf16 vs CPU fp32)"
  OMP_NUM_THREADS=$(nproc) run timeout 300 "$build/tests/gpu/test_cuda_detector" --full "$full" \
    --full "$full_ac" > "$logs/parity-full.txt" || fail "full-size parity"
  grep -E 'full-size|  (map|score|tokens|global|map1|map2|prior|topk_index) ' "$logs/parity-full.txt" \
    | tee -a "$log" >/dev/null
else
  step "the full-size parity step on the emulator, with the tiny model at S=518 (dry run)"
  FAP_EMU_MEMORY_LIMIT=$((4 << 30)) run timeout 600 "$build/tests/gpu/test_emu_detector" \
    --full "$build/tests/tiny-a.safetensors" > "$logs/parity-full.txt" || fail "parity step (emulator)"
  notes+=("dry run: 'parity' in the table is the tiny model at S=518 on the emulator")
fi

# ---- 5. benchmark ---------------------------------------------------------------------------------------
step "benchmark"
bench_json=$logs/bench.jsonl
: > "$bench_json"
if [ $have_gpu = 1 ]; then
  run timeout 420 "$build/tools/faprompt-bench-gpu" "$full" --sizes 336,518 --batches 1,8 \
    --precisions f16,bf16 --frames 64 --torch-frames 5 --python "$py" --json "$bench_json" \
    > "$logs/bench.txt" || fail "benchmark"
  cat "$logs/bench.txt" >> "$log"
  run timeout 120 "$build/tools/faprompt-bench-gpu" "$full" --sizes 336 --batches 1 \
    --precisions f16 --frames 32 --no-torch --input 1920x1080 --tiles 4x2 --tile-overlap 32 \
    --json "$logs/bench-tiles.jsonl" > "$logs/bench-tiles.txt" || fail "benchmark (tiles)"
  cat "$logs/bench-tiles.txt" >> "$log"
  summary+=("tiles 4x2 at 1920x1080, S 336 f16: $(grep -m1 -o \
    '[0-9.]* ms/frame, [0-9.]* ms/tile; stitch [0-9.]* ms' "$logs/bench-tiles.txt" || echo 'no result')")
else
  tiny=$build/tests/tiny-a.safetensors
  [ -f "$tiny" ] || ninja -C "$build" tests/tiny-a.safetensors >/dev/null
  if [ -x "$build/tools/faprompt-bench-gpu-emu" ]; then
    run "$build/tools/faprompt-bench-gpu-emu" "$tiny" --sizes 56 --batches 1,2 \
      --precisions f16,bf16 --frames 2 --json "$bench_json" > "$logs/bench.txt" ||
      fail "benchmark (emulator)"
    cat "$logs/bench.txt" >> "$log"
    run "$build/tools/faprompt-bench-gpu-emu" "$tiny" --sizes 56 --batches 1 --precisions f16 \
      --frames 1 --no-torch --input 1920x1080 --tiles 4x2 --tile-overlap 32 \
      --json "$logs/bench-tiles.jsonl" > "$logs/bench-tiles.txt" || fail "benchmark (tiles, emulator)"
    cat "$logs/bench-tiles.txt" >> "$log"
  fi
  say "dry run: the PyTorch reference timing path, on the CPU with the tiny model:"
  run "$py" tests/reference/faprompt_ref.py --bench --model "$tiny" --frames 1 --threads 2 \
    --device cpu || fail "PyTorch reference (--bench)"
  notes+=("dry run: benchmark numbers come from the host emulator and mean nothing")
fi

# ---- 6. memory and race checks, in the time left ----------------------------------------------------
# compute-sanitizer on the kernel tests (it needs a real kernel driver: it works
# on VMs, not under gVisor); each run only if it can end before ~7.5 minutes
if [ $have_gpu = 1 ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    left=$((450 - (SECONDS - t0)))
    if [ $left -lt 60 ]; then
      say "compute-sanitizer $tool: skipped (${left}s left)"
      notes+=("compute-sanitizer $tool skipped for time")
      continue
    fi
    step "compute-sanitizer --tool $tool on the kernel tests (up to ${left}s)"
    if timeout "$left" compute-sanitizer --tool "$tool" --error-exitcode 3 \
        "$build/tests/gpu/test_cuda_ops" > "$build/sanitizer-$tool.txt" 2>&1; then
      summary+=("compute-sanitizer $tool: clean")
    else
      rc=$?
      [ $rc = 124 ] && summary+=("compute-sanitizer $tool: ran out of time") ||
        fail "compute-sanitizer $tool (exit $rc, see sanitizer.txt)"
    fi
    { echo "== $tool"; cat "$build/sanitizer-$tool.txt"; } >> "$logs/sanitizer.txt"
    tail -5 "$build/sanitizer-$tool.txt" | tee -a "$log"
  done
fi

# ---- 7. summary -------------------------------------------------------------------------------------------
step "summary"
"$py" - "$bench_json" "$logs/parity-full.txt" "$dry" > "$logs/summary.md" <<'PY'
import json, os, re, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
parity = open(sys.argv[2]).read() if os.path.exists(sys.argv[2]) else ""
dry = sys.argv[3] == "1"
print("| S | B | prec | ms/call | ms/frame | frames/s | GPU MiB | torch fp32 / fp16 ms | speed-up |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    sp = (f"{r['torch_fp32_ms'] / r['ms_per_frame']:.0f}x / {r['torch_fp16_ms'] / r['ms_per_frame']:.0f}x"
          if r.get("torch_fp32_ms", 0) > 0 else "-")
    tt = (f"{r['torch_fp32_ms']:.1f} / {r['torch_fp16_ms']:.1f}" if r.get("torch_fp32_ms", 0) > 0 else "-")
    print(f"| {r['size']} | {r['batch']} | {r['precision']} | {r['ms_per_call']:.3f} | "
          f"{r['ms_per_frame']:.3f} | {r['fps']:.0f} | {r['gpu_mib']:.0f} | {tt} | {sp} |")
print("\n(dry run: host emulator, tiny model; only the parity step judged)" if dry else
      "\ntargets (H200, full-size model, S=518):")
def pick(s, b, p):
    for r in rows:
        if r["size"] == s and r["batch"] == b and r["precision"] == p:
            return r
lat = pick(518, 1, "f16"); thr = pick(518, 8, "f16")
def verdict(ok):
    return "PASS" if ok else "MISS"
if lat:
    print(f"  latency B=1 f16: {lat['ms_per_frame']:.3f} ms/frame (<= 3 ms): {verdict(lat['ms_per_frame'] <= 3)}")
    if lat.get("torch_fp32_ms", 0) > 0:
        sp = lat["torch_fp32_ms"] / lat["ms_per_frame"]
        sp16 = lat["torch_fp16_ms"] / lat["ms_per_frame"]
        print(f"  vs PyTorch fp32: {sp:.0f}x, vs fp16 autocast: {sp16:.0f}x (>= 30x): {verdict(sp >= 30)}")
if thr:
    print(f"  throughput B=8 f16: {thr['fps']:.0f} frames/s (>= 500): {verdict(thr['fps'] >= 500)}")
    print(f"  GPU memory B=8 f16: {thr['gpu_mib']:.0f} MiB (weights in f16 ~ 0.8 GB of it)")
for label, prec in [(l, p) for l in ("full-size", "full-size anomalyclip") for p in ("f16", "bf16")]:
    m = re.search(r"%s RGB \(%s, S=518\).*?\n(.*?)(?=\nfull-size|\Z)" % (re.escape(label), prec),
                  parity, re.S)
    name = prec if label == "full-size" else f"anomalyclip {prec}"
    if not m:
        print(f"  parity {name}: no result")
        continue
    block = m.group(1)
    me = re.search(r"^  map +max\|cpu\| +\S+ +max err +(\S+)", block, re.M)
    se = re.search(r"^  score +max\|cpu\| +\S+ +max err +(\S+)", block, re.M)
    if me and se:
        map_e, score_e = float(me.group(1)), float(se.group(1))
        print(f"  parity {name}: map {map_e:.2e} (<= 1e-2), score {score_e:.2e} (<= 5e-3): "
              f"{verdict(map_e <= 1e-2 and score_e <= 5e-3)}")
PY
cat "$logs/summary.md" >> "$log"
echo
for s in "${summary[@]}"; do echo "$s"; done | tee -a "$log"
for n in "${notes[@]+"${notes[@]}"}"; do echo "$n"; done | tee -a "$log"
echo "logs: $logs (run.log, testlog.txt, bench.txt, bench.jsonl, bench-tiles.txt, summary.md$([ $have_gpu = 1 ] && echo ', parity-full.txt, sanitizer.txt'))"
echo "total $(elapsed)$([ $status = 0 ] && echo ', all steps passed' || echo ', SOME STEPS FAILED')"
echo
cat "$logs/summary.md"
exit $status
