#!/usr/bin/python3
"""PyTorch reference of docs/SPEC.md sections 1-4 (FAPrompt inference), fp32 on CPU.

Written from docs/SPEC.md alone, as plainly as possible: it is what the C core is
compared against, so it computes things the way the authors' PyTorch code does
(naive text encoder over all context positions, static prompts re-encoded
every frame) rather than the way the core optimises them.

Loads the same model file as the core (models/README.md) through
models/fapfile.py. Everything is torch.float32; nothing uses float64.

    run(model, image_u8, image_size, sigma) -> {intermediate name: tensor}
    faprompt_ref.py --bench --model M --image-size S --frames F --threads T

For timing the authors' way of computing on a GPU (tests/gpu/run.sh), the
same code runs on another device (--device cuda) and optionally under fp16
autocast (--autocast), as configure() sets; the CPU fp32 path that the
tests compare against is unchanged by that.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import fapfile  # noqa: E402

TAU = 0.07
_DEVICE = torch.device("cpu")  # where weights and activations live (configure())
_AUTOCAST = False               # fp16 autocast (CUDA timing runs only)


def configure(device="cpu", autocast=False):
    """Device and autocast for Model() and run(); the default is the fp32 CPU reference."""
    global _DEVICE, _AUTOCAST
    _DEVICE = torch.device(device)
    _AUTOCAST = bool(autocast)


def _sync():
    if _DEVICE.type == "cuda":
        torch.cuda.synchronize()
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

INT_KEYS = [
    "image_size", "patch_size", "vision_grid", "vision_width", "vision_heads",
    "vision_layers", "dual_start", "embed_dim", "text_width", "text_heads",
    "text_layers", "context_length", "n_pos", "n_neg", "n_prompts", "top_m",
    "prompt_depth", "prompt_length", "prior_hidden", "end_pos_normal",
    "end_pos_abnormal",
]

# Names and order of core/fap.h's intermediates.
INTERMEDIATES = [
    "preprocessed", "tokens", "global", "text_features", "text_normal",
    "text_abnormal", "map1", "topk_index", "prior", "text_features_dynamic",
    "text_abnormal_dynamic", "map2", "image_text_prob", "map_raw", "map", "score",
]


class Model:
    """Config from __metadata__ plus every tensor widened to float32."""

    def __init__(self, path):
        arrays, md = fapfile.read(path)
        if md.get("format") != "faprompt":
            raise ValueError(f"{path}: not a faprompt model")
        self.path = path
        self.cfg = {k: int(md[k]) for k in INT_KEYS}
        self.cfg["sigma"] = float(md["sigma"])
        # copy out of the memory map once; f16/bf16 are widened exactly
        self.w = {k: torch.from_numpy(np.array(v, dtype=np.float32)).to(_DEVICE)
                  for k, v in arrays.items()}

    def __getitem__(self, name):
        return self.w[name]


# ---- building blocks -----------------------------------------------------------

def layer_norm(x, m, prefix):
    return F.layer_norm(x, (x.shape[-1],), m[prefix + "weight"], m[prefix + "bias"], eps=1e-5)


def linear(x, m, prefix):
    return x @ m[prefix + "weight"].t() + m[prefix + "bias"]


def quick_gelu(z):
    return z * torch.sigmoid(1.702 * z)


def split_heads(t, heads):
    """[..., n, C] -> [..., H, n, D]"""
    *lead, n, c = t.shape
    return t.reshape(*lead, n, heads, c // heads).transpose(-3, -2)


def merge_heads(t):
    """[..., H, n, D] -> [..., n, C]"""
    *lead, h, n, d = t.shape
    return t.transpose(-3, -2).reshape(*lead, n, h * d)


def attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(D) + mask) v over [..., H, n, D]."""
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask
    return torch.softmax(s, dim=-1) @ v


def block(x, m, prefix, heads, mask=None, want_v=False):
    """Standard pre-LN residual block; optionally also returns the per-head v."""
    h = layer_norm(x, m, prefix + "ln_1.")
    qkv = h @ m[prefix + "attn.in_proj_weight"].t() + m[prefix + "attn.in_proj_bias"]
    q, k, v = (split_heads(t, heads) for t in qkv.chunk(3, dim=-1))
    a = merge_heads(attention(q, k, v, mask))
    x = x + linear(a, m, prefix + "attn.out_proj.")
    x = x + linear(quick_gelu(linear(layer_norm(x, m, prefix + "ln_2."), m, prefix + "mlp.c_fc.")),
                   m, prefix + "mlp.c_proj.")
    return (x, v) if want_v else x


def norm(v):
    return v / v.norm(dim=-1, keepdim=True)


# ---- §1 pre-processing --------------------------------------------------------------

