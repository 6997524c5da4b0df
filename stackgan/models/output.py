"""What a generator of either stage returns."""
from __future__ import annotations

from typing import NamedTuple

import torch


class GeneratorOutput(NamedTuple):
    """One output type for both stages (the authors' StackGAN-Pytorch returns one 4-tuple from
    either), so training, sampling and figures read ``image`` without asking which stage ran.

    ``low``: Stage I's 64x64 image ``[B, 3, 64, 64]`` (Stage II: the frozen Stage I's, which it
    refined); ``image``: this stage's output, ``[B, 3, 64, 64]`` (Stage I: the same tensor as
    ``low``) or ``[B, 3, 256, 256]``; ``mu``, ``logvar``: this stage's Conditioning Augmentation
    ``[B, cond]`` (``logvar`` is None when CA has no noise, ``ca_variant='none'``). Images are in [-1, 1].

    Example::

        out = g(z, emb)
        out.image, out.mu        # or: low, image, mu, logvar = g(z, emb)
    """

    low: torch.Tensor
    image: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor | None
