"""The real images' Inception features, cached in a format that cannot run code.

``CACHE_ROOT/<name>-<extractor sha256[:16]>.safetensors`` holds the features (float32 tensors)
and, as safetensors metadata, what they were computed from: the images' name (the caller's key,
e.g. a hash of the test manifest and the image size), their count, the extractor file's SHA-256
and this format's version. A file that does not load, or was computed from anything else, is
recomputed with a warning; it is never executed (safetensors is a header and raw numbers).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch

from ..utils import atomic_path

CACHE_VERSION = "1"


class FeatureCacheWarning(UserWarning):
    """A cached feature file was unusable and is being recomputed."""


def cached_features(cache_root: Path, name: str, images, extractor,
                    compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The features of ``images`` from the cache, else ``compute()`` (then stored)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    key = {"images": name, "count": str(len(images)), "extractor_sha256": extractor.sha256,
           "format": CACHE_VERSION}
    path = Path(cache_root) / f"{name}-{extractor.sha256[:16]}.safetensors"
    if path.exists():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if {k: meta.get(k) for k in key} != key:
                    raise ValueError(f"computed from other inputs ({meta})")
                features = {k: f.get_tensor(k) for k in f.keys()}
            if not features or any(v.dim() != 2 or len(v) != len(images) for v in features.values()):
                raise ValueError("unexpected tensor shapes")
            return features
        except Exception as e:  # SafetensorError (not safetensors, truncated), or stale: recompute
            text = " ".join(str(e).split())
            warnings.warn(f"{path}: cached real-image features unusable ({text[:200]}); recomputing them",
                          FeatureCacheWarning, stacklevel=2)
    features = compute()
    try:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in features.items()}, str(tmp), metadata=key)
    except OSError as e:  # a read-only data folder: go on without the cache
        warnings.warn(f"{path}: could not cache the real-image features ({e.strerror or e})", FeatureCacheWarning,
                      stacklevel=2)
    return features
