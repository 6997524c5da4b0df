"""The training loop: one stage of StackGAN, resumable, in one readable function."""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .. import distributed
from ..config import Config, from_dict, to_dict, to_yaml
from ..matching import load_or_train_matcher
from ..models.build import build_discriminator, build_generator
from ..models.encoder import LatentEncoder
from ..pipeline import MODEL_DIR_NAME, StackGANPipeline
from ..signals import StopRequests, TrainingStopped
from ..checkpoint import (KEPT_DIR, STATE_NAME, CheckpointError, load_latest, load_state, remove_partial_writes,
                          sampling_weights, stage_dir, write_checkpoint)
from ..text.norm import TextNorm
from .data import load_train_data
from .samples import SampleSheet
from .monitor import CollapseWatch
from .step import LOGGED, Updater
from ..errors import ConfigError, TrainingError
from ..runlock import run_lock
from ..utils import atomic_path

# Stage II rebuilds its frozen Stage I from these fields of the Stage-I checkpoint (and its own up-blocks
# follow Stage I's g_fusion), whatever the Stage-II command line says
STAGE1_FIELDS = ("text_dim", "z_dim", "cond_dim", "ngf1", "ca_variant", "g1_variant", "nef", "g_fusion")


def make_ema(G: torch.nn.Module, decay: float) -> AveragedModel:
    """G's exponential moving average (weights and BatchNorm statistics), with TF's warm-up."""
    def host_count() -> int:
        return int(ema.n_averaged)  # AveragedModel keeps this counter on the CPU, wherever G lives

    ema = AveragedModel(G, multi_avg_fn=_ema_update(decay, host_count), use_buffers=True)
    return ema


