"""A texture critic: a small conditional discriminator that sees only a patch at the object's centre
(``stage<N>.patch_weight``; not in the paper).

The whole-image discriminator and the frozen matcher both judge the object's texture among everything
else in the image, and a pattern that merely ranks the right texture word first satisfies the matcher
(docs/training-recipe.md, twenty-sixth round: a lattice of short dashes drawn for both "dotted" and
"striped"). This critic sees a ``size`` x ``size`` patch cut at the object's centre, real or generated,
with the sentence, and learns (hinge loss, spectral norm) what real insides look like for that sentence:
(real patch, its caption) is real; (real patch, a wrong caption: with ``data.swap_attribute`` the same
caption with the texture word swapped) and (generated patch, its caption) are fake. Its features are
averaged over the patch, so it judges the pattern's local statistics, not where the patch was cut.

The object's centre is found in the image itself, the same way for real and generated images: the pixels
that differ from their row's median colour (Shapes draws one object over a background that is constant
along each row). On photos without such a background the patch falls on whatever differs most from the
rows' median, near the image's middle.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

OBJECT_THRESHOLD = 0.15  # an object pixel differs from its row's median by this much in some channel ([-1, 1] units)


def off_background(images: torch.Tensor, threshold: float, border: int = 0) -> torch.Tensor:
    """Boolean ``[B, H, W]``: the pixels of ``images [B, 3, H, W]`` (in [-1, 1]) that differ by more than
    ``threshold`` in some channel from their row's background colour, the median of the row (``border=0``) or
    of its ``border`` outer columns on each side. Shapes draws one object over a background that is constant
    along each row; this rule finds the object for the texture critic and for the outline judge."""
    x = images.float()
    row = x if border == 0 else torch.cat([x[..., :border], x[..., -border:]], dim=-1)
    background = row.median(dim=-1, keepdim=True).values  # [B, 3, H, 1]
    return (x - background).abs().amax(1) > threshold


@torch.no_grad()
def object_centres(images: torch.Tensor, threshold: float = OBJECT_THRESHOLD) -> torch.Tensor:
    """The centre ``[B, 2]`` (x, y in pixels) of the pixels of ``images [B, 3, H, W]`` (in [-1, 1]) that differ
    from their row's median colour by more than ``threshold`` in some channel; the image's middle where none do."""
    x = images.float()
    mask = off_background(x, threshold).float()  # [B, H, W]
    h, w = mask.shape[-2:]
    ys = torch.arange(h, device=x.device, dtype=torch.float32)
    xs = torch.arange(w, device=x.device, dtype=torch.float32)
    area = mask.sum((1, 2))  # [B]
    cx = (mask.sum(1) * xs).sum(1) / area.clamp(min=1)
    cy = (mask.sum(2) * ys).sum(1) / area.clamp(min=1)
    middle = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=x.device)
    centre = torch.stack([cx, cy], 1)  # [B, 2]
    return torch.where((area > 0)[:, None], centre, middle)


def cut_patches(images: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """``images [B, C, H, W]`` cut to ``[B, C, size, size]`` around ``centres [B, 2]`` (x, y; rounded to whole pixels,
    the patch kept inside the image). One indexing on the device (no wait for it); it keeps the graph: a loss on a
    patch reaches the pixels it shows."""
    h, w = images.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"a {size} px patch does not fit in a {h}x{w} image")
    top_left = centres.round().long() - size // 2  # [B, 2]
    offsets = torch.arange(size, device=images.device)
    cols = top_left[:, 0].clamp(0, w - size)[:, None] + offsets  # [B, s]
    rows = top_left[:, 1].clamp(0, h - size)[:, None] + offsets  # [B, s]
    batch = torch.arange(len(images), device=images.device)[:, None, None]
    return images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [B, s, s, C] -> [B, C, s, s]


class PatchCritic(nn.Module):
    """``critic(patch [B, 3, s, s], text [B, text_dim]) -> [B]``: a projection discriminator (Miyato & Koyama, 2018)
    on a patch. Four spectrally normalised convolutions (the second and third at stride 2), LeakyReLU, the
    features averaged over the patch to ``f [B, 4w]``; the score is ``linear(f) + <embed(text), f>``."""

    def __init__(self, text_dim: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            spectral_norm(nn.Conv2d(3, w, 3, 1, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2),
        )
        self.out = spectral_norm(nn.Linear(4 * w, 1))
        self.embed = spectral_norm(nn.Linear(text_dim, 4 * w))

    def forward(self, patch: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        f = self.features(patch.float()).mean((2, 3))  # [B, 4w]
        return self.out(f)[:, 0] + (self.embed(text.float()) * f).sum(1)  # [B]


def wrong_texts(text: torch.Tensor, wrong: torch.Tensor,
                swaps: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The critic's wrong caption for each row ``[B, D]``: with the word swaps (``swaps [B, V, D]``, ``named [B]``)
    the same caption with its texture word swapped for another texture, drawn at random, where the caption names
    one; ``wrong``'s row elsewhere."""
    if swaps is None:
        return wrong
    swapped, named = swaps
    v = swapped.shape[1]
    other = (named.clamp(min=0) + torch.randint(1, v, named.shape, device=named.device)) % v  # [B], never `named`
    picked = swapped[torch.arange(len(named), device=named.device), other]  # [B, D]
    return torch.where((named >= 0)[:, None], picked, wrong)


def critic_d_loss(critic: PatchCritic, real: torch.Tensor, fake: torch.Tensor, text: torch.Tensor,
                  wrong: torch.Tensor, r1: float = 0.0) -> torch.Tensor:
    """The critic's matching-aware hinge loss on real patches ``real``, generated ones ``fake`` (detached) and the
    captions ``text`` / ``wrong`` (``[B, D]``): (real, text) -> real; (real, wrong) and (fake, text) -> fake, half each.
    ``r1 > 0`` adds ``r1 / 2`` times R1 (Mescheder et al., 2018): the batch mean of the squared norm of the gradient
    of the (real, text) scores with respect to the real patches, with its graph (a critic kept from growing sharp
    around the real patches keeps telling G which way is real). The three pairs are scored in one call (a
    data-parallel critic runs one forward pass per backward)."""
    b = len(real)
    real = real.detach().requires_grad_(r1 > 0)
    scores = critic(torch.cat([real, real, fake.detach()]), torch.cat([text, wrong, text]))  # [3B]
    real_loss = F.relu(1 - scores[:b]).mean()
    wrong_loss = F.relu(1 + scores[b:2 * b]).mean()
    fake_loss = F.relu(1 + scores[2 * b:]).mean()
    loss = real_loss + 0.5 * (wrong_loss + fake_loss)
    if r1 > 0:
        (grad,) = torch.autograd.grad(scores[:b].sum(), real, create_graph=True)
        loss = loss + r1 / 2 * grad.square().sum((1, 2, 3)).mean()
    return loss
