"""Input-pipeline throughput: samples per second that the training loop's data source delivers.

Measures ``TrainData.batch`` (random 64-of-76 / 256-of-304 crop, random flip, caption choice,
wrong captions, uint8 -> float) on a prepared data folder, the way training calls it. Run::

    stackgan data prepare ../shared/data/flowers --out data/flowers
    python benchmarks/loader.py --data data/flowers            # prints a table, writes JSON with --json

The first pass over a memory-mapped cache reads it from disk; ``--warmup`` batches come first
and are not timed, and the timed batches are drawn from the whole set.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from stackgan.config import apply_overrides, get_preset
from stackgan.training.data import load_train_data


def measure(data, batch_size: int, batches: int, warmup: int) -> float:
    for step in range(warmup):
        data.batch(step, batch_size)
    t = time.monotonic()
    for step in range(warmup, warmup + batches):
        data.batch(step, batch_size)
    return batches * batch_size / (time.monotonic() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a prepared data folder (stackgan data prepare)")
    p.add_argument("--augment", default="crop_flip", choices=("crop_flip", "none"))
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    cfg = apply_overrides(get_preset("paper"), [f"data.augment={args.augment}"]).data
    results = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
               "augment": args.augment, "rows": []}
    for size, batch_size in ((64, 64), (256, 16)):
        data, _ = load_train_data(args.data, cfg, size, progress=True)
        rate = measure(data, batch_size, args.batches, args.warmup)
        results["rows"].append({"size": size, "batch_size": batch_size, "samples_per_s": round(rate, 1),
                                "images": len(data)})
    print(f"| size | batch | samples/s | images | ({results['cpus']} CPUs, {results['torch_threads']} torch threads, "
          f"augment {args.augment}) |")
    for r in results["rows"]:
        print(f"| {r['size']} | {r['batch_size']} | {r['samples_per_s']:,.0f} | {r['images']:,} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
