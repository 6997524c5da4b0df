"""Stage II: a detailed 256x256 image from the Stage-I image and the same text."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConditionalHead, DownBlock, ResBlock, UpBlock, conv3x3, init_weights, run_up_path
from .conditioning import ConditioningAugmentation
from .layered import StagePattern
from .stage1 import Stage1Generator, make_text_path
from ..errors import ConfigError
from .output import GeneratorOutput


class Stage2Generator(nn.Module):
    """Frozen Stage I (same z) -> encoder to 16x16 -> join with its own CA code -> residual
    blocks -> four up-blocks -> 256x256.

    Stage I stays in eval mode and receives no gradient: Stage II trains only its own layers.
    ``fusion=True`` (not in the paper): its up-blocks are modulated by ``cat(z, c)`` as in
    :class:`Stage1Generator`. ``image_skip=True`` (not in the paper) adds the last conv's output to the 4x-upsampled Stage-I
    image before the tanh (in its pre-activation), so an untrained Stage II already reproduces
    Stage I and training only has to add detail: useful when Stage II gets minutes, not days.
    ``render=True`` (with ``image_skip`` and a layered Stage I over a smooth background) starts from
    Stage I's scene drawn again at 256 px (:meth:`Stage1Generator.render`) instead of its 64 px image
    enlarged: the object's pattern (stripes, dots) is a function of the image's coordinates, and
    enlarging the 64 px image blurs what drawing it at 256 px keeps sharp. ``pattern=True`` (with ``render``)
    draws that scene's pattern with Stage II's own copy of Stage I's pattern head and waves
    (:class:`~stackgan.models.layered.StagePattern`, started as Stage I's by :meth:`start_pattern`), which Stage
    II trains: the texture can change at 256 px while the outline, colour and place stay Stage I's.
    ``sharp=True`` (with ``render`` and a radial outline) draws that scene's object mask from the outline's curve at
    256 px, its edge about one pixel wide (:meth:`~stackgan.models.layered.ForegroundLayer.sharp_mask`).
    ``masked=True`` (with ``image_skip`` and a layered Stage I) lets Stage II change only the pixels near
    Stage I's object: its output is added through Stage I's placed mask, widened by ``mask_grow`` pixels at
    64 px and enlarged to 256 px, so the background stays exactly Stage I's and Stage II's layers spend
    themselves on the object's pattern and edges.

    Example::

        g1 = Stage1Generator(text_dim=384, ngf=32)
        g2 = Stage2Generator(g1, ngf=32)
        low, high, mu, logvar = g2(torch.randn(2, 100), torch.randn(2, 384))  # GeneratorOutput; high [2, 3, 256, 256]
    """

    recompute_blocks = 0  # training: the last N up-blocks recompute their activations (run_up_path)

    def __init__(self, stage1: Stage1Generator, ngf: int = 128, res_blocks: int = 4,
                 cond_dim: int = 128, ca_variant: str = "pt", image_skip: bool = False, fusion: bool = False,
                 render: bool = False, masked: bool = False, mask_grow: int = 2, pattern: bool = False,
                 sharp: bool = False):
        super().__init__()
        if masked and not (image_skip and getattr(stage1, "foreground", None) is not None):
            raise ConfigError("Stage II changes only the pixels near Stage I's object (model.stage2_masked) only with "
                              "the image skip (model.stage2_image_skip) and a layered Stage I (model.g_layered)")
        if render and not (image_skip and getattr(stage1, "background", None) is not None):
            raise ConfigError("Stage II starts from Stage I's scene drawn at 256 px (model.stage2_render) only with "
                              "the image skip (model.stage2_image_skip) and a layered Stage I over a smooth "
                              "background (model.g_layer_background=smooth, vertical or ramp)")
        if pattern and not render:
            raise ConfigError("Stage II's own pattern (model.stage2_pattern) is drawn in Stage I's scene at 256 px: "
                              "it needs model.stage2_render")
        if sharp and not (render and stage1.foreground.radial):
            raise ConfigError("Stage II draws Stage I's radial outline at 256 px (model.stage2_sharp) only with "
                              "model.stage2_render and a radial outline (model.g_layer_radial)")
        self.image_skip, self.fusion, self.render, self.masked = image_skip, fusion, render, masked
        self.sharp = sharp
        self.mask_grow = mask_grow  # pixels (at 64 px) by which Stage I's object mask is widened when masked
        k = stage1.z_dim + cond_dim if fusion else 0  # the up-blocks' modulating condition: cat(z, c)
        if ngf % 4:
            raise ConfigError(f"Stage-II ngf must be divisible by 4 (last block has ngf/4), got {ngf}")
        self.stage1 = stage1
        self.stage1.requires_grad_(False)
        self.stage1.eval()
        self.ca = ConditioningAugmentation(stage1.ca.fc.in_features, cond_dim, ca_variant)
        self.own_pattern = StagePattern(stage1.foreground, stage1.ca.fc.in_features) if pattern else None
        self.encode = nn.Sequential(
            conv3x3(3, ngf), nn.ReLU(inplace=True),  # 64
            nn.Conv2d(ngf, 2 * ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * ngf), nn.ReLU(inplace=True),  # 32
            nn.Conv2d(2 * ngf, 4 * ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * ngf), nn.ReLU(inplace=True),  # 16
        )
        self.joint = nn.Sequential(
            conv3x3(4 * ngf + cond_dim, 4 * ngf), nn.BatchNorm2d(4 * ngf), nn.ReLU(inplace=True)
        )
        self.residual = nn.Sequential(*[ResBlock(4 * ngf) for _ in range(res_blocks)])
        self.up = nn.Sequential(
            UpBlock(4 * ngf, 2 * ngf, k),  # 32
            UpBlock(2 * ngf, ngf, k),  # 64
            UpBlock(ngf, ngf // 2, k),  # 128
            UpBlock(ngf // 2, ngf // 4, k),  # 256
        )
        self.to_rgb = nn.Sequential(conv3x3(ngf // 4, 3), nn.Tanh())
        init_weights(self.ca)
        for part in (self.encode, self.joint, self.residual, self.up, self.to_rgb):
            init_weights(part)
        if image_skip:  # start exactly at the upsampled Stage-I image
            nn.init.zeros_(self.to_rgb[0].weight)

    def start_pattern(self) -> None:
        """With ``pattern``: set Stage II's own pattern to Stage I's (call after Stage I's weights are loaded)."""
        if self.own_pattern is not None:
            self.own_pattern.copy_from(self.stage1.foreground)

    def object_region(self, mask: torch.Tensor) -> torch.Tensor:
        """Stage I's placed object mask ``[B, 1, 64, 64]`` (in [0, 1]) widened by ``mask_grow`` pixels (a max
        filter; ``model.stage2_mask_grow``) and enlarged to ``[B, 1, 256, 256]``: where ``model.stage2_masked``
        lets Stage II draw."""
        if self.mask_grow:
            mask = F.max_pool2d(mask, 2 * self.mask_grow + 1, stride=1, padding=self.mask_grow)
        return F.interpolate(mask, scale_factor=4, mode="bilinear", align_corners=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.stage1.eval()  # frozen: its BN keeps the running statistics it was trained with
        return self

    def forward(self, z: torch.Tensor, emb: torch.Tensor, eps1: torch.Tensor | None = None,
                eps2: torch.Tensor | None = None) -> GeneratorOutput:
        if self.render and eps1 is None and self.stage1.ca.variant != "none":  # one CA sample for both drawings
            eps1 = self.stage1.ca.sample_eps((len(z), self.stage1.ca.cond_dim), z.device)
        with torch.no_grad():
            low = self.stage1(z, emb, eps1).image  # [B, 3, 64, 64]
            near = self.object_region(self.stage1.foreground.mask) if self.masked else None  # [B, 1, 256, 256]
        # Stage I is frozen, so the scene drawn at 256 px has a graph only through Stage II's own pattern (if any)
        scene = (self.stage1.render(z, emb, eps1, 256, self.own_pattern, self.sharp)
                 if self.render else None)  # [B, 3, 256, 256]
        c, mu, logvar = self.ca(emb, eps2)  # [B, cond]
        h = self.encode(low)  # [B, 4ngf, 16, 16]
        c_map = c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])  # [B, cond, 16, 16]
        h = self.residual(self.joint(torch.cat([h, c_map.to(h.dtype)], dim=1)))  # [B, 4ngf, 16, 16]
        zc = torch.cat([z, c], dim=1) if self.fusion else None  # [B, z + cond]
        x = run_up_path(self.up, self.to_rgb[0], h, self.recompute_blocks, zc)  # [B, 3, 256, 256], before tanh
        if self.image_skip:
            base = (scene if scene is not None
                    else F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False))  # [B, 3, 256, 256]
            x = (x if near is None else near.to(x.dtype) * x) + torch.atanh(base.clamp(-0.995, 0.995))
        high = torch.tanh(x)
        return GeneratorOutput(low, high, mu, logvar)


