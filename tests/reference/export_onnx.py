#!/usr/bin/python3
"""The vision encoder as users deploy it: exported to ONNX for ONNX Runtime.

Builds the vision encoder with the module structure of the authors' code
(authors_speed.py's Authors: their `encode_image` with the V-V path,
nn.MultiheadAttention before dual_start, their V-V Attention module after),
weights from the faprompt model file (models/fapfile.py), and exports it with
torch.onnx.export at one image size (fixed shapes), opset 17:

    input  "pre"     [3, S, S]  the pre-processed image (docs/SPEC.md section 1)
    output "tokens"  FAPrompt: [N+1, E], LN_post(V-V tokens) @ proj;
                     AnomalyCLIP: [L_out, N+1, E], the same after each out layer
    output "global"  [E], the standard path's class token @ proj

what authors_speed.py's vision part hands to the scoring (docs/SPEC.md
section 2). Beside PREFIX.onnx it writes a reference pair, the input
(authors_speed.py's bench frame, pre-processed) and PyTorch fp32's outputs on
it, so the runner (ort_speed.js) can report its error against PyTorch:

    PREFIX.onnx  PREFIX.int8.onnx (--int8)  PREFIX.ref.json  PREFIX.<name>.f32
    PREFIX.image.rgb

(.f32: raw little-endian float32, shapes in ref.json; .rgb: the frame, H x W
x 3 bytes, for faprompt-bench to run faprompt on and compare the same way). A rerun with the same
model file (path, size, mtime), size, frame and options reuses the files.

--int8: the rewrite onnxruntime.quantization.quantize_dynamic makes for MatMul,
done with python3-onnx since ORT's Python tools are not installable here.
See quantize_int8() for what differs.

    export_onnx.py --model M --image-size S --out PREFIX [--int8 [--per-channel] [--keep-gemm]]
                   [--width W --height H]
"""
import argparse
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
# Bump when the exported graph or the reference pair changes, so old files are redone.
EXPORT_VERSION = 2


def stamp(args):
    st = os.stat(args.model)
    return {"version": EXPORT_VERSION, "model": os.path.abspath(args.model), "model_size": st.st_size,
            "model_mtime_ns": st.st_mtime_ns, "image_size": args.image_size, "width": args.width,
            "height": args.height, "int8": args.int8, "per_channel": args.per_channel,
            "keep_gemm": args.keep_gemm}


def up_to_date(args):
    try:
        with open(args.out + ".ref.json") as f:
            ref = json.load(f)
    except (OSError, ValueError):
        return False
    files = [args.out + ".onnx", args.out + ".image.rgb"]
    files += [args.out + ".int8.onnx"] if args.int8 else []
    files += [args.out + "." + t["name"] + ".f32" for t in ref.get("tensors", [])]
    return ref.get("stamp") == stamp(args) and all(os.path.exists(p) for p in files)


# ---- the export --------------------------------------------------------------------------

def build_encoder(model_path):
    """(nn.Module pre -> (tokens, global), the reference module, its model)."""
    import torch
    from torch import nn
    sys.path.insert(0, HERE)
    import authors_speed as au

    mod, m = au.reference_of(model_path)
    authors = au.Authors(m)
    anomalyclip = mod is not au.ref
    # the text encoder's weights are not exported: let them go (peak memory)
    authors.tblocks = None
    for name in [k for k in m.w if not k.startswith("visual.")]:
        del m.w[name]

    class VisionEncoder(nn.Module):
        """Authors.vision with every tensor it reads registered, so the export
        keeps the weights as initializers (tensor identity: the tracer lifts a
        module's parameters by object, and Authors reads them through m[...])."""

        def __init__(self):
            super().__init__()
            self.conv1, self.ln_pre, self.ln_post = authors.conv1, authors.ln_pre, authors.ln_post
            self.blocks = nn.ModuleList(authors.vblocks)
            for name in ("visual.class_embedding", "visual.proj"):
                p = nn.Parameter(m.w[name], requires_grad=False)
                m.w[name] = p
                self.register_parameter(name.replace(".", "_"), p)
            self.pos = {}

        def prepare(self, size):
            grid = size // m.cfg["patch_size"]
            pos = au.ref.resized_positional_embedding(m, grid)
            authors.pos_cache[grid] = pos
            self.register_buffer("pos_" + str(grid), pos)

        def forward(self, pre):
            if anomalyclip:
                return authors.vision_layers(m, pre, m.out_layers)
            return authors.vision(m, pre)

    enc = VisionEncoder().eval()
    return enc, mod, m


