"""The training step: precision switches, torch.compile, and no waiting for the device in it."""
import copy
import os
import traceback
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stackgan.checkpoint import load_state
from stackgan.config import apply_overrides, get_preset
from stackgan.losses import discriminator_loss
from stackgan.models.build import build_discriminator, build_generator
from stackgan.training import train
from stackgan.training.ema import make_ema
from stackgan.training.step import LOGGED, Updater

from conftest import TINY

# aten ops that copy a value from the device to the host (item(), bool(t), data-dependent shapes)
SYNCING = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
           torch.ops.aten.masked_select.default}


class HostReads(TorchDispatchMode):
    """Counts syncing ops, except reads of host tensors by design: the optimizers' step counters,
    AveragedModel's checks of its ``n_averaged`` (a CPU tensor, never moved) and the EMA's
    ``host_count`` of it. Only reads made directly in those places are excused, not those of
    functions they call (such as the EMA update, which gets a device copy of the counter)."""

    def __init__(self, allowed: list[torch.Tensor]):
        super().__init__()
        self.allowed, self.calls = allowed, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING and not any(args[0] is t for t in self.allowed):
            frames = [f for f in traceback.extract_stack()[:-1]  # the frame whose bool() / item() led here,
                      if "_dynamo" not in f.filename and not f.filename.endswith("_compile.py")]  # past wrappers
            if not (frames[-1].filename.endswith(os.path.join("torch", "optim", "swa_utils.py"))
                    or frames[-1].name == "host_count"):
                self.calls.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("stage,precision", [(1, "fp32"), (1, "bf16"), (2, "fp32")])
def test_step_reads_nothing_back_from_the_device(stage, precision):
    cfg = apply_overrides(get_preset("fast"), TINY + [f"precision={precision}", "model.text_dim=12"])
    torch.manual_seed(0)
    G, D = build_generator(cfg.model, stage), build_discriminator(cfg.model, stage)
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], 2e-4, (0.5, 0.999), fused=True)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, (0.5, 0.999), fused=True)  # as the training loop
    ema = make_ema(G, 0.995)  # as the training loop makes it
    updater = Updater(cfg, stage, G, D, opt_g, opt_d, device=torch.device("cpu"), ema=ema)
    r = 64 if stage == 1 else 256
    batch = (torch.rand(2, 3, r, r) * 2 - 1, torch.randn(2, 12), torch.randn(2, 12), torch.randn(2, cfg.model.z_dim))
    first = updater(*batch)  # creates the optimizer state
    assert ema.n_averaged.device.type == "cpu"  # a host counter also when G lives on a GPU
    steps = [s["step"] for opt in (opt_g, opt_d) for s in opt.state.values()]
    with HostReads(steps) as reads:
        losses = updater(*batch)
    assert reads.calls == []
    assert losses.shape == (len(LOGGED),) and torch.isfinite(losses).all() and not torch.equal(first, losses)


def test_the_watcher_sees_a_host_read():
    with HostReads([]) as reads:
        x = torch.randn(4)
        if (x > 10).any():  # bool() of a tensor: a read from the device
            pass
    assert reads.calls


def test_d_weights_get_no_gradient_from_the_g_update():
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["model.text_dim=12"])
    G, D = build_generator(cfg.model, 1), build_discriminator(cfg.model, 1)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    computed = {}
    for net, params in (("G", G.named_parameters()), ("D", D.named_parameters())):
        for name, p in params:
            key = f"{net}.{name}"
            computed[key] = 0
            p.register_hook(lambda grad, key=key: computed.__setitem__(key, computed[key] + 1))
    Updater(cfg, 1, G, D, opt_g, opt_d, device=torch.device("cpu"))(
        torch.rand(2, 3, 64, 64), torch.randn(2, 12), torch.randn(2, 12), torch.randn(2, cfg.model.z_dim))
    assert {v for k, v in computed.items() if k.startswith("D.")} == {2}  # D's update (real, fake side); none in G's
    assert {v for k, v in computed.items() if k.startswith("G.")} == {1}  # G's update, through D
    assert all(p.requires_grad for p in D.parameters())  # unfrozen again for the next D update
    assert all(p.grad is None for p in [*G.parameters(), *D.parameters()])  # freed after each update


@pytest.mark.parametrize("stage,extra", [(1, []), (2, []), (1, ["model.uncond_head1=true"])])
def test_d_update_in_two_passes_is_the_whole_loss(stage, extra):
    """The D update runs the real and the fake side's backward passes one after the other; with
    SGD at lr 1 the change of D's weights is its gradient, which must be that of the whole loss
    (with the image-only head: StackGAN++'s joint conditional and unconditional loss)."""
    cfg = apply_overrides(get_preset("paper"), TINY + ["model.text_dim=12"] + extra)
    torch.manual_seed(0)
    G, D = build_generator(cfg.model, stage), build_discriminator(cfg.model, stage)
    D_ref = copy.deepcopy(D)
    r = 64 if stage == 1 else 256
    real, text, wrong, z = torch.rand(3, 3, r, r) * 2 - 1, torch.randn(3, 12), torch.randn(3, 12), torch.randn(3, 8)
    torch.manual_seed(1)
    with torch.no_grad():
        fake, mu = (G(z, text)[-3:-1])
    h_real, h_fake = D_ref(real), D_ref(fake)
    uncond = stage == 2 or bool(extra)  # the paper preset's Stage II D has the unconditional head
    loss = discriminator_loss(D_ref.cond_logits(h_real, mu), D_ref.cond_logits(h_real, mu.roll(1, 0)),
                              D_ref.cond_logits(h_fake, mu), D_ref.uncond_logits(h_real) if uncond else None,
                              D_ref.uncond_logits(h_fake) if uncond else None)["total"]
    grads = torch.autograd.grad(loss, list(D_ref.parameters()))
    before = [p.detach().clone() for p in D.parameters()]
    torch.manual_seed(1)
    Updater(cfg, stage, G, D, torch.optim.SGD(G.parameters(), 0.0), torch.optim.SGD(D.parameters(), 1.0),
            device=torch.device("cpu"))(real, text, wrong, z)
    for p, b, g in zip(D.parameters(), before, grads):
        assert (b - p.detach() - g).abs().max() <= 1e-4 * g.abs().max() + 1e-7  # summation order only
    with torch.no_grad():  # BN statistics: real, then fake, then G's update scores the fake with the new D
        for p, g in zip(D_ref.parameters(), grads):
            p -= g
        D_ref.cond_logits(D_ref(fake), mu)
    assert all(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4) for a, b in zip(D.buffers(), D_ref.buffers()))


