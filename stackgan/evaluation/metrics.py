"""What ``stackgan evaluate`` measures: the choice of metrics, one checkpoint's numbers, several
checkpoints side by side (the command line only parses and prints).

Example::

    metrics = checkpoint_metrics(parse_metrics("fid,kid"), "data/shapes")   # ["attributes", "fid", "kid"]
    result = evaluate_checkpoint("runs/demo", "data/shapes", metrics, num_samples=2000)
    result.metrics["stage2"]["fid"]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

METRICS = ("attributes", "fid", "kid", "is", "rprec", "zvar", "dcheck")
FOLDER_METRICS = ("fid", "kid", "is")  # what two image folders can be compared by


def parse_metrics(text: str | None) -> list[str] | None:
    """``--metrics a,b`` as a list (None when not given), every name known."""
    if not text:
        return None
    metrics = [m.strip() for m in text.split(",")]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"--metrics: unknown {unknown}; choose from {', '.join(METRICS)}")
    return metrics


def folder_metrics(metrics: list[str] | None) -> list[str]:
    """The metrics of a comparison of two image folders (default FID and KID)."""
    metrics = metrics or ["fid", "kid"]
    if set(metrics) - set(FOLDER_METRICS):
        raise UsageError("two folders can be compared by fid, kid and is only")
    return metrics


def checkpoint_metrics(metrics: list[str] | None, data_dir: str | Path) -> list[str]:
    """The metrics of checkpoints on ``data_dir``: default attribute accuracy on Shapes data, else
    FID and KID; on Shapes attribute accuracy always joins the generation metrics (not the D check)."""
    from ..data.manifest import read_manifest

    is_shapes = all("attributes" in r for r in read_manifest(data_dir, "test")[:10])
    metrics = metrics or (["attributes"] if is_shapes else ["fid", "kid"])
    if is_shapes and "attributes" not in metrics and "dcheck" not in metrics:
        metrics = ["attributes"] + metrics  # Shapes: attribute accuracy in the same report
    return metrics


def report_dir(checkpoint: str | Path, out: str | Path | None) -> Path:
    """Where a checkpoint's reports go: ``out``, else the run or model folder (a state file's folder)."""
    checkpoint = Path(checkpoint)
    return Path(out) if out else (checkpoint if checkpoint.is_dir() else checkpoint.parent)


@dataclass
class CheckpointResult:
    """One checkpoint's numbers per stage (``{"stage1": {"attr_shape": ..., "fid": ...}, ...}``),
    and, when FID / KID / IS / R-precision ran, their Markdown table and the Inception files used."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    generation_table: str | None = None
    extractors: list[str] = field(default_factory=list)


def evaluate_checkpoint(checkpoint: str | Path, data_dir: str | Path, metrics: list[str], *,
                        num_samples: int | None = None, seed: int = 0, out: str | Path | None = None,
                        inception_weights=None, device=None, retrain_checker: bool = False) -> CheckpointResult:
    """``metrics`` (not ``dcheck``) of one checkpoint; writes ``eval.json`` / ``eval.md`` (attributes)
    and ``eval-generation.json`` / ``.md`` (the others) to :func:`report_dir`. ``retrain_checker``
    trains the Shapes attribute checker again instead of using the cached or shipped one."""
    result = CheckpointResult()
    if "attributes" in metrics:
        from .shapes_eval import evaluate_shapes
        rep = evaluate_shapes(checkpoint, data_dir, num_samples=num_samples, seed=seed, out_dir=out, device=device,
                              retrain_checker=retrain_checker)
        for stage in ("stage1", "stage2"):
            if stage in rep:
                result.metrics.setdefault(stage, {}).update({f"attr_{k}": round(v, 4) for k, v in rep[stage].items()
                                                                if isinstance(v, float)})
    generation = [m for m in metrics if m != "attributes"]
    if generation:
        from .generation import evaluate_generation, save_report
        rep = evaluate_generation(checkpoint, data_dir, generation, num_samples=num_samples, seed=seed,
                                  inception_weights=inception_weights, device=device)
        folder = report_dir(checkpoint, out)
        folder.mkdir(parents=True, exist_ok=True)
        result.generation_table = save_report(folder, checkpoint, rep)
        result.extractors = sorted({rep[s]["extractor"] for s in ("stage1", "stage2")
                                    if "extractor" in rep.get(s, {})})
        for stage in ("stage1", "stage2"):
            if stage in rep:
                result.metrics.setdefault(stage, {}).update({k: v for k, v in rep[stage].items() if isinstance(v, float)})
    return result


def side_by_side_markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Several checkpoints' numbers as one Markdown table: a row per checkpoint and stage, a
    column per number any of them has."""
    keys = sorted({k for r in results.values() for s in r.values() for k in s})
    lines = ["| checkpoint | stage | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for ckpt, r in results.items():
        for stage, vals in r.items():
            cells = [f"{vals[k]:.4g}" if k in vals else "" for k in keys]
            lines.append(f"| {ckpt} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