def export(args):
    import numpy as np
    import torch
    from make_golden import make_test_image

    torch.set_num_threads(args.threads)
    # the tracer's notes on Python-side constants (the fixed shapes wanted here)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
    t0 = time.perf_counter()
    enc, mod, m = build_encoder(args.model)
    import faprompt_ref as ref_module
    if args.image_size % m.cfg["patch_size"]:
        raise SystemExit(f"export_onnx: image size {args.image_size} is not a multiple of the "
                         f"patch size {m.cfg['patch_size']}")
    enc.prepare(args.image_size)
    img = make_test_image(args.width, args.height, seed=0)  # authors_speed.py's bench frame
    with torch.no_grad():
        pre = ref_module.preprocess(img, args.image_size)  # both families' section 1
        tokens, glob = enc(pre)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        torch.onnx.export(enc, (pre,), args.out + ".onnx", input_names=["pre"],
                          output_names=["tokens", "global"], opset_version=17,
                          do_constant_folding=True)
    print(f"export_onnx: {args.out}.onnx ({os.path.getsize(args.out + '.onnx') / 2**20:.0f} MiB) "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    np.ascontiguousarray(img, dtype=np.uint8).tofile(args.out + ".image.rgb")
    tensors = []
    for name, t in (("pre", pre), ("tokens", tokens), ("global", glob)):
        a = np.ascontiguousarray(t.numpy(), dtype="<f4")
        a.tofile(args.out + "." + name + ".f32")
        # max_abs over what the errors are taken on: T's patch rows (row 0 is never read), g
        tensors.append({"name": name, "shape": list(a.shape),
                        "max_abs": float(np.abs(a[..., 1:, :] if name == "tokens" else a).max())})
    return tensors


# ---- int8 ---------------------------------------------------------------------------------

def quantize_int8(path_in, path_out, per_channel, keep_gemm):
    """Each MatMul whose B is a 2-D f32 initializer becomes com.microsoft
    DynamicQuantizeMatMul(A, B int8, B scale, B zero point): A is quantised
    per call to uint8 (asymmetric, per tensor) inside the op, B once here,
    symmetric int8 in [-127, 127], zero point 0, per tensor (per column with
    --per-channel).

    quantize_dynamic (QOperator format, its default for dynamic
    quantisation) writes DynamicQuantizeLinear -> MatMulInteger -> Cast ->
    Mul for each such MatMul, and ORT's graph optimiser fuses that chain into
    this same DynamicQuantizeMatMul when the session loads; writing the fused
    op directly gives the graph ORT runs. B's quantisation is its default
    (weight_type QInt8, symmetric, reduce_range off, per_channel off).
    What differs from it:
      - Gemm (the exported nn.MultiheadAttention's out_proj, on 2-D input) is
        quantised too (transB folded into B, C as the op's bias);
        quantize_dynamic leaves Gemm in f32. --keep-gemm does as it does.
      - the patch embedding's Conv stays f32 (quantize_dynamic would make it
        ConvInteger): one small layer, ~0.1% of the encoder's FLOPs.
      - rounding of B is numpy's round-half-to-even, as quantize_dynamic's.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path_in)
    g = model.graph
    # Constant nodes as initializers (the export writes some weights, e.g. a
    # second use of the same projection, as Constant nodes): same graph.
    consts = [n for n in g.node if n.op_type == "Constant" and len(n.attribute) == 1
              and n.attribute[0].name == "value"]
    for n in consts:
        t = onnx.TensorProto()
        t.CopyFrom(n.attribute[0].t)
        t.name = n.output[0]
        g.initializer.append(t)
        g.node.remove(n)
    inits = {t.name: t for t in g.initializer}
    # Identity of an initializer (the export's way of reusing a weight): read
    # the initializer itself, so each use is seen as a weight.
    outputs = {o.name for o in g.output}
    alias = {n.output[0]: n.input[0] for n in g.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    for n in [n for n in g.node if n.op_type == "Identity" and n.output[0] in alias]:
        g.node.remove(n)
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    used = {}  # initializer name -> number of nodes reading it
    for n in g.node:
        for i in n.input:
            used[i] = used.get(i, 0) + 1

    def quantise(b):  # b [K, N] f32 -> (int8 [K, N], scale, zero point)
        absmax = np.abs(b).max(axis=0) if per_channel else np.abs(b).max()
        scale = np.maximum(absmax, 1e-30).astype(np.float32) / np.float32(127)
        q = np.clip(np.round(b / scale), -127, 127).astype(np.int8)
        return q, np.asarray(scale, np.float32), np.zeros(np.shape(scale), np.int8)

    nodes, counts, drop = [], {"MatMul": 0, "Gemm": 0}, set()
    for n in g.node:
        b_name = n.input[1] if len(n.input) > 1 else None
        b_init = inits.get(b_name)
        ok = n.op_type in ("MatMul", "Gemm") and b_init is not None and len(b_init.dims) == 2
        if ok and n.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            c = inits.get(n.input[2]) if len(n.input) > 2 else None
            ok = (not keep_gemm and attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0
                  and attrs.get("beta", 1.0) == 1.0 and (len(n.input) < 3 or
                                                         (c is not None and len(c.dims) == 1)))
        if not ok:
            nodes.append(n)
            continue
        b = numpy_helper.to_array(b_init).astype(np.float32)
        if n.op_type == "Gemm" and attrs.get("transB", 0):
            b = b.T
        q, scale, zp = quantise(np.ascontiguousarray(b))
        base = n.name or n.output[0]
        names = [base + suffix for suffix in ("_B_int8", "_B_scale", "_B_zero_point")]
        for name, arr in zip(names, (q, scale, zp)):
            g.initializer.append(numpy_helper.from_array(arr, name))
        inputs = [n.input[0]] + names + ([n.input[2]] if n.op_type == "Gemm" and len(n.input) > 2 else [])
        nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, list(n.output),
                                      name=base + "_int8", domain="com.microsoft"))
        used[b_name] -= 1
        if used[b_name] == 0:
            drop.add(b_name)
        counts[n.op_type] += 1
    del g.node[:]
    g.node.extend(nodes)
    kept = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, path_out)
    print(f"export_onnx: {path_out}: {counts['MatMul']} MatMul and {counts['Gemm']} Gemm -> "
          f"DynamicQuantizeMatMul ({'per column' if per_channel else 'per tensor'}), "
          f"{os.path.getsize(path_out) / 2**20:.0f} MiB", file=sys.stderr)
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--out", required=True, help="path prefix of the files written")
    ap.add_argument("--int8", action="store_true", help="also write PREFIX.int8.onnx")
    ap.add_argument("--per-channel", action="store_true", help="int8: B scales per column")
    ap.add_argument("--keep-gemm", action="store_true", help="int8: leave Gemm in f32 (as quantize_dynamic)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    if up_to_date(args):
        print(f"export_onnx: {args.out}.onnx is up to date", file=sys.stderr)
        return 0
    tensors = export(args)
    import gc
    gc.collect()  # the PyTorch model, before the graph is loaded again
    ref = {"stamp": stamp(args), "image": {"width": args.width, "height": args.height}, "input": "pre", "outputs": ["tokens", "global"], "tensors": tensors,
           "onnx": os.path.basename(args.out) + ".onnx"}
    if args.int8:
        ref["int8"] = os.path.basename(args.out) + ".int8.onnx"
        ref["int8_rewritten"] = quantize_int8(args.out + ".onnx", args.out + ".int8.onnx",
                                              args.per_channel, args.keep_gemm)
    with open(args.out + ".ref.json", "w") as f:  # last: it marks the set complete
        json.dump(ref, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
