"""What a training run reports: its losses (summed on the device, read every ``log_every``
steps), TensorBoard scalars, the progress bar and the collapse warnings."""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from .. import distributed
from .monitor import CollapseWatch
from .state import RunState
from .step import LOGGED


class TrainingLog:
    """``add`` every step's losses (left on the device); ``read`` their means every ``log_every``
    steps (one read from the device, averaged over processes); ``write`` them to TensorBoard and
    the progress bar. Only rank 0 writes; ``writer`` is None elsewhere."""

    def __init__(self, stage: int, log_every: int, images_per_step: int, dist: distributed.Dist,
                 device: torch.device, writer, run: RunState, last_step: int | None, budget: float | None,
                 progress: bool, shown: tuple[str, ...]):
        self.dist, self.writer, self.budget, self.last_step = dist, writer, budget, last_step
        self.images_per_step, self.shown, self.progress = images_per_step, shown, progress
        self.watch = CollapseWatch(log_every)
        self.sums = torch.zeros(len(LOGGED), device=device)  # the logged losses, summed since the last read
        # under a time budget the total is estimated after every step (add)
        self.pbar = tqdm(total=last_step if budget is None else None, initial=run.step, disable=not progress,
                         desc=f"stage {stage}", unit="step", dynamic_ncols=True)
        self.restart(run.step)

    def add(self, losses: torch.Tensor, run: RunState) -> None:
        self.sums += losses
        if self.budget is not None and self.progress:  # the step the time budget ends at, as estimated so far
            est = run.step + int((self.budget - run.elapsed) / max(run.elapsed / run.step, 1e-6))
            self.pbar.total = est if self.last_step is None else min(self.last_step, est)
        self.pbar.update(1)

    def read(self, step: int) -> tuple[dict[str, float], float]:
        """The mean of each logged loss since the last read (all processes) and images per second."""
        n = step - self.step_read
        means = dict(zip(LOGGED, (distributed.mean(self.dist, self.sums) / n).tolist()))
        return means, n * self.images_per_step / (time.monotonic() - self.t_read)

    def write(self, means: dict[str, float], rate: float, step: int, lr: float) -> None:
        for warning in self.watch.update(means, step):
            self.warn(warning)
        if self.dist.main:
            for name, v in means.items():
                self.writer.add_scalar(name, v, step)
            self.writer.add_scalar("lr/g", lr, step)
            self.writer.add_scalar("speed/images_per_s", rate, step)
            shown = {"D": means["D/total"], "G": means["G/adv"], "KL": means["G/kl"]}
            shown |= {k.split("/")[1]: means[k] for k in self.shown}
            self.pbar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()} | {"img_s": f"{rate:.0f}"})
        self.restart(step)

    def sampled(self, spread: float, real_spread: float, step: int) -> None:
        for warning in self.watch.spread(spread, real_spread, step):
            self.warn(warning)

    def restart(self, step: int) -> None:
        """Sums and rate count from ``step`` on (after a read, or a rollback to ``step``)."""
        self.sums.zero_()
        self.t_read, self.step_read = time.monotonic(), step
        self.pbar.n = step

    def warn(self, message: str) -> None:
        if self.dist.main:
            self.pbar.write(f"warning: {message}")

    def say(self, message: str) -> None:
        """A line on every process (above the progress bar)."""
        self.pbar.write(message)

    def close(self) -> None:
        self.pbar.close()
