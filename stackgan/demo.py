"""`make demo`: Shapes data -> Stage I -> Stage II -> sample sheet -> evaluation, on a CPU budget."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .config import get_preset
from .data.shapes import generate_shapes
from .evaluation.shapes_eval import evaluate_shapes
from .pipeline import StackGANPipeline
from .training import train
from .training.samples import fixed_captions
from .viz import stage_sheet

STAGE1_SHARE = 15 / 22  # of the training budget; Stage II refines Stage I at a low learning rate


def run_demo(data_dir: str | Path, run_dir: str | Path, minutes: float = 22.0) -> dict:
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    t0 = time.monotonic()
    print(f"[1/5] Shapes data in {data_dir}   (= stackgan data shapes --out {data_dir})")
    generate_shapes(data_dir)
    if run_dir.exists():
        old = run_dir.with_name(f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(old)
        print(f"      an earlier {run_dir} was moved to {old}")

    cfg = get_preset("shapes-cpu")
    m1, m2 = round(minutes * STAGE1_SHARE, 2), round(minutes * (1 - STAGE1_SHARE), 2)
    cfg = replace(cfg, stage1=replace(cfg.stage1, minutes=m1), stage2=replace(cfg.stage2, minutes=m2))
    times = {}
    for stage, m in ((1, m1), (2, m2)):
        print(f"[{stage + 1}/5] Stage {'I' * stage}, {m} min   (= stackgan train --stage {stage} "
              f"--data {data_dir} --out {run_dir} --preset shapes-cpu --minutes {m})")
        t = time.monotonic()
        train(cfg, data_dir, run_dir, stage)
        times[f"stage{stage}_minutes"] = round((time.monotonic() - t) / 60, 2)

    print(f"[4/5] sample sheet   (= stackgan generate {run_dir} --captions-file ... --sheet ...)")
    captions = fixed_captions(data_dir)
    out = StackGANPipeline.load(run_dir).generate(captions, seed=0)
    sheet = stage_sheet(out, captions, run_dir / "samples.png", cell=192)

    print(f"[5/5] evaluation   (= stackgan evaluate {run_dir} --data {data_dir})")
    report = evaluate_shapes(run_dir, data_dir)
    total = (time.monotonic() - t0) / 60
    print(f"\ndone in {total:.1f} min (Stage I {times['stage1_minutes']} min, Stage II {times['stage2_minutes']} min)")
    print(f"  samples:     {sheet}")
    print(f"  evaluation:  {run_dir / 'eval.md'}")
    print(f"  model:       {run_dir / 'model'}   (training states: {run_dir}/stage1, {run_dir}/stage2)")
    print(f"  TensorBoard: tensorboard --logdir {run_dir}")
    print(f'  try:         stackgan generate {run_dir} "a large green striped square at the bottom on a '
          f'white background" --out out/')
    return report
