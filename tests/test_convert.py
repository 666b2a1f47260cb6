#!/usr/bin/python3
"""Tests of models/faprompt-convert on inputs in the exact published formats (TAP output).

    test_convert.py --mode tiny --test-parity build/tests/test_parity \\
                    --load-model build/tests/load_model
    test_convert.py --mode full --load-model build/tests/load_model

tiny: small CLIPs with the real key names (token_embedding, logit_scale, the
  TorchScript scalars; fp16 like OpenAI's) saved as a TorchScript archive, as
  a torch.save'd state dict and as an OpenCLIP checkpoint; prompt-learner
  checkpoints saved from a module laid out like the authors' prompt learner
  (every key of docs/SPEC.md's appendix table, tokenized prompts ending at 8 and 11, token
  prefix/suffix taken from the CLIP's token embedding as the authors do).
  Each pair is converted with the CLI; the converted file must hold the
  original tensors exactly, and the C detector on it (tests/test_parity.c)
  must match the PyTorch reference run on the ORIGINAL files
  (tests/reference/original_ckpt.py) within docs/SPEC.md's fp32 tolerance.
  AnomalyCLIP (zqhang/AnomalyCLIP): prompt-learner checkpoints saved from a
  module laid out like its AnomalyCLIP_PromptLearner (prompt_ensemble.py: one
  normal and one abnormal prompt with their own contexts, tokenized prompts
  ending at 1 + n_ctx + 2 / + 3, no patch_meta_net), converted with family
  auto-detection and --out-layers; metadata (family, out_layers, sigma 4) and
  tensors are checked and the C core must load the file.
  Then every refusal: --family / --out-layers mismatches, ResNet CLIP, missing
  key, wrong shape, truncated and random files, swapped arguments, ...
full: random CLIP ViT-L/14@336px (TorchScript, fp16) and a full-size prompt
  learner, converted to f16 and f32: the file size is what the dtype implies
  and the C core loads it with the expected configuration; and a full-size
  AnomalyCLIP prompt learner (9_12_4: n_ctx 12, depth 9, t 4; end tokens
  15 / 16, suffixes [1, 1, 64, 768]) converted and loaded the same way.
"""

import argparse
import contextlib
import copy
import importlib.machinery
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONVERT = os.path.join(ROOT, "models", "faprompt-convert")
sys.path.insert(0, os.path.join(HERE, "reference"))
sys.path.insert(0, os.path.join(ROOT, "models"))
import fapfile  # noqa: E402
import faprompt_ref  # noqa: E402
import original_ckpt  # noqa: E402


def _load_script(name, path):
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


# weight scales of the random model generator (activations stay O(1))
gen_random = _load_script("faprompt_gen_random", os.path.join(ROOT, "models", "faprompt-gen-random"))
converter = _load_script("faprompt_convert", CONVERT)


# ---- TAP -------------------------------------------------------------------------------------

class Tap:
    def __init__(self):
        self.n = 0
        self.failed = []

    def check(self, name, fn, *args, **kwargs):
        self.n += 1
        t0 = time.perf_counter()
        try:
            note = fn(*args, **kwargs)
        except Exception as e:  # a failed assertion or anything unexpected
            self.failed.append(name)
            print(f"not ok {self.n} - {name}")
            for line in (f"{type(e).__name__}: {e}").splitlines():
                print(f"#   {line}")
            sys.stdout.flush()
            return None
        dt = time.perf_counter() - t0
        print(f"ok {self.n} - {name} ({dt:.1f} s" + (f"; {note})" if isinstance(note, str) else ")"))
        sys.stdout.flush()
        return note

    def done(self):
        print(f"1..{self.n}")
        if self.failed:
            print(f"# {len(self.failed)} failed: " + ", ".join(self.failed))
        return 1 if self.failed else 0


def diag(msg):
    for line in str(msg).splitlines():
        print(f"# {line}")
    sys.stdout.flush()


# ---- synthetic inputs in the published formats --------------------------------------------

class Holder(nn.Module):
    """A module tree whose state_dict() has exactly the given dotted names (for TorchScript)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def module_from_state_dict(sd, buffers=None):
    root = Holder()
    items = [(k, v, False) for k, v in sd.items()]
    items += [(k, v, True) for k, v in (buffers or {}).items()]
    for name, value, is_buffer in items:
        parts = name.split(".")
        m = root
        for p in parts[:-1]:
            if p not in m._modules:
                m.add_module(p, Holder())
            m = m._modules[p]
        if is_buffer:
            m.register_buffer(parts[-1], value)
        else:
            m.register_parameter(parts[-1], nn.Parameter(value, requires_grad=False))
    return root


class AuthorsPromptLearner(nn.Module):
    """The parameters and buffers of FAPrompt.py's AnomalyCLIP_PromptLearner, same names and
    registration order, filled from given tensors (its state_dict() is what train.py saves)."""

    def __init__(self, t):
        super().__init__()
        e_m, hid = t["patch_meta_net.linear1.weight"].shape[1], t["patch_meta_net.linear1.weight"].shape[0]
        ct = t["patch_meta_net.linear2.weight"].shape[0]
        self.patch_meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(e_m, hid)), ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hid, ct))]))
        deep = [t[k] for k in sorted((k for k in t if k.startswith("compound_prompts_text.")),
                                     key=lambda k: int(k.split(".")[1]))]
        self.compound_prompts_text = nn.ParameterList([nn.Parameter(d.clone()) for d in deep])
        self.compound_prompt_projections = nn.ModuleList([nn.Linear(ct, 896) for _ in deep])
        self.ctx_pos = nn.Parameter(t["ctx_pos"].clone())
        self.ctx_neg = nn.Parameter(t["ctx_neg"].clone())
        for name in ("token_prefix_pos", "token_suffix_pos", "token_prefix_neg",
                     "token_suffix_neg", "tokenized_prompts_pos", "tokenized_prompts_neg"):
            self.register_buffer(name, t[name].clone())
        with torch.no_grad():
            for k in ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"):
                dict(self.patch_meta_net.named_parameters())[k].copy_(t["patch_meta_net." + k])


class AuthorsAnomalyCLIPPromptLearner(nn.Module):
    """The parameters and buffers of AnomalyCLIP's prompt_ensemble.py AnomalyCLIP_PromptLearner
    (zqhang/AnomalyCLIP @45ed4dd, PE.py:158-213): same names, registration order, shapes and
    dtypes, filled from given tensors. Its state_dict() is what their train.py:114 saves:
    ctx_pos, ctx_neg [1, 1, n_ctx, Ct] (fp32 Parameters, 169-170); the buffers
    token_prefix_pos, token_suffix_pos, token_prefix_neg, token_suffix_neg [1, 1, ., Ct]
    (198-201) and tokenized_prompts_pos, _neg [1, 1, Lctx] int32 (212-213); then the
    submodules compound_prompts_text.j [t, Ct] (ParameterList, 159) and
    compound_prompt_projections.j.weight [896, Ct] / .bias [896] (Linear clones, 165-166)."""

    def __init__(self, t):
        super().__init__()
        ct = t["ctx_pos"].shape[-1]
        deep = [t[k] for k in sorted((k for k in t if k.startswith("compound_prompts_text.")),
                                     key=lambda k: int(k.split(".")[1]))]
        self.compound_prompts_text = nn.ParameterList([nn.Parameter(d.clone()) for d in deep])
        single_layer = nn.Linear(ct, 896)
        self.compound_prompt_projections = nn.ModuleList(
            [copy.deepcopy(single_layer) for _ in deep])  # _get_clones (PE.py:83-84)
        self.ctx_pos = nn.Parameter(t["ctx_pos"].clone())
        self.ctx_neg = nn.Parameter(t["ctx_neg"].clone())
        for name in ("token_prefix_pos", "token_suffix_pos", "token_prefix_neg",
                     "token_suffix_neg", "tokenized_prompts_pos", "tokenized_prompts_neg"):
            self.register_buffer(name, t[name].clone())


def ac_token_ids(n_pos, n_neg, lctx, vocab):
    """AnomalyCLIP's prompts "X*n object." / "X*n damaged object." (PE.py:172-185): [SOT]
    X*n_pos object . [EOT] and [SOT] X*n_neg damaged object . [EOT], [1, 1, Lctx] int32."""
    sot, eot = vocab - 2, vocab - 1  # as in CLIP, EOT has the largest id
    # CLIP's BPE ids of "X", "damaged", "object" and "." (docs/SPEC.md section 6.3) where
    # the vocabulary is CLIP's
    x_id, damaged, obj, dot = (343, 13568, 14115, 269) if vocab > 14115 else (343, 322, 323, 269)
    pos = [sot] + [x_id] * n_pos + [obj, dot, eot]
    neg = [sot] + [x_id] * n_neg + [damaged, obj, dot, eot]
    tp = torch.zeros(1, 1, lctx, dtype=torch.int32)
    tn = torch.zeros(1, 1, lctx, dtype=torch.int32)
    tp[0, 0, :len(pos)] = torch.tensor(pos, dtype=torch.int32)
    tn[0, 0, :len(neg)] = torch.tensor(neg, dtype=torch.int32)
    return tp, tn


def make_ac_prompt_learner(clip_sd, seed, vocab, n_pos, n_neg, depth, t_len):
    """An AnomalyCLIP prompt learner's tensors, by the checkpoint's own names: learned
    tensors random (0.5 scale, as the generator), prefix / suffix cut from the CLIP's token
    embedding of the tokenized prompts as the authors do (PE.py:187-201)."""
    ct = clip_sd["ln_final.weight"].shape[0]
    lctx = clip_sd["positional_embedding"].shape[0]
    gen = torch.Generator().manual_seed(seed)
    t = {"ctx_pos": 0.5 * torch.randn(1, 1, n_pos, ct, generator=gen),
         "ctx_neg": 0.5 * torch.randn(1, 1, n_neg, ct, generator=gen)}
    for j in range(depth - 1):
        t[f"compound_prompts_text.{j}"] = 0.5 * torch.randn(t_len, ct, generator=gen)
    tp, tn = ac_token_ids(n_pos, n_neg, lctx, vocab)
    # the abnormal prompt holds its own n_neg context tokens only
    t.update(prompt_buffers(clip_sd, tp, tn, 1 + n_pos, 1 + n_neg))
    return t


def save_ac_checkpoint(tensors, path):
    return save_checkpoint(tensors, path, AuthorsAnomalyCLIPPromptLearner)


def clip_dims(cfg):
    return dict(cfg, vision_heads=cfg["vision_width"] // 64, text_heads=cfg["text_width"] // 64)


def make_clip(cfg, seed, dtype, vocab):
    """CLIP state dict with OpenAI's key names (incl. token_embedding, logit_scale)."""
    sd = OrderedDict()
    gen = torch.Generator().manual_seed(seed)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07)).to(dtype)
    for name, (shape, kind, param) in gen_random.clip_schema(cfg).items():
        sd[name] = torch.from_numpy(gen_random.make_tensor(seed, name, shape, kind, param, "F32")).to(dtype)
    sd["token_embedding.weight"] = (0.5 * torch.randn(vocab, cfg["text_width"], generator=gen)).to(dtype)
    return sd


