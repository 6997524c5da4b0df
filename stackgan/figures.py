"""The paper's figures as PNG sheets (``stackgan viz``), captions written under the images.

- ``ca``: fixed sentence and z, several draws of the Conditioning Augmentation sample (the
  paper's "CA variation" figure): what the text alone allows.
- ``z``: fixed sentence and CA sample, several z.
- ``interp``: two sentences, their embeddings mixed linearly in several steps, z and CA sample fixed.
- ``stages``: Stage I above Stage II for the same sentences and noise.
- ``nearest``: each generated image beside its nearest training images (pixel space, 64 px),
  to show the model does not copy its training set.
- ``curves``: the run's logged losses (D real / wrong / fake, G, KL, ...) over steps.

Example::

    pipe = StackGANPipeline.load("runs/demo")
    ca_variations(pipe, ["a red circle on a white background"], "out/ca.png")
"""
from __future__ import annotations

from pathlib import Path

import torch

from .pipeline import StackGANPipeline
from .viz import caption_sheet, stage_sheet


def _draw(pipe: StackGANPipeline, emb, z, eps1, eps2, stage: int | None) -> torch.Tensor:
    """The highest stage's images asked for (``stage``, default: the model's)."""
    return pipe.draw(emb, z, eps1, eps2, stage, batch_size=32).images


def _noise(pipe: StackGANPipeline, seed: int):
    z, e1, e2 = pipe.noise([seed])
    return z[0], e1[0], e2[0]


def _cell(stage_images: torch.Tensor) -> int:
    return 128 if stage_images.shape[-1] <= 64 else 256


def ca_variations(pipe, captions: list[str], path, n: int = 6, seed: int = 0, stage: int | None = None) -> Path:
    """Columns: sentences; rows: ``n`` CA samples with z fixed (z of ``seed``, CA of ``seed + 1 + k``)."""
    emb = pipe.embed(captions)
    z = _noise(pipe, seed)[0]
    columns = []
    for j in range(len(captions)):
        eps = [_noise(pipe, seed + 1 + k) for k in range(n)]
        imgs = _draw(pipe, emb[j].expand(n, -1), z.expand(n, -1), torch.stack([e[1] for e in eps]),
                     torch.stack([e[2] for e in eps]), stage)
        columns.append(list(imgs))
    return caption_sheet(columns, captions, path, cell=_cell(imgs), labels=[f"CA {k + 1}" for k in range(n)])


def z_variations(pipe, captions: list[str], path, n: int = 6, seed: int = 0, stage: int | None = None) -> Path:
    """Columns: sentences; rows: ``n`` z (of ``seed + 1 + k``) with the CA sample of ``seed`` fixed."""
    emb = pipe.embed(captions)
    _, e1, e2 = _noise(pipe, seed)
    columns = []
    for j in range(len(captions)):
        zs = torch.stack([_noise(pipe, seed + 1 + k)[0] for k in range(n)])
        imgs = _draw(pipe, emb[j].expand(n, -1), zs, e1.expand(n, -1), e2.expand(n, -1), stage)
        columns.append(list(imgs))
    return caption_sheet(columns, captions, path, cell=_cell(imgs), labels=[f"z {k + 1}" for k in range(n)])


def interpolation(pipe, first: str, second: str, path, steps: int = 7, seed: int = 0,
                  stage: int | None = None) -> Path:
    """One row: the (normalized) embedding moving linearly from ``first`` to ``second``."""
    a, b = pipe.embed([first, second])
    ts = torch.linspace(0, 1, steps)
    emb = (1 - ts)[:, None] * a + ts[:, None] * b  # [steps, D]
    z, e1, e2 = _noise(pipe, seed)
    imgs = _draw(pipe, emb, z.expand(steps, -1), e1.expand(steps, -1), e2.expand(steps, -1), stage)
    labels = [f"t={t:.2f}" + (f": {first}" if i == 0 else f": {second}" if i == steps - 1 else "")
              for i, t in enumerate(ts.tolist())]
    return caption_sheet([[im] for im in imgs], labels, path, cell=_cell(imgs))


def stages(pipe, captions: list[str], path, seed: int = 0) -> Path:
    """Stage I above Stage II (when the model has it) for each sentence, the same noise."""
    out = pipe.generate(captions, seed=seed)
    return stage_sheet(out, captions, path, cell=_cell(out.images))


def nearest(pipe, captions: list[str], data_dir, path, k: int = 3, seed: int = 0) -> Path:
    """Each generated image (64 px Stage I, or Stage II area-reduced to 64) above its ``k`` nearest
    training images by mean squared pixel distance at 64 px."""
    from .data.manifest import load_images, read_manifest
    import torch.nn.functional as F
    fake = pipe.generate(captions, seed=seed).images
    fake64 = F.interpolate(fake.float(), size=64, mode="area") if fake.shape[-1] != 64 else fake.float()
    train = load_images(data_dir, "train", read_manifest(data_dir, "train"), 64, progress=False)
    best_d = torch.full((len(fake), k), float("inf"))
    best_i = torch.zeros((len(fake), k), dtype=torch.long)
    flat = fake64.flatten(1)  # [n, 3*64*64]
    for s in range(0, len(train), 2048):
        chunk = torch.as_tensor(train[s:s + 2048]).float().flatten(1)
        d = torch.cdist(flat, chunk)  # [n, c]
        d_all = torch.cat([best_d, d], 1)
        i_all = torch.cat([best_i, torch.arange(s, s + len(chunk)).expand(len(fake), -1)], 1)
        best_d, pos = d_all.topk(k, dim=1, largest=False)
        best_i = i_all.gather(1, pos)
    columns = [[fake64[j].round().to(torch.uint8)] + [torch.as_tensor(train[i]) for i in best_i[j].tolist()]
               for j in range(len(fake))]
    return caption_sheet(columns, captions, path, cell=128,
                         labels=["generated"] + [f"nearest {r + 1}" for r in range(k)])


def curves(run_dir, path) -> Path:
    """Loss curves of every stage of a run from its TensorBoard logs (one panel per stage)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from .utils import atomic_path
    run_dir = Path(run_dir)
    stages_found = [s for s in (1, 2) if (run_dir / f"stage{s}" / "tb").is_dir()]
    if not stages_found:
        raise FileNotFoundError(f"{run_dir}: no stage1/tb or stage2/tb logs (a run folder of `stackgan train`)")
    fig, axes = plt.subplots(1, len(stages_found), figsize=(7 * len(stages_found), 4.5), squeeze=False)
    for ax, s in zip(axes[0], stages_found):
        acc = EventAccumulator(str(run_dir / f"stage{s}" / "tb"))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(("D/", "G/")) and tag != "D/total":
                ev = acc.Scalars(tag)
                if any(e.value != 0 for e in ev):
                    ax.plot([e.step for e in ev], [e.value for e in ev], label=tag)
        ax.set_title(f"Stage {'I' if s == 1 else 'II'}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
