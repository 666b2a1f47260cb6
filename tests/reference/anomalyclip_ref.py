#!/usr/bin/python3
"""PyTorch reference of AnomalyCLIP inference (docs/SPEC.md section 6), fp32 on CPU.

AnomalyCLIP (Zhou et al., ICLR 2024), written from the authors' code
(github.com/zqhang/AnomalyCLIP at 45ed4dd) with its structure where that is
practical. Citations: AC.py = AnomalyCLIP_lib/AnomalyCLIP.py, ML.py =
AnomalyCLIP_lib/model_load.py, PE.py = prompt_ensemble.py, test.py.

  - vision: pre-LN blocks up to dual_start, then blocks whose attention is
    the authors' DPAM `Attention` (AC.py:58-94), returning both the V-V result
    and the standard one; the block (AC.py:135-174) keeps the two paths
    [y, x_ori]; the stored state after each out layer is the V-V path y
    (`x[0].clone()`, AC.py:284-296), projected as LN_post(y) @ proj
    (AC.py:380-385); the global feature is x_ori[0] @ proj without LN_post
    (AC.py:387);
  - text: the prompt learner's [prefix; ctx; suffix] (PE.py:218-264), the
    text encoder over all context positions with the causal mask
    (AC.py:466-472, 497-515), the deep prompts (fp16-rounded) overwriting
    positions 1..t at layers 1..depth-1 (AC.py:232-254);
  - scoring: test.py:89-111 and ML.py:222-235, a map per out layer,
    (up(P1) + 1 - up(P0)) / 2 with both channels upsampled, summed over the
    layers, then the Gaussian of the map.

Only the parts docs/SPEC.md section 6 calls identical to FAPrompt come from
faprompt_ref.py (file loading, pre-processing, positional-embedding resize,
LayerNorm/QuickGELU/linear helpers, the Gaussian). Everything is
torch.float32; nothing uses float64.

Model file: models/README.md's format with __metadata__ `family` =
"anomalyclip" and `out_layers` = comma-separated 1-based vision layers, e.g.
"24" or "6,12,18,24"; n_prompts 1, no patch_meta_net.

    run(model, image_u8, image_size, sigma) -> {intermediate name: tensor}
    anomalyclip_ref.py --model M [--image-size S]         # score of the test image
    anomalyclip_ref.py --bench --model M --image-size S --frames F --threads T
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import fapfile  # noqa: E402
import faprompt_ref as fr  # noqa: E402
from faprompt_ref import (  # noqa: E402  (the parts docs/SPEC.md section 6 calls identical)
    gaussian_smooth, layer_norm, linear, preprocess, quick_gelu,
    resized_positional_embedding)

FAMILY = "anomalyclip"
TAU = 0.07  # ML.py:235, test.py:94 (CLIP's logit_scale is unused)

# Names and order of the intermediates (golden files, the core's parity test).
INTERMEDIATES = [
    "preprocessed", "tokens", "global", "text_features", "text_normal",
    "text_abnormal", "layer_maps", "image_text_prob", "map_raw", "map_sum", "map",
    "score",
]


def _dev():
    return fr._DEVICE  # faprompt_ref.configure() sets it for both references


def model_family(path):
    """`family` of a model file's __metadata__ (absent = "faprompt")."""
    _, md, _ = fapfile.read_header(path)
    return md.get("family", "faprompt")


def parse_out_layers(text, cfg):
    """"6,12,18,24" -> [6, 12, 18, 24], checked: increasing, in [dual_start+1, vision_layers]."""
    try:
        layers = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"out_layers {text!r}: not a comma-separated list of integers")
    lo, hi = cfg["dual_start"] + 1, cfg["vision_layers"]
    if not layers or any(not lo <= l <= hi for l in layers):
        raise ValueError(f"out_layers {text!r}: each must be in [{lo}, {hi}] "
                         "(1-based layers of the V-V path)")
    if any(a >= b for a, b in zip(layers, layers[1:])):
        raise ValueError(f"out_layers {text!r}: not strictly increasing")
    return layers


