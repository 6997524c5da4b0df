"""The training loop: one stage of StackGAN, resumable, in one readable function."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..augment import augment_for_d
from ..config import Config, from_dict, to_dict, to_yaml
from ..matching import load_or_train_matcher
from ..losses import discriminator_loss, generator_loss, kl_loss
from ..models.build import build_discriminator, build_generator
from ..models.encoder import LatentEncoder
from ..pipeline import MODEL_DIR_NAME, StackGANPipeline
from ..checkpoint import STATE_NAME, load_state, sampling_weights, save_state, stage_dir
from ..text.norm import TextNorm
from .data import load_train_data
from .samples import SampleSheet

STAGE1_FIELDS = ("text_dim", "z_dim", "cond_dim", "ngf1", "ca_variant")


def _forward_g(G, stage: int, z, text):
    if stage == 1:
        fake, mu, logvar = G(z, text)
    else:
        _, fake, mu, logvar = G(z, text)
    return fake, mu, logvar


def _low_res(real: torch.Tensor) -> torch.Tensor:
    """The 64x64 version of a real batch (area averaging, as the data set makes its 64 px images)."""
    return real if real.shape[-1] == 64 else F.interpolate(real, size=64, mode="area")


def _ema_update(decay: float):
    """EMA step for AveragedModel with TF's warm-up: the decay is min(decay, (1 + n) / (10 + n))
    after n updates, so a young average follows the weights instead of the initial ones."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
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
    learning-rate schedule, optimizers, random state and the spent time budget; its own saved
    configuration is used then, except ``max_steps`` and ``minutes``, which override the stage's
    limits (the time budget counts the time of all sessions of the run).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = stage_dir(run_dir, stage)
    state_path = out / STATE_NAME
    state = None
    if state_path.exists():
        if not resume:
            raise FileExistsError(f"{state_path} exists: pass --resume to continue it, or choose another --out")
        state = load_state(state_path)
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
    limits = {k: v for k, v in (("max_steps", max_steps), ("minutes", minutes)) if v is not None}
    cfg = replace(cfg, **{f"stage{stage}": replace(cfg.stage(stage), **limits)})
    sc = cfg.stage(stage)

    # --- data, networks, optimizers -------------------------------------------------------------
    norm = None
    if s1 is not None:
        norm = TextNorm(cfg.model.text_dim)
        norm.load_state_dict(s1["text_norm"])
    data, norm = load_train_data(data_dir, cfg.data, 64 if stage == 1 else 256, norm, progress)
    cfg = replace(cfg, model=replace(cfg.model, text_dim=data.embeddings.shape[-1]))
    torch.manual_seed(cfg.seed * 10 + stage)  # initial weights; a resumed run restores its RNG below
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    G = build_generator(cfg.model, stage)
    D = build_discriminator(cfg.model, stage)
    if s1 is not None:
        G.stage1.load_state_dict(sampling_weights(s1))
    # the reconstruction branch's encoder: Stage I trains it; Stage II uses Stage I's, frozen
    encoder = None
    if sc.recon_weight > 0:
        encoder = LatentEncoder(cfg.model.text_dim, cfg.model.z_dim, cfg.model.nef)
        if stage == 2:
            if "encoder" not in s1:
                raise ValueError("stage2.recon_weight > 0 needs a Stage I trained with stage1.recon_weight > 0 "
                                 "(its state has no latent encoder); set stage2.recon_weight=0")
            encoder.load_state_dict(s1["encoder"])
            encoder.requires_grad_(False).eval()
        encoder.to(device, memory_format=fmt)
    G.to(device, memory_format=fmt).train()
    D.to(device, memory_format=fmt).train()
    g_params = [p for p in G.parameters() if p.requires_grad]
    if encoder is not None and stage == 1:
        g_params += list(encoder.parameters())
    opt_g = torch.optim.Adam(g_params, sc.lr_g, (sc.beta1, sc.beta2))
    opt_d = torch.optim.Adam(D.parameters(), sc.lr_d, (sc.beta1, sc.beta2))
    ema = None  # G's weights averaged over steps: what samples and the saved model use
    if sc.ema_decay > 0:
        ema = AveragedModel(G, multi_avg_fn=_ema_update(sc.ema_decay), use_buffers=True)
    matcher = None
    if sc.match_weight > 0:
        matcher = load_or_train_matcher(data_dir, cfg.data, norm, progress=progress, device=device)
    step, elapsed = 0, 0.0
    if state is not None:
        G.load_state_dict(state["generator"])
        if encoder is not None and stage == 1:
            encoder.load_state_dict(state["encoder"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        D.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, elapsed = state["step"], state["elapsed_s"]
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))

    per_epoch = len(data) // sc.batch_size
    stops = [n for n in (sc.max_steps, math.ceil(sc.epochs * per_epoch)) if n > 0]
    last_step = min(stops) if stops else None
    budget = sc.minutes * 60 if sc.minutes > 0 else None
    if last_step is None and budget is None:
        raise ValueError(f"stage{stage}: set max_steps, epochs or minutes, or training never stops")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())
    writer = SummaryWriter(str(out / "tb"))
    sheet = SampleSheet(data_dir, norm, cfg, device, stage)
    G_sample = G if ema is None else ema.module
    pipe = StackGANPipeline(cfg, G_sample, norm, stage)

    def checkpoint() -> Path:
        save_state(state_path, {
            "stage": stage, "step": step, "elapsed_s": elapsed, "config": to_dict(cfg),
            "generator": G.state_dict(), "discriminator": D.state_dict(),
            **({"ema": ema.state_dict()} if ema is not None else {}),
            **({"encoder": encoder.state_dict()} if encoder is not None else {}),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "text_norm": norm.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            **({"rng_cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
        })
        pipe.save_pretrained(Path(run_dir) / MODEL_DIR_NAME)
        G.train()
        return state_path

    def d_view(x: torch.Tensor) -> torch.Tensor:  # what D sees: optionally augmented (stackgan.augment)
        return augment_for_d(x, sc.d_translate, sc.d_noise) if sc.d_translate or sc.d_noise else x

    sums = 0  # the logged losses as one tensor, summed on the device since the last log, read at log time
    pbar = tqdm(total=last_step, initial=step, disable=not progress, desc=f"stage {stage}", unit="step",
                dynamic_ncols=True)
    t_start, t_log, step_log = time.monotonic() - elapsed, time.monotonic(), step
    try:
        while (last_step is None or step < last_step) and (budget is None or elapsed < budget):
            # --- learning-rate schedule: halve every lr_decay_epochs -----------------------------
            decay = 0.5 ** math.floor(step / per_epoch / sc.lr_decay_epochs) if sc.lr_decay_epochs else 1.0
            for opt, lr in ((opt_g, sc.lr_g), (opt_d, sc.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * decay

            # --- fetch batch ---------------------------------------------------------------------
            real, text, wrong = data.batch(step, sc.batch_size)  # [B, 3, r, r], [B, D], [B, D]
            real = real.to(device, memory_format=fmt, non_blocking=True)
            text, wrong = text.to(device), wrong.to(device)
            z = torch.randn(len(text), cfg.model.z_dim, device=device)  # [B, z]

            # --- update D: (real, right) -> 1, (real, wrong) and (fake, right) -> 0 ---------------
            with autocast:
                fake, mu, logvar = _forward_g(G, stage, z, text)  # [B, 3, r, r], [B, cond] x 2
                if cfg.model.d_text_path == "mu":  # PT: D sees G's CA mean, detached
                    right_t = mu.detach()
                    with torch.no_grad():
                        wrong_t = right_t.roll(1, 0) if cfg.data.wrong_pairs == "shift" else G.ca(wrong)[1]
                else:
                    right_t, wrong_t = text, wrong
                h_real = D(d_view(real))  # [B, 8ndf, 4, 4]; computed once, used for right and wrong text
                h_fake = D(d_view(fake.detach()))
                uncond = stage == 2 and cfg.model.uncond_head2
                d = discriminator_loss(
                    D.cond_logits(h_real, right_t), D.cond_logits(h_real, wrong_t), D.cond_logits(h_fake, right_t),
                    D.uncond_logits(h_real) if uncond else None, D.uncond_logits(h_fake) if uncond else None,
                    kind=sc.gan_loss)
            opt_d.zero_grad(set_to_none=True)
            d["total"].backward()
            opt_d.step()

            # --- update G: fool D with the right text, keep CA close to N(0, I) ------------------
            with autocast:
                h_fake = D(d_view(fake))
                g_adv = generator_loss(D.cond_logits(h_fake, right_t), D.uncond_logits(h_fake) if uncond else None,
                                       sc.gan_loss)
                kl = kl_loss(mu, logvar)
                g_total = g_adv + sc.kl_weight * kl
                match = (matcher.loss(fake, text, cfg.data.matcher_hard) if matcher is not None
                         else torch.zeros((), device=device))
                g_total = g_total + sc.match_weight * match
                recon = latent_kl = torch.zeros((), device=device)
                if encoder is not None:  # cVAE-GAN: redraw the real image from its own encoded z
                    z_mu, z_logvar = encoder(_low_res(real), text)  # [B, z] x 2
                    redrawn, _, _ = _forward_g(G, stage, encoder.sample(z_mu, z_logvar), text)
                    recon = F.l1_loss(redrawn.float(), real.float())
                    g_total = g_total + sc.recon_weight * recon
                    if stage == 1:
                        latent_kl = kl_loss(z_mu, z_logvar)
                        g_total = g_total + sc.latent_kl_weight * latent_kl
            opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            opt_g.step()
            if ema is not None:
                ema.update_parameters(G)
            step += 1
            elapsed = time.monotonic() - t_start
            pbar.update(1)
            logged = {"D/total": d["total"], "D/real": d["real"], "D/wrong": d["wrong"], "D/fake": d["fake"],
                      "G/adv": g_adv, "G/kl": kl, "G/match": match, "G/recon": recon, "G/latent_kl": latent_kl}
            sums = sums + torch.stack(list(logged.values())).detach()

            # --- log, sample, checkpoint ---------------------------------------------------------
            if step % sc.log_every == 0:
                n = step - step_log
                means = dict(zip(logged, (sums / n).tolist()))
                for name, v in means.items():
                    writer.add_scalar(name, v, step)
                rate = n * sc.batch_size / (time.monotonic() - t_log)
                writer.add_scalar("lr/g", opt_g.param_groups[0]["lr"], step)
                writer.add_scalar("speed/images_per_s", rate, step)
                shown = {"D": means["D/total"], "G": means["G/adv"], "KL": means["G/kl"]}
                if matcher is not None:
                    shown["match"] = means["G/match"]
                if encoder is not None:
                    shown["recon"] = means["G/recon"]
                pbar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()} | {"img_s": f"{rate:.0f}"})
                if budget is not None:  # show an ETA for the time budget too
                    est = step + int((budget - elapsed) / max(elapsed / max(step, 1), 1e-6))
                    pbar.total = est if last_step is None else min(last_step, est)
                sums = 0
                t_log, step_log = time.monotonic(), step
            if step % sc.sample_every == 0:
                sheet.write(G_sample, step, writer)
            if step % sc.checkpoint_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        pbar.write(f"interrupted at step {step}: writing a checkpoint you can --resume")
        checkpoint()
        raise
    finally:
        pbar.close()
    sheet.write(G_sample, step, writer)
    checkpoint()
    writer.close()
    print(f"stage {stage}: {step} steps in {elapsed / 60:.1f} min; state {state_path}; "
          f"model {Path(run_dir) / MODEL_DIR_NAME}")
    return state_path
