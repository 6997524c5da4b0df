"""Picture sheets: images in rows with their captions written underneath."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw, ImageFont

from .utils import atomic_path

if TYPE_CHECKING:
    from .pipeline import GenerationOutput


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def to_pil(img: torch.Tensor, size: int | None = None) -> Image.Image:
    """uint8 ``[3, H, W]`` -> PIL image, optionally enlarged (nearest) to ``size``."""
    im = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
    if size and im.size[0] != size:
        im = im.resize((size, size), Image.NEAREST)
    return im


def caption_sheet(columns: list[list[torch.Tensor]], captions: list[str], path: str | Path,
                  cell: int = 256, labels: list[str] | None = None, text_lines: int = 4) -> Path:
    """Write a sheet: one column per caption; each column stacks the images of ``columns[j]``
    (e.g. Stage I above Stage II), each enlarged to ``cell`` px, with the caption underneath.
    ``labels`` (optional) name each image row on the left."""
    font = _font(12)
    rows = max(len(c) for c in columns)
    label_w = 70 if labels else 0
    text_h = 14 * text_lines + 6
    pad = 4
    W = label_w + len(columns) * (cell + pad) + pad
    H = rows * (cell + pad) + text_h + pad
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    chars = max(12, cell // 7)
    for j, (imgs, cap) in enumerate(zip(columns, captions)):
        x = label_w + pad + j * (cell + pad)
        for r, img in enumerate(imgs):
            sheet.paste(to_pil(img, cell), (x, pad + r * (cell + pad)))
        lines = textwrap.wrap(cap, chars)[:text_lines]
        draw.multiline_text((x, pad + rows * (cell + pad)), "\n".join(lines), fill=(0, 0, 0), font=font)
    for r, name in enumerate(labels or []):
        draw.text((4, pad + r * (cell + pad) + cell // 2), name, fill=(0, 0, 0), font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def stage_sheet(out: "GenerationOutput", captions: list[str], path: str | Path, cell: int) -> Path:
    """A caption sheet of pipeline output: Stage I above Stage II (when drawn) for each caption."""
    stages = list(out.stages.values())
    columns = [[images[i] for images in stages] for i in range(len(captions))]
    labels = ["Stage I", "Stage II"][: len(stages)]
    return caption_sheet(columns, captions, path, cell=cell, labels=labels)
