import copy

import pytest
import torch

from stackgan.losses import discriminator_loss, generator_loss, kl_loss
from stackgan.models import (ConditioningAugmentation, GeneratorOutput, Stage1Discriminator, Stage1Generator,
                             Stage2Discriminator, Stage2Generator)

B, TEXT = 2, 1024  # the paper's embedding size, birds widths


@pytest.fixture(scope="module")
def paper_nets():
    torch.manual_seed(0)
    g1 = Stage1Generator(TEXT, ngf=128)
    d1 = Stage1Discriminator(TEXT, ndf=64)
    g2 = Stage2Generator(Stage1Generator(TEXT, ngf=128), ngf=128, res_blocks=4)
    d2 = Stage2Discriminator(TEXT, ndf=64)
    return g1, d1, g2, d2


def test_stage1_shapes_at_paper_widths(paper_nets):
    g1, d1, _, _ = paper_nets
    low, img, mu, logvar = g1(torch.randn(B, 100), torch.randn(B, TEXT))
    assert img.shape == (B, 3, 64, 64) and mu.shape == logvar.shape == (B, 128)
    assert low is img  # Stage I: its own image is the low-resolution one
    assert g1.fc[0].out_features == 1024 * 4 * 4  # 8 * ngf channels at 4x4
    h = d1(img)
    assert h.shape == (B, 512, 4, 4)
    assert d1.cond_logits(h, mu).shape == (B,)
    assert d1.cond_head.joint[0].in_channels == 512 + 128


def test_stage2_shapes_at_paper_widths(paper_nets):
    _, _, g2, d2 = paper_nets
    low, high, mu, logvar = g2(torch.randn(B, 100), torch.randn(B, TEXT))
    assert low.shape == (B, 3, 64, 64) and high.shape == (B, 3, 256, 256) and mu.shape == (B, 128)
    h = d2(high)
    assert h.shape == (B, 512, 4, 4)
    assert d2.cond_logits(h, mu).shape == (B,) and d2.uncond_logits(h).shape == (B,)


