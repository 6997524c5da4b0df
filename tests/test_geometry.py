"""The geometry design's switches: fusion blocks, the BN-free residual D, the matching-aware
gradient penalty, one-word foils and the D check (docs/training-recipe.md)."""
import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stackgan.config import apply_overrides, get_preset
from stackgan.data.foils import ONE_HOT_DIM, foil_weights, make_foils, one_hot, one_hot_foil, shapes_foil
from stackgan.data.shapes import ATTRIBUTES
from stackgan.data.shapes_text import make_caption, parse_caption
from stackgan.evaluation.d_check import preference_rate
from stackgan.losses import contrastive_loss, matching_aware_gradient_penalty
from stackgan.models.blocks import CondAffine
from stackgan.models.build import build_discriminator, build_generator
from stackgan.models.resnet_d import GatedDownBlock, MinibatchStd
from stackgan.utils import from_uint8

from conftest import TINY


def _random_attributes(rng):
    return {name: values[int(rng.integers(len(values)))] for name, values in ATTRIBUTES.items()}


@pytest.mark.parametrize("stage", [1, 2])
def test_fusion_generator_starts_as_the_same_generator_without_fusion(stage):
    cfg = apply_overrides(get_preset("fast"), TINY + ["model.text_dim=12", "model.stage2_image_skip=false"])
    torch.manual_seed(0)
    fused = build_generator(apply_overrides(cfg, ["model.g_fusion=true"]).model, stage).eval()
    plain = build_generator(cfg.model, stage).eval()
    missing, unexpected = plain.load_state_dict(fused.state_dict(), strict=False)
    assert not missing and unexpected and all(".4.gain." in k or ".4.bias." in k for k in unexpected)
    z, emb = torch.randn(3, cfg.model.z_dim), torch.randn(3, 12)
    eps = torch.randn(3, cfg.model.cond_dim)
    args = (z, emb, eps) if stage == 1 else (z, emb, eps, eps)
    with torch.no_grad():
        a, b = fused(*args)[stage - 1], plain(*args)[stage - 1]
    assert torch.equal(a, b)
    # ... and the condition does reach every up-block once the modulation has learned something
    affines = [m for m in fused.modules() if isinstance(m, CondAffine)]
    assert len(affines) == 4 * stage  # Stage II: its own four and its Stage I's
    with torch.no_grad():
        affines[-1].bias[-1].bias.fill_(0.5)
        assert not torch.equal(fused(*args)[stage - 1], b)


def test_cond_affine_is_the_identity_at_start_and_scales_per_channel():
    aff = CondAffine(cond_dim=5, channels=3)
    x, c = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    assert torch.equal(aff(x, c), x)
    with torch.no_grad():
        aff.gain[-1].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))  # scales 2, 1, 0
    out = aff(x, c)
    assert torch.allclose(out[:, 0], 2 * x[:, 0]) and torch.equal(out[:, 1], x[:, 1]) and (out[:, 2] == 0).all()


@pytest.mark.parametrize("stage", [1, 2])
def test_resnet_discriminator_has_no_batchnorm_and_gates_start_closed(stage):
    cfg = apply_overrides(get_preset("fast"), TINY + ["model.text_dim=12", "model.d_arch=resnet", "model.d_mbstd=true"])
    D = build_discriminator(cfg.model, stage)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    gates = [m.gate for m in D.modules() if isinstance(m, GatedDownBlock)]
    assert len(gates) == (4 if stage == 1 else 6) and all(g.item() == 0 for g in gates)
    r = 64 if stage == 1 else 256
    h = D(torch.randn(4, 3, r, r))
    assert h.shape[-2:] == (4, 4)
    assert D.cond_logits(h, torch.randn(4, 12)).shape == (4,) and D.uncond_logits(h) is None
    # the paper's D keeps its BatchNorm
    paper_cfg = apply_overrides(cfg, ["model.d_arch=dcgan", "model.d_mbstd=false"])
    paper = build_discriminator(paper_cfg.model, stage)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in paper.modules())


def test_paper_discriminator_with_minibatch_std_sees_copies():
    """model.d_mbstd with the paper's (dcgan) Stage-I D: its 4x4 code gets the minibatch-std
    channel, 0 for a batch of copies (a G that ignores z) and positive for varied images; the
    heads read it. Stage II's dcgan D refuses the switch."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.d_mbstd=true"])
    D = build_discriminator(cfg.model, 1).eval()
    ndf = cfg.model.ndf1
    copies = D(torch.randn(1, 3, 64, 64).expand(8, -1, -1, -1))
    varied = D(torch.randn(8, 3, 64, 64))
    assert copies.shape == (8, 8 * ndf + 1, 4, 4)
    assert copies[:, -1].abs().max() < 1e-3 and (varied[:, -1] > 0).all()
    text = torch.randn(8, 12)
    with torch.no_grad():  # the head reads that channel: the same code with it set to 0 scores otherwise
        flat = varied.clone()
        flat[:, -1] = 0
        assert not torch.allclose(D.cond_logits(varied, text), D.cond_logits(flat, text))
    with pytest.raises(ValueError, match="Stage I only"):
        build_discriminator(cfg.model, 2)


def test_minibatch_std_is_zero_for_identical_samples_and_positive_otherwise():
    mb = MinibatchStd(group=4)
    same = torch.randn(1, 2, 4, 4).expand(8, -1, -1, -1).contiguous()
    assert mb(same)[:, -1].abs().max() < 1e-3
    out = mb(torch.randn(8, 2, 4, 4))
    assert out.shape == (8, 3, 4, 4) and (out[:, -1] > 0.1).all()


def test_gradient_penalty_matches_a_hand_computation():
    # D(x, t) = <w, x> + <v, t>^2: d/dx = w, d/dt = 2 <v, t> v
    w, v = torch.randn(3, 2, 2), torch.randn(5)
    x, t = torch.randn(4, 3, 2, 2, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    logits = (x * w).sum((1, 2, 3)) + (t @ v) ** 2
    got = matching_aware_gradient_penalty(logits, (x, t), power=6)
    grad_t = 2 * (t @ v)[:, None] * v  # [4, 5]
    sq = (w ** 2).sum() + (grad_t ** 2).sum(1)  # [4] squared norms
    assert torch.allclose(got, (sq ** 3).mean(), rtol=1e-5)
    got.backward()  # the penalty trains D: it has a gradient
    assert t.grad is not None and torch.isfinite(t.grad).all()
    # power 2 with the image alone: R1's E||grad_x||^2
    x2 = torch.randn(4, 3, 2, 2, requires_grad=True)
    r1 = matching_aware_gradient_penalty((x2 ** 2).sum((1, 2, 3)), (x2,), power=2)
    assert torch.allclose(r1, (4 * x2 ** 2).sum((1, 2, 3)).mean())


def test_shapes_foils_change_exactly_one_attribute_word():
    rng = np.random.default_rng(0)
    changed = {name: 0 for name in ATTRIBUTES}
    for i in range(300):
        attrs = _random_attributes(rng)
        caption = make_caption(attrs, rng, full=bool(i % 2))
        foil, name = shapes_foil(caption, rng)
        truth, said = parse_caption(caption), parse_caption(foil)
        assert set(said) == set(truth), (caption, foil)
        assert [a for a in truth if said[a] != truth[a]] == [name], (caption, foil)
        a, b = caption.split(), foil.split()
        prefix = next((k for k, (p, q) in enumerate(zip(a, b)) if p != q), 0)
        suffix = next((k for k, (p, q) in enumerate(zip(a[::-1], b[::-1])) if p != q), 0)
        assert len(a) - prefix - suffix <= 2 and len(b) - prefix - suffix <= 2, (caption, foil)  # one word or phrase
        changed[name] += 1
    assert changed["shape"] > changed["color"] and all(n > 0 for n in changed.values())  # weighted toward shape


def test_one_hot_foils_differ_in_one_attribute_and_color_foils_for_other_data():
    rng = np.random.default_rng(1)
    for _ in range(50):
        attrs = _random_attributes(rng)
        a, b = one_hot(attrs), one_hot_foil(attrs, rng)
        assert a.shape == (ONE_HOT_DIM,) == (31,) and a.sum() == 6 and b.sum() == 6 and np.abs(a - b).sum() == 2
        shape_only = one_hot_foil(attrs, rng, foil_weights("shape"))  # --foil-attributes shape: the shape block
        assert np.abs(a - shape_only)[:4].sum() == 2 and np.array_equal(a[4:], shape_only[4:])
    assert foil_weights(" shape, size ") == {"shape": 1.0, "size": 1.0}
    with pytest.raises(ValueError, match="must be among shape, color"):
        foil_weights("shape,colour")
    records = [{"captions": ["this flower has white petals", "no colour named here"]}, {"captions": ["a plain one"]}]
    foils = make_foils(records, per_image=2)
    assert len(foils[0]) == 2 and all("white" not in f and "petals" in f for f in foils[0]) and foils[1] == []


def test_d_check_is_one_for_a_d_that_reads_the_attribute_and_half_for_one_that_ignores_text():
    rng = np.random.default_rng(2)
    attrs = [_random_attributes(rng) for _ in range(40)]
    images = torch.tensor(np.stack([one_hot(a) for a in attrs]))[:, :, None, None]  # the "image" shows its attributes
    right = images[:, :, 0, 0].clone()
    for name in ATTRIBUTES:
        foil = torch.tensor(np.stack([one_hot_foil(a, rng, {name: 1.0}) for a in attrs]))
        reads = preference_rate(lambda x, t: (x[:, :, 0, 0] * t).sum(1), images, right, foil, batch_size=16)
        ignores = preference_rate(lambda x, t: x.sum((1, 2, 3)), images, right, foil, batch_size=16)
        assert reads == 1.0 and ignores == 0.5


def test_foil_share_replaces_wrong_captions_with_the_images_own_foils():
    from stackgan.config import DataConfig
    from stackgan.training.data import TrainData
    n, d = 16, 6
    emb = torch.randn(n, 2, d)
    foils = torch.randn(n, 3, d)
    common = dict(images=torch.zeros(n, 3, 4, 4, dtype=torch.uint8), embeddings=emb, counts=torch.full((n,), 2),
                  out_size=4, foils=foils, foil_counts=torch.tensor([3] * (n - 1) + [0]))
    off = TrainData(cfg=DataConfig(), **common)
    on = TrainData(cfg=DataConfig(foil_share=1.0), **common)
    _, text, wrong = off.batch(0, n)
    assert torch.equal(wrong, text.roll(1, 0))  # unchanged when foil_share is 0
    _, text, wrong = on.batch(0, n)
    perm = torch.randperm(n, generator=__import__("stackgan.training.data", fromlist=["_gen"])._gen(0, 1, 0))
    for row, i in enumerate(perm.tolist()):
        if i == n - 1:  # an image without foils keeps its ordinary wrong caption
            assert torch.equal(wrong[row], text.roll(1, 0)[row])
        else:
            assert any(torch.equal(wrong[row], f) for f in foils[i])


def test_paper_preset_has_every_new_switch_off():
    paper = get_preset("paper")
    assert (paper.model.g_fusion, paper.model.d_arch, paper.model.d_mbstd) == (False, "dcgan", False)
    assert paper.stage1.gp_weight == paper.stage2.gp_weight == 0 and paper.data.foil_share == 0


def test_truncation_bounds_z_and_keeps_images_per_seed():
    from stackgan.models.build import build_generator
    from stackgan.pipeline import StackGANPipeline
    from stackgan.text.norm import TextNorm
    cfg = apply_overrides(get_preset("fast"), TINY + ["model.text_dim=12"])
    pipe = StackGANPipeline.from_config(cfg, build_generator(cfg.model, 1), TextNorm(12), 1)
    z, _, _ = pipe.noise(list(range(50)), truncation=0.5)
    assert z.abs().max() <= 0.5 and z.abs().max() > 0.4
    assert not torch.equal(z, pipe.noise(list(range(50)))[0])
    emb = torch.randn(4, 12)
    a = pipe.generate(embeddings=emb, truncation=0.88).stage1
    b = pipe.generate(embeddings=emb[2:], seed=2, truncation=0.88).stage1
    assert torch.equal(a[2:], b)
    with pytest.raises(ValueError, match="truncation"):
        pipe.generate(embeddings=emb[:1], truncation=0.0)


def test_the_geometry_design_trains_both_stages_and_its_d_is_checked(tiny_shapes, tmp_path):
    """Both stages with fusion, the residual D, hinge + MA-GP and foils; then the D check reads the run."""
    from dataclasses import replace
    from stackgan.checkpoint import load_state
    from stackgan.evaluation.d_check import discriminator_check
    from stackgan.training import train

    design = ["model.g_fusion=true", "model.d_arch=resnet", "model.d_mbstd=true", "data.foil_share=0.5",
              "data.foils_per_image=2"] + [f"stage{n}.{k}" for n in (1, 2) for k in
                                          ("gan_loss=hinge", "gp_weight=2", "gp_every=2", "match_weight=0")]
    cfg = apply_overrides(get_preset("fast"), TINY + design)
    run = tmp_path / "run"
    for stage, steps in ((1, 4), (2, 2)):
        cfg = replace(cfg, **{f"stage{stage}": replace(cfg.stage(stage), max_steps=steps)})
        if stage == 2:  # Stage II follows its Stage I's architecture, whatever its own configuration says
            cfg = apply_overrides(cfg, ["model.g_fusion=false"])
        train(cfg, tiny_shapes, run, stage, progress=False)
        state = load_state(run / f"stage{stage}" / "state.pt")
        assert state["step"] == steps and any(".4.gain." in k for k in state["generator"])
        assert any(k.endswith(".gate") for k in state["discriminator"])
    assert list((tiny_shapes / ".stackgan-cache").glob("text-train-foils2-*.safetensors"))  # foils encoded, cached
    rates = discriminator_check(run, tiny_shapes, num_samples=8)
    assert set(rates) == set(ATTRIBUTES) and all(0.0 <= r <= 1.0 for r in rates.values())
    from stackgan.cli import main  # Stage II's D through the command line: its own report
    assert main(["evaluate", str(run), "--data", str(tiny_shapes), "--metrics", "dcheck", "--stage", "2",
                 "--num-samples", "8"]) == 0
    assert json.loads((run / "d_check-stage2.json").read_text()) == discriminator_check(run, tiny_shapes, stage=2,
                                                                                       num_samples=8)
    assert not (run / "d_check.json").exists()


def test_crop_flip_on_shapes_keeps_left_and_right_and_moves_at_most_4_px(tiny_shapes):
    from stackgan.config import DataConfig
    from stackgan.training.data import caption_safe_augmentation, load_train_data
    assert caption_safe_augmentation(tiny_shapes, 64) == (False, 4)
    assert caption_safe_augmentation(tiny_shapes.parent, 64) == (True, None)  # not Shapes: the paper's crops
    data, _ = load_train_data(tiny_shapes, DataConfig(augment="crop_flip", text_encoder="minilm"), 64, progress=False)
    full = from_uint8(data.images)  # [N, 3, 76, 76]
    for step in range(3):
        imgs, _, _ = data.batch(step, 8)
        perm = torch.randperm(len(data), generator=__import__("stackgan.training.data", fromlist=["_gen"])._gen(0, 1, 0))
        for img, i in zip(imgs, perm[step * 8:(step + 1) * 8].tolist()):
            crops = {(y, x) for y in range(13) for x in range(13)
                     if torch.equal(full[i][:, y:y + 64, x:x + 64], img)}
            assert crops and all(abs(y - 6) <= 4 and abs(x - 6) <= 4 for y, x in crops)  # never flipped


def test_only_the_authors_pytorch_presets_use_the_pt_conditioning_augmentation():
    from stackgan.config import preset_names
    users = [name for name in preset_names() if get_preset(name).model.ca_variant == "pt"]
    assert users == ["paper", "coco"]  # the authors' PyTorch configurations, kept faithful


def test_exponent_notation_without_a_dot_is_a_float_override():
    cfg = apply_overrides(get_preset("fast"), ["stage1.lr_g=1e-4", "stage1.lr_d=4e-4"])
    assert (cfg.stage1.lr_g, cfg.stage1.lr_d) == (1e-4, 4e-4)
    from stackgan.config import ConfigError
    with pytest.raises(ConfigError, match="expected float"):
        apply_overrides(get_preset("fast"), ["stage1.lr_g=fast"])


def test_matcher_trains_with_foils_and_reports_its_foil_preference(tiny_shapes, tmp_path):
    import json
    from stackgan.config import DataConfig
    from stackgan.matching import ImageTextMatcher, train_matcher
    from stackgan.training.data import load_train_data
    cfg = DataConfig(matcher_foils=True, foils_per_image=2)
    _, norm = load_train_data(tiny_shapes, cfg, 64, progress=False)
    train_matcher(tiny_shapes, cfg, norm, tmp_path / "m.safetensors", steps=3, batch_size=8, progress=False,
                  widths=(8, 8))
    meta = json.loads((tmp_path / "m.json").read_text())
    assert set(meta["test_foil_preference"]) == set(ATTRIBUTES)
    # the loss: an image whose own caption is also among the foils can no longer pick it out for sure
    m = ImageTextMatcher(text_dim=6, widths=(4,))
    x, t = torch.randn(3, 3, 64, 64), torch.randn(3, 6)
    assert m.loss(x, t, foils=t.clone()) > m.loss(x, t)


def test_projection_term_adds_the_inner_product_of_text_and_pooled_features():
    from stackgan.models.blocks import ConditionalHead
    torch.manual_seed(0)
    plain, proj = ConditionalHead(6, 4, kernel=1), ConditionalHead(6, 4, kernel=1, projection=True)
    proj.joint.load_state_dict(plain.joint.state_dict())
    proj.out.load_state_dict(plain.out.state_dict())
    plain.eval(), proj.eval()
    h, t = torch.randn(3, 6, 4, 4), torch.randn(3, 4)
    with torch.no_grad():
        expected = plain(h, t) + ((t @ proj.project.weight.T) * h.sum((2, 3))).sum(1)
        assert torch.allclose(proj(h, t), expected, atol=1e-5)
    assert ConditionalHead(6, 0, projection=True).project is None  # the unconditional head has none


def test_fusion_up_block_equals_upsampling_first():
    """The block fuses and runs its 1x1 shortcut before upsampling, and its first conv as the fused
    upsample + conv: the same function as DF-GAN's order (upsample, fuse, conv)."""
    import torch.nn.functional as F
    from stackgan.models.blocks import FusionUpBlock

    torch.manual_seed(0)
    block = FusionUpBlock(6, 4, cond_dim=5)
    for affine in block.fuse:  # away from the identity, so the condition matters
        for p in affine.parameters():
            nn.init.normal_(p, 0.0, 0.5)
    x, c = torch.randn(2, 6, 8, 8), torch.randn(2, 5)
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    want = block.conv2(block._fuse(block.conv1(block._fuse(up, c, 0)), c, 2)) + block.shortcut(up)
    assert torch.allclose(block(x, c), want, atol=1e-5)
    assert not torch.allclose(block(x, c), block(x, torch.randn(2, 5)), atol=1e-3)


