"""The paper's text encoder: char-CNN-RNN (Reed et al., CVPR 2016), trained here in PyTorch.

Text side, as in the authors' Torch "hybrid" model: a caption as one-hot characters (201 of
them, padded or cut), three 1-d convolutions with ReLU and max-pooling (about 8 steps of 256
features remain), a ReLU recurrence of 256 units over those steps, the mean of its hidden
states, and a linear layer to the embedding (1024-d).

Image side: the authors used fixed GoogLeNet features. Nothing may be downloaded here, so this
project trains a small CNN on the data's own 64 px images jointly with the text side
(``ImageSide``); only the text side is kept for embedding.

Loss: the deep symmetric structured joint embedding. Scores are dot products; for every image,
a hinge ``max(0, 1 + s(image, other text) - s(image, own text))`` over the batch's texts of
other classes, and the same with images and texts swapped; averaged. Without class labels
(Shapes) every image is its own class: the other images of the batch are the negatives.

Example::

    enc = train_char_cnn_rnn("data/shapes", "runs/text-encoder", steps=3000)
    vectors = CharCnnRnnEncoder("runs/text-encoder").encode(["a red circle"])   # [1, 1024]
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..utils import atomic_path, from_uint8
from .base import TextEncoder, warn_truncated
from ..errors import CheckpointError, UsageError

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+=<>()[]{} "
MAX_CHARS = 201
PREFIX = "char-cnn-rnn:"
FORMAT_VERSION = 1


def one_hot(texts: Sequence[str], length: int = MAX_CHARS) -> torch.Tensor:
    """``[N, len(ALPHABET), length]`` one-hot of the lower-cased captions, padded or cut to
    ``length``; characters outside the alphabet (and padding) are all-zero columns."""
    index = {c: i for i, c in enumerate(ALPHABET)}
    hot = torch.zeros(len(texts), len(ALPHABET), length)
    for n, text in enumerate(texts):
        pos = [(index[c], t) for t, c in enumerate(text.lower()[:length]) if c in index]
        if pos:
            rows, cols = zip(*pos)
            hot[n, list(rows), list(cols)] = 1.0
    return hot


class CharCnnRnn(nn.Module):
    """One-hot characters ``[B, A, 201]`` -> embedding ``[B, embed_dim]``."""

    def __init__(self, embed_dim: int = 1024, hidden: int = 256):
        super().__init__()
        a = len(ALPHABET)
        self.cnn = nn.Sequential(
            nn.Conv1d(a, 384, 4), nn.ReLU(inplace=True), nn.MaxPool1d(3, 3),  # 201 -> 198 -> 66
            nn.Conv1d(384, 512, 4), nn.ReLU(inplace=True), nn.MaxPool1d(3, 3),  # -> 63 -> 21
            nn.Conv1d(512, hidden, 4), nn.ReLU(inplace=True), nn.MaxPool1d(3, 2),  # -> 18 -> 8
        )
        self.rnn = nn.RNN(hidden, hidden, nonlinearity="relu", batch_first=True)
        self.out = nn.Linear(hidden, embed_dim)
        for p in self.parameters():  # the authors' initialisation
            nn.init.uniform_(p, -0.08, 0.08)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        h = self.cnn(chars).transpose(1, 2)  # [B, 8, hidden]
        states, _ = self.rnn(h)  # [B, 8, hidden]
        return self.out(states.mean(1))  # [B, embed_dim]


class ImageSide(nn.Module):
    """A small CNN for 64 px images -> ``[B, embed_dim]`` (stand-in for the authors' GoogLeNet features)."""

    def __init__(self, embed_dim: int = 1024, width: int = 32):
        super().__init__()
        layers, c = [], 3
        for w in (width, 2 * width, 4 * width, 8 * width):  # 64 -> 4
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2, inplace=True)]
            c = w
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(c * 16, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(images).flatten(1))