def _assert_all_grads(module):
    missing = [n for n, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("stage", [1, 2])
def test_every_trainable_parameter_gets_a_gradient(paper_nets, stage):
    g1, d1, g2, d2 = paper_nets
    G, D = (g1, d1) if stage == 1 else (g2, d2)
    G.zero_grad(), D.zero_grad()
    z, emb = torch.randn(B, 100), torch.randn(B, TEXT)
    out = G(z, emb)
    assert isinstance(out, GeneratorOutput)  # one contract for both stages
    fake, mu, logvar = out.image, out.mu, out.logvar
    real = torch.rand_like(fake) * 2 - 1
    h_real, h_fake = D(real), D(fake.detach())
    un = (lambda h: D.uncond_logits(h)) if stage == 2 else (lambda h: None)
    d = discriminator_loss(D.cond_logits(h_real, mu.detach()), D.cond_logits(h_real, mu.detach().roll(1, 0)),
                           D.cond_logits(h_fake, mu.detach()), un(h_real), un(h_fake))
    d["total"].backward()
    _assert_all_grads(D)
    D.zero_grad()
    h = D(fake)
    (generator_loss(D.cond_logits(h, mu.detach()), un(h)) + 2.0 * kl_loss(mu, logvar)).backward()
    _assert_all_grads(G)
    if stage == 2:
        assert all(p.grad is None for p in G.stage1.parameters())
        assert not G.stage1.training


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    g = Stage1Generator(TEXT, ngf=64)
    conv = g.up[1][1].weight
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    bn = g.up[1][2]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().max() == 0


def test_conditioning_augmentation_variants():
    torch.manual_seed(0)
    emb = torch.randn(512, 32)
    pt = ConditioningAugmentation(32, 8, "pt")
    c, mu, logvar = pt(emb)
    assert (mu >= 0).all() and (logvar >= 0).all()  # ReLU before the split (PT)
    eps = torch.randn(512, 8)
    c, mu, logvar = pt(emb, eps)
    assert torch.allclose(c, mu + torch.exp(0.5 * logvar) * eps)
    tf = ConditioningAugmentation(32, 8, "tf")
    x = torch.nn.functional.leaky_relu(tf.fc(emb), 0.2)
    c, mu, logvar = tf(emb, eps)
    assert torch.allclose(logvar, 2 * x[:, 8:])  # log-sigma doubled into a log-variance
    e = tf.sample_eps((10000,), "cpu", torch.Generator().manual_seed(0))
    assert e.abs().max() <= 2.0 and abs(e.mean()) < 0.03
    assert abs(e.std() - 0.8796) < 0.015  # the standard deviation of N(0, 1) truncated at 2 std
    with pytest.raises(ValueError):
        ConditioningAugmentation(32, 8, "other")


def test_conditioning_without_noise_is_deterministic_and_has_no_kl_term():
    torch.manual_seed(0)
    emb = torch.randn(16, 32)
    none = ConditioningAugmentation(32, 8, "none")
    c, mu, logvar = none(emb, torch.randn(16, 8))  # a given eps is ignored
    assert logvar is None and c is mu and c.shape == (16, 8)
    assert torch.allclose(c, torch.nn.functional.leaky_relu(none.fc(emb), 0.2))
    assert torch.equal(none(emb)[0], c)
    g = Stage1Generator(32, ngf=8, ca_variant="none")
    out1, out2 = g(torch.zeros(2, 100), emb[:2]), g(torch.zeros(2, 100), emb[:2])
    assert out1.logvar is None and torch.equal(out1.image, out2.image)  # no noise beyond z


def test_stage2_image_skip_starts_from_the_stage1_image():
    torch.manual_seed(0)
    g2 = Stage2Generator(Stage1Generator(32, ngf=8), ngf=8, res_blocks=1, image_skip=True).eval()
    torch.nn.init.zeros_(g2.to_rgb[0].weight)  # no residual: the output is the upsampled Stage-I image
    low, high, _, _ = g2(torch.randn(2, 100), torch.randn(2, 32))
    up = torch.nn.functional.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False)
    assert torch.allclose(high, up.clamp(-0.995, 0.995), atol=1e-5)
    plain = Stage2Generator(Stage1Generator(32, ngf=8), ngf=8, res_blocks=1).eval()
    torch.nn.init.zeros_(plain.to_rgb[0].weight)
    assert plain(torch.randn(2, 100), torch.randn(2, 32))[1].abs().max() == 0  # the paper's: tanh(0)


def test_stage2_render_starts_from_the_layered_scene_drawn_at_256_px():
    """model.stage2_render: an untrained Stage II (image skip) returns the layered Stage I's scene drawn at
    256 px, which averages back to the 64 px image; its stripes are sharper than the enlarged 64 px image's;
    it needs the image skip and a layered Stage I over a smooth background."""
    import torch.nn.functional as F

    from stackgan.config import ConfigError

    torch.manual_seed(0)
    g1 = Stage1Generator(32, ngf=8, layered=True, background="vertical", pattern=1, spin=True)
    with torch.no_grad():  # an opaque object, striped with a period of about 2.5 px at 64 px
        g1.foreground.to_rgba.bias[3] = 30.0
        g1.foreground.waves[0] = torch.tensor([1.6, 0.0])
        g1.foreground.pattern_head.bias[:] = torch.tensor([8.0, 0.0, -8.0])  # amplitude, threshold, shade (black)
    g2 = Stage2Generator(g1, ngf=8, res_blocks=1, image_skip=True, render=True).eval()
    z, emb, eps = torch.randn(2, 100), torch.randn(2, 32), torch.randn(2, 128)
    low, high, _, _ = g2(z, emb, eps)
    assert high.shape == (2, 3, 256, 256)
    assert torch.allclose(high, g1.render(z, emb, eps, size=256).clamp(-0.995, 0.995), atol=1e-5)
    low, high, _, _ = g2(z, emb)  # CA's noise drawn once for both drawings
    assert (F.avg_pool2d(high, 4) - low).abs().mean() < 0.05  # the same scene
    enlarged = F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False)
    middle = (slice(None), slice(None), slice(112, 144), slice(112, 144))  # inside the object, at the centre
    assert high[middle].std() > 1.4 * enlarged[middle].std()  # the stripes keep their contrast at 256 px
    with pytest.raises(ConfigError, match="drawn at 256 px"):
        Stage2Generator(g1, ngf=8, res_blocks=1, render=True)
    with pytest.raises(ConfigError, match="drawn at 256 px"):
        Stage2Generator(Stage1Generator(32, ngf=8), ngf=8, res_blocks=1, image_skip=True, render=True)


