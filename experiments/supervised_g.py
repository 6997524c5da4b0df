"""Probe: can the Stage-I generator draw what it is told when it is shown the answer?

Trains a Stage-I generator without D, supervised: from the attribute vectors of a data folder
made by ``stackgan data attributes`` (precomputed one-hot "embeddings"), the L1 or squared
distance of its image to the real 64 px image. Every ``--eval-every`` steps the folder's
attribute checker reads the generator's images for the test vectors (z = 0, CA's noise 0).
docs/training-recipe.md, sixth round, reports what it found.

    python experiments/supervised_g.py data/shapes-norot-onehot --steps 2000 --loss squared --lr 1e-3 --no-ca-noise
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from stackgan.data.manifest import load_images, read_manifest
from stackgan.evaluation.checker import attribute_accuracy, load_or_train_checker
from stackgan.models.stage1 import Stage1Generator
from stackgan.utils import from_uint8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="a folder made by `stackgan data attributes`")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--variant", default="pt", choices=("pt", "tf", "dfgan"))
    p.add_argument("--fusion", action="store_true", help="cat(z, c) modulates every up-block")
    p.add_argument("--coords", action="store_true", help="x, y coordinate channels in every up-block")
    p.add_argument("--layered", action="store_true", help="an object layer placed by an affine transform")
    p.add_argument("--canvas", default="conv", choices=("conv", "mlp"), help="how --layered draws its object")
    p.add_argument("--background", default="full", choices=("full", "smooth"),
                   help="with --layered: the usual path under the object, or a smooth 4x4 background")
    p.add_argument("--ca", default="tf", choices=("pt", "tf", "none"))
    p.add_argument("--no-ca-noise", action="store_true", help="train with CA's eps = 0 (c = its mean)")
    p.add_argument("--loss", default="squared", choices=("l1", "squared"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--out", type=Path, default=None, help="a PNG of 64 test images at the end")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    train, test = read_manifest(a.data, "train"), read_manifest(a.data, "test")
    images = load_images(a.data, "train", train, 64)  # uint8 [N, 3, 64, 64]
    cond = torch.from_numpy(np.load(a.data / "embeddings-train.npy"))[:, 0]  # [N, D]
    test_cond = torch.from_numpy(np.load(a.data / "embeddings-test.npy"))[:, 0]
    attributes = [r["attributes"] for r in test]
    checker = load_or_train_checker(a.data)
    g = Stage1Generator(cond.shape[1], ngf=a.ngf, ca_variant=a.ca, variant=a.variant, fusion=a.fusion,
                        coords=a.coords, layered=a.layered, canvas=a.canvas,
                        background=a.background)
    opt = torch.optim.Adam(g.parameters(), a.lr, betas=(0.5, 0.999))
    cond_dim = g.ca.cond_dim
    start = time.monotonic()
    for step in range(a.steps + 1):
        if step % a.eval_every == 0 or step == a.steps:
            g.eval()
            with torch.no_grad():
                drawn = g(torch.zeros(len(test_cond), g.z_dim), test_cond, torch.zeros(len(test_cond), cond_dim)).image
            acc = attribute_accuracy(checker, drawn, attributes)
            print(f"step {step:6d}  {time.monotonic() - start:6.0f} s  "
                  + "  ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)
            g.train()
        if step == a.steps:
            break
        idx = torch.randint(0, len(images), (64,))
        eps = torch.zeros(64, cond_dim) if a.no_ca_noise else None
        diff = g(torch.randn(64, g.z_dim), cond[idx], eps).image - from_uint8(images[idx])
        loss = diff.abs().mean() if a.loss == "l1" else diff.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if a.out:
        save_image(drawn[:64] * 0.5 + 0.5, a.out, nrow=8)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
