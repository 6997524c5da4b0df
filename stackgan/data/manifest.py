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
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..utils import atomic_path, cache_dir

IMAGE_CACHE_VERSION = 1


from ..errors import DataError  # noqa: E402  (kept importable from here)


def manifest_path(data_dir: str | Path, split: str) -> Path:
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise DataError(f"{path}: no such manifest (a data folder needs {split}.jsonl; "
                        "make one with `stackgan data shapes --out DIR`, or see docs/data.md)")
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
        box = rec.get("bbox")
        if box is not None and not (isinstance(box, list) and len(box) == 4
                                    and all(isinstance(v, (int, float)) for v in box) and box[2] > 0 and box[3] > 0):
            raise DataError(f"{where}: field 'bbox' must be [x, y, width, height] with a positive width and height")
        if "attributes" in rec and not isinstance(rec["attributes"], dict):
            raise DataError(f"{where}: field 'attributes' must be an object")
        records.append(rec)
    if not records:
        raise DataError(f"{path}: holds no records")
    return records


MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's own warning limit (about 9,500 x 9,500)


def bird_crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """The StackGAN authors' CUB crop: a square of half-side ``R = 0.75 * max(w, h)`` around the
    box centre (side 1.5 * max(w, h)), clamped to the image; returns (left, top, right, bottom)."""
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def load_image(path: Path, size: int, bbox=None) -> np.ndarray:
    """RGB (alpha over white), then with ``bbox`` (x, y, w, h) the authors' CUB crop resized to
    ``size`` x ``size`` as they do, else a centre square crop; area resize. uint8 ``[3, size, size]``."""
    return load_image_sizes(path, (size,), bbox)[0]


def load_image_sizes(path: Path, sizes, bbox=None) -> list[np.ndarray]:
    """``load_image`` at several sizes from one decode."""
    try:
        with warnings.catch_warnings():  # PIL warns of big images on opening; they are refused below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.width * im.height > MAX_PIXELS:  # read from the header, before decoding anything
                raise DataError(f"{path}: {im.width} x {im.height} pixels is over the limit of {MAX_PIXELS:,} "
                                "(a decompression bomb, or an image to shrink first)")
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit gray: keep the high byte, do not clip
                im = Image.fromarray((np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8))
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, (255, 255, 255))
                im.paste(rgba, mask=rgba.getchannel("A"))
            else:
                im = im.convert("RGB")  # grayscale, CMYK, palette, 16-bit ...
            w, h = im.size
            if bbox is not None:
                im = im.crop(bird_crop_box(bbox, w, h))
            else:
                s = min(w, h)
                if w != h:
                    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            out = []
            for size in sizes:
                sized = im if im.size == (size, size) else im.resize((size, size), Image.BOX)
                out.append(np.asarray(sized, dtype=np.uint8).transpose(2, 0, 1))  # [3, size, size]
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL: unknown format, truncated
        #   or corrupt data
        raise DataError(f"{path}: not a readable image ({e})") from e
    return out


def image_cache_files(data_dir: str | Path, split: str, records: list[dict], size: int) -> tuple[Path, Path, str]:
    """Where ``load_images`` keeps a split's decoded images at ``size`` (``.npy`` and its ``.json``)
    and the fingerprint (manifest bytes, image list, size) that says whether it is current. A part of the
    split (a judge's first 2,000 images) has a file of its own, named by its fingerprint, so that reading it
    does not replace the whole split's cache that training reads."""
    data_dir = Path(data_dir)
    manifest = manifest_path(data_dir, split).read_bytes()
    fingerprint = hashlib.sha256(
        json.dumps([IMAGE_CACHE_VERSION, size, [[r["image"], r["bbox"]] if r.get("bbox") else r["image"]
                                                for r in records]]).encode() + manifest
    ).hexdigest()
    whole = len(records) == sum(1 for line in manifest.splitlines() if line.strip())
    cache = cache_dir(data_dir) / f"images-{split}-{size}{'' if whole else '-' + fingerprint[:12]}.npy"
    return cache, cache.with_suffix(".json"), fingerprint


def load_images(data_dir: str | Path, split: str, records: list[dict], size: int,
                progress: bool = True) -> torch.Tensor:
    """All images of a split as uint8 ``[N, 3, size, size]``, cached as ``.npy`` beside the data
    (memory-mapped when read back, so a large set is not read into memory at once)."""
    data_dir = Path(data_dir)
    cache, meta, fingerprint = image_cache_files(data_dir, split, records, size)
    if cache.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()).get("sha256") == fingerprint:
                return torch.from_numpy(np.load(cache, mmap_mode="c"))  # pages load as they are used
        except (OSError, ValueError):
            pass
    out = np.empty((len(records), 3, size, size), dtype=np.uint8)
    jobs = [(data_dir / r["image"], r.get("bbox")) for r in records]
    with ThreadPoolExecutor(max_workers=4) as pool:
        it = pool.map(lambda job: load_image(job[0], size, job[1]), jobs)
        for i, arr in enumerate(tqdm(it, total=len(jobs), desc=f"decoding {split} images at {size}px",
                                     disable=not progress, unit="img")):
            out[i] = arr
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, out)
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps({"sha256": fingerprint}))
    return torch.from_numpy(out)
