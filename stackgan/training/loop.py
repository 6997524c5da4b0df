"""The training loop: one stage of StackGAN, resumable.

``train`` sets a run up (configuration, data, networks, checkpoints, log) and ``_loop`` reads as
the method: fetch a batch, update D and G, maintain (log, sample, checkpoint, stop). The run's
mutable state and its checkpoints live in :mod:`stackgan.training.state`, its reporting in
:mod:`stackgan.training.log`, one step's updates in :mod:`stackgan.training.step`.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from .. import distributed
from ..config import Config, StageConfig, from_dict, to_yaml
from ..matching import load_or_train_matcher
from ..models.build import build_discriminator, build_generator
from ..models.encoder import LatentEncoder
from ..pipeline import MODEL_DIR_NAME, StackGANPipeline
from ..signals import StopRequests, TrainingStopped
from ..checkpoint import (KEPT_DIR, STATE_NAME, load_latest, load_state, remove_partial_writes, sampling_weights,
                          stage_dir)
from ..text.norm import TextNorm
from .data import TrainData, load_train_data
from .ema import make_ema
from .log import TrainingLog
from .samples import SampleSheet
from .state import Checkpoints, Networks, RunState, TrainingDiverged, divergence
from .step import Updater
from ..errors import ConfigError
from ..runlock import run_lock
from ..utils import atomic_path, keep_freed_memory

__all__ = ["STAGE1_FIELDS", "TrainingDiverged", "train"]

# Stage II rebuilds its frozen Stage I from these fields of the Stage-I checkpoint (and its own up-blocks
# follow Stage I's g_fusion), whatever the Stage-II command line says
STAGE1_FIELDS = ("text_dim", "z_dim", "cond_dim", "ngf1", "ca_variant", "g1_variant", "nef", "g_fusion", "g_coords")


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, stage: int, *, resume: bool = False,
          stage1_state: str | Path | None = None, max_steps: int | None = None, minutes: float | None = None,
          device: str | None = None, progress: bool = True, init_generator: str | Path | None = None) -> Path:
    """Train Stage ``stage`` on the manifest data in ``data_dir``; returns the final state file.

    Writes ``RUN/stage<N>/{state.pt, config.yaml, tb/, samples/}`` and the inference folder
    ``RUN/model/``. Stage II loads its frozen Stage I from ``RUN/stage1/state.pt`` (or
    ``stage1_state``). With ``resume`` it continues from ``RUN/stage<N>/state.pt``: step,
    learning-rate schedule, optimizers, gradient scalers, random state and the spent time budget;
    its own saved configuration is used then, except ``max_steps`` and ``minutes``, which override
    the stage's limits (the time budget counts the time of all sessions of the run). With ``init_generator``
    (a state file of the same stage) a new run's G starts from that state's sampling weights (a fine-tune;
    D, the optimizers and the step start fresh).

    Under torchrun (``WORLD_SIZE`` > 1) each process trains a DistributedDataParallel replica on
    its own share of every batch (``batch_size`` images per process) with its own noise; only
    rank 0 writes. See :mod:`stackgan.distributed`.
    """
    dist, device = distributed.setup(device)
    if device.type == "cpu":
        keep_freed_memory()  # the step's activations reused, not paged in again every step
    try:
        # one process per run folder (under torchrun: rank 0, the one that writes)
        with run_lock(run_dir) if dist.main else contextlib.nullcontext():
            return _train(cfg, data_dir, run_dir, stage, dist, device, resume=resume, stage1_state=stage1_state,
                          max_steps=max_steps, minutes=minutes, progress=progress and dist.main,
                          init_generator=init_generator)
    finally:
        distributed.cleanup(dist)


@dataclass
class _Run:
    """What the loop works with, set up by ``_train``."""

    stage: int
    sc: StageConfig
    z_dim: int
    data: TrainData
    nets: Networks
    updater: Updater
    checkpoints: Checkpoints
    log: TrainingLog
    sheet: SampleSheet | None  # rank 0 only
    dist: distributed.Dist
    device: torch.device
    fmt: torch.memory_format
    per_epoch: int
    last_step: int | None
    budget: float | None  # seconds
    swaps: bool  # the batches carry the captions' word swaps (_wants_swaps)


def _train(cfg: Config, data_dir, run_dir, stage: int, dist: distributed.Dist, device: torch.device, *,
           resume: bool, stage1_state, max_steps, minutes, progress: bool, init_generator=None) -> Path:
    cfg, state, s1 = _resolve_run(cfg, run_dir, stage, dist, resume, stage1_state, max_steps, minutes)
    if init_generator is not None and state is not None:
        raise ConfigError(f"--init-generator starts a new run; {stage_dir(run_dir, stage) / STATE_NAME} exists "
                          "(--resume continues it with its own weights)")
    out, sc = stage_dir(run_dir, stage), cfg.stage(stage)
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ConfigError("sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                          f"this run is on {device}")
    norm = None
    if s1 is not None:
        norm = TextNorm(cfg.model.text_dim)
        norm.load_state_dict(s1["text_norm"])
    with distributed.main_first(dist):  # rank 0 fills the embedding and matcher caches first
        data, norm = load_train_data(data_dir, cfg.data, 64 if stage == 1 else 256, norm, progress,
                                     swaps=_wants_swaps(cfg, sc),
                                     shape_orders=sc.outline_shape or sc.outline_target,
                                     size_words=stage == 1 and sc.size_weight > 0)
        matcher = None
        if sc.match_weight > 0:
            matcher = load_or_train_matcher(data_dir, cfg.data, norm, progress=progress, device=device)
    cfg = replace(cfg, model=replace(cfg.model, text_dim=data.embeddings.shape[-1]))
    torch.manual_seed(cfg.seed * 10 + stage)  # initial weights; a resumed run restores its random state below
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if matcher is not None:  # frozen: read through its folded trunk, in the images' memory format
        matcher = matcher.fold().to(memory_format=fmt)
    nets = _networks(cfg, stage, s1, device, fmt, init_generator)
    if dist.world > 1 and not dist.main:
        torch.manual_seed(cfg.seed * 10 + stage + 1_000_003 * dist.rank)  # each rank its own noise
    updater = Updater(cfg, stage, *_runners(cfg, nets, dist, device), nets.opt_g, nets.opt_d, device=device,
                      encoder=nets.encoder, matcher=matcher, ema=nets.ema, D_for_g=_d_for_g(cfg, nets))
    pipe = StackGANPipeline.from_config(cfg, nets.sampler, norm, stage)
    checkpoints = Checkpoints(cfg, stage, out, Path(run_dir) / MODEL_DIR_NAME, nets, updater, norm, pipe, dist, device)
    run = RunState()
    if state is not None:
        checkpoints.resume(state, run)

    per_epoch = data.steps_per_epoch(sc.batch_size, dist.world)
    last_step, budget = _limits(sc, per_epoch, stage)
    writer, sheet = _outputs(cfg, stage, out, data_dir, norm, device) if dist.main else (None, None)
    shown = ((("G/match",) if matcher is not None else ()) + (("G/recon",) if nets.encoder is not None else ())
             + (("G/ms",) if sc.ms_weight > 0 else ()) + (("G/info",) if cfg.model.info_codes and stage == 1 else ())
             + (("G/mask",) if sc.mask_weight > 0 else ()) + (("G/outline",) if sc.outline_weight > 0 else ())
             + (("G/size",) if sc.size_weight > 0 else ())
             + (("G/contrast",) if sc.contrast_weight > 0 else ())
             + (("G/pick",) if sc.pose_pick_weight > 0 else ()))
    log = TrainingLog(stage, sc.log_every, sc.batch_size * dist.world, dist, device, writer, run, last_step, budget,
                      progress, shown)
    r = _Run(stage=stage, sc=sc, z_dim=cfg.model.z_dim, data=data, nets=nets, updater=updater, checkpoints=checkpoints,
             log=log, sheet=sheet, dist=dist, device=device, fmt=fmt, per_epoch=per_epoch, last_step=last_step,
             budget=budget, swaps=_wants_swaps(cfg, sc))
    stop = StopRequests()
    try:
        stop.install()
        _loop(r, run, stop)
    except KeyboardInterrupt:
        log.say(f"interrupted twice at step {run.step}: stopped without a checkpoint; --resume continues from "
                f"the last one ({checkpoints.path})")
        raise
    finally:
        stop.restore()
        log.close()
    if dist.main:
        sheet.write(nets.sampler, run.step, writer)
    checkpoints.save(run)
    if dist.main:
        writer.close()
    if stop.signum is not None:
        raise TrainingStopped(stop.signum, run.step, checkpoints.path)
    if dist.main:
        replicas = f" on {dist.world} processes (replica weights identical)" if dist.world > 1 else ""
        print(f"stage {stage}: {run.step} steps in {run.elapsed / 60:.1f} min{replicas}; state {checkpoints.path}; "
              f"model {Path(run_dir) / MODEL_DIR_NAME}")
    return checkpoints.path


def _loop(r: _Run, run: RunState, stop: StopRequests) -> None:
    """Steps until the last step, the time budget or a stop request (SIGINT / SIGTERM)."""
    sc, dist, nets = r.sc, r.dist, r.nets
    run.start_clock()
    spent = r.budget is not None and run.elapsed >= r.budget  # (a resumed run's elapsed is the same on every rank)
    while (r.last_step is None or run.step < r.last_step) and not spent:
        # --- learning-rate schedule: halve every lr_decay_epochs; lr_scale: halved by each rollback ---
        decay = 0.5 ** math.floor(run.step / r.per_epoch / sc.lr_decay_epochs) if sc.lr_decay_epochs else 1.0
        nets.set_learning_rates(sc.lr_g * decay * run.lr_scale, sc.lr_d * decay * run.lr_scale)

        # --- fetch batch: this rank's share of the step's batch ----------------------------------
        real, text, wrong, *swaps = r.data.batch(run.step, sc.batch_size, dist.rank, dist.world,
                                                 swaps=r.swaps)  # [B, 3, r, r], [B, D] x 2
        real = real.to(r.device, memory_format=r.fmt, non_blocking=True)
        text, wrong = text.to(r.device), wrong.to(r.device)
        swaps = tuple(t.to(r.device) for t in swaps) or None  # stage1.swap_weight: [B, V, D], [B]
        z = torch.randn(len(text), r.z_dim, device=r.device)  # [B, z]

        # --- update D, then G, then G's moving average (training/step.py) -----------------------
        extra = {} if swaps is None else {"swaps": swaps}
        if r.data.shape_order is not None or r.data.size_word is not None:
            picked = r.data.batch_indices(run.step, sc.batch_size, dist.rank, dist.world)  # the batch's images
            if r.data.shape_order is not None:  # stage1.outline_shape / outline_target: their shape words' orders [B]
                extra["orders"] = r.data.shape_order[picked].to(r.device)
            if r.data.size_word is not None:  # stage1.size_weight: their size words [B]
                extra["sizes"] = r.data.size_word[picked].to(r.device)
        losses = r.updater(real, text, wrong, z, run.step, **extra)
        run.tick()
        r.log.add(losses, run)

        # --- maintain: log (or roll back a divergence), sample, checkpoint, stop -----------------
        if run.step % sc.log_every == 0:
            means, rate = r.log.read(run.step)
            if what := divergence(means, nets):
                r.checkpoints.rollback(run, what, r.log.say)
                r.log.restart(run.step)
                continue
            r.log.write(means, rate, run.step, nets.opt_g.param_groups[0]["lr"])
        if dist.main and run.step % sc.sample_every == 0:
            r.sheet.write(nets.sampler, run.step, r.log.writer)
            r.log.sampled(r.sheet.spread, r.sheet.real_spread, run.step)
        if run.step % sc.checkpoint_every == 0:
            r.checkpoints.save(run)
        # the time budget and SIGINT / SIGTERM: every step alone; every log_every steps when ranks must agree
        if dist.world == 1 or run.step % sc.log_every == 0:
            over = (r.budget is not None and run.elapsed >= r.budget) or stop.signum is not None
            spent = distributed.any_rank(dist, over, r.device)


def _limits(sc: StageConfig, per_epoch: int, stage: int) -> tuple[int | None, float | None]:
    """The step the stage ends at (max_steps or epochs, whichever comes first) and its time budget
    in seconds; None where there is none."""
    stops = [n for n in (sc.max_steps, math.ceil(sc.epochs * per_epoch)) if n > 0]
    last_step, budget = min(stops) if stops else None, sc.minutes * 60 if sc.minutes > 0 else None
    if last_step is None and budget is None:
        raise ConfigError(f"stage{stage}: set max_steps, epochs or minutes, or training never stops")
    return last_step, budget


def _outputs(cfg: Config, stage: int, out: Path, data_dir, norm: TextNorm, device: torch.device):
    """Rank 0's outputs: the resolved configuration, the TensorBoard writer and the sample sheets."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.yaml") as tmp:  # replaces a planted symlink, never writes through it
        tmp.write_text(to_yaml(cfg))
    return SummaryWriter(str(out / "tb")), SampleSheet(data_dir, norm, cfg, device, stage)