def test_stage2_sharp_draws_the_same_outline_with_an_edge_one_pixel_wide():
    """model.stage2_sharp: the radial outline drawn from its curve at 256 px covers the same object as the
    32 px canvas's mask enlarged (the same area, the same pixels inside and outside) with a far narrower edge,
    and equals it where both are far from the edge; it needs model.stage2_render and a radial outline."""
    from stackgan.config import ConfigError, apply_overrides, get_preset

    torch.manual_seed(0)
    g1 = Stage1Generator(32, ngf=8, layered=True, background="vertical", radial=4, spin=True, taper=True).eval()
    with torch.no_grad():  # a lumpy outline, different for each noise
        g1.foreground.outline.weight.normal_(0, 0.005)
    z, emb, eps = torch.randn(3, 100), torch.randn(3, 32), torch.randn(3, 128)
    with torch.no_grad():
        soft_image = g1.render(z, emb, eps, size=256)
        soft = g1.foreground.mask.clone()  # [3, 1, 256, 256]
        sharp_image = g1.render(z, emb, eps, size=256, sharp=True)
        sharp = g1.foreground.mask
    area_soft, area_sharp = soft.sum((1, 2, 3)), sharp.sum((1, 2, 3))
    assert ((area_sharp - area_soft).abs() / area_soft < 0.03).all()
    edge = lambda m: ((m > 0.05) & (m < 0.95)).sum((1, 2, 3))  # noqa: E731: pixels on the edge
    assert (edge(sharp) < 0.3 * edge(soft)).all()
    far = (soft < 0.01) | (soft > 0.99)  # far from the edge the two masks agree
    assert (sharp[far] - soft[far]).abs().max() < 0.05
    assert not torch.equal(sharp_image, soft_image)
    g2 = Stage2Generator(g1, ngf=8, res_blocks=1, image_skip=True, render=True, sharp=True).eval()
    with torch.no_grad():
        assert torch.allclose(g2(z, emb, eps).image, sharp_image.clamp(-0.995, 0.995), atol=1e-5)
    with pytest.raises(ConfigError, match="model.stage2_sharp"):
        Stage2Generator(g1, ngf=8, res_blocks=1, image_skip=True, sharp=True)
    plain = Stage1Generator(32, ngf=8, layered=True, background="vertical")  # no radial outline
    with pytest.raises(ConfigError, match="model.g_layer_radial"):
        Stage2Generator(plain, ngf=8, res_blocks=1, image_skip=True, render=True, sharp=True)
    with pytest.raises(ConfigError, match="model.stage2_sharp"):
        apply_overrides(get_preset("shapes-layered"), ["model.stage2_sharp=true"])


