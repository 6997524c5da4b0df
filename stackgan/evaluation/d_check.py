"""Does the discriminator read the text? The one-word-foil check on real Shapes test images.

For each attribute, the share of real test images whose trained D scores (image, its full
caption) above (image, the same caption with only that attribute's words changed). 1.0: D
reads that attribute; 0.5: D ignores it (a D that never has to read the shape to reject wrong
captions stays near 0.5 for shape). ``stackgan evaluate RUN --data DATA --metrics dcheck``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import load_state, stage_dir, STATE_NAME
from ..config import from_dict
from ..data.foils import ORACLE_MARK, one_hot, one_hot_foil, shapes_foil
from ..data.manifest import load_images, read_manifest
from ..data.shapes import ATTRIBUTES
from ..models.build import build_discriminator, build_generator
from ..errors import CheckpointError, DataError
from ..text.norm import TextNorm
from ..utils import atomic_path, from_uint8


@torch.no_grad()
def preference_rate(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
                    right: torch.Tensor, foil: torch.Tensor, batch_size: int = 64) -> float:
    """Share of ``images [N, 3, H, W]`` for which ``score(images, text) [N]`` is higher with
    ``right [N, D]`` than with ``foil [N, D]``; a tie counts one half."""
    wins = []
    for i in range(0, len(images), batch_size):
        sl = slice(i, i + batch_size)
        a, b = score(images[sl], right[sl]).float(), score(images[sl], foil[sl]).float()
        wins.append((a > b).float() + 0.5 * (a == b).float())
    return torch.cat(wins).mean().item()


def _state_file(checkpoint: Path, stage: int) -> Path:
    if checkpoint.is_file():
        return checkpoint
    path = stage_dir(checkpoint, stage) / STATE_NAME
    if not path.exists():
        raise CheckpointError(f"{path}: not found; the D check needs a training run folder (its state file holds D), "
                        "not an exported model folder")
    return path


def discriminator_check(checkpoint: str | Path, data_dir: str | Path, stage: int = 1, num_samples: int = 500,
                        seed: int = 0, device: str | None = None) -> dict[str, float]:
    """Per attribute, the rate at which the run's D prefers (real test image, its full caption)
    to (image, the caption with that attribute changed), D seeing batches of 64 real images as
    in training; see the module docstring."""
    checkpoint, data_dir = Path(checkpoint), Path(data_dir)
    state = load_state(_state_file(checkpoint, stage))
    cfg = from_dict(state["config"])
    device = torch.device(device or "cpu")
    D = build_discriminator(cfg.model, state.get("stage", stage))
    D.load_state_dict(state["discriminator"])
    # train mode: D's BatchNorm layers (the paper's D) normalise each batch of real images by its
    # own statistics, as in training, where real and fake batches are normalised separately; their
    # running statistics mix both and are never used in training. (Nothing is saved.)
    D.to(device).train()
    G = None
    if cfg.model.d_text_path == "mu":  # D reads G's CA mean of the sentence
        G = build_generator(cfg.model, state.get("stage", stage))
        G.load_state_dict(state["generator"])
        G.to(device).eval()
    norm = TextNorm(cfg.model.text_dim)
    norm.load_state_dict(state["text_norm"])

    def score(x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if G is not None:
            text = G.ca(text)[1]  # [N, cond]; either stage's generator has its own CA
        return D.cond_logits(D(x.to(device)), text)  # [N]

    size = 64 if state.get("stage", stage) == 1 else 256
    return foil_preference(score, data_dir, cfg.data.text_encoder, norm, size, num_samples, seed, device)


def foil_preference(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], data_dir: str | Path,
                    text_encoder: str, norm: TextNorm, size: int, num_samples: int = 500, seed: int = 0,
                    device: str | torch.device = "cpu") -> dict[str, float]:
    """Per attribute, :func:`preference_rate` of ``score(images, text)`` on the first ``num_samples``
    real Shapes test images at ``size`` px: their full caption against the caption with that
    attribute's words changed (:func:`~stackgan.data.foils.shapes_foil`), both encoded by
    ``text_encoder`` and normalized by ``norm``. For the oracle data (``stackgan data attributes``)
    the texts are one-hot attribute vectors, only normalized."""
    data_dir = Path(data_dir)

    def embed(rows) -> torch.Tensor:  # captions, or one-hot attribute vectors -> normalized [N, D]
        if not torch.is_tensor(rows):
            from ..text import get_encoder
            rows = get_encoder(text_encoder).encode(rows)
        return norm(rows).to(device)

    records = read_manifest(data_dir, "test")[:num_samples]
    if any(set(r.get("attributes", {})) != set(ATTRIBUTES) for r in records):
        raise DataError(f"{data_dir / 'test.jsonl'}: the foil check needs Shapes test records (with attributes)")
    images = from_uint8(load_images(data_dir, "test", records, size, progress=False))  # [N, 3, s, s]
    oracle = (data_dir / ORACLE_MARK).exists()
    rng = np.random.default_rng(seed)
    if oracle:
        right = embed(torch.tensor(np.stack([one_hot(r["attributes"]) for r in records])))
    else:
        captions = [r.get("full_caption") or r["captions"][0] for r in records]
        right = embed(captions)
    rates = {}
    for name in ATTRIBUTES:
        if oracle:
            foil = embed(torch.tensor(np.stack([one_hot_foil(r["attributes"], rng, {name: 1.0}) for r in records])))
        else:
            made = [shapes_foil(c, rng, {name: 1.0}) for c in captions]
            if any(m is None for m in made):
                raise DataError(f"{data_dir / 'test.jsonl'}: a full caption does not name the {name}")
            foil = embed([m[0] for m in made])
        rates[name] = preference_rate(score, images, right, foil)
    return rates


def d_check_markdown(results: dict[str, dict[str, float]]) -> str:
    header = "| run | " + " | ".join(ATTRIBUTES) + " |\n|---|" + "---|" * len(ATTRIBUTES)
    rows = [f"| {run} | " + " | ".join(f"{r[a]:.3f}" for a in ATTRIBUTES) + " |" for run, r in results.items()]
    return header + "\n" + "\n".join(rows)


def save_d_check(out_dir: Path, results: dict, stage: int = 1) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("d_check.json" if stage == 1 else f"d_check-stage{stage}.json")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return path
