"""The run's mutable state, and everything that writes, restores or rolls back a checkpoint.

``RunState`` is what changes as a run goes (step, time spent, learning-rate scale, rollbacks);
``Networks`` holds what is trained; ``Checkpoints`` writes both (with the random state of every
process) and puts them back, on ``--resume`` and when a diverged run rolls back.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import distributed
from ..checkpoint import STATE_NAME, CheckpointError, load_latest, write_checkpoint
from ..config import Config, to_dict
from ..errors import TrainingError

MAX_ROLLBACKS = 3


class TrainingDiverged(TrainingError):
    pass


@dataclass
class RunState:
    """What changes as a run goes. ``step``, ``elapsed`` and ``lr_scale`` are saved in every
    checkpoint; ``rollbacks`` counts this session's."""

    step: int = 0
    elapsed: float = 0.0  # seconds of training over all sessions of the run (the time budget's clock)
    lr_scale: float = 1.0  # halved by each divergence rollback
    rollbacks: int = 0
    _started: float = field(default=0.0, repr=False)  # time.monotonic() at which elapsed was 0

    def start_clock(self) -> None:
        self._started = time.monotonic() - self.elapsed

    def tick(self) -> None:
        """One more step done."""
        self.step += 1
        self.elapsed = time.monotonic() - self._started