@pytest.mark.parametrize("stage", [1, 2])
def test_dfgan_generator_has_no_batchnorm_and_draws_each_image_on_its_own(stage):
    cfg = apply_overrides(get_preset("fast"), TINY + ["model.text_dim=12", "model.g1_variant=dfgan"])
    torch.manual_seed(0)
    G = build_generator(cfg.model, stage).train()
    stage1 = G if stage == 1 else G.stage1
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in stage1.modules())
    assert stage1.fusion and sum(isinstance(m, CondAffine) for m in stage1.modules()) == 16
    z, emb, eps = torch.randn(4, cfg.model.z_dim), torch.randn(4, 12), torch.randn(4, cfg.model.cond_dim)
    args = (z, emb, eps) if stage == 1 else (z, emb, eps, eps)
    with torch.no_grad():
        batch = G(*args)
        alone = G(*[a[:1] for a in args])
    assert batch[stage - 1].shape == (4, 3, 64 * 4 ** (stage - 1), 64 * 4 ** (stage - 1))
    # Stage I's image, in training mode too, does not depend on the other samples of its batch
    assert torch.allclose(batch[0][:1], alone[0], atol=1e-5)


def test_matching_loss_weight_warms_up_linearly():
    from dataclasses import replace
    from stackgan.training.step import match_weight

    sc = get_preset("fast").stage1  # match_weight 2, no warm-up
    assert [match_weight(sc, s) for s in (0, 10)] == [2.0, 2.0]
    warm = replace(sc, match_warmup=100)
    assert [match_weight(warm, s) for s in (0, 50, 100, 5000)] == [0.0, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="match_warmup"):
        apply_overrides(get_preset("fast"), ["stage1.match_warmup=-1"])


def test_fast_sn_preset_is_fast_with_a_spectral_norm_d_and_a_warmed_up_matcher():
    from torch.nn.utils.parametrize import is_parametrized

    fast, sn = get_preset("fast"), get_preset("fast-sn")
    assert sn.stage1.match_warmup == 1000 and fast.stage1.match_warmup == 0
    assert (sn.stage1.gan_loss, sn.stage2.gan_loss) == ("hinge", "hinge")
    assert sn.data == fast.data and sn.stage1.match_weight == fast.stage1.match_weight
    cfg = apply_overrides(sn, TINY + ["model.text_dim=12"])
    for stage in (1, 2):
        D = build_discriminator(cfg.model, stage)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
        convs = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert convs and all(is_parametrized(m, "weight") for m in convs)



def test_fast_fusion_contrast_is_fast_with_fused_text_in_g_and_a_contrastive_head_in_d():
    from dataclasses import replace

    fast, fc = get_preset("fast"), get_preset("fast-fusion-contrast")
    assert fc == replace(fast, model=replace(fast.model, g_fusion=True, d_contrast=128),
                         stage1=replace(fast.stage1, contrast_weight=0.2))
    cfg = apply_overrides(fc, TINY + ["model.text_dim=12"])
    D = build_discriminator(cfg.model, 1)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())  # fast's D, BatchNorm kept
    assert hasattr(D, "contrast")
    G = build_generator(cfg.model, 1)
    assert G.fusion


def test_fast_sn_noca_is_fast_sn_without_conditioning_augmentation_in_either_stage():
    from dataclasses import replace

    sn, noca = get_preset("fast-sn"), get_preset("fast-sn-noca")
    assert noca == replace(sn, model=replace(sn.model, ca_variant="none"))
    cfg = apply_overrides(noca, TINY + ["model.text_dim=12"])
    torch.manual_seed(0)
    G = build_generator(cfg.model, 2).train()
    z, emb = torch.zeros(2, cfg.model.z_dim), torch.randn(2, 12)
    first, second = G(z, emb), G(z, emb)
    assert first.logvar is None and torch.equal(first.mu, G.ca(emb)[1])
    assert torch.equal(first.image, second.image)  # with z fixed, nothing random is left in either stage

@pytest.mark.parametrize("stage", [1, 2])
def test_blurred_down_sampling_low_passes_d_and_its_input_gradient(stage):
    """model.d_blur puts a fixed binomial blur before each stride-2 conv: a constant image stays
    constant through it, and D's gradient on an image has no checkerboard (Nyquist) component."""
    from stackgan.models.blocks import Blur, DownBlock
    cfg = apply_overrides(get_preset("fast-sn"), TINY + ["model.text_dim=12", "model.d_blur=true"])
    torch.manual_seed(0)
    D = build_discriminator(cfg.model, stage)
    blocks = [m for m in D.modules() if isinstance(m, DownBlock)]
    assert blocks and all(isinstance(b[0], Blur) for b in blocks)
    assert not any("kernel" in k for k in D.state_dict())  # fixed, not saved: old runs load unchanged
    flat = torch.full((1, 2, 5, 5), 0.3)
    assert torch.allclose(Blur()(flat), flat)
    size = 64 if stage == 1 else 256
    x = torch.randn(2, 3, size, size, requires_grad=True)
    D.cond_logits(D(x), torch.randn(2, 12)).sum().backward()
    sign = torch.tensor([[(-1.0) ** (i + j) for j in range(size)] for i in range(size)])
    nyquist = (x.grad * sign).sum((2, 3)).abs()  # [2, 3]: the (pi, pi) Fourier coefficient
    assert nyquist.max() < 1e-4 * x.grad.abs().sum()
    with pytest.raises(ValueError, match="d_blur"):
        build_discriminator(apply_overrides(cfg, ["model.d_arch=resnet"]).model, stage)


def test_coordinate_channels_let_an_up_block_draw_by_position_and_survive_export():
    """model.g_coords: an up-block given a constant input draws a constant image without the
    coordinate channels and a position-dependent one with them; generator_args carries the
    switch, so an exported model rebuilds with it (and one without the key, without it)."""
    from stackgan.models.blocks import UpBlock, coordinate_grid
    from stackgan.models.build import generator_args, generator_from_args

    grid = coordinate_grid(3, 4, torch.zeros(()))
    assert grid.shape == (1, 2, 3, 4) and grid[0, 0, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])
    assert grid[0, 1, :, 0].tolist() == [-1.0, 0.0, 1.0]
    torch.manual_seed(0)
    flat = torch.ones(2, 4, 6, 6)
    plain, coords = UpBlock(4, 3).eval(), UpBlock(4, 3, coords=True).eval()
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # away from the zero padding
    assert plain(flat)[inner].std((2, 3)).max() < 1e-6
    assert coords(flat)[inner].std((2, 3)).max() > 1e-3
    cfg = apply_overrides(get_preset("fast"), TINY + ["model.text_dim=12", "model.g_coords=true"])
    for stage in (1, 2):
        G = generator_from_args(generator_args(cfg.model, stage))
        g1 = G if stage == 1 else G.stage1
        assert sum(hasattr(b, "coord") for b in g1.up) == 4
    args = generator_args(apply_overrides(cfg, ["model.g_coords=false"]).model, 1)
    assert "coords" not in args["stage1"]  # config.json of a model without them is unchanged
    with pytest.raises(ValueError, match="g_coords"):
        build_generator(apply_overrides(cfg, ["model.g1_variant=dfgan"]).model, 1)


def test_stage1_image_only_head_ignores_the_text_and_is_off_by_default():
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12"])
    assert build_discriminator(cfg.model, 1).uncond_logits(torch.zeros(2, 8 * cfg.model.ndf1, 4, 4)) is None
    on = apply_overrides(cfg, ["model.uncond_head1=true"])
    torch.manual_seed(0)
    D = build_discriminator(on.model, 1)
    h = D(torch.rand(3, 3, 64, 64) * 2 - 1)
    logits = D.uncond_logits(h)
    assert logits.shape == (3,)
    assert not torch.allclose(D.cond_logits(h, torch.randn(3, 12)), D.cond_logits(h, torch.randn(3, 12)))
    assert torch.equal(logits, D.uncond_logits(h))  # the same image, whatever the text
    with pytest.raises(ValueError, match="uncond_head1"):
        build_discriminator(apply_overrides(on, ["model.d_arch=resnet"]).model, 1)


def _batch(cfg):
    """A Stage-I batch of 4 for the loss-term tests: real images, text and wrong text (12 dims), z."""
    real, text, wrong = torch.rand(4, 3, 64, 64) * 2 - 1, torch.randn(4, 12), torch.randn(4, 12)
    return real, text, wrong, torch.randn(4, cfg.model.z_dim)


def _seeded_nets(cfg):
    """Stage I's G and D as built after ``torch.manual_seed(0)`` (the same weights for each setting)."""
    torch.manual_seed(0)
    return build_generator(cfg.model, 1), build_discriminator(cfg.model, 1)


def _one_update(cfg, G, D, real, text, wrong, z):
    """One ``Updater`` step of Stage I with SGD (G's learning rate 0.1, D's 0: D stays as built):
    the logged losses by name and G's weights after it."""
    from stackgan.training.step import LOGGED, Updater
    opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.1), torch.optim.SGD(D.parameters(), 0.0)
    logged = dict(zip(LOGGED, Updater(cfg, 1, G, D, opt_g, opt_d, device=torch.device("cpu"))(real, text, wrong, z)))
    return logged, [p.detach().clone() for p in G.parameters()]


def test_mode_seeking_term_is_the_inverse_of_image_distance_over_noise_distance():
    """stage1.ms_weight (MSGAN): the logged G/ms is 1 / (mean |G(z1, t) - G(z2, t)| / mean |z1 - z2|)
    over the first half of the batch, z2 being the next draw of the random state, and it changes
    G's update."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12"])
    real, text, wrong, z = _batch(cfg)
    after = {}
    for weight in (0.0, 1.0):
        c = apply_overrides(cfg, [f"stage1.ms_weight={weight}"])
        G, D = _seeded_nets(c)
        with torch.no_grad():
            fake = G(z, text).image
        torch.manual_seed(1)
        logged, after[weight] = _one_update(c, G, D, real, text, wrong, z)
        if weight:
            torch.manual_seed(1)
            z2 = torch.randn(2, cfg.model.z_dim)
            torch.manual_seed(0)
            G0 = build_generator(c.model, 1)
            with torch.no_grad():
                other = G0(z2, text[:2]).image
            expected = 1 / ((fake[:2] - other).abs().mean() / (z[:2] - z2).abs().mean() + 1e-5)
            assert logged["G/ms"] == pytest.approx(expected.item(), rel=1e-4)
        else:
            assert logged["G/ms"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(after[0.0], after[1.0]))


def test_foreground_layer_places_its_canvas_by_the_predicted_pose():
    """model.g_layered: the pose head starts at zero (the object upright, centred, at scale0);
    a translation moves the drawn mask's centre there, a quarter turn turns it, and outside the
    placed canvas the image is the background."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.5).eval()
    zc = torch.randn(2, 6)
    A = layer.transform(zc)
    assert torch.allclose(A, torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]).expand(2, 2, 3))
    # a canvas with a bar along its x axis (the object's own frame), white, mask 1 on the bar
    bar = torch.zeros(1, 1, 32, 32)
    bar[..., 14:18, 4:28] = 1.0
    layer.canvas = lambda zc: (torch.ones(len(zc), 3, 32, 32), bar.expand(len(zc), 1, 32, 32))
    background = -torch.ones(1, 3, 64, 64)

    def placed(tx, ty, angle):
        with torch.no_grad():
            layer.pose.bias.copy_(torch.tensor([0.0, angle, tx, ty]))
            mask = (layer(torch.zeros(1, 6), background)[0, 0] + 1) / 2  # 0 background, 1 object
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
        total = mask.sum()
        cx, cy = (mask * xs).sum() / total, (mask * ys).sum() / total
        spread_x = (mask * (xs - cx) ** 2).sum() / total
        spread_y = (mask * (ys - cy) ** 2).sum() / total
        return mask, cx.item(), cy.item(), spread_x.item(), spread_y.item()

    mask, cx, cy, sx, sy = placed(0.0, 0.0, 0.0)
    assert abs(cx) < 0.03 and abs(cy) < 0.03 and sx > 4 * sy  # a horizontal bar in the centre
    assert mask[:, :10].abs().max() == 0 and mask[:, 54:].abs().max() == 0  # the background beyond scale0
    mask, cx, cy, _, _ = placed(0.5, -0.25, 0.0)
    assert abs(cx - 0.5) < 0.03 and abs(cy + 0.25) < 0.03
    _, cx, cy, sx, sy = placed(0.0, 0.0, 0.5)  # angle / pi = 0.5: a quarter turn
    assert abs(cx) < 0.03 and abs(cy) < 0.03 and sy > 4 * sx
    # spin (model.g_layer_spin): also turned by the angle of the first two inputs, (0, 1): a quarter turn
    layer.spin = True
    with torch.no_grad():
        layer.pose.bias.zero_()
        turned = layer.transform(torch.tensor([[0.0, 1.0, 0, 0, 0, 0], [-2.0, 0.0, 0, 0, 0, 0]]))
    assert torch.allclose(turned[0, :, :2], torch.tensor([[0.0, 2.0], [-2.0, 0.0]]), atol=1e-6)
    assert torch.allclose(turned[1, :, :2], torch.tensor([[-2.0, 0.0], [0.0, -2.0]]), atol=1e-6)  # half a turn


def test_normalized_layer_places_any_canvas_object_by_the_pose_alone():
    """model.g_layer_normalize: a disc drawn small and off-centre in the canvas, or large and centred,
    lands at the pose's translation with an RMS radius of scale * RMS_RADIUS (image half-widths);
    without it the small disc lands small and off-centre."""
    from stackgan.models.layered import RMS_RADIUS, ForegroundLayer

    t = (torch.arange(32) * 2 + 1) / 32 - 1
    y, x = torch.meshgrid(t, t, indexing="ij")

    def disc(cx, cy, r):  # a soft disc in the canvas's [-1, 1] frame
        return torch.sigmoid((r - ((x - cx) ** 2 + (y - cy) ** 2).sqrt()) * 40)[None, None]

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")

    def placed(normalize, mask):
        layer = ForegroundLayer(6, ngf=4, scale0=0.5, normalize=normalize).eval()
        layer.canvas = lambda zc: (torch.ones(len(zc), 3, 32, 32), mask.expand(len(zc), 1, 32, 32))
        with torch.no_grad():
            layer.pose.bias.copy_(torch.tensor([0.0, 0.0, 0.3, -0.2]))
            m = (layer(torch.zeros(1, 6), -torch.ones(1, 3, 64, 64))[0, 0] + 1) / 2
        total = m.sum()
        cx, cy = (m * xs).sum() / total, (m * ys).sum() / total
        return cx.item(), cy.item(), (((xs - cx) ** 2 + (ys - cy) ** 2) * m).sum().div(total).sqrt().item()

    for mask in (disc(0.4, 0.3, 0.25), disc(0.0, 0.0, 0.8)):
        cx, cy, rms = placed(True, mask)
        assert cx == pytest.approx(0.3, abs=0.02) and cy == pytest.approx(-0.2, abs=0.02)
        assert rms == pytest.approx(0.5 * RMS_RADIUS, rel=0.05)
    cx, cy, rms = placed(False, disc(0.4, 0.3, 0.25))  # the canvas's own offset and size show
    assert cx == pytest.approx(0.3 + 0.5 * 0.4, abs=0.02) and rms < 0.5 * 0.25