def preprocess(image_u8, size):
    """uint8 HxWx3 RGB -> normalised float [3, S, S].

    torch's antialiased bicubic uses Keys a = -0.5 and widens the kernel by the
    shrink factor when shrinking, as PIL does; it equals PIL's float ('F' mode)
    resize. Not rounded to 8 bits (docs/SPEC.md section 1.3) and not clamped: bicubic may
    overshoot [0, 1] slightly at hard edges; PIL's 8-bit path clamps after each
    of its two passes, which a float pipeline does not reproduce.
    """
    img = np.ascontiguousarray(image_u8, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8, got {img.shape}")
    x = torch.from_numpy(img).to(_DEVICE).permute(2, 0, 1)[None].to(torch.float32) / 255.0
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)[0]
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=_DEVICE)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=_DEVICE)[:, None, None]
    return (x - mean) / std


# ---- §2 vision encoder ----------------------------------------------------------------

def resized_positional_embedding(m, grid):
    pos = m["visual.positional_embedding"]
    g0, c = m.cfg["vision_grid"], pos.shape[1]
    if grid == g0:
        return pos
    g = pos[1:].reshape(g0, g0, c).permute(2, 0, 1)[None]  # [1, C, G0, G0]
    g = F.interpolate(g, size=(grid, grid), mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], g[0].reshape(c, grid * grid).t()], dim=0)


def vision(m, pre):
    """pre [3, S, S] -> (T [N+1, E], g [E])."""
    cfg = m.cfg
    p, heads, d0 = cfg["patch_size"], cfg["vision_heads"], cfg["dual_start"]
    patches = F.conv2d(pre[None], m["visual.conv1.weight"], stride=p)[0]  # [C, G, G]
    c, grid = patches.shape[0], patches.shape[1]
    x = torch.cat([m["visual.class_embedding"][None], patches.reshape(c, grid * grid).t()], dim=0)
    x = x + resized_positional_embedding(m, grid)
    x = layer_norm(x, m, "visual.ln_pre.")
    y = None
    for l in range(cfg["vision_layers"]):
        prefix = f"visual.transformer.resblocks.{l}."
        if l == d0:
            y = x  # the side path starts from the standard path's input to layer D0
        x_new, v = block(x, m, prefix, heads, want_v=True)
        if l >= d0:
            a_vv = merge_heads(attention(v, v, v))
            y = y + linear(a_vv, m, prefix + "attn.out_proj.")
        x = x_new
    tokens = layer_norm(y, m, "visual.ln_post.") @ m["visual.proj"]
    glob = x[0] @ m["visual.proj"]  # no LN_post: a deliberate quirk of the authors' code
    return tokens, glob


# ---- §3 text encoder -------------------------------------------------------------------

def prompt_embeddings(m, ctx_neg):
    """The K+1 prompt embeddings [K+1, Lctx, Ct]: row 0 normal, rows 1..K abnormal.

    ctx_neg [K, n_neg, Ct] is the abnormal tokens as used (static or + b).
    """
    pl = "prompt_learner."
    k = m.cfg["n_prompts"]
    ctx_pos = m[pl + "ctx_pos"][0, 0]  # [n_pos, Ct]
    normal = torch.cat([m[pl + "token_prefix_pos"][0, 0], ctx_pos, m[pl + "token_suffix_pos"][0, 0]])
    abnormal = torch.cat([
        m[pl + "token_prefix_neg"][0],                      # [K, 1, Ct]
        ctx_pos[None].expand(k, -1, -1),                   # [K, n_pos, Ct]
        ctx_neg,                                           # [K, n_neg, Ct]
        m[pl + "token_suffix_neg"][0],                     # [K, rest, Ct]
    ], dim=1)
    return torch.cat([normal[None], abnormal], dim=0)


def deep_prompts(m):
    """Deep prompts rounded to fp16 as the authors' .half() cast does."""
    n = m.cfg["prompt_depth"] - 1
    return [m[f"prompt_learner.compound_prompts_text.{j}"].half().float() for j in range(n)]


def encode_text(m, emb, end_pos, deep=None):
    """Naive CLIP text encoder: all positions, causal mask.

    emb [B, Lctx, Ct], end_pos [B] (int) -> f [B, E].
    deep: list of depth-1 tensors [t, Ct] (already fp16-rounded) overwriting
    positions 1..t at layers 1..depth-1.
    """
    cfg = m.cfg
    lctx, t = cfg["context_length"], cfg["prompt_length"]
    if deep is None:
        deep = deep_prompts(m)
    mask = torch.full((lctx, lctx), float("-inf"), device=_DEVICE).triu(1)
    x = emb + m["positional_embedding"]
    for l in range(cfg["text_layers"]):
        if 1 <= l <= len(deep):
            x = x.clone()
            x[:, 1:1 + t] = deep[l - 1]
        x = block(x, m, f"transformer.resblocks.{l}.", cfg["text_heads"], mask=mask)
    end = torch.as_tensor(end_pos, dtype=torch.long, device=_DEVICE)
    last = x[torch.arange(x.shape[0], device=_DEVICE), end]
    return layer_norm(last, m, "ln_final.") @ m["text_projection"]


