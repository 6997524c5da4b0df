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