def _wants_swaps(cfg: Config, sc) -> bool:
    """Whether the step's batches carry the captions' word swaps: for the swap loss, and for the texture
    critic's wrong captions when ``data.swap_attribute`` is set."""
    return sc.swap_weight > 0 or (sc.patch_weight > 0 and bool(cfg.data.swap_attribute))


def _runners(cfg: Config, nets: Networks, dist: distributed.Dist, device: torch.device):
    """G and D as the step runs them: one replica per process, optionally compiled."""
    G, D = nets.G, nets.D
    if dist.world > 1:
        G, D = (DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None)
                for m in (G, D))
    if cfg.compile:
        G, D = torch.compile(G), torch.compile(D)
    return G, D


def _d_for_g(cfg: Config, nets: Networks) -> torch.nn.Module:
    """The D that scores fakes in G's update (unwrapped: no gradient all-reduce there)."""
    return torch.compile(nets.D) if cfg.compile else nets.D


def _networks(cfg: Config, stage: int, s1: dict | None, device: torch.device, fmt: torch.memory_format,
              init_generator: str | Path | None = None) -> Networks:
    """G (with Stage II's frozen Stage I), D, the reconstruction branch's encoder, their optimizers
    and G's moving average, on ``device``; G's weights from ``init_generator``'s state when given."""
    sc = cfg.stage(stage)
    G = build_generator(cfg.model, stage)
    G.recompute_blocks = cfg.recompute_blocks
    D = build_discriminator(cfg.model, stage)
    if s1 is not None:
        G.stage1.load_state_dict(sampling_weights(s1))
        G.start_pattern()  # model.stage2_pattern: Stage II's copy starts as the loaded Stage I's pattern
    if init_generator is not None:
        _load_generator(G, init_generator, stage)
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
    return Networks(G, D, encoder, opt_g, opt_d, ema)


def _load_generator(G: torch.nn.Module, path: str | Path, stage: int) -> None:
    """``--init-generator``: G's weights from the state file ``path`` (its sampling weights), which must be of
    this stage and this G's architecture."""
    init = load_state(path)
    if init.get("stage") != stage:
        raise ConfigError(f"{path}: a Stage-{init.get('stage')} state; --init-generator needs one of Stage {stage}")
    try:
        G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sampling_weights(init).items()})
    except RuntimeError as e:
        raise ConfigError(f"{path}: its generator is not this configuration's Stage-{stage} G ({e})") from None


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
