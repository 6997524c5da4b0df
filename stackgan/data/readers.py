"""Readers for the data layouts StackGAN users have, all giving the same records.

Layouts (``detect_layout`` picks one from the files present):

- ``manifest``: this project's ``train.jsonl`` / ``test.jsonl`` (``stackgan.data.manifest``).
- ``birds``: the StackGAN release for CUB-200-2011: ``train|test/filenames.pickle``,
  ``class_info.pickle``, optional ``char-CNN-RNN-embeddings.pickle``, ``text_c10/<key>.txt``
  and ``CUB_200_2011/images/<key>.jpg`` with ``images.txt`` + ``bounding_boxes.txt`` (the
  birds are cropped to a square of side 0.75 * max(w, h) around their box).
- ``flowers``: the same release layout for Oxford-102 with ``jpg/`` photos and captions in
  ``text_c10/class_NNNNN/``. Without split pickles, the classes whose number is a multiple of 5
  are the test split (82 train / 20 test classes).
- ``coco``: MS-COCO 2014, ``annotations/captions_{train,val}2014.json`` with ``train2014/`` and
  ``val2014/`` image folders (train -> train, val -> test).
- ``folder``: images with a same-name ``.txt`` beside each (one caption a line); ``train/`` and
  ``test/`` subfolders are the splits when present, else everything is ``train``.

Every reader returns a list of ``Record`` per split, in a fixed order, and checks what it
reads: errors name the file (and line). With ``skip_bad=True`` a bad item is left out and
its reason kept in ``Dataset.skipped`` instead, so an image can never end up beside another
image's captions.

Example::

    ds = open_dataset("../shared/data/flowers")
    recs = ds.records("train")        # [Record(image=..., captions=[10 strings], label=1, ...)]
    print(ds.summary())
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .manifest import DataError, read_manifest
from .safe_pickle import load_pickle

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RELEASE_CAPTIONS = 10  # captions per image in the authors' text_c10 files
EMBEDDINGS_NAME = "char-CNN-RNN-embeddings.pickle"


@dataclass
class Record:
    image: Path
    captions: list[str]
    label: int | None = None  # class number as the data set numbers it (CUB 1-200, Oxford 1-102)
    bbox: tuple[float, float, float, float] | None = None  # x, y, w, h (birds)
    key: str = ""  # the data set's own name for the item
    row: int = -1  # its row in the split's precomputed embeddings (release layouts)

    def to_json(self) -> dict:
        rec = {"image": str(self.image), "captions": self.captions, "key": self.key}
        if self.label is not None:
            rec["label"] = self.label
        if self.bbox is not None:
            rec["bbox"] = list(self.bbox)
        return rec


@dataclass
class Dataset:
    root: Path
    layout: str
    splits: dict[str, list[Record]]
    embeddings: dict[str, Path] = field(default_factory=dict)  # split -> precomputed embeddings file
    skipped: list[str] = field(default_factory=list)  # "file: reason" of items left out (skip_bad)
    class_names: dict[int, str] = field(default_factory=dict)

    def records(self, split: str) -> list[Record]:
        if split not in self.splits:
            raise DataError(f"{self.root}: no {split!r} split (it has {', '.join(self.splits) or 'none'})")
        return self.splits[split]

    def summary(self, check_images: bool = False) -> str:
        """What the data set holds, one fact a line (``stackgan data info``)."""
        lines = [f"{self.root}: layout {self.layout}"]
        problems = list(self.skipped)
        for split, recs in self.splits.items():
            counts = [len(r.captions) for r in recs]
            n_caps = sum(counts)
            labels = {r.label for r in recs if r.label is not None}
            per = (f"{min(counts)}-{max(counts)} (mean {n_caps / len(recs):.1f})" if counts and min(counts) != max(counts)
                   else str(counts[0]) if counts else "0")
            lines.append(f"  {split}: {len(recs):,} images, {n_caps:,} captions, {per} per image"
                         + (f", {len(labels)} classes" if labels else ""))
            missing = [r.image for r in recs if not r.image.is_file()]
            if missing:
                problems.append(f"{split}: {len(missing):,} of {len(recs):,} image files missing "
                                f"(first: {missing[0]})")
            elif check_images:
                problems += [f"{split}: {msg}" for msg in _check_images(recs)]
            if split in self.embeddings:
                arr = load_embeddings(self.embeddings[split])
                lines.append(f"    embeddings: {self.embeddings[split].name} {tuple(arr.shape)} {arr.dtype}")
            else:
                lines.append("    embeddings: none precomputed")
        total = sum(len(r) for r in self.splits.values())
        total_caps = sum(len(r.captions) for recs in self.splits.values() for r in recs)
        all_labels = {r.label for recs in self.splits.values() for r in recs if r.label is not None}
        lines.append(f"  total: {total:,} images, {total_caps:,} captions"
                     + (f", {len(all_labels)} classes" if all_labels else ""))
        lines.append("  problems: none found" if not problems else f"  problems ({len(problems)}):")
        lines += [f"    {p}" for p in problems[:20]]
        if len(problems) > 20:
            lines.append(f"    ... and {len(problems) - 20} more")
        return "\n".join(lines)


def _check_images(recs: list[Record]) -> list[str]:
    """The errors that decoding each image (as ``data prepare`` does) gives."""
    from .manifest import load_image_sizes
    bad = []
    for r in recs:
        try:
            load_image_sizes(r.image, (), r.bbox)
        except DataError as e:
            bad.append(str(e))
    return bad


# ---------------------------------------------------------------------------------------------
# helpers

def read_caption_file(path: Path, expected: int | None = None, at_least: int = 1) -> list[str]:
    """Captions of one text file, one a line; strict UTF-8; no empty caption lines."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{path}: caption file not found") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte {raw[e.start]:#04x})") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines are only the file's end
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{path}, line {n}: empty caption")
    caps = [" ".join(line.split()) for line in lines]
    need = expected if expected is not None else at_least
    if len(caps) < need:
        raise DataError(f"{path}: {len(caps)} caption line(s), expected at least {need}")
    return caps[:expected] if expected is not None else caps


def load_embeddings(path: Path) -> np.ndarray:
    """A precomputed embedding array ``[N, K, D]`` (or ``[N, D]``) from ``.pickle`` (restricted) or ``.npy``."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from e
    else:
        arr = load_pickle(path)
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr) if isinstance(arr, list) else arr
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.ndim not in (2, 3):
        what = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise DataError(f"{path}: expected a float array [N, K, D] or [N, D] of embeddings, found {what}")
    return arr[:, None, :] if arr.ndim == 2 else arr


class _Collector:
    """Raise on the first bad item, or (skip_bad) remember it and go on."""

    def __init__(self, skip_bad: bool):
        self.skip_bad, self.skipped = skip_bad, []

    def __call__(self, fn, *args):
        try:
            return fn(*args)
        except DataError as e:
            if not self.skip_bad:
                raise
            self.skipped.append(str(e))
            return None


def _check_list(obj, path: Path, kind) -> list:
    if not isinstance(obj, (list, tuple)) or not all(isinstance(x, kind) for x in obj):
        raise DataError(f"{path}: expected a list of {getattr(kind, '__name__', 'values')}, "
                        f"found {type(obj).__name__}")
    return list(obj)


# ---------------------------------------------------------------------------------------------
# layouts

def detect_layout(root: str | Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if (root / "train.jsonl").exists():
        return "manifest"
    if (root / "text_c10").is_dir():
        if (root / "CUB_200_2011").is_dir():
            return "birds"
        if (root / "jpg").is_dir() or any((root / s / "filenames.pickle").exists() for s in ("train", "test")):
            return "flowers"
        return "birds"
    if (root / "annotations").is_dir() and list((root / "annotations").glob("captions_*2014.json")):
        return "coco"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        return "folder"
    raise DataError(f"{root}: found no data set layout here (expected train.jsonl, a text_c10/ folder (birds, "
                    "flowers), annotations/captions_*2014.json (COCO) or images with .txt captions)")


def open_dataset(root: str | Path, skip_bad: bool = False) -> Dataset:
    """Read every split of the data set in ``root`` (layout detected from its files)."""
    root = Path(root)
    layout = detect_layout(root)
    reader = {"manifest": _read_manifest_layout, "birds": _read_release, "flowers": _read_release,
              "coco": _read_coco, "folder": _read_folder}[layout]
    return reader(root, layout, _Collector(skip_bad))


def _read_manifest_layout(root: Path, layout: str, take: _Collector) -> Dataset:
    splits = {}
    for split in ("train", "test"):
        if (root / f"{split}.jsonl").exists():
            splits[split] = [Record(image=root / r["image"], captions=r["captions"], label=r.get("label"),
                                    bbox=tuple(r["bbox"]) if r.get("bbox") else None,
                                    key=r.get("key", r["image"])) for r in read_manifest(root, split)]
    embeddings = {s: root / f"embeddings-{s}.npy" for s in splits if (root / f"embeddings-{s}.npy").exists()}
    return Dataset(root, layout, splits, embeddings)


def _release_splits(root: Path) -> list[str]:
    return [s for s in ("train", "test") if (root / s / "filenames.pickle").exists()]


def _read_release(root: Path, layout: str, take: _Collector) -> Dataset:
    text_root = root / "text_c10"
    boxes = _cub_boxes(root) if layout == "birds" else {}
    splits: dict[str, list[Record]] = {}
    embeddings = {}
    split_names = _release_splits(root)
    if split_names:
        for split in split_names:
            keys = _check_list(load_pickle(root / split / "filenames.pickle"), root / split / "filenames.pickle", str)
            labels = [None] * len(keys)
            info = root / split / "class_info.pickle"
            if info.exists():
                labels = [int(x) for x in _check_list(load_pickle(info), info, (int, np.integer))]
                if len(labels) != len(keys):
                    raise DataError(f"{info}: {len(labels):,} class ids but {root / split / 'filenames.pickle'} "
                                    f"has {len(keys):,} file names; the two must list the same images")
            emb = root / split / EMBEDDINGS_NAME
            if emb.exists():
                n = load_embeddings(emb).shape[0]
                if n != len(keys):
                    raise DataError(f"{emb}: {n:,} embedding rows but {root / split / 'filenames.pickle'} has "
                                    f"{len(keys):,} file names")
                embeddings[split] = emb
            splits[split] = _release_records(root, layout, text_root, keys, labels, boxes, take)
    else:  # flowers without the authors' split files: this project's class split
        if layout != "flowers":
            raise DataError(f"{root}: no train/filenames.pickle or test/filenames.pickle (the release's split files)")
        items = []
        for path in sorted(text_root.glob("class_*/*.txt")):
            m = re.fullmatch(r"class_(\d+)", path.parent.name)
            if m:
                items.append((int(m.group(1)), path))
        if not items:
            raise DataError(f"{text_root}: no class_NNNNN/*.txt caption files")
        items.sort(key=lambda t: t[1].name)
        for split, is_test in (("train", False), ("test", True)):
            chosen = [(c, p) for c, p in items if (c % 5 == 0) == is_test]
            keys = [f"{p.parent.name}/{p.stem}" for _, p in chosen]
            splits[split] = _release_records(root, layout, text_root, keys, [c for c, _ in chosen], boxes, take)
    names = {}
    if layout == "birds" and (root / "CUB_200_2011" / "classes.txt").exists():
        for line in (root / "CUB_200_2011" / "classes.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                num, name = line.split(maxsplit=1)
                names[int(num)] = name
    elif (root / "cat_to_name.json").exists():
        names = {int(k): v for k, v in json.loads((root / "cat_to_name.json").read_text(encoding="utf-8")).items()}
    return Dataset(root, layout, splits, embeddings, take.skipped, names)


def _release_records(root, layout, text_root, keys, labels, boxes, take) -> list[Record]:
    index = None
    out = []
    for row, (key, label) in enumerate(zip(keys, labels)):
        cap_path = text_root / f"{key}.txt"
        if not cap_path.exists() and layout == "flowers":  # keys like jpg/image_00001: find its class folder
            if index is None:
                index = {p.stem: p for p in text_root.glob("class_*/*.txt")}
            cap_path = index.get(Path(key).name, cap_path)
        stem = Path(key).name
        image = (root / "CUB_200_2011" / "images" / f"{key}.jpg" if layout == "birds" else root / "jpg" / f"{stem}.jpg")
        if layout == "birds" and boxes and key not in boxes:
            if take(_raise, f"{root / 'CUB_200_2011' / 'images.txt'}: no entry for {key}.jpg (needed for its "
                            "bounding box)") is None:
                continue
        caps = take(read_caption_file, cap_path, RELEASE_CAPTIONS)
        if caps is None:
            continue
        out.append(Record(image, caps, label, boxes.get(key), key, row))
    return out


def _raise(msg: str):
    raise DataError(msg)


def _cub_boxes(root: Path) -> dict[str, tuple[float, float, float, float]]:
    """CUB image key (``class/name`` without .jpg) -> bounding box (x, y, w, h)."""
    cub = root / "CUB_200_2011"
    images, boxes = cub / "images.txt", cub / "bounding_boxes.txt"
    if not images.exists() or not boxes.exists():
        return {}
    id_to_key = {}
    for n, line in enumerate(images.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{images}, line {n}: expected '<id> <path>'")
            id_to_key[parts[0]] = parts[1].rsplit(".", 1)[0]
    out = {}
    for n, line in enumerate(boxes.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            parts = line.split()
            try:
                box = tuple(float(v) for v in parts[1:])
            except ValueError:
                box = ()
            if len(box) != 4 or parts[0] not in id_to_key:
                raise DataError(f"{boxes}, line {n}: expected '<id> x y w h' with an id from {images.name}")
            out[id_to_key[parts[0]]] = box
    return out


def _read_coco(root: Path, layout: str, take: _Collector) -> Dataset:
    splits = {}
    for split, year_split in (("train", "train2014"), ("test", "val2014")):
        ann = root / "annotations" / f"captions_{year_split}.json"
        if not ann.exists():
            continue
        try:
            data = json.loads(ann.read_text(encoding="utf-8"))
            images = {im["id"]: im["file_name"] for im in data["images"]}
            caps: dict[int, list[str]] = {}
            for a in data["annotations"]:
                text = " ".join(str(a["caption"]).split())
                if text:
                    caps.setdefault(a["image_id"], []).append(text)
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{ann}: not a COCO captions file ({type(e).__name__}: {e})") from e
        recs = []
        for image_id in sorted(images):
            if image_id not in caps:
                take(_raise, f"{ann}: image {image_id} ({images[image_id]}) has no caption")
                continue
            recs.append(Record(root / year_split / images[image_id], caps[image_id], None, None, str(image_id)))
        splits[split] = recs
    return Dataset(root, layout, splits, skipped=take.skipped)


def _read_folder(root: Path, layout: str, take: _Collector) -> Dataset:
    parts = {s: root / s for s in ("train", "test") if (root / s).is_dir()} or {"train": root}
    splits = {}
    for split, folder in parts.items():
        recs = []
        for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            caps = take(read_caption_file, image.with_suffix(".txt"))
            if caps is not None:
                recs.append(Record(image, caps, None, None, str(image.relative_to(root))))
        splits[split] = recs
    return Dataset(root, layout, splits, skipped=take.skipped)
