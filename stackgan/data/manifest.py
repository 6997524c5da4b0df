"""The project's generic data format: JSON-lines manifests of images and captions.

A data folder holds ``train.jsonl`` (and usually ``test.jsonl``); each line is one image::

    {"image": "images/train/00000.png", "captions": ["a red circle ...", ...],
     "attributes": {...}}          # "attributes" and any other keys are optional

``image`` is relative to the folder. Images of any size and mode are converted to RGB,
centre-cropped to a square and area-resized; decoded pixels are cached in
``DATA/.stackgan-cache`` so the next run starts in seconds.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..utils import atomic_path, cache_dir

IMAGE_CACHE_VERSION = 1


class DataError(ValueError):
    pass


def manifest_path(data_dir: str | Path, split: str) -> Path:
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise DataError(f"{path}: no such manifest (a data folder needs {split}.jsonl; "
                        "make one with `stackgan data shapes --out DIR` or see the README)")
    return path


def read_manifest(data_dir: str | Path, split: str) -> list[dict]:
    """Read and check ``DATA/<split>.jsonl``; errors name the file and line."""
    path = manifest_path(data_dir, split)
    records = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object")
        if not isinstance(rec.get("image"), str) or not rec["image"]:
            raise DataError(f"{where}: field 'image' must be a non-empty string (a path relative to {path.parent})")
        caps = rec.get("captions")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise DataError(f"{where}: field 'captions' must be a non-empty list of strings")
        if any(not c.strip() for c in caps):
            raise DataError(f"{where}: field 'captions' holds an empty caption")
        if "attributes" in rec and not isinstance(rec["attributes"], dict):
            raise DataError(f"{where}: field 'attributes' must be an object")
        records.append(rec)
    if not records:
        raise DataError(f"{path}: holds no records")
    return records


def load_image(path: Path, size: int) -> np.ndarray:
    """RGB, centre square crop, area resize to ``size``; returns uint8 ``[3, size, size]``."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            if w != h:
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            if s != size:
                im = im.resize((size, size), Image.BOX)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except OSError as e:
        raise DataError(f"{path}: not a readable image ({e})") from e
    return arr.transpose(2, 0, 1)  # [3, H, W]


def load_images(data_dir: str | Path, split: str, records: list[dict], size: int,
                progress: bool = True) -> torch.Tensor:
    """All images of a split as uint8 ``[N, 3, size, size]``, cached as ``.npy`` beside the data."""
    data_dir = Path(data_dir)
    fingerprint = hashlib.sha256(
        json.dumps([IMAGE_CACHE_VERSION, size, [r["image"] for r in records]]).encode()
        + manifest_path(data_dir, split).read_bytes()
    ).hexdigest()
    cache = cache_dir(data_dir) / f"images-{split}-{size}.npy"
    meta = cache.with_suffix(".json")
    if cache.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()).get("sha256") == fingerprint:
                return torch.from_numpy(np.load(cache))
        except (OSError, ValueError):
            pass
    out = np.empty((len(records), 3, size, size), dtype=np.uint8)
    paths = [data_dir / r["image"] for r in records]
    with ThreadPoolExecutor(max_workers=4) as pool:
        it = pool.map(lambda p: load_image(p, size), paths)
        for i, arr in enumerate(tqdm(it, total=len(paths), desc=f"decoding {split} images at {size}px",
                                     disable=not progress, unit="img")):
            out[i] = arr
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, out)
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps({"sha256": fingerprint}))
    return torch.from_numpy(out)