def test_mask_templates_are_chosen_by_the_condition_and_learn_from_the_image():
    """model.g_layer_templates: the canvas's mask is the sigmoid of a softmax mixture of learned
    template logits; a selection that puts all its weight on one template draws exactly that one,
    the templates start as different noisy discs, and the image's loss reaches them and the choice."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, templates=3)
    logits = layer.template_logits().detach()
    assert layer.templates.shape == (3, 1, 16, 16) and logits.shape == (3, 1, 32, 32) and logits.abs().max() < 6
    centre, corner = logits[:, 0, 16, 16], logits[:, 0, 0, 0]
    assert (centre > 2).all() and (corner < -2).all() and not torch.equal(logits[0], logits[1])
    with torch.no_grad():
        layer.select.weight.zero_()
        layer.select.weight[2, 0] = 100.0  # input 0 > 0: template 2; input 0 < 0: template 1
        layer.select.weight[1, 0] = -100.0
        layer.select.bias.zero_()
    zc = torch.zeros(2, 6)
    zc[0, 0], zc[1, 0] = 1.0, -1.0
    _, mask = layer.canvas(zc)
    assert torch.allclose(mask[0], torch.sigmoid(logits[2]), atol=1e-6)
    assert torch.allclose(mask[1], torch.sigmoid(logits[1]), atol=1e-6)
    with torch.no_grad():
        layer.select.weight.zero_()  # an even mixture: the mean of the logits
    _, mask = layer.canvas(zc)
    assert torch.allclose(mask[0], torch.sigmoid(logits.mean(0)), atol=1e-5)
    layer(torch.randn(4, 6), torch.zeros(4, 3, 64, 64)).square().mean().backward()
    assert layer.templates.grad.abs().sum() > 0 and layer.select.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="templates must be >= 0"):
        ForegroundLayer(6, ngf=4, templates=-1)
    with pytest.raises(ValueError, match="g_layer_templates needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_templates=4"])


def test_pose_head_with_a_hidden_layer_starts_upright_and_reads_the_code_non_linearly():
    """model.g_layer_pose_hidden: the pose is Linear(LeakyReLU(Linear(cat(z, c)))); its output layer
    starts at zero (every object upright, centred, at scale0) like the linear head's."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.5, pose_hidden=8)
    zc = torch.randn(5, 6)
    assert torch.allclose(layer.transform(zc), torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]).expand(5, 2, 3))
    with torch.no_grad():
        layer.pose.weight.normal_()
    hidden = torch.nn.functional.leaky_relu(zc @ layer.pose_in[0].weight.T + layer.pose_in[0].bias, 0.2)
    assert torch.allclose(layer.pose_params(zc), hidden @ layer.pose.weight.T + layer.pose.bias, atol=1e-6)
    # not odd around the bias as a linear head is: pose(zc) + pose(-zc) != 2 bias
    assert not torch.allclose(layer.pose_params(-zc) + layer.pose_params(zc), 2 * layer.pose.bias)
    with pytest.raises(ValueError, match="g_layer_pose_hidden needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_pose_hidden=8"])
    with pytest.raises(ValueError, match="g_layer_pose_hidden must be >= 0"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_pose_hidden=-1"])


def test_pose_head_can_read_the_sentence_embedding_itself():
    """model.g_layer_pose_text: the pose head reads cat(z, c, embedding); it starts upright like the
    others, the embedding's part of its weights moves the object, and a missing embedding is an error."""
    from stackgan.models.build import generator_args, generator_from_args

    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.g_layered=true",
                                                             "model.g_layer_pose_text=true"])
    torch.manual_seed(0)
    G = generator_from_args(generator_args(cfg.model, 1)).eval()
    layer = G.foreground
    z, emb = torch.randn(3, cfg.model.z_dim), torch.randn(3, 12)
    zc = torch.cat([z, G.ca(emb)[0]], 1)
    assert layer.pose.in_features == zc.shape[1] + 12
    assert torch.count_nonzero(layer.pose_params(zc, emb)) == 0
    with torch.no_grad():
        upright = G(z, emb).image
        layer.pose.weight[2, zc.shape[1]] = 1.0  # tx = the embedding's first dimension
        moved = G(z, emb).image
    assert torch.allclose(layer.pose_params(zc, emb)[:, 2], emb[:, 0])
    assert not torch.allclose(moved, upright)  # that weight reaches the image
    with pytest.raises(ValueError, match="reads a sentence embedding of 12 dims"):
        layer.pose_params(zc)
    with pytest.raises(ValueError, match="g_layer_pose_text needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_pose_text=true"])


def test_tapered_canvas_never_draws_its_edge():
    """model.g_layer_taper: the canvas's mask is 0 on its outer pixel ring, rises over 3 pixels and
    is untouched inside; without it, a mask that is 1 everywhere reaches the edge."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    for taper in (False, True):
        layer = ForegroundLayer(6, ngf=4, taper=taper).eval()
        with torch.no_grad():
            layer.to_rgba.bias[3:] = 30.0  # the mask logit: sigmoid = 1 everywhere
            layer.to_rgba.weight.zero_()
            _, mask = layer.canvas(torch.randn(2, 6))
        edge = torch.cat([mask[..., 0, :], mask[..., -1, :], mask[..., :, 0], mask[..., :, -1]], -1)
        assert edge.min() == (0.0 if taper else 1.0)
        assert torch.allclose(mask[..., 3:-3, 3:-3], torch.ones(1))
        if taper:
            assert torch.allclose(mask[0, 0, 16, :4], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_layered_generator_trains_its_pose_and_survives_export():
    from stackgan.models.build import generator_args, generator_from_args

    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.g_layered=true"])
    assert "layered" not in generator_args(get_preset("fast-sn-noca").model, 1)["stage1"]
    for stage in (2, 1):
        torch.manual_seed(0)
        G = generator_from_args(generator_args(cfg.model, stage))
        g1 = G if stage == 1 else G.stage1
        assert g1.foreground is not None and torch.count_nonzero(g1.foreground.pose.weight) == 0
        out = G(torch.randn(4, cfg.model.z_dim), torch.randn(4, 12))
        assert out.image.shape[-1] == (64 if stage == 1 else 256)
    out.image.square().mean().backward()  # Stage I (Stage II keeps its Stage I frozen)
    assert g1.foreground.pose.weight.grad.abs().sum() > 0  # the placement learns from the image's loss


def test_implicit_canvas_reads_coordinates_and_starts_blind_to_the_condition():
    """model.g_layer_canvas=mlp: the canvas is a per-pixel MLP of (u, v) and their Fourier
    features; its FiLM layers start as the identity (every condition draws the same canvas) and
    the condition changes it once they have learned something."""
    from stackgan.models.layered import ForegroundLayer, fourier_features

    f = fourier_features(4, octaves=2)
    assert f.shape == (1, 10, 4, 4)
    assert f[0, 0, 0].tolist() == pytest.approx([-0.75, -0.25, 0.25, 0.75])  # u along a row
    assert f[0, 1, :, 0].tolist() == pytest.approx([-0.75, -0.25, 0.25, 0.75])  # v down a column
    assert torch.allclose(f[0, 2], torch.sin(torch.pi * f[0, 0]))  # sin(pi u), cos(pi u), sin(pi v), ...
    assert torch.allclose(f[0, 6], torch.sin(2 * torch.pi * f[0, 0]), atol=1e-6)  # ... sin(pi 2 u)
    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, canvas="mlp").eval()
    rgb, mask = layer.canvas(torch.randn(2, 6))
    assert rgb.shape == (2, 3, 32, 32) and mask.shape == (2, 1, 32, 32)
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(mask[0], mask[1])
    assert rgb[0].std() > 0  # it does depend on the pixel's position
    with torch.no_grad():
        layer.film[0].bias[-1].weight.normal_()
    rgb, _ = layer.canvas(torch.randn(2, 6))
    assert not torch.allclose(rgb[0], rgb[1])
    with pytest.raises(ValueError, match="canvas must be one of conv, mlp"):
        ForegroundLayer(6, ngf=4, canvas="svg")


def test_smooth_background_cannot_hold_an_object():
    """model.g_layer_background=smooth: Stage I has no up-sampling path; what lies under the
    layer is a 4x4 image enlarged bilinearly (no detail finer than a quarter of the image; with
    ``vertical``, 4 rows of 1 column: nothing changes along a row), and
    the object comes from the layer alone (export: tests/test_pipeline.py)."""
    from stackgan.models.build import generator_args, generator_from_args
    from stackgan.models.layered import SmoothBackground

    torch.manual_seed(0)
    bg = SmoothBackground(6)
    with torch.no_grad():
        bg.fc.weight.mul_(100.0)  # values near -1 and 1 in neighbouring cells of the 4x4 image
        img = bg(torch.randn(3, 6))
    assert img.shape == (3, 3, 64, 64) and img.amax() - img.amin() > 1.5
    # bilinear from 4x4 to 64x64: neighbouring pixels differ by at most 2 / 16 (an edge: about 2)
    assert (img[..., 1:] - img[..., :-1]).abs().max() <= 2 / 16 + 1e-6
    assert (img[..., 1:, :] - img[..., :-1, :]).abs().max() <= 2 / 16 + 1e-6
    # vertical (model.g_layer_background=vertical): 4 rows, 1 column: no change along a row at all
    torch.manual_seed(0)
    rows = SmoothBackground(6, columns=1)
    with torch.no_grad():
        rows.fc.weight.mul_(100.0)
        img = rows(torch.randn(3, 6))
    assert (img - img[..., :1]).abs().max() < 1e-6 and (img[..., 0, 0] - img[..., -1, 0]).abs().max() > 0.5
    # ramp (model.g_layer_background=ramp): the same along a row, and down a column a straight line from the
    # top colour to the bottom one (equal steps between rows): no band of any colour fits in it
    torch.manual_seed(0)
    ramp = SmoothBackground(6, ramp=True)
    with torch.no_grad():
        ramp.fc.weight.mul_(100.0)
        img = ramp(torch.randn(3, 6))
    steps = img[..., 1:, 0] - img[..., :-1, 0]  # [3, 3, 63]
    assert (img - img[..., :1]).abs().max() < 1e-6
    assert torch.allclose(steps, steps[..., :1].expand_as(steps), atol=1e-5) and steps.abs().max() > 0.5 / 63
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.g_layered=true",
                                                                "model.g_layer_background=smooth"])
    G = generator_from_args(generator_args(cfg.model, 1))
    assert not hasattr(G, "up") and isinstance(G.background, SmoothBackground)
    z, text = torch.randn(4, cfg.model.z_dim), torch.randn(4, 12)
    G.eval()
    with torch.no_grad():
        out = G(z, text).image
        zc = torch.cat([z, G.ca(text)[0]], 1)
        assert torch.allclose(out, G.foreground(zc, G.background(zc)))
        G.foreground.to_rgba.bias[3:] = -30.0  # the layer's mask off: only the background is left
        assert torch.allclose(G(z, text).image, G.background(zc), atol=1e-5)
    assert generator_args(cfg.model, 1)["stage1"]["background"] == "smooth"
    vertical = generator_from_args(generator_args(apply_overrides(cfg, ["model.g_layer_background=vertical"]).model, 1))
    assert vertical.background.columns == 1 and not hasattr(vertical, "up")
    ramped = generator_from_args(generator_args(apply_overrides(cfg, ["model.g_layer_background=ramp"]).model, 1))
    assert ramped.background.ramp and ramped.background.fc.out_features == 3 * 2 and not hasattr(ramped, "up")
    assert "background" not in generator_args(apply_overrides(cfg, ["model.g_layer_background=full"]).model, 1)["stage1"]
    with pytest.raises(ValueError, match="needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_background=smooth"])
    wide = generator_from_args(generator_args(apply_overrides(cfg, ["model.g_layer_scale0=0.6"]).model, 1))
    assert wide.foreground.log_scale0 == pytest.approx(math.log(0.6))
    assert "scale0" not in generator_args(cfg.model, 1)["stage1"]  # only written when changed
    with pytest.raises(ValueError, match="g_layer_scale0 needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_scale0=0.6"])
    with pytest.raises(ValueError, match=r"g_layer_scale0 must be in \(0, 1\]"):
        apply_overrides(cfg, ["model.g_layer_scale0=0"])
    for switch in ("g_layer_spin", "g_layer_taper", "g_layer_normalize"):
        with pytest.raises(ValueError, match=f"{switch} needs the layered generator"):
            apply_overrides(get_preset("fast-sn-noca"), [f"model.{switch}=true"])
    with pytest.raises(ValueError, match="which a smooth background"):
        generator_from_args(generator_args(apply_overrides(cfg, ["model.g_coords=true"]).model, 1))
    with pytest.raises(ValueError, match="g_layer_background = 'blur'; accepted"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_background=blur"])


def test_info_codes_are_read_back_by_d_and_teach_g():
    """model.info_codes (InfoGAN): a head on the Stage-I D reads z's first K dims back from the
    image; the logged G/info is the squared error of that read-back, and the term changes G's
    update (with D's learning rate 0 the read-back is computed with the D that G's update sees)."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.info_codes=3"])
    plain = build_discriminator(apply_overrides(cfg, ["model.info_codes=0"]).model, 1)
    assert plain.info(torch.zeros(2, 8 * cfg.model.ndf1, 4, 4)) is None
    real, text, wrong, z = _batch(cfg)
    after = {}
    for weight in (0.0, 1.0):
        c = apply_overrides(cfg, [f"stage1.info_weight={weight}"])
        G, D = _seeded_nets(c)
        with torch.no_grad():
            read = D.info(D(G(z, text).image))
        assert read.shape == (4, 3)
        expected = (read - z[:, :3]).square().mean().item()
        logged, after[weight] = _one_update(c, G, D, real, text, wrong, z)
        assert logged["G/info"] == pytest.approx(expected, rel=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(after[0.0], after[1.0]))
    with pytest.raises(ValueError, match="info_codes must be in"):
        apply_overrides(cfg, [f"model.info_codes={cfg.model.z_dim + 1}"])
    with pytest.raises(ValueError, match="info_codes needs the paper's D"):
        build_discriminator(apply_overrides(cfg, ["model.d_arch=resnet"]).model, 1)


