"""Stage I: a rough 64x64 image from the sentence embedding and noise."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import (ConditionalHead, DownBlock, FusionUpBlock, MinibatchStd, UpBlock, conv3x3, init_weights,
                     run_up_path)
from .conditioning import ConditioningAugmentation
from .layered import BACKGROUNDS, ForegroundLayer, SmoothBackground
from ..errors import ConfigError
from .output import GeneratorOutput


class Bottleneck(nn.Module):
    """TF Stage-I residual bottleneck: 1x1 conv to ``ch/4``, 3x3 conv, 3x3 conv back to ``ch`` (BN
    after each, ReLU between), added to the input, ReLU."""

    def __init__(self, ch: int):
        super().__init__()
        mid = max(1, ch // 4)
        self.body = nn.Sequential(
            nn.Conv2d(ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            conv3x3(mid, mid), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            conv3x3(mid, ch), nn.BatchNorm2d(ch),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Stage1Generator(nn.Module):
    """``cat(z, c)`` -> FC to ``8ngf x 4 x 4`` -> four up-blocks -> 3x3 conv -> tanh (64x64).

    ``fusion=True`` (not in the paper): every up-block is modulated by ``cat(z, c)``
    (:class:`~stackgan.models.blocks.CondAffine` after its BatchNorm, starting as the identity),
    so the sentence shapes every resolution, not only the 4x4 input (DF-GAN's deep fusion).

    ``variant="pt"`` is the PyTorch code's (and this page's) layout. ``variant="tf"`` is the TF
    code's: residual bottlenecks at 4x4 and 8x8, and no ``ngf/2`` layer at 64x64 (the last
    up-sampling goes straight to the RGB conv). ``variant="dfgan"`` (not in the paper) has no
    BatchNorm anywhere: the FC, then four :class:`~stackgan.models.blocks.FusionUpBlock` (DF-GAN's
    residual blocks, every one modulated by ``cat(z, c)``), then LeakyReLU, 3x3 conv, tanh; PyTorch's
    default initialisation (DF-GAN's), the modulations starting as the identity. ``fusion`` is
    implied. ``coords=True`` (not in the paper) gives every up-block of ``pt`` and ``tf`` two
    coordinate channels (:class:`~stackgan.models.blocks.UpBlock`). ``layered=True`` (not in the paper;
    LR-GAN) makes that path the background and adds a :class:`~stackgan.models.layered.ForegroundLayer`:
    an object drawn in its own frame from ``cat(z, c)`` and placed over it by a predicted affine transform;
    ``canvas`` ("conv" or "mlp") says how that frame is drawn. ``background="smooth"`` (with ``layered``)
    replaces the usual path by a :class:`~stackgan.models.layered.SmoothBackground`, which cannot draw the
    object, so that the layer has to (``"vertical"``: one that changes only from top to bottom; ``"ramp"``:
    a top and a bottom colour with a linear ramp between them);
    ``spin=True`` turns the layer's object by the angle of z's first two dimensions as well (every
    rotation, without learning to vary it); ``taper=True`` keeps the
    canvas's edge out of the image; ``normalize=True`` places the canvas's object by its own centre and
    RMS radius, so that only the pose sets where it goes and how large it is; ``templates=K`` mixes the
    object's mask from K learned templates; ``pose_hidden=H`` gives the pose head a hidden layer, and
    ``pose_text=True`` lets it read the sentence embedding ``emb`` itself.

    Example::

        g = Stage1Generator(text_dim=384, ngf=32)
        out = g(torch.randn(2, 100), torch.randn(2, 384))  # GeneratorOutput; out.image [2, 3, 64, 64]
    """

    recompute_blocks = 0  # training: the last N up-blocks recompute their activations (run_up_path)

    def __init__(self, text_dim: int, ngf: int = 128, z_dim: int = 100, cond_dim: int = 128,
                 ca_variant: str = "pt", variant: str = "pt", fusion: bool = False, coords: bool = False,
                 layered: bool = False, canvas: str = "conv", background: str = "full",
                 spin: bool = False, taper: bool = False, scale0: float = 0.35, normalize: bool = False,
                 templates: int = 0, pose_hidden: int = 0, pose_text: bool = False, anchors: int = 0,
                 round_frame: bool = False, radial: int = 0, anchor_sample: bool = False, pattern: int = 0,
                 sides: bool = False, cells: int = 0, sizes: int = 0, pattern_pairs: bool = False,
                 textures: int = 0, pattern_waves: str = "", pattern_text: bool = False,
                 pattern_inset: float = 0.0):
        super().__init__()
        if background not in BACKGROUNDS:
            raise ConfigError(f"the layered generator's background must be one of {', '.join(BACKGROUNDS)}, "
                              f"got {background!r}")
        if any((spin, taper, round_frame, radial, pattern, pattern_text, sides, cells, sizes, textures, normalize,
                templates, pose_hidden, pose_text, anchors, anchor_sample)) and not layered:
            raise ConfigError("model.g_layer_spin, g_layer_taper, g_layer_round, g_layer_radial, g_layer_pattern, "
                              "g_layer_pattern_text, g_layer_sides, g_layer_cells, g_layer_sizes, g_layer_textures, "
                              "g_layer_normalize, g_layer_templates, g_layer_pose_hidden, g_layer_pose_text, "
                              "g_layer_anchors and g_layer_anchor_sample need the layered generator "
                              "(model.g_layered=true)")
        if background != "full" and not layered:
            raise ConfigError("a smooth background (model.g_layer_background) needs the layered generator "
                              "(model.g_layered=true)")
        if variant not in ("pt", "tf", "dfgan"):
            raise ConfigError(f"Stage-I generator variant must be 'pt', 'tf' or 'dfgan', got {variant!r}")
        if ngf % 2:
            raise ConfigError(f"Stage-I ngf must be even (the last block has ngf/2 channels), got {ngf}")
        if coords and background != "full":
            raise ConfigError("coordinate channels (model.g_coords) act on the up-sampling path, which a smooth "
                              "background (model.g_layer_background=smooth, vertical or ramp) removes; set one of them off")
        if coords and variant == "dfgan":
            raise ConfigError("coordinate channels (model.g_coords) are for the 'pt' and 'tf' generators, not 'dfgan'")
        fusion = fusion or variant == "dfgan"
        self.z_dim, self.ngf, self.fusion = z_dim, ngf, fusion
        k = z_dim + cond_dim if fusion else 0  # the modulating condition: cat(z, c)
        self.ca = ConditioningAugmentation(text_dim, cond_dim, ca_variant)
        self.foreground = (ForegroundLayer(z_dim + cond_dim, ngf, k, scale0=scale0, canvas=canvas, spin=spin,
                                           taper=taper, normalize=normalize, templates=templates,
                                           pose_hidden=pose_hidden, pose_text=text_dim if pose_text else 0,
                                           anchors=anchors, round_frame=round_frame, radial=radial,
                                           anchor_sample=anchor_sample, pattern=pattern, pattern_pairs=pattern_pairs,
                                           sides=text_dim if sides else 0, cells=cells, cell_text=text_dim,
                                           sizes=sizes, textures=textures,
                                           pattern_waves=pattern_waves,
                                           pattern_text=text_dim if pattern_text else 0,
                                           pattern_inset=pattern_inset)
                           if layered else None)
        self.background = (SmoothBackground(z_dim + cond_dim, columns=1 if background == "vertical" else None,
                                            ramp=background == "ramp")
                           if background != "full" else None)
        if self.background is not None:  # no usual path: the layer draws the object over a smooth background
            init_weights(self)
            self.foreground.start_upright()
            return
        if variant == "dfgan":
            self.fc = nn.Linear(z_dim + cond_dim, 8 * ngf * 4 * 4)
            widths = (8 * ngf, 4 * ngf, 2 * ngf, ngf, ngf // 2)  # 4 -> 8 -> 16 -> 32 -> 64
            self.up = nn.Sequential(*[FusionUpBlock(a, b, k) for a, b in zip(widths[:-1], widths[1:])])
            self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), conv3x3(ngf // 2, 3, bias=True), nn.Tanh())
            return
        self.fc = nn.Sequential(
            nn.Linear(z_dim + cond_dim, 8 * ngf * 4 * 4, bias=False),
            nn.BatchNorm1d(8 * ngf * 4 * 4),
            nn.ReLU(inplace=True),
        )
        if variant == "pt":
            self.up = nn.Sequential(
                UpBlock(8 * ngf, 4 * ngf, k, coords),  # 8
                UpBlock(4 * ngf, 2 * ngf, k, coords),  # 16
                UpBlock(2 * ngf, ngf, k, coords),  # 32
                UpBlock(ngf, ngf // 2, k, coords),  # 64
            )
            self.to_rgb = nn.Sequential(conv3x3(ngf // 2, 3), nn.Tanh())
        else:
            self.up = nn.Sequential(
                Bottleneck(8 * ngf),  # 4
                UpBlock(8 * ngf, 4 * ngf, k, coords), Bottleneck(4 * ngf),  # 8
                UpBlock(4 * ngf, 2 * ngf, k, coords),  # 16
                UpBlock(2 * ngf, ngf, k, coords),  # 32
                nn.Upsample(scale_factor=2, mode="nearest"),  # 64
            )
            self.to_rgb = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())
        init_weights(self)
        if self.foreground is not None:
            self.foreground.start_upright()

    def forward(self, z: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None) -> GeneratorOutput:
        c, mu, logvar = self.ca(emb, eps)  # [B, cond]
        zc = torch.cat([z, c], dim=1)  # [B, z + cond]
        if self.background is not None:
            img = self.foreground(zc, self.background(zc), emb)  # [B, 3, 64, 64]
            return GeneratorOutput(img, img, mu, logvar)
        h = self.fc(zc).view(-1, 8 * self.ngf, 4, 4)  # [B, 8ngf, 4, 4]
        img = run_up_path(self.up, self.to_rgb, h, self.recompute_blocks, zc if self.fusion else None)  # [B, 3, 64, 64]
        if self.foreground is not None:
            img = self.foreground(zc, img, emb)  # the object placed over the background
        return GeneratorOutput(img, img, mu, logvar)  # Stage I: its image is also the low-resolution one

    def render(self, z: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None,
               size: int = 256, own_pattern: nn.Module | None = None, sharp: bool = False) -> torch.Tensor:
        """The layered scene over its smooth background (``model.g_layer_background=smooth``, ``vertical`` or ``ramp``)
        drawn again at ``size x size`` pixels ``[B, 3, size, size]``: the same background, object, pose and
        pattern as :meth:`forward`'s 64 px image, sampled at the finer grid (the pattern and the placement
        are functions of the image's coordinates, so stripes stay as sharp as the pixels allow; the object's
        canvas is still its 32 x 32 one). ``model.stage2_render``; ``own_pattern``: the pattern drawn by that
        copy (:class:`~stackgan.models.layered.StagePattern`, ``model.stage2_pattern``) instead of Stage I's;
        ``sharp``: the radial outline drawn from its curve at ``size`` px (``model.stage2_sharp``)."""
        if self.background is None:
            raise ValueError("render draws the layered object over its smooth background at another size; this "
                             "Stage I has none (model.g_layered with model.g_layer_background=smooth, vertical or ramp)")
        c = self.ca(emb, eps)[0]
        zc = torch.cat([z, c], dim=1)
        return self.foreground(zc, self.background(zc, size), emb, own_pattern, sharp)


class Stage1Discriminator(nn.Module):
    """64x64 image -> ``8ndf x 4 x 4`` code; the matching-aware head scores it with the text.

    ``text_path="mu"`` (PT): the text code is the generator's CA mean, passed in detached.
    ``text_path="fc"`` (TF): D compresses the raw embedding with its own FC + LeakyReLU.
    ``uncond_head=True`` (not in the paper; StackGAN++'s joint loss) adds an image-only head that
    judges realism alone, beside the matching-aware one. ``mbstd=True`` (not in the paper; Karras et al.,
    ICLR 2018) appends the minibatch standard-deviation feature to the 4x4 code, so that D can tell a
    batch of near-copies (a generator that ignores z) from a batch of real images. ``info_codes=K``
    (not in the paper; InfoGAN, Chen et al., NeurIPS 2016) adds a head that reads the first ``K``
    dimensions of G's z back from the 4x4 code (:meth:`info`).
    """

    def __init__(self, text_dim: int, ndf: int = 64, cond_dim: int = 128, text_path: str = "mu",
                 head_kernel: int = 3, projection: bool = False, uncond_head: bool = False, mbstd: bool = False,
                 info_codes: int = 0, stem: bool = False, deep: bool = False):
        super().__init__()
        first = [nn.Conv2d(3, ndf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), DownBlock(ndf, ndf, bn=False)] if stem \
            else [DownBlock(3, ndf, bn=False)]  # 64 -> 32
        self.encode = deep_encoder(ndf) if deep else nn.Sequential(
            *first,  # 32
            DownBlock(ndf, 2 * ndf),  # 16
            DownBlock(2 * ndf, 4 * ndf),  # 8
            DownBlock(4 * ndf, 8 * ndf),  # 4
        )
        self.mbstd = MinibatchStd() if mbstd else None
        code = 8 * ndf + (1 if mbstd else 0)
        self.text = make_text_path(text_path, text_dim, cond_dim)
        self.cond_head = ConditionalHead(code, cond_dim, head_kernel, projection)
        self.uncond_head = ConditionalHead(code, 0) if uncond_head else None
        self.info_head = nn.Sequential(nn.Conv2d(code, code, 1), nn.LeakyReLU(0.2, inplace=True), nn.Flatten(),
                                       nn.Linear(code * 16, info_codes)) if info_codes else None
        init_weights(self)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h = self.encode(img)  # [B, 8ndf, 4, 4]
        return h if self.mbstd is None else self.mbstd(h)  # [B, 8ndf (+1), 4, 4]

    def cond_logits(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.cond_head(h, self.text(text))  # [B]

    def uncond_logits(self, h: torch.Tensor) -> torch.Tensor | None:
        return None if self.uncond_head is None else self.uncond_head(h)  # [B]

    def info(self, h: torch.Tensor) -> torch.Tensor | None:
        """The latent codes read back from the 4x4 code ``[B, K]`` (None without an info head)."""
        return None if self.info_head is None else self.info_head(h)


def deep_encoder(ndf: int) -> nn.Sequential:
    """64 px image -> ``[B, 8ndf, 4, 4]`` by the attribute checker's layout (stackgan.evaluation.checker)
    with fresh weights and no BatchNorm: enlarged to 128 px, a 4x4 stride-2 stem, three 3x3 stride-2
    convs and a 3x3 stride-1 one at 8x8 (widths ndf, 2, 4, 6, 8 ndf), ReLU, then a 2x2 average."""
    widths, layers, cin = (ndf, 2 * ndf, 4 * ndf, 6 * ndf, 8 * ndf), [nn.Upsample(size=128, mode="bilinear")], 3
    for i, (w, stride) in enumerate(zip(widths, (2, 2, 2, 2, 1))):
        k = 4 if i == 0 else 3
        layers += [nn.Conv2d(cin, w, k, stride, 1, bias=False), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers, nn.AvgPool2d(2))  # [B, 8ndf, 4, 4]


def make_text_path(kind: str, text_dim: int, cond_dim: int) -> nn.Module:
    if kind == "mu":
        return nn.Identity()
    if kind == "fc":
        return nn.Sequential(nn.Linear(text_dim, cond_dim), nn.LeakyReLU(0.2, inplace=True))
    raise ConfigError(f"discriminator text_path must be 'mu' or 'fc', got {kind!r}")