def end_positions(m):
    k = m.cfg["n_prompts"]
    return [m.cfg["end_pos_normal"]] + [m.cfg["end_pos_abnormal"]] * k


def static_text(m):
    """f [K+1, E]: normal prompt then the K abnormality prompts with ctx_neg as stored."""
    emb = prompt_embeddings(m, m["prompt_learner.ctx_neg"][0])
    return encode_text(m, emb, end_positions(m))


def dynamic_text(m, b):
    """f' [K, E]: the K abnormality prompts with a + b (the normal prompt is unchanged)."""
    emb = prompt_embeddings(m, m["prompt_learner.ctx_neg"][0] + b)[1:]
    return encode_text(m, emb, end_positions(m)[1:])


# ---- §4 scoring -----------------------------------------------------------------------------

def two_way(p, t_n, t_a):
    """softmax([p.t_n, p.t_a] / tau)[1] for each row of p."""
    logits = torch.stack([p @ t_n, p @ t_a], dim=-1) / TAU
    return torch.softmax(logits, dim=-1)[..., 1]


def prior(m, s):
    pl = "prompt_learner.patch_meta_net."
    return linear(torch.relu(linear(s, m, pl + "linear1.")), m, pl + "linear2.")


def upsample(a, size):
    g = int(round(math.sqrt(a.shape[0])))
    return F.interpolate(a.reshape(1, 1, g, g), size=(size, size), mode="bilinear",
                         align_corners=False)[0, 0]


def half_sample_symmetric_index(n, radius):
    """Indices of [-r, n-1+r] mirrored half-sample (d c b a | a b c d | d c b a).

    Periodic with period 2n, so it also holds when the radius exceeds n.
    """
    i = torch.arange(-radius, n + radius, device=_DEVICE) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_kernel(sigma):
    radius = int(math.floor(4.0 * sigma + 0.5))
    k = torch.arange(-radius, radius + 1, dtype=torch.float32, device=_DEVICE)
    w = torch.exp(-0.5 * (k / sigma) ** 2)
    return w / w.sum(), radius


def gaussian_smooth(img, sigma):
    """Separable Gaussian of a 2-D map, truncated at floor(4 sigma + 0.5)."""
    if sigma <= 0:
        return img.clone()
    w, r = gaussian_kernel(sigma)
    out = img
    for dim in (0, 1):
        n = out.shape[dim]
        padded = out.index_select(dim, half_sample_symmetric_index(n, r))
        # conv1d over the last axis: move the smoothed axis there and back
        rows = padded.movedim(dim, -1).reshape(-1, 1, n + 2 * r)
        res = F.conv1d(rows, w.view(1, 1, -1))
        out = res.reshape(padded.movedim(dim, -1).shape[:-1] + (n,)).movedim(-1, dim)
    return out.contiguous()


def run(model, image_u8, image_size=None, sigma=None, timings=None):
    """Runs docs/SPEC.md on one frame; returns every core/fap.h intermediate by name.

    timings (optional dict) receives seconds per part: preprocess, vision,
    text_static, prior, text_dynamic, map.
    """
    m, cfg = model, model.cfg
    s = cfg["image_size"] if image_size is None else int(image_size)
    sigma = cfg["sigma"] if sigma is None or sigma < 0 else float(sigma)
    if s % cfg["patch_size"]:
        raise ValueError(f"image size {s} is not a multiple of the patch size")
    tick = [time.perf_counter()]

    def lap(name):
        _sync()
        now = time.perf_counter()
        if timings is not None:
            timings[name] = now - tick[0]
        tick[0] = now

    out = {}
    amp = (torch.autocast(device_type=_DEVICE.type, dtype=torch.float16) if _AUTOCAST
           else contextlib.nullcontext())
    with torch.no_grad(), amp:
        out["preprocessed"] = preprocess(image_u8, s)
        lap("preprocess")
        tokens, glob = vision(m, out["preprocessed"])
        out["tokens"], out["global"] = tokens, glob
        lap("vision")

        # static text features: re-encoded every frame, as the authors' code does
        f = static_text(m)
        out["text_features"] = f
        t_n = norm(f[0])
        t_a = norm(f[1:].mean(dim=0))  # mean of the unnormalised features
        out["text_normal"], out["text_abnormal"] = t_n, t_a
        lap("text_static")

        p = norm(tokens)
        g_hat = norm(glob)
        a1 = two_way(p[1:], t_n, t_a)
        out["map1"] = a1
        top = torch.topk(a1, cfg["top_m"], sorted=True).indices  # descending A1
        out["topk_index"] = top.to(torch.int32)
        b = prior(m, p[1:][top].reshape(-1))
        out["prior"] = b
        lap("prior")

        f_dyn = dynamic_text(m, b)
        out["text_features_dynamic"] = f_dyn
        t_a_dyn = norm(f_dyn.mean(dim=0))
        out["text_abnormal_dynamic"] = t_a_dyn
        lap("text_dynamic")

        a2 = two_way(p[1:], t_n, t_a_dyn)
        out["map2"] = a2
        q = two_way(g_hat, t_n, t_a_dyn)
        out["image_text_prob"] = q.reshape(1)
        map_raw = (upsample(a1, s) + upsample(a2, s)) / 2
        out["map_raw"] = map_raw
        out["map"] = gaussian_smooth(map_raw, sigma)
        score = 0.5 * (q + (2 * a1.max() + a2.max()) / 3)
        out["score"] = score.reshape(1)
        lap("map")
    if _AUTOCAST:
        out = {k: v if k == "topk_index" else v.float() for k, v in out.items()}
    for k, v in out.items():
        assert v.dtype == (torch.int32 if k == "topk_index" else torch.float32), k
    return out


