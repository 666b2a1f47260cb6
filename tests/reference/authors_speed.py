#!/usr/bin/python3
"""The speed anchor of faprompt-bench: docs/SPEC.md computed with the module
structure of the authors' PyTorch code, so its time is what a user running
their code on this CPU waits for.

faprompt_ref.py computes the same numbers as plainly as possible (explicit
split/merge of heads, `x @ W.t() + b`); that is right for checking
intermediates and wrong as a speed yardstick: PyTorch runs the authors'
`nn.MultiheadAttention` (fused in-projection, `baddbmm`, one softmax kernel)
and `nn.Linear` (`addmm`) faster. Here, as in the authors' CLIP:
  - layers before dual_start and every text layer are `nn.MultiheadAttention`
    blocks in sequence-first layout (L, N, E), `need_weights=False`, the text
    encoder over all context positions with its causal mask, deep prompts
    spliced in with torch.cat;
  - dual layers run one `nn.Linear` qkv, the standard and the V-V attention
    (`(q @ k^T) * scale`, softmax, `@ v`) and `proj` on both, as the authors'
    V-V `Attention` module does; the side path skips the MLP;
  - fp32, torch.no_grad(), the threads given; the static prompts are
    re-encoded every frame (the authors do; faprompt caches them).
--bf16 runs the encoders under torch.autocast("cpu", dtype=torch.bfloat16)
(their outputs back to fp32 for the scoring), as a user tuning for a CPU
with AVX512_BF16 would; its ready line then gives the vision outputs'
largest absolute difference from fp32 on the bench frame. Each frame's
JSON carries its minor page faults (getrusage ru_minflt, this process): how
much of the frame's memory the allocator returned to the OS and took back.
Everything else (pre-processing, scoring, prior, map) is faprompt_ref.py's.

AnomalyCLIP models (`family` anomalyclip, docs/SPEC.md section 6) run the same
module structure (the authors built AnomalyCLIP's code first) through
anomalyclip_ref.py's run(): the vision tower keeps the V-V state after each
out layer, and the two text features are encoded once, before the frames, as
the authors' test.py does (lines 73-76); per frame there is no text.

    authors_speed.py --check --model M [--image-size S]   # same numbers as faprompt_ref.py
    authors_speed.py --serve --model M --image-size S --threads T [--width W --height H] [--bf16]
        stdin "run N" -> one JSON line of N frames' times; "quit"
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anomalyclip_ref as acr  # noqa: E402
import faprompt_ref as ref  # noqa: E402


def _param(t):
    # shares the model's tensor (no copy): the benchmark runs several of these
    # servers side by side, and nothing writes to the weights
    return nn.Parameter(t, requires_grad=False)


class Block(nn.Module):
    """The authors' ResidualAttentionBlock: pre-LN, nn.MultiheadAttention, QuickGELU MLP."""

    def __init__(self, m, prefix, width, heads):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        for ln, name in ((self.ln_1, "ln_1."), (self.ln_2, "ln_2.")):
            ln.weight, ln.bias = _param(m[prefix + name + "weight"]), _param(m[prefix + name + "bias"])
        self.attn = nn.MultiheadAttention(width, heads)
        self.attn.in_proj_weight = _param(m[prefix + "attn.in_proj_weight"])
        self.attn.in_proj_bias = _param(m[prefix + "attn.in_proj_bias"])
        self.attn.out_proj.weight = _param(m[prefix + "attn.out_proj.weight"])
        self.attn.out_proj.bias = _param(m[prefix + "attn.out_proj.bias"])
        self.c_fc, self.c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        for lin, name in ((self.c_fc, "mlp.c_fc."), (self.c_proj, "mlp.c_proj.")):
            lin.weight, lin.bias = _param(m[prefix + name + "weight"]), _param(m[prefix + name + "bias"])
        self.heads = heads

    def mlp(self, x):
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(1.702 * h))

    def forward(self, x, mask=None):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class DualBlock(Block):
    """A layer from dual_start on: the authors' V-V Attention module in place of MHA."""

    def __init__(self, m, prefix, width, heads):
        super().__init__(m, prefix, width, heads)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.qkv.weight, self.qkv.bias = self.attn.in_proj_weight, self.attn.in_proj_bias
        self.proj.weight, self.proj.bias = self.attn.out_proj.weight, self.attn.out_proj.bias
        self.scale = (width // heads) ** -0.5

    def attention(self, x):
        x = x.transpose(0, 1)  # LND -> NLD, as the authors' module does
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a_ori = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        a_vv = ((v @ v.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x_ori = (a_ori @ v).transpose(1, 2).reshape(b, n, c)
        x_vv = (a_vv @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x_vv).transpose(0, 1), self.proj(x_ori).transpose(0, 1)

    def forward(self, y, x):
        r_vv, r_ori = self.attention(self.ln_1(x))
        x = x + r_ori
        x = x + self.mlp(self.ln_2(x))
        return y + r_vv, x  # the side path skips the MLP


class Authors:
    """The vision and text encoders as modules; vision() / encode_text() have
    faprompt_ref's signatures so ref.run() uses them."""

    def __init__(self, m):
        c = m.cfg
        self.m = m
        w, p = c["vision_width"], c["patch_size"]
        self.conv1 = nn.Conv2d(3, w, kernel_size=p, stride=p, bias=False)
        self.conv1.weight = _param(m["visual.conv1.weight"])
        self.ln_pre, self.ln_post = nn.LayerNorm(w), nn.LayerNorm(w)
        for ln, name in ((self.ln_pre, "visual.ln_pre."), (self.ln_post, "visual.ln_post.")):
            ln.weight, ln.bias = _param(m[name + "weight"]), _param(m[name + "bias"])
        self.vblocks = [(DualBlock if l >= c["dual_start"] else Block)(
            m, f"visual.transformer.resblocks.{l}.", w, c["vision_heads"])
            for l in range(c["vision_layers"])]
        tw = c["text_width"]
        self.tblocks = [Block(m, f"transformer.resblocks.{l}.", tw, c["text_heads"])
                        for l in range(c["text_layers"])]
        self.ln_final = nn.LayerNorm(tw)
        self.ln_final.weight, self.ln_final.bias = _param(m["ln_final.weight"]), _param(m["ln_final.bias"])
        lctx = c["context_length"]
        self.mask = torch.full((lctx, lctx), float("-inf")).triu(1)
        self.pos_cache = {}

    def vision(self, m, pre):
        c = m.cfg
        x = self.conv1(pre[None])  # [1, C, G, G]
        grid = x.shape[-1]
        x = x.reshape(1, x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([m["visual.class_embedding"][None, None], x], dim=1)
        if grid not in self.pos_cache:  # the authors resize it once and keep it
            self.pos_cache[grid] = ref.resized_positional_embedding(m, grid)
        x = self.ln_pre(x + self.pos_cache[grid]).permute(1, 0, 2)  # NLD -> LND
        y = None
        for l, blk in enumerate(self.vblocks):
            if l < c["dual_start"]:
                x = blk(x)
            else:
                y, x = blk(x if y is None else y, x)
        tokens = self.ln_post(y[:, 0]) @ m["visual.proj"]
        return tokens, x[0, 0] @ m["visual.proj"]

    def vision_layers(self, m, pre, out_layers):
        """AnomalyCLIP: T after each 1-based out layer (anomalyclip_ref.vision's signature)."""
        c = m.cfg
        x = self.conv1(pre[None])
        grid = x.shape[-1]
        x = x.reshape(1, x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([m["visual.class_embedding"][None, None], x], dim=1)
        if grid not in self.pos_cache:
            self.pos_cache[grid] = ref.resized_positional_embedding(m, grid)
        x = self.ln_pre(x + self.pos_cache[grid]).permute(1, 0, 2)
        y, tokens = None, []
        for l, blk in enumerate(self.vblocks):
            if l < c["dual_start"]:
                x = blk(x)
            else:
                y, x = blk(x if y is None else y, x)
            if l + 1 in out_layers:
                tokens.append(self.ln_post(y[:, 0]) @ m["visual.proj"])
        return torch.stack(tokens), x[0, 0] @ m["visual.proj"]

    def encode_text(self, m, emb, end_pos, deep=None):
        c = m.cfg
        t = c["prompt_length"]
        if deep is None:
            deep = ref.deep_prompts(m)
        x = (emb + m["positional_embedding"]).permute(1, 0, 2)  # [Lctx, B, Ct]
        for l, blk in enumerate(self.tblocks):
            if 1 <= l <= len(deep):
                ctx = deep[l - 1][:, None, :].expand(-1, x.shape[1], -1)
                x = torch.cat([x[:1], ctx, x[1 + t:]], dim=0)
            x = blk(x, self.mask)
        x = x.permute(1, 0, 2)
        last = x[torch.arange(x.shape[0]), torch.as_tensor(end_pos, dtype=torch.long)]
        return self.ln_final(last) @ m["text_projection"]

    def install(self):
        ref.vision = self.vision
        ref.encode_text = self.encode_text
        if getattr(self.m, "family", "faprompt") == acr.FAMILY:
            acr.vision = self.vision_layers
            # the authors encode AnomalyCLIP's two prompts once, before the images
            features = acr.text_features(self.m)
            acr.text_features = lambda m: features


def reference_of(path):
    """(the reference module, its model) for the model file's family."""
    if acr.model_family(path) == acr.FAMILY:
        return acr, acr.Model(path)
    return ref, ref.Model(path)


def check(args):
    """Every intermediate against faprompt_ref.py's plain computation."""
    from make_golden import make_test_image
    mod, m = reference_of(args.model)
    img = make_test_image(args.width, args.height, seed=1)
    plain = mod.run(m, img, args.image_size)
    saved = ref.vision, ref.encode_text, acr.vision, acr.text_features
    Authors(m).install()
    try:
        fast = mod.run(m, img, args.image_size)
    finally:
        ref.vision, ref.encode_text, acr.vision, acr.text_features = saved
    worst = 0.0
    for k in mod.INTERMEDIATES:
        if k == "topk_index":
            same = torch.equal(plain[k], fast[k])
            print(f"{k:24s} {'same' if same else 'DIFFERENT'}")
            worst = worst if same else float("inf")
            continue
        d = (plain[k] - fast[k]).abs().max().item()
        worst = max(worst, d)
        print(f"{k:24s} max |diff| {d:.3g}")
    ok = worst <= 1e-4
    print(f"authors' module structure vs faprompt_ref: max |diff| {worst:.3g} "
          f"({'ok' if ok else 'FAIL'}, tolerance 1e-4)")
    return 0 if ok else 1


def autocast_bf16(fn):
    """fn under CPU bf16 autocast, its outputs back in fp32."""
    def run(*a, **k):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*a, **k)
        return tuple(t.float() for t in out) if isinstance(out, tuple) else out.float()
    return run


def allocator():
    """How freed memory is handled in this process (faprompt-bench sets it)."""
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return "jemalloc"
    return "glibc tuned" if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") else "glibc"


def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def serve(args):
    torch.set_num_threads(args.threads)
    from make_golden import make_test_image
    t0 = time.perf_counter()
    mod, m = reference_of(args.model)
    Authors(m).install()
    load_s = time.perf_counter() - t0
    img = make_test_image(args.width, args.height, seed=0)
    s = args.image_size or m.cfg["image_size"]
    ready = {"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "load_s": round(load_s, 3), "image_size": s, "allocator": allocator(),
             "dtype": "bf16 autocast" if args.bf16 else "fp32"}
    if args.bf16:
        vision = (lambda m, pre: acr.vision(m, pre, m.out_layers)) if mod is acr else ref.vision
        pre = ref.preprocess(img, s)
        fp32 = vision(m, pre)
        ref.vision, ref.encode_text = autocast_bf16(ref.vision), autocast_bf16(ref.encode_text)
        acr.vision = autocast_bf16(acr.vision)
        vision = (lambda m, pre: acr.vision(m, pre, m.out_layers)) if mod is acr else ref.vision
        bf16 = vision(m, pre)
        # over the patch tokens (row 0 of T is never read) and g, as the other anchors
        (t16, g16), (t32, g32) = bf16, fp32
        ready["max_abs_err"] = max((t16[..., 1:, :] - t32[..., 1:, :]).abs().max().item(),
                                   (g16 - g32).abs().max().item())
        ready["ref_max_abs"] = max(t32[..., 1:, :].abs().max().item(), g32.abs().max().item())
    mod.run(m, img, s)  # warm-up
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        frames = []
        for _ in range(int(cmd[1]) if len(cmd) > 1 else 1):
            tm = {}
            f0 = minflt()
            t = time.perf_counter()
            mod.run(m, img, s, timings=tm)
            frame_s = time.perf_counter() - t
            text_s = tm["text"] if mod is acr else tm["text_static"] + tm["text_dynamic"]
            frames.append({"frame_s": frame_s, "vision_s": tm["vision"], "text_s": text_s,
                           "minflt": minflt() - f0})
        print(json.dumps({"frames": frames}), flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--bf16", action="store_true", help="--serve: encoders under CPU bf16 autocast")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--serve", action="store_true")
    args = ap.parse_args(argv)
    with torch.no_grad():
        return check(args) if args.check else serve(args)


if __name__ == "__main__":
    sys.exit(main())
