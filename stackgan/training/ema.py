"""G's exponential moving average (weights and BatchNorm statistics): what sample sheets and the
saved model use."""
from __future__ import annotations

from typing import Callable

import torch
from torch.optim.swa_utils import AveragedModel


def make_ema(G: torch.nn.Module, decay: float) -> AveragedModel:
    """G's exponential moving average, with TF's warm-up (:func:`ema_update`).

    Example::

        ema = make_ema(G, 0.995)
        ema.update_parameters(G)   # after each optimizer step; ema.module samples
    """
    def host_count() -> int:
        return int(ema.n_averaged)  # AveragedModel keeps this counter on the CPU, wherever G lives

    ema = AveragedModel(G, multi_avg_fn=ema_update(decay, host_count), use_buffers=True)
    return ema


def ema_update(decay: float, count: Callable[[], int]):
    """EMA step for AveragedModel with TF's warm-up: the decay is min(decay, (1 + n) / (10 + n))
    after n updates, so a young average follows the weights instead of the initial ones. ``n``
    comes from ``count()`` (AveragedModel's host-side counter), not from the device copy of it that
    AveragedModel passes in: reading that would wait for the GPU every step."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _num_averaged_on_device) -> None:
        n = float(count())
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # BatchNorm's step counter
                a.copy_(c)
    return update