@dataclass
class Networks:
    """G (Stage II: with its frozen Stage I), D, the reconstruction branch's encoder (or None),
    their optimizers and G's moving average (or None)."""

    G: torch.nn.Module
    D: torch.nn.Module
    encoder: torch.nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: torch.nn.Module | None

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that samples and is saved: the moving average when there is one."""
        return self.G if self.ema is None else self.ema.module

    def set_learning_rates(self, lr_g: float, lr_d: float) -> None:
        for opt, lr in ((self.opt_g, lr_g), (self.opt_d, lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr


class Checkpoints:
    """Writes the run's checkpoints (``RUN/stage<N>/state.pt`` and the model folder) and restores
    them: on ``--resume`` and on a divergence rollback. Only rank 0 writes; every rank gathers its
    random state into the file, so that a resumed run continues exactly."""

    def __init__(self, cfg: Config, stage: int, out: Path, model_dir: Path, nets: Networks, updater, norm, pipe,
                 dist: distributed.Dist, device: torch.device):
        self.cfg, self.stage, self.out, self.model_dir = cfg, stage, out, model_dir
        self.nets, self.updater, self.norm, self.pipe, self.dist, self.device = nets, updater, norm, pipe, dist, device
        self.path = out / STATE_NAME
        self.sc = cfg.stage(stage)

    def save(self, run: RunState) -> Path:
        nets, dist = self.nets, self.dist
        rng = distributed.gather(dist, _rng_state(self.device))  # every rank's, for an exact resume
        critic = getattr(self.updater, "critic", None)  # stage<N>.patch_weight's texture critic, data-parallel too
        digests = (distributed.gather(dist, distributed.digest(nets.G) + distributed.digest(nets.D)
                                      + (distributed.digest(critic) if critic is not None else ""))
                   if dist.world > 1 else [])
        if dist.main:
            if len(set(digests)) > 1:
                raise TrainingError(f"step {run.step}: the {dist.world} replicas' weights differ (digests {digests}); "
                                    "the run is not data-parallel any more")
            write_checkpoint(self.out, {
                "stage": self.stage, "step": run.step, "elapsed_s": run.elapsed, "config": to_dict(self.cfg),
                "generator": nets.G.state_dict(), "discriminator": nets.D.state_dict(),
                **({"ema": nets.ema.state_dict()} if nets.ema is not None else {}),
                **({"encoder": nets.encoder.state_dict()} if nets.encoder is not None else {}),
                "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict(), **self.updater.state_dict(),
                "lr_scale": run.lr_scale, "text_norm": self.norm.state_dict(), **rng[0], "rng_ranks": rng,
                "world_size": dist.world, "replica_digests": digests,
            }, self.sc.keep_checkpoints)
            try:
                self.pipe.save_pretrained(self.model_dir)
            except OSError as e:
                raise CheckpointError(f"step {run.step}: wrote {self.path} but not the model folder {self.model_dir} "
                                      f"({e.strerror or e}); its previous files are unchanged; free space and "
                                      "--resume (or `stackgan export`)") from e
            nets.G.train()
        return self.path

    def resume(self, state: dict, run: RunState) -> None:
        """Everything of a checkpoint: networks, optimizers, scalers, random state, step, time, lr scale."""
        self._load(state)
        run.step, run.elapsed, run.lr_scale = state["step"], state["elapsed_s"], state.get("lr_scale", 1.0)

    def rollback(self, run: RunState, what: str, warn) -> None:
        """Back to the last good checkpoint with half the learning rates, or TrainingDiverged when
        the configuration says stop, the rollbacks are used up or there is no checkpoint yet."""
        stage, path = self.stage, self.path
        if self.sc.on_divergence == "stop" or run.rollbacks >= MAX_ROLLBACKS or not path.exists():
            raise TrainingDiverged(
                f"stage {stage} diverged by step {run.step} (non-finite {what}); stopped. The last good "
                f"checkpoint is {path if path.exists() else 'not written yet'}"
                + ("" if self.sc.on_divergence == "stop" else f" ({run.rollbacks} rollbacks done)")
                + f"; stage{stage}.on_divergence=rollback goes back to it with half the learning rate")
        good, _ = load_latest(self.out, on_skip=lambda m: warn(f"warning: {m}") if self.dist.main else None)
        self._load(good)
        diverged_at = run.step
        run.step, run.lr_scale, run.rollbacks = good["step"], run.lr_scale * 0.5, run.rollbacks + 1
        warn(f"warning: non-finite {what} by step {diverged_at}: rolled back to step {run.step} with "
             f"learning rates x{run.lr_scale:g} (rollback {run.rollbacks} of at most {MAX_ROLLBACKS})")

    def _load(self, state: dict) -> None:
        nets = self.nets
        nets.G.load_state_dict(state["generator"])
        if nets.encoder is not None and self.stage == 1:
            nets.encoder.load_state_dict(state["encoder"])
        if nets.ema is not None:
            nets.ema.load_state_dict(state["ema"])
        nets.D.load_state_dict(state["discriminator"])
        nets.opt_g.load_state_dict(state["opt_g"])
        nets.opt_d.load_state_dict(state["opt_d"])
        self.updater.load_state_dict(state)
        _restore_rng(state, self.dist, self.device)


def divergence(means: dict[str, float], nets: Networks) -> str:
    """What is non-finite, as ``"D/total = nan, G weights = non-finite"``, or ``""``."""
    bad = [k for k, v in means.items() if not math.isfinite(v)] or _nonfinite_weights(nets.G, nets.D)
    return ", ".join(f"{k} = {means.get(k, 'non-finite')}" for k in bad)


def _nonfinite_weights(*nets: torch.nn.Module) -> list[str]:
    """Names of the networks with a non-finite weight (one read from the device for all)."""
    norms = [torch.stack(torch._foreach_norm([p.detach() for p in net.parameters()])).sum() for net in nets]
    finite = torch.isfinite(torch.stack(norms)).tolist()
    return [name for name, ok in zip(("G weights", "D weights"), finite) if not ok]


def _rng_state(device: torch.device) -> dict:
    return {"rng_cpu": torch.get_rng_state(),
            **({"rng_cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}


def _restore_rng(state: dict, dist: distributed.Dist, device: torch.device) -> None:
    """This rank's random state from a checkpoint; with another number of processes than saved it,
    ranks beyond rank 0 start from fresh seeds (the run continues, not bit-exactly)."""
    ranks = state.get("rng_ranks") or [{k: state[k] for k in ("rng_cpu", "rng_cuda") if k in state}]
    if dist.rank < len(ranks) and state.get("world_size", 1) == dist.world:
        mine = ranks[dist.rank]
    elif dist.main:
        mine = ranks[0]
    else:
        return
    torch.set_rng_state(mine["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in mine:
        torch.cuda.set_rng_state(mine["rng_cuda"], device)