class Stage2Discriminator(nn.Module):
    """256x256 image -> six stride-2 convs to ``32ndf x 4 x 4`` -> two convs down to ``8ndf``;
    a matching-aware head and (PT) an unconditional head."""

    def __init__(self, text_dim: int, ndf: int = 64, cond_dim: int = 128, text_path: str = "mu",
                 head_kernel: int = 3, uncond_head: bool = True, projection: bool = False):
        super().__init__()
        k = head_kernel
        self.encode = nn.Sequential(
            DownBlock(3, ndf, bn=False),  # 128
            DownBlock(ndf, 2 * ndf),  # 64
            DownBlock(2 * ndf, 4 * ndf),  # 32
            DownBlock(4 * ndf, 8 * ndf),  # 16
            DownBlock(8 * ndf, 16 * ndf),  # 8
            DownBlock(16 * ndf, 32 * ndf),  # 4
            nn.Conv2d(32 * ndf, 16 * ndf, k, 1, k // 2, bias=False), nn.BatchNorm2d(16 * ndf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(16 * ndf, 8 * ndf, k, 1, k // 2, bias=False), nn.BatchNorm2d(8 * ndf),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.text = make_text_path(text_path, text_dim, cond_dim)
        self.cond_head = ConditionalHead(8 * ndf, cond_dim, head_kernel, projection)
        self.uncond_head = ConditionalHead(8 * ndf, 0) if uncond_head else None
        init_weights(self)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.encode(img)  # [B, 8ndf, 4, 4]

    def cond_logits(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.cond_head(h, self.text(text))  # [B]

    def uncond_logits(self, h: torch.Tensor) -> torch.Tensor | None:
        return None if self.uncond_head is None else self.uncond_head(h)  # [B]
