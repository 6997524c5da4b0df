"""Paper-style evaluation of a checkpoint: FID / KID / IS against the test split and R-precision.

Samples: ``num_samples`` images (default 30,000, the papers' count) for the test split's
captions, all of them in turn (image i draws caption ``i mod C`` and seed ``seed + i``). Real
images: the test split at the stage's resolution (64 or 256 px); their Inception features are
cached in ``DATA/.stackgan-cache/fidelity/``.

R-precision follows AttnGAN / DM-GAN: for each generated image, its true caption is ranked
among 99 captions of other test images by cosine similarity in a joint text-image space; the
score is how often the true one comes first (R = 1). The space is this project's image-text
matcher (``stackgan.matching``: a small CNN on 64 px images and a projection of the model's own
text embeddings, trained on the data's train split with a contrastive loss, cached), made with
the ``data`` settings the model was trained with (:func:`matcher_settings`).

Noise variety (``zvar``, :func:`noise_variety`): what the noise z changes. For the first caption
of each of the first 100 test images, 8 images with 8 seeds; the standard deviation of each pixel
over the 8, averaged over pixels, channels and captions, on the 0-255 scale. 0 means G ignores z
(every sentence gets one image).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import STATE_NAME, load_state, stage_dir
from ..config import DataConfig, from_dict
from ..data.manifest import load_images, manifest_path, read_manifest
from ..utils import cache_dir, from_uint8
from ..pipeline import GenerationOutput, StackGANPipeline
from .fidelity import TensorImages, compute_metrics

DEFAULT_SAMPLES = 30_000
SAMPLE_METRICS = ("fid", "kid", "is", "rprec")  # the metrics computed on the num_samples images
ZVAR_CAPTIONS, ZVAR_NOISES = 100, 8


@torch.no_grad()
def generate_for_captions(pipe: StackGANPipeline, captions: list[str], unique_emb: torch.Tensor, n: int, seed: int,
                          batch_size: int = 64, progress: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``n`` images (caption ``i mod len(captions)``, seed ``seed + i``; ``unique_emb`` their normalized
    embeddings ``[C, D]``): uint8 per stage, and the embeddings used ``[n, D]``."""
    which = torch.arange(n) % len(captions)
    out = []
    for start in tqdm(range(0, n, batch_size), desc="sampling", unit="batch", disable=not progress):
        idx = which[start:start + batch_size]
        out.append(pipe.generate(embeddings=unique_emb[idx], seeds=list(range(seed + start, seed + start + len(idx))),
                                 batch_size=batch_size))
    return GenerationOutput.cat(out).stages, unique_emb[which]


@torch.no_grad()
def r_precision(matcher, images: torch.Tensor, text: torch.Tensor, pool: torch.Tensor, pool_ids: torch.Tensor,
                true_ids: torch.Tensor, candidates: int = 99, seed: int = 0, batch_size: int = 256) -> float:
    """Share of ``images`` (uint8) whose own caption ``text[i]`` outranks ``candidates`` captions of
    other images drawn from ``pool`` (``pool_ids``: the image each pool caption belongs to)."""
    g = torch.Generator().manual_seed(seed)
    hits = 0
    pool_codes = matcher.encode_text(pool)  # [P, E]
    for s in range(0, len(images), batch_size):
        img = matcher.encode_image(from_uint8(images[s:s + batch_size]))  # [b, E]
        own = (img * matcher.encode_text(text[s:s + batch_size])).sum(1)  # [b]
        for j in range(len(img)):
            draw = torch.randint(0, len(pool), (candidates * 3,), generator=g)
            draw = draw[pool_ids[draw] != true_ids[s + j]][:candidates]  # captions of other images
            hits += int((pool_codes[draw] @ img[j] < own[j]).all())
    return hits / len(images)


@torch.no_grad()
def noise_variety(pipe: StackGANPipeline, emb: torch.Tensor, noises: int = ZVAR_NOISES, seed: int = 0,
                  batch_size: int = 64) -> dict[str, float]:
    """Per stage: the mean over pixels and captions of the standard deviation across ``noises``
    images of each caption (embeddings ``emb [C, D]``, normalized), drawn with seeds
    ``seed, seed + 1, ...``; uint8 scale (0: the noise changes nothing)."""
    repeated = emb.repeat_interleave(noises, 0)  # [C * noises, D]
    stages = pipe.generate(embeddings=repeated, seeds=list(range(seed, seed + len(repeated))),
                           batch_size=batch_size).stages
    return {stage: round(img.float().view(len(emb), noises, *img.shape[1:]).std(1).mean().item(), 3)
            for stage, img in stages.items()}


