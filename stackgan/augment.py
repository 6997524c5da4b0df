"""Differentiable augmentation of D's inputs that keeps the caption true (DiffAugment-style).

Zhao et al. (NeurIPS 2020, "Differentiable Augmentation for Data-Efficient GAN Training") show
that D overfits a small training set and that transforming real *and* generated images the
same way before D, differentiably so G still gets gradients, prevents it. Their translation by
1/8 of the image and their color jitter would change a Shapes caption (position, color), so
only these two are offered:

- ``translate``: shift each image by a random whole number of pixels in ``[-t, t]`` (x and y
  independently), filling the border by repeating the edge pixels. ``t`` is given at 64 px and
  scaled with the resolution; on Shapes the position cells are 12 px apart at 64 px and the
  object's own jitter is 1.5 px, so ``t <= 4`` keeps every position word true.
- ``noise``: add Gaussian noise of this standard deviation (images in [-1, 1]), the "instance
  noise" of Sønderby et al. (ICLR 2017).

``zoom`` (for D's contrastive head only, ``stage<N>.contrast_zoom``) scales each image about its
centre by a random factor: it changes the size word's truth, so it is not for D's other heads.

Example::

    x = augment_for_d(images, translate=4, noise=0.05)  # same shape, still differentiable
    y = zoom(images, 1.4)  # each image scaled by a factor in [1/1.4, 1.4], edges repeated
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_for_d(x: torch.Tensor, translate: int = 0, noise: float = 0.0) -> torch.Tensor:
    """Randomly shifted (edge-padded) and noised copy of ``x`` ``[B, C, H, W]``; draws from torch's RNG."""
    if translate > 0:
        t = max(1, round(translate * x.shape[-1] / 64))
        b, _, h, w = x.shape
        padded = F.pad(x, (t, t, t, t), mode="replicate")  # [B, C, H+2t, W+2t]
        dy = torch.randint(0, 2 * t + 1, (b, 1), device=x.device)  # [B, 1]; t means no shift
        dx = torch.randint(0, 2 * t + 1, (b, 1), device=x.device)
        rows = (torch.arange(h, device=x.device)[None, :] + dy)[:, :, None]  # [B, H, 1]
        cols = (torch.arange(w, device=x.device)[None, :] + dx)[:, None, :]  # [B, 1, W]
        batch = torch.arange(b, device=x.device)[:, None, None]  # [B, 1, 1]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # [B, C, H, W]
    if noise > 0:
        x = x + noise * torch.randn_like(x)
    return x


def zoom(x: torch.Tensor, max_factor: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x [B, C, H, W]`` with each image scaled about its centre by its own factor, log-uniform in
    ``[1 / max_factor, max_factor]`` (bilinear, edges repeated); differentiable; draws from torch's RNG
    (or from ``generator``, a CPU generator).
    An object's area then varies by up to ``max_factor ** 2`` either way, so that it no longer tells
    which shape a caption names (docs/training-recipe.md, thirteenth round)."""
    if max_factor <= 1:
        return x
    b = x.shape[0]
    log = math.log(max_factor)
    u = torch.rand(b, device=x.device) if generator is None else torch.rand(b, generator=generator).to(x.device)
    factor = torch.exp((u * 2 - 1) * log)  # [B]
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor  # output pixel p samples the input at p / factor
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def stretch(x: torch.Tensor, max_factor: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x [B, C, H, W]`` with each image stretched about its centre along a random direction by its own
    factor, log-uniform in ``[1 / max_factor, max_factor]``, and squeezed across it by the same factor
    (area kept; bilinear, edges repeated); draws from torch's RNG (or from ``generator``, a CPU one).
    A square becomes a rhombus or a rectangle, a triangle another triangle: the number of corners
    stays, their angles and the outline's proportions do not, so that a reader trained on such images
    has to count corners (docs/training-recipe.md, fifteenth round)."""
    if max_factor <= 1:
        return x
    b = x.shape[0]
    draw = (lambda: torch.rand(b)) if generator is None else (lambda: torch.rand(b, generator=generator))
    factor = torch.exp((draw() * 2 - 1) * math.log(max_factor))  # [B]
    phi = draw() * math.pi  # the stretch's direction
    c, s = torch.cos(phi), torch.sin(phi)
    # output pixel p samples the input at R(phi) diag(1 / f, f) R(-phi) p: stretched by f along phi
    a, d = 1 / factor, factor
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = a * c * c + d * s * s
    theta[:, 0, 1] = theta[:, 1, 0] = (a - d) * c * s
    theta[:, 1, 1] = a * s * s + d * c * c
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
