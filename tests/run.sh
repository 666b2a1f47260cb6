#!/usr/bin/env bash
# The whole test suite: every meson test, then the unit tests again under
# valgrind (hostile files must not make the reader or loader touch bad memory
# or leak), the suite once more built with AddressSanitizer and
# UndefinedBehaviorSanitizer, the fuzz targets. Ends with the plain line
# "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
build=${FAP_BUILD_DIR:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

meson test -C "$build" --print-errorlogs --num-processes 2
rc1=$?
cp "$build/meson-logs/testlog.json" "$build/meson-logs/testlog-main.json"

meson test -C "$build" --print-errorlogs --suite unit --num-processes 2 \
  --wrap="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 --suppressions=$PWD/tests/valgrind.supp" \
  --timeout-multiplier 4 --logbase valgrind
rc2=$?

# The element's 500-frame run (formats, caps changes, blocking then
# non-blocking) under valgrind, when the element was built.
# (meson names a wrapped run's log LOGBASE-WRAPPER.json: valgrind-valgrind.json)
vlog() { local f="$build/meson-logs/$1-valgrind.json"; [ -f "$f" ] || f="$build/meson-logs/$1.json"; echo "$f"; }
logs=("$build/meson-logs/testlog-main.json" "$(vlog valgrind)")
rc3=0
if [ -x "$build/tests/gst/test_element" ]; then
  meson test -C "$build" --print-errorlogs --suite gst-valgrind --num-processes 1 \
    --wrap="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 --suppressions=$PWD/tests/valgrind.supp" \
    --timeout-multiplier 4 --logbase valgrind-gst
  rc3=$?
  logs+=("$(vlog valgrind-gst)")
fi

# The suite once more, built with AddressSanitizer + UndefinedBehaviorSanitizer
# (GCC; $FAP_ASAN_BUILD_DIR, default build-asan/; FAP_ASAN=0 leaves it out).
# Every report, of a test or of any process it starts, fails that test;
# LeakSanitizer is on (tests/sanitize/run-test says where and why not, and
# how programs built without ASan load our libraries; tests/lsan.supp: the
# system libraries' own allocations). The same CUDA choice as ./build. Not
# run there, with the reason:
asan_skip=("package: packaging/make-debs.sh makes its own release build, nothing of it instrumented"
           "reference: the PyTorch reference against scipy / PIL, none of our code")
# The valgrind-wrapped tests run here too: UBSan sees what memcheck cannot
# (signed overflow, shifts, out-of-range conversions, misaligned or null
# pointers), ASan overruns of stack and global arrays.
rc5=0
failed_stages=()
if [ "${FAP_ASAN:-1}" != 0 ]; then
  t_asan=$SECONDS
  asan_build=${FAP_ASAN_BUILD_DIR:-build-asan}
  san_args="-fno-sanitize-recover=all -fno-omit-frame-pointer -fsanitize=float-cast-overflow"
  if [ ! -f "$asan_build/build.ninja" ]; then
    meson setup "$asan_build" --buildtype=debugoptimized -Db_sanitize=address,undefined \
      -Dc_args="$san_args" -Dcpp_args="$san_args" -Dcuda="${FAP_CUDA:-auto}"
  fi
  if ninja -C "$asan_build"; then
    for s in "${asan_skip[@]}"; do echo "tests: under the sanitizers, not run: suite $s"; done
    # fresh registries: a plugin that failed to load in an earlier build stays
    # blacklisted in them until its file changes
    find "$asan_build" -name 'registry*.bin' -delete
    meson test -C "$asan_build" --no-rebuild --print-errorlogs --num-processes 2 \
      --wrap="$PWD/tests/sanitize/run-test" --timeout-multiplier 3 \
      $(printf -- '--no-suite %s ' "${asan_skip[@]%%:*}") --logbase asan
    rc5=$?
    if [ -f "$asan_build/meson-logs/asan-run-test.json" ]; then
      logs+=("$asan_build/meson-logs/asan-run-test.json")
    else
      failed_stages+=("the sanitizer tests ($asan_build: no test log)")
    fi
  else
    rc5=1
    failed_stages+=("the sanitizer build ($asan_build)")
  fi
  echo "tests: sanitizer stage: $((SECONDS - t_asan)) s"
fi

# Every parser fuzzed briefly on its seed corpus (libFuzzer, ASan + UBSan;
# tests/fuzz/run.sh; long campaigns: more seconds per target).
rc4=0
if command -v clang >/dev/null; then
  bash tests/fuzz/run.sh "${FAP_FUZZ_SECONDS:-30}"
  rc4=$?
else
  echo "tests: clang not found (Debian: clang): fuzz targets not run"
fi

/usr/bin/python3 - "${logs[@]}" "${failed_stages[@]/#/--failed=}" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    if path.startswith("--failed="):  # a stage that could not run its tests
        print(f"FAILED: {path[9:]}")
        failed += 1
        continue
    for line in open(path):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): passed += 1
        elif r == "SKIP": skipped += 1
        else: failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
case $rc4 in
  0) ;;
  1) echo "fuzzing found a crash (tests/fuzz/run.sh above)" ;;
  *) echo "the fuzz targets could not run (tests/fuzz/run.sh above, exit $rc4)" ;;
esac
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ $rc3 -eq 0 ] && [ $rc4 -eq 0 ] && [ $rc5 -eq 0 ]
