#!/usr/bin/env bash
# The whole test suite: every meson test, then the unit tests again under
# valgrind (hostile files must not make the reader or loader touch bad memory
# or leak). Ends with the plain line "N passed, N failed".
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

# Every parser fuzzed briefly on its seed corpus (libFuzzer, ASan + UBSan;
# tests/fuzz/run.sh; long campaigns: more seconds per target).
rc4=0
if command -v clang >/dev/null; then
  bash tests/fuzz/run.sh "${FAP_FUZZ_SECONDS:-30}"
  rc4=$?
else
  echo "tests: clang not found (Debian: clang): fuzz targets not run"
fi

/usr/bin/python3 - "${logs[@]}" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
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
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ $rc3 -eq 0 ] && [ $rc4 -eq 0 ]