def token_ids(cfg, vocab):
    """[SOT] N*n_pos object . [EOT] and [SOT] N*n_pos A*n_neg damaged object . [EOT] (int32)."""
    sot, eot = vocab - 2, vocab - 1  # as in CLIP, EOT has the largest id
    n_id, a_id, damaged, obj, dot = 320, 321, 322, 323, 269
    lctx, k = cfg["context_length"], cfg["n_prompts"]
    pos = [sot] + [n_id] * cfg["n_pos"] + [obj, dot, eot]
    neg = [sot] + [n_id] * cfg["n_pos"] + [a_id] * cfg["n_neg"] + [damaged, obj, dot, eot]
    tp = torch.zeros(1, 1, lctx, dtype=torch.int32)
    tn = torch.zeros(1, k, lctx, dtype=torch.int32)
    tp[0, 0, :len(pos)] = torch.tensor(pos, dtype=torch.int32)
    tn[0, :, :len(neg)] = torch.tensor(neg, dtype=torch.int32)
    return tp, tn


def make_prompt_learner(cfg, clip_sd, seed, vocab):
    """The prompt learner's tensors, by the checkpoint's own names (no prefix)."""
    pl = "prompt_learner."
    t = {}
    for name, (shape, kind, param) in gen_random.prompt_schema(cfg).items():
        t[name[len(pl):]] = torch.from_numpy(
            gen_random.make_tensor(seed, name, shape, kind, param, "F32"))
    tp, tn = token_ids(cfg, vocab)
    t.update(prompt_buffers(clip_sd, tp, tn, 1 + cfg["n_pos"], 1 + cfg["n_pos"] + cfg["n_neg"]))
    return t


def prompt_buffers(clip_sd, tp, tn, pos_suffix, neg_suffix):
    """The prompt learners' fixed buffers from the token ids: prefix (SOT) and suffix
    embeddings (from position pos_suffix / neg_suffix on) and the ids themselves."""
    emb = clip_sd["token_embedding.weight"].float()  # the authors: token_embedding(ids).type(dtype)
    ep, en = emb[tp.long()], emb[tn.long()]
    return {"token_prefix_pos": ep[:, :, :1], "token_suffix_pos": ep[:, :, pos_suffix:],
            "token_prefix_neg": en[:, :, :1], "token_suffix_neg": en[:, :, neg_suffix:],
            "tokenized_prompts_pos": tp, "tokenized_prompts_neg": tn}


def save_checkpoint(tensors, path, learner=None):
    """torch.save({"prompt_learner": state_dict}) as the authors' train.py, of FAPrompt's
    prompt learner (default) or another (AnomalyCLIP's)."""
    module = (learner or AuthorsPromptLearner)(tensors)
    torch.save({"prompt_learner": module.state_dict()}, path)
    return module.state_dict()


TS_SCALARS = ("input_resolution", "context_length", "vocab_size")


