import math

import torch

from stackgan.losses import discriminator_loss, generator_loss, kl_loss

LN2 = math.log(2.0)


def test_discriminator_loss_by_hand():
    # BCE(logit 0) = ln 2; BCE(logit 2 vs 1) = ln(1 + e^-2); BCE(logit -1 vs 0) = ln(1 + e^-1)
    d = discriminator_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([-1.0]))
    real, wrong, fake = math.log1p(math.exp(-2)), LN2, math.log1p(math.exp(-1))
    assert math.isclose(d["real"].item(), real, rel_tol=1e-6)
    assert math.isclose(d["wrong"].item(), wrong, rel_tol=1e-6)
    assert math.isclose(d["fake"].item(), fake, rel_tol=1e-6)
    assert math.isclose(d["total"].item(), real + 0.5 * (wrong + fake), rel_tol=1e-6)


def test_discriminator_loss_with_unconditional_head():
    z = torch.zeros(4)
    d = discriminator_loss(z, z, z, uncond_real=torch.full((4,), 3.0), uncond_fake=z)
    ur = math.log1p(math.exp(-3))
    assert math.isclose(d["total"].item(), (LN2 + ur) / 2 + (3 * LN2) / 3, rel_tol=1e-6)


def test_generator_loss_by_hand():
    assert math.isclose(generator_loss(torch.zeros(3)).item(), LN2, rel_tol=1e-6)
    g = generator_loss(torch.tensor([1.0]), uncond_fake=torch.tensor([-2.0]))
    assert math.isclose(g.item(), math.log1p(math.exp(-1)) + math.log1p(math.exp(2)), rel_tol=1e-6)


def test_kl_matches_closed_form():
    torch.manual_seed(0)
    mu, logvar = torch.randn(16, 8), torch.randn(16, 8)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)).mean()
    assert torch.allclose(kl_loss(mu, logvar), ref, atol=1e-6)
    assert kl_loss(torch.zeros(4, 8), torch.zeros(4, 8)).item() == 0.0


def test_hinge_losses_by_hand():
    # D: real max(0, 1 - x), wrong and fake max(0, 1 + x); G: -x
    d = discriminator_loss(torch.tensor([0.5, 2.0]), torch.tensor([-3.0, 0.0]), torch.tensor([1.0, -0.5]),
                           kind="hinge")
    assert math.isclose(d["real"].item(), (0.5 + 0.0) / 2)
    assert math.isclose(d["wrong"].item(), (0.0 + 1.0) / 2)
    assert math.isclose(d["fake"].item(), (2.0 + 0.5) / 2)
    assert math.isclose(d["total"].item(), 0.25 + 0.5 * (0.5 + 1.25))
    g = generator_loss(torch.tensor([1.0, 3.0]), uncond_fake=torch.tensor([-2.0]), kind="hinge")
    assert math.isclose(g.item(), -2.0 + 2.0)
