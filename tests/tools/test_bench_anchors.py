#!/usr/bin/python3
"""faprompt-bench's table of the vision encoder against what users would run
instead, on the tiny random models (fast: numbers of no meaning as timings).

    test_bench_anchors.py --bench BUILD/tools/faprompt-bench --model TINY --model-ac TINY_AC \
                          --case torch|onnx [--onnx-dir DIR]

torch: PyTorch as shipped, with freed memory kept (jemalloc, or glibc malloc
tunables) and under bf16 autocast: a row each with a time, page faults per
call, and for bf16 an error against fp32 that is neither zero nor beyond
bf16's reach.
onnx: ONNX Runtime f32 and int8 (dev-only: tools/setup-onnxruntime.sh; the
test is skipped, exit 77, with the reason printed, where its folder is
missing): both rows; ONNX Runtime f32 and faprompt f32 agree with PyTorch
fp32 to 1e-4 on the export's reference frame, int8 is off by more than f32
and by less than a tenth of the values' range; the AnomalyCLIP export
([L, N+1, E] tokens) the same.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

S = "56"  # the tiny models' own size
failures = 0


def check(cond, what):
    global failures
    print(f"{'ok' if cond else 'FAIL':4} {what}", flush=True)
    if not cond:
        failures += 1
    return cond


def run_bench(args):
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        print(p.stdout[-3000:], p.stderr[-3000:], sep="\n")
    return p


def anchor_rows(out):
    """{row label: (min ms, ratio, faults or None, error or None or 'ref')} of the anchors table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.match(r"^[\d.]+ \([\d.]+\)$", cells[1]):
            continue
        faults = None if cells[3] == "–" else float(cells[3])
        err = {"–": None, "(the reference)": "ref"}.get(cells[4])
        rows[cells[0]] = (float(cells[1].split()[0]), float(cells[2].rstrip("x")), faults,
                          err if err or cells[4] in ("–", "(the reference)") else float(cells[4]))
    return rows


def value_range(out):
    m = re.search(r"their largest \|value\|: ([\d.]+)", out)
    return float(m.group(1)) if m else None


def row(rows, prefix):
    hits = [v for k, v in rows.items() if k.startswith(prefix)]
    return hits[0] if len(hits) == 1 else None


def case_torch(a):
    p = run_bench([a.bench, a.model, "--sizes", S, "--rounds", "1", "--frames", "1", "--threads", "1",
                   "--torch-bf16"])
    if not check(p.returncode == 0, "faprompt-bench --torch-bf16 ran"):
        return
    rows = anchor_rows(p.stdout)
    f32 = row(rows, "faprompt f32")
    shipped = row(rows, "PyTorch fp32, as shipped")
    kept = row(rows, "PyTorch fp32, freed memory kept (")
    bf16 = row(rows, "PyTorch bf16 autocast")
    check(f32 and shipped and kept and bf16, f"the four rows: {sorted(rows)}")
    if not (f32 and shipped and kept and bf16):
        return
    check(f32[1] == 1.0, "faprompt f32's ratio to itself is 1.00x")
    for name, r in (("as shipped", shipped), ("memory kept", kept), ("bf16", bf16)):
        check(r[0] > 0 and r[1] > 0 and r[2] is not None and r[2] >= 0,
              f"PyTorch {name}: a time, a ratio and page faults per frame {r}")
    check(shipped[3] == "ref" and kept[3] == "ref", "PyTorch fp32 rows are the reference")
    scale = value_range(p.stdout)
    check(scale and isinstance(bf16[3], float) and 0 < bf16[3] < 0.05 * scale,
          f"PyTorch bf16 autocast: error against fp32 {bf16[3]} in (0, 5% of {scale})")
    check("jemalloc" in str(rows) or "glibc malloc tunables" in str(rows),
          "the memory-kept row names its allocator")


def case_onnx(a):
    ort_dir = os.environ.get("FAP_ONNXRUNTIME_DIR") or a.onnx_dir
    if not os.path.exists(os.path.join(ort_dir, "node_modules", "onnxruntime-node", "package.json")):
        print(f"SKIP: no ONNX Runtime in {ort_dir} (dev-only: bash tools/setup-onnxruntime.sh; "
              "tests/run.sh runs it with FAP_ONNXRUNTIME=1)")
        return 77
    if not shutil.which("node"):
        print("SKIP: no node in PATH (tools/setup-onnxruntime.sh installs nodejs)")
        return 77
    for model, family in ((a.model, "FAPrompt"), (a.model_ac, "AnomalyCLIP")):
        p = run_bench([a.bench, model, "--sizes", S, "--rounds", "1", "--frames", "2", "--threads", "1",
                       "--no-torch", "--onnx", "--onnx-int8", "--onnx-dir", ort_dir])
        if not check(p.returncode == 0, f"{family}: faprompt-bench --onnx --onnx-int8 ran"):
            continue
        rows = anchor_rows(p.stdout)
        f32, ort, int8 = (row(rows, "faprompt f32"), row(rows, "ONNX Runtime fp32"),
                          row(rows, "ONNX Runtime int8"))
        if not check(f32 and ort and int8, f"{family}: faprompt and both ONNX Runtime rows: {sorted(rows)}"):
            continue
        scale = value_range(p.stdout)
        check("onnxruntime-node" in p.stdout, f"{family}: the ONNX Runtime rows name the runtime")
        for name, r in (("fp32", ort), ("int8", int8)):
            check(r[0] > 0 and r[1] > 0 and r[2] is not None,
                  f"{family}: ONNX Runtime {name}: a time, a ratio, page faults per call {r}")
        check(isinstance(ort[3], float) and ort[3] < 1e-4,
              f"{family}: ONNX Runtime fp32 against PyTorch fp32: {ort[3]} < 1e-4")
        check(isinstance(f32[3], float) and f32[3] < 1e-4,
              f"{family}: faprompt f32 against PyTorch fp32 on the same frame: {f32[3]} < 1e-4")
        check(scale and isinstance(int8[3], float) and ort[3] < int8[3] < 0.1 * scale,
              f"{family}: ONNX Runtime int8 against PyTorch fp32: {int8[3]} in "
              f"(fp32's {ort[3]}, a tenth of {scale})")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-ac", required=True)
    ap.add_argument("--case", choices=["torch", "onnx"], required=True)
    ap.add_argument("--onnx-dir", help="the ONNX Runtime setup folder (<build>/onnxruntime)")
    a = ap.parse_args()
    if a.case == "onnx" and case_onnx(a) == 77:
        return 77
    if a.case == "torch":
        case_torch(a)
    print(f"{'FAILED' if failures else 'passed'}: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
