"""Probe: can this discriminator learn to read the sentence at all, with no generator in the game?

Trains a fresh D of the given configuration on real training images only, on the matching half
of its usual loss: (real image, its caption) against (real image, D's wrong caption, a share of
them one-word foils as in training). No fakes, no G. Every ``--every`` steps it runs the D check
(:func:`stackgan.evaluation.d_check.foil_preference`, 500 real test images, one attribute's words
swapped) and prints the rate per attribute. If D reads the shape word here and not inside the
GAN, the game is what keeps D from shape; if it does not read it here either, D's design is.
``--contrast`` trains and scores D's contrastive head instead; ``--classify`` trains D's encoder
with a shape classifier and no text at all (can it tell the shapes apart?); ``--trunk`` swaps the
encoder for another layout. ``--state`` trains nothing: it
checks a training run's contrastive head (or, with ``--matcher``, a trained image-text matcher), on
real test images or (``--fakes``) on its generator's images, split by whether the attribute checker
reads their shape (``--attribute``) right.
docs/training-recipe.md, thirteenth round, reports what it found.

    python experiments/d_probe.py data/shapes --steps 3000 --set data.foil_share=0.5
    python experiments/d_probe.py data/shapes --steps 3000 --set data.foil_share=0.5 --set model.d_spectral_norm=false
    python experiments/d_probe.py data/shapes-onehot --state RUN/stage1/checkpoints/step-00009000.pt --fakes
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from stackgan.augment import zoom
from stackgan.checkpoint import load_state
from stackgan.config import apply_overrides, from_dict, get_preset, validate
from stackgan.data.foils import ORACLE_MARK, one_hot, one_hot_foil, shapes_foil
from stackgan.data.manifest import load_images, read_manifest
from stackgan.data.shapes import ATTRIBUTES
from stackgan.evaluation.checker import WEIGHTS_NAME, AttributeChecker, load_checker, predict
from stackgan.pipeline import StackGANPipeline
from stackgan.utils import from_uint8
from stackgan.evaluation.d_check import foil_preference
from stackgan.losses import contrastive_loss, discriminator_loss_real
from stackgan.matching import load_matcher
from stackgan.models.build import build_discriminator
from stackgan.text import get_encoder
from stackgan.text.norm import TextNorm
from stackgan.training.data import load_train_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="a Shapes folder (captions cached by a training run, or precomputed)")
    p.add_argument("--preset", default="fast-sn-noca")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--samples", type=int, default=500, help="test images in each D check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the checks as JSON lines here")
    p.add_argument("--trunk", choices=("d", "checker", "checker-nobn", "d-up", "deep-k4", "deep-lrelu", "deep-nostage"),
                   default="d",
                   help="checker: replace D's image encoder by the attribute checker's trunk (BatchNorm, 128 px, a "
                        "stride-1 stage), pooled to D's 4x4 code: how fast a trunk that is known to read shape learns "
                        "the matching; checker-nobn: the same without its BatchNorm; d-up: D's own encoder on the "
                        "image enlarged to 128 px, its 8x8 code averaged to 4x4; deep-k4 / deep-lrelu / deep-nostage: "
                        "model.d_deep's layout without spectral norm, with 4x4 kernels / LeakyReLU(0.2) / no "
                        "stride-1 stage (one change each)")
    p.add_argument("--torch-init", action="store_true",
                   help="D's convs and linears start from PyTorch's default initialization (Kaiming-uniform) instead "
                        "of the reference N(0, 0.02)")
    p.add_argument("--pooled-head", action="store_true",
                   help="the contrastive head's image side reads the 4x4 code's mean and max over positions and a "
                        "1x1 conv of it to 8 channels, flattened (the checker's head), instead of the flattened code")
    p.add_argument("--classify", action="store_true",
                   help="on one-hot data: train D's trunk with a linear 4-way shape classifier on its flattened code "
                        "(the shape label read from the one-hot condition) instead of any matching loss, and report "
                        "its shape accuracy on the test images: can this trunk tell the shapes apart at all?")
    p.add_argument("--contrast", action="store_true",
                   help="also train D's contrastive head (model.d_contrast, stage1.contrast_weight, contrast_wrong) "
                        "and score the check with its cosine instead of the matching-aware logit")
    p.add_argument("--fakes", action="store_true",
                   help="with --state: the contrastive head's (or --matcher's) preference for the true word of "
                        "--attribute over a swapped one on the state's raw G images of the test conditions, split by "
                        "whether the attribute checker (of --checker) reads it right: does G draw it, or fool the head?")
    p.add_argument("--zoom", type=float, nargs="+",
                   help="with --contrast or --state, on one-hot data: the contrastive head's (or --matcher's) preference for the true shape over each "
                        "other shape word on real test images zoomed by these factors about their centre (edges "
                        "replicated), beside the checker's shape accuracy on them: does the head read the outline, or "
                        "the area?")
    p.add_argument("--attribute", default="shape", choices=sorted(ATTRIBUTES),
                   help="with --fakes: the attribute whose one-word foils are scored (default shape)")
    p.add_argument("--checker", default="data/shapes", help="the folder of the attribute checker (--fakes)")
    p.add_argument("--state", help="no training: check the contrastive head of this training state file's D "
                   "(the matching-aware logit: stackgan evaluate --metrics dcheck)")
    p.add_argument("--matcher", help="with --state: score with this frozen image-text matcher (a "
                   "DATA/.stackgan-cache/matcher-*.safetensors the run trained) instead of D's contrastive head")
    args = p.parse_args()
    if args.state:
        return check_state(args)

    cfg = validate(apply_overrides(get_preset(args.preset), args.set))
    sc = cfg.stage1
    torch.manual_seed(args.seed)
    data, norm = load_train_data(args.data, cfg.data, 64)
    cfg = replace(cfg, model=replace(cfg.model, text_dim=data.embeddings.shape[-1]))  # as training sets it
    D = build_discriminator(cfg.model, 1)
    if args.torch_init:
        for m in D.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if hasattr(m, "parametrizations"):  # spectral norm: initialize the weight it normalizes
                    nn.init.kaiming_uniform_(m.parametrizations.weight.original, a=5 ** 0.5)
                else:
                    m.reset_parameters()
    if args.trunk.startswith("checker"):
        trunk = AttributeChecker().trunk  # [B, 128, 8, 8] from 128 px
        if args.trunk == "checker-nobn":
            trunk = nn.Sequential(*[nn.Identity() if isinstance(m, nn.BatchNorm2d) else m for m in trunk])
        D.encode = nn.Sequential(nn.Upsample(size=128, mode="bilinear"), trunk, nn.AdaptiveAvgPool2d(4),
                                 nn.Conv2d(128, 8 * cfg.model.ndf1, 1))
    elif args.trunk.startswith("deep-"):
        D.encode = deep_variant(cfg.model.ndf1, args.trunk[5:])
    elif args.trunk == "d-up":
        D.encode = nn.Sequential(nn.Upsample(size=128, mode="bilinear"), D.encode, nn.AvgPool2d(2))
    if args.pooled_head:
        D.contrast.image = PooledImageHead(8 * cfg.model.ndf1, cfg.model.d_contrast)
    opt = torch.optim.Adam(D.parameters(), lr=sc.lr_d, betas=(sc.beta1, sc.beta2))
    rows = []

    score = contrast_score(D) if args.contrast else (lambda x, t: D.cond_logits(D(x), t))

    def check(step: int) -> None:
        D.eval()
        rates = foil_preference(score, args.data, cfg.data.text_encoder, norm, 64, args.samples, args.seed)
        D.train()
        rows.append({"step": step, **rates})
        print(f"step {step:>6}: " + "  ".join(f"{k} {v:.3f}" for k, v in rates.items()), flush=True)

    if args.classify:
        return classify(args, cfg, data, D)
    start = time.time()
    for step in tqdm(range(args.steps), desc="D alone", mininterval=10):
        real, text, wrong = data.batch(step, sc.batch_size)
        h = D(real)
        loss = discriminator_loss_real(D.cond_logits(h, text), D.cond_logits(h, wrong), None, sc.gan_loss)["total"]
        if args.contrast:
            head = D.contrast
            extra = (head.text(D.text(wrong)), wrong) if sc.contrast_wrong else (None, None)
            hz = D(zoom(real, sc.contrast_zoom)) if sc.contrast_zoom > 1 else h  # stage1.contrast_zoom
            loss = loss + sc.contrast_weight * contrastive_loss(head.image(hz), head.text(D.text(text)), text,
                                                                sc.contrast_temp, *extra)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % args.every == 0:
            check(step + 1)
    print(f"{args.steps} steps in {time.time() - start:.0f} s")
    if args.zoom:  # the trained head on zoomed real test images, per pair of shape words
        D.eval()
        check_zoom(args, D, norm)
    if args.out:
        with open(args.out, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))


def classify(args, cfg, data, D: nn.Module) -> None:
    shapes = len(ATTRIBUTES["shape"])  # the one-hot condition's first dimensions
    head = nn.Linear(8 * cfg.model.ndf1 * 16, shapes)
    sc = cfg.stage1
    opt = torch.optim.Adam([*D.parameters(), *head.parameters()], lr=sc.lr_d, betas=(sc.beta1, sc.beta2))
    records = read_manifest(args.data, "test")[:args.samples]
    images = from_uint8(load_images(args.data, "test", records, 64, progress=False))
    truth = torch.tensor([ATTRIBUTES["shape"].index(r["attributes"]["shape"]) for r in records])
    for step in tqdm(range(args.steps), desc="D trunk, shape classifier", mininterval=10):
        real, text, _ = data.batch(step, sc.batch_size)
        loss = F.cross_entropy(head(D(real).flatten(1)), text[:, :shapes].argmax(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % args.every == 0:
            D.eval()
            with torch.no_grad():
                pred = torch.cat([head(D(images[i:i + 64]).flatten(1)).argmax(1) for i in range(0, len(images), 64)])
            D.train()
            confusion = {ATTRIBUTES["shape"][k]: [round((pred[truth == k] == j).float().mean().item(), 3)
                                                   for j in range(shapes)] for k in range(shapes)}
            print(json.dumps({"step": step + 1, "shape": (pred == truth).float().mean().item(), **confusion}),
                  flush=True)


def deep_variant(ndf: int, change: str) -> nn.Sequential:
    """model.d_deep's encoder (stackgan.models.stage1.deep_encoder) with one change, no spectral norm."""
    strides = (2, 2, 2, 2) if change == "nostage" else (2, 2, 2, 2, 1)
    widths = (ndf, 2 * ndf, 4 * ndf, 6 * ndf, 8 * ndf)[:len(strides)]
    layers, cin = [nn.Upsample(size=128, mode="bilinear")], 3
    for i, (w, stride) in enumerate(zip(widths, strides)):
        k = 4 if i == 0 or change == "k4" else 3
        pad = 1 if k == 4 and stride == 2 or k == 3 else "same"
        layers += [nn.Conv2d(cin, w, k, stride, pad, bias=False),
                   nn.LeakyReLU(0.2, inplace=True) if change == "lrelu" else nn.ReLU(inplace=True)]
        cin = w
    if cin != 8 * ndf:  # no stride-1 stage: a 1x1 conv to the code's width
        layers.append(nn.Conv2d(cin, 8 * ndf, 1))
    return nn.Sequential(*layers, nn.AvgPool2d(2))


