"""`make demo`: Shapes data -> Stage I -> Stage II -> pictures -> evaluation, on a CPU budget, timed step by step."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from .config import DEFAULT_PRESET, get_preset
from .data.shapes import generate_shapes
from .evaluation.shapes_eval import COLUMNS, evaluate_shapes, score_cells
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
    captions and seeds. Returns None when there is no pretrained model."""
    if not (pretrained / "config.json").exists():
        print(f"      no pretrained model at {pretrained}: nothing to compare with")
        return None
    rows = {}
    for name, path in (("this run", run_dir), ("pretrained", pretrained)):
        rows[name] = StackGANPipeline.load(path).generate(captions, seed=0).images
    columns = [[rows[name][i] for name in rows] for i in range(len(captions))]
    return caption_sheet(columns, captions, run_dir / "compare.png", cell=192, labels=list(rows))


def print_tables(run_dir: Path, pretrained: Path = PRETRAINED_SHAPES) -> None:
    """One table: this run's Stage I and Stage II beside the pretrained model's (their eval.json), each row
    named by its model, so that the two cannot be mistaken for each other."""
    print("\n" + comparison_table({"this run": run_dir, "pretrained": pretrained}))


def comparison_table(models: dict[str, Path]) -> str:
    """A Markdown table of the attribute accuracies in each model folder's ``eval.json`` (rows "<name>,
    Stage I" and "<name>, Stage II"; a folder without one is left out)."""
    rows = []
    for name, path in models.items():
        if not (Path(path) / "eval.json").exists():
            continue
        report = json.loads((Path(path) / "eval.json").read_text())
        for stage in ("stage1", "stage2"):
            if stage in report:
                label = f"{name}, Stage {'I' * int(stage[-1])}"
                rows.append(f"| {label} | " + " | ".join(score_cells(report[stage])) + " |")
    header = "| model | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1)
    return header + "\n" + "\n".join(rows)


class Timeline:
    """Wall time of each step of the demo, printed as a short table at the end."""

    def __init__(self):
        self.start = self._last = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def done(self, name: str) -> float:
        now = time.monotonic()
        self.steps.append((name, (now - self._last) / 60))
        self._last = now
        return self.steps[-1][1]

    def table(self) -> str:
        width = max(len(name) for name, _ in self.steps)
        lines = [f"  {name:<{width}}  {minutes:5.1f} min" for name, minutes in self.steps]
        total = (time.monotonic() - self.start) / 60
        return "\n".join(lines + [f"  {'total':<{width}}  {total:5.1f} min"])


def run_demo(data_dir: str | Path, run_dir: str | Path, minutes: float = 18.0) -> dict:
    """`minutes` is the budget from the caption embeddings to the end of Stage II: the embeddings
    and the image-text matcher (when the preset uses one; each only when not cached yet), then
    Stage I and Stage II share what is left. The pictures are written (and their paths printed)
    as soon as training ends; the evaluation follows."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    clock = Timeline()
    print(f"[1/6] Shapes data in {data_dir}   (= stackgan data shapes --out {data_dir})")
    generate_shapes(data_dir)
    clock.done("Shapes data")
    if run_dir.exists():
        old = run_dir.with_name(f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(old)
        print(f"      an earlier {run_dir} was moved to {old}")

    cfg = get_preset(DEFAULT_PRESET)
    matcher = cfg.stage1.match_weight > 0 or cfg.stage2.match_weight > 0
    print(f"[2/6] caption embeddings{' and the image-text matcher' if matcher else ''} "
          f"(cached in {data_dir}/.stackgan-cache; stackgan train makes them when needed)")
    _, norm = load_train_data(data_dir, cfg.data, 64)
    if matcher:
        load_or_train_matcher(data_dir, cfg.data, norm)
    left = max(minutes - clock.done("caption embeddings" + (" + matcher" if matcher else "")), 2.0)
    m1, m2 = round(left * STAGE1_SHARE, 2), round(left * (1 - STAGE1_SHARE), 2)
    cfg = replace(cfg, stage1=replace(cfg.stage1, minutes=m1), stage2=replace(cfg.stage2, minutes=m2))
    for stage, m in ((1, m1), (2, m2)):
        print(f"[{stage + 2}/6] Stage {'I' * stage}, {m} min   (= stackgan train --stage {stage} "
              f"--data {data_dir} --out {run_dir} --preset {DEFAULT_PRESET} --minutes {m})")
        train(cfg, data_dir, run_dir, stage)
        clock.done(f"Stage {'I' * stage} (image cache + training)")

    print(f"[5/6] pictures   (= stackgan generate {run_dir} --captions-file ... --sheet ...)")
    captions = fixed_captions(data_dir)
    out = StackGANPipeline.load(run_dir).generate(captions, seed=0)
    sheet = stage_sheet(out, captions, run_dir / "samples.png", cell=192)
    print(f"      samples:     {sheet}   (top: Stage I, 64 px; bottom: Stage II, 256 px)")
    compare = compare_with_pretrained(run_dir, captions)
    if compare:
        print(f"      comparison:  {compare}   (top: this run; bottom: the pretrained model)")
    clock.done("pictures")

    print(f"[6/6] evaluation   (= stackgan evaluate {run_dir} --data {data_dir})")
    report = evaluate_shapes(run_dir, data_dir)
    clock.done("evaluation")
    print_tables(run_dir)

    print(f"\ntimeline:\n{clock.table()}")
    print(f"\n  samples:     {sheet}")
    if compare:
        print(f"  comparison:  {compare}")
    print(f"  evaluation:  {run_dir / 'eval.md'}")
    print(f"  model:       {run_dir / 'model'}   (training states: {run_dir}/stage1, {run_dir}/stage2)")
    print(f"  TensorBoard: tensorboard --logdir {run_dir}")
    print("\nnext:")
    print(f'  stackgan generate {run_dir} "a large green striped square at the bottom on a white background" '
          f"--out out/ --sheet out/sheet.png   # your own sentence")
    print(f"  stackgan serve {run_dir}   # a web page at http://127.0.0.1:8000/: type a sentence, see both stages")
    print(f'  stackgan viz z {run_dir} "a small blue star on a black background" --out out/z.png   '
          "# one sentence, many noise vectors")
    return report
