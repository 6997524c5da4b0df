"""Per-dimension standardization of sentence embeddings."""
from __future__ import annotations

import torch
from torch import nn


class TextNorm(nn.Module):
    """Per-dimension standardization of sentence embeddings, with statistics of the train captions.

    Unit-length sentence embeddings (MiniLM) spread about 0.02-0.04 per dimension, which the
    CA noise drowns; standardizing makes the text audible to the generator.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor) -> "TextNorm":
        self.mean.copy_(embeddings.mean(0))
        self.std.copy_(embeddings.std(0).clamp_min(1e-6))
        return self

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return (emb - self.mean) / self.std
