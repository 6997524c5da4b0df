"""Where a Stage-I training step's time goes: the step with each of its optional parts left out.

Builds ``stackgan.training.step.Updater`` for ``fast`` and for a preset, and again for that preset
with one part switched off at a time (the matcher's cell pick, D's contrastive head, the area prior,
the matching loss on half the batch), then times one step of each in turn, round after round, so
that another job on the machine slows them all alike. Reports each one's median and its ratio to
``fast``'s step. Some of these variants are not valid recipes (the cell choice needs the pick); they
are built past the config's checks, for timing only.

    python benchmarks/step_parts.py                          # shapes-layered, 8 rounds
    python benchmarks/step_parts.py --preset shapes-layered --rounds 12 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from stackgan.training.step import Updater
from stackgan.utils import keep_freed_memory
from train_step import STAGE_BATCH, TEXT_DIM, frozen_matcher, networks

PARTS = {  # name: the Stage-I settings that leave the part out
    "without the cell pick": {"pose_pick_weight": 0.0},
    "without D's contrastive head": {"contrast_weight": 0.0},
    "without the area prior": {"mask_weight": 0.0},
    "the cell pick on an eighth of the batch": {"pose_pick_share": 0.125},
    "matching loss on half the batch": {"match_share": 0.5},
    "matching loss on a quarter of the batch": {"match_share": 0.25},
    "matching loss on a quarter, without the cell pick": {"match_share": 0.25, "pose_pick_weight": 0.0},
    "matching loss on a quarter, the cell pick on an eighth": {"match_share": 0.25, "pose_pick_share": 0.125},
}


def updater(preset: str, stage1: dict | None = None) -> Updater:
    cfg, G, D, opt_g, opt_d = networks(preset, 1, torch.device("cpu"), [])
    if stage1:
        cfg = replace(cfg, stage1=replace(cfg.stage1, **stage1))
    G.to(memory_format=torch.channels_last)
    D.to(memory_format=torch.channels_last)
    return Updater(cfg, 1, G, D, opt_g, opt_d, device=torch.device("cpu"), D_for_g=D,
                   matcher=frozen_matcher(cfg, 1, torch.device("cpu")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="shapes-layered")
    ap.add_argument("--rounds", type=int, default=8, help="timed steps of each variant (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `stackgan train` does on a CPU (STACKGAN_MALLOC=system: not)
    variants = {"fast": updater("fast"), args.preset: updater(args.preset)}
    for name, settings in PARTS.items():
        base = getattr(variants[args.preset].sc, next(iter(settings)))
        if base != next(iter(settings.values())):  # only the parts the preset has
            variants[name] = updater(args.preset, settings)
    g = torch.Generator().manual_seed(1)
    B = STAGE_BATCH[1]
    batch = (torch.rand(B, 3, 64, 64, generator=g).mul(2).sub(1).contiguous(memory_format=torch.channels_last),
             torch.randn(B, TEXT_DIM, generator=g), torch.randn(B, TEXT_DIM, generator=g), torch.randn(B, 100, generator=g))
    for step in variants.values():
        for _ in range(args.warmup):
            step(*batch)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            t = time.monotonic()
            step(*batch)
            times[name].append(time.monotonic() - t)
    fast = statistics.median(times["fast"])
    print(f"| Stage-I step ({args.threads} thread(s), batch {B}, median of {args.rounds}) | s | x fast |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {statistics.median(ts) / fast:.2f} |")


if __name__ == "__main__":
    main()
