"""Networks from a ModelConfig."""
from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..config import ModelConfig
from ..errors import ConfigError
from .blocks import ContrastHead, blur_downsampling, image_trunk
from .resnet_d import ResNetDiscriminator
from .stage1 import Stage1Discriminator, Stage1Generator
from .stage2 import Stage2Discriminator, Stage2Generator


def generator_args(m: ModelConfig, stage: int) -> dict[str, dict]:
    """The constructor arguments of the generator of ``stage``: ``{"stage1": {...}}`` for
    :class:`Stage1Generator`, plus ``"stage2"`` for the :class:`Stage2Generator` around it. An
    exported model's ``config.json`` records these (not the training configuration).

    Example::

        generator_args(ModelConfig(), 1)["stage1"]["ngf"]  # 128
    """
    args = {"stage1": dict(text_dim=m.text_dim, ngf=m.ngf1, z_dim=m.z_dim, cond_dim=m.cond_dim,
                           ca_variant=m.ca_variant, variant=m.g1_variant, fusion=m.g_fusion)}
    if m.g_coords:  # only when on: exported models without the key load as before
        args["stage1"]["coords"] = True
    if m.g_layered:
        args["stage1"].update(layered=True, canvas=m.g_layer_canvas)
        if m.g_layer_background != "full":
            args["stage1"]["background"] = m.g_layer_background
        if m.g_layer_spin:
            args["stage1"]["spin"] = True
        if m.g_layer_taper:
            args["stage1"]["taper"] = True
        if m.g_layer_radial:
            args["stage1"]["radial"] = int(m.g_layer_radial)
        if m.g_layer_round:
            args["stage1"]["round_frame"] = True
        if m.g_layer_pattern:
            args["stage1"]["pattern"] = int(m.g_layer_pattern)
        if m.g_layer_pattern_pairs:
            args["stage1"]["pattern_pairs"] = True
        if m.g_layer_sides:
            args["stage1"]["sides"] = True
        if m.g_layer_cells:
            args["stage1"]["cells"] = int(m.g_layer_cells)
        if m.g_layer_sizes:
            args["stage1"]["sizes"] = int(m.g_layer_sizes)
        if m.g_layer_pattern_waves:
            args["stage1"]["pattern_waves"] = str(m.g_layer_pattern_waves)
        if m.g_layer_textures:
            args["stage1"]["textures"] = int(m.g_layer_textures)
        if m.g_layer_pattern_text:
            args["stage1"]["pattern_text"] = True
        if m.g_layer_pattern_inset:
            args["stage1"]["pattern_inset"] = float(m.g_layer_pattern_inset)
        if m.g_layer_normalize:
            args["stage1"]["normalize"] = True
        if m.g_layer_templates:
            args["stage1"]["templates"] = int(m.g_layer_templates)
        if m.g_layer_pose_text:
            args["stage1"]["pose_text"] = True
        if m.g_layer_anchors:
            args["stage1"]["anchors"] = int(m.g_layer_anchors)
        if m.g_layer_anchor_sample:
            args["stage1"]["anchor_sample"] = True
        if m.g_layer_pose_hidden:
            args["stage1"]["pose_hidden"] = int(m.g_layer_pose_hidden)
        if m.g_layer_scale0 != ModelConfig.g_layer_scale0:
            args["stage1"]["scale0"] = float(m.g_layer_scale0)
    if stage == 2:
        args["stage2"] = dict(ngf=m.ngf2, res_blocks=m.res_blocks, cond_dim=m.cond_dim, ca_variant=m.ca_variant,
                              image_skip=m.stage2_image_skip, fusion=m.g_fusion)
        if m.stage2_render:
            args["stage2"]["render"] = True
        if m.stage2_pattern:
            args["stage2"]["pattern"] = True
        if m.stage2_sharp:
            args["stage2"]["sharp"] = True
        if m.stage2_masked:
            args["stage2"]["masked"] = True
            if m.stage2_mask_grow != ModelConfig.stage2_mask_grow:
                args["stage2"]["mask_grow"] = int(m.stage2_mask_grow)
    return args


def generator_from_args(args: dict[str, dict]) -> nn.Module:
    """The generator that :func:`generator_args` describes (Stage II when ``args`` has ``"stage2"``)."""
    g1 = Stage1Generator(**args["stage1"])
    return Stage2Generator(g1, **args["stage2"]) if "stage2" in args else g1


def build_generator(m: ModelConfig, stage: int) -> nn.Module:
    return generator_from_args(generator_args(m, stage))


def build_discriminator(m: ModelConfig, stage: int) -> nn.Module:
    if m.info_codes and m.d_arch != "dcgan":
        raise ConfigError("model.info_codes needs the paper's D (model.d_arch=dcgan)")
    if m.d_arch == "resnet" and m.uncond_head1 and stage == 1:
        raise ConfigError("model.uncond_head1 applies to the paper's D (model.d_arch=dcgan)")
    for name in ("d_stem", "d_deep"):
        if getattr(m, name) and m.d_arch != "dcgan":
            raise ConfigError(f"model.{name} applies to the paper's D (model.d_arch=dcgan)")
    if m.d_stem and m.d_deep:
        raise ConfigError("model.d_stem and model.d_deep are two encoders; choose one")
    if m.d_arch == "resnet":
        d = ResNetDiscriminator(m.text_dim, m.ndf1 if stage == 1 else m.ndf2, m.cond_dim, m.d_text_path,
                                64 if stage == 1 else 256, m.d_mbstd, m.d_gate)
    elif stage == 1:
        d = Stage1Discriminator(m.text_dim, m.ndf1, m.cond_dim, m.d_text_path, m.d_head_kernel, m.d_projection,
                                m.uncond_head1, m.d_mbstd, m.info_codes, m.d_stem, m.d_deep)
    elif m.d_mbstd:
        raise ConfigError("model.d_mbstd with the paper's D (model.d_arch=dcgan) is for Stage I only")
    else:
        d = Stage2Discriminator(m.text_dim, m.ndf2, m.cond_dim, m.d_text_path, m.d_head_kernel, m.uncond_head2,
                                m.d_projection)
    if m.d_contrast:  # a contrastive embedding head on D's 4x4 code (8 ndf channels, + 1 with minibatch std)
        ndf = m.ndf1 if stage == 1 else m.ndf2
        channels = 8 * ndf + int(m.d_mbstd)
        if m.d_contrast_trunk == "checker":  # ... or on an encoder of its own in the attribute checker's layout
            d.contrast_trunk, channels, _ = image_trunk("checker", tuple(k * ndf for k in (1, 2, 4, 6, 8)))
        d.contrast = ContrastHead(channels, m.cond_dim, m.d_contrast, m.d_contrast_fake)
    if m.d_blur:  # anti-aliased down-sampling: a fixed low-pass before each stride-2 conv
        if m.d_arch != "dcgan":
            raise ConfigError("model.d_blur applies to the paper's D (model.d_arch=dcgan)")
        blur_downsampling(d)
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
