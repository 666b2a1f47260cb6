#!/usr/bin/env bash
# The whole test suite, stage by stage:
#   main       every meson test (./build, or $FAP_BUILD_DIR);
#   valgrind   the unit tests, then the element's 500-frame run (formats, caps
#              changes, blocking then non-blocking; when the element was
#              built), then faprompt-serve's service run in a test's own
#              process (when it was built) again under valgrind: meson test
#              --setup valgrind (meson.build says what it checks);
#   asan       the suite once more, built with AddressSanitizer +
#              UndefinedBehaviorSanitizer in ./build-asan ($FAP_ASAN_BUILD_DIR;
#              configured here when it is not; the same CUDA choice,
#              $FAP_CUDA, as ./build; FAP_ASAN=0 leaves it out):
#              meson test --setup asan (tests/sanitize/run-test);
#   fuzz       every parser fuzzed on its seed corpus for $FAP_FUZZ_SECONDS
#              (default 30) each (tests/fuzz/run.sh; FAP_FUZZ=0 leaves it out).
# Ends with the plain line "N passed, N failed[, N skipped]" over all of
# them: every test of every meson run, every fuzz target (passed when it ran
# its time without a crash), and every stage that could not run at all (one
# failure each, named above the line). Exit status 1 when anything failed.
# FAP_SUITES="unit tools" runs only those meson suites in every stage;
# FAP_FUZZ_TARGETS="safetensors model" only those fuzz targets.
# FAP_ONNXRUNTIME=1 first installs ONNX Runtime, faprompt-bench's dev-only
# speed anchor (tools/setup-onnxruntime.sh: npm, about 300 MB), into the
# build directory, so the tools suite's tools-bench-onnx runs; without it
# that test is skipped (one failure here when the setup fails).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${FAP_BUILD_DIR:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
suites=${FAP_SUITES:-}
read -ra only <<< "${suites//,/ }"
only_args=()
for s in "${only[@]}"; do only_args+=(--suite "$s"); done
stages=()   # NAME|EXIT STATUS|RESULT FILE, for the count below

chosen() { # SUITE: whether FAP_SUITES lets it run
  [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $1 "* ]]
}
meson_stage() { # NAME DIR LOGBASE SETUP MESON-TEST-ARGS...: one meson test run
  local name=$1 dir=$2 logbase=$3 setup=$4 t0=$SECONDS
  shift 4
  local log="$dir/meson-logs/$logbase${setup:+-$setup}.json"
  rm -f "$log"
  meson test -C "$dir" --print-errorlogs --logbase "$logbase" ${setup:+--setup "$setup"} "$@"
  stages+=("$name|$?|$log")
  echo "tests: stage $name: $((SECONDS - t0)) s"
}

if [ "${FAP_ONNXRUNTIME:-0}" = 1 ]; then
  bash tools/setup-onnxruntime.sh "$build/onnxruntime" ||
    stages+=("onnxruntime (tools/setup-onnxruntime.sh)|1|")
fi

meson_stage main "$build" testlog "" --num-processes 2 "${only_args[@]}"

chosen unit && meson_stage valgrind-unit "$build" unit valgrind --suite unit --num-processes 2
if [ -x "$build/tests/gst/test_element" ] && chosen gst-valgrind; then
  meson_stage valgrind-gst "$build" gst valgrind --suite gst-valgrind --num-processes 1
fi
if [ -x "$build/tests/serve/test_serve_service" ] && { chosen serve || chosen serve-valgrind; }; then
  meson_stage valgrind-serve "$build" serve valgrind --suite serve-valgrind --num-processes 1
fi

# Not run under the sanitizers (the asan setup leaves them out, meson.build):
asan_skip=("package: packaging/make-debs.sh makes its own release build, nothing of it instrumented"
           "reference: the PyTorch reference against scipy / PIL, none of our code")
if [ "${FAP_ASAN:-1}" != 0 ]; then
  t_asan=$SECONDS
  asan_build=${FAP_ASAN_BUILD_DIR:-build-asan}
  san_args="-fno-sanitize-recover=all -fno-omit-frame-pointer -fsanitize=float-cast-overflow"
  [ -f "$asan_build/build.ninja" ] ||
    meson setup "$asan_build" --buildtype=debugoptimized -Db_sanitize=address,undefined \
      -Dc_args="$san_args" -Dcpp_args="$san_args" -Dcuda="${FAP_CUDA:-auto}"
  if ninja -C "$asan_build"; then
    for s in "${asan_skip[@]}"; do echo "tests: under the sanitizers, not run: suite $s"; done
    # (FAP_SUITES is passed as --suite, which overrides the setup's exclusion)
    asan_suites=()
    for s in "${only[@]}"; do
      [[ " ${asan_skip[*]%%:*} " == *" $s "* ]] || asan_suites+=(--suite "$s")
    done
    # fresh registries: a plugin that failed to load in an earlier build
    # stays blacklisted in them until its file changes
    find "$asan_build" -name 'registry*.bin' -delete
    if [ ${#only[@]} -eq 0 ] || [ ${#asan_suites[@]} -gt 0 ]; then
      meson_stage asan "$asan_build" testlog asan --no-rebuild --num-processes 2 "${asan_suites[@]}"
    fi
  else
    stages+=("asan (the sanitizer build, $asan_build)|1|")
  fi
  echo "tests: sanitizer stage: $((SECONDS - t_asan)) s"
fi

if [ "${FAP_FUZZ:-1}" != 0 ]; then
  export FAP_FUZZ_DIR=${FAP_FUZZ_DIR:-$PWD/build-fuzz}
  read -ra fuzz_targets <<< "${FAP_FUZZ_TARGETS:-}"
  bash tests/fuzz/run.sh "${FAP_FUZZ_SECONDS:-30}" "${fuzz_targets[@]}"
  stages+=("fuzz (tests/fuzz/run.sh)|$?|$FAP_FUZZ_DIR/results.jsonl")
fi

# The count: one line per test in each result file (meson's JSON test log;
# the fuzz targets' in the same shape). A stage with no result file could not
# run: one failure. A stage that exited non-zero with no failing test in its
# file (meson stopped short) fails once more, so the line and the exit
# status always agree.
/usr/bin/python3 - "${stages[@]}" <<'PY'
import json, os, sys
passed = failed = skipped = 0
for stage in sys.argv[1:]:
    name, rc, path = stage.rsplit("|", 2)
    if not path or not os.path.exists(path):
        print(f"FAILED: stage {name}: could not run (exit {rc}, no results)")
        failed += 1
        continue
    stage_failed = 0
    for line in open(path):
        r = json.loads(line)
        if r["result"] in ("OK", "EXPECTEDFAIL"): passed += 1
        elif r["result"] == "SKIP": skipped += 1
        else:
            print(f"FAILED: stage {name}: {r['name']} ({r['result']})")
            stage_failed += 1
    if rc != "0" and not stage_failed:
        print(f"FAILED: stage {name}: exit {rc} with no failing test in {path}")
        stage_failed = 1
    failed += stage_failed
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed else 0)
PY
