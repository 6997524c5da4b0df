"""An image-text matcher: a small image encoder and a text projection trained contrastively.

It gives the generator a direct signal that its image matches the sentence (the role of
AttnGAN's DAMSM loss, Xu et al. 2018; the loss is the symmetric InfoNCE of CLIP, Radford et
al. 2021, as XMC-GAN uses it, Zhang et al. 2021). It is trained once on the real train images and
their caption embeddings (no attribute labels), frozen, and cached beside the data set as
`.stackgan-cache/matcher-<key>.safetensors` + `.json` (weights and config only). The package ships
matchers under ``stackgan/matchers/`` named by the same key (the built-in Shapes data set is made
the same on every machine, so its key is too): one of them is copied into the cache instead of
training when the key matches, that is for the same train captions, text encoder, normalization
and ``data.matcher_*`` settings.

    matcher = load_or_train_matcher("data/shapes", data_cfg, text_norm)
    loss = matcher.loss(fake_images, text)   # lower when images match their own sentences
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .augment import stretch, zoom
from .config import CHOICES, DataConfig
from .data.manifest import load_images, read_manifest
from .errors import ConfigError
from .text.cache import split_embeddings
from .text.encoders import PRECOMPUTED, cache_key
from .text.norm import TextNorm
from .models.blocks import FoldedTrunk, image_trunk
from .utils import cache_dir, from_uint8, load_module_files, save_module

FORMAT_VERSION = 1
SHIPPED = Path(__file__).resolve().parent / "matchers"  # matcher-<key>.safetensors + .json, as in a cache


class ImageTextMatcher(nn.Module):
    """Images (any size, area-resized to `size`) and normalized sentence embeddings, mapped to one
    unit-length space; `logit_scale` is CLIP's learned inverse temperature."""

    def __init__(self, text_dim: int, embed_dim: int = 128, widths: tuple[int, ...] = (16, 32, 64, 128),
                 size: int = 64, trunk: str = "strided"):
        super().__init__()
        self.config = {"text_dim": text_dim, "embed_dim": embed_dim, "widths": list(widths), "size": size}
        if trunk != "strided":  # (absent when default: matchers cached before the switch keep their key)
            self.config["trunk"] = trunk
        if trunk not in CHOICES["matcher_trunk"]:
            raise ConfigError(f"data.matcher_trunk must be one of {', '.join(CHOICES['matcher_trunk'])}, got {trunk!r}")
        self.trunk, cin, side = image_trunk(trunk, widths, size)
        self.image_proj = nn.Linear(cin * side * side, embed_dim)  # flattened: keeps where things are
        self.text_proj = nn.Sequential(nn.Linear(text_dim, 256), nn.LeakyReLU(0.2, inplace=True),
                                       nn.Linear(256, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.folded = None  # fold(): the trunk's frozen, faster form

    def fold(self) -> ImageTextMatcher:
        """Frozen from here on (eval mode, no parameter gradients), its image trunk read through a
        :class:`FoldedTrunk` (BatchNorm folded into the convs, the checker layout's enlargement into its first
        conv): the same numbers up to float rounding, about 40% less time for a read with its gradient. The
        saved weights are unchanged; ``train()`` drops the folded form."""
        self.eval().requires_grad_(False)
        self.folded = FoldedTrunk(self.trunk)  # its buffers made on the trunk's device
        return self

    def train(self, mode: bool = True) -> ImageTextMatcher:
        if mode:
            self.folded = None  # would no longer be the trunk's
        return super().train(mode)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, E], unit length."""
        size = self.config["size"]
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="area" if images.shape[-1] > size else "bilinear")
        trunk = self.trunk if self.folded is None else self.folded  # train() drops the folded form
        return F.normalize(self.image_proj(trunk(images).flatten(1)), dim=1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Normalized sentence embeddings [B, D] -> [B, E], unit length."""
        return F.normalize(self.text_proj(text), dim=1)

    def similarity(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The cosine of each image with its own text: ``[N]`` for images ``[N, 3, H, W]`` and texts ``[N, D]``."""
        return (self.encode_image(images) * self.encode_text(text)).sum(1)

    def loss(self, images: torch.Tensor, text: torch.Tensor, hard_weight: float = 0.0,
             margin: float = 0.2, foils: torch.Tensor | None = None,
             others: torch.Tensor | None = None, image_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Symmetric InfoNCE: image i should pick text i among the batch's texts, and back.

        ``hard_weight > 0`` adds VSE++'s max-violation hinge (Faghri et al., BMVC 2018): each image's
        own text must beat the batch's most similar other text by ``margin`` in cosine, and back.
        Random negatives mostly differ in color, which the matcher learns first; the hardest
        negative is whatever it still confuses (often a different shape or texture). ``foils``
        (one-word foils of the batch's captions, :mod:`stackgan.data.foils`) join the texts each
        image must be told apart from, so it has to read every attribute word. ``others [M, D]`` (the
        captions of images that were not read: ``stage<N>.match_share``) join them the same way.
        ``image_emb``: ``encode_image(images)`` where the caller has it already (it reuses it)."""
        im = self.encode_image(images) if image_emb is None else image_emb
        tx = self.encode_text(text)
        sim = im @ tx.T  # [B, B] cosines
        scale = self.logit_scale.exp().clamp(max=100)
        logits = scale * sim
        target = torch.arange(len(images), device=images.device)
        to_text = logits
        extra = [t for t in (foils, others) if t is not None and len(t)]
        if extra:  # one-word foils [F, D] and other captions [M, D] as more wrong texts for every image
            to_text = torch.cat([logits, scale * (im @ self.encode_text(torch.cat(extra)).T)], dim=1)  # [B, B + F + M]
        loss = 0.5 * (F.cross_entropy(to_text, target) + F.cross_entropy(logits.T, target))
        if hard_weight > 0:
            pos = sim.diagonal()  # [B]
            others = sim.masked_fill(torch.eye(len(sim), dtype=torch.bool, device=sim.device), -2.0)
            hinge = F.relu(margin - pos + others.max(dim=1).values) + F.relu(margin - pos + others.max(dim=0).values)
            loss = loss + hard_weight * hinge.mean()
        return loss


def _key(data_dir: Path, data_cfg: DataConfig, config: dict, steps: int, seed: int) -> str:
    h = hashlib.sha256((data_dir / "train.jsonl").read_bytes())
    if data_cfg.text_encoder == PRECOMPUTED:  # vectors written into the folder: rewritten ones, a new key
        for name in ("embeddings-train.npy",) + (("foils-train.npy",) if data_cfg.matcher_foils else ()):
            if (data_dir / name).exists():
                h.update(name.encode() + (data_dir / name).read_bytes())
    h.update(json.dumps([FORMAT_VERSION, cache_key(data_cfg.text_encoder), data_cfg.text_norm, config, steps,
                         seed]).encode())  # a retrained encoder folder: a new key
    return h.hexdigest()[:16]


def save_matcher(matcher: ImageTextMatcher, path: Path, meta: dict) -> None:
    save_module(matcher, path, {"format_version": FORMAT_VERSION, "config": matcher.config, **meta})


def load_matcher(path: str | Path, device: str | torch.device = "cpu") -> ImageTextMatcher:
    """A saved matcher, frozen and in eval mode."""
    info, weights = load_module_files(path)
    matcher = ImageTextMatcher(**info["config"])
    matcher.load_state_dict(weights)
    return matcher.to(device).eval().requires_grad_(False)


def _split(data_dir: Path, split: str, data_cfg: DataConfig, norm: TextNorm, size: int, progress: bool):
    records = read_manifest(data_dir, split)
    emb, counts = split_embeddings(data_dir, split, records, data_cfg.text_encoder, progress)
    return load_images(data_dir, split, records, size, progress), norm(emb), counts


@torch.no_grad()
def retrieval_accuracy(matcher: ImageTextMatcher, images: torch.Tensor, text: torch.Tensor,
                       group: int = 100) -> float:
    """Top-1 image->text accuracy in groups of `group` pairs (images [N, 3, H, W] in [-1, 1])."""
    group = min(group, len(images))
    hits, total = 0, 0
    for i in range(0, len(images) - group + 1, group):
        im = matcher.encode_image(images[i:i + group])
        tx = matcher.encode_text(text[i:i + group])
        hits += ((im @ tx.T).argmax(1) == torch.arange(len(im), device=im.device)).sum().item()
        total += len(im)
    return hits / max(total, 1)


def train_matcher(data_dir: str | Path, data_cfg: DataConfig, norm: TextNorm, out_path: str | Path,
                  steps: int = 1500, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, hard_weight: float = 0.0,
                  progress: bool = True, device: str | torch.device = "cpu", zoom_factor: float = 1.0,
                  stretch_factor: float = 1.0, **model_kwargs) -> ImageTextMatcher:
    """Train on the real train split (a random caption of each image per step), score top-1
    retrieval on the test split, save weights + json to `out_path`. ``zoom_factor > 1``: each
    training image is scaled about its centre by a random factor in ``[1 / zoom, zoom]``
    (:func:`stackgan.augment.zoom`), so that the matcher cannot tell a shape word by the object's area
    alone (docs/training-recipe.md, fourteenth round); it also makes the size word less certain.
    ``stretch_factor > 1``: each is also stretched along a random direction (:func:`stackgan.augment.stretch`),
    so that it has to count an outline's corners rather than read its angles (fifteenth round)."""
    data_dir, out_path = Path(data_dir), Path(out_path)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    matcher = ImageTextMatcher(norm.mean.numel(), **model_kwargs)
    size = matcher.config["size"]
    images, emb, counts = _split(data_dir, "train", data_cfg, norm, size, progress)
    foil_sets = []  # (foils [N, F, D], counts [N]) of each foil set: one foil of each per image and step
    if data_cfg.matcher_foils:
        from .training.data import foil_embeddings
        records = read_manifest(data_dir, "train")
        for names in data_cfg.foil_attributes.split("+"):  # "shape+texture": a shape foil and a texture foil
            foils, foil_counts = foil_embeddings(data_dir, records, replace(data_cfg, foil_attributes=names), progress)
            foil_sets.append((norm(foils), foil_counts))
    matcher = matcher.to(device).train()
    opt = torch.optim.AdamW(matcher.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start = time.monotonic()
    bar = tqdm(range(steps), desc="image-text matcher", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        which = (torch.rand(batch_size, generator=gen) * counts[idx]).long()  # a caption per image
        x = from_uint8(images[idx].to(device))  # [B, 3, s, s]
        x = x + 0.05 * torch.rand(batch_size, 1, 1, 1, generator=gen).to(device) * torch.randn(
            x.shape, generator=gen).to(device)
        if zoom_factor > 1:  # each image scaled about its centre: the object's area no longer tells its shape
            x = zoom(x, zoom_factor, gen)
        if stretch_factor > 1:  # ... and stretched: corners stay, angles and proportions do not
            x = stretch(x, stretch_factor, gen)
        foil = None
        if foil_sets:  # one foil of each image from each set (images without one add none)
            picked = []
            for foils, foil_counts in foil_sets:
                has = foil_counts[idx] > 0
                pick = (torch.rand(batch_size, generator=gen) * foil_counts[idx].clamp(min=1)).long()
                picked.append(foils[idx[has], pick[has]])
            foil = torch.cat(picked).to(device)  # [F, D]
        loss = matcher.loss(x, emb[idx, which].to(device), hard_weight, foils=foil)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    matcher.eval().requires_grad_(False)
    meta = {"steps": steps, "batch_size": batch_size, "seed": seed, "train_seconds": round(time.monotonic() - start, 1),
            "data": asdict(data_cfg), **({"zoom": zoom_factor} if zoom_factor > 1 else {}),
            **({"stretch": stretch_factor} if stretch_factor > 1 else {})}
    if (data_dir / "test.jsonl").exists():
        test, test_emb, _ = _split(data_dir, "test", data_cfg, norm, size, progress)
        meta["test_top1_of_100"] = retrieval_accuracy(matcher, from_uint8(test.to(device)),
                                                      test_emb[:, 0].to(device))
        meta["test_foil_preference"] = _foil_preference(matcher, data_dir, data_cfg, norm, device)
    save_matcher(matcher, out_path, meta)
    return matcher


def _foil_preference(matcher: ImageTextMatcher, data_dir: Path, data_cfg: DataConfig, norm: TextNorm,
                     device) -> dict[str, float] | None:
    """On Shapes test images, how often the matcher prefers an image's full caption to the caption
    with one attribute changed, per attribute (stackgan.evaluation.d_check.foil_preference)."""
    from .evaluation.d_check import foil_preference
    if not all("attributes" in r for r in read_manifest(data_dir, "test")[:10]):
        return None

    def score(x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return matcher.similarity(x.to(device), text)  # cosine [N]
    rates = foil_preference(score, data_dir, data_cfg.text_encoder, norm, matcher.config["size"], 300, device=device)
    return {k: round(v, 3) for k, v in rates.items()}


def load_or_train_matcher(data_dir: str | Path, data_cfg: DataConfig, norm: TextNorm, seed: int = 0,
                          progress: bool = True, device: str | torch.device = "cpu") -> ImageTextMatcher:
    """The cached matcher for this data set, text encoder, normalization and `data.matcher_*`
    settings, else a new one trained with them."""
    data_dir = Path(data_dir)
    if data_cfg.matcher_foil_attributes:  # the matcher's foils change other words than D's: as if those were all
        data_cfg = replace(data_cfg, foil_attributes=data_cfg.matcher_foil_attributes, matcher_foil_attributes="")
    config = ImageTextMatcher(norm.mean.numel(), widths=data_cfg.matcher_widths, size=data_cfg.matcher_size,
                              trunk=data_cfg.matcher_trunk).config
    settings = {**config, "batch": data_cfg.matcher_batch}
    if data_cfg.matcher_hard:  # (absent when off: caches made before the switch stay valid)
        settings["hard"] = data_cfg.matcher_hard
    if data_cfg.matcher_foils:
        settings["foils"] = data_cfg.foils_per_image
        if data_cfg.foil_attributes:
            settings["foil_attributes"] = data_cfg.foil_attributes
    if data_cfg.matcher_zoom > 1:
        settings["zoom"] = data_cfg.matcher_zoom
    if data_cfg.matcher_stretch > 1:
        settings["stretch"] = data_cfg.matcher_stretch
    key = _key(data_dir, data_cfg, settings, data_cfg.matcher_steps, seed)
    path = cache_dir(data_dir) / f"matcher-{key}.safetensors"
    if path.exists() and path.with_suffix(".json").exists():
        return load_matcher(path, device)
    shipped = SHIPPED / path.name
    if shipped.exists() and shipped.with_suffix(".json").exists():  # the same key: the same data and settings
        matcher = load_matcher(shipped, device)
        meta = json.loads(shipped.with_suffix(".json").read_text())
        print(f"image-text matcher: the shipped one ({shipped.name}; on the real test images, top-1 of 100 "
              f"{meta.get('test_top1_of_100')})")
        save_matcher(matcher, path, {k: v for k, v in meta.items() if k not in ("format_version", "config")})
        return matcher
    return train_matcher(data_dir, data_cfg, norm, path, steps=data_cfg.matcher_steps,
                         batch_size=data_cfg.matcher_batch, seed=seed, hard_weight=data_cfg.matcher_hard,
                         progress=progress, device=device, widths=data_cfg.matcher_widths, size=data_cfg.matcher_size,
                         trunk=data_cfg.matcher_trunk, zoom_factor=data_cfg.matcher_zoom,
                         stretch_factor=data_cfg.matcher_stretch)
