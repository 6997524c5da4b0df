"""Data-parallel training through torch.distributed, launched by torchrun.

``torchrun --nproc_per_node N -m stackgan train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` joins the process group from them (NCCL on GPUs, Gloo on CPUs).
Without a launcher there is no process group and everything below acts as world size 1.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from .utils import default_device

_created_group = False  # set once setup() has created this process's group (see exit_process)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes logs, samples and checkpoints."""
        return self.rank == 0


def setup(device: str | None) -> tuple[Dist, torch.device]:
    """Join the launcher's process group (if any) and pick this process's device.

    ``device`` None means CUDA when available; under a launcher a CUDA device becomes
    ``cuda:LOCAL_RANK``.
    """
    global _created_group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = default_device(device)
    if world > 1 and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda" and dev.index is not None:  # ("cuda" alone: the current device, nothing to set)
        torch.cuda.set_device(dev)
    if world == 1:
        return Dist(), dev
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        _created_group = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), dev


def cleanup(info: Dist) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a process whose process group :func:`setup` created, without the interpreter's
    teardown; in any other process (one process, a group made by someone else, tests) it returns.

    Once DistributedDataParallel has been built, the group outlives ``destroy_process_group``
    (torch 2.14.1: its Gloo threads are still running afterwards, with every Python reference
    gone), so it is torn down with the interpreter; one 2-process CPU run in CI aborted there
    ("terminate called without an active exception", SIGABRT) after all its work was done and
    written, failing the whole torchrun. Everything is flushed first; then ``os._exit``.
    """
    if not _created_group:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


@contextlib.contextmanager
def main_first(info: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (it may write caches); the others run it after, reading them."""
    if info.world > 1 and not info.main:
        dist.barrier()
    yield
    if info.world > 1 and info.main:
        dist.barrier()


def mean(info: Dist, t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over all ranks."""
    if info.world == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / info.world


def any_rank(info: Dist, flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on one (so all ranks stop at the same step)."""
    if info.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(info: Dist, obj: Any) -> list:
    """``obj`` of every rank, in rank order (picklable values made by this program only)."""
    if info.world == 1:
        return [obj]
    out: list = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel (or torch.compile) wrapper."""
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or module._orig_mod
    return module


def no_sync(module: torch.nn.Module):
    """A context in which backward passes through ``module`` accumulate gradients without
    all-reducing them, where ``module`` is (or wraps) a DistributedDataParallel; the next
    backward outside it reduces the sum. A no-op for a plain network."""
    while not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        inner = getattr(module, "_orig_mod", None)
        if inner is None:
            return contextlib.nullcontext()
        module = inner
    return module.no_sync()


def digest(module: torch.nn.Module) -> str:
    """SHA-256 of a network's parameters (names, shapes and bytes): equal on every rank while the
    replicas are in step."""
    h = hashlib.sha256()
    for name, p in unwrap(module).named_parameters():
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