class Model(fr.Model):
    """faprompt_ref.Model (config + tensors as float32) plus family and out_layers."""

    def __init__(self, path):
        super().__init__(path)
        _, md, _ = fapfile.read_header(path)
        self.family = md.get("family", "faprompt")
        if self.family != FAMILY:
            raise ValueError(f"{path}: family {self.family!r}, not {FAMILY!r}")
        if "out_layers" not in md:
            raise ValueError(f"{path}: no out_layers in __metadata__")
        self.out_layers = parse_out_layers(md["out_layers"], self.cfg)
        cfg, pl = self.cfg, "prompt_learner."
        ct = cfg["text_width"]
        if cfg["n_prompts"] != 1:
            raise ValueError(f"{path}: n_prompts {cfg['n_prompts']}, AnomalyCLIP has 1")
        expect = {
            "ctx_pos": (1, 1, cfg["n_pos"], ct), "ctx_neg": (1, 1, cfg["n_neg"], ct),
            "token_prefix_pos": (1, 1, 1, ct), "token_prefix_neg": (1, 1, 1, ct),
            "token_suffix_pos": (1, 1, cfg["context_length"] - 1 - cfg["n_pos"], ct),
            "token_suffix_neg": (1, 1, cfg["context_length"] - 1 - cfg["n_neg"], ct),
        }
        for j in range(cfg["prompt_depth"] - 1):
            expect[f"compound_prompts_text.{j}"] = (cfg["prompt_length"], ct)
        for name, shape in expect.items():
            t = self.w.get(pl + name)
            if t is None or tuple(t.shape) != shape:
                got = None if t is None else tuple(t.shape)
                raise ValueError(f"{path}: {pl + name} has shape {got}, expected {shape}")


# ---- vision (AC.py:58-94, 112-174, 284-296, 323-390) ----------------------------------------