class PooledImageHead(nn.Module):
    """[B, C, 4, 4] -> [B, dim]: a linear map of the code's mean and max over positions (what is there,
    wherever it is) and of a 1x1 conv of it to 8 channels, flattened (where)."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.where = nn.Conv2d(channels, 8, 1)
        self.out = nn.Linear(2 * channels + 8 * 16, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([h.mean((2, 3)), h.amax((2, 3)), self.where(h).flatten(1)], 1))


def contrast_score(D: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``score(images, text) [N]``: the cosine of D's contrastive image and text embeddings."""
    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        head = D.contrast
        return F.cosine_similarity(head.image(D(x)), head.text(D.text(t)), dim=1)
    return score


def batched(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor, text: torch.Tensor,
            batch_size: int = 64) -> torch.Tensor:
    """``score(images, text)`` ``[N]``, computed ``batch_size`` images at a time."""
    return torch.cat([score(images[i:i + batch_size], text[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def check_state(args) -> None:
    state = load_state(args.state)
    cfg = from_dict(state["config"])
    D = build_discriminator(cfg.model, 1)
    D.load_state_dict(state["discriminator"])
    D.eval()
    if args.matcher:
        score = load_matcher(args.matcher).similarity  # cosine [N]
    elif getattr(D, "contrast", None) is None:
        raise SystemExit(f"{args.state}: this D has no contrastive head (model.d_contrast=0); give --matcher")
    else:
        score = contrast_score(D)
    norm = TextNorm(cfg.model.text_dim)
    norm.load_state_dict(state["text_norm"])
    if args.fakes:
        return check_fakes(args, score, norm, cfg.data.text_encoder)
    if args.zoom:
        return check_zoom(args, score, norm)
    rates = foil_preference(score, args.data, cfg.data.text_encoder, norm, 64, args.samples, args.seed)
    print(json.dumps({"state": args.state, "head": "matcher" if args.matcher else "contrast", **rates}))


@torch.no_grad()
def check_fakes(args, score: Callable, norm: TextNorm, text_encoder: str) -> None:
    a = args.attribute
    records = read_manifest(args.data, "test")[:args.samples]
    rng = np.random.default_rng(args.seed)
    if (Path(args.data) / ORACLE_MARK).exists():  # one-hot attribute vectors
        right = norm(torch.tensor(np.stack([one_hot(r["attributes"]) for r in records])))
        foil = norm(torch.tensor(np.stack([one_hot_foil(r["attributes"], rng, {a: 1.0}) for r in records])))
    else:  # the full captions and their shape foils, encoded by the run's text encoder
        encoder = get_encoder(text_encoder)
        captions = [r.get("full_caption") or r["captions"][0] for r in records]
        right = norm(encoder.encode(captions))
        foil = norm(encoder.encode([shapes_foil(c, rng, {a: 1.0})[0] for c in captions]))
    pipe = StackGANPipeline.from_state(args.state, raw=True)
    images = from_uint8(pipe.generate(embeddings=right, seed=args.seed, stage=1).stage1)  # [N, 3, 64, 64]
    truth = torch.tensor([ATTRIBUTES[a].index(r["attributes"][a]) for r in records])
    drawn = predict(load_checker(Path(args.checker) / WEIGHTS_NAME, "cpu"), images)[a] == truth  # [N]
    prefers = (batched(score, images, right) > batched(score, images, foil)).float()  # [N]
    report = {"state": args.state, f"checker_{a}": drawn.float().mean().item(),
              f"head_prefers_right_{a}": prefers.mean().item(),
              f"head_prefers_right_{a}_when_drawn": prefers[drawn].mean().item() if drawn.any() else None,
              f"head_prefers_right_{a}_when_not_drawn": prefers[~drawn].mean().item() if (~drawn).any() else None}
    print(json.dumps(report))


def zoom_by(images: torch.Tensor, factor: float) -> torch.Tensor:
    """``images [N, 3, S, S]`` scaled by ``factor`` about their centre, edges replicated."""
    s = images.shape[-1]
    theta = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]).expand(len(images), 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def check_zoom(args, score: Callable, norm: TextNorm) -> None:
    records = read_manifest(args.data, "test")[:args.samples]
    images = from_uint8(load_images(args.data, "test", records, 64, progress=False))
    right = norm(torch.tensor(np.stack([one_hot(r["attributes"]) for r in records])))
    truth = torch.tensor([ATTRIBUTES["shape"].index(r["attributes"]["shape"]) for r in records])
    checker = load_checker(Path(args.checker) / WEIGHTS_NAME, "cpu")
    shapes = ATTRIBUTES["shape"]
    for factor in args.zoom:
        x = zoom_by(images, factor) if factor != 1 else images
        base = batched(score, x, right)
        row = {"zoom": factor, "checker_shape": (predict(checker, x)["shape"] == truth).float().mean().item()}
        for j, other in enumerate(shapes):  # the same captions with the shape word set to `other`
            foil = norm(torch.tensor(np.stack([one_hot({**r["attributes"], "shape": other}) for r in records])))
            alt = batched(score, x, foil)
            for k, name in enumerate(shapes):
                chosen = truth == k
                if k != j and chosen.any():
                    row[f"{name}>{other}"] = round((base[chosen] > alt[chosen]).float().mean().item(), 3)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
