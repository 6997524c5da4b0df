"""StackGAN's losses as small pure functions on logits (computed in fp32)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(real: torch.Tensor, wrong: torch.Tensor, fake: torch.Tensor,
                       uncond_real: torch.Tensor | None = None,
                       uncond_fake: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Matching-aware D loss on logits.

    (real image, its text) -> 1; (real image, wrong text) -> 0; (fake image, its text) -> 0.
    ``L_D = L_real + 0.5 * (L_wrong + L_fake)``; with unconditional logits (PT Stage II)
    ``L_D = (L_real + L_uncond_real) / 2 + (L_fake + L_wrong + L_uncond_fake) / 3``.
    """
    parts = {"real": _bce(real, 1.0), "wrong": _bce(wrong, 0.0), "fake": _bce(fake, 0.0)}
    if uncond_real is None:
        parts["total"] = parts["real"] + 0.5 * (parts["wrong"] + parts["fake"])
    else:
        parts["uncond_real"] = _bce(uncond_real, 1.0)
        parts["uncond_fake"] = _bce(uncond_fake, 0.0)
        parts["total"] = (parts["real"] + parts["uncond_real"]) / 2 + (
            parts["fake"] + parts["wrong"] + parts["uncond_fake"]) / 3
    return parts


def generator_loss(fake: torch.Tensor, uncond_fake: torch.Tensor | None = None) -> torch.Tensor:
    """Non-saturating: BCE of D(fake, its text) against 1 (+ the unconditional term)."""
    loss = _bce(fake, 1.0)
    if uncond_fake is not None:
        loss = loss + _bce(uncond_fake, 1.0)
    return loss


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), averaged over batch and dimensions."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
