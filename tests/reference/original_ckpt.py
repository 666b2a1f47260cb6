#!/usr/bin/python3
"""The PyTorch reference run directly on the authors' original files.

Builds the object faprompt_ref.run() computes with (a `.cfg` dict and float32
tensors by name) from the two files users start from, without going through
our model file or models/faprompt-convert:

  CLIP        loaded as the authors' model_load.load() does: torch.jit.load
              first (OpenAI's TorchScript archive), torch.load when that fails
              (a plain state dict, or an OpenCLIP {"state_dict": ...} with
              "module." prefixes, as their load_state_dict() unwraps it);
  checkpoint  torch.load(path)["prompt_learner"], as their test.py does.

Dimensions come from the shapes as in the authors' build_model; the prompt
dimensions from the prompt learner's tensors, the end-token positions from
the argmax of its tokenized prompts (their encode_text_learn gathers
x[arange, tokenized.argmax(-1)]). What the files do not hold is passed in:
image size, sigma and the first V-V layer (default: the authors' DPAM_layer
= 20, i.e. the last 19 layers are dual).

    original_ckpt.py --clip ViT-L-14-336px.pt --checkpoint epoch_7.pth \\
        [--dual-start D] --image-size S --width W --height H --seed N \\
        [--sigma X] -o golden.safetensors
writes a golden file in make_golden.py's format for tests/test_parity.c.
"""

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import fapfile  # noqa: E402
import make_golden  # noqa: E402

# entries of the CLIP state dict inference does not read
UNUSED_CLIP = ("input_resolution", "context_length", "vocab_size", "token_embedding.weight",
               "logit_scale")


def load_clip_state_dict(path):
    """As the authors' model_load.load(): JIT archive first, then a saved state dict."""
    try:
        sd = torch.jit.load(path, map_location="cpu").eval().state_dict()
    except RuntimeError:
        sd = torch.load(path, map_location="cpu")
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    sd = dict(sd)
    if next(iter(sd)).startswith("module"):
        sd = {k[7:]: v for k, v in sd.items()}
    return sd


def load_prompt_learner(path):
    return dict(torch.load(path, map_location="cpu")["prompt_learner"])


class OriginalModel:
    """Same interface as faprompt_ref.Model: .cfg and model[name] -> float32 tensor."""

    def __init__(self, clip_path, ckpt_path, image_size=518, sigma=10.0, dual_start=None):
        sd = load_clip_state_dict(clip_path)
        pl = load_prompt_learner(ckpt_path)
        self.path = f"{clip_path}+{ckpt_path}"

        # the authors' build_model (ViT branch)
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = len([k for k in sd if k.startswith("visual.") and
                             k.endswith(".attn.in_proj_weight")])
        vision_patch_size = sd["visual.conv1.weight"].shape[-1]
        grid_size = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        embed_dim = sd["text_projection"].shape[1]
        context_length = sd["positional_embedding"].shape[0]
        transformer_width = sd["ln_final.weight"].shape[0]
        transformer_heads = transformer_width // 64
        transformer_layers = len(set(k.split(".")[2] for k in sd
                                     if k.startswith("transformer.resblocks")))
        if dual_start is None:
            dual_start = vision_layers - 19  # DAPM_replace(DPAM_layer=20): resblocks[-1..-19]

        # the prompt learner (FAPrompt.py's AnomalyCLIP_PromptLearner)
        _, k, n_neg, _ = pl["ctx_neg"].shape
        n_pos = pl["ctx_pos"].shape[2]
        depth = len([key for key in pl if key.startswith("compound_prompts_text.")]) + 1
        t = pl["compound_prompts_text.0"].shape[0] if depth > 1 else 0
        hidden, m_in = pl["patch_meta_net.linear1.weight"].shape
        end_n = int(pl["tokenized_prompts_pos"].reshape(-1, context_length)[0].argmax())
        end_a = pl["tokenized_prompts_neg"].reshape(-1, context_length).argmax(dim=-1)
        assert bool((end_a == end_a[0]).all()), "abnormality prompts end at different positions"

        self.cfg = {
            "image_size": int(image_size), "patch_size": int(vision_patch_size),
            "vision_grid": int(grid_size), "vision_width": int(vision_width),
            "vision_heads": int(vision_width // 64), "vision_layers": int(vision_layers),
            "dual_start": int(dual_start), "embed_dim": int(embed_dim),
            "text_width": int(transformer_width), "text_heads": int(transformer_heads),
            "text_layers": int(transformer_layers), "context_length": int(context_length),
            "n_pos": int(n_pos), "n_neg": int(n_neg), "n_prompts": int(k),
            "top_m": int(m_in // embed_dim), "prompt_depth": int(depth),
            "prompt_length": int(t), "prior_hidden": int(hidden),
            "end_pos_normal": end_n, "end_pos_abnormal": int(end_a[0]),
            "sigma": float(sigma),
        }
        # on CPU the authors call model.float(): every weight widened to float32
        self.w = {name: v.float() for name, v in sd.items() if name not in UNUSED_CLIP}
        for name, v in pl.items():
            if v.is_floating_point():  # the tokenized prompts are read above, not used after
                self.w["prompt_learner." + name] = v.float()

    def __getitem__(self, name):
        return self.w[name]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dual-start", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=518)
    ap.add_argument("--sigma", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=72)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    model = OriginalModel(args.clip, args.checkpoint, args.image_size, args.sigma,
                          args.dual_start)
    image = make_golden.make_test_image(args.width, args.height, args.seed)
    tensors = make_golden.golden_tensors(model, image, args.image_size, args.sigma)
    md = {"image_size": str(args.image_size), "sigma": repr(float(args.sigma)),
          "model": os.path.basename(args.clip) + "+" + os.path.basename(args.checkpoint)}
    nbytes = fapfile.write(args.output, tensors, md)
    print(f"original_ckpt: S={args.image_size} sigma={args.sigma} "
          f"score={float(tensors['score'][0]):.6f} -> {args.output} ({nbytes} bytes)")


if __name__ == "__main__":
    main()
