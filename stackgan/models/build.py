"""Networks from a ModelConfig."""
from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..config import ModelConfig
from .resnet_d import ResNetDiscriminator
from .stage1 import Stage1Discriminator, Stage1Generator
from .stage2 import Stage2Discriminator, Stage2Generator


def build_generator(m: ModelConfig, stage: int) -> nn.Module:
    g1 = Stage1Generator(m.text_dim, m.ngf1, m.z_dim, m.cond_dim, m.ca_variant, m.g1_variant, m.g_fusion)
    if stage == 1:
        return g1
    return Stage2Generator(g1, m.ngf2, m.res_blocks, m.cond_dim, m.ca_variant, m.stage2_image_skip, m.g_fusion)


def build_discriminator(m: ModelConfig, stage: int) -> nn.Module:
    if m.d_arch == "resnet":
        d = ResNetDiscriminator(m.text_dim, m.ndf1 if stage == 1 else m.ndf2, m.cond_dim, m.d_text_path,
                                64 if stage == 1 else 256, m.d_mbstd, m.d_gate)
    elif stage == 1:
        d = Stage1Discriminator(m.text_dim, m.ndf1, m.cond_dim, m.d_text_path, m.d_head_kernel, m.d_projection)
    else:
        d = Stage2Discriminator(m.text_dim, m.ndf2, m.cond_dim, m.d_text_path, m.d_head_kernel, m.uncond_head2,
                                m.d_projection)
    if not m.d_batchnorm:  # the paper's D without its BatchNorm: each image is judged on its own
        _remove_batchnorm(d)
    if m.d_spectral_norm:  # Miyato et al., ICLR 2018: every conv and linear layer of D
        for module in list(d.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                spectral_norm(module)
    return d


def _remove_batchnorm(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _remove_batchnorm(child)
