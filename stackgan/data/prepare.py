"""``stackgan data prepare``: any supported layout -> a training-ready folder.

The folder is an ordinary manifest data folder (``train.jsonl``, ``test.jsonl``; image paths
absolute, birds with their bounding box) whose decoded-image caches are already filled at the
paper's load sizes (76 and 304: random 64 / 256 crops of them), as uint8 ``.npy`` arrays that
training memory-maps. Precomputed caption embeddings of the source (the release's
``char-CNN-RNN-embeddings.pickle``) are copied beside them as ``embeddings-<split>.npy``,
rows in manifest order.

Example::

    prepare_dataset("../shared/data/flowers", "data/flowers")   # then: stackgan train --data data/flowers
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..utils import atomic_path, cache_dir
from .manifest import DataError, image_cache_files, load_image_sizes
from .readers import Record, load_embeddings, open_dataset

DEFAULT_SIZES = (76, 304)


def prepare_dataset(source: str | Path, out: str | Path, sizes=DEFAULT_SIZES, skip_bad: bool = False,
                    splits=None, limit: int | None = None, progress: bool = True) -> dict:
    """Read ``source``, decode every image once at every size in ``sizes`` and write ``out``.

    Returns a summary dict (images per split, skipped items with reasons, seconds). A bad image
    stops it with an error naming the file, or with ``skip_bad`` is left out and counted.
    ``limit`` keeps the first N images of each split (quick trials). Nothing in ``out`` is
    replaced until its new version is complete.
    """
    t0 = time.monotonic()
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise DataError(f"{out}: choose an output folder other than the data set itself")
    ds = open_dataset(source, skip_bad=skip_bad)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": str(source), "layout": ds.layout, "splits": {}, "skipped": list(ds.skipped)}
    for split in splits or list(ds.splits):
        recs = ds.records(split)[:limit]
        partial = [cache_dir(out) / f"images-{split}-{size}.npy.partial" for size in sizes]
        try:
            good, bad = _decode(recs, sizes, partial, skip_bad, split, progress)
            summary["skipped"] += bad
            if not good:
                raise DataError(f"{source}: no usable images in the {split} split")
            rows = [json.dumps({**recs[i].to_json(), "image": str(recs[i].image.resolve())}, ensure_ascii=False)
                    for i in good]
            with atomic_path(out / f"{split}.jsonl") as tmp:
                tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
            manifest_recs = [json.loads(r) for r in rows]
            for size, part in zip(sizes, partial):
                cache, meta, fingerprint = image_cache_files(out, split, manifest_recs, size)
                if len(good) < len(recs):  # drop the skipped rows
                    full = np.load(part, mmap_mode="r")
                    with atomic_path(cache) as tmp:
                        kept = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(good),) + full.shape[1:])
                        kept[:] = full[good]
                        kept.flush()
                        del kept
                    del full
                    part.unlink()
                else:
                    os.replace(part, cache)
                with atomic_path(meta) as tmp:
                    tmp.write_text(json.dumps({"sha256": fingerprint}))
        finally:
            for part in partial:
                part.unlink(missing_ok=True)
        if split in ds.embeddings:
            emb = load_embeddings(ds.embeddings[split])
            picked = np.ascontiguousarray(emb[[recs[i].row for i in good]], dtype=np.float32)  # [N, K, D]
            with atomic_path(out / f"embeddings-{split}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, picked)
            with atomic_path(out / f"embeddings-{split}.json") as tmp:
                tmp.write_text(json.dumps({"source": str(ds.embeddings[split]), "shape": list(picked.shape)}))
        summary["splits"][split] = len(good)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    with atomic_path(out / "prepared.json") as tmp:
        tmp.write_text(json.dumps({**summary, "sizes": list(sizes)}, indent=2))
    return summary


def _decode(recs: list[Record], sizes, paths: list[Path], skip_bad: bool, split: str, progress: bool):
    """Decode into one memory-mapped uint8 ``.npy`` per size at ``paths``; returns (indices of
    good records, reasons of bad ones)."""
    arrays = [np.lib.format.open_memmap(p, mode="w+", dtype=np.uint8, shape=(len(recs), 3, s, s))
              for p, s in zip(paths, sizes)]
    good, bad = [], []
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def job(r: Record):
            try:
                return load_image_sizes(r.image, sizes, r.bbox)
            except DataError as e:
                if not skip_bad:
                    raise
                return str(e)
        it = pool.map(job, recs)
        for i, result in enumerate(tqdm(it, total=len(recs), desc=f"decoding {split}", unit="img",
                                        disable=not progress)):
            if isinstance(result, str):
                bad.append(result)
                continue
            for arr, img in zip(arrays, result):
                arr[i] = img
            good.append(i)
    for arr in arrays:
        arr.flush()
    return good, bad
