"""Divergence (non-finite numbers: stop or roll back) and the collapse warnings."""
import pytest
import torch

import stackgan.training.loop as loop
from stackgan.checkpoint import load_state
from stackgan.config import apply_overrides, get_preset
from stackgan.training import train
from stackgan.training.monitor import CollapseWatch, pixel_spread
from stackgan.training.step import LOGGED, Updater

from conftest import TINY


def poisoning_updater(at_calls: set[int]):
    """An Updater that, on the given calls, sets a weight of D to NaN after its update (as an
    overflow would) and reports a NaN loss."""
    calls = []

    class Poisoned(Updater):
        def __call__(self, *args):
            losses = super().__call__(*args)
            calls.append(1)
            if len(calls) in at_calls:
                weight = next(self.D.parameters())
                with torch.no_grad():
                    weight[(0,) * weight.dim()] = float("nan")
                losses = losses.clone()
                losses[0] = float("nan")
            return losses
    return Poisoned


def config(*extra):
    return apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.max_steps=8", "stage1.log_every=2",
                                                            "stage1.checkpoint_every=2", *extra])


def test_non_finite_loss_stops_naming_step_and_loss(tiny_shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "Updater", poisoning_updater({5}))
    with pytest.raises(loop.TrainingDiverged, match=r"diverged by step 6 \(non-finite D/total = nan.*checkpoint is"):
        train(config(), tiny_shapes, tmp_path, 1, progress=False)
    state = load_state(tmp_path / "stage1" / "state.pt")  # the last good one stays
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["discriminator"].values()
                                      if v.is_floating_point())


def test_rollback_goes_back_to_the_last_checkpoint_with_half_the_lr(tiny_shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "Updater", poisoning_updater({5}))
    train(config("stage1.on_divergence=rollback"), tiny_shapes, tmp_path, 1, progress=False)
    assert "rolled back to step 4 with learning rates x0.5" in capsys.readouterr().out
    state = load_state(tmp_path / "stage1" / "state.pt")
    assert state["step"] == 8 and state["lr_scale"] == 0.5
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(0.5 * 2e-4)
    assert all(torch.isfinite(v).all() for v in state["discriminator"].values() if v.is_floating_point())


def test_rollbacks_are_limited(tiny_shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "Updater", poisoning_updater(set(range(5, 100))))
    with pytest.raises(loop.TrainingDiverged, match="3 rollbacks done"):
        train(config("stage1.on_divergence=rollback"), tiny_shapes, tmp_path, 1, progress=False)


def test_saturated_d_warns_once_per_episode():
    watch = CollapseWatch(log_every=250)  # 1000 steps = 4 logs
    means = {k: 0.0 for k in LOGGED} | {"D/acc_real": 1.0, "D/acc_fake": 0.995}
    warnings = [watch.update(means, 250 * i) for i in range(1, 7)]
    assert [bool(w) for w in warnings] == [False, False, False, True, False, False]
    assert "D has told real from fake" in warnings[3][0]
    watch.update(means | {"D/acc_fake": 0.6}, 2000)  # the episode ends ...
    assert not any(watch.update(means, 2000 + 250 * i) for i in range(3))
    assert watch.update(means, 3000)  # ... and a new one warns again


def test_collapse_warning_compares_sample_spread_with_real_images():
    varied = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    same = varied[:1].expand(8, -1, -1, -1)
    assert pixel_spread(same) == 0.0 and pixel_spread(varied) > 50
    watch = CollapseWatch(log_every=50)
    assert watch.spread(pixel_spread(varied), pixel_spread(varied), 100) == []
    assert "differ little" in watch.spread(pixel_spread(same), pixel_spread(varied), 200)[0]
    assert watch.spread(pixel_spread(same), pixel_spread(varied), 300) == []  # once per episode
