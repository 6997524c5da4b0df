"""Warnings for a GAN run that has stopped learning: D wins outright for a long time, or G's
images stop differing from one another (mode collapse). Both only warn; divergence (non-finite
numbers) is handled by the loop."""
from __future__ import annotations

import torch

SATURATED = 0.99  # D's accuracy on real (right-text) and on fake pairs both at or above this ...
SATURATED_STEPS = 1000  # ... for this many steps: warn
COLLAPSED = 0.25  # sample images' pixel spread below this fraction of real images': warn


def pixel_spread(images: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across a batch ``[N, 3, H, W]`` (uint8 or float)."""
    return images.float().std(dim=0).mean().item()


class CollapseWatch:
    """Fed the logged means every ``log_every`` steps and each sample sheet's spread; returns the
    warnings to print (each once per episode, again after it ended)."""

    def __init__(self, log_every: int):
        self.patience = max(1, SATURATED_STEPS // log_every)
        self.saturated_logs = 0
        self.collapsed = False

    def update(self, means: dict[str, float], step: int) -> list[str]:
        if means["D/acc_real"] >= SATURATED and means["D/acc_fake"] >= SATURATED:
            self.saturated_logs += 1
        else:
            self.saturated_logs = 0
        if self.saturated_logs == self.patience:
            return [f"step {step}: D has told real from fake with >= {SATURATED:.0%} accuracy on both for "
                    f"{self.patience} logs in a row (D/real {means['D/real']:.4f}, D/fake {means['D/fake']:.4f}); "
                    "G's gradients may have vanished. Look at the sample sheets; a lower stage<N>.lr_d, "
                    "stage<N>.d_noise or stage<N>.gan_loss=hinge are the usual remedies"]
        return []

    def spread(self, fake_spread: float, real_spread: float, step: int) -> list[str]:
        ratio = fake_spread / max(real_spread, 1e-6)
        was, self.collapsed = self.collapsed, ratio < COLLAPSED
        if self.collapsed and not was:
            return [f"step {step}: the sample sheet's images differ little from one another (pixel spread "
                    f"{ratio:.2f} of real images'): G may be collapsing to a few images"]
        return []