def test_mask_area_prior_is_the_mean_placed_mask_and_shrinks_it():
    """stage1.mask_weight (an area prior on the mask): the logged G/mask is the mean of the layer's
    placed mask over the image, and the term moves G so that the mask covers less; it needs the
    layered generator and acts on Stage I only."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.g_layered=true",
                                                                "model.g_layer_background=smooth"])
    real, text, wrong, z = _batch(cfg)
    area = {}
    for weight in (0.0, 50.0):
        c = apply_overrides(cfg, [f"stage1.mask_weight={weight}"])
        G, D = _seeded_nets(c)
        G.eval()  # BatchNorm in the canvas path: eval, so that the mask read here is the one trained on
        with torch.no_grad():
            G(z, text)
        expected = G.foreground.mask.mean().item()
        assert 0.0 < expected < 1.0
        logged, _ = _one_update(c, G, D, real, text, wrong, z)
        assert logged["G/mask"] == pytest.approx(expected if weight else 0.0, rel=1e-5)
        with torch.no_grad():
            G(z, text)
        area[weight] = G.foreground.mask.mean().item()
    assert area[50.0] < area[0.0]
    with pytest.raises(ValueError, match="mask_weight needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["stage1.mask_weight=1"])
    with pytest.raises(ValueError, match="stage2.mask_weight must be 0"):
        apply_overrides(cfg, ["stage2.mask_weight=1"])
    from stackgan.training.step import mask_weight
    warm = apply_overrides(cfg, ["stage1.mask_weight=4", "stage1.mask_warmup=100"]).stage1
    assert [mask_weight(warm, s) for s in (0, 25, 100, 900)] == [0.0, 1.0, 4.0, 4.0]


def test_outline_prior_is_the_summed_harmonic_amplitude_and_shrinks_the_lumps():
    """stage1.outline_weight (a group lasso on the radial outline): the logged G/outline is the batch mean of
    sum_k sqrt(a_k^2 + b_k^2) over the outline's harmonics, the same for the outline turned by any angle (the
    amplitudes do not move), 0 for the starting disc, and the term moves G so that the amplitudes shrink (before
    stage1.outline_start it is logged but moves nothing); it needs the radial outline and acts on Stage I only."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.g_layered=true",
                                                                "model.g_layer_background=smooth",
                                                                "model.g_layer_radial=3"])
    real, text, wrong, z = _batch(cfg)
    G, _ = _seeded_nets(cfg)
    G.eval()
    with torch.no_grad():
        G(z, text)
        assert G.foreground.outline_cost().item() == pytest.approx(0.0, abs=1e-3)  # a disc: no harmonics
        G.foreground.outline.bias.copy_(torch.tensor([0.3, 0.0, -0.2, 0.0, 0.4, 0.0]))  # a_1..a_3, b_1..b_3
        G(z, text)
        coef = G.foreground.coef  # [B, 6]
        by_hand = sum((coef[:, k] ** 2 + coef[:, 3 + k] ** 2).sqrt() for k in range(3)).mean()
        assert G.foreground.outline_cost().item() == pytest.approx(by_hand.item(), rel=1e-5)
        # turned by phi, the k-th harmonic's (a, b) turns by k phi: r(theta - phi) has the same amplitudes
        phi = 0.7
        a, b = coef[:, :3], coef[:, 3:]
        k = torch.arange(1, 4)
        cos, sin = torch.cos(k * phi), torch.sin(k * phi)
        turned = torch.cat([a * cos - b * sin, a * sin + b * cos], 1)
        G.foreground.coef = turned
        assert G.foreground.outline_cost().item() == pytest.approx(by_hand.item(), rel=1e-5)
    amplitude = {}
    for weight in (0.0, 0.1):
        c = apply_overrides(cfg, [f"stage1.outline_weight={weight}"])
        G, D = _seeded_nets(c)
        with torch.no_grad():
            G.foreground.outline.bias.copy_(torch.tensor([0.3, 0.0, -0.2, 0.0, 0.4, 0.0]))
        G.eval()
        with torch.no_grad():
            G(z, text)
        expected = G.foreground.outline_cost().item()
        assert expected > 0.5
        logged, _ = _one_update(c, G, D, real, text, wrong, z)
        assert logged["G/outline"] == pytest.approx(expected if weight else 0.0, rel=1e-4)
        with torch.no_grad():
            G(z, text)
        amplitude[weight] = G.foreground.outline_cost().item()
    assert amplitude[0.1] < amplitude[0.0]
    late = apply_overrides(cfg, ["stage1.outline_weight=0.1", "stage1.outline_start=1"])  # not yet at step 0
    G, D = _seeded_nets(late)
    with torch.no_grad():
        G.foreground.outline.bias.copy_(torch.tensor([0.3, 0.0, -0.2, 0.0, 0.4, 0.0]))
    G.eval()
    logged, _ = _one_update(late, G, D, real, text, wrong, z)
    with torch.no_grad():
        G(z, text)
    assert logged["G/outline"] > 0.5 and G.foreground.outline_cost().item() == pytest.approx(amplitude[0.0], rel=1e-5)
    with pytest.raises(ValueError, match="outline_weight needs the radial outline"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "stage1.outline_weight=1"])
    with pytest.raises(ValueError, match="stage2.outline_weight must be 0"):
        apply_overrides(cfg, ["stage2.outline_weight=1"])
    with pytest.raises(ValueError, match="outline_weight must be >= 0"):
        apply_overrides(cfg, ["stage1.outline_weight=-1"])


def test_g_hold_skips_g_update_for_the_first_steps():
    """stage1.g_hold=N: in the run's first N steps only D learns (G's weights as they were), from step N on G's
    update is made again."""
    from stackgan.training.step import LOGGED, Updater

    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "stage1.g_hold=2"])
    real, text, wrong, z = _batch(cfg)
    moved = {}
    for step in (1, 2):
        G, D = _seeded_nets(cfg)
        before = [p.detach().clone() for p in G.parameters()]
        opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.1), torch.optim.SGD(D.parameters(), 0.1)
        d_before = [p.detach().clone() for p in D.parameters()]
        logged = dict(zip(LOGGED, Updater(cfg, 1, G, D, opt_g, opt_d, device=torch.device("cpu"))(
            real, text, wrong, z, step)))
        assert logged["G/adv"] != 0  # G's loss is still computed and logged
        moved[step] = any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))
        assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))  # D learns either way
    assert moved == {1: False, 2: True}
    with pytest.raises(ValueError, match="g_hold must be >= 0"):
        apply_overrides(cfg, ["stage1.g_hold=-1"])


def test_contrastive_loss_matches_a_hand_computation_and_shares_repeated_captions():
    """stackgan.losses.contrastive_loss: cross-entropy of cosine / temperature from each image to the
    batch's texts; two captions with one condition are both right answers for either image."""
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    condition = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # captions 1 and 2 are one condition
    cos = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.6, 0.8, 0.8]])
    logp = cos / 0.5 - np.log(np.exp(cos / 0.5).sum(1, keepdims=True))
    expected = -np.mean([logp[0, 0], (logp[1, 1] + logp[1, 2]) / 2, (logp[2, 1] + logp[2, 2]) / 2])
    assert contrastive_loss(image, text, condition, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # extra candidates (D's wrong captions): more columns; one from the image's own condition is right too
    extra, extra_condition = torch.tensor([[1.0, 1.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    cos = np.concatenate([cos, [[0.5 ** 0.5, 1.0], [0.5 ** 0.5, 0.0], [1.4 / 2 ** 0.5, 0.6]]], axis=1)
    logp = cos / 0.5 - np.log(np.exp(cos / 0.5).sum(1, keepdims=True))
    expected = -np.mean([(logp[0, 0] + logp[0, 4]) / 2, (logp[1, 1] + logp[1, 2]) / 2, (logp[2, 1] + logp[2, 2]) / 2])
    got = contrastive_loss(image, text, condition, 0.5, extra, extra_condition).item()
    assert got == pytest.approx(expected, rel=1e-6)
    # an image that points at its own text scores lower than one that points at another's
    assert contrastive_loss(text, text, text, 0.1) < contrastive_loss(text.flip(0), text, text, 0.1)


def test_contrastive_head_trains_d_on_real_pairs_and_g_on_its_own():
    """model.d_contrast + stage1.contrast_weight (XMC-GAN): D's head embeds its 4x4 code and its text
    code; the logged D/contrast is the loss on (real image, its text) and G/contrast the loss on
    (G's image, its text) under D's weights as built (its learning rate is 0 here); the term changes G's
    update. The weight needs the head."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.d_contrast=8"])
    real, text, wrong, z = _batch(cfg)
    after = {}
    for weight in (0.0, 1.0):
        c = apply_overrides(cfg, [f"stage1.contrast_weight={weight}"])
        G, D = _seeded_nets(c)
        with torch.no_grad():  # on a copy of D: its spectral norm's power iteration steps at each call
            Dc, fake = copy.deepcopy(D), G(z, text).image
            head, t = Dc.contrast, Dc.text(text)
            on_real = contrastive_loss(head.image(Dc(real)), head.text(t), text).item()
            Dc(fake)  # D's update sees the fake batch once, then G's update scores it
            on_fake = contrastive_loss(head.image(Dc(fake)), head.text(t), text).item()
        logged, after[weight] = _one_update(c, G, D, real, text, wrong, z)
        assert logged["D/contrast"] == pytest.approx(on_real if weight else 0.0, rel=1e-5)
        assert logged["G/contrast"] == pytest.approx(on_fake if weight else 0.0, rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(after[0.0], after[1.0]))
    assert not hasattr(build_discriminator(get_preset("fast-sn-noca").model, 1), "contrast")
    with pytest.raises(ValueError, match="contrast_weight needs D's contrastive head"):
        apply_overrides(get_preset("fast-sn-noca"), ["stage1.contrast_weight=1"])
    with pytest.raises(ValueError, match="contrast_temp must be > 0"):
        apply_overrides(cfg, ["stage2.contrast_temp=0"])
    with pytest.raises(ValueError, match="stage1.contrast_wrong picks candidates for the contrastive loss, which is off"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.d_contrast=8", "stage1.contrast_wrong=true"])


def test_contrastive_loss_fake_candidate_is_never_right_for_real_images_and_the_only_answer_for_generated():
    """model.d_contrast_fake: the head's learned "generated" text is one more column of the softmax;
    for images in D's real / G's update it is a wrong answer, for G's images in D's update (generated)
    the only right one."""
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    fake = torch.tensor([3.0, 3.0])  # cosine 0.5 ** 0.5 with either image
    c = 0.5 ** 0.5
    cos = np.array([[1.0, 0.0, c], [0.0, 1.0, c]])
    logp = cos / 0.5 - np.log(np.exp(cos / 0.5).sum(1, keepdims=True))
    real = contrastive_loss(image, text, text, 0.5, fake=fake).item()
    assert real == pytest.approx(-np.mean([logp[0, 0], logp[1, 1]]), rel=1e-6)
    generated = contrastive_loss(image, text, text, 0.5, fake=fake, generated=True).item()
    assert generated == pytest.approx(-np.mean(logp[:, 2]), rel=1e-6)
    with pytest.raises(ValueError, match="needs the fake candidate"):
        contrastive_loss(image, text, text, 0.5, generated=True)


def test_contrastive_head_fake_text_is_trained_by_d_on_g_images():
    """model.d_contrast_fake: D's update adds the head's loss on G's images with the "generated" text as
    their answer (logged inside D/contrast), and only D's update moves that text; it needs the head."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.d_contrast=8",
                                                             "stage1.contrast_weight=1", "model.d_contrast_fake=true",
                                                             "model.d_spectral_norm=false"])  # no power iteration per call
    real, text, wrong, z = _batch(cfg)
    G, D = _seeded_nets(cfg)
    assert D.contrast.fake.shape == (8,)
    with torch.no_grad():
        Dc, fake = copy.deepcopy(D), G(z, text).image
        head = Dc.contrast
        on_real = contrastive_loss(head.image(Dc(real)), head.text(Dc.text(text)), text, fake=head.fake).item()
        on_gen = contrastive_loss(head.image(Dc(fake)), head.text(Dc.text(text)), text, fake=head.fake,
                                  generated=True).item()
    from stackgan.training.step import LOGGED, Updater
    before = D.contrast.fake.detach().clone()
    opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.0), torch.optim.SGD(D.parameters(), 0.1)
    logged = dict(zip(LOGGED, Updater(cfg, 1, G, D, opt_g, opt_d, device=torch.device("cpu"))(real, text, wrong, z)))
    assert logged["D/contrast"] == pytest.approx(on_real + on_gen, rel=1e-5)
    assert not torch.equal(D.contrast.fake.detach(), before)
    assert not hasattr(build_discriminator(apply_overrides(cfg, ["model.d_contrast_fake=false"]).model, 1).contrast.fake,
                       "shape")
    with pytest.raises(ValueError, match="d_contrast_fake needs D's contrastive head"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.d_contrast_fake=true"])


def test_discriminator_stem_keeps_the_code_shape_and_adds_a_full_resolution_stage():
    """model.d_stem: a stride-1 conv at 64 px before the down-blocks; D's 4x4 code is unchanged in
    shape; the paper's D only."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12"])
    plain, stem = (build_discriminator(apply_overrides(cfg, [f"model.d_stem={on}"]).model, 1) for on in ("false", "true"))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert plain(x).shape == stem(x).shape
    first = stem.encode[0]
    assert isinstance(first, nn.Conv2d) and first.stride == (1, 1) and first.kernel_size == (3, 3)
    assert stem.encode[0](x).shape[-1] == 64
    with pytest.raises(ValueError, match="d_stem applies to the paper's D"):
        build_discriminator(apply_overrides(cfg, ["model.d_stem=true", "model.d_arch=resnet"]).model, 1)


def test_zoom_scales_each_image_about_its_centre_by_its_own_random_factor():
    """stackgan.augment.zoom: a centred 16 px square becomes 16 f px wide, f log-uniform in
    [1 / m, m] drawn per image from torch's RNG; 1 is the identity; gradients pass."""
    from stackgan.augment import zoom
    x = -torch.ones(6, 1, 64, 64)
    x[:, :, 24:40, 24:40] = 1.0
    assert torch.equal(zoom(x, 1.0), x)
    torch.manual_seed(3)
    factors = torch.exp((torch.rand(6) * 2 - 1) * math.log(2.0))
    torch.manual_seed(3)
    x.requires_grad_(True)
    y = zoom(x, 2.0)
    widths = ((y[:, 0, 32] > 0).sum(1)).float()  # the square's width along the middle row
    assert torch.allclose(widths, 16 * factors, atol=1.5)
    assert factors.min() >= 0.5 and factors.max() <= 2.0 and factors.std() > 0.05
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_contrast_zoom_gives_the_contrastive_head_a_pass_of_its_own_and_needs_the_loss():
    """stage1.contrast_zoom: the logged D/contrast is the head's loss on zoomed copies of the real images
    (stackgan.augment.zoom, from the same random state) while the matching-aware terms stay; 1 is off;
    below 1, or without the contrastive loss, is an error."""
    from stackgan.augment import zoom
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.d_contrast=8",
                                                             "stage1.contrast_weight=1", "model.d_spectral_norm=false"])
    real, text, wrong, z = _batch(cfg)
    logged, expected = {}, {}
    for factor in (1.0, 2.0):
        c = apply_overrides(cfg, [f"stage1.contrast_zoom={factor}"])
        G, D = _seeded_nets(c)
        with torch.no_grad():  # by hand: the head on zoomed copies drawn from the same random state
            torch.manual_seed(5)
            head = D.contrast
            expected[factor] = contrastive_loss(head.image(D(zoom(real, factor))), head.text(D.text(text)), text).item()
        torch.manual_seed(5)
        logged[factor], _ = _one_update(c, G, D, real, text, wrong, z)
        assert logged[factor]["D/contrast"].item() == pytest.approx(expected[factor], rel=1e-5)
    assert logged[1.0]["D/real"].item() == pytest.approx(logged[2.0]["D/real"].item(), rel=1e-6)
    assert expected[1.0] != pytest.approx(expected[2.0], rel=1e-6)
    with pytest.raises(ValueError, match="contrast_zoom must be >= 1"):
        apply_overrides(cfg, ["stage1.contrast_zoom=0.5"])
    with pytest.raises(ValueError, match="contrast_zoom zooms the images of the contrastive loss, which is off"):
        apply_overrides(get_preset("fast-sn-noca"), ["stage1.contrast_zoom=1.4"])


