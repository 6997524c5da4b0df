"""What each ``stackgan`` subcommand does (argument parsing lives in cli.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .config import apply_overrides, get_preset, load_yaml, to_yaml
from .errors import UsageError


def cmd_data(args) -> int:
    if args.data_command == "info":
        from .data.readers import open_dataset
        print(open_dataset(args.path, skip_bad=args.skip_bad).summary(check_images=args.check_images))
        return 0
    if args.data_command == "prepare":
        from .data.prepare import prepare_dataset
        summary = prepare_dataset(args.path, args.out, sizes=tuple(args.sizes), skip_bad=args.skip_bad,
                                  limit=args.limit)
        splits = ", ".join(f"{n:,} {s}" for s, n in summary["splits"].items())
        print(f"{args.out}: {splits} images ({summary['layout']} layout) at {', '.join(map(str, args.sizes))} px "
              f"in {summary['seconds']:.0f} s; {len(summary['skipped'])} skipped")
        for reason in summary["skipped"][:20]:
            print(f"  skipped: {reason}")
        if len(summary["skipped"]) > 20:
            print(f"  ... and {len(summary['skipped']) - 20} more (all in {args.out / 'prepared.json'})")
        return 0
    if args.data_command == "attributes":
        from .data.foils import FOIL_WEIGHTS, foil_weights, write_attribute_embeddings
        weights = foil_weights(args.foil_attributes) if args.foil_attributes else FOIL_WEIGHTS
        print(f"one-hot attribute embeddings in {write_attribute_embeddings(args.path, args.out, args.foils, weights=weights)}")
        return 0
    from .data.shapes import generate_shapes

    t = time.monotonic()
    out = generate_shapes(args.out, n_train=args.train, n_test=args.test, seed=args.seed, workers=args.workers,
                          fixed_rotation=args.fixed_rotation)
    print(f"Shapes data in {out} ({time.monotonic() - t:.0f} s)")
    return 0


def resolve_config(args):
    cfg = get_preset(args.preset)
    if args.config:
        cfg = load_yaml(args.config, base=cfg)
    cfg = apply_overrides(cfg, args.set)
    stage = f"stage{args.stage}"
    for flag, key in (("batch_size", "batch_size"), ("max_steps", "max_steps"), ("minutes", "minutes"),
                      ("checkpoint_every", "checkpoint_every")):
        value = getattr(args, flag, None)
        if value is not None:
            cfg = apply_overrides(cfg, [f"{stage}.{key}={value}"])
    if getattr(args, "seed", None) is not None:
        cfg = apply_overrides(cfg, [f"seed={args.seed}", f"data.seed={args.seed}"])
    if getattr(args, "deterministic", False):
        cfg = apply_overrides(cfg, ["deterministic=true"])
    return cfg


def cmd_train(args) -> int:
    cfg = resolve_config(args)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    from .training import train
    from .utils import resolve_device

    if args.device:
        resolve_device(args.device)  # a clear error now, not a torch one later
    ignored = [f"--set {s}" for s in args.set] + ([f"--config {args.config}"] if args.config else [])
    from .checkpoint import KEPT_DIR, STATE_NAME, stage_dir
    kept = stage_dir(args.out, args.stage)
    if args.resume and ignored and ((kept / STATE_NAME).exists() or (kept / KEPT_DIR).exists()):
        print(f"warning: --resume continues {args.out} with its own saved configuration; {', '.join(ignored)} "
              "changes nothing (experiments/branch_state.py starts a branch of a run with settings changed)",
              flush=True)

    train(cfg, args.data, args.out, args.stage, resume=args.resume, stage1_state=args.stage1,
          init_generator=args.init_generator, max_steps=args.max_steps, minutes=args.minutes, device=args.device,
          progress=not args.no_progress)
    return 0


MAX_IMAGES = 100_000  # per `generate` command: written one batch at a time, so memory stays flat
MAX_SHEET = 64  # images on one --sheet


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from .pipeline import GenerationOutput, StackGANPipeline
    from .text.captions import gather_captions
    from .utils import atomic_path, resolve_device
    from .viz import stage_sheet, to_pil

    texts = gather_captions(args.texts, args.captions_file)
    if not texts:
        raise UsageError("no captions given: pass sentences or --captions-file FILE")
    if args.n_per_caption < 1 or args.batch_size < 1:
        raise UsageError("--n-per-caption and --batch-size must be >= 1")
    total = len(texts) * args.n_per_caption
    if total > MAX_IMAGES:
        raise UsageError(f"{len(texts)} caption(s) x --n-per-caption {args.n_per_caption} = {total:,} images; at most "
                         f"{MAX_IMAGES:,} per command (run it again with another --seed and --out for more)")
    if args.sheet and total > MAX_SHEET:
        raise UsageError(f"--sheet holds at most {MAX_SHEET} images; this command makes {total:,}")
    device = resolve_device(args.device)
    pipe = StackGANPipeline.load(args.checkpoint).to(device)
    emb = pipe.embed(texts)  # [C, D]: each caption embedded once
    args.out.mkdir(parents=True, exist_ok=True)
    bs, sheet, size = args.batch_size, [], None
    # image i: caption i // n_per_caption, seed SEED + i; each batch is written before the next is drawn
    for start in tqdm(range(0, total, bs), desc="generating", unit="batch", disable=total <= bs):
        idx = list(range(start, min(start + bs, total)))
        which = [i // args.n_per_caption for i in idx]
        out = pipe.generate(embeddings=emb[which], seeds=[args.seed + i for i in idx], stage=args.stage,
                            batch_size=bs, truncation=args.truncation)
        for i, img in zip(idx, out.images):
            with atomic_path(args.out / f"{i:05d}.png") as tmp:
                to_pil(img).save(tmp, format="PNG")
        size = out.images.shape[-1]
        if args.sheet:
            sheet.append(out)
    print(f"wrote {total} images ({size}x{size}) to {args.out}")
    if args.sheet:
        expanded = [t for t in texts for _ in range(args.n_per_caption)]
        sheet = GenerationOutput.cat(sheet)
        stage_sheet(sheet, expanded, args.sheet, cell=256 if sheet.stage2 is not None else 128)
        print(f"sheet: {args.sheet}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation.metrics import (checkpoint_metrics, evaluate_checkpoint, folder_metrics, parse_metrics,
                                     report_dir, side_by_side_markdown)
    from .utils import resolve_device

    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device) if args.device else None  # (None: each part's own default)
    if args.fake or args.real:
        if not (args.fake and args.real) or args.checkpoint:
            raise UsageError("compare two folders with both --fake DIR and --real DIR (and no checkpoint)")
        from .evaluation.fidelity import FolderImages, compute_metrics
        result = compute_metrics(FolderImages(args.fake), FolderImages(args.real), folder_metrics(metrics),
                                 args.inception_weights)
        for k, v in result.items():
            print(f"{k}: {v}")
        print(json.dumps(result))
        return 0
    if not args.checkpoint or not args.data:
        raise UsageError("give checkpoint(s) and --data DIR, or --fake DIR --real DIR")
    metrics = checkpoint_metrics(metrics, args.data)
    if "dcheck" in metrics:
        from .evaluation.d_check import d_check_markdown, discriminator_check, save_d_check
        checks = {str(c): discriminator_check(c, args.data, stage=args.stage, num_samples=args.num_samples or 500,
                                              seed=args.seed, device=device) for c in args.checkpoint}
        print(d_check_markdown(checks))
        for c, r in checks.items():
            print(f"report: {save_d_check(report_dir(c, args.out), r, args.stage)}")
        metrics = [m for m in metrics if m != "dcheck"]
        if not metrics:
            return 0
    results = {}
    for ckpt in args.checkpoint:
        result = evaluate_checkpoint(ckpt, args.data, metrics, num_samples=args.num_samples, seed=args.seed,
                                     out=args.out, inception_weights=args.inception_weights, device=device,
                                     retrain_checker=args.retrain_checker and not results)
        if result.generation_table is not None:
            print(result.generation_table)
        for extractor in result.extractors:
            print(f"extractor: {extractor}")  # names the Inception file and its SHA-256
        results[str(ckpt)] = result.metrics
    if len(results) > 1:
        print(side_by_side_markdown(results))
    print(json.dumps(results if len(results) > 1 else next(iter(results.values()))))
    return 0


def cmd_export(args) -> int:
    from .pipeline import StackGANPipeline

    pipe = StackGANPipeline.load(args.checkpoint)
    out = pipe.save_pretrained(args.out, half=args.half)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"Stage-{'I' * pipe.stage} model ({'float16' if args.half else 'float32'} weights) in {out}: {size:.1f} MiB")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.data, args.out, args.minutes)
    return 0


def cmd_text_encoder(args) -> int:
    from .text.char_cnn_rnn import train_char_cnn_rnn

    if args.te_command == "train":
        if not args.steps and not args.minutes:
            raise UsageError("give --steps or --minutes, or training never stops")
        out = train_char_cnn_rnn(args.data, args.out, steps=args.steps, minutes=args.minutes,
                                 batch_size=args.batch_size, embed_dim=args.embed_dim, lr=args.lr, seed=args.seed)
        meta = json.loads((out / "config.json").read_text())
        print(f"char-CNN-RNN in {out}: {meta['steps']} steps in {meta['seconds']:.0f} s, loss "
              f"{meta['loss_start']:.3f} (first {meta['loss_window']} steps) -> {meta['loss_end']:.3f} "
              f"(last {meta['loss_window']})")
        print(f"use it: --set data.text_encoder=char-cnn-rnn:{out}")
        return 0
    from .text.cache import embed_data
    for path in embed_data(args.encoder, args.data, overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0


def cmd_viz(args) -> int:
    from . import figures
    from .pipeline import StackGANPipeline
    from .text.captions import gather_captions

    if args.kind == "curves":
        print(f"wrote {figures.curves(args.checkpoint, args.out)}")
        return 0
    texts = gather_captions(args.texts, args.captions_file)
    if not texts:
        raise UsageError("give sentences (or --captions-file)")
    n = args.n if args.n is not None else (3 if args.kind == "nearest" else 6)
    if n < 1 or args.steps < 2:
        raise UsageError("--n must be >= 1 and --steps >= 2")
    pipe = StackGANPipeline.load(args.checkpoint)
    if args.kind == "ca":
        path = figures.ca_variations(pipe, texts, args.out, n=n, seed=args.seed, stage=args.stage)
    elif args.kind == "z":
        path = figures.z_variations(pipe, texts, args.out, n=n, seed=args.seed, stage=args.stage)
    elif args.kind == "interp":
        if len(texts) != 2:
            raise UsageError(f"interp needs exactly two sentences, got {len(texts)}")
        path = figures.interpolation(pipe, texts[0], texts[1], args.out, steps=args.steps, seed=args.seed,
                                     stage=args.stage)
    elif args.kind == "stages":
        path = figures.stages(pipe, texts, args.out, seed=args.seed)
    else:
        if not args.data:
            raise UsageError("nearest needs --data DIR (whose train images are searched)")
        path = figures.nearest(pipe, texts, args.data, args.out, k=n, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    if args.max_queue < 1:
        raise UsageError(f"--max-queue must be at least 1, got {args.max_queue}")
    serve(args.checkpoint, host=args.host, port=args.port, max_queue=args.max_queue, device=args.device,
          examples_file=args.examples, allowed_hosts=args.allowed_host)
    return 0
