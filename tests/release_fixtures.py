"""Tiny data sets written in the exact layouts the readers accept (StackGAN release, COCO, folder).

The release pickles are written the way Python 2 wrote the authors' files: protocol 0, byte
strings as ``S'...'`` and numpy int64 scalars through ``numpy.core.multiarray.scalar``.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40),
          "purple": (140, 50, 190), "orange": (240, 140, 30)}


def py2_str_list(items: list[str]) -> bytes:
    """A protocol-0 pickle of a list of Python 2 byte strings."""
    out = ["(lp0\n"]
    for i, s in enumerate(items, 1):
        out.append(f"S'{s}'\np{i}\na")  # (no quotes or backslashes in the fixtures' names)
    out.append(".")
    return "".join(out).encode("latin1")


def py2_int64_list(values: list[int]) -> bytes:
    """A protocol-0 pickle of a list of numpy int64 scalars, as Python 2 + numpy wrote them."""
    out = ["(lp0\n"]
    for v in values:
        raw = "".join(f"\\x{b:02x}" for b in int(v).to_bytes(8, "little", signed=True))
        out.append("cnumpy.core.multiarray\nscalar\n(cnumpy\ndtype\n(S'i8'\nI0\nI1\ntR(I3\nS'<'\nNNNI-1\nI-1\nI0\ntb"
                   f"S'{raw}'\ntRa")
    out.append(".")
    return "".join(out).encode("latin1")


def solid_jpeg(path: Path, color, size=(40, 30), box=None, box_color=None, mode="RGB"):
    """A solid image; with ``box`` (x, y, w, h) that rectangle painted ``box_color``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, color)
    if box is not None:
        x, y, w, h = box
        im.paste(Image.new("RGB", (w, h), box_color), (x, y))
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, quality=95) if path.suffix == ".jpg" else im.save(path)


def write_birds(root: Path, n_train: int = 4, n_test: int = 2, embeddings: bool = True) -> dict:
    """A CUB-style release: two classes per split, 10 captions per image naming the bird's color.

    The bird (a colored rectangle, its bounding box) sits on a gray background; returns
    ``{key: color name}``."""
    colors = list(COLORS)
    cub = root / "CUB_200_2011"
    lines_images, lines_boxes, lines_classes, truth = [], [], [], {}
    image_id = 0
    for split, n, first_class in (("train", n_train, 1), ("test", n_test, 3)):
        keys, labels = [], []
        for i in range(n):
            cls = first_class + i % 2
            cname = f"{cls:03d}.Bird_{cls}"
            key = f"{cname}/Bird_{cls}_{split}_{i:04d}"
            color = colors[(image_id) % len(colors)]
            image_id += 1
            box = (8 + i, 6, 16, 12)
            solid_jpeg(cub / "images" / f"{key}.jpg", (128, 128, 128), (60, 48), box, COLORS[color])
            lines_images.append(f"{image_id} {key}.jpg")
            lines_boxes.append(f"{image_id} {box[0]}.0 {box[1]}.0 {box[2]}.0 {box[3]}.0")
            caps = [f"a {color} bird number {j}" for j in range(10)]
            (root / "text_c10" / cname).mkdir(parents=True, exist_ok=True)
            (root / "text_c10" / f"{key}.txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
            keys.append(key)
            labels.append(cls)
            truth[key] = color
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "filenames.pickle").write_bytes(py2_str_list(keys))
        (root / split / "class_info.pickle").write_bytes(py2_int64_list(labels))
        if embeddings:  # row r holds r + caption / 100 everywhere, so misordering shows
            emb = (np.arange(n, dtype=np.float32)[:, None, None] + np.arange(10, dtype=np.float32)[None, :, None] / 100
                   ) * np.ones((1, 1, 16), dtype=np.float32)
            (root / split / "char-CNN-RNN-embeddings.pickle").write_bytes(pickle.dumps(emb, protocol=4))
    cub.mkdir(parents=True, exist_ok=True)
    (cub / "images.txt").write_text("\n".join(lines_images) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(lines_boxes) + "\n")
    lines_classes = [f"{c} {c:03d}.Bird_{c}" for c in range(1, 5)]
    (cub / "classes.txt").write_text("\n".join(lines_classes) + "\n")
    return truth


def write_flowers(root: Path, classes=(1, 2, 5, 10), per_class: int = 2) -> dict:
    """Oxford-102 style without split pickles; returns ``{image stem: class}``."""
    truth, n = {}, 0
    for cls in classes:
        for _ in range(per_class):
            n += 1
            stem = f"image_{n:05d}"
            color = list(COLORS)[n % len(COLORS)]
            solid_jpeg(root / "jpg" / f"{stem}.jpg", COLORS[color], (50, 40))
            folder = root / "text_c10" / f"class_{cls:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{stem}.txt").write_text("\n".join(f"a {color} flower, line {j}" for j in range(10)) + "\n")
            truth[stem] = cls
    (root / "cat_to_name.json").write_text(json.dumps({str(c): f"flower {c}" for c in classes}))
    return truth


def write_coco(root: Path) -> None:
    for split, ids in (("train2014", (11, 12, 13)), ("val2014", (21, 22))):
        images, anns = [], []
        for k, image_id in enumerate(ids):
            name = f"COCO_{split}_{image_id:012d}.jpg"
            color = list(COLORS)[k]
            solid_jpeg(root / split / name, COLORS[color])
            images.append({"id": image_id, "file_name": name, "width": 40, "height": 30})
            anns += [{"id": image_id * 10 + j, "image_id": image_id, "caption": f" A {color}  thing {j}. "}
                     for j in range(5)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps({"images": images,
                                                                                 "annotations": anns}))


def write_folder(root: Path, split_folders: bool = True) -> None:
    for split, names in (("train", ("red", "green", "blue")), ("test", ("yellow",))):
        base = root / split if split_folders else root
        for name in names:
            solid_jpeg(base / f"{name}.png", COLORS[name])
            (base / f"{name}.txt").write_text(f"a {name} square\nsomething {name}\n", encoding="utf-8")