def test_stage2_pattern_starts_as_stage1s_and_alone_learns_the_texture():
    """model.stage2_pattern: Stage II's own copy of Stage I's pattern (head, waves, phases) draws the 256 px
    scene exactly as Stage I's does once started from it (its sentence weights zero); a loss on Stage II's image
    reaches the copy and not Stage I; the copy's sentence input changes the pattern and nothing else (outline,
    colour, background the same where the object is plain); it needs model.stage2_render."""
    from stackgan.config import ConfigError, apply_overrides, get_preset

    torch.manual_seed(0)
    g1 = Stage1Generator(32, ngf=8, layered=True, background="vertical", pattern=2, spin=True)
    with torch.no_grad():  # an opaque object with a pattern
        g1.foreground.to_rgba.bias[3] = 30.0
        g1.foreground.pattern_head.bias[:] = torch.tensor([6.0, 4.0, 0.0, -8.0])
        g1.foreground.pattern_head.weight.normal_(0, 0.1)
    g2 = Stage2Generator(g1, ngf=8, res_blocks=1, image_skip=True, render=True, pattern=True).eval()
    with torch.no_grad():  # the copy made at construction differs from Stage I's once Stage I moves
        g1.foreground.pattern_head.bias[0] = 3.0
        g1.foreground.waves.mul_(1.3)
    g2.start_pattern()
    z, emb, eps = torch.randn(2, 100), torch.randn(2, 32), torch.randn(2, 128)
    high = g2(z, emb, eps).image
    with torch.no_grad():
        assert torch.allclose(high, g1.render(z, emb, eps, size=256).clamp(-0.995, 0.995), atol=1e-5)
    high.square().mean().backward()
    own = g2.own_pattern
    assert own.head.weight.grad.abs().sum() > 0 and own.waves.grad.abs().sum() > 0
    assert all(p.grad is None for p in g1.parameters())  # Stage I frozen
    with torch.no_grad():
        own.head.weight[:, own.zc_dim:].normal_(0, 0.05)  # the copy reads the sentence now
        moved = g2(z, emb, eps).image
        plain = g1.render(z, emb, eps, size=256).clamp(-0.995, 0.995)
    change = (moved - plain).abs().amax(1)  # [2, 256, 256]
    assert change.max() > 0.1
    # the pattern changes only the object's colour: m fg + (1 - m) bg moves by at most 2 m (colours in [-1, 1])
    assert (change <= 2 * g1.foreground.mask[:, 0] + 1e-5).all()
    with pytest.raises(ConfigError, match="stage2_render"):
        Stage2Generator(g1, ngf=8, res_blocks=1, image_skip=True, pattern=True)
    with pytest.raises(ConfigError, match="model.stage2_pattern"):
        apply_overrides(get_preset("shapes-layered"), ["model.stage2_pattern=true"])
    with pytest.raises(ConfigError, match="stage2.match_weight"):
        apply_overrides(get_preset("shapes-layered"), ["data.swap_attribute=texture", "stage2.swap_weight=1",
                                                       "stage2.match_weight=0"])


def test_stage2_masked_changes_only_the_pixels_near_the_object():
    """model.stage2_masked: Stage II's output passes through Stage I's object mask (widened, enlarged), so
    far from the object its image is the enlarged Stage-I image exactly, however its layers are set; near
    the object it draws; it needs the image skip and a layered Stage I."""
    import torch.nn.functional as F

    from stackgan.config import ConfigError

    torch.manual_seed(0)
    g1 = Stage1Generator(32, ngf=8, layered=True, background="vertical", spin=True)
    with torch.no_grad():
        g1.foreground.to_rgba.bias[3] = 30.0  # an opaque object (its canvas) over the background
    g2 = Stage2Generator(g1, ngf=8, res_blocks=1, image_skip=True, masked=True).train()  # BN: batch statistics
    torch.nn.init.normal_(g2.to_rgb[0].weight, std=0.5)  # a Stage II that draws everywhere
    z, emb, eps = torch.randn(2, 100), torch.randn(2, 32), torch.randn(2, 128)
    with torch.no_grad():
        low, high, _, _ = g2(z, emb, eps, eps)
        near = g2.object_region(g1.foreground.mask)
    enlarged = F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False).clamp(-0.995, 0.995)
    far, inside = near.expand_as(high) == 0, near.expand_as(high) > 0.99
    assert far.float().mean() > 0.3 and inside.any()  # both regions exist in this scene
    assert torch.allclose(high[far], enlarged[far], atol=1e-5)  # the background untouched
    assert (high[inside] - enlarged[inside]).abs().mean() > 0.05  # the object redrawn
    grown = g2.object_region(F.pad(torch.ones(1, 1, 2, 2), (31, 31, 31, 31)))  # a 2 x 2 px object at 64 px
    assert grown[0, 0, 128, 128] == 1 and grown[0, 0, 128, 136] > 0.9 and grown[0, 0, 128, 148] == 0  # 2 px more
    g2.mask_grow = 0  # model.stage2_mask_grow=0: only the object's own pixels
    exact = g2.object_region(F.pad(torch.ones(1, 1, 2, 2), (31, 31, 31, 31)))
    assert exact[0, 0, 128, 128] == 1 and exact[0, 0, 128, 136] == 0
    with pytest.raises(ConfigError, match="stage2_mask_grow"):
        from stackgan.config import apply_overrides, get_preset
        apply_overrides(get_preset("shapes-layered"), ["model.stage2_mask_grow=-1"])
    with pytest.raises(ConfigError, match="near Stage I's object"):
        Stage2Generator(g1, ngf=8, res_blocks=1, masked=True)
    with pytest.raises(ConfigError, match="near Stage I's object"):
        Stage2Generator(Stage1Generator(32, ngf=8), ngf=8, res_blocks=1, image_skip=True, masked=True)


