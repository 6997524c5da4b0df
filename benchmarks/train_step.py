"""Training-step and inference speed of the project's code beside a plain eager fp32 loop.

For each preset and stage, the same networks run two ways in this process:

* ``plain``: the straightforward loop as the reference implementation writes it: fp32,
  contiguous tensors, nearest upsampling then a 3x3 conv as two layers, D's weight gradients
  computed in G's update too (then thrown away), torch's default Adam;
* ``project``: ``stackgan.training.step.Updater`` as ``stackgan train`` runs it, with the
  precision, memory format and torch.compile switches given here.

Reports seconds per step, samples/s, peak memory (CUDA: the allocator's peak; CPU: the
process's peak resident set, reset through /proc/self/clear_refs before each measurement) and
GFLOP/s (FLOPs of one step counted with torch.utils.flop_counter). Then inference: one
sentence embedding to a 256x256 image, and batches of 16.

    python benchmarks/train_step.py                              # CPU, fp32 and bf16, all presets
    python benchmarks/train_step.py --device cuda --precision bf16 --json gpu.json
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from stackgan.config import apply_overrides, get_preset
from stackgan.losses import discriminator_loss, generator_loss, kl_loss
from stackgan.matching import ImageTextMatcher
from stackgan.models.blocks import UpBlock
from stackgan.models.build import build_discriminator, build_generator
from stackgan.training.step import Updater
from stackgan.utils import keep_freed_memory

TEXT_DIM = 1024  # the authors' char-CNN-RNN embeddings (birds widths as in the reference's numbers)
STAGE_BATCH = {1: 64, 2: 16}
# the reference implementation on this project's 2-core CPU (issue #6), paper widths
REFERENCE_CPU = {("paper", 1): {"step_s": 4.9, "peak_gib": 1.9}, ("paper", 2): {"step_s": 17.8, "peak_gib": 4.5},
                 "one_image_ms": 161.0, "batch16_s": 3.2}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so the peak is this run's
    except OSError:
        pass
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current resident set


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """This machine's fp32 matrix-multiply speed right now: a yardstick for the step figures,
    since a shared machine's speed drifts between runs."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t = time.monotonic()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.monotonic() - t) / 1e9


def networks(preset: str, stage: int, device: torch.device, overrides: list[str], plain: bool = False):
    cfg = apply_overrides(get_preset(preset), [f"model.text_dim={TEXT_DIM}", *overrides])
    torch.manual_seed(0)
    G = build_generator(cfg.model, stage).to(device).train()
    G.recompute_blocks = cfg.recompute_blocks
    D = build_discriminator(cfg.model, stage).to(device).train()
    for m in G.modules():
        if isinstance(m, UpBlock):
            m.fuse_upsampling = not plain
    fused = not plain  # the project's optimizers are fused Adam; the plain loop keeps torch's default Adam
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], 2e-4, (0.5, 0.999), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, (0.5, 0.999), fused=fused)
    return cfg, G, D, opt_g, opt_d