def _heads(t, heads):
    """[n, C] -> [H, n, D]"""
    n, c = t.shape
    return t.reshape(n, heads, c // heads).transpose(0, 1)


def _merge(t):
    """[H, n, D] -> [n, C]"""
    h, n, d = t.shape
    return t.transpose(0, 1).reshape(n, h * d)


def multihead_attention(m, prefix, h, heads, mask=None):
    """nn.MultiheadAttention(h, h, h, attn_mask=mask)[0] on [n, C] (AC.py:133)."""
    qkv = linear(h, m, prefix + "in_proj_")  # in_proj_weight / in_proj_bias
    q, k, v = (_heads(t, heads) for t in qkv.chunk(3, dim=-1))
    s = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # torch scales q first
    if mask is not None:
        s = s + mask
    return linear(_merge(torch.softmax(s, dim=-1) @ v), m, prefix + "out_proj.")


def dpam_attention(m, prefix, h, heads):
    """The authors' V-V `Attention.forward` (AC.py:71-94) -> [x (V-V), x_ori (standard)].

    qkv is the block's in_proj, proj its out_proj, bias included (AC.py:348-352).
    """
    qkv = linear(h, m, prefix + "in_proj_")
    q, k, v = (_heads(t, heads) for t in qkv.chunk(3, dim=-1))
    scale = (q.shape[-1]) ** -0.5
    attn_ori = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
    k = v  # replace k & q by v (AC.py:81-83)
    q = k
    attn = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
    x_ori = _merge(attn_ori @ v)
    x = _merge(attn @ v)
    x = linear(x, m, prefix + "out_proj.")
    x_ori = linear(x_ori, m, prefix + "out_proj.")
    return [x, x_ori]


def mlp(m, prefix, x):
    return linear(quick_gelu(linear(x, m, prefix + "mlp.c_fc.")), m, prefix + "mlp.c_proj.")


def vision_block(m, layer, x, heads, dual):
    """ResidualAttentionBlock.forward (AC.py:135-174), ffn False.

    Standard block, or a dual one (its attention the DPAM Attention) whose
    state is the pair [y (V-V path), x_ori (standard path)]. The authors update
    y in place (`x += x_res`); here it is a new tensor, which is what their
    `.clone()` of the stored states (AC.py:293) amounts to.
    """
    prefix = f"visual.transformer.resblocks.{layer}."
    if not dual:  # single path before D0 (AC.py:170-173)
        x = x + multihead_attention(m, prefix + "attn.", layer_norm(x, m, prefix + "ln_1."), heads)
        return x + mlp(m, prefix, layer_norm(x, m, prefix + "ln_2."))
    if isinstance(x, list):  # AC.py:140-149
        y, x_ori = x
        y_res, x_ori_res = dpam_attention(m, prefix + "attn.",
                                          layer_norm(x_ori, m, prefix + "ln_1."), heads)
        x_ori = x_ori + x_ori_res
        x_ori = x_ori + mlp(m, prefix, layer_norm(x_ori, m, prefix + "ln_2."))
        y = y + y_res  # skip ffn for the new path
        return [y, x_ori]
    # start of the dual path (AC.py:161-168): y starts from the block input
    y_res, x_ori_res = dpam_attention(m, prefix + "attn.", layer_norm(x, m, prefix + "ln_1."),
                                      heads)
    x_ori = x + x_ori_res
    x_ori = x_ori + mlp(m, prefix, layer_norm(x_ori, m, prefix + "ln_2."))
    y = x + y_res
    return [y, x_ori]


def vision(m, pre, out_layers):
    """pre [3, S, S] -> (T [L, N+1, E], g [E]) (VisionTransformer.forward, AC.py:356-387).

    The last vision_layers - dual_start blocks are dual (DAPM_replace, AC.py:345-353,
    with DPAM_layer = vision_layers - dual_start + 1). Out layers are 1-based; a
    state stored from a layer before the dual path is the standard one
    (AC.py:294-295), which the model file's constraint on out_layers excludes.
    The positional embedding is resized from the file's table on every call
    (the authors overwrite theirs, AC.py:370: see docs/SPEC.md section 6.2).
    """
    cfg = m.cfg
    p, heads, d0 = cfg["patch_size"], cfg["vision_heads"], cfg["dual_start"]
    x = F.conv2d(pre[None], m["visual.conv1.weight"], stride=p)[0]  # [C, G, G]
    c, grid = x.shape[0], x.shape[1]
    x = x.reshape(c, grid * grid).t()
    x = torch.cat([m["visual.class_embedding"][None], x], dim=0)  # [N+1, C]
    x = x + resized_positional_embedding(m, grid)
    x = layer_norm(x, m, "visual.ln_pre.")
    out_tokens = []
    for idx in range(1, cfg["vision_layers"] + 1):  # AnomalyCLIP_forward (AC.py:284-296)
        x = vision_block(m, idx - 1, x, heads, dual=idx - 1 >= d0)
        if idx in out_layers:
            out_tokens.append(x[0] if isinstance(x, list) else x)
    x_ori = x[1] if isinstance(x, list) else x
    tokens = torch.stack([layer_norm(t, m, "visual.ln_post.") @ m["visual.proj"]
                          for t in out_tokens])
    glob = x_ori[0] @ m["visual.proj"]  # no LN_post (AC.py:387)
    return tokens, glob


# ---- prompts and text encoder (PE.py:218-264, AC.py:199-254, 497-515) ---------------------------

def prompt_learner(m):
    """AnomalyCLIP_PromptLearner.forward (PE.py:218-264) with cls_id None.

    -> (prompts [2, Lctx, Ct] normal first, end positions [2], deep prompts as stored).
    The end positions are the file's (the authors take the argmax of the token ids).
    """
    pl = "prompt_learner."
    prompts_pos = torch.cat([m[pl + "token_prefix_pos"], m[pl + "ctx_pos"],
                             m[pl + "token_suffix_pos"]], dim=2)
    prompts_neg = torch.cat([m[pl + "token_prefix_neg"], m[pl + "ctx_neg"],
                             m[pl + "token_suffix_neg"]], dim=2)
    _, _, l, d = prompts_pos.shape
    prompts_pos = prompts_pos.reshape(-1, l, d)
    _, _, l, d = prompts_neg.shape
    prompts_neg = prompts_neg.reshape(-1, l, d)
    prompts = torch.cat([prompts_pos, prompts_neg], dim=0)
    end_pos = [m.cfg["end_pos_normal"], m.cfg["end_pos_abnormal"]]
    deep = [m[pl + f"compound_prompts_text.{j}"] for j in range(m.cfg["prompt_depth"] - 1)]
    return prompts, end_pos, deep


def text_block(m, layer, x, deep, counter, mask):
    """ResidualAttentionBlock_learnable_token.forward, single path (AC.py:232-254).

    x [B, Lctx, Ct]. Layer 0 is skipped (first_layer); then, while deep prompts
    remain, positions 1..t are replaced by deep[counter] rounded to fp16 (`.half()`;
    torch.cat promotes back to fp32).
    """
    prefix = f"transformer.resblocks.{layer}."
    t = m.cfg["prompt_length"]
    if layer != 0 and not counter > len(deep) - 1:
        textual_context = deep[counter].half().float().expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :1], textual_context, x[:, 1 + t:]], dim=1)
        counter += 1
    heads = m.cfg["text_heads"]
    att = torch.stack([multihead_attention(m, prefix + "attn.", h, heads, mask)
                       for h in layer_norm(x, m, prefix + "ln_1.")])
    x = x + att
    x = x + mlp(m, prefix, layer_norm(x, m, prefix + "ln_2."))
    return x, counter


