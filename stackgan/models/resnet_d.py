"""A BatchNorm-free residual discriminator for either stage (not in the paper).

The paper's D normalises real and generated batches separately with BatchNorm, so it can tell
them apart by batch statistics, and its cross-entropy saturates: the generator learns little
about geometry from it (docs/training-recipe.md). This one follows DF-GAN's (Tao et al.,
CVPR 2022): no normalisation, residual down-blocks whose residual branch is scaled by a learnable
gate that starts at 0, and a "one-way" conditional head that mixes the 4x4 features with the
sentence through two convolutions. A minibatch standard deviation feature (Karras et al., ICLR
2018) lets it see when all generated samples look alike. Pair it with the hinge loss and the
matching-aware gradient penalty (:func:`stackgan.losses.matching_aware_gradient_penalty`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import MinibatchStd
from .stage1 import make_text_path


class GatedDownBlock(nn.Module):
    """``shortcut(x) + gate * residual(x)`` at half the resolution. Shortcut: 1x1 conv (when the
    width changes) and 2x2 average pooling; residual: 4x4 stride-2 conv, LeakyReLU, 3x3 conv,
    LeakyReLU. ``gate`` starts at ``gate`` (DF-GAN: 0, so a new block is its shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, gate: float = 0.0):
        super().__init__()
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        )
        self.gate = nn.Parameter(torch.tensor(float(gate)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.shortcut(x), 2) + self.gate * self.residual(x)  # [B, out, H/2, W/2]


class OneWayHead(nn.Module):
    """D's conditional head: ``cat(features [B, C, 4, 4], text [B, T] tiled)`` -> 3x3 conv ->
    LeakyReLU -> 4x4 conv -> one logit (DF-GAN's one-way output)."""

    def __init__(self, img_ch: int, text_dim: int, mid: int):
        super().__init__()
        self.joint = nn.Sequential(nn.Conv2d(img_ch + text_dim, mid, 3, 1, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Conv2d(mid, 1, 4, 1, 0)

    def forward(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = text[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3]).to(h.dtype)  # [B, T, 4, 4]
        return self.out(self.joint(torch.cat([h, t], dim=1))).flatten()  # [B]


class ResNetDiscriminator(nn.Module):
    """``size`` x ``size`` image -> gated residual down-blocks to ``8ndf x 4 x 4``
    (+ minibatch std) ; the one-way head scores it with the text. Same interface as the paper's
    discriminators: ``forward(img)`` gives the features, ``cond_logits(h, text)`` the logit, and
    ``uncond_logits`` is ``None`` (no image-only head).

    Example::

        d = ResNetDiscriminator(text_dim=384, ndf=16, size=64)
        logits = d.cond_logits(d(torch.randn(4, 3, 64, 64)), torch.randn(4, 384))  # [4]
    """

    def __init__(self, text_dim: int, ndf: int = 64, cond_dim: int = 128, text_path: str = "fc",
                 size: int = 64, mbstd: bool = True, gate: float = 0.0):
        super().__init__()
        blocks = int(math.log2(size // 4))
        if 4 * 2 ** blocks != size:
            raise ConfigError(f"the residual discriminator needs a power-of-two size >= 8, got {size}")
        # the paper D's widths (ndf at half the input size, doubling to 8ndf); no stem conv at full size
        widths = [3] + [ndf * min(2 ** i, 8) for i in range(blocks)]
        self.encode = nn.Sequential(
            *[GatedDownBlock(a, b, gate) for a, b in zip(widths[:-1], widths[1:])],  # -> 4x4
            *([MinibatchStd()] if mbstd else []),
        )
        self.text = make_text_path(text_path, text_dim, cond_dim)
        self.cond_head = OneWayHead(widths[-1] + int(mbstd), cond_dim,
                                    2 * ndf)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.encode(img)  # [B, 8ndf (+1), 4, 4]

    def cond_logits(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.cond_head(h, self.text(text))  # [B]

    def uncond_logits(self, h: torch.Tensor) -> None:
        return None