def frozen_matcher(cfg, stage: int, device: torch.device) -> ImageTextMatcher | None:
    """A recipe with G's matching loss runs its frozen matcher (untrained here: the same cost); else None."""
    if cfg.stage(stage).match_weight <= 0:
        return None
    matcher = ImageTextMatcher(TEXT_DIM, widths=cfg.data.matcher_widths, trunk=cfg.data.matcher_trunk).to(device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return matcher.fold().to(memory_format=fmt)  # as training reads it (stackgan.training.loop)


def plain_step(cfg, stage, G, D, opt_g, opt_d):
    """The reference's iteration: D on (real, right), (real, wrong), (fake, right); then G."""
    def step(real, text, wrong, z):
        out = G(z, text)
        fake, mu, logvar = out[-3:]
        right_t, wrong_t = (mu.detach(), mu.detach().roll(1, 0)) if cfg.model.d_text_path == "mu" else (text, wrong)
        h_real, h_fake = D(real), D(fake.detach())
        d = discriminator_loss(D.cond_logits(h_real, right_t), D.cond_logits(h_real, wrong_t),
                               D.cond_logits(h_fake, right_t), D.uncond_logits(h_real),
                               D.uncond_logits(h_fake))
        opt_d.zero_grad(set_to_none=False)
        d["total"].backward()
        opt_d.step()
        h = D(fake)
        g = generator_loss(D.cond_logits(h, right_t), D.uncond_logits(h))
        if logvar is not None:  # no KL term without Conditioning Augmentation (model.ca_variant=none)
            g = g + cfg.stage(stage).kl_weight * kl_loss(mu, logvar)
        opt_g.zero_grad(set_to_none=False)
        g.backward()
        opt_g.step()
    return step


def measure(fn, args, device, warmup: int, steps: int) -> dict:
    for _ in range(warmup):
        fn(*args)
    sync(device)
    reset_peak(device)
    times = []
    for _ in range(steps):
        t = time.monotonic()
        fn(*args)
        sync(device)
        times.append(time.monotonic() - t)
    peak = peak_gib(device)
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    sync(device)
    step_s = statistics.median(times)
    return {"step_s": step_s, "peak_gib": peak, "gflop": counter.get_total_flops() / 1e9,
            "gflops_per_s": counter.get_total_flops() / 1e9 / step_s}


def train_rows(preset: str, stage: int, device, precision: str, compile_: bool, warmup: int, steps: int,
               sets: list[str]) -> list[dict]:
    B = STAGE_BATCH[stage]
    r = 64 if stage == 1 else 256
    rows = []
    for variant in ("plain", "project"):
        over = (["channels_last=false"] if variant == "plain"
                else [f"precision={precision}", f"compile={str(compile_).lower()}", *sets])
        cfg, G, D, opt_g, opt_d = networks(preset, stage, device, over, plain=variant == "plain")
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        G.to(memory_format=fmt)
        D.to(memory_format=fmt)
        g = torch.Generator().manual_seed(1)
        args = (torch.rand(B, 3, r, r, generator=g).mul(2).sub(1).to(device, memory_format=fmt),
                torch.randn(B, TEXT_DIM, generator=g).to(device), torch.randn(B, TEXT_DIM, generator=g).to(device),
                torch.randn(B, cfg.model.z_dim, generator=g).to(device))
        if variant == "plain":
            fn = plain_step(cfg, stage, G, D, opt_g, opt_d)
        else:
            Gr, Dr = (torch.compile(G), torch.compile(D)) if compile_ else (G, D)
            matcher = frozen_matcher(cfg, stage, device)
            fn = Updater(cfg, stage, Gr, Dr, opt_g, opt_d, device=device, D_for_g=Dr, matcher=matcher)
            if cfg.stage(stage).swap_weight:  # the texture word swaps (random stand-ins: the cost, not the values)
                swaps = (torch.randn(B, 3, TEXT_DIM, generator=g).to(device),
                         torch.randint(-1, 3, (B,), generator=g).to(device))
                fn = functools.partial(fn, swaps=swaps)
        res = measure(fn, args, device, warmup + (3 if compile_ and variant == "project" else 0), steps)
        rows.append({"what": f"train stage {stage}", "preset": preset, "batch": B, "variant": variant,
                     "precision": "fp32" if variant == "plain" else precision, **res,
                     "samples_per_s": B / res["step_s"]})
        del fn, G, D, opt_g, opt_d, args
    return rows


def inference_rows(preset: str, device, precision: str, warmup: int, steps: int) -> list[dict]:
    rows = []
    for variant in ("plain", "project"):
        cfg, G, _, _, _ = networks(preset, 2, device, [], plain=variant == "plain")
        G.eval()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if variant == "project" else None
        if variant == "project":
            G.to(memory_format=torch.channels_last)
        for n in (1, 16):
            g = torch.Generator().manual_seed(2)
            args = (torch.randn(n, cfg.model.z_dim, generator=g).to(device),
                    torch.randn(n, TEXT_DIM, generator=g).to(device))

            def run(z, text):
                ctx = torch.inference_mode() if variant == "project" else torch.no_grad()
                with ctx, torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    return G(z, text)[1]
            res = measure(run, args, device, warmup, steps)
            rows.append({"what": f"generate {n} x 256px", "preset": preset, "batch": n, "variant": variant,
                         "precision": precision if dtype else "fp32", **res, "samples_per_s": n / res["step_s"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default="paper,shapes-cpu")
    ap.add_argument("--precision", default="fp32,bf16", help="the project's precisions to measure")
    ap.add_argument("--compile", action="store_true", help="also measure the project's step under torch.compile")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the project's training step (repeatable), e.g. recompute_blocks=4")
    ap.add_argument("--no-inference", action="store_true", help="training steps only")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as `stackgan train` does (STACKGAN_MALLOC=system: not)
    yardstick = [matmul_gflops(device)]
    rows = []
    for preset in args.presets.split(","):
        for precision in args.precision.split(","):
            for compile_ in ([False, True] if args.compile else [False]):
                for stage in (1, 2):
                    rows += train_rows(preset, stage, device, precision, compile_, args.warmup, args.steps, args.sets)
                    if compile_:
                        rows[-1]["precision"] += "+compile"
                    if args.sets:
                        rows[-1]["precision"] += " " + " ".join(args.sets)
                    print(rows[-2], "\n", rows[-1], flush=True)
            if not args.no_inference:
                rows += inference_rows(preset, device, precision, args.warmup, args.steps * 4)
    yardstick.append(matmul_gflops(device))
    report(rows, device, args.json, yardstick)


def report(rows: list[dict], device, path: Path | None, yardstick: list[float]) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\n{name}, torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 2048x2048 matmul "
          f"{yardstick[0]:.0f} GFLOP/s before the run, {yardstick[1]:.0f} after\n")
    print("| what | preset | batch | precision | plain s | project s | speed-up | samples/s | peak GiB "
          "(plain / project) | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    plain = {}
    for r in rows:
        key = (r["what"], r["preset"], r["batch"])
        if r["variant"] == "plain":
            plain[key] = r
            continue
        p = plain[key]
        print(f"| {r['what']} | {r['preset']} | {r['batch']} | {r['precision']} | {p['step_s']:.3f} | "
              f"{r['step_s']:.3f} | {p['step_s'] / r['step_s']:.2f}x | {r['samples_per_s']:.1f} | "
              f"{p['peak_gib']:.2f} / {r['peak_gib']:.2f} | {r['gflops_per_s']:.1f} |")
    if path:
        path.write_text(json.dumps({"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                                    "matmul_gflops_before_after": yardstick,
                                    "reference_cpu": {str(k): v for k, v in REFERENCE_CPU.items()},
                                    "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