def encode_text_learn(m, prompts, end_pos, deep):
    """AnomalyCLIP.encode_text_learn (AC.py:497-515) -> f [B, E]."""
    lctx = m.cfg["context_length"]
    mask = torch.empty(lctx, lctx, device=_dev()).fill_(float("-inf")).triu_(1)  # AC.py:466-472
    x = prompts + m["positional_embedding"]
    counter = 0
    for layer in range(m.cfg["text_layers"]):
        x, counter = text_block(m, layer, x, deep, counter, mask)
    x = layer_norm(x, m, "ln_final.")
    end = torch.as_tensor(end_pos, dtype=torch.long, device=_dev())
    return x[torch.arange(x.shape[0], device=_dev()), end] @ m["text_projection"]


def text_features(m):
    """test.py:73-76 -> (f [2, E] unnormalised, t_n [E], t_a [E])."""
    prompts, end_pos, deep = prompt_learner(m)
    f = encode_text_learn(m, prompts, end_pos, deep).float()
    t = f / f.norm(dim=-1, keepdim=True)
    return f, t[0], t[1]


# ---- scoring (test.py:89-111, ML.py:222-235) -----------------------------------------------------

def compute_similarity(image_features, text_features):
    """ML.py:230-235: softmax([p.t_n, p.t_a] / 0.07) per row; [n, E], [2, E] -> [n, 2]."""
    n_i, c = image_features.shape
    n_t = text_features.shape[0]
    feats = image_features.reshape(n_i, 1, c) * text_features.reshape(1, n_t, c)
    similarity = feats.sum(-1)
    return (similarity / TAU).softmax(-1)


def get_similarity_map(sm, size):
    """ML.py:222-227: [N, 2] -> [S, S, 2], bilinear, align_corners False, no antialias."""
    side = int(sm.shape[0] ** 0.5)
    sm = sm.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    sm = F.interpolate(sm, (size, size), mode="bilinear", align_corners=False)
    return sm.permute(0, 2, 3, 1)[0]


