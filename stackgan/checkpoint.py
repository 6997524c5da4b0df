"""Training-state files: everything needed to continue a run exactly, written atomically.

A state file is a ``torch.save`` dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)``: opening one never runs code.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch

from .errors import CheckpointError
from .utils import atomic_path

FORMAT_VERSION = 1
STATE_NAME = "state.pt"
KEPT_DIR = "checkpoints"  # RUN/stage<N>/checkpoints/step-00001000.pt: the last few checkpoints


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
        raise CheckpointError(f"{path}: not a readable StackGAN training state ({_short(e)})") from e
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path}: not a StackGAN training state (no format_version)")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {state['format_version']} is newer than this "
                              f"stackgan understands ({FORMAT_VERSION}); upgrade stackgan")
    return state


def _short(e: Exception, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def write_checkpoint(stage_dir: str | Path, state: dict, keep: int) -> Path:
    """Write ``STAGE/state.pt`` atomically (temp file, fsync, rename), keep a copy of it as
    ``STAGE/checkpoints/step-<step>.pt`` and delete all but the newest ``keep`` of those.

    The copy is a file of its own (not a hard link), so damage to ``state.pt`` leaves the same
    step recoverable. A failed write (a full disk: torch reports it as a RuntimeError from its zip
    writer, the OS as an OSError) leaves every earlier file as it was and raises CheckpointError
    naming the step and the file."""
    path = Path(stage_dir) / STATE_NAME
    kept = Path(stage_dir) / KEPT_DIR / f"step-{state['step']:08d}.pt"
    target = path
    try:
        save_state(path, state)
        target = kept
        kept.parent.mkdir(exist_ok=True)
        with atomic_path(kept) as tmp:
            shutil.copyfile(path, tmp)
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _short(e, 200)
        done = "The previous checkpoint files are unchanged" if target == path else \
            f"{path} holds step {state['step']} complete; the earlier kept copies are unchanged"
        raise CheckpointError(f"could not write the step-{state['step']} checkpoint {target}: {reason}. {done}; "
                              "free space (or fix the folder) and continue with --resume") from e
    for old in sorted(kept.parent.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def remove_partial_writes(stage_dir: str | Path) -> list[Path]:
    """Delete the temp files (``.state.pt.*.tmp``) that a write interrupted by a kill left behind."""
    found = [*Path(stage_dir).glob(f".{STATE_NAME}.*.tmp"), *(Path(stage_dir) / KEPT_DIR).glob(".step-*.tmp")]
    for tmp in found:
        tmp.unlink()
    return found


def load_latest(stage_dir: str | Path, on_skip=None) -> tuple[dict, Path]:
    """The newest readable training state of a stage: ``state.pt``, else (unreadable, e.g. a
    damaged disk) the newest of ``checkpoints/step-*.pt`` that loads. Every file skipped on the
    way is reported, with which file and step are used instead: to ``on_skip(message)``, by
    default as a warning."""
    candidates = [Path(stage_dir) / STATE_NAME, *sorted((Path(stage_dir) / KEPT_DIR).glob("step-*.pt"), reverse=True)]
    errors = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = load_state(path)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            message = (f"skipped {len(errors)} unreadable checkpoint file(s): " + "; ".join(errors) +
                       f"; resuming from {path} (step {state['step']})")
            if on_skip is None:
                warnings.warn(message, CheckpointWarning, stacklevel=2)
            else:
                on_skip(message)
        return state, path
    raise CheckpointError(f"{stage_dir}: no readable checkpoint to resume from" +
                          ("".join(f"\n  {e}" for e in errors) if errors else ""))


class CheckpointWarning(UserWarning):
    """Some checkpoint files were skipped on resume."""


def stage_dir(run_dir: str | Path, stage: int) -> Path:
    return Path(run_dir) / f"stage{stage}"


def sampling_weights(state: dict) -> dict:
    """The generator weights to sample with: the moving average when the run kept one."""
    if "ema" in state:
        return {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    return state["generator"]
