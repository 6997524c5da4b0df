"""Where a layered run's Stage I puts its object for each position word: the pose read-out.

For "a large solid red star in the {position} on a white background" and ``--n`` noise vectors (seed 0,
the moving average of G), prints per position word the mean and spread of the drawn translation (x, y in
the image's [-1, 1] frame: left / top negative; Shapes places objects at -0.375, 0 and +0.375) and, where
the run has them, the side logit (``model.g_layer_sides``) or the column and row probabilities of the
cell choice (``model.g_layer_cells``); then per size word ("a {size} solid red star in the center ...") the
drawn scale (the frame's half-width over the image's) and, with ``model.g_layer_sizes``, the size
probabilities. docs/training-recipe.md, seventeenth and eighteenth rounds.

    python experiments/pose_readout.py runs/exp/C26-C18-cells3
    python experiments/pose_readout.py runs/exp/C25-C24-sidex/stage1/checkpoints/step-00002000.pt
"""
from __future__ import annotations

import argparse

import torch

from stackgan.data.shapes import ATTRIBUTES
from stackgan.pipeline import StackGANPipeline

TEMPLATE = "a large solid red star in the {} on a white background"
SIZE_TEMPLATE = "a {} solid red star in the center on a white background"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("state", help="a run folder, model folder or training state file of a layered Stage I")
    p.add_argument("--n", type=int, default=16, help="noise vectors per position word")
    args = p.parse_args()
    pipe = StackGANPipeline.load(args.state)
    G = pipe.stage1_generator.eval()
    layer = getattr(G, "foreground", None)
    if layer is None or layer.anchors:
        raise SystemExit(f"{args.state}: not a layered Stage I with one placement (model.g_layered, no anchor grid)")
    words = ATTRIBUTES["position"]
    emb = pipe.embed([TEMPLATE.format(w) for w in words for _ in range(args.n)])
    z = torch.randn(len(emb), G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        zc = torch.cat([z, G.ca(emb)[0]], dim=1)
        placement = layer.placement(zc, None, emb)
        x, y = (t.view(len(words), args.n) for t in placement[3:5])
        choice = (layer.cell_logits(emb).softmax(-1) if layer.cells
                  else layer.side_logits(emb) if layer.sides else None)
    if layer.cells:
        print(f"cell spacing (x, y): {layer.spacing[0]:.3f}, {layer.spacing[1]:.3f}")
    for i, word in enumerate(words):
        line = f"{word:>13}  x {x[i].mean():+.2f} ± {x[i].std():.2f}  y {y[i].mean():+.2f} ± {y[i].std():.2f}"
        if layer.cells:
            c = choice.view(len(words), args.n, 2, -1)[i].mean(0)
            line += "  column " + " ".join(f"{v:.2f}" for v in c[0]) + "  row " + " ".join(f"{v:.2f}" for v in c[1])
        elif layer.sides:
            line += f"  side logit {choice.view(len(words), args.n)[i].mean():+.2f}"
        print(line)
    sizes = ATTRIBUTES["size"]
    emb = pipe.embed([SIZE_TEMPLATE.format(w) for w in sizes for _ in range(args.n)])
    with torch.no_grad():
        zc = torch.cat([z[:len(emb)], G.ca(emb)[0]], dim=1)
        scale = layer.placement(zc, None, emb)[1].view(len(sizes), args.n)
        probs = layer.size_logits(emb).softmax(-1).view(len(sizes), args.n, -1).mean(1) if layer.sizes else None
    if layer.sizes:
        print("size levels (log-scale added): " + " ".join(f"{v:+.3f}" for v in layer.size_levels))
    for i, word in enumerate(sizes):
        line = f"{word:>13}  scale {scale[i].mean():.3f} ± {scale[i].std():.3f}"
        if probs is not None:
            line += "  size " + " ".join(f"{v:.2f}" for v in probs[i])
        print(line)


if __name__ == "__main__":
    main()
