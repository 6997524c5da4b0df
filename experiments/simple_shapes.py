"""Probe: does the GAN draw a shape when nothing but the shape varies?

``make`` writes a Shapes-format folder (not the Shapes contract: an experiment) in which every
object has one colour, size, texture, position and background, given by the options; the shape
(and the contract's rotation, radius within the size, jitter and noise) still varies, and so do
the attributes named by ``--vary``. Turn it into a one-hot condition with ``stackgan data
attributes``, train on it, and ``score`` a run's Stage I with the attribute checker of the real
Shapes set (these images are a corner of its distribution) on the folder's test conditions;
``--raw`` scores a state file's raw generator instead of its moving average. ``pose`` reads what
a layered generator's pose head does with the size and position of the condition; ``frames``
draws its frame masks per size and shape word.
docs/training-recipe.md, ninth and tenth rounds, report what they found.

    python experiments/simple_shapes.py make data/simple-raw
    stackgan data attributes data/simple-raw --out data/simple --foils 0
    stackgan train --stage 1 --data data/simple --out runs/exp/G1 --max-steps 3000 --minutes 0 \\
        --set data.text_encoder=precomputed --set stage1.match_weight=0
    python experiments/simple_shapes.py score runs/exp/G1 --data data/simple --checker data/shapes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from stackgan.data.shapes import ATTRIBUTES, SPLITS, render
from stackgan.data.shapes_text import make_caption


def make(out: Path, n_train: int, n_test: int, fixed: dict[str, str], rotate: bool, seed: int,
         vary: tuple[str, ...] = ()) -> None:
    for split, n in (("train", n_train), ("test", n_test)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        records = []
        for i in tqdm(range(n), desc=f"rendering {split}"):
            rng = np.random.default_rng((seed, SPLITS[split], i))
            attrs = {**fixed, "shape": ATTRIBUTES["shape"][int(rng.integers(4))]}
            for name in vary:  # uniform, as in the real set (held-out pairs aside)
                attrs[name] = ATTRIBUTES[name][int(rng.integers(len(ATTRIBUTES[name])))]
            attrs = {k: attrs[k] for k in ATTRIBUTES}  # the contract's attribute order
            rel = f"images/{split}/{i:05d}.png"
            Image.fromarray(render(attrs, rng, rotate)).save(out / rel, format="PNG", compress_level=1)
            records.append({"image": rel, "captions": [make_caption(attrs, rng, full=True)],
                            "full_caption": make_caption(attrs, rng, full=True), "attributes": attrs})
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    fixed = {k: v for k, v in fixed.items() if k not in vary}
    print(f"wrote {out}: {n_train} train, {n_test} test images; fixed {fixed}, varied {list(vary)}, "
          f"rotation {'on' if rotate else 'off'}")


def _load(run: Path, data: Path, raw: bool):
    """The folder's test records, the run's pipeline (its average, or with ``raw`` a state file's raw
    generator) and the one-hot condition of each test image, normalised as the run was trained."""
    from stackgan.data.manifest import read_manifest
    from stackgan.pipeline import StackGANPipeline
    from stackgan.text.cache import precomputed_embeddings

    records = read_manifest(data, "test")
    pipe = StackGANPipeline.from_state(run, raw=True) if raw else StackGANPipeline.load(run)
    emb, _ = precomputed_embeddings(data, "test", len(records))  # [N, 1, D]
    return records, pipe, pipe.text_norm(emb[:, 0])


@torch.no_grad()
def score(run: Path, data: Path, checker_dir: Path, seed: int, raw: bool = False,
          sheet: Path | None = None) -> dict[str, float]:
    from stackgan.evaluation.checker import WEIGHTS_NAME, load_checker, predict
    from stackgan.utils import from_uint8

    records, pipe, cond = _load(run, data, raw)
    images = pipe.generate(embeddings=cond, seed=seed, stage=1).stage1  # uint8 [N, 3, 64, 64]
    predicted = predict(load_checker(checker_dir / WEIGHTS_NAME, "cpu"), from_uint8(images))
    truth = torch.tensor([ATTRIBUTES["shape"].index(r["attributes"]["shape"]) for r in records])
    if sheet is not None:  # one row per shape word: its first 8 test conditions
        from torchvision.utils import save_image
        rows = [images[truth == k][:8] for k in range(len(ATTRIBUTES["shape"]))]
        save_image(torch.cat(rows).float() / 255, sheet, nrow=8, padding=2, pad_value=0.5)
    hits = predicted["shape"] == truth
    report = {"shape": round(hits.float().mean().item(), 3), "n": len(records)}
    # images that are not of the set at all (a condition written into the background, say): the
    # checker's background differs from the condition's
    bg = torch.tensor([ATTRIBUTES["background"].index(r["attributes"]["background"]) for r in records])
    right_bg = predicted["background"] == bg
    report["wrong_background"] = round(1 - right_bg.float().mean().item(), 3)
    if right_bg.any():  # shape accuracy over the images that are of the set
        report["shape_right_background"] = round(hits[right_bg].float().mean().item(), 3)
    sizes = [r["attributes"]["size"] for r in records]
    if len(set(sizes)) > 1:  # shape accuracy for each size word present
        for size in sorted(set(sizes), key=ATTRIBUTES["size"].index):
            chosen = torch.tensor([s == size for s in sizes])
            report[f"shape_{size}"] = round(hits[chosen].float().mean().item(), 3)
    # noise variety as `stackgan evaluate --metrics zvar` measures it: 8 noises for one condition of each
    # shape, the standard deviation of each pixel over the 8 (0-255 scale), averaged
    spreads = []
    for name in ATTRIBUTES["shape"]:
        first = next(i for i, r in enumerate(records) if r["attributes"]["shape"] == name)
        same = cond[[first] * 8]
        spreads.append(pipe.generate(embeddings=same, seed=seed, stage=1).stage1.float().std(0).mean().item())
    report["zvar"] = round(sum(spreads) / len(spreads), 1)
    for k, name in enumerate(ATTRIBUTES["shape"]):  # what the checker calls each true shape
        called = predicted["shape"][truth == k]
        report[name] = {other: round((called == j).float().mean().item(), 3)
                        for j, other in enumerate(ATTRIBUTES["shape"])}
    return report


def pose(run: Path, data: Path, seed: int, raw: bool = False, text: bool = False) -> dict:
    """What a layered run's pose head does with the condition (``model.g_layered``): the mean scale
    for each size word, the mean translation for each column and row, their correlations with the
    attributes, and how much of its frame the object's mask covers. ``text=True`` conditions on a
    caption naming all six attributes, encoded by the run's text encoder (the real Shapes);
    otherwise on the folder's one-hot test conditions."""
    from stackgan.data.manifest import read_manifest
    from stackgan.data.shapes_text import make_caption
    from stackgan.pipeline import StackGANPipeline

    if text:
        records = read_manifest(data, "test")
        pipe = StackGANPipeline.from_state(run, raw=True) if raw else StackGANPipeline.load(run)
        rng = np.random.default_rng(seed)
        emb = pipe.embed([make_caption(r["attributes"], rng, full=True) for r in records])
    else:
        records, pipe, emb = _load(run, data, raw)
    G = pipe.stage1_generator.eval()
    if getattr(G, "foreground", None) is None:
        raise SystemExit(f"{run}: not a layered generator (model.g_layered)")
    z = torch.randn(len(records), G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        zc = torch.cat([z, G.ca(emb)[0]], 1)
        p = G.foreground.pose_params(zc, emb)
        frame_cover = G.foreground.canvas(zc)[1].mean(dim=(1, 2, 3))  # [N]: the mask's share of the frame
    scale = (p[:, 0] + G.foreground.log_scale0).exp().numpy()
    t = {"x": p[:, 2].numpy(), "y": p[:, 3].numpy()}
    attrs = [r["attributes"] for r in records]
    size = np.array([ATTRIBUTES["size"].index(a["size"]) for a in attrs])
    side = {"x": np.array([-1 if "left" in a["position"] else 1 if "right" in a["position"] else 0 for a in attrs]),
            "y": np.array([-1 if "top" in a["position"] else 1 if "bottom" in a["position"] else 0 for a in attrs])}

    def corr(u: np.ndarray, v: np.ndarray) -> float | None:
        return round(float(np.corrcoef(u, v)[0, 1]), 2) if u.std() > 0 and v.std() > 0 else None

    report = {"scale": {w: round(float(scale[size == k].mean()), 3) for k, w in enumerate(ATTRIBUTES["size"])
                        if (size == k).any()},
              "frame_cover": {w: round(float(frame_cover[torch.from_numpy(size == k)].mean()), 3)
                              for k, w in enumerate(ATTRIBUTES["size"]) if (size == k).any()},
              "corr_scale_size": corr(scale, size)}
    for axis in ("x", "y"):
        report[f"t{axis}"] = {str(v): round(float(t[axis][side[axis] == v].mean()), 3) for v in (-1, 0, 1)
                              if (side[axis] == v).any()}
        report[f"corr_t{axis}"] = corr(t[axis], side[axis])
    return report


@torch.no_grad()
def frames(run: Path, data: Path, out: Path, seed: int, raw: bool = False, noises: int = 6) -> None:
    """Save what a layered run's frame draws before it is placed: the canvas mask for the first test
    condition of each (size, shape word), ``noises`` noises each, one row per pair (sizes small to
    large, shapes in the contract's order)."""
    from torchvision.utils import save_image

    records, pipe, cond = _load(run, data, raw)
    G = pipe.stage1_generator.eval()
    if getattr(G, "foreground", None) is None:
        raise SystemExit(f"{run}: not a layered generator (model.g_layered)")
    z = torch.randn(noises, G.z_dim, generator=torch.Generator().manual_seed(seed))
    rows = []
    for size in ATTRIBUTES["size"]:
        for shape in ATTRIBUTES["shape"]:
            first = next((i for i, r in enumerate(records) if r["attributes"]["shape"] == shape
                          and r["attributes"]["size"] == size), None)
            if first is not None:
                zc = torch.cat([z, G.ca(cond[[first] * noises])[0]], 1)
                rows.append(G.foreground.canvas(zc)[1].expand(-1, 3, -1, -1))  # [noises, 3, 32, 32]
    save_image(torch.cat(rows), out, nrow=noises, padding=1, pad_value=0.5)
    print(f"wrote {out}: {len(rows)} rows (size x shape word), {noises} noises each")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write the folder")
    m.add_argument("out", type=Path)
    m.add_argument("--train", type=int, default=10000)
    m.add_argument("--test", type=int, default=400)
    for name, default in (("color", "red"), ("size", "large"), ("texture", "solid"), ("position", "center"),
                          ("background", "white")):
        m.add_argument(f"--{name}", default=default, choices=ATTRIBUTES[name])
    m.add_argument("--vary", default="", help="comma-separated attributes that vary too, e.g. position,size")
    m.add_argument("--no-rotate", action="store_true", help="every object upright (theta = 0)")
    m.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="shape accuracy of a run's Stage I on the folder's test captions")
    s.add_argument("run", type=Path)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--checker", type=Path, default=Path("data/shapes"), help="a Shapes folder with its checker")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--raw", action="store_true", help="RUN is a state file: score its raw generator, not its average")
    s.add_argument("--sheet", type=Path, help="also save the images of the first 8 test conditions of each shape word "
                   "(one row per word: circle, square, triangle, star) to this PNG")
    q = sub.add_parser("pose", help="what a layered run's pose head does with size and position")
    q.add_argument("run", type=Path)
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--raw", action="store_true", help="RUN is a state file: its raw generator, not its average")
    q.add_argument("--text", action="store_true", help="condition on full captions through the run's text encoder "
                   "(the real Shapes) instead of the folder's one-hot conditions")
    f = sub.add_parser("frames", help="save a layered run's frame masks per size and shape word to a PNG")
    f.add_argument("run", type=Path)
    f.add_argument("--data", type=Path, required=True)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--raw", action="store_true", help="RUN is a state file: its raw generator, not its average")
    a = p.parse_args()
    if a.cmd == "make":
        fixed = {k: getattr(a, k) for k in ("color", "size", "texture", "position", "background")}
        vary = tuple(v for v in a.vary.split(",") if v)
        if unknown := set(vary) - set(fixed):
            p.error(f"--vary: unknown attribute(s) {sorted(unknown)}; choose from {sorted(fixed)}")
        make(a.out, a.train, a.test, fixed, not a.no_rotate, a.seed, vary)
    elif a.cmd == "frames":
        frames(a.run, a.data, a.out, a.seed, a.raw)
    elif a.cmd == "pose":
        print(json.dumps(pose(a.run, a.data, a.seed, a.raw, a.text)))
    else:
        print(json.dumps(score(a.run, a.data, a.checker, a.seed, a.raw, a.sheet)))


if __name__ == "__main__":
    main()