def _ema_update(decay: float, count: Callable[[], int]):
    """EMA step for AveragedModel with TF's warm-up: the decay is min(decay, (1 + n) / (10 + n))
    after n updates, so a young average follows the weights instead of the initial ones. ``n``
    comes from ``count()`` (AveragedModel's host-side counter), not from the device copy of it that
    AveragedModel passes in: reading that would wait for the GPU every step."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _num_averaged_on_device) -> None:
        n = float(count())
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # BatchNorm's step counter
                a.copy_(c)
    return update


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, stage: int, *, resume: bool = False,
          stage1_state: str | Path | None = None, max_steps: int | None = None, minutes: float | None = None,
          device: str | None = None, progress: bool = True) -> Path:
    """Train Stage ``stage`` on the manifest data in ``data_dir``; returns the final state file.

    Writes ``RUN/stage<N>/{state.pt, config.yaml, tb/, samples/}`` and the inference folder
    ``RUN/model/``. Stage II loads its frozen Stage I from ``RUN/stage1/state.pt`` (or
    ``stage1_state``). With ``resume`` it continues from ``RUN/stage<N>/state.pt``: step,
    learning-rate schedule, optimizers, gradient scalers, random state and the spent time budget;
    its own saved configuration is used then, except ``max_steps`` and ``minutes``, which override
    the stage's limits (the time budget counts the time of all sessions of the run).

    Under torchrun (``WORLD_SIZE`` > 1) each process trains a DistributedDataParallel replica on
    its own share of every batch (``batch_size`` images per process) with its own noise; only
    rank 0 writes. See :mod:`stackgan.distributed`.
    """
    dist, device = distributed.setup(device)
    try:
        # one process per run folder (under torchrun: rank 0, the one that writes)
        with run_lock(run_dir) if dist.main else contextlib.nullcontext():
            return _train(cfg, data_dir, run_dir, stage, dist, device, resume=resume, stage1_state=stage1_state,
                          max_steps=max_steps, minutes=minutes, progress=progress and dist.main)
    finally:
        distributed.cleanup(dist)


def _train(cfg: Config, data_dir, run_dir, stage: int, dist: distributed.Dist, device: torch.device, *,
           resume: bool, stage1_state, max_steps, minutes, progress: bool) -> Path:
    cfg, state, s1 = _resolve_run(cfg, run_dir, stage, dist, resume, stage1_state, max_steps, minutes)
    out = stage_dir(run_dir, stage)
    state_path = out / STATE_NAME
    sc = cfg.stage(stage)
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ConfigError("sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                         f"this run is on {device}")

    # --- data, networks, optimizers -------------------------------------------------------------
    norm = None
    if s1 is not None:
        norm = TextNorm(cfg.model.text_dim)
        norm.load_state_dict(s1["text_norm"])
    with distributed.main_first(dist):  # rank 0 fills the embedding and matcher caches first
        data, norm = load_train_data(data_dir, cfg.data, 64 if stage == 1 else 256, norm, progress)
        matcher = None
        if sc.match_weight > 0:
            matcher = load_or_train_matcher(data_dir, cfg.data, norm, progress=progress, device=device)
    cfg = replace(cfg, model=replace(cfg.model, text_dim=data.embeddings.shape[-1]))
    torch.manual_seed(cfg.seed * 10 + stage)  # initial weights; a resumed run restores its RNG below
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    G, D, encoder, opt_g, opt_d, ema = _networks(cfg, stage, s1, device, fmt)
    if dist.world > 1 and not dist.main:
        torch.manual_seed(cfg.seed * 10 + stage + 1_000_003 * dist.rank)  # each rank its own noise
    step, elapsed, lr_scale, rollbacks = 0, 0.0, 1.0, 0

    def restore(state: dict) -> None:  # the networks, optimizers and random state of a checkpoint
        G.load_state_dict(state["generator"])
        if encoder is not None and stage == 1:
            encoder.load_state_dict(state["encoder"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        D.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        _restore_rng(state, dist, device)

    if state is not None:
        restore(state)
        step, elapsed, lr_scale = state["step"], state["elapsed_s"], state.get("lr_scale", 1.0)

    # the networks as the step runs them: one replica per process, optionally compiled
    G_run, D_run, D_for_g = G, D, D
    if dist.world > 1:
        G_run, D_run = (DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None)
                        for m in (G, D))
    if cfg.compile:
        G_run, D_run, D_for_g = torch.compile(G_run), torch.compile(D_run), torch.compile(D)
    updater = Updater(cfg, stage, G_run, D_run, opt_g, opt_d, device=device, encoder=encoder, matcher=matcher,
                      ema=ema, D_for_g=D_for_g)
    if state is not None:
        updater.load_state_dict(state)
    watch = CollapseWatch(sc.log_every)

    per_epoch = data.steps_per_epoch(sc.batch_size, dist.world)
    stops = [n for n in (sc.max_steps, math.ceil(sc.epochs * per_epoch)) if n > 0]
    last_step = min(stops) if stops else None
    budget = sc.minutes * 60 if sc.minutes > 0 else None
    if last_step is None and budget is None:
        raise ConfigError(f"stage{stage}: set max_steps, epochs or minutes, or training never stops")
    writer = sheet = None
    G_sample = G if ema is None else ema.module
    pipe = StackGANPipeline.from_config(cfg, G_sample, norm, stage)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:  # replaces a planted symlink, never writes through it
            tmp.write_text(to_yaml(cfg))
        writer = SummaryWriter(str(out / "tb"))
        sheet = SampleSheet(data_dir, norm, cfg, device, stage)

    def checkpoint() -> Path:
        rng = distributed.gather(dist, _rng_state(device))  # every rank's, for an exact resume
        digests = distributed.gather(dist, distributed.digest(G) + distributed.digest(D)) if dist.world > 1 else []
        if dist.main:
            if len(set(digests)) > 1:
                raise TrainingError(f"step {step}: the {dist.world} replicas' weights differ (digests {digests}); "
                                   "the run is not data-parallel any more")
            write_checkpoint(out, {
                "stage": stage, "step": step, "elapsed_s": elapsed, "config": to_dict(cfg),
                "generator": G.state_dict(), "discriminator": D.state_dict(),
                **({"ema": ema.state_dict()} if ema is not None else {}),
                **({"encoder": encoder.state_dict()} if encoder is not None else {}),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), **updater.state_dict(), "lr_scale": lr_scale,
                "text_norm": norm.state_dict(), **rng[0], "rng_ranks": rng, "world_size": dist.world,
                "replica_digests": digests,
            }, sc.keep_checkpoints)
            try:
                pipe.save_pretrained(Path(run_dir) / MODEL_DIR_NAME)
            except OSError as e:
                raise CheckpointError(f"step {step}: wrote {state_path} but not the model folder "
                                      f"{Path(run_dir) / MODEL_DIR_NAME} ({e.strerror or e}); its previous files "
                                      "are unchanged; free space and --resume (or `stackgan export`)") from e
            G.train()
        return state_path

    stop = StopRequests()
    sums = torch.zeros(len(LOGGED), device=device)  # the logged losses, summed since the last log, read at log time
    # under a time budget the total is estimated after every step (below)
    pbar = tqdm(total=last_step if budget is None else None, initial=step, disable=not progress,
                desc=f"stage {stage}", unit="step", dynamic_ncols=True)
    t_start, t_log, step_log = time.monotonic() - elapsed, time.monotonic(), step
    spent = budget is not None and elapsed >= budget  # (a resumed run's elapsed is the same on every rank)
    try:
        stop.install()
        while (last_step is None or step < last_step) and not spent:
            # --- learning-rate schedule: halve every lr_decay_epochs -----------------------------
            decay = 0.5 ** math.floor(step / per_epoch / sc.lr_decay_epochs) if sc.lr_decay_epochs else 1.0
            for opt, lr in ((opt_g, sc.lr_g), (opt_d, sc.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * decay * lr_scale  # lr_scale: halved by each divergence rollback

            # --- fetch batch: this rank's share of the step's batch ------------------------------
            real, text, wrong = data.batch(step, sc.batch_size, dist.rank, dist.world)  # [B, 3, r, r], [B, D] x 2
            real = real.to(device, memory_format=fmt, non_blocking=True)
            text, wrong = text.to(device), wrong.to(device)
            z = torch.randn(len(text), cfg.model.z_dim, device=device)  # [B, z]

            # --- update D, then G, then G's moving average (training/step.py) -------------------
            sums += updater(real, text, wrong, z, step)
            step += 1
            elapsed = time.monotonic() - t_start
            if budget is not None and progress:  # the step the time budget ends at, as estimated so far
                est = step + int((budget - elapsed) / max(elapsed / step, 1e-6))
                pbar.total = est if last_step is None else min(last_step, est)
            pbar.update(1)

            # --- log, sample, checkpoint ---------------------------------------------------------
            if step % sc.log_every == 0:
                n = step - step_log
                means = dict(zip(LOGGED, (distributed.mean(dist, sums) / n).tolist()))
                rate = n * sc.batch_size * dist.world / (time.monotonic() - t_log)
                # --- divergence: non-finite losses or weights stop the run or roll it back ---------
                bad = [k for k, v in means.items() if not math.isfinite(v)] or _nonfinite_weights(G, D)
                if bad:
                    what = ", ".join(f"{k} = {means.get(k, 'non-finite')}" for k in bad)
                    if sc.on_divergence == "stop" or rollbacks >= MAX_ROLLBACKS or not state_path.exists():
                        raise TrainingDiverged(
                            f"stage {stage} diverged by step {step} (non-finite {what}); stopped. The last good "
                            f"checkpoint is {state_path if state_path.exists() else 'not written yet'}"
                            + ("" if sc.on_divergence == "stop" else f" ({rollbacks} rollbacks done)")
                            + f"; stage{stage}.on_divergence=rollback goes back to it with half the learning rate")
                    good, _ = load_latest(out, on_skip=lambda m: pbar.write(f"warning: {m}") if dist.main else None)
                    restore(good)
                    updater.load_state_dict(good)
                    diverged_at, step, lr_scale, rollbacks = step, good["step"], lr_scale * 0.5, rollbacks + 1
                    pbar.write(f"warning: non-finite {what} by step {diverged_at}: rolled back to step {step} with "
                               f"learning rates x{lr_scale:g} (rollback {rollbacks} of at most {MAX_ROLLBACKS})")
                    pbar.n = step
                    sums.zero_()
                    t_log, step_log = time.monotonic(), step
                    continue
                for warning in watch.update(means, step):
                    if dist.main:
                        pbar.write(f"warning: {warning}")
                if dist.main:
                    _log(writer, pbar, means, step, rate, opt_g.param_groups[0]["lr"], matcher is not None,
                         encoder is not None)
                sums.zero_()
                t_log, step_log = time.monotonic(), step
            if dist.main and step % sc.sample_every == 0:
                sheet.write(G_sample, step, writer)
                for warning in watch.spread(sheet.spread, sheet.real_spread, step):
                    pbar.write(f"warning: {warning}")
            if step % sc.checkpoint_every == 0:
                checkpoint()
            # the time budget and SIGINT / SIGTERM: every step alone; every log_every steps when ranks must agree
            if dist.world == 1 or step % sc.log_every == 0:
                over = (budget is not None and elapsed >= budget) or stop.signum is not None
                spent = distributed.any_rank(dist, over, device)
    except KeyboardInterrupt:
        pbar.write(f"interrupted twice at step {step}: stopped without a checkpoint; --resume continues from "
                   f"the last one ({state_path})")
        raise
    finally:
        stop.restore()
        pbar.close()
    if dist.main:
        sheet.write(G_sample, step, writer)
    checkpoint()
    if dist.main:
        writer.close()
    if stop.signum is not None:
        raise TrainingStopped(stop.signum, step, state_path)
    if dist.main:
        replicas = f" on {dist.world} processes (replica weights identical)" if dist.world > 1 else ""
        print(f"stage {stage}: {step} steps in {elapsed / 60:.1f} min{replicas}; state {state_path}; "
              f"model {Path(run_dir) / MODEL_DIR_NAME}")
    return state_path


MAX_ROLLBACKS = 3


class TrainingDiverged(TrainingError):
    pass


def _nonfinite_weights(*nets: torch.nn.Module) -> list[str]:
    """Names of the networks with a non-finite weight (one read from the device for all)."""
    norms = [torch.stack(torch._foreach_norm([p.detach() for p in net.parameters()])).sum() for net in nets]
    finite = torch.isfinite(torch.stack(norms)).tolist()
    return [name for name, ok in zip(("G weights", "D weights"), finite) if not ok]


def _networks(cfg: Config, stage: int, s1: dict | None, device: torch.device, fmt: torch.memory_format):
    """G (with Stage II's frozen Stage I), D, the reconstruction branch's encoder, their optimizers
    and G's moving average, on ``device``."""
    sc = cfg.stage(stage)
    G = build_generator(cfg.model, stage)
    G.recompute_blocks = cfg.recompute_blocks
    D = build_discriminator(cfg.model, stage)
    if s1 is not None:
        G.stage1.load_state_dict(sampling_weights(s1))
    # the reconstruction branch's encoder: Stage I trains it; Stage II uses Stage I's, frozen
    encoder = None
    if sc.recon_weight > 0:
        encoder = LatentEncoder(cfg.model.text_dim, cfg.model.z_dim, cfg.model.nef)
        if stage == 2:
            if "encoder" not in s1:
                raise ConfigError("stage2.recon_weight > 0 needs a Stage I trained with stage1.recon_weight > 0 "
                                 "(its state has no latent encoder); set stage2.recon_weight=0")
            encoder.load_state_dict(s1["encoder"])
            encoder.requires_grad_(False).eval()
        encoder.to(device, memory_format=fmt)
    if cfg.sync_batchnorm:
        G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
    G.to(device, memory_format=fmt).train()
    D.to(device, memory_format=fmt).train()
    g_params = [p for p in G.parameters() if p.requires_grad]
    if encoder is not None and stage == 1:
        g_params += list(encoder.parameters())
    # fused Adam: one kernel per step, no full-size temporaries (foreach Adam's peak memory)
    opt_g = torch.optim.Adam(g_params, sc.lr_g, (sc.beta1, sc.beta2), fused=True)
    opt_d = torch.optim.Adam(D.parameters(), sc.lr_d, (sc.beta1, sc.beta2), fused=True)
    ema = None  # G's weights averaged over steps: what samples and the saved model use
    if sc.ema_decay > 0:
        ema = make_ema(G, sc.ema_decay)
    return G, D, encoder, opt_g, opt_d, ema


def _resolve_run(cfg: Config, run_dir, stage: int, dist: distributed.Dist, resume: bool, stage1_state,
                 max_steps, minutes) -> tuple[Config, dict | None, dict | None]:
    """The run's configuration, its training state to resume (or None) and Stage II's Stage-I state."""
    out = stage_dir(run_dir, stage)
    state_path = out / STATE_NAME
    state = None
    if state_path.exists() or (out / KEPT_DIR).exists():
        if not resume:
            raise FileExistsError(f"{state_path} exists: pass --resume to continue it, or choose another --out")
        if dist.main:
            remove_partial_writes(out)  # temp files of a write that a kill interrupted
        state, _ = load_latest(out, on_skip=lambda m: print(f"warning: {m}", flush=True) if dist.main else None)
        cfg = from_dict(state["config"])  # the run's own configuration wins over presets on resume
    s1 = None
    if stage == 2:
        s1_path = Path(stage1_state) if stage1_state else stage_dir(run_dir, 1) / STATE_NAME
        if not s1_path.exists():
            raise FileNotFoundError(f"Stage II needs a trained Stage I: {s1_path} not found (run "
                                    "`stackgan train --stage 1` into the same --out first, or pass --stage1 PATH)")
        s1 = load_state(s1_path)
        s1_model = from_dict(s1["config"]).model
        cfg = replace(cfg, model=replace(cfg.model, **{k: getattr(s1_model, k) for k in STAGE1_FIELDS}),
                      data=replace(cfg.data, text_encoder=from_dict(s1["config"]).data.text_encoder))
    if cfg.deterministic:  # (a resumed run: as its saved configuration says)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts, before any GPU work
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    limits = {k: v for k, v in (("max_steps", max_steps), ("minutes", minutes)) if v is not None}
    cfg = replace(cfg, **{f"stage{stage}": replace(cfg.stage(stage), **limits)})
    return cfg, state, s1


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


def _log(writer, pbar, means: dict, step: int, rate: float, lr: float, matcher: bool, encoder: bool) -> None:
    for name, v in means.items():
        writer.add_scalar(name, v, step)
    writer.add_scalar("lr/g", lr, step)
    writer.add_scalar("speed/images_per_s", rate, step)
    shown = {"D": means["D/total"], "G": means["G/adv"], "KL": means["G/kl"]}
    if matcher:
        shown["match"] = means["G/match"]
    if encoder:
        shown["recon"] = means["G/recon"]
    pbar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()} | {"img_s": f"{rate:.0f}"})