def test_contrast_trunk_gives_the_head_an_encoder_of_its_own_in_the_checkers_layout():
    """model.d_contrast_trunk=checker: the logged D/contrast is the head's loss on its own encoder's code
    of the real images (the checker's layout: 3x3 convs, stride-1 last stage, pooled to 4x4, widths
    1, 2, 4, 6, 8 ndf), which follows D's BatchNorm and spectral-norm settings and gets D's gradient."""
    from torch.nn.utils.parametrize import is_parametrized
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.d_contrast=8",
                                                             "stage1.contrast_weight=1", "model.d_contrast_trunk=checker"])
    real, text, wrong, z = _batch(cfg)
    G, D = _seeded_nets(cfg)
    convs = [m for m in D.contrast_trunk if isinstance(m, nn.Conv2d)]
    assert [c.out_channels // cfg.model.ndf1 for c in convs] == [1, 2, 4, 6, 8] and convs[-1].stride[0] == 1
    assert all(is_parametrized(c, "weight") for c in convs)  # D's spectral norm
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())  # this D has no BatchNorm, nor has its trunk
    assert D.contrast_trunk(real).shape == (len(real), 8 * cfg.model.ndf1, 4, 4)
    cfg = apply_overrides(cfg, ["model.d_spectral_norm=false"])  # (its power iteration steps at every call)
    G, D = _seeded_nets(cfg)
    with torch.no_grad():
        Dc = copy.deepcopy(D)
        expected = contrastive_loss(Dc.contrast.image(Dc.contrast_trunk(real)), Dc.contrast.text(Dc.text(text)),
                                    text).item()
    logged, _ = _one_update(cfg, G, D, real, text, wrong, z)
    assert logged["D/contrast"].item() == pytest.approx(expected, rel=1e-5)
    from stackgan.training.step import Updater  # D's update moves the trunk (the weights of its last conv here)
    G, D = _seeded_nets(cfg)
    last = [m for m in D.contrast_trunk if isinstance(m, nn.Conv2d)][-1].weight
    before = last.detach().clone()
    Updater(cfg, 1, G, D, torch.optim.SGD(G.parameters(), 0.0), torch.optim.SGD(D.parameters(), 0.1),
            device=torch.device("cpu"))(real, text, wrong, z)
    assert not torch.equal(before, last.detach())
    with pytest.raises(ValueError, match="d_contrast_trunk needs D's contrastive head"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.d_contrast_trunk=checker"])
    with pytest.raises(ValueError, match="d_contrast_trunk"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.d_contrast=8", "model.d_contrast_trunk=resnet"])


def test_discriminator_deep_encoder_reads_128_px_through_3x3_convs_into_the_same_code():
    """model.d_deep: the image enlarged to 128 px, a 4x4 stride-2 stem, 3x3 convs (the last at stride 1),
    ReLU and no BatchNorm, averaged to D's usual 4x4 code of 8 ndf channels; not with d_stem or the
    residual D."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.d_deep=true"])
    D = build_discriminator(cfg.model, 1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert D(x).shape == (2, 8 * cfg.model.ndf1, 4, 4)
    convs = [m for m in D.encode if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [4, 3, 3, 3, 3] and [c.stride[0] for c in convs] == [2, 2, 2, 2, 1]
    assert [c.out_channels // cfg.model.ndf1 for c in convs] == [1, 2, 4, 6, 8]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert D.encode[0](x).shape[-1] == 128
    with pytest.raises(ValueError, match="two encoders; choose one"):
        build_discriminator(apply_overrides(cfg, ["model.d_stem=true"]).model, 1)
    with pytest.raises(ValueError, match="d_deep applies to the paper's D"):
        build_discriminator(apply_overrides(cfg, ["model.d_arch=resnet"]).model, 1)


def test_anchor_grid_places_the_layer_at_each_point_and_every_anchor_learns_from_the_image():
    """model.g_layer_anchors: with one anchor's logit far above the others the image is the plain
    layer's with its translation at that anchor; at the start the weights are uniform; an image loss
    that wants the object in the top-left corner moves that anchor's logit up (a gradient from the
    whole image, not only from the object's edges)."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, anchors=3).eval()
    plain = ForegroundLayer(6, ngf=4, scale0=0.3).eval()
    plain.load_state_dict({k: v[:4] if k.startswith("pose.") else v for k, v in layer.state_dict().items()})
    assert layer.anchor_xy.tolist()[0] == pytest.approx([-2 / 3, -2 / 3])  # top left, row by row
    assert layer.anchor_xy.tolist()[5] == pytest.approx([2 / 3, 0.0])  # middle row, right
    zc, bg = torch.randn(2, 6), torch.full((2, 3, 64, 64), -1.0)
    with torch.no_grad():
        layer.to_rgba.bias[3:] = 5.0  # a visible object
        plain.to_rgba.bias[3:] = 5.0
    assert torch.allclose(layer.anchor_weights(zc), torch.full((2, 9), 1 / 9))
    with torch.no_grad():
        layer.pose.bias[4 + 5] = 50.0  # anchor 5 (middle row, right) wins
        plain.pose.bias[2:4] = torch.tensor([2 / 3, 0.0])
    assert torch.allclose(layer(zc, bg), plain(zc, bg), atol=1e-5)
    assert torch.allclose(layer.mask, plain.mask, atol=1e-5)
    with torch.no_grad():
        layer.pose.bias[4:] = 0.0
    target = torch.full((2, 3, 64, 64), -1.0)
    target[..., :22, :22] = 1.0  # a white object in the top-left cell
    (layer(zc, bg) - target).square().mean().backward()
    grad = layer.pose.bias.grad[4:]
    assert grad[0] < 0 and (grad[1:] > 0).all()  # gradient descent raises the top-left anchor only
    with pytest.raises(ValueError, match="at least 2 per side"):
        ForegroundLayer(6, ngf=4, anchors=1)
    with pytest.raises(ValueError, match="g_layer_anchors needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_anchors=3"])
    with pytest.raises(ValueError, match="at least 2"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_anchors=1"])


def test_round_frame_leaves_no_corner_to_draw_in():
    """model.g_layer_round: the canvas mask is 0 outside the frame's inscribed circle (its corners
    included), untouched near the centre, and the same at the four ends of the circle's axes."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, taper=True, round_frame=True).eval()
    with torch.no_grad():
        layer.to_rgba.bias[3:] = 30.0  # the mask logit: sigmoid = 1 everywhere
        layer.to_rgba.weight.zero_()
        _, mask = layer.canvas(torch.randn(2, 6))
    m = mask[0, 0]
    assert m[0, 0] == 0 and m[2, 2] == 0 and m[-3, -3] == 0  # the corners: nothing
    assert torch.allclose(m[8:24, 8:24], torch.ones(1))  # well inside the circle: as drawn
    assert m[16, 0] == 0 and m[16, 3] > 0  # the circle's edge on the middle row, like a square taper's there
    assert torch.allclose(m, m.flip(0)) and torch.allclose(m, m.T)  # round: the same on every axis
    with pytest.raises(ValueError, match="g_layer_round needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_round=true"])


def test_symmetric_outline_prior_leaves_the_leading_harmonic_and_its_multiples():
    """stage1.outline_symmetric: each outline's strongest harmonic m >= 2 and its multiples cost nothing, the
    others (h1 and the lumps off the symmetry) what the plain prior charges; an outline whose strongest harmonic
    is under 0.05 pays for all; the option needs stage1.outline_weight."""
    cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.g_layered=true",
                                                                "model.g_layer_background=smooth",
                                                                "model.g_layer_radial=7"])
    G, _ = _seeded_nets(cfg)
    fg = G.foreground
    amp = torch.tensor([[0.02, 0.0, 0.30, 0.05, 0.0, 0.10, 0.04],   # a triangle: h3 leads; h6 kept; h1, h4, h7 pay
                        [0.0, 0.0, 0.0, 0.12, 0.03, 0.0, 0.0],      # a square: h4 leads; h5 pays
                        [0.01, 0.04, 0.0, 0.0, 0.0, 0.02, 0.0]])    # a circle's lumps (h2 leads at 0.04): all pay
    phase = torch.tensor([0.3, 1.1, -0.4, 2.0, 0.7, -1.3, 0.2])
    fg.coef = torch.cat([amp * torch.cos(phase), amp * torch.sin(phase)], 1)  # [B, 2K]: cosines first
    plain = (0.02 + 0.30 + 0.05 + 0.10 + 0.04 + 0.12 + 0.03 + 0.01 + 0.04 + 0.02) / 3
    kept = (0.02 + 0.05 + 0.04 + 0.03 + 0.01 + 0.04 + 0.02) / 3
    assert fg.outline_cost().item() == pytest.approx(plain, abs=1e-3)  # each 0 adds sqrt(1e-8) / 3
    assert fg.outline_cost(symmetric=True).item() == pytest.approx(kept, abs=1e-3)
    cost = apply_overrides(cfg, ["stage1.outline_weight=0.1", "stage1.outline_symmetric=true"])
    assert cost.stage1.outline_symmetric
    with pytest.raises(ValueError, match="outline_symmetric changes the outline prior"):
        apply_overrides(cfg, ["stage1.outline_symmetric=true"])
    # stage1.outline_shape: the shape word's fundamental alone is free (the square's h4 although h3 leads there)
    orders = torch.tensor([3, 4, 0])  # triangle, square, circle
    by_word = (0.02 + 0.05 + 0.10 + 0.04 + 0.12 * 0 + 0.03 + 0.01 + 0.04 + 0.02) / 3
    assert fg.outline_cost(orders=orders).item() == pytest.approx(by_word, abs=1e-3)
    assert apply_overrides(cfg, ["stage1.outline_weight=0.1", "stage1.outline_shape=true"]).stage1.outline_shape
    with pytest.raises(ValueError, match="outline_shape changes the outline prior"):
        apply_overrides(cfg, ["stage1.outline_shape=true"])
    with pytest.raises(ValueError, match="choose one"):
        apply_overrides(cfg, ["stage1.outline_weight=0.1", "stage1.outline_shape=true",
                              "stage1.outline_symmetric=true"])
    # stage1.outline_target: |amp - the data's amplitude| per harmonic, from above and below
    from stackgan.data.shapes import outline_amplitudes
    from stackgan.training.step import outline_targets
    target = outline_targets(7, torch.device("cpu"))[orders]  # [3, 7]: triangle, square, circle
    assert torch.equal(target[0], outline_amplitudes("triangle", 7)) and not target[2].any()
    assert target[0, 2] > 0.2 and target[1, 3] > 0.1 and target[0, 3] < 1e-3  # h3 of a triangle, h4 of a square
    by_hand = (amp - target).abs().sum(1).mean()
    assert fg.outline_cost(target=target).item() == pytest.approx(by_hand.item(), abs=1e-3)
    fg.coef = torch.cat([target * torch.cos(phase), target * torch.sin(phase)], 1)  # the data's own outlines
    assert fg.outline_cost(target=target).item() == pytest.approx(0.0, abs=1e-3)
    assert apply_overrides(cfg, ["stage1.outline_weight=0.1", "stage1.outline_target=true"]).stage1.outline_target
    with pytest.raises(ValueError, match="outline_target changes the outline prior"):
        apply_overrides(cfg, ["stage1.outline_target=true"])
    # stage1.outline_phase: the corners' harmonics are aimed at the data's coefficient turned with the outline's own
    # fundamental: the data's outlines at any rotation cost nothing; a square whose h8 is out of phase pays 2 |h8|
    turned = outline_targets(7, torch.device("cpu"), turned=True)[orders]
    assert torch.allclose(turned.abs(), target, atol=1e-6)  # the same amplitudes (signed: in phase with h_n)
    k = torch.arange(1, 8)
    for angle in (0.0, 0.4, -2.1):  # the shape turned by `angle`: c_k -> c_k e^{-ik angle} (a_k - i b_k)
        c = turned * torch.exp(-1j * k * angle)
        fg.coef = torch.cat([c.real, -c.imag], 1).float()
        assert fg.outline_cost(orders=orders, target=turned, turned=True).item() == pytest.approx(0.0, abs=1e-3)
    square = torch.zeros(1, 8)
    square[0, 3], square[0, 7] = 0.137, -0.038  # h4 at phase 0, h8 against it (four lobes); the data's h8 is +0.038
    fg.radial = 8
    fg.coef = torch.cat([square, torch.zeros(1, 8)], 1)
    aim = outline_targets(8, torch.device("cpu"), turned=True)[[4]]
    assert aim[0, 7] == pytest.approx(0.038, abs=2e-3)
    assert fg.outline_cost(orders=torch.tensor([4]), target=aim, turned=True).item() == pytest.approx(
        0.076 + abs(0.137 - aim[0, 3].item()), abs=3e-3)
    assert fg.outline_cost(target=aim.abs()).item() < 0.01  # the amplitude target alone does not see it
    fg.radial = 7
    assert apply_overrides(cfg, ["stage1.outline_weight=0.1", "stage1.outline_target=true",
                                 "stage1.outline_phase=true"]).stage1.outline_phase
    with pytest.raises(ValueError, match="outline_phase turns outline_target's aims"):
        apply_overrides(cfg, ["stage1.outline_weight=0.1", "stage1.outline_phase=true"])


def test_shape_orders_follow_the_batch(tiny_shapes):
    """load_train_data(shape_orders=True) reads each image's shape word as its symmetry order, and
    batch_indices names the images batch() gives (so the step's orders belong to its images); a record
    without a shape attribute is refused with its line."""
    import json
    from stackgan.data.manifest import read_manifest
    from stackgan.data.shapes import SYMMETRY
    from stackgan.training.data import load_train_data, shape_order_of
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY)
    data, _ = load_train_data(tiny_shapes, cfg.data, 64, progress=False, shape_orders=True)
    records = read_manifest(tiny_shapes, "train")
    assert data.shape_order.tolist() == [SYMMETRY[r["attributes"]["shape"]] for r in records]
    assert cfg.data.augment == "none"  # so batch()'s images are the rows themselves, in [-1, 1]
    for step in (0, 3):
        idx = data.batch_indices(step, 4)
        real, _, _ = data.batch(step, 4)
        assert idx.shape == (4,) and len(set(idx.tolist())) == 4
        assert torch.allclose((real + 1) * 127.5, data.images[idx].float(), atol=1e-3)
    with pytest.raises(ValueError, match="line 2: stage1.outline_shape needs"):
        shape_order_of(tiny_shapes, [records[0], {**records[1], "attributes": {}}])


def test_size_prior_holds_the_circumradius_in_the_size_words_range(tiny_shapes):
    """stage1.size_weight: reach() is the drawn object's circumradius (placed scale times the outline's largest
    radius), as the placed mask shows it; size_cost is 0 inside the size word's range of the data and the log
    distance outside it, its gradient turning the scale toward the range; the size words come from the records;
    the option needs the radial outline and acts on Stage I only."""
    import math

    from stackgan.data.manifest import read_manifest
    from stackgan.data.shapes import ATTRIBUTES, RADIUS_RANGE
    from stackgan.models.layered import ForegroundLayer
    from stackgan.training.data import load_train_data, size_word_of
    from stackgan.training.step import size_ranges

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, radial=5)
    with torch.no_grad():
        layer.outline.bias[3] = 0.2  # a_4: a rounded square, its corners at 0.6 e^0.2 on the axes
    layer(torch.randn(2, 6), torch.zeros(2, 3, 64, 64))
    reach = layer.reach()
    assert torch.allclose(reach, torch.full((2,), 0.35 * 0.6 * math.exp(0.2)), atol=1e-4)  # scale0 x the corner
    m = layer.mask[0, 0].detach()
    xy = (torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="xy")) + 0.5) / 32 - 1
    farthest = xy.norm(dim=0)[m > 0.5].max().item()  # image units (the object is at the centre)
    assert abs(farthest - reach[0].item()) < 1.5 / 32
    ranges = size_ranges(torch.device("cpu"))  # [2, 3]: lowest / highest, small to large, image units
    assert ranges[:, 1].tolist() == pytest.approx([36 / 128, 44 / 128]) and ATTRIBUTES["size"][1] == "medium"
    assert RADIUS_RANGE["small"][1] / 128 < reach[0].item() < RADIUS_RANGE["medium"][0] / 128  # between: both pay
    r = reach[0].item()
    for word, cost in ((0, math.log(r / (26 / 128))), (1, math.log((36 / 128) / r))):
        words = torch.tensor([word, word])
        assert layer.size_cost(*ranges[:, words]).item() == pytest.approx(cost, abs=1e-4)
    layer.pose.weight.grad = None
    layer.size_cost(*ranges[:, torch.tensor([2, 2])]).backward()  # too small for "large": the scale must grow
    assert layer.pose.bias.grad[0] < 0
    layer(torch.randn(2, 6), torch.zeros(2, 3, 64, 64))
    wide = torch.tensor([0.01, 0.01]), torch.tensor([10.0, 10.0])
    assert layer.size_cost(*wide).item() == 0.0  # inside the range: no cost
    records = read_manifest(tiny_shapes, "train")
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY)
    data, _ = load_train_data(tiny_shapes, cfg.data, 64, progress=False, size_words=True)
    assert data.size_word.tolist() == [ATTRIBUTES["size"].index(r["attributes"]["size"]) for r in records]
    with pytest.raises(ValueError, match="line 2: stage1.size_weight needs"):
        size_word_of(tiny_shapes, [records[0], {**records[1], "attributes": {"shape": "star"}}])
    radial = apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_radial=7",
                                                          "stage1.size_weight=1"])
    assert radial.stage1.size_weight == 1
    with pytest.raises(ValueError, match="stage1.size_weight needs the radial outline"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "stage1.size_weight=1"])
    with pytest.raises(ValueError, match="stage2.size_weight must be 0"):
        apply_overrides(radial, ["stage2.size_weight=1"])
    # in a training step: logged as G/size (the cost before G's update), and the update grows a too-small object
    from stackgan.training.step import LOGGED, Updater
    step_cfg = apply_overrides(get_preset("fast-sn-noca"), TINY + ["model.text_dim=12", "model.g_layered=true",
                                                                     "model.g_layer_background=smooth",
                                                                     "model.g_layer_radial=3", "stage1.size_weight=1"])
    real, text, wrong, z = _batch(step_cfg)
    large = torch.full((len(z),), 2)
    G, D = _seeded_nets(step_cfg)
    G.eval()
    with torch.no_grad():
        G(z, text)
        before = G.foreground.reach().clone()
        expected = G.foreground.size_cost(*ranges[:, large]).item()
    assert expected > 0.5  # scale0 0.35 x radius 0.6 against "large" (54 / 128 and up)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.1), torch.optim.SGD(D.parameters(), 0.0)
    logged = dict(zip(LOGGED, Updater(step_cfg, 1, G, D, opt_g, opt_d, device=torch.device("cpu"))(
        real, text, wrong, z, sizes=large)))
    assert logged["G/size"] == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        G(z, text)
    assert (G.foreground.reach() > before).all()


def test_radial_outline_starts_as_a_disc_and_its_harmonics_draw_corners():
    """model.g_layer_radial: the mask is the inside of r(theta) = 0.6 exp(sum a_k cos k theta + b_k sin k
    theta); zero coefficients draw a disc of radius 0.6 for every condition; a third-harmonic
    coefficient draws three lobes (a mask with the triangle's symmetry: unchanged by a turn of 120
    degrees, changed by one of 90); not with mask templates, only with the layered generator."""
    import math

    from stackgan.models.layered import CANVAS_SIZE, ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, radial=5).eval()
    _, disc = layer.canvas(torch.randn(3, 6))
    assert torch.equal(disc[0], disc[1])  # the condition does not matter yet
    inside = disc[0, 0] > 0.5
    assert abs(inside.float().sum().item() - math.pi * (0.6 * CANVAS_SIZE / 2) ** 2) < 12  # a disc of radius 0.6
    with torch.no_grad():
        layer.outline.bias[2] = 0.4  # a_3: cos(3 theta)
        _, lobes = layer.canvas(torch.zeros(1, 6))
    m = lobes[0, 0]
    theta = torch.tensor([0.0, 2 * math.pi / 3, math.pi / 3, math.pi / 2])
    r = 0.6 * torch.exp(0.4 * torch.cos(3 * theta))
    assert r[0] == pytest.approx(r[1].item(), rel=1e-5) and r[0] > r[2]  # the outline the mask follows
    row, col = CANVAS_SIZE // 2, int(CANVAS_SIZE / 2 * (1 + 0.8))  # on the +u axis at radius 0.8: a lobe
    assert m[row, col] > 0.5 and m[int(CANVAS_SIZE / 2 * (1 - 0.8)), row] < 0.5  # at -v, between lobes: outside
    with pytest.raises(ValueError, match="both make the object's mask"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_radial=5",
                                                    "model.g_layer_templates=2"])
    with pytest.raises(ValueError, match="g_layer_radial needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_radial=5"])


def test_sampled_anchor_shows_one_placement_and_every_anchor_still_learns():
    """model.g_layer_anchor_sample: in training each image is the plain layer at one anchor, drawn from the
    softmax (seeded by torch's RNG); in eval the likeliest anchor; the softmax's logits all get a gradient
    (straight-through); it needs the anchor grid."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, anchors=3, anchor_sample=True)
    with torch.no_grad():
        layer.to_rgba.bias[3:] = 5.0
    zc, bg = torch.randn(4, 6), torch.full((4, 3, 64, 64), -1.0)
    singles = []
    for a in range(9):  # the image with all weight on anchor a, by hand
        with torch.no_grad():
            layer.pose.bias[4:] = -50.0
            layer.pose.bias[4 + a] = 50.0
            singles.append(layer(zc, bg))
        with torch.no_grad():
            layer.pose.bias[4:] = 0.0
    torch.manual_seed(3)
    out = layer(zc, bg)  # uniform softmax: each image at one random anchor
    for i in range(4):
        assert any(torch.allclose(out[i], s[i], atol=1e-5) for s in singles)
    out.square().mean().backward()
    assert (layer.pose.bias.grad[4:] != 0).all()  # every anchor's logit learns
    layer.eval()
    with torch.no_grad():
        layer.pose.bias[4:] = -50.0
        layer.pose.bias[4 + 7] = 50.0
        only7 = layer(zc, bg)  # (in eval the canvas's BatchNorm uses its running statistics)
        layer.pose.bias[4:] = 0.0
        layer.pose.bias[4 + 7] = 1.0  # the likeliest anchor: 7 (bottom row, middle)
        assert torch.allclose(layer(zc, bg), only7, atol=1e-5)
    with pytest.raises(ValueError, match="needs the anchor grid"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_anchor_sample=true"])


def test_pattern_starts_nearly_solid_and_one_wave_draws_stripes_of_a_fixed_period():
    """model.g_layer_pattern: at the start the pattern darkens the object by sigmoid(-3) x half its
    colour everywhere (nearly solid, the same for every condition); one wave of amplitude A along the
    object's own u axis draws stripes whose period in image pixels is 2 pi / |f| and does not change
    with the object's size; not with the anchor grid, only with the layered generator."""
    import math

    from stackgan.models.layered import PATTERN_FREQ, ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, pattern=2).eval()
    with torch.no_grad():
        layer.to_rgba.bias[:] = torch.tensor([3.0, 3.0, 3.0, 30.0])  # a white object, mask 1 in the whole frame
        layer.to_rgba.weight.zero_()
    bg = -torch.ones(2, 3, 64, 64)
    image = layer(torch.randn(2, 6), bg)
    white = math.tanh(3.0) + 1  # the colour in [0, 2] before the pattern
    darkened = white * (1 - torch.sigmoid(torch.tensor(-3.0)).item() * 0.5) - 1
    assert torch.allclose(image[:, :, 32, 32], torch.full((2, 3), darkened), atol=1e-5)
    assert torch.equal(image[0], image[1])  # no condition reads it yet
    with torch.no_grad():
        layer.waves.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # f_1 along u: PATTERN_FREQ rad per half-width
        layer.phases.zero_()
        layer.pattern_head.bias.copy_(torch.tensor([40.0, 0.0, 0.0, -30.0]))  # A_1 = 40, b = 0, shade 0
    period = 2 * math.pi / PATTERN_FREQ * 32  # in pixels of a 64 px image (half-width 32 px)
    for log_scale in (0.0, 0.5):  # the same stripes at two object sizes
        with torch.no_grad():
            layer.pose.bias[0] = log_scale
        row = layer(torch.zeros(1, 6), bg[:1])[0, 0, 32, 20:44]  # the object upright: u is the image's x
        dark = (row < 0).float()  # shade 0: a stripe pixel is -1
        edges = (dark[1:] != dark[:-1]).nonzero().flatten().float()
        assert len(edges) >= 4 and (edges[2:] - edges[:-2]).mean().item() == pytest.approx(period, abs=0.6)
    with pytest.raises(ValueError, match="not with the anchor grid"):
        ForegroundLayer(6, ngf=4, pattern=2, anchors=2)
    with pytest.raises(ValueError, match="g_layer_pattern needs the layered generator"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layer_pattern=2"])


def test_pattern_pairs_turn_each_wave_by_a_right_angle_for_stripes_or_a_square_lattice():
    """model.g_layer_pattern_pairs: J / 2 learned wave vectors, each used as it is and turned by 90 degrees.
    The first wave's amplitude alone draws stripes (the map does not change across them); both amplitudes
    with a high threshold draw dots on a square lattice (the map is the same under x <-> y, dark where both
    waves peak and light half a period away along either axis). Odd wave counts are refused."""
    import math

    from stackgan.models.layered import PATTERN_FREQ, ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, pattern=2, pattern_pairs=True).eval()
    assert layer.waves.shape == (1, 2)  # one learned vector for the pair
    n = 33
    axis = torch.linspace(-0.5, 0.5, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)[None]  # [1, n, n, 2]: (x, y)
    with torch.no_grad():
        layer.waves.copy_(torch.tensor([[1.0, 0.0]]))
        layer.phases.zero_()
        layer.pattern_head.weight.zero_()

    def pattern(amplitudes: list[float], bias: float) -> torch.Tensor:
        with torch.no_grad():
            layer.pattern_head.bias.copy_(torch.tensor(amplitudes + [bias, 0.0]))
            return layer.pattern_map(torch.zeros(1, 6), grid, torch.ones(1), torch.zeros(1, 2))[0][0, 0]

    stripes = pattern([10.0, 0.0], 0.0)
    assert torch.allclose(stripes, stripes[:1].expand(n, n), atol=1e-6)  # constant along y: stripes across x
    assert stripes.max() > 0.99 and stripes.min() < 0.01
    dots = pattern([10.0, 10.0], -15.0)  # dark only where both cosines are near 1
    assert torch.allclose(dots, dots.T, atol=1e-5)
    half = round(math.pi / PATTERN_FREQ / (1.0 / (n - 1)))  # half a period in grid steps
    c = n // 2
    assert dots[c, c] > 0.9 and dots[c, c + half] < 0.1 and dots[c + half, c] < 0.1
    with pytest.raises(ValueError, match="even number"):
        ForegroundLayer(6, ngf=4, pattern=3, pattern_pairs=True)
    with pytest.raises(ValueError, match="g_layer_pattern_pairs needs an even number"):
        apply_overrides(get_preset("shapes-layered"), ["model.g_layer_pattern=3", "model.g_layer_pattern_pairs=true"])


def test_pose_pick_pulls_the_translation_to_the_mirror_image_the_reader_prefers():
    """stage1.pose_pick_weight: redraw mirrors the last object across the middle column (x sign flipped)
    and leaves everything else as drawn; pose_pick_loss is 0 when the drawn placement reads best and
    (2 t)^2 summed when the reader prefers the mirror image, its gradient pointing the translation
    across; it needs Stage I's layered G, no anchor grid and the matcher."""
    from stackgan.models.layered import ForegroundLayer
    from stackgan.training.step import pose_pick_loss

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.2)
    with torch.no_grad():
        layer.to_rgba.bias[:] = torch.tensor([3.0, 3.0, 3.0, 30.0])
        layer.to_rgba.weight.zero_()
        layer.pose.bias[2:4] = torch.tensor([0.5, 0.0])  # the object right of the middle
    zc, bg = torch.randn(2, 6), -torch.ones(2, 3, 64, 64)
    drawn = layer(zc, bg)
    mirrored = layer.redraw(torch.tensor([[-1.0, 1.0]]).expand(2, 2))
    assert torch.allclose(mirrored, drawn.detach().flip(-1), atol=1e-5)  # an upright white disc: a true mirror

    class Reads(nn.Module):  # a frozen reader whose similarity is the image's brightness on one side
        def __init__(self, side):
            super().__init__()
            self.side = side

        def similarity(self, images, text):
            half = images[..., 32:] if self.side == "right" else images[..., :32]
            return half.mean((1, 2, 3))

    assert pose_pick_loss(layer, Reads("right"), torch.zeros(2, 3)).item() == 0.0
    loss = pose_pick_loss(layer, Reads("left"), torch.zeros(2, 3))
    assert loss.item() == pytest.approx((2 * 0.5) ** 2, rel=1e-5)
    loss.backward()
    assert layer.pose.bias.grad[2] > 0 and layer.pose.bias.grad[3] == 0  # descent moves x to the left only
    with pytest.raises(ValueError, match="pose_pick_weight mirrors"):
        apply_overrides(get_preset("fast-sn-noca"), ["stage1.pose_pick_weight=1"])


def test_side_logits_choose_the_side_and_learn_the_matchers_pick():
    """model.g_layer_sides: the object is drawn at (s d(t_x), t_y), s the sign of a side logit that a head
    reads from the sentence embedding (times SIDE_GAIN); with it, pose_pick_loss is the binary
    cross-entropy of the logit to the picked side (the drawn side where the drawn placement reads best,
    the other where its mirror across the middle column does; the row is not mirrored); it needs
    stage1.pose_pick_weight and no anchor grid."""
    import torch.nn.functional as F

    from stackgan.models.layered import SIDE_GAIN, ForegroundLayer
    from stackgan.training.step import pose_pick_loss

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.2, sides=5)
    assert not layer.side_head.weight.any() and not layer.side_head.bias.any()  # no side preferred at the start
    with torch.no_grad():
        layer.to_rgba.bias[:] = torch.tensor([3.0, 3.0, 3.0, 30.0])
        layer.to_rgba.weight.zero_()
        layer.pose.bias[2:4] = torch.tensor([0.5, -0.25])
        layer.side_head.bias[:] = -0.03  # the left side
    zc, bg, text = torch.randn(2, 6), -torch.ones(2, 3, 64, 64), torch.zeros(2, 5)
    with pytest.raises(ValueError, match="reads a sentence embedding of 5 dims"):
        layer(zc, bg)
    image = layer(zc, bg, text)
    d = torch.nn.functional.softplus(torch.tensor(5.0)) / 10  # the distance from the middle column
    assert torch.allclose(layer.offset, torch.stack([-d, torch.tensor(-0.25)]).expand(2, 2))  # left; row as is
    assert image[0, 0, 24, :32].mean() > image[0, 0, 24, 32:].mean()  # row 24: y = -0.25

    seen = []

    class Reads(nn.Module):  # brightness on the right half: the mirror across the middle column reads best
        def similarity(self, images, text):
            seen.append(len(images))
            return images[..., 32:].mean((1, 2, 3))

    loss = pose_pick_loss(layer, Reads(), torch.zeros(2, 3))
    expected = F.binary_cross_entropy_with_logits(SIDE_GAIN * torch.tensor([-0.03]), torch.tensor([1.0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # the right side now
    assert seen == [2, 2]  # two placements per object: as drawn, mirrored across the middle column
    loss.backward()
    assert layer.side_head.bias.grad[0] < 0  # descent raises the logit toward the right side
    assert layer.pose.bias.grad is None or not layer.pose.bias.grad.any()  # the pose head is not taught the side
    with torch.no_grad():  # the side is the sentence's: a head that reads it turns with it
        layer.side_head.bias.zero_()
        layer.side_head.weight[0, 0] = 1.0  # a sentence's first dimension: its side
    layer(zc, bg, torch.tensor([[1.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0]]))
    assert layer.offset[0, 0] > 0 > layer.offset[1, 0]
    with pytest.raises(ValueError, match="g_layer_sides learns the side"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_sides=true"])
    with pytest.raises(ValueError, match="the anchor grid has"):
        ForegroundLayer(6, ngf=4, sides=5, anchors=2)


def test_cells_choose_column_and_row_from_the_sentence_and_learn_the_matchers_pick():
    """model.g_layer_cells=A: every object starts in the middle cell; the column and row logits read the
    sentence embedding and the object is drawn at the chosen cell's point, spacing * (k - (A - 1) / 2),
    plus the pose's translation; pose_pick_loss redraws the object in each column (row as drawn) and each
    row (column as drawn) and is the cross-entropy of the logits to the matcher's picks."""
    import torch.nn.functional as F

    from stackgan.models.layered import CELL_SPACING0, SIDE_GAIN, ForegroundLayer
    from stackgan.training.step import pose_pick_loss

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.15, cells=3, cell_text=4)
    with torch.no_grad():
        layer.to_rgba.bias[:] = torch.tensor([3.0, 3.0, 3.0, 30.0])
        layer.to_rgba.weight.zero_()
    zc, bg = torch.randn(2, 6), -torch.ones(2, 3, 64, 64)
    layer(zc, bg, torch.randn(2, 4))
    assert not layer.offset.any()  # the middle cell, no translation: centred
    with torch.no_grad():  # the sentence's first dimension says the column, its second the row
        layer.cell_head.bias.zero_()
        layer.cell_head.weight[[0, 2], 0] = torch.tensor([1.0, -1.0])  # column: left where text[0] > 0
        layer.cell_head.weight[[3, 5], 1] = torch.tensor([-1.0, 1.0])  # row: bottom where text[1] > 0
    text = torch.tensor([[1.0, 1.0, 0, 0], [-1.0, -1.0, 0, 0]])
    image = layer(zc, bg, text)
    s = CELL_SPACING0
    assert torch.allclose(layer.offset, torch.tensor([[-s, s], [s, -s]]))  # bottom left; top right
    assert image[0, 0, 45:, :20].mean() > image[0, 0, :20, 45:].mean()
    seen = []

    class Reads(nn.Module):  # brightness in the top left corner: column 0 and row 0 read best
        def similarity(self, images, text):
            seen.append(len(images))
            return images[..., :26, :26].mean((1, 2, 3))

    loss = pose_pick_loss(layer, Reads(), text)
    logits = layer.cell_logits(text)  # [2, 2, 3]
    assert logits.shape == (2, 2, 3) and torch.allclose(logits[0, 0], SIDE_GAIN * torch.tensor([1.0, 0, -1.0]))
    expected = F.cross_entropy(logits.reshape(4, 3), torch.zeros(4, dtype=torch.long))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert seen == [2 * 5]  # as drawn, the two other columns, the two other rows (each object), in one batch
    loss.backward()
    assert layer.cell_head.bias.grad[0] < 0 and layer.cell_head.bias.grad[3] < 0  # descent raises column 0, row 0
    with pytest.raises(ValueError, match="g_layer_cells learns the column"):
        apply_overrides(get_preset("fast-sn-noca"), ["model.g_layered=true", "model.g_layer_cells=3"])
    with pytest.raises(ValueError, match="at least 2 per axis"):
        ForegroundLayer(6, ngf=4, cells=3, cell_text=4, sides=4)
    cfg = apply_overrides(get_preset("shapes-layered"), ["stage1.pose_pick_weight=1", "model.g_layer_cells=3"])
    G = build_generator(cfg.model, 1)  # the switch reaches the layer, which reads the whole sentence embedding
    assert G.foreground.cells == 3 and G.foreground.cell_head.in_features == cfg.model.text_dim


def test_sizes_choose_the_scale_from_the_sentence_and_learn_the_matchers_pick():
    """model.g_layer_sizes=K (with cells): every object starts at the middle size; the size logits read the
    sentence embedding and the chosen size's log-scale is added to the pose's; pose_pick_loss also redraws
    each object at the other sizes (its cell as drawn) and adds the size logits' cross-entropy to the pick,
    the three choices weighted alike; the switch needs the cells."""
    import math

    import torch.nn.functional as F

    from stackgan.models.layered import SIDE_GAIN, SIZE_STEP0, ForegroundLayer
    from stackgan.training.step import pose_pick_loss

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.2, cells=3, cell_text=4, sizes=3)
    with torch.no_grad():
        layer.to_rgba.bias[:] = torch.tensor([3.0, 3.0, 3.0, 30.0])
        layer.to_rgba.weight.zero_()
    zc, bg, text = torch.randn(2, 6), -torch.ones(2, 3, 64, 64), torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    layer(zc, bg, text)
    assert torch.equal(layer.size_drawn.argmax(-1), torch.tensor([1, 1]))  # the middle size at the start
    with torch.no_grad():  # the sentence's first dimension says the size: small where text[0] > 0
        layer.size_head.bias.zero_()
        layer.size_head.weight[[0, 2], 0] = torch.tensor([1.0, -1.0])
    image = layer(zc, bg, text)
    area = (image[:, 0] > 0).float().mean((1, 2))
    assert area[1] > 3 * area[0]  # small, large: e^(2 * 2 SIZE_STEP0) = 5 times the area
    scale = layer.placement(zc, None, text)[1]
    assert torch.allclose(scale, 0.2 * torch.exp(torch.tensor([-SIZE_STEP0, SIZE_STEP0])))
    seen = []

    class Reads(nn.Module):  # the brighter the image's middle, the better: the middle cell, the largest size
        def similarity(self, images, text):
            seen.append(len(images))
            return images[..., 20:44, 20:44].mean((1, 2, 3))

    loss = pose_pick_loss(layer, Reads(), text)
    assert seen == [2 * 7]  # as drawn, two other columns, two other rows, two other sizes, in one batch
    cells = F.cross_entropy(layer.cell_logits(text).reshape(4, 3), torch.ones(4, dtype=torch.long))
    sizes = F.cross_entropy(layer.size_logits(text), torch.tensor([2, 2]))
    assert loss.item() == pytest.approx((2 * cells.item() + sizes.item()) / 3, rel=1e-4)
    assert math.isclose(layer.size_logits(text)[0, 0].item(), SIDE_GAIN, rel_tol=1e-6)
    loss.backward()
    assert layer.size_head.bias.grad[2] < 0  # descent raises the largest size
    with pytest.raises(ValueError, match="g_layer_sizes must be at least 2"):
        apply_overrides(get_preset("shapes-layered"), ["model.g_layer_cells=0", "model.g_layer_sizes=3"])
    with pytest.raises(ValueError, match="at least 2, with the cells"):
        ForegroundLayer(6, ngf=4, cells=0, cell_text=4, sizes=3)
    G = build_generator(apply_overrides(get_preset("shapes-layered"), TINY + ["model.g_layer_sizes=3"]).model, 1)
    assert G.foreground.sizes == 3


def test_textures_choose_the_pattern_from_the_sentence_and_learn_the_matchers_pick():
    """model.g_layer_textures=K (with cells and the pattern): texture 0 starts plain, texture 1 as the first wave
    (stripes), texture 2 as the next two crossing (dots); every object starts plain; the texture logits read the sentence embedding and the chosen
    texture's state is the pattern (no head reads cat(z, c)); pose_pick_loss also redraws each object in the other
    textures (its cell as drawn) and adds the texture logits' cross-entropy to the matcher's pick, every
    choice weighted alike; the switch needs the cells and the pattern."""
    import torch.nn.functional as F

    from stackgan.models.layered import ForegroundLayer
    from stackgan.training.step import pose_pick_loss

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, cells=3, cell_text=4, pattern=3, textures=3)
    with torch.no_grad():  # an opaque white disc: the pattern alone darkens it
        layer.to_rgba.bias[:] = torch.tensor([30.0, 30.0, 30.0, 30.0])
        layer.to_rgba.weight.zero_()
        layer.waves.copy_(torch.tensor([[0.6, 0.0], [0.6, 0.0], [0.0, 0.6]]))  # stripes; two crossing of one period
    zc, bg, text = torch.randn(2, 6), -torch.ones(2, 3, 64, 64), torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    layer(zc, bg, text)
    assert torch.equal(layer.texture_drawn.argmax(-1), torch.tensor([0, 0]))  # plain at the start
    cell = torch.ones(2, 2, dtype=torch.long)
    drawn = [layer.redraw_at(cell, texture=torch.full((2,), k))[:, 0, 26:38, 26:38] for k in range(3)]
    dark = [(d < 0.5).float().mean().item() for d in drawn]  # the share of the object's middle darkened
    assert dark[0] == 0.0  # plain
    assert 0.3 < dark[1] < 0.7  # stripes: one wave at half duty
    assert 0.0 < dark[2] < dark[1] / 2  # dots: where both waves peak
    rows = drawn[1][0].std(1).mean(), drawn[1][0].std(0).mean()  # stripes: constant along one axis only
    assert min(rows) < 0.05 < max(rows)
    with torch.no_grad():  # the sentence's first dimension says the texture: dots where text[0] > 0
        layer.texture_head.bias.zero_()
        layer.texture_head.weight[[2, 0], 0] = torch.tensor([1.0, -1.0])
    image = layer(zc, bg, text)
    assert torch.equal(layer.texture_drawn.argmax(-1), torch.tensor([2, 0]))
    assert torch.equal(image[:1], layer.redraw_at(cell[:1], texture=torch.tensor([2])))
    seen = []

    class Reads(nn.Module):  # the object in the image's middle (the middle cell), and the darker the better
        def similarity(self, images, text):
            seen.append(len(images))
            middle = images[..., 26:38, 26:38]
            return 10 * (middle > -0.9).float().mean((1, 2, 3)) - middle.mean((1, 2, 3))

    loss = pose_pick_loss(layer, Reads(), text)
    assert seen == [2 * 7]  # as drawn, two other columns, two other rows, two other textures, in one batch
    cells = F.cross_entropy(layer.cell_logits(text).reshape(4, 3), torch.ones(4, dtype=torch.long))
    textures = F.cross_entropy(layer.texture_logits(text), torch.tensor([1, 1]))  # stripes darken the most
    assert loss.item() == pytest.approx((2 * cells.item() + textures.item()) / 3, rel=1e-4)
    loss.backward()
    assert layer.texture_head.bias.grad[1] < 0  # descent raises the stripes
    with pytest.raises(ValueError, match="g_layer_textures must be at least 2"):
        apply_overrides(get_preset("shapes-layered"), ["model.g_layer_pattern=0", "model.g_layer_textures=3"])
    with pytest.raises(ValueError, match="at least 2, with the cells"):
        ForegroundLayer(6, ngf=4, cells=3, cell_text=4, pattern=2, textures=1)
    G = build_generator(apply_overrides(get_preset("shapes-layered"), TINY + ["model.g_layer_textures=3"]).model, 1)
    assert G.foreground.textures == 3 and G.foreground.texture_states.shape == (3, 4 + 2)
    assert torch.equal(G.foreground.texture_states[1, :4] != 0, torch.tensor([True, False, False, False]))
    assert torch.equal(G.foreground.texture_states[2, :4] != 0, torch.tensor([False, True, True, False]))
    assert G.foreground.pattern_head is None  # the chosen state is the pattern


def test_given_pattern_waves_are_fixed_at_their_period_and_angle():
    """model.g_layer_pattern_waves: each wave given as PERIOD@ANGLE (pixels at 64 px, degrees) is a buffer, not a
    parameter, of that period and direction (one wave at 8 px and 0 degrees repeats every 8 pixels along x and
    not along y); malformed lists, periods below 2 px and a count other than the pattern's are refused."""
    from stackgan.models.layered import ForegroundLayer

    layer = ForegroundLayer(6, ngf=4, scale0=0.3, pattern=2, pattern_waves="8@0,5@90")
    assert "waves" not in dict(layer.named_parameters()) and "waves" in dict(layer.named_buffers())
    with torch.no_grad():
        layer.to_rgba.bias[:] = torch.tensor([30.0, 30.0, 30.0, 30.0])
        layer.to_rgba.weight.zero_()
        layer.pattern_head.bias[:] = torch.tensor([6.0, 0.0, 0.0, -20.0])  # the first wave alone, shade black
    image = layer.eval()(torch.zeros(1, 6), -torch.ones(1, 3, 64, 64))[0, 0, 24:40, 24:40]  # the object's middle
    assert torch.allclose(image[:, :8], image[:, 8:16], atol=1e-4)  # a period of 8 px along x
    assert (image[:, :8] - image[:1, :8]).abs().max() < 1e-4  # constant along y
    assert image.max() - image.min() > 1.0  # and a pattern at all
    for bad, message in (("8@0", "gives 1 waves"), ("8,5@90", "not PERIOD@ANGLE"), ("1.5@0,5@90", "below 2 px")):
        with pytest.raises(ValueError, match=message):
            ForegroundLayer(6, ngf=4, pattern=2, pattern_waves=bad)
        with pytest.raises(ValueError, match=message):
            apply_overrides(get_preset("shapes-layered"), ["model.g_layer_pattern=2", f"model.g_layer_pattern_waves={bad}"])
    G = build_generator(apply_overrides(get_preset("shapes-layered"), TINY + ["model.g_layer_pattern=2",
                                                                           "model.g_layer_pattern_waves=8@0,5@90"]).model, 1)
    assert torch.allclose(G.foreground.waves.norm(dim=1) * 50, 2 * math.pi * 32 / torch.tensor([8.0, 5.0]))


def test_side_logits_with_the_pattern_draw_one_image_per_condition():
    """model.g_layer_sides with g_layer_pattern and spin: a whole layer runs (the side logits are not
    read as a centre) and draws an image per condition."""
    from stackgan.models.layered import ForegroundLayer

    layer = ForegroundLayer(6, ngf=4, sides=5, pattern=2, radial=3, spin=True)
    assert layer(torch.randn(3, 6), torch.zeros(3, 3, 64, 64), torch.randn(3, 5)).shape == (3, 3, 64, 64)


def test_pose_pick_share_reads_only_the_batchs_first_images():
    """stage1.pose_pick_share: the matcher reads the mirror placements of the first ceil(share * B)
    objects only, and the loss is theirs."""
    from stackgan.models.layered import ForegroundLayer
    from stackgan.training.step import pose_pick_loss

    layer = ForegroundLayer(6, ngf=4, scale0=0.2)
    with torch.no_grad():
        layer.pose.bias[2] = 0.5
    layer(torch.randn(8, 6), -torch.ones(8, 3, 64, 64))
    seen = []

    class Left(nn.Module):
        def similarity(self, images, text):
            seen.append(len(images))
            return images[..., :32].mean((1, 2, 3))

    assert pose_pick_loss(layer, Left(), torch.zeros(8, 3), share=0.25).item() == pytest.approx(1.0, rel=1e-5)
    assert seen == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="pose_pick_share must be in"):
        apply_overrides(get_preset("fast-sn-noca"), ["stage1.pose_pick_share=0"])


def test_the_default_preset_is_fast_sn_noca_with_the_layered_object_of_runs_c26_c29_and_c45():
    """shapes-layered (the default): fast-sn-noca plus exactly the switches of the recipe doc's run C26
    (C18 and the cell choice) and its Stage II of runs C29 (masked to the object) and C45 (D's contrastive
    head), and its Stage I draws a
    layered object with a radial outline and a pattern in one of 3 x 3 cells."""
    from stackgan.config import DEFAULT_PRESET

    assert DEFAULT_PRESET == "shapes-layered"
    c18 = ["model.g_layered=true", "model.g_layer_background=vertical", "model.g_layer_spin=true",
           "model.g_layer_taper=true", "stage1.mask_weight=5", "stage1.mask_warmup=1000", "data.foil_share=0.5",
           "model.d_contrast=128", "stage1.contrast_wrong=true", "stage1.contrast_weight=0.2",
           "data.foil_attributes=shape", "data.matcher_trunk=checker", "data.matcher_widths=[16,32,64,96,128]",
           "data.matcher_foils=true", "data.matcher_steps=3000", "data.matcher_zoom=2", "stage1.match_foils=true",
           "model.g_layer_radial=10", "model.g_layer_pattern=4"]
    c26 = c18 + ["stage1.pose_pick_weight=1", "stage1.pose_pick_share=0.25", "model.g_layer_cells=3"]
    c29 = c26 + ["model.stage2_masked=true"]
    c45 = c29 + ["stage2.contrast_weight=0.2", "stage2.contrast_wrong=true"]
    assert get_preset("shapes-layered") == apply_overrides(get_preset("fast-sn-noca"), c45)
    G = build_generator(apply_overrides(get_preset("shapes-layered"), TINY + ["model.text_dim=12"]).model, 1)
    assert G.foreground.radial == 10 and G.foreground.pattern == 4 and G.foreground.cells == 3


def test_word_swaps_change_only_the_texture_words_and_keep_their_form():
    """attribute_swaps: one caption in each texture, the named one the caption itself, the others differing
    from it only where the texture words stood ("with stripes" -> "with dots"); None when no texture is
    named; make_swaps flattens them caption by caption with -1 for captions that name none."""
    from stackgan.data.foils import attribute_swaps, make_swaps

    swaps, named = attribute_swaps("A large striped red circle on a white background", "texture")
    assert named == 1 and swaps[1] == "A large striped red circle on a white background"
    assert swaps[0] == "a large solid red circle on a white background"
    assert swaps[2] == "a large dotted red circle on a white background"
    swaps, named = attribute_swaps("a blue square with dots at the top", "texture")
    assert named == 2 and swaps[1] == "a blue square with stripes at the top"
    assert [parse_caption(s)["texture"] for s in swaps] == list(ATTRIBUTES["texture"])
    for s in swaps:  # only the texture differs
        assert {k: v for k, v in parse_caption(s).items() if k != "texture"} == \
            {k: v for k, v in parse_caption(swaps[2]).items() if k != "texture"}
    assert attribute_swaps("a red disc in the center", "texture") is None
    flat, which = make_swaps([{"captions": ["a red disc", "a plain red disc"]}], "texture")
    assert which == [[-1, 0]] and flat[0][:3] == ["a red disc"] * 3 and flat[0][3] == "a plain red disc"
    with pytest.raises(ValueError, match="swap_attribute"):
        make_swaps([], "colour")


def test_redraw_pattern_keeps_a_gradient_only_in_the_pattern():
    """ForegroundLayer.redraw_pattern: the drawn image again (the chosen texture, or the given one), where the
    pattern (its head or the texture states, its waves) and cat(z, c) get a gradient and the canvas and the
    pose do not; detach=True leaves cat(z, c) out."""
    from stackgan.models.layered import ForegroundLayer

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, cells=3, cell_text=4, pattern=3)
    with torch.no_grad():
        layer.pattern_head.weight.normal_()  # (it starts at 0: the pattern reads cat(z, c) only once trained)
    zc = torch.randn(2, 6, requires_grad=True)
    bg, text = -torch.ones(2, 3, 64, 64), torch.randn(2, 4)
    image = layer(zc, bg, text)
    again = layer.redraw_pattern(2)
    assert torch.allclose(again, image, atol=1e-6)
    again.square().sum().backward()
    grads = {name for name, p in layer.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == {"pattern_head.weight", "pattern_head.bias", "waves", "phases"}  # the pattern's parameters
    assert zc.grad is not None and zc.grad.abs().sum() > 0
    zc.grad = None
    layer(zc, bg, text)
    layer.redraw_pattern(2, detach=True).square().sum().backward()
    assert zc.grad is None and layer.pattern_head.weight.grad.abs().sum() > 0  # the head alone
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, cells=3, cell_text=4, pattern=3, textures=3)
    layer(zc.detach(), bg, text)
    stripes = layer.redraw_pattern(2, torch.tensor([1, 1]))
    assert torch.equal(stripes, layer.redraw_at(torch.ones(2, 2, dtype=torch.long), texture=torch.tensor([1, 1])))
    stripes.sum().backward()
    assert {name for name, p in layer.named_parameters() if p.grad is not None} == {"texture_states", "waves", "phases"}
    assert layer.texture_states.grad[1].abs().sum() > 0 and layer.texture_states.grad[0].abs().sum() == 0
    plain = ForegroundLayer(6, ngf=4, scale0=0.3)
    plain(zc.detach(), bg)
    with pytest.raises(ValueError, match="g_layer_pattern"):
        plain.redraw_pattern(1)


