"""`make demo`: Shapes data -> Stage I -> Stage II -> sample sheet -> evaluation, on a CPU budget."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .config import DEFAULT_PRESET, get_preset
from .data.shapes import generate_shapes
from .evaluation.shapes_eval import evaluate_shapes
from .matching import load_or_train_matcher
from .pipeline import StackGANPipeline
from .training import train
from .training.data import load_train_data
from .training.samples import fixed_captions
from .viz import caption_sheet, stage_sheet

STAGE1_SHARE = 15 / 22  # of the training budget; Stage II refines Stage I at a low learning rate
# the model shipped in the repository (docs/pretrained.md says how it was trained)
PRETRAINED_SHAPES = Path(__file__).resolve().parent.parent / "pretrained" / "shapes"


def compare_with_pretrained(run_dir: Path, captions: list[str], pretrained: Path = PRETRAINED_SHAPES) -> Path | None:
    """A sheet with the final images of this run above those of the shipped pretrained model, same
    captions and seeds; prints both evaluation tables. Returns None when there is no pretrained model."""
    if not (pretrained / "config.json").exists():
        print(f"      no pretrained model at {pretrained}: nothing to compare with")
        return None
    rows = {}
    for name, path in (("this run", run_dir), ("pretrained", pretrained)):
        rows[name] = StackGANPipeline.load(path).generate(captions, seed=0).images
    columns = [[rows[name][i] for name in rows] for i in range(len(captions))]
    sheet = caption_sheet(columns, captions, run_dir / "compare.png", cell=192, labels=list(rows))
    for name, path in (("this run", run_dir), ("pretrained", pretrained)):
        if (path / "eval.md").exists():
            print(f"\n{name} ({path / 'eval.md'}):")
            print("\n".join(line for line in (path / "eval.md").read_text().splitlines() if line.startswith("|")))
    return sheet


def run_demo(data_dir: str | Path, run_dir: str | Path, minutes: float = 24.0) -> dict:
    """`minutes` is the training budget: the image-text matcher (when the preset uses one and
    it is not cached yet), then Stage I and Stage II share what is left."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    t0 = time.monotonic()
    print(f"[1/7] Shapes data in {data_dir}   (= stackgan data shapes --out {data_dir})")
    generate_shapes(data_dir)
    if run_dir.exists():
        old = run_dir.with_name(f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(old)
        print(f"      an earlier {run_dir} was moved to {old}")

    cfg = get_preset(DEFAULT_PRESET)
    times = {"matcher_minutes": 0.0}
    if cfg.stage1.match_weight > 0 or cfg.stage2.match_weight > 0:
        print(f"[2/7] caption embeddings and the image-text matcher (cached in {data_dir}/.stackgan-cache; "
              "stackgan train makes them when needed)")
        _, norm = load_train_data(data_dir, cfg.data, 64)
        t = time.monotonic()
        load_or_train_matcher(data_dir, cfg.data, norm)
        times["matcher_minutes"] = round((time.monotonic() - t) / 60, 2)
    left = max(minutes - times["matcher_minutes"], 2.0)
    m1, m2 = round(left * STAGE1_SHARE, 2), round(left * (1 - STAGE1_SHARE), 2)
    cfg = replace(cfg, stage1=replace(cfg.stage1, minutes=m1), stage2=replace(cfg.stage2, minutes=m2))
    for stage, m in ((1, m1), (2, m2)):
        print(f"[{stage + 2}/7] Stage {'I' * stage}, {m} min   (= stackgan train --stage {stage} "
              f"--data {data_dir} --out {run_dir} --preset {DEFAULT_PRESET} --minutes {m})")
        t = time.monotonic()
        train(cfg, data_dir, run_dir, stage)
        times[f"stage{stage}_minutes"] = round((time.monotonic() - t) / 60, 2)

    print(f"[5/7] sample sheet   (= stackgan generate {run_dir} --captions-file ... --sheet ...)")
    captions = fixed_captions(data_dir)
    out = StackGANPipeline.load(run_dir).generate(captions, seed=0)
    sheet = stage_sheet(out, captions, run_dir / "samples.png", cell=192)

    print(f"[6/7] evaluation   (= stackgan evaluate {run_dir} --data {data_dir})")
    report = evaluate_shapes(run_dir, data_dir)

    print(f"[7/7] this run beside the pretrained model   (= stackgan generate {PRETRAINED_SHAPES} ...)")
    compare = compare_with_pretrained(run_dir, captions)
    total = (time.monotonic() - t0) / 60
    print(f"\ndone in {total:.1f} min (matcher {times['matcher_minutes']} min, Stage I {times['stage1_minutes']} "
          f"min, Stage II {times['stage2_minutes']} min)")
    print(f"  samples:     {sheet}")
    print(f"  evaluation:  {run_dir / 'eval.md'}")
    if compare:
        print(f"  comparison:  {compare}   (top: this run; bottom: the pretrained model)")
    print(f"  model:       {run_dir / 'model'}   (training states: {run_dir}/stage1, {run_dir}/stage2)")
    print(f"  TensorBoard: tensorboard --logdir {run_dir}")
    print(f'  try:         stackgan generate {run_dir} "a large green striped square at the bottom on a '
          f'white background" --out out/')
    return report
