"""Pack the flowers train split small enough for a GPU lease, and unpack it there.

The device tool carries at most 64 MiB per call (the repository included), while the prepared
flowers train split is 1.9 GB of decoded pixels and 103 MB of MiniLM caption vectors. So the
lease takes two calls and the packs are cut to fit them:

- ``img1`` (first call), ``img2`` (second call): the 6,715 train photos, centre-cropped to a
  square and stored at 304 px (the largest size `stackgan data prepare` decodes) as WebP, the
  first ``--part-mib`` MiB of them in ``img1``; ``img2`` also holds the manifest (``train.jsonl``);
- ``emb`` (second call): the MiniLM vector of every distinct train caption, int8 with one float
  scale per vector (about 1% of a vector's length; the exported model reads exact MiniLM vectors).

Here (CPU)::

    python experiments/gpu_flowers/pack.py pack --data data/flowers --out .gpu

There (GPU), after each call's pack arrived::

    cp -r .gpu/img1/. /tmp/fl/src            # first call
    cp -r .gpu/img2/. /tmp/fl/src            # second call, then:
    python experiments/gpu_flowers/pack.py unpack-images --pack /tmp/fl/src --out /tmp/fl/data
    python experiments/gpu_flowers/pack.py unpack-text --pack .gpu/emb --data /tmp/fl/data

(``run.sh`` does all of that.) ``unpack-images`` runs `stackgan data prepare` on the photos and
manifest (a manifest data folder);
``unpack-text`` fills the data folder's MiniLM caption cache from the table, through the same
function that writes it from the encoder, so training with ``data.text_encoder=minilm`` finds
its captions cached and never loads the encoder (which is not installed there).
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from stackgan.data.manifest import load_image_sizes, read_manifest
from stackgan.text.base import TextEncoder
from stackgan.text.cache import caption_embeddings
from stackgan.training.samples import fixed_captions

SIZE = 304


def _square(path: str) -> Image.Image:
    """The photo as `stackgan data prepare` decodes it (centre square, area-resized to ``SIZE``)."""
    return Image.fromarray(load_image_sizes(Path(path), [SIZE])[0].transpose(1, 2, 0))


def pack(data: Path, out: Path, quality: int, part_mib: float) -> None:
    records = read_manifest(data, "train")
    img_dir = out / "img2"
    (img_dir / "images").mkdir(parents=True, exist_ok=True)

    def job(i: int) -> str:
        rel = f"images/{i:05d}.webp"
        _square(records[i]["image"]).save(img_dir / rel, "WEBP", quality=quality, method=4)
        return rel

    with ThreadPoolExecutor(max_workers=2) as pool:
        rels = list(tqdm(pool.map(job, range(len(records))), total=len(records), desc="webp", unit="img"))
    with open(img_dir / "train.jsonl", "w", encoding="utf-8") as f:
        for rec, rel in zip(records, rels):
            f.write(json.dumps({**rec, "image": rel}, ensure_ascii=False) + "\n")
    (out / "img1" / "images").mkdir(parents=True, exist_ok=True)
    moved = 0
    for rel in rels:  # the first part_mib MiB of photos go with the first call
        src = img_dir / rel
        moved += src.stat().st_size
        if moved > part_mib * 2 ** 20:
            break
        src.rename(out / "img1" / rel)

    captions = [r["captions"] for r in records]
    emb, counts = caption_embeddings(data, "train", captions, "minilm")  # [N, K, D], cached in DATA
    unique = sorted({c for caps in captions for c in caps})
    row = {}
    for i, caps in enumerate(captions):
        for k, c in enumerate(caps):
            row.setdefault(c, emb[i, k])
    vectors = torch.stack([row[c] for c in unique])  # [U, D]
    scale = vectors.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(vectors / scale[:, None]).to(torch.int8)
    (out / "emb").mkdir(parents=True, exist_ok=True)
    save_file({"q": q, "scale": scale.float()}, str(out / "emb" / "train-minilm-int8.safetensors"),
              metadata={"captions": str(len(unique)), "encoder": "minilm"})
    err = (q.float() * scale[:, None] - vectors).norm(dim=1) / vectors.norm(dim=1)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2 ** 20
    print(f"{len(records):,} images, {len(unique):,} distinct captions (int8 error: mean {err.mean():.4f}, "
          f"max {err.max():.4f}); packs {size:.1f} MiB in {out}")


class _Table(TextEncoder):
    """An encoder that looks captions up in the packed table; named ``minilm`` so that the cache
    it fills is the one ``data.text_encoder=minilm`` reads."""

    name = "minilm"

    def __init__(self, captions: list[str], vectors: torch.Tensor):
        self.index = {c: i for i, c in enumerate(captions)}
        self.vectors = vectors
        self.dim = vectors.shape[1]

    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        return self.vectors[[self.index[t] for t in texts]]


def unpack_text(pack_dir: Path, data: Path) -> None:
    records = read_manifest(data, "train")
    captions = [r["captions"] for r in records]
    unique = sorted({c for caps in captions for c in caps})
    t = load_file(str(pack_dir / "train-minilm-int8.safetensors"))
    if t["q"].shape[0] != len(unique):
        raise SystemExit(f"{pack_dir}: {t['q'].shape[0]} vectors for {len(unique)} distinct captions")
    vectors = t["q"].float() * t["scale"][:, None]
    table = _Table(unique, vectors)
    emb, _ = caption_embeddings(data, "train", captions, table, progress=False)
    # the sample sheets' captions (the first train captions: the data there has no test split)
    caption_embeddings(data, "sheet", [[c] for c in fixed_captions(data)], table, progress=False)
    print(f"{data}: MiniLM caption cache written, {tuple(emb.shape)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--quality", type=int, default=40, help="WebP quality")
    a.add_argument("--part-mib", type=float, default=48, help="MiB of photos in the first call's pack")
    b = sub.add_parser("unpack-images")
    b.add_argument("--pack", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("unpack-text")
    c.add_argument("--pack", type=Path, required=True)
    c.add_argument("--data", type=Path, required=True)
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.data, args.out, args.quality, args.part_mib)
    elif args.cmd == "unpack-images":
        from stackgan.data.prepare import prepare_dataset
        print(prepare_dataset(args.pack, args.out, progress=False))
    else:
        unpack_text(args.pack, args.data)


if __name__ == "__main__":
    main()