def test_pattern_text_gives_the_pattern_a_code_of_the_sentence_that_only_it_reads():
    """model.g_layer_pattern_text: the pattern head reads the sentence embedding beside cat(z, c), with zero
    weights at the start (the same image as without it); once those weights are set, two sentences draw
    two patterns from one cat(z, c); with detach, the swap loss's redraw teaches the head's weights on the
    sentence and leaves cat(z, c) alone; it needs the pattern and no texture choice."""
    from stackgan.config import ConfigError, apply_overrides, get_preset, validate
    from stackgan.models.layered import ForegroundLayer

    zc, bg, text = torch.randn(2, 6), -torch.ones(2, 3, 64, 64), torch.randn(2, 4)
    # eval: the canvas's BatchNorm over two equal rows would blow a last-bit difference of the BLAS up to a
    # different image
    torch.manual_seed(0)
    plain = ForegroundLayer(6, ngf=4, scale0=0.3, cells=3, cell_text=4, pattern=3).eval()
    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, cells=3, cell_text=4, pattern=3, pattern_text=4).eval()
    assert layer.pattern_head.in_features == 10
    assert torch.equal(layer(zc, bg, text), plain(zc, bg, text))  # the identity at the start
    with torch.no_grad():
        layer.pattern_head.weight[:, 6:].normal_(std=3.0)  # the sentence's columns only
    one, same = layer(zc[:1].expand(2, -1), bg, text), plain(zc[:1].expand(2, -1), bg, text)
    assert torch.allclose(same[0], same[1], atol=1e-5)  # without it, one cat(z, c) is one pattern (the BLAS
    # may round two equal rows apart in the last bit)
    assert (one[0] - one[1]).abs().max() > 0.01  # with it, two sentences draw two patterns
    zc = zc.clone().requires_grad_()
    layer(zc, bg, text)
    layer.redraw_pattern(2, detach=True).square().sum().backward()
    assert zc.grad is None and layer.pattern_head.weight.grad[:, 6:].abs().sum() > 0
    with pytest.raises(ValueError, match="4 dims"):
        layer(zc, bg, torch.randn(2, 5))
    with pytest.raises(ConfigError, match="g_layer_pattern_text"):
        ForegroundLayer(6, ngf=4, cells=3, cell_text=4, pattern=3, textures=3, pattern_text=4)
    with pytest.raises(ConfigError, match="g_layer_pattern_text"):
        validate(apply_overrides(get_preset("shapes-layered"), ["model.g_layer_pattern=0",
                                                                "model.g_layer_pattern_text=true"]))