def test_fp16_trains_with_gradient_scalers_and_resumes(tiny_shapes, tmp_path):
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["precision=fp16"])
    train(replace(cfg, stage1=replace(cfg.stage1, max_steps=2)), tiny_shapes, tmp_path, 1, progress=False)
    state = load_state(tmp_path / "stage1" / "state.pt")
    assert state["scaler_g"]["scale"] > 0 and state["scaler_d"]["scale"] > 0
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())
    train(cfg, tiny_shapes, tmp_path, 1, resume=True, max_steps=3, progress=False)
    assert load_state(tmp_path / "stage1" / "state.pt")["step"] == 3


def test_compiled_networks_train(tiny_shapes, tmp_path):
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["compile=true", "stage1.max_steps=2"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    state = load_state(tmp_path / "stage1" / "state.pt")
    assert state["step"] == 2 and not any(k.startswith("_orig_mod") for k in state["generator"])


def test_stage2_consistency_keeps_the_64px_image_at_stage_ones_and_is_logged():
    """stage2.consistency_weight: the L1 distance of Stage II's image area-resized to 64 px to Stage I's image;
    0 for a Stage-II image that only adds detail that averages out at 64 px, logged as G/consistency."""
    from stackgan.config import ConfigError
    from stackgan.training.step import consistency_loss

    low = torch.rand(2, 3, 64, 64) * 2 - 1
    detail = torch.tensor([[0.1, -0.1], [-0.1, 0.1]]).repeat(128, 128)  # a 2 x 2 checker: its mean is 0
    high = low.repeat_interleave(4, 2).repeat_interleave(4, 3) + detail
    assert consistency_loss(high, low).item() < 1e-6
    assert abs(consistency_loss(high + 0.3, low).item() - 0.3) < 1e-5  # a shift of every pixel: 0.3
    cfg = apply_overrides(get_preset("fast"), TINY + ["model.text_dim=12"])
    logged = {}
    for weight in (0.0, 5.0):
        c = apply_overrides(cfg, [f"stage2.consistency_weight={weight}"])
        torch.manual_seed(0)
        G, D = build_generator(c.model, 2), build_discriminator(c.model, 2)
        opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], 2e-4)
        opt_d = torch.optim.Adam(D.parameters(), 2e-4)
        batch = (torch.rand(2, 3, 256, 256) * 2 - 1, torch.randn(2, 12), torch.randn(2, 12), torch.randn(2, c.model.z_dim))
        logged[weight] = dict(zip(LOGGED, Updater(c, 2, G, D, opt_g, opt_d, device=torch.device("cpu"))(*batch).tolist()))
    assert logged[0.0]["G/consistency"] == 0.0 and logged[5.0]["G/consistency"] > 0.0
    with pytest.raises(ConfigError, match="stage1.consistency_weight must be 0"):
        apply_overrides(get_preset("fast"), ["stage1.consistency_weight=1"])


class _MeanColourReader(torch.nn.Module):
    """A stand-in matcher: an image's embedding is its mean colour, unit length."""

    logit_scale = torch.tensor(2.0)

    def encode_image(self, images):
        return torch.nn.functional.normalize(images.mean((2, 3)), dim=1)


def test_image_pair_loss_pulls_each_image_to_its_own_captions_real_image():
    """image_pair_loss: the cross-entropy of the matcher's scaled cosines between each generated image and the
    batch's real images, row i's target real image i (checked by hand); descent moves a generated image toward
    its own real image; stage<N>.image_pair_weight needs the matcher."""
    from stackgan.config import ConfigError, apply_overrides, get_preset
    from stackgan.training.step import image_pair_loss

    reader = _MeanColourReader()
    real = torch.zeros(3, 3, 8, 8)
    real[0, 0], real[1, 1], real[2, 2] = 1.0, 1.0, 1.0  # red, green, blue
    fake = torch.full((2, 3, 8, 8), 0.5)
    fake[0, 0] = 0.9  # reddish: near its own real image (row 0)
    fake.requires_grad_(True)
    emb = reader.encode_image(fake)
    loss = image_pair_loss(reader, emb, real)
    cos = emb.detach() @ torch.eye(3).T  # the real images' embeddings are the unit axes
    expected = torch.nn.functional.cross_entropy(reader.logit_scale.exp() * cos, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert fake.grad[1, 1].mean() < 0 < fake.grad[1, 0].mean()  # row 1 pulled toward green, away from red
    with pytest.raises(ConfigError, match="image_pair_weight"):
        apply_overrides(get_preset("shapes-layered"), ["stage2.image_pair_weight=1", "stage2.match_weight=0"])
