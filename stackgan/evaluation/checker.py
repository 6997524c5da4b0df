"""Shapes attribute checker: a small CNN that reads the six attributes back from an image.

`stackgan evaluate` uses it to judge generated Shapes images against the attributes their
captions asked for. It is trained once on the real train split and cached beside the data set
as `checker.safetensors` + `checker.json` (weights and config only; nothing is unpickled).
The package ships the checker trained on the default Shapes data set (`stackgan data shapes`
with its default sizes and seed): for that data set it is checked on the real test images,
its accuracy printed, and copied beside the data instead of trained again (11 minutes on two
CPU cores). Any other data set, a new checker format or ``retrain=True`` trains one.

    checker = load_or_train_checker("data/shapes")
    scores = attribute_accuracy(checker, fake_images, intended_attributes)
    scores["all"]  # fraction of images with all six attributes right
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data.manifest import load_images, read_manifest
from ..data.shapes import ATTRIBUTES
from ..models.blocks import CHECKER_INPUT
from ..utils import default_device, from_uint8, load_module_files, save_module
from ..errors import ConfigError

SIZE = CHECKER_INPUT  # the checker's input resolution (the layout models.blocks.image_trunk("checker") copies)
FORMAT_VERSION = 4
WEIGHTS_NAME = "checker.safetensors"
# trained on the default Shapes data set by train_checker (its .json says how and on which data)
SHIPPED = Path(__file__).resolve().parent / "shapes_checker.safetensors"
SHIPPED_MIN_ACCURACY = 0.9  # a shipped checker reading any attribute of real test images worse is not used


class AttributeChecker(nn.Module):
    """Small CNN over a 128x128 image (stride-2 stages, then a stride-1 stage at 8x8 that helps
    tell small triangles from stars) with one linear head per Shapes attribute.

    The stem has stride 2 (not 4) so 4 px stripes and ~1.75 px dots survive at 128. Heads see
    the last map's mean and max (what and how much) and a coarse flattened map (where).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96, 128),
                 strides: tuple[int, ...] = (2, 2, 2, 2, 1), where_channels: int = 8,
                 num_classes: dict[str, int] | None = None):
        super().__init__()
        num_classes = num_classes or {n: len(v) for n, v in ATTRIBUTES.items()}
        self.config = {"widths": list(widths), "strides": list(strides),
                       "where_channels": where_channels, "num_classes": dict(num_classes)}
        if len(widths) != len(strides):
            raise ConfigError(f"{len(widths)} widths but {len(strides)} strides")
        layers, cin, side = [], 3, SIZE
        for i, (w, s) in enumerate(zip(widths, strides)):
            k = 4 if i == 0 and s == 2 else 3  # even kernel for the stem: no lost border column
            layers += [nn.Conv2d(cin, w, k, stride=s, padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin, side = w, side // s
        self.trunk = nn.Sequential(*layers)
        self.where = nn.Conv2d(cin, where_channels, 1)
        feat = 2 * cin + where_channels * side * side
        self.heads = nn.ModuleDict({n: nn.Linear(feat, c) for n, c in num_classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # channels-last runs the convolutions several times faster on CPU
        x = resize_to_checker(x).contiguous(memory_format=torch.channels_last)  # [B, 3, 128, 128]
        h = self.trunk(x)  # [B, C, 8, 8]
        feat = torch.cat([h.mean((2, 3)), h.amax((2, 3)), self.where(h).flatten(1)], 1)  # [B, F]
        return {n: head(feat) for n, head in self.heads.items()}  # name -> [B, classes]


def resize_to_checker(x: torch.Tensor) -> torch.Tensor:
    """Area-resize larger images, bilinearly enlarge smaller ones, to [B, 3, 128, 128]."""
    if x.shape[-2:] == (SIZE, SIZE):
        return x
    if x.shape[-2] >= SIZE and x.shape[-1] >= SIZE:
        return F.interpolate(x, size=(SIZE, SIZE), mode="area")
    return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Save / load (safetensors + json, written atomically)

def save_checker(checker: AttributeChecker, path: str | Path, meta: dict | None = None) -> None:
    """Write weights to `path` (.safetensors) and config + `meta` to the same name with .json."""
    save_module(checker, path, {"format_version": FORMAT_VERSION, "config": checker.config, **(meta or {})})


def load_checker(path: str | Path, device: str | torch.device = "cpu") -> AttributeChecker:
    """Rebuild a checker from `path` (.safetensors) and its .json config; returns it in eval mode."""
    info, weights = load_module_files(path)
    checker = AttributeChecker(**info["config"])
    checker.load_state_dict(weights)
    return checker.to(device).eval()


def _fingerprint(data_dir: Path) -> str:
    return hashlib.sha256((data_dir / "train.jsonl").read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Data

def _load_split(data_dir: Path, split: str, size: int) -> tuple[torch.Tensor, list[dict]]:
    """A manifest split as uint8 [N, 3, size, size] (area-resized, cached) and its records."""
    records = read_manifest(data_dir, split)
    return load_images(data_dir, split, records, size, progress=False), records


def _targets(attributes: list[dict]) -> dict[str, torch.Tensor]:
    """Attribute dicts (value names or indices) -> name -> LongTensor [N] of class indices."""
    return {n: torch.tensor([a[n] if isinstance(a[n], int) else values.index(a[n])
                             for a in attributes], dtype=torch.long)
            for n, values in ATTRIBUTES.items()}


def _rotate_hue(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the colors of half the batch about the gray axis by a random angle: colors leave
    the palette, so only shape, size, texture and position are learned from those images. In
    train, shape and color are correlated (four pairs are held out); this stops the shape heads
    from reading colors. Returns the images and the mask of untouched images (whose color
    labels still hold)."""
    b = x.shape[0]
    rotate = torch.rand(b, generator=gen) < 0.5
    theta = torch.rand(b, generator=gen) * 2 * torch.pi * rotate  # 0 = untouched
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    axis = torch.full((3,), 3 ** -0.5)
    cross = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]]) * 3 ** -0.5  # [axis]_x
    # Rodrigues: R = cos I + sin [k]_x + (1 - cos) k k^T, per image -> [B, 3, 3]
    rot = cos * torch.eye(3) + sin * cross + (1 - cos) * torch.outer(axis, axis)
    x = torch.einsum("bij,bjhw->bihw", rot.to(x.device), x).clamp(-1, 1)
    return x, ~rotate.to(x.device)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """About a third of the batch through 64x64 and back (Stage-I look), then small Gaussian noise."""
    b = x.shape[0]
    low = torch.rand(b, generator=gen) < 0.35
    if low.any():
        small = F.avg_pool2d(x[low], 2)  # [b', 3, 64, 64]
        x = x.clone()
        x[low] = F.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    sigma = 0.05 * torch.rand(b, 1, 1, 1, generator=gen)
    return x + sigma.to(x.device) * torch.randn(x.shape, generator=gen).to(x.device)


# ---------------------------------------------------------------------------------------------
# Training

def train_checker(data_dir: str | Path, out_path: str | Path | None = None, steps: int = 3000,
                  batch_size: int = 64, lr: float = 3e-3, seed: int = 0, progress: bool = True,
                  device: str | torch.device | None = None) -> AttributeChecker:
    """Train a checker on `data_dir`'s train split, score it on the test split, save it.

    Weights go to `out_path` (default `data_dir/checker.safetensors`), config, data
    fingerprint and test accuracy (at 128 and 64 input) to the same name with .json.
    """
    data_dir = Path(data_dir)
    out_path = Path(out_path) if out_path is not None else data_dir / WEIGHTS_NAME
    device = default_device(device)
    images, records = _load_split(data_dir, "train", SIZE)  # [N, 3, 128, 128] uint8
    targets = _targets([r["attributes"] for r in records])
    labels = torch.stack([targets[n] for n in ATTRIBUTES], 1)  # [N, 6]

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    checker = AttributeChecker().to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(checker.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    start = time.monotonic()
    bar = tqdm(range(steps), desc="attribute checker", disable=not progress)
    for _ in bar:
        # fetch batch
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x = from_uint8(images[idx].to(device))  # [B, 3, 128, 128]
        x, colors_hold = _rotate_hue(_augment(x, gen), gen)
        y = labels[idx].to(device)  # [B, 6]
        # update
        logits = checker(x)
        loss = 0.0
        for i, n in enumerate(ATTRIBUTES):
            per = F.cross_entropy(logits[n], y[:, i], reduction="none")  # [B]
            if n in ("color", "background"):
                per = per[colors_hold]
            loss = loss + per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    train_seconds = time.monotonic() - start
    checker = checker.to(memory_format=torch.contiguous_format).eval()  # as load_checker builds it

    accuracy = accuracy_on_test_split(checker, data_dir) if (data_dir / "test.jsonl").exists() else {}
    meta = {"fingerprint": _fingerprint(data_dir), "steps": steps, "batch_size": batch_size,
            "seed": seed, "train_seconds": round(train_seconds, 1), "test_accuracy": accuracy}
    save_checker(checker, out_path, meta)
    return checker


def accuracy_on_test_split(checker: AttributeChecker, data_dir: Path) -> dict[str, dict[str, float]]:
    """The checker's accuracy on the real test split, at its own size and at Stage-I size (64)."""
    accuracy = {}
    for size in (SIZE, 64):
        test, test_records = _load_split(data_dir, "test", size)
        held_out = torch.tensor([bool(r.get("held_out", False)) for r in test_records])
        accuracy[str(size)] = attribute_accuracy(
            checker, from_uint8(test), [r["attributes"] for r in test_records], held_out=held_out)
    return accuracy


def _usable(path: Path, fingerprint: str) -> bool:
    """``path`` and its .json exist, in today's format, trained on the data set with ``fingerprint``."""
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return False
    meta = json.loads(meta_path.read_text())
    return meta.get("format_version") == FORMAT_VERSION and meta.get("fingerprint") == fingerprint


def _adopt_shipped(data_dir: Path, path: Path, device) -> AttributeChecker | None:
    """The shipped checker, checked on ``data_dir``'s real test images and saved beside the data
    with the accuracy measured here; None when it reads some attribute worse than
    ``SHIPPED_MIN_ACCURACY`` (then a new one is trained)."""
    checker = load_checker(SHIPPED, device)
    accuracy = accuracy_on_test_split(checker, data_dir)
    worst = min((v, k) for k, v in accuracy[str(SIZE)].items() if k in ATTRIBUTES)
    shown = ", ".join(f"{k} {accuracy[str(SIZE)][k]:.3f}" for k in ATTRIBUTES)
    if worst[0] < SHIPPED_MIN_ACCURACY:
        print(f"the shipped attribute checker reads {worst[1]} of the real test images at {worst[0]:.3f} "
              f"(< {SHIPPED_MIN_ACCURACY}): training a new one")
        return None
    print(f"attribute checker: the shipped one ({SHIPPED.name}), on the {data_dir} real test images: {shown}")
    meta = {k: v for k, v in json.loads(SHIPPED.with_suffix(".json").read_text()).items()
            if k not in ("format_version", "config")}
    save_checker(checker, path, {**meta, "source": "shipped with the package", "test_accuracy": accuracy})
    return checker


def load_or_train_checker(data_dir: str | Path, progress: bool = True,
                          device: str | torch.device | None = None, retrain: bool = False,
                          **train_kwargs) -> AttributeChecker:
    """The checker of ``data_dir``: the one cached beside the data if it was trained on this
    train split; else the shipped one when this is the data set it was trained on (checked on
    the real test images first); else a new one. ``retrain=True`` always trains a new one.

    ``train_kwargs`` (steps, batch_size, seed, ...) go to ``train_checker`` when it has to train.
    """
    data_dir = Path(data_dir)
    path = data_dir / WEIGHTS_NAME
    device = default_device(device)
    if not retrain:
        fingerprint = _fingerprint(data_dir)
        if _usable(path, fingerprint):
            return load_checker(path, device)
        if _usable(SHIPPED, fingerprint):
            checker = _adopt_shipped(data_dir, path, device)
            if checker is not None:
                return checker
    return train_checker(data_dir, path, progress=progress, device=device, **train_kwargs)


# ---------------------------------------------------------------------------------------------
# Scoring

@torch.no_grad()
def predict(checker: nn.Module, images: torch.Tensor, batch_size: int = 256
            ) -> dict[str, torch.Tensor]:
    """Predicted class index per attribute for images [B, 3, H, W] in [-1, 1]."""
    was_training = checker.training
    checker.eval()
    device = next(checker.parameters()).device
    out: dict[str, list[torch.Tensor]] = {n: [torch.empty(0, dtype=torch.long)] for n in ATTRIBUTES}
    for chunk in images.split(batch_size):
        logits = checker(chunk.to(device, torch.float32))
        for n in out:
            out[n].append(logits[n].argmax(1).cpu())
    checker.train(was_training)
    return {n: torch.cat(v) for n, v in out.items()}


def score_predictions(preds: dict[str, torch.Tensor], attributes: list[dict]) -> dict[str, float]:
    """Per-attribute accuracy and "all" (all six right) of predictions against intended attributes."""
    targets = _targets(attributes)
    correct = {n: preds[n].cpu() == targets[n] for n in ATTRIBUTES}
    scores = {n: c.float().mean().item() for n, c in correct.items()}
    scores["all"] = torch.stack(list(correct.values())).all(0).float().mean().item()
    return scores


def pair_accuracy(preds: dict[str, torch.Tensor], attributes: list[dict],
                  mask: torch.Tensor | None = None) -> float:
    """Fraction of images (those where `mask` is true) with shape AND color right; nan if none."""
    targets = _targets(attributes)
    right = (preds["shape"].cpu() == targets["shape"]) & (preds["color"].cpu() == targets["color"])
    if mask is not None:
        right = right[torch.as_tensor(mask, dtype=torch.bool)]
    return right.float().mean().item() if len(right) else float("nan")


def attribute_accuracy(checker: nn.Module, images: torch.Tensor, attributes: list[dict],
                       held_out: torch.Tensor | None = None) -> dict[str, float]:
    """Score images [B, 3, H, W] in [-1, 1] against the attributes they were meant to show.

    Returns accuracy per attribute, "all" (all six right) and, given a `held_out` mask,
    "held_out_pair" (shape and color right on the held-out images).
    """
    return prediction_scores(predict(checker, images), attributes, held_out)


def prediction_scores(preds: dict[str, torch.Tensor], attributes: list[dict],
                      held_out: torch.Tensor | None = None) -> dict[str, float]:
    """:func:`attribute_accuracy` of predictions already made (:func:`predict`)."""
    scores = score_predictions(preds, attributes)
    if held_out is not None:
        scores["held_out_pair"] = pair_accuracy(preds, attributes, held_out)
    return scores