def save_clip(sd, path, fmt, cfg=None, vocab=None):
    if fmt == "state_dict":
        torch.save(module_from_state_dict(sd).state_dict(), path)
    elif fmt == "torchscript":
        scalars = {"input_resolution": torch.tensor(cfg["patch_size"] * cfg["vision_grid"]),
                   "context_length": torch.tensor(cfg["context_length"]),
                   "vocab_size": torch.tensor(vocab)}
        torch.jit.script(module_from_state_dict(sd, scalars)).save(path)
        got = torch.jit.load(path, map_location="cpu").state_dict()
        assert set(got) == set(sd) | set(TS_SCALARS), "TorchScript keys differ"
    elif fmt == "openclip":
        torch.save({"epoch": 3, "name": "synthetic",
                    "state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())}, path)
    else:
        raise ValueError(fmt)


# ---- running the converter ------------------------------------------------------------------

def run_cli(args, timeout=600):
    """The converter as users run it; returns (rc, stdout, stderr, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, CONVERT] + args, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


def run_inproc(args):
    """converter.main() in this process (fast, for the many refusal cases)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = converter.main(args)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def convert_ok(clip, ckpt, out, extra=()):
    rc, so, se, dt = run_cli(["--clip", clip, "--checkpoint", ckpt, "-o", out, "--json"]
                             + list(extra))
    if rc != 0:
        raise AssertionError(f"conversion failed (rc {rc}):\n{se}")
    summary = json.loads(so)
    return summary, se, dt


def expect_config(md, cfg):
    for k, v in cfg.items():
        got = md.get(k)
        want = repr(float(v)) if k == "sigma" else str(v)
        if got != want:
            raise AssertionError(f"__metadata__ {k} = {got!r}, expected {want!r}")


def expect_same_tensors(path, clip_sd, pl_sd, clip_dtype):
    """The file holds the original tensors: CLIP in clip_dtype (exact for f16 -> f16/f32),
    prompts in f32, deep prompts rounded to fp16; nothing else."""
    arrays, _ = fapfile.read(path, widen_bf16=False)
    header, _, _ = fapfile.read_header(path)
    want = set()
    for k, v in clip_sd.items():
        if k in ("token_embedding.weight", "logit_scale") + TS_SCALARS:
            continue
        want.add(k)
        if clip_dtype == "mixed":  # auto: each tensor in its own dtype
            st = {torch.float16: "F16", torch.float32: "F32"}[v.dtype]
        else:
            st = {"f16": "F16", "f32": "F32", "bf16": "BF16"}[clip_dtype]
        if header[k]["dtype"] != st:
            raise AssertionError(f"{k}: stored {header[k]['dtype']}, expected {st}")
        if clip_dtype == "bf16":
            ref = v.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            ok = np.array_equal(arrays[k], ref)
        else:
            ok = np.array_equal(np.asarray(arrays[k], np.float32), v.float().numpy())
        if not ok:
            raise AssertionError(f"{k}: values differ from the original")
    for k, v in pl_sd.items():
        if k.startswith(("compound_prompt_projections.", "tokenized_prompts_")):
            continue
        name = "prompt_learner." + k
        want.add(name)
        deep = k.startswith("compound_prompts_text.")
        st = "F16" if deep else "F32"
        if header[name]["dtype"] != st:
            raise AssertionError(f"{name}: stored {header[name]['dtype']}, expected {st}")
        ref = v.float().half().float() if deep else v.float()
        if not np.array_equal(np.asarray(arrays[name], np.float32), ref.numpy()):
            raise AssertionError(f"{name}: values differ from the original")
    if set(arrays) != want:
        raise AssertionError(f"tensor names differ: extra {sorted(set(arrays) - want)[:5]}, "
                             f"missing {sorted(want - set(arrays))[:5]}")
    return f"{len(want)} tensors"


def expected_file_size(path):
    """8 + header length + sum of numel * itemsize (from the header)."""
    header, _, start = fapfile.read_header(path)
    isz = {"F32": 4, "F16": 2, "BF16": 2}
    return start + sum(int(np.prod(v["shape"])) * isz[v["dtype"]] for v in header.values())


def load_in_core(load_model, path):
    p = subprocess.run([load_model, path], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"the core refused {path}:\n{p.stderr}")
    return json.loads(p.stdout)


# ---- tiny mode ---------------------------------------------------------------------------------

TINY_A = dict(patch_size=14, vision_grid=3, vision_width=128, vision_layers=4, embed_dim=64,
              text_width=128, text_layers=3, context_length=16, n_pos=5, n_neg=2, n_prompts=3,
              top_m=5, prompt_depth=3, prompt_length=4, prior_hidden=20)
# the authors' current FAPrompt.py has n_ctx_neg = 1: end token at 10; deep prompts at
# every text layer, shorter ones, D0 = 0, no positional resize
TINY_B = dict(patch_size=14, vision_grid=3, vision_width=64, vision_layers=3, embed_dim=32,
              text_width=64, text_layers=3, context_length=14, n_pos=5, n_neg=1, n_prompts=2,
              top_m=3, prompt_depth=4, prompt_length=2, prior_hidden=6)
VOCAB = 1000


def parity(test_parity, model, golden):
    p = subprocess.run([test_parity, model, golden], capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"test_parity {os.path.basename(model)} failed (rc {p.returncode}):\n"
                             + (p.stdout + p.stderr)[-3000:])
    n = sum(1 for line in p.stdout.splitlines() if line.startswith("ok "))
    return f"{n} parity cases"


def ref_matches_golden(model_path, golden_path):
    """faprompt_ref on the converted file gives what it gives on the original files."""
    golden, md = fapfile.read(golden_path)
    out = faprompt_ref.run(faprompt_ref.Model(model_path), np.array(golden["input.rgb"]),
                           int(md["image_size"]), float(md["sigma"]))
    worst = 0.0
    for name in faprompt_ref.INTERMEDIATES:
        a, b = out[name].numpy(), np.asarray(golden[name])
        if name == "topk_index":
            if not np.array_equal(a, b):
                raise AssertionError("topk_index differs")
            continue
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    if worst > 1e-6:
        raise AssertionError(f"reference on the converted file differs by {worst:.3g}")
    return f"max |diff| {worst:.2g}"


def tiny(args, tmp, tap):
    d = lambda name: os.path.join(tmp, name)  # noqa: E731
    cfg_a = clip_dims(TINY_A)
    clip_a = make_clip(cfg_a, 11, torch.float16, VOCAB)
    pl_a_t = make_prompt_learner(cfg_a, clip_a, 12, VOCAB)
    cfg_b = clip_dims(TINY_B)
    clip_b = make_clip(cfg_b, 21, torch.float32, VOCAB)
    pl_b_t = make_prompt_learner(cfg_b, clip_b, 22, VOCAB)

    def save_inputs():
        save_clip(clip_a, d("clip-a.pt"), "torchscript", cfg_a, VOCAB)
        save_clip(clip_a, d("clip-a-sd.pt"), "state_dict")
        save_clip(clip_b, d("clip-b-openclip.pt"), "openclip")
        pa = save_checkpoint(pl_a_t, d("ckpt-a.pth"))
        pb = save_checkpoint(pl_b_t, d("ckpt-b.pth"))
        ckpt = torch.load(d("ckpt-a.pth"))["prompt_learner"]
        keys = {"ctx_pos", "ctx_neg", "token_prefix_pos", "token_prefix_neg", "token_suffix_pos",
                "token_suffix_neg", "tokenized_prompts_pos", "tokenized_prompts_neg",
                "patch_meta_net.linear1.weight", "patch_meta_net.linear1.bias",
                "patch_meta_net.linear2.weight", "patch_meta_net.linear2.bias"}
        keys |= {f"compound_prompts_text.{j}" for j in range(cfg_a["prompt_depth"] - 1)}
        keys |= {f"compound_prompt_projections.{j}.{w}" for j in range(cfg_a["prompt_depth"] - 1)
                 for w in ("weight", "bias")}
        assert set(ckpt) == keys, f"checkpoint keys {sorted(set(ckpt) ^ keys)}"
        tp = ckpt["tokenized_prompts_pos"]
        assert tp.dtype == torch.int32 and tuple(tp.shape) == (1, 1, 16)
        assert int(tp.argmax()) == 8 and ckpt["tokenized_prompts_neg"].argmax(-1).eq(11).all()
        return pa, pb

    saved = tap.check("synthetic inputs in the published formats", save_inputs)
    if saved is None:
        return
    pl_a, pl_b = (dict(sd) for sd in saved)

    # goldens from the ORIGINAL files (reference independent of the converter)
    goldens = {}

    def golden(name, clip, ckpt, dual_start, s, w, h, seed, sigma):
        path = d(f"golden-{name}.safetensors")
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            original_ckpt.main(["--clip", clip, "--checkpoint", ckpt, "--dual-start",
                                str(dual_start), "--image-size", str(s), "--width", str(w),
                                "--height", str(h), "--seed", str(seed), "--sigma", str(sigma),
                                "-o", path])
        goldens[name] = path
        return log.getvalue().strip().split(" -> ")[0]

    tap.check("golden A: reference on the original TorchScript CLIP + checkpoint", golden, "a",
              d("clip-a.pt"), d("ckpt-a.pth"), 1, 56, 80, 60, 31, 2.0)
    tap.check("golden A': reference on the original state-dict CLIP + checkpoint", golden,
              "a-sd", d("clip-a-sd.pt"), d("ckpt-a.pth"), 1, 56, 80, 60, 31, 2.0)
    tap.check("golden B: reference on the original OpenCLIP checkpoint + n_neg=1 checkpoint",
              golden, "b", d("clip-b-openclip.pt"), d("ckpt-b.pth"), 0, 42, 50, 70, 32, 1.5)

    def goldens_agree():
        a, _ = fapfile.read(goldens["a"])
        b, _ = fapfile.read(goldens["a-sd"])
        for k in a:
            assert np.array_equal(a[k], b[k]), k
    tap.check("reference: TorchScript and state-dict CLIP give identical goldens", goldens_agree)

    exp_a = dict(TINY_A, vision_heads=2, text_heads=2, dual_start=1, image_size=56, sigma=2.0,
                 end_pos_normal=8, end_pos_abnormal=11)
    exp_b = dict(TINY_B, vision_heads=1, text_heads=1, dual_start=0, image_size=42, sigma=1.5,
                 end_pos_normal=8, end_pos_abnormal=10)
    cases = [
        # name, clip, ckpt, extra args, expected cfg, clip sd, pl sd, stored dtype, golden
        ("A: TorchScript fp16 CLIP, default dtype (f16)", "clip-a.pt", "ckpt-a.pth",
         ["--dual-start", "1", "--image-size", "56", "--sigma", "2"], exp_a, clip_a, pl_a,
         "f16", "a"),
        ("A: state-dict fp16 CLIP, --dtype f32", "clip-a-sd.pt", "ckpt-a.pth",
         ["--dual-start", "1", "--image-size", "56", "--sigma", "2", "--dtype", "f32"], exp_a,
         clip_a, pl_a, "f32", "a"),
        ("B: OpenCLIP fp32 CLIP (module. prefixes), n_neg 1, D0 0", "clip-b-openclip.pt",
         "ckpt-b.pth", ["--dual-start", "0", "--image-size", "42", "--sigma", "1.5"], exp_b,
         clip_b, pl_b, "f32", "b"),
        ("A: --dtype bf16 (rounded: load + exact bf16 bits only)", "clip-a.pt", "ckpt-a.pth",
         ["--dual-start", "1", "--image-size", "56", "--sigma", "2", "--dtype", "bf16"], exp_a,
         clip_a, pl_a, "bf16", None),
    ]
    for i, (name, clip, ckpt, extra, exp, csd, psd, dt, gname) in enumerate(cases):
        out = d(f"converted-{i}.safetensors")
        res = tap.check(f"convert {name}", convert_ok, d(clip), d(ckpt), out, extra)
        if res is None:
            continue
        summary, _, secs = res
        tap.check("  metadata holds the configuration read from the shapes", expect_config,
                  fapfile.read_header(out)[1], exp)
        tap.check(f"  tensors are the originals ({dt})", expect_same_tensors, out, csd, psd, dt)

        def summary_ok(summary=summary, out=out, clip=clip, ckpt=ckpt):
            assert summary["output_bytes"] == os.path.getsize(out) == expected_file_size(out)
            assert summary["sha256"]["output"] == converter.sha256_file(out, "", True)
            assert summary["sha256"]["clip"] == converter.sha256_file(d(clip), "", True)
            assert summary["sha256"]["checkpoint"] == converter.sha256_file(d(ckpt), "", True)
            md = fapfile.read_header(out)[1]
            assert md["source_clip_sha256"] == summary["sha256"]["clip"]
            assert md["source_checkpoint_sha256"] == summary["sha256"]["checkpoint"]
            return f"{summary['parameters']} params, {summary['output_bytes']} bytes"
        tap.check("  summary: sizes and sha256 of inputs and output", summary_ok)

        def loads(out=out, exp=exp):
            c = load_in_core(args.load_model, out)
            for k, v in exp.items():
                assert abs(c[k] - v) < 1e-6, f"core config {k} = {c[k]}, expected {v}"
            return f"{c['parameters']} params"
        tap.check("  the core loads it with that configuration", loads)
        if gname:
            tap.check("  reference on the converted file == reference on the originals",
                      ref_matches_golden, out, goldens[gname])
            tap.check("  C detector on the converted file vs reference on the originals "
                      "(test_parity, <= 1e-4)", parity, args.test_parity, out, goldens[gname])

    def text_summary():
        rc, so, se, _ = run_cli(["--clip", d("clip-a.pt"), "--checkpoint", d("ckpt-a.pth"),
                                 "-o", d("text-summary.safetensors"), "--dual-start", "1",
                                 "--image-size", "56"])
        assert rc == 0, se
        for want in ("params", "sha256", "V-V dual from layer 1", "end tokens 8 / 11",
                     "reading TorchScript archive", "writing text-summary.safetensors: done"):
            assert want in so + se, f"{want!r} not in the output:\n{so}{se}"
        return None
    tap.check("text summary and progress lines", text_summary)

    variants(d, tap, clip_a, pl_a)
    anomalyclip(args, d, tap, cfg_a, clip_a)
    refusals(d, tap, cfg_a, clip_a, pl_a_t)


def variants(d, tap, clip_sd, pl_sd):
    """Accepted variations of the inputs, converted in-process."""
    base = ["--dual-start", "1", "--image-size", "56", "-q", "--json"]

    def mixed():
        sd = OrderedDict(clip_sd)
        for k in list(sd):
            if ".ln_" in k or k.startswith("ln_final"):
                sd[k] = sd[k].float()  # LayerNorms in fp32, the rest fp16
        torch.save(sd, d("clip-mixed.pt"))
        rc, so, se = run_inproc(["--clip", d("clip-mixed.pt"), "--checkpoint", d("ckpt-a.pth"),
                                 "-o", d("mixed.safetensors")] + base)
        assert rc == 0, se
        header = fapfile.read_header(d("mixed.safetensors"))[0]
        assert header["visual.ln_pre.weight"]["dtype"] == "F32"
        assert header["transformer.resblocks.0.ln_1.bias"]["dtype"] == "F32"
        assert header["visual.conv1.weight"]["dtype"] == "F16"
        assert json.loads(so)["clip_dtype"] == "f16+f32"
        return expect_same_tensors(d("mixed.safetensors"), sd, pl_sd, "mixed")
    tap.check("auto dtype keeps each CLIP tensor's own dtype (fp16 + fp32 LayerNorms)", mixed)

    def prefixed():
        t = OrderedDict(("module." + k, v) for k, v in pl_sd.items())
        torch.save({"prompt_learner": t}, d("ckpt-dp.pth"))
        torch.save(OrderedDict(pl_sd), d("ckpt-bare.pth"))
        ref = fapfile.read(d("converted-0.safetensors"))[0]
        for ck in ("ckpt-dp.pth", "ckpt-bare.pth"):
            out = d(ck + ".safetensors")
            rc, _, se = run_inproc(["--clip", d("clip-a.pt"), "--checkpoint", d(ck), "-o", out,
                                    "--sigma", "2"] + base)
            assert rc == 0, se
            got = fapfile.read(out)[0]
            assert set(got) == set(ref) and all(np.array_equal(got[k], ref[k]) for k in ref), ck
    tap.check("checkpoint with module. prefixes (DataParallel), and a bare state dict", prefixed)

    def force():
        out = d("forced.safetensors")
        with open(out, "wb") as f:
            f.write(b"old")
        rc, _, se = run_inproc(["--clip", d("clip-a.pt"), "--checkpoint", d("ckpt-a.pth"), "-o",
                                out, "--force"] + base)
        assert rc == 0, se
        assert os.path.getsize(out) == expected_file_size(out)
    tap.check("--force replaces an existing output", force)

    def usage():
        rc, _, se = run_inproc(["--clip", d("clip-a.pt")])
        assert rc == 2 and "--checkpoint" in se, (rc, se)
    tap.check("usage error exits with status 2", usage)


# ---- AnomalyCLIP ---------------------------------------------------------------------------------

AC_N_CTX, AC_DEPTH, AC_T = 6, 3, 4  # tiny stand-ins for the published 12, 9, 4


def ac_expected(cfg, over):
    """The metadata an AnomalyCLIP conversion of CLIP A must write (the tiny AC_* layout,
    with the given overrides)."""
    n_pos = n_neg = AC_N_CTX
    depth, t_len = AC_DEPTH, AC_T
    exp = {k: cfg[k] for k in ("patch_size", "vision_grid", "vision_width", "vision_layers",
                               "embed_dim", "text_width", "text_layers", "context_length")}
    exp.update(vision_heads=cfg["vision_width"] // 64, text_heads=cfg["text_width"] // 64,
               dual_start=1, image_size=56, family="anomalyclip",
               out_layers=str(cfg["vision_layers"]),
               n_pos=n_pos, n_neg=n_neg, n_prompts=1, top_m=0, prior_hidden=0,
               prompt_depth=depth, prompt_length=t_len, end_pos_normal=1 + n_pos + 2,
               end_pos_abnormal=1 + n_neg + 3, sigma=4.0)
    exp.update(over)
    return exp


def ac_loads(load_model, out, exp):
    """The core loads the AnomalyCLIP file with that configuration (load_model prints the
    integer keys; family / out_layers are compared too when it prints them)."""
    c = load_in_core(load_model, out)
    for k, v in exp.items():
        if k == "family":
            if "family" in c:
                assert c["family"] == v, f"core family {c['family']!r}, expected {v!r}"
            continue
        if k == "out_layers":
            if "out_layers" in c:
                got = c["out_layers"]
                got = ",".join(str(x) for x in got) if isinstance(got, list) else str(got)
                assert got == v, f"core out_layers {got!r}, expected {v!r}"
            continue
        assert abs(c[k] - v) < 1e-6, f"core config {k} = {c[k]}, expected {v}"
    return f"{c['parameters']} params"


def anomalyclip(args, d, tap, cfg, clip_sd):
    """AnomalyCLIP checkpoints in the authors' published format, converted with --family auto."""
    ct, lctx = cfg["text_width"], cfg["context_length"]
    base = ["--dual-start", "1", "--image-size", "56"]
    ac_t = make_ac_prompt_learner(clip_sd, 41, VOCAB, AC_N_CTX, AC_N_CTX, AC_DEPTH, AC_T)

    def save_inputs():
        sd = save_ac_checkpoint(ac_t, d("ac.pth"))
        ckpt = torch.load(d("ac.pth"))["prompt_learner"]
        order = ["ctx_pos", "ctx_neg", "token_prefix_pos", "token_suffix_pos", "token_prefix_neg",
                 "token_suffix_neg", "tokenized_prompts_pos", "tokenized_prompts_neg"]
        order += [f"compound_prompts_text.{j}" for j in range(AC_DEPTH - 1)]
        order += [f"compound_prompt_projections.{j}.{w}" for j in range(AC_DEPTH - 1)
                  for w in ("weight", "bias")]
        assert list(ckpt) == order, f"state-dict keys {list(ckpt)}"
        shapes = {"ctx_pos": (1, 1, AC_N_CTX, ct), "ctx_neg": (1, 1, AC_N_CTX, ct),
                  "token_prefix_pos": (1, 1, 1, ct), "token_prefix_neg": (1, 1, 1, ct),
                  "token_suffix_pos": (1, 1, lctx - 1 - AC_N_CTX, ct),
                  "token_suffix_neg": (1, 1, lctx - 1 - AC_N_CTX, ct),
                  "tokenized_prompts_pos": (1, 1, lctx), "tokenized_prompts_neg": (1, 1, lctx),
                  "compound_prompts_text.0": (AC_T, ct),
                  "compound_prompt_projections.0.weight": (896, ct),
                  "compound_prompt_projections.0.bias": (896,)}
        for k, shape in shapes.items():
            assert tuple(ckpt[k].shape) == shape, f"{k}: {tuple(ckpt[k].shape)}, expected {shape}"
        for k, v in ckpt.items():
            want = torch.int32 if k.startswith("tokenized_") else torch.float32
            assert v.dtype == want, f"{k}: {v.dtype}"
        assert int(ckpt["tokenized_prompts_pos"].argmax()) == 1 + AC_N_CTX + 2
        assert int(ckpt["tokenized_prompts_neg"].argmax()) == 1 + AC_N_CTX + 3
        assert not any(k.startswith("patch_meta_net.") for k in ckpt)
        # the format the core stores n_pos != n_neg in (the authors' code uses one n_ctx)
        save_ac_checkpoint(make_ac_prompt_learner(clip_sd, 42, VOCAB, 6, 4, 4, 4), d("ac-64.pth"))
        return dict(sd)

    ac_sd = tap.check("AnomalyCLIP: synthetic checkpoint in the published format "
                      "(prompt_ensemble.py's state dict: names, order, shapes, dtypes)",
                      save_inputs)
    if ac_sd is None:
        return

    cases = [
        # name, checkpoint, extra args, expected metadata (overrides), pl sd
        ("AnomalyCLIP (--family auto): defaults, out layers = the last layer, sigma 4", "ac.pth",
         [], {}),
        ("AnomalyCLIP --out-layers 2,4 (two maps summed)", "ac.pth", ["--out-layers", "2,4"],
         {"out_layers": "2,4"}),
        ("AnomalyCLIP --family anomalyclip --dual-start 0 --out-layers ' 1, 2,3,4' --sigma 2.5",
         "ac.pth", ["--family", "anomalyclip", "--dual-start", "0", "--out-layers", " 1, 2,3,4",
                    "--sigma", "2.5"], {"out_layers": "1,2,3,4", "dual_start": 0, "sigma": 2.5}),
        ("AnomalyCLIP with n_pos 6 != n_neg 4 (suffix_neg from n_neg), depth 4", "ac-64.pth", [],
         {"n_pos": 6, "n_neg": 4, "prompt_depth": 4, "end_pos_normal": 9, "end_pos_abnormal": 8}),
    ]
    for i, (name, ckpt, extra, over) in enumerate(cases):
        out = d(f"ac-converted-{i}.safetensors")
        res = tap.check(f"convert {name}", convert_ok, d("clip-a.pt"), d(ckpt), out, base + extra)
        if res is None:
            continue
        summary, _, _ = res
        psd = ac_sd if ckpt == "ac.pth" else dict(torch.load(d(ckpt))["prompt_learner"])
        exp = ac_expected(cfg, over)

        def meta_ok(out=out, exp=exp, summary=summary, extra=extra):
            md = fapfile.read_header(out)[1]
            expect_config(md, exp)
            assert md["format"] == "faprompt" and md["format_version"] == "1"
            want_rule = "set with --out-layers" if "--out-layers" in extra else "the last layer"
            assert md["out_layers_rule"].startswith(want_rule), md["out_layers_rule"]
            assert summary["family"] == summary["config"]["family"] == "anomalyclip"
            assert summary["config"]["out_layers"] == [int(x) for x in exp["out_layers"].split(",")]
            for k in converter.INT_KEYS:
                assert summary["config"][k] == exp[k], (k, summary["config"][k], exp[k])
            return f"family {md['family']}, out_layers {md['out_layers']}, sigma {md['sigma']}"
        tap.check("  metadata: family, out_layers, n_pos / n_neg, end tokens, sigma", meta_ok)
        tap.check("  tensors are the originals (deep prompts fp16-rounded), no prior, "
                  "projections and token ids dropped", expect_same_tensors, out, clip_sd, psd,
                  "f16")
        tap.check("  the core loads it with that configuration (C side of family anomalyclip)",
                  ac_loads, args.load_model, out, exp)

    def text_summary():
        rc, so, se, _ = run_cli(["--clip", d("clip-a.pt"), "--checkpoint", d("ac.pth"),
                                 "-o", d("ac-text.safetensors")] + base)
        assert rc == 0, se
        for want in ("family   anomalyclip (AnomalyCLIP)", "model family anomalyclip",
                     "from the checkpoint's keys", "end tokens 9 / 10", "no prior",
                     "map from out layers 4", "sigma 4"):
            assert want in so + se, f"{want!r} not in the output:\n{so}{se}"
    tap.check("AnomalyCLIP: text summary names the family and the out layers", text_summary)

    def fa_family_key():
        md = fapfile.read_header(d("converted-0.safetensors"))[1]
        assert md["family"] == "faprompt" and "out_layers" not in md, md
    tap.check("FAPrompt conversions write family faprompt and no out_layers", fa_family_key)

    def too_many():
        bad = converter.out_layer_problems(list(range(10, 19)), 5, 24)
        assert any("at most 8" in b for b in bad), bad
        assert not converter.out_layer_problems([6, 12, 18, 24], 5, 24)
        assert converter.out_layer_problems([5, 24], 5, 24)  # layer 5 (1-based) is not V-V
    tap.check("out layers: at most 8, each a V-V layer (unit)", too_many)


def refusals(d, tap, cfg, clip_sd, pl_t):
    def expect_refusal(clip, ckpt, wants, extra=(), out=None, cli=False, dual_start=True):
        outp = out or d("refused.safetensors")
        before = os.path.getsize(outp) if out else None
        argv = ["--clip", clip, "--checkpoint", ckpt, "-o", outp, "-q", "--image-size", "56"]
        argv += (["--dual-start", "1"] if dual_start else []) + list(extra)
        if cli:
            rc, _, err, _ = run_cli(argv)
        else:
            rc, _, err = run_inproc(argv)
        assert rc == 1, f"exit status {rc}, expected 1; stderr:\n{err}"
        for w in wants:
            assert w in err, f"{w!r} not in the message:\n{err}"
        if out:
            assert os.path.getsize(outp) == before, "existing output was changed"
        else:
            assert not os.path.exists(outp), "output was written"
        partial = [f for f in os.listdir(d("")) if f.endswith(".partial")]
        assert not partial, f"left {partial}"
        return err.strip().splitlines()[-1][:200]

    good_clip, good_ckpt = d("clip-a.pt"), d("ckpt-a.pth")

    # model family: --family against the keys, --out-layers, AnomalyCLIP layouts
    ct, lctx = cfg["text_width"], cfg["context_length"]
    ac_ckpt = d("ac.pth")
    tap.check("refuse: --family faprompt on an AnomalyCLIP checkpoint", expect_refusal, good_clip,
              ac_ckpt, ["--family faprompt", "not a FAPrompt checkpoint", "AnomalyCLIP",
                        "patch_meta_net", f"ctx_neg [1, 1, {AC_N_CTX}, {ct}]",
                        f"[1, K, n_neg, {ct}]", "--family auto"],
              extra=["--family", "faprompt"], cli=True)
    tap.check("refuse: --family anomalyclip on a FAPrompt checkpoint", expect_refusal, good_clip,
              good_ckpt, ["--family anomalyclip", "is a FAPrompt checkpoint",
                          f"'prompt_learner.patch_meta_net.linear1.weight' [20, {5 * 64}]), "
                          f"with ctx_pos [1, 1, 5, {ct}] and ctx_neg [1, 3, 2, {ct}]",
                          "--family auto"],
              extra=["--family", "anomalyclip"])
    tap.check("refuse: --out-layers below the V-V layers", expect_refusal, good_clip, ac_ckpt,
              ["out layer 1", "--out-layers 1,4", "[dual_start + 1, vision_layers] = [2, 4]"],
              extra=["--out-layers", "1,4"])
    tap.check("refuse: --out-layers beyond the last layer", expect_refusal, good_clip, ac_ckpt,
              ["out layer 5", "[2, 4]"], extra=["--out-layers", "2,5"])
    tap.check("refuse: --out-layers not increasing", expect_refusal, good_clip, ac_ckpt,
              ["out layers 4,2", "strictly increasing"], extra=["--out-layers", "4,2"])
    tap.check("refuse: --out-layers repeated", expect_refusal, good_clip, ac_ckpt,
              ["out layers 3,3", "strictly increasing"], extra=["--out-layers", "3,3"])
    tap.check("refuse: --out-layers not numbers", expect_refusal, good_clip, ac_ckpt,
              ["--out-layers 4,last", "comma-separated"], extra=["--out-layers", "4,last"])
    tap.check("refuse: --out-layers on a FAPrompt checkpoint", expect_refusal, good_clip,
              good_ckpt, ["--out-layers 4", "only for AnomalyCLIP", "is a FAPrompt checkpoint"],
              extra=["--out-layers", "4"])
    tap.check("refuse: --out-layers with --family faprompt", expect_refusal, good_clip,
              good_ckpt, ["--out-layers 4", "only for AnomalyCLIP"],
              extra=["--family", "faprompt", "--out-layers", "4"])

    def ac_variant(name, edit):
        t = dict(torch.load(ac_ckpt)["prompt_learner"])
        edit(t)
        torch.save({"prompt_learner": OrderedDict(t)}, d(name))
        return d(name)

    no_prior_ckpt = d("fa-no-prior.pth")
    torch.save({"prompt_learner": OrderedDict(
        (k, v) for k, v in pl_t.items() if not k.startswith("patch_meta_net."))}, no_prior_ckpt)
    tap.check("refuse: ctx_neg with K = 3 prompts but no patch_meta_net", expect_refusal,
              good_clip, no_prior_ckpt,
              [f"'prompt_learner.ctx_neg' has shape [1, 3, 2, {ct}]",
               f"expected [1, 1, n_neg, {ct}]", "one abnormal prompt", "patch_meta_net"])
    tap.check("refuse: AnomalyCLIP suffix_neg laid out as FAPrompt's", expect_refusal, good_clip,
              ac_variant("ac-bad-suffix.pth", lambda t: t.__setitem__(
                  "token_suffix_neg", t["token_suffix_neg"][:, :, AC_N_CTX:])),
              ["'prompt_learner.token_suffix_neg' has shape "
               f"[1, 1, {lctx - 1 - 2 * AC_N_CTX}, {ct}]",
               f"expected [1, 1, {lctx - 1 - AC_N_CTX}, {ct}]", "own context"])
    tap.check("refuse: AnomalyCLIP missing tokenized prompts", expect_refusal, good_clip,
              ac_variant("ac-no-tok.pth", lambda t: t.pop("tokenized_prompts_neg")),
              ["missing key 'prompt_learner.tokenized_prompts_neg'",
               f"expected shape [1, 1, {lctx}]"])
    tap.check("refuse: AnomalyCLIP unexpected key", expect_refusal, good_clip,
              ac_variant("ac-extra.pth",
                         lambda t: t.__setitem__("meta_net.weight", torch.zeros(4))),
              ["unexpected key 'prompt_learner.meta_net.weight' [4]",
               "not part of the AnomalyCLIP prompt learner"])
    short = make_ac_prompt_learner(clip_sd, 43, VOCAB, 6, 3, 3, 4)
    save_ac_checkpoint(short, d("ac-short-neg.pth"))
    tap.check("refuse: AnomalyCLIP deep prompts longer than the abnormal context",
              expect_refusal, good_clip, d("ac-short-neg.pth"),
              ["deep prompts of 4 tokens", "prompt_length <= min(n_pos, n_neg) = 3"])
    tap.check("refuse: neither FAPrompt nor AnomalyCLIP keys", expect_refusal, good_clip,
              _save(d("neither.pth"), {"prompt_learner": {"w": torch.zeros(2)}}),
              ["neither a FAPrompt nor an AnomalyCLIP prompt learner",
               "missing key 'prompt_learner.patch_meta_net.linear1.weight'"])

    # ResNet CLIP (RN50-like keys)
    rn = OrderedDict((k, v) for k, v in clip_sd.items() if not k.startswith("visual."))
    rn["visual.conv1.weight"] = torch.randn(32, 3, 3, 3).half()
    rn["visual.bn1.weight"] = torch.randn(32).half()
    rn["visual.layer1.0.conv1.weight"] = torch.randn(64, 64, 1, 1).half()
    rn["visual.attnpool.positional_embedding"] = torch.randn(50, 2048).half()
    torch.save(rn, d("resnet.pt"))
    tap.check("refuse: ResNet CLIP", expect_refusal, d("resnet.pt"), good_ckpt,
              ["not a ViT", "ResNet visual tower found", "visual."])

    # missing keys, wrong shapes
    def variant_clip(name, edit):
        sd = OrderedDict(clip_sd)
        edit(sd)
        torch.save(sd, d(name))
        return d(name)

    def variant_ckpt(name, edit):
        t = dict(torch.load(good_ckpt)["prompt_learner"])
        edit(t)
        torch.save({"prompt_learner": OrderedDict(t)}, d(name))
        return d(name)

    tap.check("refuse: CLIP missing key", expect_refusal,
              variant_clip("no-lnpost.pt", lambda s: s.pop("visual.ln_post.weight")), good_ckpt,
              ["missing key 'visual.ln_post.weight'", "expected shape [128]"])
    tap.check("refuse: CLIP missing layer", expect_refusal,
              variant_clip("no-layer.pt", lambda s: s.pop("transformer.resblocks.1.attn.in_proj_weight")),
              good_ckpt, ["missing key 'transformer.resblocks.1.attn.in_proj_weight'"])
    tap.check("refuse: CLIP wrong shape", expect_refusal,
              variant_clip("bad-fc.pt", lambda s: s.__setitem__(
                  "visual.transformer.resblocks.2.mlp.c_fc.weight", torch.zeros(500, 128).half())),
              good_ckpt, ["'visual.transformer.resblocks.2.mlp.c_fc.weight' has shape [500, 128]",
                          "expected [512, 128]"])
    tap.check("refuse: CLIP unexpected key", expect_refusal,
              variant_clip("extra.pt", lambda s: s.__setitem__(
                  "visual.transformer.resblocks.0.ls_1.gamma", torch.ones(128).half())),
              good_ckpt, ["unexpected key 'visual.transformer.resblocks.0.ls_1.gamma' [128]"])
    tap.check("refuse: checkpoint missing key", expect_refusal, good_clip,
              variant_ckpt("no-l2b.pth", lambda t: t.pop("patch_meta_net.linear2.bias")),
              ["missing key 'prompt_learner.patch_meta_net.linear2.bias'", "expected shape [128]"])
    tap.check("refuse: checkpoint missing tokenized prompts", expect_refusal, good_clip,
              variant_ckpt("no-tok.pth", lambda t: t.pop("tokenized_prompts_neg")),
              ["missing key 'prompt_learner.tokenized_prompts_neg'", "expected shape [1, 3, 16]"])
    tap.check("refuse: checkpoint wrong shape", expect_refusal, good_clip,
              variant_ckpt("bad-suffix.pth", lambda t: t.__setitem__(
                  "token_suffix_pos", t["token_suffix_pos"][:, :, 1:])),
              ["'prompt_learner.token_suffix_pos' has shape [1, 1, 9, 128]",
               "expected [1, 1, 10, 128]"])
    tap.check("refuse: checkpoint for another text width", expect_refusal, good_clip,
              variant_ckpt("wide.pth", lambda t: t.__setitem__("ctx_pos", torch.zeros(1, 1, 5, 768))),
              ["'prompt_learner.ctx_pos' has shape [1, 1, 5, 768]", "expected [1, 1, n_pos, 128]"])
    tap.check("refuse: prior input not a multiple of the embed dim", expect_refusal, good_clip,
              variant_ckpt("bad-m.pth", lambda t: t.__setitem__(
                  "patch_meta_net.linear1.weight", torch.zeros(20, 321))),
              ["'prompt_learner.patch_meta_net.linear1.weight' has shape [20, 321]",
               "expected [hidden, M*64]"])

    def uneven(t):
        t["tokenized_prompts_neg"] = t["tokenized_prompts_neg"].clone()
        t["tokenized_prompts_neg"][0, 1, 11] = 0
        t["tokenized_prompts_neg"][0, 1, 12] = VOCAB - 1
    tap.check("refuse: abnormality prompts ending at different positions", expect_refusal,
              good_clip, variant_ckpt("uneven.pth", uneven), ["different positions [11, 12, 11]"])

    def overflow(sd):
        for k in list(sd):
            sd[k] = sd[k].float()
        sd["visual.proj"] = sd["visual.proj"].clone()
        sd["visual.proj"][0, 0] = 1e6
    tap.check("refuse: --dtype f16 of an fp32 value beyond fp16's range", expect_refusal,
              variant_clip("big.pt", overflow), good_ckpt, ["'visual.proj' overflows F16"],
              extra=["--dtype", "f16"])

    def nan(t):
        t["ctx_neg"] = t["ctx_neg"].clone()
        t["ctx_neg"][0, 1, 0, 3] = float("nan")
    tap.check("refuse: NaN in the checkpoint", expect_refusal, good_clip,
              variant_ckpt("nan.pth", nan), ["'prompt_learner.ctx_neg' holds a non-finite value"])

    # corrupted files
    raw = open(good_clip, "rb").read()
    open(d("trunc-clip.pt"), "wb").write(raw[:len(raw) // 2])
    raw = open(good_ckpt, "rb").read()
    open(d("trunc-ckpt.pth"), "wb").write(raw[:len(raw) - 100])
    open(d("random.pt"), "wb").write(np.random.RandomState(5).bytes(100000))
    open(d("empty.pt"), "wb").close()
    tap.check("refuse: truncated TorchScript CLIP", expect_refusal, d("trunc-clip.pt"), good_ckpt,
              ["--clip", "truncated or corrupted"], cli=True)
    tap.check("refuse: truncated checkpoint", expect_refusal, good_clip, d("trunc-ckpt.pth"),
              ["--checkpoint", "truncated or corrupted"])
    tap.check("refuse: random bytes as CLIP", expect_refusal, d("random.pt"), good_ckpt,
              ["--clip", "truncated or corrupted"])
    tap.check("refuse: random bytes as checkpoint", expect_refusal, good_clip, d("random.pt"),
              ["--checkpoint", "truncated or corrupted"])
    tap.check("refuse: empty file", expect_refusal, d("empty.pt"), good_ckpt, ["empty"])
    tap.check("refuse: missing file", expect_refusal, d("nope.pt"), good_ckpt, ["no such file"])

    # wrong inputs in the right containers
    tap.check("refuse: arguments swapped", expect_refusal, good_ckpt, good_clip,
              ["pass it as --checkpoint"])
    tap.check("refuse: checkpoint without prompt_learner", expect_refusal, good_clip,
              _save(d("other.pth"), {"model": {"w": torch.zeros(2)}}),
              ["missing key 'prompt_learner'"])
    tap.check("refuse: pickled Python objects (weights_only)", expect_refusal, good_clip,
              _save(d("pickled.pth"), {"prompt_learner": OrderedDict(pl_t), "args": argparse.Namespace(a=1)}),
              ["--unsafe-pickle", "argparse.Namespace"])
    tap.check("refuse: --dual-start needed for a 4-layer tower", expect_refusal, good_clip,
              good_ckpt, ["--dual-start is required", "last 19 layers"], dual_start=False)
    tap.check("refuse: image size not a multiple of the patch", expect_refusal, good_clip,
              good_ckpt, ["image size 50", "--image-size"], extra=["--image-size", "50"])
    with open(d("exists.safetensors"), "wb") as f:
        f.write(b"keep me")
    tap.check("refuse: output exists (no --force)", expect_refusal, good_clip, good_ckpt,
              ["exists", "--force"], out=d("exists.safetensors"))


def _save(path, obj):
    torch.save(obj, path)
    return path


# ---- full mode -----------------------------------------------------------------------------------

FULL = dict(patch_size=14, vision_grid=24, vision_width=1024, vision_layers=24, embed_dim=768,
            text_width=768, text_layers=12, context_length=77, n_pos=5, n_neg=2, n_prompts=10,
            top_m=10, prompt_depth=9, prompt_length=4, prior_hidden=480)


def random_like(shapes, dtype, seed):
    """Random tensors cut from one pool (values do not matter here, only shapes; fast)."""
    gen = torch.Generator().manual_seed(seed)
    pool = (0.02 * torch.randn(1 << 22, generator=gen)).to(dtype)
    out, at = OrderedDict(), 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) if shape else 1
        chunks, left = [], n
        while left:
            take = min(left, pool.numel() - at)
            chunks.append(pool[at:at + take])
            at, left = (at + take) % pool.numel(), left - take
        out[name] = torch.cat(chunks).reshape(shape) if len(chunks) > 1 else chunks[0].clone().reshape(shape)
    return out


def full(args, tmp, tap):
    d = lambda name: os.path.join(tmp, name)  # noqa: E731
    cfg = clip_dims(FULL)
    vocab = 49408
    timings = {}
    ac_info = {}

    def make_inputs():
        t0 = time.perf_counter()
        shapes = OrderedDict((n, s) for n, (s, _, _) in gen_random.clip_schema(cfg).items())
        shapes["token_embedding.weight"] = (vocab, 768)
        sd = random_like(shapes, torch.float16, 1)
        sd["logit_scale"] = torch.tensor(4.6052).half()
        save_clip(sd, d("ViT-L-14-336px.pt"), "torchscript", cfg, vocab)
        t = make_prompt_learner(cfg, sd, 2, vocab)
        save_checkpoint(t, d("epoch_7.pth"))
        n_clip = sum(v.numel() for k, v in sd.items() if k not in ("token_embedding.weight", "logit_scale"))
        deep = (cfg["prompt_depth"] - 1) * cfg["prompt_length"] * 768
        n_pl = sum(v.numel() for k, v in t.items() if not k.startswith(("tokenized", "compound")))
        # AnomalyCLIP's published 9_12_4 layout (n_ctx 12, depth 9, t 4), CLIP's token ids
        ac = make_ac_prompt_learner(sd, 3, vocab, 12, 12, 9, 4)
        sd_ac = save_ac_checkpoint(ac, d("epoch_15.pth"))
        assert tuple(sd_ac["token_suffix_pos"].shape) == tuple(sd_ac["token_suffix_neg"].shape) \
            == (1, 1, 64, 768)
        assert sd_ac["tokenized_prompts_neg"][0, 0, :17].tolist() == \
            [49406] + [343] * 12 + [13568, 14115, 269, 49407]
        ac_info["n_pl"] = sum(v.numel() for k, v in ac.items()
                              if not k.startswith(("tokenized", "compound")))
        timings["inputs"] = time.perf_counter() - t0
        return n_clip, n_pl, deep

    res = tap.check("full-size ViT-L/14@336px TorchScript (fp16) + prompt learner", make_inputs)
    if res is None:
        return
    n_clip, n_pl, deep = res
    diag(f"inputs: CLIP {os.path.getsize(d('ViT-L-14-336px.pt')) / 2**20:.0f} MiB, "
         f"checkpoint {os.path.getsize(d('epoch_7.pth')) / 2**20:.1f} MiB, "
         f"made in {timings['inputs']:.1f} s")
    exp = dict(FULL, vision_heads=16, text_heads=12, dual_start=5, image_size=518, sigma=10.0,
               end_pos_normal=8, end_pos_abnormal=11)
    for dtype, isz in (("f16", 2), ("f32", 4)):
        out = d(f"faprompt-vitl14-336-{dtype}.safetensors")

        def conv(out=out, dtype=dtype, isz=isz):
            summary, _, secs = convert_ok(d("ViT-L-14-336px.pt"), d("epoch_7.pth"), out,
                                          ["--dtype", dtype])
            timings[dtype] = secs
            size = os.path.getsize(out)
            header_end = fapfile.read_header(out)[2]
            want = header_end + n_clip * isz + n_pl * 4 + deep * 2
            assert size == expected_file_size(out) == want, \
                f"file is {size} bytes, dtype {dtype} implies {want}"
            assert summary["parameters"] == n_clip + n_pl + deep
            expect_config(fapfile.read_header(out)[1], exp)
            return f"{secs:.1f} s, {size} bytes"
        if tap.check(f"convert --dtype {dtype}: file size = header + params x itemsize", conv) is None:
            continue

        def loads(out=out):
            c = load_in_core(args.load_model, out)
            for k, v in exp.items():
                assert abs(c[k] - v) < 1e-6, f"core config {k} = {c[k]}, expected {v}"
            assert c["parameters"] == n_clip + n_pl + deep
            return f"{c['parameters']} params, loaded in {c['load_seconds']:.1f} s"
        tap.check(f"the core loads the {dtype} file with the ViT-L configuration", loads)
        os.unlink(out)

    # AnomalyCLIP: the published configuration, default out layers and the old 6,12,18,24
    exp_ac = dict(exp, family="anomalyclip", n_pos=12, n_neg=12, n_prompts=1, top_m=0,
                  prior_hidden=0, end_pos_normal=15, end_pos_abnormal=16, sigma=4.0,
                  out_layers="24")
    for layers in (None, "6,12,18,24"):
        out = d("anomalyclip-vitl14-336.safetensors")
        want_md = dict(exp_ac, out_layers=layers or "24")

        def conv_ac(out=out, layers=layers, want_md=want_md):
            extra = ["--out-layers", layers] if layers else []
            summary, _, secs = convert_ok(d("ViT-L-14-336px.pt"), d("epoch_15.pth"), out, extra)
            timings["anomalyclip" + (f" {layers}" if layers else "")] = secs
            header, md, header_end = fapfile.read_header(out)
            want = header_end + n_clip * 2 + ac_info["n_pl"] * 4 + deep * 2
            assert os.path.getsize(out) == expected_file_size(out) == want
            assert summary["parameters"] == n_clip + ac_info["n_pl"] + deep
            expect_config(md, want_md)
            for k in ("token_suffix_pos", "token_suffix_neg"):
                assert header["prompt_learner." + k]["shape"] == [1, 1, 64, 768], k
            assert not any(".patch_meta_net." in k for k in header)
            return f"{secs:.1f} s, {os.path.getsize(out)} bytes"
        label = f"--out-layers {layers}" if layers else "default out layers 24"
        if tap.check(f"convert AnomalyCLIP 9_12_4 ({label}): size, metadata, suffix shapes",
                     conv_ac) is None:
            continue
        tap.check(f"the core loads the AnomalyCLIP file ({label})", ac_loads, args.load_model,
                  out, want_md)
        os.unlink(out)
    diag("conversion wall time (CLI, incl. python/torch start, sha256 of inputs and output): "
         + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "inputs"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--test-parity", help="path of the test_parity executable (tiny mode)")
    ap.add_argument("--load-model", required=True, help="path of the load_model executable")
    ap.add_argument("--keep", help="keep the files in this directory instead of a temporary one")
    args = ap.parse_args()
    if args.mode == "tiny" and not args.test_parity:
        ap.error("--mode tiny needs --test-parity")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tap = Tap()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        tmp = args.keep
    else:
        tmp = tempfile.mkdtemp(prefix=f"faprompt-convert-{args.mode}-")
    try:
        (tiny if args.mode == "tiny" else full)(args, tmp, tap)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
