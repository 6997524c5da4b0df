"""Training-state files: everything needed to continue a run exactly, written atomically.

A state file is a ``torch.save`` dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)``: opening one never runs code.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .utils import atomic_path

FORMAT_VERSION = 1
STATE_NAME = "state.pt"
KEPT_DIR = "checkpoints"  # RUN/stage<N>/checkpoints/step-00001000.pt: the last few checkpoints


class CheckpointError(RuntimeError):
    pass


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


def write_checkpoint(stage_dir: str | Path, state: dict, keep: int) -> Path:
    """Write ``STAGE/state.pt`` atomically (temp file, fsync, rename), keep it also as
    ``STAGE/checkpoints/step-<step>.pt`` (a hard link: no second copy on disk) and delete all but
    the newest ``keep`` of those. A failed write (a full disk) leaves every earlier file as it was
    and raises CheckpointError saying so."""
    path = Path(stage_dir) / STATE_NAME
    kept = Path(stage_dir) / KEPT_DIR / f"step-{state['step']:08d}.pt"
    try:
        save_state(path, state)
        kept.parent.mkdir(exist_ok=True)
        if kept.exists():
            kept.unlink()
        try:
            os.link(path, kept)
        except OSError:  # no hard links on this file system: a copy, written as atomically
            with atomic_path(kept) as tmp:
                shutil.copyfile(path, tmp)
    except OSError as e:
        raise CheckpointError(f"could not write the step-{state['step']} checkpoint {path}: {e.strerror or e}. "
                              "The previous checkpoint files are unchanged; free space (or fix the folder) and "
                              "continue with --resume") from e
    for old in sorted(kept.parent.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def remove_partial_writes(stage_dir: str | Path) -> list[Path]:
    """Delete the temp files (``.state.pt.*.tmp``) that a write interrupted by a kill left behind."""
    found = [*Path(stage_dir).glob(f".{STATE_NAME}.*.tmp"), *(Path(stage_dir) / KEPT_DIR).glob(".step-*.tmp")]
    for tmp in found:
        tmp.unlink()
    return found


def load_latest(stage_dir: str | Path) -> tuple[dict, Path]:
    """The newest readable training state of a stage: ``state.pt``, else (unreadable, e.g. a
    damaged disk) the newest of ``checkpoints/step-*.pt`` that loads."""
    candidates = [Path(stage_dir) / STATE_NAME, *sorted((Path(stage_dir) / KEPT_DIR).glob("step-*.pt"), reverse=True)]
    errors = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            return load_state(path), path
        except ValueError as e:
            errors.append(str(e))
    raise CheckpointError(f"{stage_dir}: no readable checkpoint to resume from" +
                          ("".join(f"\n  {e}" for e in errors) if errors else ""))


def stage_dir(run_dir: str | Path, stage: int) -> Path:
    return Path(run_dir) / f"stage{stage}"


def sampling_weights(state: dict) -> dict:
    """The generator weights to sample with: the moving average when the run kept one."""
    if "ema" in state:
        return {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    return state["generator"]
