"""Conditioning Augmentation: the sentence embedding becomes a Gaussian, and c is drawn from it."""
from __future__ import annotations

import math

import torch
from torch import nn
from ..errors import ConfigError


class ConditioningAugmentation(nn.Module):
    """FC ``text_dim -> 2 * cond_dim``, split into mu and a log-scale, ``c = mu + sigma * eps``.

    ``variant="pt"`` (authors' PyTorch port): ReLU before the split, the second half is a
    log-variance. Kept as the faithful option of the ``paper`` preset, but note what it does: the
    ReLU forces mu >= 0 and log-variance >= 0 (sigma >= 1), so c never comes close to the text's
    mean and the KL term can never reach 0. Only the presets that copy the authors' PyTorch
    configurations (``paper``, ``coco``) use it. ``variant="tf"`` (authors' TensorFlow code,
    used for the paper's numbers): LeakyReLU(0.2), the second half is log-sigma, eps from a
    normal truncated at 2 std.
    ``variant="none"`` (not in the paper; DF-GAN has no CA): ``c = mu = LeakyReLU(FC(text))``,
    no noise and no KL term (``logvar`` is None). The noise of CA hides the text from G at the
    start (at initialisation sigma is 1 and mu about 0.05-0.4), and the KL term keeps it so: the
    evidence is in docs/training-recipe.md (sixth round).
    All return ``(c, mu, logvar)`` so one KL formula serves the first two.

    Example::

        ca = ConditioningAugmentation(text_dim=384, cond_dim=128)
        c, mu, logvar = ca(torch.randn(4, 384))   # each [4, 128]
    """

    def __init__(self, text_dim: int, cond_dim: int = 128, variant: str = "pt"):
        super().__init__()
        if variant not in ("pt", "tf", "none"):
            raise ConfigError(f"CA variant must be 'pt', 'tf' or 'none', got {variant!r}")
        self.cond_dim = cond_dim
        self.variant = variant
        self.fc = nn.Linear(text_dim, (1 if variant == "none" else 2) * cond_dim)
        self.act = nn.ReLU() if variant == "pt" else nn.LeakyReLU(0.2)

    @property
    def stochastic(self) -> bool:
        return self.variant != "none"

    def sample_eps(self, shape: tuple[int, ...], device, generator: torch.Generator | None = None):
        if self.variant == "tf":  # TF's truncated_normal: N(0, 1) restricted to 2 std
            return truncated_normal(shape, device, generator)
        return torch.randn(shape, device=device, generator=generator)

    def forward(self, emb: torch.Tensor, eps: torch.Tensor | None = None):
        x = self.act(self.fc(emb))  # [B, 2 * cond] ([B, cond] for "none")
        if self.variant == "none":
            return x, x, None
        mu, scale = x[:, : self.cond_dim], x[:, self.cond_dim :]
        logvar = scale if self.variant == "pt" else 2.0 * scale
        if eps is None:
            eps = self.sample_eps(mu.shape, mu.device)
        c = mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)  # [B, cond]
        return c, mu, logvar


def truncated_normal(shape: tuple[int, ...], device, generator: torch.Generator | None = None,
                     bound: float = 2.0) -> torch.Tensor:
    """N(0, 1) restricted to [-bound, bound], drawn through the inverse CDF: the same law as
    redrawing values beyond the bound, without a data-dependent loop (no wait for the device)."""
    edge = math.erf(bound / math.sqrt(2.0))  # 2 * Phi(bound) - 1
    u = torch.rand(shape, device=device, generator=generator).mul_(2.0 * edge).sub_(edge)  # U(-edge, edge)
    return torch.erfinv(u).mul_(math.sqrt(2.0)).clamp_(-bound, bound)
