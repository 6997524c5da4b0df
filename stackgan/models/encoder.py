"""The latent encoder of the reconstruction branch (cVAE-GAN; not in the StackGAN paper).

``q(z | image, text)``: a real 64x64 image and its sentence embedding become a Gaussian over
Stage I's noise vector ``z``. Training draws ``z`` from it and asks the generator to redraw the
real image from ``(z, text)``, a pixel loss that teaches the generator to draw in a few hundred
steps what the adversarial loss alone teaches in thousands (Larsen et al., ICML 2016, "VAE-GAN";
Zhu et al., NeurIPS 2017, "BicycleGAN", its cVAE-GAN half). The KL term keeps the posterior close
to N(0, I) so that sampling with ``z ~ N(0, I)`` still works; the text is given to both, so the
cheapest code for ``z`` is what the sentence does not say (rotation, jitter, unnamed attributes).
Only training uses it; saved models sample ``z`` from N(0, I) as before.

Example::

    enc = LatentEncoder(text_dim=384, z_dim=100, nef=16)
    mu, logvar = enc(torch.randn(2, 3, 64, 64), torch.randn(2, 384))  # each [2, 100]
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import DownBlock, init_weights


class LatentEncoder(nn.Module):
    def __init__(self, text_dim: int, z_dim: int = 100, nef: int = 16):
        super().__init__()
        self.z_dim = z_dim
        self.image = nn.Sequential(
            DownBlock(3, nef, bn=False),  # 32
            DownBlock(nef, 2 * nef),  # 16
            DownBlock(2 * nef, 4 * nef),  # 8
            DownBlock(4 * nef, 8 * nef),  # 4
            nn.Flatten(),  # [B, 8nef * 16]
        )
        self.text = nn.Sequential(nn.Linear(text_dim, 8 * nef), nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Linear(8 * nef * 17, 2 * z_dim)
        init_weights(self)

    def forward(self, img: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.image(img), self.text(emb.to(img.dtype))], dim=1)  # [B, 8nef * 17]
        mu, logvar = self.out(h).chunk(2, dim=1)  # [B, z] x 2
        return mu, logvar

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # [B, z]
