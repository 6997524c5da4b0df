"""Write a Stage-I training state from an exported model folder (``stackgan export``), so that a new Stage II
can be trained on a shipped Stage I whose run folder is gone (``pretrained/shapes``: the twenty-seventh round
of docs/training-recipe.md trains its Stage II again with the texture critic).

The state holds what Stage II reads from a Stage I: the configuration (the preset given, which must build the
model folder's Stage-I generator exactly: the weights are loaded strictly), the generator's weights (float32;
the folder's may be float16) and the text normalisation. It is not a state to resume Stage I from (no D, no
optimizers, step 0).

    python experiments/stage1_from_model.py pretrained/shapes runs/NEW/stage1/state.pt
    stackgan train --stage 2 --data data/shapes --out runs/NEW --max-steps 600 --minutes 0 [--set ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stackgan.checkpoint import FORMAT_VERSION
from stackgan.config import DEFAULT_PRESET, get_preset, to_dict
from stackgan.models.build import build_generator
from stackgan.pipeline import StackGANPipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an exported model folder (config.json + model.safetensors)")
    p.add_argument("out", type=Path, help="the Stage-I state file to write (RUN/stage1/state.pt)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"the configuration it was trained with ({DEFAULT_PRESET})")
    args = p.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another path (nothing was written)")
    pipe = StackGANPipeline.load(args.model)
    cfg = get_preset(args.preset)
    G1 = build_generator(cfg.model, 1)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in pipe.stage1_generator.state_dict().items()}
    try:
        G1.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise SystemExit(f"{args.model}: its Stage I is not the --preset {args.preset} generator ({e})") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format_version": FORMAT_VERSION, "stage": 1, "step": 0, "config": to_dict(cfg),
                "generator": G1.state_dict(), "text_norm": pipe.text_norm.state_dict()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
