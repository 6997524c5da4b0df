"""A sheet of a run's Stage-I images: one row per shape word (or per word of ``--by``), large objects.

Rows: circle, square, triangle, star (``--by texture``: solid, striped, dotted; any attribute); columns: the first ``--n`` large-object test conditions of
that shape (their own colour, texture, position and background), noise seed 0, the moving average of
G. A run on the oracle condition (``stackgan data attributes``) gets their one-hot vectors, any other
run their full test captions. docs/training-recipe.md, fourteenth round, shows one.

    python experiments/shape_rows.py runs/exp/R18-R17-matchfoils/stage1/state.pt --out sheet.png
    python experiments/shape_rows.py runs/exp/C7-R3-matcherz2-shapefoils --data data/shapes --out sheet.png
    python experiments/shape_rows.py runs/exp/C18-C14-pattern4 --data data/shapes --by texture --out sheet.png
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from stackgan.data.foils import one_hot
from stackgan.data.manifest import read_manifest
from stackgan.data.shapes import ATTRIBUTES
from stackgan.pipeline import StackGANPipeline
from stackgan.text.encoders import PRECOMPUTED


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("state", help="a training state file or run folder")
    p.add_argument("--data", default="data/shapes-onehot", help="the oracle folder whose test conditions to draw")
    p.add_argument("--n", type=int, default=10, help="images per row")
    p.add_argument("--scale", type=int, default=1, help="enlarge the sheet this many times (nearest)")
    p.add_argument("--by", default="shape", choices=list(ATTRIBUTES), help="the attribute whose words make the rows")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args()
    pipe = StackGANPipeline.load(args.state)
    large = [r for r in read_manifest(args.data, "test") if r["attributes"]["size"] == "large"]
    rows = []
    for word in ATTRIBUTES[args.by]:
        chosen = [r for r in large if r["attributes"][args.by] == word][:args.n]
        if pipe.text_encoder == PRECOMPUTED:  # the oracle: the attributes' one-hot vectors
            cond = pipe.text_norm(torch.tensor(np.stack([one_hot(r["attributes"]) for r in chosen])))
            images = pipe.generate(embeddings=cond, seed=0, stage=1).stage1  # uint8 [n, 3, 64, 64]
        else:
            images = pipe.generate([r.get("full_caption") or r["captions"][0] for r in chosen], seed=0, stage=1).stage1
        rows.append(torch.cat(list(images), dim=2))
    sheet = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    img = Image.fromarray(sheet)
    if args.scale > 1:
        img = img.resize((img.width * args.scale, img.height * args.scale), Image.NEAREST)
    img.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
