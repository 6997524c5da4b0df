"""Caption embeddings of a data set: computed once and cached beside the data, or precomputed
(``DATA/embeddings-<split>.npy``: read, and written from a trained char-CNN-RNN)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..utils import atomic_path, cache_dir
from .base import TextEncoder
from .char_cnn_rnn import CharCnnRnnEncoder
from .encoders import PRECOMPUTED, cache_key, get_encoder

CACHE_VERSION = 1


def split_embeddings(data_dir: str | Path, split: str, records: list[dict], encoder_name: str,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings ``[N, K, D]`` and caption counts ``[N]`` of a split's manifest records: encoded
    (and cached) by the named encoder, or, for ``precomputed``, read from ``DATA/embeddings-<split>.npy``."""
    if encoder_name == PRECOMPUTED:
        return precomputed_embeddings(data_dir, split, len(records))
    return caption_embeddings(data_dir, split, [r["captions"] for r in records], encoder_name, progress)


def precomputed_embeddings(data_dir: str | Path, split: str, n: int, stem: str = "embeddings",
                           missing: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``DATA/<stem>-<split>.npy`` (``[N, K, D]`` or ``[N, D]``, rows in manifest order), checked
    against the manifest's ``n`` records; every row counts as ``K`` captions. ``missing``: what
    the error says when the file is not there (default: where precomputed embeddings come from)."""
    import numpy as np
    from ..data.manifest import DataError
    from ..data.readers import load_embeddings
    path = Path(data_dir) / f"{stem}-{split}.npy"
    if not path.exists():
        raise DataError(f"{path}: not found. " + (missing or (
            "data.text_encoder=precomputed reads embeddings saved there, one row per manifest line ([N, K, D] "
            "float, .npy): `stackgan data prepare` writes them from a release's char-CNN-RNN-embeddings.pickle, "
            "`stackgan text-encoder embed` from a trained encoder")))
    arr = load_embeddings(path)  # [N, K, D], checked
    if arr.shape[0] != n:
        raise DataError(f"{path}: {arr.shape[0]:,} rows but {Path(data_dir) / (split + '.jsonl')} has {n:,} images; "
                        "the rows must follow the manifest's lines")
    emb = torch.from_numpy(np.array(arr, dtype=np.float32))  # a copy: the file is memory-mapped read-only
    return emb, torch.full((arr.shape[0],), arr.shape[1], dtype=torch.long)


def caption_embeddings(data_dir: str | Path, split: str, captions: list[list[str]],
                       encoder: TextEncoder | str, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings ``[N, K, D]`` (padded to the most captions per image) and counts ``[N]``.

    Cached in ``DATA/.stackgan-cache/text-<split>-<encoder>.safetensors``; recomputed when the
    encoder (its name, or the weights in its folder: :func:`cache_key`) or any caption changes
    (a SHA-256 of both is stored beside it). ``encoder`` may be a name: the encoder is then loaded
    only when the cache has to be (re)computed, so a run whose captions are cached starts without
    loading it.
    """
    name = encoder if isinstance(encoder, str) else encoder.name
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, cache_key(name), captions]).encode()).hexdigest()
    safe_name = "".join(ch if ch.isalnum() else "_" for ch in name)
    path = cache_dir(data_dir) / f"text-{split}-{safe_name}.safetensors"
    if path.exists():
        try:
            with open(path.with_suffix(".json"), encoding="utf-8") as f:
                if json.load(f).get("sha256") == digest:
                    t = load_file(str(path))
                    return t["embeddings"], t["counts"]
        except (OSError, ValueError):
            pass  # unreadable or stale cache: recompute below

    if isinstance(encoder, str):
        encoder = get_encoder(encoder)
    unique = sorted({c for caps in captions for c in caps})
    if progress:
        print(f"encoding {len(unique)} distinct {split} captions with {encoder.name} (cached afterwards)")
    vectors = encoder.encode(unique, progress=progress)  # [U, D]
    index = {c: i for i, c in enumerate(unique)}
    k = max(len(caps) for caps in captions)
    ids = torch.zeros(len(captions), k, dtype=torch.long)
    counts = torch.tensor([len(caps) for caps in captions], dtype=torch.long)
    for i, caps in enumerate(captions):
        ids[i, : len(caps)] = torch.tensor([index[c] for c in caps])
    embeddings = vectors[ids].contiguous()  # [N, K, D]; padding slots repeat caption 0's vector

    with atomic_path(path) as tmp:
        save_file({"embeddings": embeddings, "counts": counts}, str(tmp))
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"sha256": digest, "encoder": encoder.name, "split": split}))
    return embeddings, counts


def embed_data(encoder_dir: str | Path, data_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write ``DATA/embeddings-<split>.npy`` for each split with the char-CNN-RNN trained into
    ``encoder_dir`` (``[N, K, D]`` float32, rows in manifest order, images with fewer than K
    captions repeat their first): what ``data.text_encoder=precomputed`` reads
    (:func:`precomputed_embeddings`)."""
    import numpy as np

    from ..data.manifest import DataError, read_manifest
    data_dir = Path(data_dir)
    splits = [s for s in ("train", "test") if (data_dir / f"{s}.jsonl").exists()]
    if not splits:
        raise DataError(f"{data_dir}: no train.jsonl or test.jsonl")
    targets = [data_dir / f"embeddings-{s}.npy" for s in splits]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    encoder = CharCnnRnnEncoder(encoder_dir)
    for split, target in zip(splits, targets):
        captions = [r["captions"] for r in read_manifest(data_dir, split)]
        emb, _ = caption_embeddings(data_dir, split, captions, encoder)  # [N, K, D], also cached
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, emb.numpy().astype(np.float32))
    return targets
