"""Small helpers shared across the package."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success flush it to disk and rename it over
    ``path``, so readers see either the old file or the complete new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_module(module: "torch.nn.Module", path: str | Path, info: dict) -> None:
    """Weights of ``module`` to ``path`` (safetensors) and ``info`` to the same name with .json,
    each written atomically. Loading either never runs code (see ``load_module_files``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")


def load_module_files(path: str | Path) -> tuple[dict, dict]:
    """The ``info`` and weights that ``save_module`` wrote to ``path`` and its .json."""
    from safetensors.torch import load_file

    path = Path(path)
    info = json.loads(path.with_suffix(".json").read_text())
    return info, load_file(str(path))


def cache_dir(data_dir: str | Path) -> Path:
    d = Path(data_dir) / ".stackgan-cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


MALLOC_ENV = "STACKGAN_MALLOC"  # "system": leave the C allocator's settings as they are


def keep_freed_memory() -> bool:
    """On Linux with glibc, let the C allocator keep freed blocks of up to 32 MiB for reuse instead of giving
    each back to the system (``mallopt``: ``M_MMAP_THRESHOLD`` 32 MiB, ``M_TRIM_THRESHOLD`` 1 GiB). A CPU
    training step allocates and frees the same few-megabyte activations every step; by default each
    comes from a fresh ``mmap`` and is paged in again (measured here: a Shapes Stage-I step 8-13% faster
    without that). The numbers computed do not change; the process keeps its peak memory. Returns
    whether the settings were applied (not elsewhere, nor with ``STACKGAN_MALLOC=system``). Process-wide,
    so only the training and benchmark entry points call it."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux") or os.environ.get(MALLOC_ENV, "").lower() == "system":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def default_device(device: "str | torch.device | None" = None) -> "torch.device":
    """``device`` as a ``torch.device``; None: CUDA when available, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def from_uint8(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 images (0..255) -> float32 in [-1, 1], on the same device; the input is not changed.

    Example::

        from_uint8(torch.tensor([0, 255], dtype=torch.uint8))  # tensor([-1., 1.])
    """
    import torch

    return images.to(torch.float32, copy=True).div_(127.5).sub_(1.0)


def to_uint8(images: "torch.Tensor") -> "torch.Tensor":
    """Images in [-1, 1] (clamped) -> uint8 (0..255) on the CPU: the inverse of ``from_uint8``."""
    import torch

    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def resolve_device(name: str | None, default: str = "cpu") -> "torch.device":
    """``--device`` as a ``torch.device`` that exists on this machine, else a UsageError."""
    import torch

    from .errors import UsageError

    name = name or default
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--device {name!r}: not a device name (use cpu, cuda, cuda:1, mps ...)") from e
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: no CUDA GPU is available on this machine (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: unsupported device type {device.type!r} (use cpu, cuda or mps)")
    return device