class _DarkReader(nn.Module):
    """A frozen 'matcher' whose image code is (darkness of the object's middle, 1) and whose text code is the
    first two dimensions: texts (1, 0) like dark images, (-1, 0) light ones."""

    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def encode_image(self, images):
        return torch.stack([-images[..., 20:44, 20:44].mean((1, 2, 3)), torch.ones(len(images))], 1)

    def encode_text(self, text):
        return text[..., :2]


def test_swap_loss_is_the_matchers_cross_entropy_over_the_swapped_captions():
    """swap_loss: the cross-entropy of the matcher's scores for the pattern-only redraw against the caption's
    texture swaps, the named one the target; captions naming no texture left out; descent moves the pattern
    toward what the named word asks (here: darker); with the texture choice each state k is redrawn for every
    object and its target is swap k."""
    import torch.nn.functional as F

    from stackgan.models.layered import ForegroundLayer
    from stackgan.training.step import swap_loss

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, cells=3, cell_text=4, pattern=3)
    with torch.no_grad():
        layer.to_rgba.bias[:] = torch.tensor([30.0, 30.0, 30.0, 30.0])
        layer.to_rgba.weight.zero_()
    zc, bg, text = torch.randn(3, 6), -torch.ones(3, 3, 64, 64), torch.randn(3, 4)
    layer(zc, bg, text)
    swaps = torch.zeros(3, 2, 4)
    swaps[:, 0, 0], swaps[:, 1, 0] = -1.0, 1.0  # value 0: light, value 1: dark
    named = torch.tensor([1, -1, 1])
    reader = _DarkReader()
    loss = swap_loss(layer, reader, swaps, named)
    with torch.no_grad():
        code = reader.encode_image(layer.redraw_pattern(3))[[0, 2]]  # [2, 2]
        expected = F.cross_entropy(code @ swaps[[0, 2]][..., :2].transpose(1, 2)[0], torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert layer.pattern_head.bias.grad[3] < 0  # descent raises the pattern's bias: a darker object
    assert swap_loss(layer, reader, swaps, torch.full((3,), -1)).item() == 0.0
    images = torch.rand(3, 3, 64, 64) * 2 - 1  # stage2.swap_weight: the images read as they are, or their read reused
    read = swap_loss(None, reader, swaps, named, images=images)
    assert read.item() == pytest.approx(F.cross_entropy(reader.encode_image(images[[0, 2]]) @ swaps[[0, 2]][..., :2]
                                                        .transpose(1, 2)[0], torch.tensor([1, 1])).item(), rel=1e-5)
    assert swap_loss(None, reader, swaps, named, images=images, image_emb=reader.encode_image(images)).item() \
        == pytest.approx(read.item(), rel=1e-6)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, cells=3, cell_text=4, pattern=3, textures=2)
    layer(zc, bg, text)
    swap_loss(layer, reader, swaps, named).backward()
    grad = layer.texture_states.grad[:, 3]  # each state's bias: state 1 darker (its word, dark), state 0 lighter
    assert grad[1] < 0 < grad[0]
    for bad, message in ((["stage1.swap_weight=1"], "data.swap_attribute=texture"),
                         (["stage1.swap_weight=1", "data.swap_attribute=texture", "model.g_layer_pattern=0"],
                          "g_layer_pattern"),
                         (["data.swap_attribute=colour"], "swap_attribute must be one of"),
                         (["stage1.swap_weight=1", "data.swap_attribute=texture", "model.g_layer_textures=2"],
                          "needs 3 textures")):
        with pytest.raises(ValueError, match=message):
            apply_overrides(get_preset("shapes-layered"), bad)


