"""Training-state files: everything needed to continue a run exactly, written atomically.

A state file is a ``torch.save`` dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)``: opening one never runs code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .utils import atomic_path

FORMAT_VERSION = 1
STATE_NAME = "state.pt"


def save_state(path: str | Path, state: dict) -> Path:
    state = {"format_version": FORMAT_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable StackGAN training state ({e})") from e
    if not isinstance(state, dict) or "format_version" not in state:
        raise ValueError(f"{path}: not a StackGAN training state (no format_version)")
    if state["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {state['format_version']} is newer than this "
                         f"stackgan understands ({FORMAT_VERSION}); upgrade stackgan")
    return state


def stage_dir(run_dir: str | Path, stage: int) -> Path:
    return Path(run_dir) / f"stage{stage}"


def sampling_weights(state: dict) -> dict:
    """The generator weights to sample with: the moving average when the run kept one."""
    if "ema" in state:
        return {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    return state["generator"]
