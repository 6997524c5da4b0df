"""How clean a layered Stage I's radial outlines are, per shape word, on the Shapes test captions.

For each test caption the outline's Fourier coefficients of log-radius (``model.g_layer_radial``) are read with the
noise set to 0 (the sentence's own outline) and with the seed's noise. A shape with ``n``-fold symmetry (square 4,
triangle 3, star 5) has only the harmonics ``n, 2n, ...`` (the data's true amplitudes are printed beside); a circle
has none. ``off`` is the share of the outline's energy (squared amplitudes) in harmonics the shape does not have:
lumps, which 64 px hides and an outline drawn sharp at 256 px shows. ``amp`` is each harmonic's mean amplitude.

    python experiments/outline_harmonics.py pretrained/shapes --data data/shapes
    python experiments/outline_harmonics.py runs/exp/O2/stage1/checkpoints/step-00003000.pt --data data/shapes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stackgan.data.shapes import SYMMETRY, outline_amplitudes as true_amplitudes
from stackgan.pipeline import StackGANPipeline



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a run folder, model folder or state / checkpoint file with a radial-outline Stage I")
    p.add_argument("--data", type=Path, default=Path("data/shapes"), help="the Shapes folder (its test.jsonl)")
    p.add_argument("--captions", type=int, default=1000, help="test captions read (default 1000)")
    args = p.parse_args()
    pipe = StackGANPipeline.load(args.model)
    G1 = pipe.stage1_generator
    layer = getattr(G1, "foreground", None)
    if layer is None or not getattr(layer, "radial", 0):
        raise SystemExit(f"{args.model}: its Stage I has no radial outline (model.g_layer_radial)")
    rows = [json.loads(line) for line in (args.data / "test.jsonl").open(encoding="utf-8")][: args.captions]
    shapes = [r["attributes"]["shape"] for r in rows]
    emb = pipe.embed([r["full_caption"] for r in rows])
    z = pipe.noise(list(range(len(rows))), None)[0]
    K = layer.radial
    with torch.inference_mode():
        G1.eval()
        weight = next(layer.outline.parameters())
        c = G1.ca(emb.to(weight.device, weight.dtype))[0]
        amps = {}
        for name, noise in (("sentence (z = 0)", torch.zeros_like(z)), ("with noise", z)):
            coef = layer.outline(torch.cat([noise.to(c), c], 1)).float().view(-1, 2, K)
            amps[name] = coef.square().sum(1).sqrt()  # [N, K]
    print(f"{args.model}: outline harmonics 1..{K} (mean amplitude of log-radius); off = energy share in harmonics "
          f"the shape does not have")
    for shape, n in SYMMETRY.items():
        idx = [i for i, s in enumerate(shapes) if s == shape]
        if not idx:
            continue
        own = torch.zeros(K, dtype=torch.bool)
        if n:
            own[n - 1 :: n] = True
        print(f"  {shape:8s} data     amp {' '.join(f'{a:.2f}' for a in true_amplitudes(shape, K))}")
        for name, a in amps.items():
            a = a[idx]
            energy = a.square()
            off = (energy[:, ~own].sum(1) / energy.sum(1).clamp_min(1e-12)).mean().item()
            print(f"  {'':8s} {name[:8]:8s} amp {' '.join(f'{x:.2f}' for x in a.mean(0))}  off {off:.2f}  "
                  f"rms lumps {energy[:, ~own].sum(1).sqrt().mean():.3f}")


if __name__ == "__main__":
    main()
