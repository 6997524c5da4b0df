"""Building blocks shared by both stages (reference page, "Stage-I/II generator/discriminator")."""
from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_ch: int, out_ch: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)


class UpBlock(nn.Sequential):
    """Nearest-neighbour x2, 3x3 conv (no bias), BN, ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv3x3(in_ch, out_ch),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, add the input, ReLU."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(ch, ch), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            conv3x3(ch, ch), nn.BatchNorm2d(ch),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class DownBlock(nn.Sequential):
    """4x4 stride-2 conv, optional BN, LeakyReLU(0.2): halves the resolution."""

    def __init__(self, in_ch: int, out_ch: int, bn: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False)]
        if bn:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        super().__init__(*layers)


class ConditionalHead(nn.Module):
    """D's matching-aware head: image code [B, C, 4, 4] + text code [B, T] -> one logit.

    The text code is replicated to 4x4 and depth-concatenated; a conv (PT 3x3, TF 1x1) mixes
    both, then a 4x4 conv gives the logit. With ``text_dim=0`` it is the unconditional head.
    """

    def __init__(self, img_ch: int, text_dim: int, kernel: int = 3):
        super().__init__()
        self.text_dim = text_dim
        if text_dim > 0:
            self.joint = nn.Sequential(
                nn.Conv2d(img_ch + text_dim, img_ch, kernel, 1, kernel // 2, bias=False),
                nn.BatchNorm2d(img_ch),
                nn.LeakyReLU(0.2, inplace=True),
            )
        else:
            self.joint = nn.Identity()
        self.out = nn.Conv2d(img_ch, 1, 4, 4)

    def forward(self, h: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        if self.text_dim > 0:
            t = text[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])  # [B, T, 4, 4]
            h = self.joint(torch.cat([h, t.to(h.dtype)], dim=1))  # [B, C, 4, 4]
        return self.out(h).flatten()  # [B]


def init_weights(module: nn.Module) -> None:
    """Conv / linear weights N(0, 0.02); BN weight N(1, 0.02), bias 0 (reference init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
