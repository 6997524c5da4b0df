"""Write a model folder whose Stage I comes from one exported model and whose Stage II comes from another: a
new Stage I judged under a shipped Stage II that was not trained on it (the twenty-ninth and thirtieth rounds
of docs/training-recipe.md; `runs/exp/H05` was made this way).

``--stage1`` is a Stage-I model folder (``stackgan export RUN/stage1/state.pt --out ...``) or a two-stage one;
``--stage2`` a two-stage model folder. The new folder takes ``generator.stage1.*`` and the text normalisation
from the first, every other Stage-II tensor and the Stage-II configuration from the second. The two Stage-I
configurations must be the same (the Stage-II weights read the Stage-I image and pattern of that generator).
``--sharp`` turns on ``model.stage2_sharp`` in the written configuration (no new weights). The loaded result
is checked by building the pipeline from it (weights loaded strictly) before this script returns.

    stackgan export runs/exp/F05/stage1/checkpoints/step-00009000.pt --out runs/exp/f05-9000 --half
    python experiments/merge_stages.py --stage1 runs/exp/f05-9000 --stage2 pretrained/shapes --sharp \\
        --out runs/exp/H05-9000
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stackgan.pipeline import StackGANPipeline

NORM = ("text_norm.mean", "text_norm.std")


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config, weights = folder / "config.json", folder / "model.safetensors"
    for f in (config, weights):
        if not f.is_file():
            raise SystemExit(f"{f}: not found (a model folder holds config.json and model.safetensors)")
    return json.loads(config.read_text()), load_file(weights)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage1", type=Path, required=True, help="model folder whose Stage I (and text norm) is used")
    p.add_argument("--stage2", type=Path, required=True, help="two-stage model folder whose Stage II is used")
    p.add_argument("--out", type=Path, required=True, help="model folder to write (must not exist)")
    p.add_argument("--sharp", action="store_true", help="turn on model.stage2_sharp in the written configuration")
    args = p.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another path (nothing was written)")
    cfg1, w1 = _read(args.stage1)
    cfg2, w2 = _read(args.stage2)
    if "stage2" not in cfg2["generator"]:
        raise SystemExit(f"{args.stage2}/config.json: no Stage II in this model (generator.stage2 is missing)")
    if cfg1["generator"]["stage1"] != cfg2["generator"]["stage1"]:
        raise SystemExit(f"the Stage-I configurations differ: {args.stage1} {cfg1['generator']['stage1']} against "
                         f"{args.stage2} {cfg2['generator']['stage1']}")
    for key in ("text_encoder", "text_norm"):
        if cfg1.get(key) != cfg2.get(key):
            raise SystemExit(f"config.json '{key}' differs: {cfg1.get(key)} ({args.stage1}) against "
                             f"{cfg2.get(key)} ({args.stage2})")
    prefix = "generator.stage1." if "stage2" in cfg1["generator"] else "generator."
    stage1 = {"generator.stage1." + k[len(prefix):]: v for k, v in w1.items() if k.startswith(prefix)}
    old1 = {k for k in w2 if k.startswith("generator.stage1.")}
    if set(stage1) != old1:
        raise SystemExit(f"the Stage-I tensors differ in name: {sorted(set(stage1) ^ old1)[:6]}")
    merged = {k: v for k, v in w2.items() if k not in old1 and k not in NORM}
    merged.update({k: v.to(w2[k].dtype) for k, v in stage1.items()})  # each as the tensor it replaces is stored
    merged.update({k: w1[k] for k in NORM})
    shift = (w1["text_norm.mean"].float() - w2["text_norm.mean"].float()).abs().max().item()
    config = json.loads(json.dumps(cfg2))
    if args.sharp:
        config["generator"]["stage2"]["sharp"] = True
    args.out.mkdir(parents=True)
    save_file(merged, args.out / "model.safetensors")
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    StackGANPipeline.load(args.out)  # refuses a folder whose weights do not fit its configuration
    print(f"wrote {args.out}: Stage I from {args.stage1}, Stage II from {args.stage2}"
          f"{', model.stage2_sharp on' if args.sharp else ''} (text-norm means differ by at most {shift:.2g})")


if __name__ == "__main__":
    main()