def run(model, image_u8, image_size=None, sigma=None, timings=None):
    """AnomalyCLIP on one frame; returns every intermediate of INTERMEDIATES by name.

    timings (optional dict) receives seconds per part: preprocess, vision, text, map.
    """
    m, cfg = model, model.cfg
    s = cfg["image_size"] if image_size is None else int(image_size)
    sigma = cfg["sigma"] if sigma is None or sigma < 0 else float(sigma)
    if s % cfg["patch_size"]:
        raise ValueError(f"image size {s} is not a multiple of the patch size")
    tick = [time.perf_counter()]

    def lap(name):
        fr._sync()
        now = time.perf_counter()
        if timings is not None:
            timings[name] = now - tick[0]
        tick[0] = now

    out = {}
    amp = (torch.autocast(device_type=_dev().type, dtype=torch.float16) if fr._AUTOCAST
           else contextlib.nullcontext())
    with torch.no_grad(), amp:
        out["preprocessed"] = preprocess(image_u8, s)
        lap("preprocess")
        tokens, glob = vision(m, out["preprocessed"], m.out_layers)
        out["tokens"], out["global"] = tokens, glob
        lap("vision")

        # static text features: computed once per model by the authors (test.py:73-76),
        # here every frame
        f, t_n, t_a = text_features(m)
        out["text_features"], out["text_normal"], out["text_abnormal"] = f, t_n, t_a
        t = torch.stack([t_n, t_a])
        lap("text")

        # image score (test.py:91-95)
        g_hat = glob / glob.norm(dim=-1, keepdim=True)
        q = ((g_hat @ t.t()) / TAU).softmax(-1)[1]
        out["image_text_prob"] = q.reshape(1)
        # a map per out layer (test.py:97-105), summed (107-109)
        layer_maps, anomaly_map_list = [], []
        for patch_feature in tokens:
            patch_feature = patch_feature / patch_feature.norm(dim=-1, keepdim=True)
            similarity = compute_similarity(patch_feature, t)
            layer_maps.append(similarity[1:, 1])
            similarity_map = get_similarity_map(similarity[1:, :], s)
            anomaly_map_list.append((similarity_map[..., 1] + 1 - similarity_map[..., 0]) / 2.0)
        out["layer_maps"] = torch.stack(layer_maps)
        map_raw = torch.stack(anomaly_map_list).sum(dim=0)
        out["map_raw"] = map_raw
        out["map_sum"] = gaussian_smooth(map_raw, sigma)  # test.py:111, range [0, L]
        out["map"] = out["map_sum"] / len(anomaly_map_list)
        out["score"] = q.reshape(1)  # pr_sp (test.py:110): no map term
        lap("map")
    out = {k: out[k] for k in INTERMEDIATES}
    if fr._AUTOCAST:
        out = {k: v.float() for k, v in out.items()}
    for k, v in out.items():
        assert v.dtype == torch.float32, k
    return out


# ---- benchmark --------------------------------------------------------------------------------

def bench(args):
    """faprompt_ref's --bench on this reference: one JSON line."""
    def parts(model, runs, med):
        return {"family": FAMILY, "out_layers": model.out_layers, "text_s": med("text"),
                "other_s": statistics.median(r["preprocess"] + r["map"] for r in runs)}
    fr.bench(args, Model, run, parts)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="AnomalyCLIP PyTorch reference (docs/SPEC.md section 6)")
    ap.add_argument("--bench", action="store_true", help="time frames, print one JSON line")
    ap.add_argument("--model", required=True)
    ap.add_argument("--image-size", type=int, default=0, help="S (0 = the model's)")
    ap.add_argument("--sigma", type=float, default=-1.0, help="< 0 = the model's")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--width", type=int, default=640, help="input width")
    ap.add_argument("--height", type=int, default=480, help="input height")
    ap.add_argument("--device", default="cpu", help="torch device for --bench (cpu, cuda, cuda:1)")
    ap.add_argument("--autocast", action="store_true", help="--bench under fp16 autocast (CUDA)")
    args = ap.parse_args(argv)
    if args.bench:
        bench(args)
        return
    model = Model(args.model)
    from make_golden import make_test_image
    out = run(model, make_test_image(args.width, args.height, seed=0),
              args.image_size or None, args.sigma)
    print(json.dumps({"score": float(out["score"][0]),
                      "map_max": float(out["map"].max()), "out_layers": model.out_layers}))


if __name__ == "__main__":
    main()