def test_fused_upsampling_conv_is_upsample_then_conv():
    from stackgan.models.blocks import UpBlock, upsample_conv3x3

    torch.manual_seed(0)
    for b, h, w in ((16, 8, 8), (16, 9, 12), (2, 4, 4), (1, 8, 8)):  # transposed conv, odd sizes, small inputs
        x = torch.randn(b, 5, h, w, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(3, 5, 3, 3, dtype=torch.float64, requires_grad=True)
        fused = upsample_conv3x3(x, weight)
        plain = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2), weight, padding=1)
        assert fused.shape == (b, 3, 2 * h, 2 * w)
        assert torch.allclose(fused, plain, atol=1e-12)
        g_fused = torch.autograd.grad(fused.square().sum(), (x, weight))
        g_plain = torch.autograd.grad(plain.square().sum(), (x, weight))
        assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g_fused, g_plain))
    block = UpBlock(5, 3).double().eval()
    x = torch.randn(4, 5, 16, 16, dtype=torch.float64)
    as_layers = block[3](block[2](block[1](block[0](x))))  # the Sequential's own layers, one by one
    assert torch.allclose(block(x), as_layers, atol=1e-12)
    block.fuse_upsampling = False
    assert torch.equal(block(x), as_layers)
    block.fuse_upsampling = True
    with torch.no_grad():  # sampling: the kernel is made once, and again when the weights change
        assert torch.allclose(block(x), as_layers, atol=1e-12)
        block[1].weight.mul_(-2)  # in place, as an optimizer or load_state_dict writes
        assert torch.allclose(block(x), block[3](block[2](block[1](block[0](x)))), atol=1e-12)
        block[1].weight = torch.nn.Parameter(torch.randn_like(block[1].weight))  # replaced
        assert torch.allclose(block(x), block[3](block[2](block[1](block[0](x)))), atol=1e-12)


@pytest.mark.parametrize("stage", [1, 2])
def test_recomputed_up_blocks_give_the_same_images_gradients_and_statistics(stage):
    torch.manual_seed(0)
    g1 = Stage1Generator(text_dim=12, ngf=8)
    g = (g1 if stage == 1 else Stage2Generator(g1, ngf=8, res_blocks=1)).train()
    z, emb = torch.randn(4, 100), torch.randn(4, 12)
    runs = []
    for n in (0, 2, 4):
        net = copy.deepcopy(g)
        net.recompute_blocks = n
        torch.manual_seed(1)  # the same CA noise
        held = {}  # the tensors the forward pass keeps for the backward pass, by storage

        def keep(t, held=held):
            held[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = net(z, emb)
        img = out[-3]
        (img.square().mean() + out[-2].sum()).backward()
        runs.append((img.detach(), [p.grad for p in net.parameters() if p.requires_grad], list(net.buffers()),
                     sum(held.values())))
    assert runs[0][3] > runs[1][3] > runs[2][3]  # fewer activations held, the more blocks recompute
    for img, grads, buffers, _ in runs[1:]:
        assert torch.equal(img, runs[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, runs[0][1]))
        assert all(torch.equal(a, b) for a, b in zip(buffers, runs[0][2]))  # BN counted the batch once