def evaluate_generation(checkpoint: str | Path, data_dir: str | Path, metrics, num_samples: int | None = None,
                        seed: int = 0, inception_weights=None, device: str | None = None,
                        progress: bool = True) -> dict:
    """``{"stage1": {metric: value}, "stage2": {...}, "num_samples": n}`` for fid, kid, is, rprec, zvar."""
    data_dir = Path(data_dir)
    pipe = StackGANPipeline.load(checkpoint).to(device)
    records = read_manifest(data_dir, "test")
    report: dict = {"num_samples": 0}
    if "zvar" in metrics:
        firsts = pipe.embed([r["captions"][0] for r in records[:ZVAR_CAPTIONS]])  # [<=100, D]
        for stage, v in noise_variety(pipe, firsts, seed=seed).items():
            report.setdefault(stage, {})["zvar"] = v
        report["zvar_captions"], report["zvar_noises"] = len(firsts), ZVAR_NOISES
    if not any(m in SAMPLE_METRICS for m in metrics):
        return report
    captions = [c for r in records for c in r["captions"]]
    caption_emb = pipe.embed(captions)  # [C, D], normalized; samples and R-precision's pool
    n = num_samples or DEFAULT_SAMPLES
    images, text = generate_for_captions(pipe, captions, caption_emb, n, seed, progress=progress)
    report.update({"num_samples": n, "num_test_captions": len(captions)})
    matcher = None
    if "rprec" in metrics:
        from ..matching import load_or_train_matcher
        data_cfg = matcher_settings(checkpoint, pipe)
        matcher = load_or_train_matcher(data_dir, data_cfg, pipe.text_norm, progress=progress).cpu()
        counts = torch.tensor([len(r["captions"]) for r in records])
        pool_ids = torch.repeat_interleave(torch.arange(len(records)), counts)  # caption -> its image
        true_ids = pool_ids[torch.arange(n) % len(captions)]
    for stage, fake in images.items():
        size = fake.shape[-1]
        res: dict = {}
        fid_metrics = [m for m in metrics if m in ("fid", "kid", "is")]
        if fid_metrics:
            real = load_images(data_dir, "test", records, size, progress)
            key = hashlib.sha256(manifest_path(data_dir, "test").read_bytes() + str(size).encode()).hexdigest()[:16]
            res.update(compute_metrics(TensorImages(fake), TensorImages(real), fid_metrics, inception_weights,
                                       real_cache_name=f"test-{size}-{key}", cache_root=cache_dir(data_dir) / "fidelity",
                                       progress=progress))
        if matcher is not None:
            res["rprec"] = r_precision(matcher, fake, text, caption_emb, pool_ids, true_ids, seed=seed)
            res["rprec_encoder"] = "stackgan.matching image-text matcher (64 px CNN + text projection, trained on train)"
        report.setdefault(stage, {}).update(res)
    return report


def matcher_settings(checkpoint: str | Path, pipe: StackGANPipeline) -> DataConfig:
    """The data settings R-precision's matcher is made with: those the model was trained with,
    where the checkpoint records them (a run folder's or state file's training state, a format-1
    model folder), else the defaults with the model's text encoder and normalization."""
    path = Path(checkpoint)
    states = [path] if path.is_file() else [stage_dir(path, s) / STATE_NAME for s in (2, 1)]
    for state in (s for s in states if s.is_file()):
        return from_dict(load_state(state)["config"]).data
    meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    if meta.get("format_version") == 1:
        return from_dict(meta["config"]).data
    return DataConfig(text_encoder=pipe.text_encoder, text_norm=pipe.text_norm_kind)


def fidelity_markdown(report: dict) -> str:
    keys = [k for k in ("fid", "kid", "is", "rprec", "zvar") if any(k in report.get(s, {}) for s in ("stage1", "stage2"))]
    names = {"rprec": "R-precision", "zvar": "noise variety"}
    lines = ["| images | " + " | ".join(names.get(k, k.upper()) for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for stage in ("stage1", "stage2"):
        if stage in report:
            vals = [report[stage].get(k) for k in keys]
            lines.append(f"| Stage {stage[-1]} | " + " | ".join("" if v is None else f"{v:.4g}" for v in vals) + " |")
    return "\n".join(lines)


def save_report(out_dir: Path, checkpoint, report: dict) -> str:
    """Write ``eval-generation.json`` and ``.md`` to ``out_dir``; returns the Markdown table."""
    from ..utils import atomic_path
    table = fidelity_markdown(report)
    with atomic_path(out_dir / "eval-generation.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(out_dir / "eval-generation.md") as tmp:
        what = [f"{report['num_samples']} samples"] if report["num_samples"] else []
        if "zvar_captions" in report:
            what.append(f"noise variety over {report['zvar_captions']} captions x {report['zvar_noises']} noises")
        tmp.write_text(f"# {checkpoint}: {', '.join(what)}\n\n{table}\n")
    return table
