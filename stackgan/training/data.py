"""Batches for training: images and caption embeddings held in memory, drawn by step number.

Every random choice of step ``s`` (which images, which captions, which wrong captions, crops
and flips) comes from generators seeded by ``(seed, epoch)`` and ``(seed, s)``: resuming at step
``s`` sees exactly the batches an uninterrupted run would have seen, with no sampler state.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig
from ..data.manifest import DataError, load_images, read_manifest
from ..data.foils import FOIL_WEIGHTS, foil_weights, make_foils, make_swaps
from ..data.shapes import ATTRIBUTES, SYMMETRY
from ..text.cache import caption_embeddings, precomputed_embeddings, split_embeddings
from ..text.encoders import PRECOMPUTED
from ..text.norm import TextNorm
from ..errors import ConfigError
from ..utils import from_uint8


def _gen(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**62)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainData:
    images: torch.Tensor  # uint8 [N, 3, S, S]; S = out_size, or 76/64 of it when cropping
    embeddings: torch.Tensor  # float [N, K, D], normalized
    counts: torch.Tensor  # long [N], captions per image
    out_size: int
    cfg: DataConfig
    labels: torch.Tensor | None = None  # long [N] class numbers (wrong_pairs=class)
    foils: torch.Tensor | None = None  # float [N, F, D], normalized: one-word foils (data.foil_share)
    foil_counts: torch.Tensor | None = None  # long [N], foils per image (0: none, e.g. no color word)
    # augment=crop_flip within what keeps the captions true (caption_safe_augmentation)
    flip: bool = True
    max_shift: int | None = None  # pixels at out_size a crop may move the image from the centre crop
    # data.swap_attribute: each caption with that attribute's words swapped for each of its V values
    swaps: torch.Tensor | None = None  # float [N, K, V, D], normalized (a caption naming none: V copies of itself)
    swap_named: torch.Tensor | None = None  # long [N, K]: the value each caption names (-1: none)
    # stage1.outline_shape / outline_target: the symmetry order of each image's shape word (circle 0, square 4,
    # triangle 3, star 5)
    shape_order: torch.Tensor | None = None  # long [N]
    # stage1.size_weight: each image's size word (index into data.shapes.ATTRIBUTES["size"]: small, medium, large)
    size_word: torch.Tensor | None = None  # long [N]

    def __len__(self) -> int:
        return self.images.shape[0]

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        """Steps that cover the data once, ``batch_size`` images per process on ``world`` processes."""
        if batch_size * world > len(self):
            raise ConfigError(f"batch size {batch_size} x {world} processes is larger than the data set "
                             f"({len(self)} images)")
        return len(self) // (batch_size * world)

    def batch_indices(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The images ``[B]`` (rows of the data) that :meth:`batch` gives this rank at ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch(batch_size, world))
        perm = torch.randperm(len(self), generator=_gen(self.cfg.seed, 1, epoch))
        first = (pos * world + rank) * batch_size
        return perm[first:first + batch_size]

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1, swaps: bool = False
              ) -> tuple[torch.Tensor, ...]:
        """Returns real images in [-1, 1] ``[B, 3, r, r]``, their text ``[B, D]`` and wrong text ``[B, D]``;
        with ``swaps`` (``data.swap_attribute``) also the step's captions swapped through the attribute's
        values ``[B, V, D]`` and the value each names ``[B]`` (-1: none).

        With ``world`` processes, step ``s`` covers ``batch_size * world`` images of the epoch's
        permutation and process ``rank`` gets its own disjoint ``batch_size`` of them, with crops,
        flips and captions from its own generator.
        """
        n = len(self)
        idx = self.batch_indices(step, batch_size, rank, world)  # [B]
        g = _gen(self.cfg.seed, 2, step) if rank == 0 else _gen(self.cfg.seed, 2, step, rank)
        text, which = self._text(idx, g)  # [B, D], the caption drawn [B] (caption_mode one)
        if self.cfg.wrong_pairs == "shift":
            wrong = text.roll(1, dims=0)  # image i is paired with the caption of image i-1
        elif self.cfg.wrong_pairs == "hard":
            wrong = text[hardest_other(text)]
        else:
            def other_images() -> torch.Tensor:  # [B], never the same image
                return (idx + torch.randint(1, n, idx.shape, generator=g)) % n

            other = other_images()
            if self.cfg.wrong_pairs == "class":  # TF: redraw while the other image has the same class
                for _ in range(100):
                    same = self.labels[other] == self.labels[idx]
                    if not same.any():
                        break
                    other = torch.where(same, other_images(), other)
            wrong = self._text(other, g)[0]
        if self.cfg.foil_share > 0 and self.foils is not None:  # a share of the wrong captions: one-word foils
            counts = self.foil_counts[idx]  # [B]
            use = (torch.rand(len(idx), generator=g) < self.cfg.foil_share) & (counts > 0)
            pick = (torch.rand(len(idx), generator=g) * counts.clamp(min=1)).long()  # [B]
            wrong = torch.where(use[:, None], self.foils[idx, pick], wrong)  # [B, D]
        images = self._images(idx, g)
        if not swaps:
            return images, text, wrong
        if self.swaps is None or which is None:
            raise ConfigError("swapped captions need data.swap_attribute (and data.caption_mode=one)")
        return images, text, wrong, self.swaps[idx, which], self.swap_named[idx, which]

    def _text(self, idx: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The text of images ``idx``: ``([B, D], the caption drawn [B])``, or the mean of four and ``None``."""
        counts = self.counts[idx]  # [B]
        take = 1 if self.cfg.caption_mode == "one" else 4
        # rank random keys among each image's valid captions: the first `take` are distinct
        keys = torch.rand(len(idx), self.embeddings.shape[1], generator=g)  # [B, K]
        valid = torch.arange(keys.shape[1])[None, :] < counts[:, None]
        keys = keys.masked_fill(~valid, 2.0)
        order = keys.argsort(dim=1)[:, :take]  # [B, take]
        chosen = self.embeddings[idx[:, None], order]  # [B, take, D]
        mask = (torch.arange(take)[None, :] < counts[:, None]).unsqueeze(-1)  # fewer than 4 captions
        return (chosen * mask).sum(1) / mask.sum(1), (order[:, 0] if take == 1 else None)  # [B, D], [B]

    def _images(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        imgs = self.images[idx]  # uint8 [B, 3, S, S]
        if self.cfg.augment == "crop_flip":
            r, s = self.out_size, imgs.shape[-1]
            if self.max_shift is None:
                offs = torch.randint(0, s - r + 1, (len(idx), 2), generator=g)
            else:  # within max_shift of the centre crop
                c, m = (s - r) // 2, min(self.max_shift, (s - r) // 2)
                offs = torch.randint(c - m, c + m + 1, (len(idx), 2), generator=g)
            flips = (torch.rand(len(idx), generator=g) < 0.5) & self.flip
            crops = []
            for im, (y, x), flip in zip(imgs, offs.tolist(), flips.tolist()):
                im = im[:, y:y + r, x:x + r]
                crops.append(im.flip(-1) if flip else im)
            imgs = torch.stack(crops)
        return from_uint8(imgs)  # [B, 3, r, r]


def hardest_other(text: torch.Tensor, same: float = 0.99) -> torch.Tensor:
    """For each caption, the index of the most similar other caption of the batch (cosine of the
    embeddings), skipping near-copies (cosine above ``same``): a hard negative, as in VSE++
    (Faghri et al., BMVC 2018). Random wrong captions mostly differ in color, which D learns first
    and then has no reason to look at shape; the nearest caption tends to differ in one attribute."""
    unit = torch.nn.functional.normalize(text.float(), dim=1)
    sim = unit @ unit.T  # [B, B]
    sim.fill_diagonal_(-2.0)
    sim = sim.masked_fill(sim > same, -1.5)  # a copy is never wrong; used only if nothing else is left
    return sim.argmax(dim=1)  # [B]


def load_train_data(data_dir: str | Path, cfg: DataConfig, size: int, text_norm: TextNorm | None = None,
                    progress: bool = True, swaps: bool = False, shape_orders: bool = False, size_words: bool = False
                    ) -> tuple[TrainData, TextNorm]:
    """Images at ``size`` and normalized caption embeddings of the train split.

    ``text_norm`` is fitted on the train captions unless one is given (Stage II reuses Stage I's).
    ``swaps``: also the captions' word swaps of ``data.swap_attribute`` (for a stage with ``swap_weight``).
    ``shape_orders``: also each image's shape word's symmetry order, from its record's ``attributes``
    (``stage1.outline_shape``; Shapes data). ``size_words``: also each image's size word (``stage1.size_weight``).
    """
    records = read_manifest(data_dir, "train")
    emb, counts = split_embeddings(data_dir, "train", records, cfg.text_encoder, progress)
    if text_norm is None:
        text_norm = TextNorm(emb.shape[-1])
        if cfg.text_norm == "standardize":
            valid = torch.arange(emb.shape[1])[None, :] < counts[:, None]
            text_norm.fit(emb[valid])
    load_size = size if cfg.augment == "none" else round(size * 76 / 64)
    images = load_images(data_dir, "train", records, load_size, progress)
    labels = None
    if cfg.wrong_pairs == "class":
        missing = [i for i, r in enumerate(records) if not isinstance(r.get("label"), int)]
        if missing:
            raise DataError(f"{Path(data_dir) / 'train.jsonl'}, line {missing[0] + 1}: data.wrong_pairs=class needs "
                            "an integer 'label' (class) on every record; use wrong_pairs=random or shift")
        labels = torch.tensor([r["label"] for r in records])
        if len(labels.unique()) < 2:
            raise DataError(f"{Path(data_dir) / 'train.jsonl'}: data.wrong_pairs=class needs two or more classes")
    flip, max_shift = caption_safe_augmentation(data_dir, size)
    foils = foil_counts = None
    if cfg.foil_share > 0:
        foils, foil_counts = foil_embeddings(data_dir, records, cfg, progress)
        foils = text_norm(foils)
    swapped = swap_named = None
    if swaps:
        if not cfg.swap_attribute:
            raise ConfigError("swapped captions need data.swap_attribute (e.g. texture)")
        swapped, swap_named = swap_embeddings(data_dir, records, cfg, emb.shape[1], progress)
        swapped = text_norm(swapped)
    order = shape_order_of(data_dir, records) if shape_orders else None
    sizes = size_word_of(data_dir, records) if size_words else None
    return (TrainData(images, text_norm(emb), counts, size, cfg, labels, foils, foil_counts, flip, max_shift, swapped,
                      swap_named, order, sizes), text_norm)


def size_word_of(data_dir: str | Path, records: list[dict]) -> torch.Tensor:
    """Each record's ``attributes.size`` as its index in ``data.shapes.ATTRIBUTES["size"]`` ``[N]``; an error names
    the manifest line of a record without one."""
    words = ATTRIBUTES["size"]
    return _attribute_codes(data_dir, records, "size", {w: i for i, w in enumerate(words)}, "stage1.size_weight",
                            list(words))


def shape_order_of(data_dir: str | Path, records: list[dict]) -> torch.Tensor:
    """Each record's ``attributes.shape`` as its symmetry order ``[N]`` (``data.shapes.SYMMETRY``); an error names
    the manifest line of a record without one."""
    return _attribute_codes(data_dir, records, "shape", SYMMETRY, "stage1.outline_shape", sorted(SYMMETRY))


def _attribute_codes(data_dir: str | Path, records: list[dict], attribute: str, codes: dict[str, int], switch: str,
                     choices: list[str]) -> torch.Tensor:
    """``codes[record's attributes[attribute]]`` for every record ``[N]`` (long); a record without one of ``codes``'
    words is refused with its manifest line, naming ``switch`` (the setting that reads it)."""
    out = []
    for i, r in enumerate(records):
        word = (r.get("attributes") or {}).get(attribute)
        if word not in codes:
            raise DataError(f"{Path(data_dir) / 'train.jsonl'}, line {i + 1}: {switch} needs "
                            f"'attributes': {{'{attribute}': one of {choices}}} (Shapes data), got {word!r}")
        out.append(codes[word])
    return torch.tensor(out, dtype=torch.long)


def swap_embeddings(data_dir: str | Path, records: list[dict], cfg: DataConfig, k: int, progress: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The train captions with ``data.swap_attribute``'s words swapped for each of its ``V`` values
    (:func:`stackgan.data.foils.make_swaps`), encoded by the run's text encoder (cached like the captions):
    ``[N, K, V, D]`` (``K`` the caption slots of the captions' embeddings) and the value each caption names
    ``[N, K]`` (-1: none, and for the padding slots of images with fewer captions)."""
    swapped, named = make_swaps(records, cfg.swap_attribute)
    emb, _ = caption_embeddings(data_dir, f"train-swaps-{cfg.swap_attribute}", swapped, cfg.text_encoder, progress)
    v = len(ATTRIBUTES[cfg.swap_attribute])
    out = torch.zeros(len(records), k, v, emb.shape[-1])
    which = torch.full((len(records), k), -1, dtype=torch.long)
    for i, (caps, w) in enumerate(zip(swapped, named)):
        out[i, :len(w)] = emb[i, :len(caps)].view(len(w), v, -1)
        which[i, :len(w)] = torch.tensor(w, dtype=torch.long)
    return out, which


def caption_safe_augmentation(data_dir: str | Path, size: int) -> tuple[bool, int | None]:
    """``(flip, max_shift)``: what ``augment=crop_flip`` may do to this data set's images and keep
    every caption true. Shapes (``DATA/shapes.json``) names left and right and places objects on a
    grid with 6 px of jitter in 256: no flips, and crops within 4 px at 64 (16 at 256) of the centre,
    so no object leaves its named cell. Other data sets: any crop and flip (the paper's)."""
    if (Path(data_dir) / "shapes.json").exists():
        return False, 4 * size // 64
    return True, None


def foil_embeddings(data_dir: str | Path, records: list[dict], cfg: DataConfig, progress: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One-word foils of the train captions (:mod:`stackgan.data.foils`), ``[N, F, D]`` and counts
    ``[N]``: made and encoded by the run's text encoder (cached like the captions), or, for
    ``precomputed`` embeddings, read from ``DATA/foils-train.npy``."""
    if cfg.text_encoder == PRECOMPUTED:
        return precomputed_embeddings(data_dir, "train", len(records), stem="foils", missing=(
            "data.foil_share > 0 with precomputed embeddings reads the foils' embeddings there ([N, F, D], rows in "
            "manifest order; `stackgan data attributes` writes them for Shapes); or set data.foil_share=0"))
    name, weights = f"train-foils{cfg.foils_per_image}", FOIL_WEIGHTS
    if cfg.foil_attributes:  # foils that change only these attributes (Shapes captions): their own cache
        weights = foil_weights(cfg.foil_attributes)
        name += "-" + "-".join(sorted(weights))
    foils = make_foils(records, cfg.foils_per_image, cfg.seed, weights)
    return caption_embeddings(data_dir, name, foils, cfg.text_encoder, progress)