# ---- benchmark --------------------------------------------------------------------------------

def _faprompt_parts(model, runs, med):
    """bench()'s FAPrompt-specific entries: the text and the other parts of its run()."""
    return {
        "text_s": statistics.median(r["text_static"] + r["text_dynamic"] for r in runs),
        "text_static_s": med("text_static"),
        "text_dynamic_s": med("text_dynamic"),
        "other_s": statistics.median(
            r["preprocess"] + r["prior"] + r["map"] for r in runs),
    }


def bench(args, load=None, run_frame=None, parts=_faprompt_parts):
    """Times frames of a reference and prints one JSON line. load(path) -> model and
    run_frame(model, image, S, sigma, timings=) are the reference's (default this
    file's); parts(model, runs, med) gives its own entries (anomalyclip_ref.py)."""
    load, run_frame = load or Model, run_frame or run
    torch.set_num_threads(args.threads)
    configure(args.device, args.autocast)
    t0 = time.perf_counter()
    model = load(args.model)
    load_s = time.perf_counter() - t0
    from make_golden import make_test_image  # same directory
    img = make_test_image(args.width, args.height, seed=0)
    s = args.image_size or model.cfg["image_size"]
    runs = []
    for i in range(args.warmup + args.frames):
        tm = {}
        _sync()
        t = time.perf_counter()
        run_frame(model, img, s, args.sigma, timings=tm)
        _sync()
        tm["frame"] = time.perf_counter() - t
        if i >= args.warmup:
            runs.append(tm)

    def med(key):
        return statistics.median(r[key] for r in runs)

    result = {
        "model": os.path.basename(args.model),
        "image_size": s,
        "input": [args.width, args.height],
        "frames": args.frames,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 4),
        "frame_s": med("frame"),
        "vision_s": med("vision"),
        **parts(model, runs, med),
        "torch": torch.__version__,
        "device": str(_DEVICE),
        "autocast_fp16": _AUTOCAST,
    }
    if _DEVICE.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(_DEVICE)
        result["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(_DEVICE) / 2**20, 1)
    print(json.dumps(result))


def main(argv=None):
    ap = argparse.ArgumentParser(description="FAPrompt PyTorch reference (docs/SPEC.md)")
    ap.add_argument("--bench", action="store_true", help="time frames, print one JSON line")
    ap.add_argument("--model", required=True)
    ap.add_argument("--image-size", type=int, default=0, help="S (0 = the model's)")
    ap.add_argument("--sigma", type=float, default=-1.0, help="< 0 = the model's")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--width", type=int, default=640, help="bench input width")
    ap.add_argument("--height", type=int, default=480, help="bench input height")
    ap.add_argument("--device", default="cpu", help="torch device for --bench (cpu, cuda, cuda:1)")
    ap.add_argument("--autocast", action="store_true",
                    help="--bench under fp16 autocast (CUDA), as a GPU deployment would run")
    args = ap.parse_args(argv)
    if args.bench:
        bench(args)
        return
    # without --bench: run one frame of the test image and print the score
    model = Model(args.model)
    from make_golden import make_test_image
    out = run(model, make_test_image(args.width, args.height, seed=0),
              args.image_size or None, args.sigma)
    print(json.dumps({"score": float(out["score"][0]),
                      "topk_index": out["topk_index"].tolist()}))


if __name__ == "__main__":
    main()
