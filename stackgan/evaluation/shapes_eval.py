"""`stackgan evaluate` on Shapes: how often generated images show the attributes of their caption."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

from ..data.manifest import DataError, load_images, read_manifest
from ..data.shapes import ATTRIBUTES
from ..pipeline import StackGANPipeline
from ..text.cache import precomputed_embeddings
from ..text.encoders import PRECOMPUTED
from ..utils import atomic_path, from_uint8
from .checker import WEIGHTS_NAME, load_or_train_checker, predict, prediction_scores
from .outline import OutlineJudge, read_shapes

COLUMNS = list(ATTRIBUTES) + ["all", "held_out_pair", "shape_outline", "shape_overlap"]
OUTLINE_TRAIN = 2000  # real training images the outline judge is fitted on


def evaluate_shapes(checkpoint: str | Path, data_dir: str | Path, num_samples: int | None = None,
                    seed: int = 0, out_dir: str | Path | None = None, progress: bool = True,
                    device: str | None = None, retrain_checker: bool = False) -> dict:
    """Generate one image per test full caption (seed ``seed + i``), read the attributes back with
    the checker trained on real Shapes images, and report accuracy per attribute, all six
    together and shape+color on the held-out pairs, for Stage I and Stage II; and the shape as a
    second judge that reads only the object's outline sees it (``shape_outline``, :mod:`.outline`),
    which a generator cannot satisfy with patterns that a CNN reads as a shape, and as a third that
    lays the four ideal shapes over the object's mask (``shape_overlap``; ``shape_reads``, what it reads
    for each shape word, "none" where no shape overlaps the object by 0.75).

    Writes ``eval.json`` and ``eval.md`` to ``out_dir`` (default: the run or model folder).
    ``retrain_checker`` trains the checker again instead of using the cached or shipped one.
    """
    checkpoint, data_dir = Path(checkpoint), Path(data_dir)
    records = read_manifest(data_dir, "test")[:num_samples]
    missing = [i for i, r in enumerate(records) if set(r.get("attributes", {})) != set(ATTRIBUTES)]
    if missing:
        raise DataError(f"{data_dir / 'test.jsonl'}: record {missing[0] + 1} has no Shapes attributes; "
                        "`stackgan evaluate` judges Shapes data sets only")
    captions = [r.get("full_caption") or r["captions"][0] for r in records]
    attributes = [r["attributes"] for r in records]
    held_out = torch.tensor([bool(r.get("held_out", False)) for r in records])

    checker = load_or_train_checker(data_dir, progress=progress, retrain=retrain_checker)
    with open(data_dir / Path(WEIGHTS_NAME).with_suffix(".json"), encoding="utf-8") as f:
        real = json.load(f)["test_accuracy"]
    pipe = StackGANPipeline.load(checkpoint).to(device)
    embeddings = None
    if pipe.text_encoder == PRECOMPUTED:  # no sentences: the test split's own vectors (first per image)
        emb, _ = precomputed_embeddings(data_dir, "test", len(read_manifest(data_dir, "test")))
        embeddings = pipe.text_norm(emb[:len(records), 0])
    images = pipe.generate(None if embeddings is not None else captions, embeddings=embeddings, seed=seed,
                           batch_size=32, progress=progress).stages
    judge, shapes = _outline_judge(data_dir), _shapes(records)
    real_outline, real_overlap = _real_shape_scores(data_dir, len(records))
    report = {"checkpoint": str(checkpoint), "data": str(data_dir), "num_samples": len(records),
              "condition": "precomputed test embeddings" if embeddings is not None else "full test captions",
              "held_out_samples": int(held_out.sum()), "seed": seed, "checker_on_real_images": real,
              "outline_on_real_images": real_outline, "overlap_on_real_images": real_overlap}
    for stage in ("stage1", "stage2"):
        if stage in images:
            x = from_uint8(images[stage])
            preds = predict(checker, x)  # read once: the scores and the texture reads
            report[stage] = prediction_scores(preds, attributes, held_out)
            if judge is not None:
                report[stage]["shape_outline"] = _accuracy(judge.predict(x), shapes)
            read = read_shapes(x)
            report[stage]["shape_overlap"] = _accuracy(read, shapes)
            report[stage]["shape_reads"] = shape_reads(read, records)
            report[stage]["texture_reads"] = texture_reads(preds["texture"], records)

    out_dir = Path(out_dir) if out_dir else (checkpoint if checkpoint.is_dir() else checkpoint.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "eval.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    table, reads = markdown_table(report), reads_table(report)
    if reads:
        reads = (f"\nWhat the overlap judge reads for each shape word (none: no ideal shape overlaps the "
                 f"object by 0.75):\n\n{reads}\n")
    textures = reads_table(report, "texture_reads", ATTRIBUTES["texture"])
    if textures:
        reads += f"\nWhat the checker reads for each texture word:\n\n{textures}\n"
    with atomic_path(out_dir / "eval.md") as tmp:
        tmp.write_text(f"# Shapes attribute accuracy\n\n{checkpoint} on {len(records)} test captions "
                       f"({report['held_out_samples']} held-out pairs), seed {seed}\n\n{table}\n{reads}")
    print(table + ("\n" + reads if reads else ""))
    print(f"report: {out_dir / 'eval.json'}, {out_dir / 'eval.md'}")
    return report


@functools.lru_cache(maxsize=4)
def _outline_judge(data_dir: Path) -> OutlineJudge | None:
    """The outline judge fitted on the first OUTLINE_TRAIN real training images, or None (and a note)
    when the folder has no training split of Shapes records to fit it on. Fitted once per folder and
    process: `stackgan evaluate` with several checkpoints reuses it."""
    train = read_manifest(data_dir, "train")[:OUTLINE_TRAIN] if (data_dir / "train.jsonl").exists() else []
    if len({r.get("attributes", {}).get("shape") for r in train} - {None}) < 2:
        print(f"{data_dir}: no training images of Shapes to fit the outline judge on; shape_outline not reported")
        return None
    return OutlineJudge.fit(from_uint8(load_images(data_dir, "train", train, 64, progress=False)), _shapes(train))


@functools.lru_cache(maxsize=4)
def _real_shape_scores(data_dir: Path, count: int) -> tuple[float | None, float]:
    """The outline judge's (None without one) and the overlap judge's accuracy on the first ``count`` real
    test images: once per folder and process, as the outline judge is fitted."""
    records = read_manifest(data_dir, "test")[:count]
    images, shapes = from_uint8(load_images(data_dir, "test", records, 64, progress=False)), _shapes(records)
    judge = _outline_judge(data_dir)
    outline = _accuracy(judge.predict(images), shapes) if judge is not None else None
    return outline, _accuracy(read_shapes(images), shapes)


def _shapes(records: list[dict]) -> torch.Tensor:
    return torch.tensor([ATTRIBUTES["shape"].index(r["attributes"]["shape"]) for r in records])


def _accuracy(read: torch.Tensor, shapes: torch.Tensor) -> float:
    return (read == shapes).float().mean().item()


READS = list(ATTRIBUTES["shape"]) + ["none"]  # what the overlap judge can read (-1: none)


def shape_reads(read: torch.Tensor, records: list[dict]) -> dict[str, dict[str, float]]:
    """For each shape word of the captions, the share of its images that the overlap judge reads as each
    shape or as none (index -1): ``{"triangle": {"circle": 0.0, ..., "none": 0.9}, ...}`` (the confusion's rows)."""
    names = ATTRIBUTES["shape"]
    return _confusion_rows(read, _shapes(records), names, {name: i for i, name in enumerate(names)} | {"none": -1})


def texture_reads(read: torch.Tensor, records: list[dict]) -> dict[str, dict[str, float]]:
    """For each texture word of the captions, the share of its images that the checker reads as each texture:
    ``{"striped": {"solid": 0.0, "striped": 0.7, "dotted": 0.3}, ...}`` (the confusion's rows)."""
    names = ATTRIBUTES["texture"]
    true = torch.tensor([names.index(r["attributes"]["texture"]) for r in records])
    return _confusion_rows(read, true, names, {name: i for i, name in enumerate(names)})


def _confusion_rows(read: torch.Tensor, true: torch.Tensor, names, labels: dict[str, int]) -> dict[str, dict[str, float]]:
    """For each caption word ``names[t]`` present in ``true``, the share of its images read as each of ``labels``
    (a label's name to the index a judge reads for it)."""
    return {names[t]: {label: (read[true == t] == i).float().mean().item() for label, i in labels.items()}
            for t in range(len(names)) if (true == t).any()}


def reads_table(report: dict, key: str = "shape_reads", reads: list[str] = READS) -> str:
    """A judge's reads per caption word (rows) for each stage, as markdown (default: the overlap judge's
    per shape word; ``key="texture_reads"`` with the texture names: the checker's per texture word);
    "" without them."""
    rows = []
    for stage in ("stage1", "stage2"):
        for word, row in (report.get(stage, {}).get(key) or {}).items():
            rows.append(f"| {stage.replace('stage', 'Stage ')} | {word} | " + " | ".join(f"{row[r]:.2f}" for r in reads)
                        + " |")
    if not rows:
        return ""
    header = "| images | caption says | " + " | ".join(f"read {r}" for r in reads) + " |\n|" + "---|" * (len(reads) + 2)
    return header + "\n" + "\n".join(rows)


def score_cells(scores: dict) -> list[str]:
    """One table row's cells: each of ``COLUMNS`` to 3 decimals, "-" where missing or NaN."""
    return ["-" if scores.get(c) is None or math.isnan(scores[c]) else f"{scores[c]:.3f}" for c in COLUMNS]


def markdown_table(report: dict) -> str:
    rows = []
    real = {k: dict(v) for k, v in report["checker_on_real_images"].items()}
    for key, column in (("outline_on_real_images", "shape_outline"), ("overlap_on_real_images", "shape_overlap")):
        if report.get(key) is not None:  # (none: no train split for the outline judge, or an older report)
            for v in real.values():
                v[column] = report[key]
    for name, scores in [(f"real images ({k}px)", v) for k, v in real.items()] + [
            (s.replace("stage", "Stage "), report[s]) for s in ("stage1", "stage2") if s in report]:
        rows.append(f"| {name} | " + " | ".join(score_cells(scores)) + " |")
    header = "| images | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1)
    return header + "\n" + "\n".join(rows)
