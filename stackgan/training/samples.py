"""Sample sheets written during training: fixed captions and fixed noise, so sheets of
successive steps show how the same images evolve."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import Config
from ..pipeline import StackGANPipeline
from ..viz import stage_sheet
from .monitor import pixel_spread

N_SAMPLES = 8


def sample_split(data_dir: str | Path) -> str:
    """The split the sample captions come from: test where the data has one, else train."""
    return "test" if (Path(data_dir) / "test.jsonl").exists() else "train"


def fixed_captions(data_dir: str | Path, n: int = N_SAMPLES) -> list[str]:
    """The first ``n`` test captions (full captions where the data has them), else train ones."""
    path = Path(data_dir) / f"{sample_split(data_dir)}.jsonl"
    caps = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and len(caps) < n:
                rec = json.loads(line)
                caps.append(rec.get("full_caption") or rec["captions"][0])
    return caps


class SampleSheet:
    def __init__(self, data_dir, text_norm, cfg: Config, device, stage: int):
        self.captions = fixed_captions(data_dir)
        self.cfg, self.norm, self.stage = cfg, text_norm, stage
        from ..text.cache import caption_embeddings
        from ..text.encoders import PRECOMPUTED
        if cfg.data.text_encoder == PRECOMPUTED:  # the rows of the same (first) manifest lines
            from ..data.manifest import read_manifest
            from ..text.cache import precomputed_embeddings
            split = sample_split(data_dir)
            emb = precomputed_embeddings(data_dir, split, len(read_manifest(data_dir, split)))[0]
            self.emb = text_norm(emb[:len(self.captions), 0])  # [n, D]
        else:
            emb = caption_embeddings(data_dir, "sheet", [[c] for c in self.captions], cfg.data.text_encoder,
                                     progress=False)[0]  # [n, 1, D], cached like the data's
            self.emb = text_norm(emb[:, 0])  # [n, D]
        # the pixel spread of the sample split's first real images at 64 px: what collapse is measured against
        from ..data.manifest import load_image, read_manifest
        records = read_manifest(data_dir, sample_split(data_dir))[:len(self.captions)]
        self.real_spread = pixel_spread(torch.stack([
            torch.tensor(load_image(Path(data_dir) / r["image"], 64, r.get("bbox"))) for r in records]))
        self.spread = float("nan")  # the last sheet's (write)

    def write(self, G, step: int, writer) -> Path:
        """Write the sheet of ``step``; ``self.spread`` is then its Stage-I images' pixel spread."""
        pipe = StackGANPipeline.from_config(self.cfg, G, self.norm, self.stage)
        out = pipe.generate(embeddings=self.emb, seed=0)
        self.spread = pixel_spread(out.stage1)
        writer.add_scalar("monitor/sample_spread", self.spread, step)
        path = Path(writer.log_dir).parent / "samples" / f"step-{step:06d}.png"
        stage_sheet(out, self.captions, path, cell=128)
        with Image.open(path) as im:
            grid = np.array(im.convert("RGB"))
        writer.add_image("samples", torch.from_numpy(grid).permute(2, 0, 1), step)
        return path
