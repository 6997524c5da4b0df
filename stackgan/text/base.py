"""What every text encoder is: a ``name``, a ``dim`` and ``encode(texts) -> [N, dim]``.

The encoders themselves (:mod:`stackgan.text.encoders`, :mod:`stackgan.text.char_cnn_rnn`) and
the embedding cache (:mod:`stackgan.text.cache`) build on this module and not on each other.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Sequence

import torch


class TextEncoder(ABC):
    name: str
    dim: int

    @abstractmethod
    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Embed ``texts``; returns float32 ``[len(texts), dim]`` on the CPU."""


def warn_truncated(count: int, limit: int, unit: str) -> None:
    """Long captions are cut to what the encoder reads; say so (a warning, on stderr)."""
    if count:
        warnings.warn(f"{count} caption(s) longer than the text encoder's {limit} {unit} were cut to their first "
                      f"{limit} {unit}", stacklevel=3)


def clean_text(text: str) -> str:
    """Collapse white space (runs of spaces, tabs, newlines) to single spaces; strip both ends."""
    return " ".join(str(text).split())