def test_swapped_captions_follow_the_steps_caption_and_train_the_pattern(tiny_shapes, tmp_path):
    """data.swap_attribute=texture: the batch's swaps are its own caption in each texture (the named slot is
    the caption's embedding itself, the value the one its words name); two steps of the default preset with
    stage1.swap_weight log a finite, positive swap loss."""
    from dataclasses import replace

    from stackgan.config import DataConfig
    from stackgan.data.manifest import read_manifest
    from stackgan.training import train
    from stackgan.training.data import load_train_data

    data, _ = load_train_data(tiny_shapes, DataConfig(swap_attribute="texture"), 64, progress=False, swaps=True)
    assert load_train_data(tiny_shapes, DataConfig(swap_attribute="texture"), 64, progress=False)[0].swaps is None
    records = read_manifest(tiny_shapes, "train")
    named = [[ATTRIBUTES["texture"].index(parse_caption(c)["texture"]) if "texture" in parse_caption(c) else -1
              for c in r["captions"]] for r in records]
    assert data.swap_named.tolist() == named
    _, text, _, swaps, which = data.batch(0, 16, swaps=True)
    assert swaps.shape == (16, 3, text.shape[1]) and (which >= 0).any()
    for row in (which >= 0).nonzero()[:, 0].tolist():
        assert torch.allclose(swaps[row, which[row]], text[row], atol=1e-3)  # (encoded in other batches)
        assert not torch.allclose(swaps[row, (which[row] + 1) % 3], text[row], atol=1e-2)
    with pytest.raises(ValueError, match="swap_attribute"):
        replace(data, swaps=None).batch(0, 16, swaps=True)
    cfg = apply_overrides(get_preset("shapes-layered"), TINY + [
        "data.matcher_steps=3", "data.matcher_batch=8", "data.swap_attribute=texture", "stage1.swap_weight=1",
        "stage1.swap_share=1", "stage1.max_steps=2"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "stage1" / "tb"))
    acc.Reload()
    assert all(math.isfinite(e.value) and e.value > 0 for e in acc.Scalars("G/swap"))
    # Stage II: its own copy of the pattern (model.stage2_pattern) taught by the swaps read from its 256 px image
    cfg = apply_overrides(cfg, ["model.stage2_render=true", "model.stage2_pattern=true", "stage2.swap_weight=1",
                                "stage2.swap_share=1", "stage2.max_steps=2", "stage2.log_every=1",
                                "stage2.image_pair_weight=1", "stage2.patch_weight=1", "stage2.patch_r1=1"])
    train(cfg, tiny_shapes, tmp_path, 2, progress=False)
    acc = EventAccumulator(str(tmp_path / "stage2" / "tb"))
    acc.Reload()
    assert all(math.isfinite(e.value) and e.value > 0 for name in ("G/swap", "G/pair", "D/patch")
               for e in acc.Scalars(name))
    assert all(math.isfinite(e.value) and e.value != 0 for e in acc.Scalars("G/patch"))
    state = torch.load(tmp_path / "stage2" / "state.pt", weights_only=True)
    assert {"critic", "opt_critic"} <= state.keys()  # the texture critic resumes with the run
    g2 = state["generator"]
    start = g2["stage1.foreground.pattern_head.weight"]  # Stage I's (frozen), where the copy started
    assert g2["own_pattern.head.weight"][:, :start.shape[1]].sub(start).abs().max() > 0  # trained


def test_pattern_inset_keeps_the_rim_plain_and_the_inside_patterned():
    """model.g_layer_pattern_inset: the pattern darkens only where the placed mask eroded by r px is high, so a
    rim of about r px keeps the object's plain colour (its outline the same whatever the texture), the inside
    is patterned as without the inset, and the margin sends no gradient to the outline; it needs the pattern."""
    from stackgan.config import ConfigError, apply_overrides, get_preset, validate
    from stackgan.models.layered import ForegroundLayer

    zc, bg = torch.randn(2, 6, generator=torch.Generator().manual_seed(0)), -torch.ones(2, 3, 64, 64)
    layers = []
    for inset in (0.0, 1.0):
        torch.manual_seed(0)
        layers.append(ForegroundLayer(6, ngf=4, scale0=0.3, mask_bias=12.0, pattern=3, pattern_inset=inset))  # a crisp mask
    plain, inset = layers
    inset.load_state_dict(plain.state_dict())
    for layer in layers:
        with torch.no_grad():
            layer.pattern_head.weight.normal_(std=3.0, generator=torch.Generator().manual_seed(1))
            layer.pattern_head.bias.copy_(torch.tensor([3.0, 3.0, 3.0, 0.0, -3.0]))  # strong waves, dark shade
    patterned, kept = plain(zc, bg), inset(zc, bg)
    with torch.no_grad():
        plain.pattern_head.weight.zero_()
        plain.pattern_head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -30.0, 0.0]))  # no pattern at all
        solid = plain(zc, bg)
    m = plain.mask
    inner = -F.max_pool2d(-m, 3, stride=1, padding=1)  # eroded by 1 px at 64 px
    assert torch.equal(inset.inner_mask(m), inner)
    rim, core = ((m > 0.05) & (inner < 1e-3)).expand_as(solid), (inner > 0.9999).expand_as(solid)
    assert rim.sum() > 20 and core.sum() > 20
    assert (patterned - solid)[rim].abs().max() > 0.05  # without the inset the pattern reaches the rim ...
    assert torch.allclose(kept[rim], solid[rim], atol=1e-3)  # ... with it the rim is the plain colour
    assert torch.allclose(kept[core], patterned[core], atol=1e-3)  # and the inside the same pattern
    with pytest.raises(ConfigError, match="g_layer_pattern_inset"):
        ForegroundLayer(6, ngf=4, pattern=0, pattern_inset=1.0)
    with pytest.raises(ConfigError, match="g_layer_pattern_inset"):
        validate(apply_overrides(get_preset("shapes-layered"), ["model.g_layer_pattern=0",
                                                                "model.g_layer_pattern_inset=1"]))


@pytest.mark.parametrize("cells", [0, 3])
def test_the_pick_reuses_the_matching_loss_read_of_the_images_as_drawn(cells):
    """pose_pick_loss(drawn_emb=...): the matcher's embeddings of the images as G drew them (the matching loss
    reads them anyway) stand for the pick's read of the placement as drawn: the same loss, one read fewer
    per object; with fewer embeddings than picked objects they are not used."""
    from stackgan.matching import ImageTextMatcher
    from stackgan.models.layered import ForegroundLayer
    from stackgan.training.step import pose_pick_loss

    torch.manual_seed(0)
    layer = ForegroundLayer(6, ngf=4, scale0=0.3, cells=cells, cell_text=4 if cells else 0)
    matcher = ImageTextMatcher(4, widths=(4, 8), trunk="checker").eval().fold()
    zc, bg, text = torch.randn(4, 6), torch.rand(4, 3, 64, 64) * 2 - 1, torch.randn(4, 4)
    image = layer(zc, bg, text)
    reads, similarity = [], matcher.similarity
    matcher.similarity = lambda images, t: (reads.append(len(images)), similarity(images, t))[1]
    plain = pose_pick_loss(layer, matcher, text)
    n = sum(reads)  # images read
    assert n == 4 * (5 if cells else 4)  # per object: as drawn, 2 other columns, 2 other rows; or 4 mirrors
    reads.clear()
    reused = pose_pick_loss(layer, matcher, text, drawn_emb=matcher.encode_image(image))
    assert torch.allclose(reused, plain, atol=1e-6) and sum(reads) == n - 4
    reads.clear()
    pose_pick_loss(layer, matcher, text, drawn_emb=matcher.encode_image(image[:2]))  # 2 < 4 objects: read again
    assert sum(reads) == n


def test_training_loop_hands_the_priors_their_batch_words(tiny_shapes, tmp_path, monkeypatch):
    """A Stage-I run with stage1.outline_target + outline_phase + size_weight: every step's Updater call gets the
    shape orders and size words of the very images batch() gave it, and the costs are logged finite."""
    import math

    from stackgan.data.manifest import read_manifest
    from stackgan.data.shapes import ATTRIBUTES, SYMMETRY
    from stackgan.training import step as step_module
    from stackgan.training import train
    from stackgan.training.data import TrainData

    records = read_manifest(tiny_shapes, "train")
    seen, logged = [], []
    original_call, original_batch = step_module.Updater.__call__, TrainData.batch

    def batch(self, step, batch_size, rank=0, world=1, swaps=False):
        out = original_batch(self, step, batch_size, rank, world, swaps)
        seen.append(("batch", self.batch_indices(step, batch_size, rank, world).tolist()))  # its images (tested above)
        return out

    def call(self, *args, **kwargs):
        seen.append(("call", kwargs["orders"].tolist(), kwargs["sizes"].tolist()))
        out = original_call(self, *args, **kwargs)
        logged.append(dict(zip(step_module.LOGGED, out.tolist())))
        return out

    monkeypatch.setattr(TrainData, "batch", batch)
    monkeypatch.setattr(step_module.Updater, "__call__", call)
    cfg = apply_overrides(get_preset("shapes-layered"), TINY + [
        "stage1.max_steps=3", "stage1.outline_weight=0.5", "stage1.outline_target=true", "stage1.outline_phase=true",
        "stage1.size_weight=1", "data.matcher_steps=2"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    batches = [s[1] for s in seen if s[0] == "batch"]
    calls = [s[1:] for s in seen if s[0] == "call"]
    assert len(calls) == 3 and len(batches) >= 3
    for idx, (orders, sizes) in zip(batches, calls):
        assert orders == [SYMMETRY[records[i]["attributes"]["shape"]] for i in idx]
        assert sizes == [ATTRIBUTES["size"].index(records[i]["attributes"]["size"]) for i in idx]
    assert all(math.isfinite(x["G/size"]) and math.isfinite(x["G/outline"]) and x["G/outline"] > 0 for x in logged)