def joint_embedding_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Deep symmetric structured joint embedding loss of matched rows ``img[i]``, ``txt[i]``."""
    scores = img @ txt.T  # [B, B]
    own = scores.diagonal()
    if labels is None:
        other = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    else:
        other = labels[:, None] != labels[None, :]
    img_side = (1 + scores - own[:, None]).clamp(min=0) * other  # image i against other texts j
    txt_side = (1 + scores - own[None, :]).clamp(min=0) * other  # text j against other images i
    n = other.sum().clamp(min=1)
    return (img_side.sum() + txt_side.sum()) / n


def train_char_cnn_rnn(data_dir: str | Path, out_dir: str | Path, steps: int = 3000, minutes: float = 0.0,
                       batch_size: int = 40, embed_dim: int = 1024, lr: float = 4e-4, seed: int = 0,
                       progress: bool = True) -> Path:
    """Train on a manifest folder's train split (images at 64 px, all captions); writes ``out_dir``."""
    from ..data.manifest import load_images, read_manifest

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    records = read_manifest(data_dir, "train")
    images = load_images(data_dir, "train", records, 64, progress)  # uint8 [N, 3, 64, 64]
    captions = [r["captions"] for r in records]
    labels = torch.tensor([r.get("label", i) for i, r in enumerate(records)])
    if batch_size > len(records):
        raise UsageError(f"batch size {batch_size} is larger than the data set ({len(records)} images)")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    text_net, image_net = CharCnnRnn(embed_dim), ImageSide(embed_dim)
    params = list(text_net.parameters()) + list(image_net.parameters())
    opt = torch.optim.RMSprop(params, lr=lr)
    per_epoch = max(1, len(records) // batch_size)
    t0, step, losses = time.monotonic(), 0, []
    bar = tqdm(total=steps or None, desc="char-CNN-RNN", unit="step", disable=not progress)
    while (not steps or step < steps) and (not minutes or time.monotonic() - t0 < minutes * 60):
        for group in opt.param_groups:  # x0.98 per epoch, as the authors
            group["lr"] = lr * 0.98 ** (step // per_epoch)
        idx = _distinct_label_batch(labels, batch_size, gen)
        caps = [captions[i][torch.randint(len(captions[i]), (1,), generator=gen).item()] for i in idx.tolist()]
        x = from_uint8(images[idx])  # [B, 3, s, s]
        loss = joint_embedding_loss(image_net(x), text_net(one_hot(caps)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
    bar.close()
    if not losses:
        raise UsageError("no training step was run (steps / minutes too small)")
    window = min(50, max(1, len(losses) // 4))  # mean loss over the first and the last `window` steps
    meta = {"format_version": FORMAT_VERSION, "embed_dim": embed_dim, "alphabet": ALPHABET, "max_chars": MAX_CHARS,
            "image_side": "small CNN on the data's 64 px images, trained jointly (not GoogLeNet)",
            "data": str(data_dir), "steps": step, "batch_size": batch_size, "lr": lr,
            "seconds": round(time.monotonic() - t0, 1), "loss_window": window,
            "loss_start": round(sum(losses[:window]) / window, 4),
            "loss_end": round(sum(losses[-window:]) / window, 4)}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in text_net.state_dict().items()}, str(tmp))
    with atomic_path(out_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return out_dir


def _distinct_label_batch(labels: torch.Tensor, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """Random images with pairwise different labels where the data has enough classes (the
    authors' batches: one image per class), else random images."""
    perm = torch.randperm(len(labels), generator=gen)
    seen, picked = set(), []
    for i in perm.tolist():
        if labels[i].item() not in seen:
            seen.add(labels[i].item())
            picked.append(i)
            if len(picked) == batch_size:
                return torch.tensor(picked)
    return perm[:batch_size]


class CharCnnRnnEncoder(TextEncoder):
    """A trained char-CNN-RNN folder (``config.json`` + ``model.safetensors``) as a text encoder."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
            weights = load_file(str(directory / "model.safetensors"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{directory}: no trained char-CNN-RNN here (expected config.json and "
                                    "model.safetensors; make one with `stackgan text-encoder train`)") from e
        if meta.get("format_version") != FORMAT_VERSION or meta.get("alphabet") != ALPHABET:
            raise CheckpointError(f"{directory / 'config.json'}: not a char-CNN-RNN of this version")
        self.name = f"{PREFIX}{directory}"
        self.dim = int(meta["embed_dim"])
        self.net = CharCnnRnn(self.dim)
        self.net.load_state_dict(weights)
        self.net.eval()

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        warn_truncated(sum(len(t) > MAX_CHARS for t in texts), MAX_CHARS, "characters")
        out = [self.net(one_hot(list(texts[i:i + batch_size])))
               for i in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="char-CNN-RNN", unit="batch")]
        return torch.cat(out) if out else torch.zeros(0, self.dim)
