"""The fast recipe's switches do what they claim."""
import json
import math

import pytest
import torch
from dataclasses import replace

from stackgan.checkpoint import load_state
from stackgan.config import apply_overrides, get_preset
from stackgan.matching import ImageTextMatcher, load_or_train_matcher, train_matcher
from stackgan.pipeline import StackGANPipeline
from stackgan.training import train
from stackgan.training.data import load_train_data
from stackgan.utils import from_uint8
from conftest import TINY


def _matchers_made(data_dir, *cfgs) -> set:
    """The matcher cache files (json) that loading or training a matcher for each data config adds."""
    _, norm = load_train_data(data_dir, cfgs[0], 64, progress=False)
    cache = data_dir / ".stackgan-cache"
    before = set(cache.glob("matcher-*.json"))
    for cfg in cfgs:
        load_or_train_matcher(data_dir, cfg, norm, progress=False)
    return set(cache.glob("matcher-*.json")) - before


def test_ema_weights_are_kept_and_used_for_sampling(tiny_shapes, tmp_path):
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.ema_decay=0.5", "stage1.max_steps=4"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    state = load_state(tmp_path / "stage1" / "state.pt")
    raw, ema = state["generator"], state["ema"]
    assert ema["n_averaged"].item() == 4
    key = "fc.0.weight" if "fc.0.weight" in raw else next(k for k in raw if k.endswith("weight"))
    assert not torch.equal(raw[key], ema[f"module.{key}"])  # an average, not a copy
    pipe = StackGANPipeline.load(tmp_path / "stage1" / "state.pt")
    for k, v in pipe.generator.state_dict().items():
        assert torch.equal(v, ema[f"module.{k}"]), k  # generate samples with the average
    saved = StackGANPipeline.load(tmp_path / "model")  # the inference folder holds the average too
    for k, v in saved.generator.state_dict().items():
        assert torch.equal(v, ema[f"module.{k}"]), k


def test_matcher_learns_to_pair_images_with_their_captions(tiny_shapes, tmp_path):
    cfg = get_preset("shapes-cpu").data
    data, norm = load_train_data(tiny_shapes, cfg, 64, progress=False)
    images, text = from_uint8(data.images[:32]), data.embeddings[:32, 0]
    torch.manual_seed(0)
    before = ImageTextMatcher(norm.mean.numel()).eval().loss(images, text).item()
    matcher = train_matcher(tiny_shapes, cfg, norm, tmp_path / "m.safetensors", steps=60, batch_size=32,
                            progress=False)
    after = matcher.loss(images, text).item()
    assert after < 0.5 * before, (before, after)
    shuffled = matcher.loss(images, text.roll(1, 0)).item()  # someone else's captions
    assert after < shuffled


def test_match_weight_trains_one_cached_matcher_and_adds_its_loss(tiny_shapes, tmp_path):
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["data.matcher_steps=5", "stage1.match_weight=1",
                                                            "stage1.max_steps=2", "stage1.log_every=1"])
    cache = tiny_shapes / ".stackgan-cache"
    before = set(cache.glob("matcher-*.safetensors"))  # other tests' matchers (other settings) share the data
    train(cfg, tiny_shapes, tmp_path / "a", 1, progress=False)
    made = sorted(set(cache.glob("matcher-*.safetensors")) - before)
    assert len(made) == 1
    mtime = made[0].stat().st_mtime_ns
    train(cfg, tiny_shapes, tmp_path / "b", 1, progress=False)  # reused, not retrained
    assert sorted(set(cache.glob("matcher-*.safetensors")) - before) == made and made[0].stat().st_mtime_ns == mtime
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "a" / "stage1" / "tb"))
    acc.Reload()
    assert all(e.value > 0 for e in acc.Scalars("G/match"))
    off = apply_overrides(cfg, ["stage1.match_weight=0"])
    train(off, tiny_shapes, tmp_path / "c", 1, progress=False)
    acc = EventAccumulator(str(tmp_path / "c" / "stage1" / "tb"))
    acc.Reload()
    assert all(e.value == 0 for e in acc.Scalars("G/match"))


def test_recipe_switches_are_validated():
    with pytest.raises(ValueError, match="ema_decay"):
        apply_overrides(get_preset("shapes-cpu"), ["stage1.ema_decay=1.0"])
    with pytest.raises(ValueError, match="match_weight"):
        apply_overrides(get_preset("shapes-cpu"), ["stage2.match_weight=-1"])


def test_fast_preset_round_trips_through_yaml_and_state_dicts(tmp_path):
    from stackgan.config import from_dict, load_yaml, to_dict, to_yaml
    cfg = apply_overrides(get_preset("fast"), ["data.matcher_widths=[8, 16, 32]"])
    assert cfg.data.matcher_widths == (8, 16, 32) and cfg.stage1.match_weight > 0 and cfg.stage1.ema_decay > 0
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert load_yaml(tmp_path / "c.yaml") == cfg == from_dict(to_dict(cfg))
    with pytest.raises(ValueError, match="matcher_widths"):
        apply_overrides(cfg, ["data.matcher_widths=3"])



def test_forty_fast_steps_teach_d_which_caption_belongs_to_an_image(tiny_shapes, tmp_path):
    """The fast preset at its real widths: after 40 steps D scores real images with their own
    caption higher than with another image's caption; after one step it cannot tell them apart."""
    from stackgan.config import from_dict
    from stackgan.models.build import build_discriminator

    cfg = apply_overrides(get_preset("fast"), ["stage1.batch_size=16", "data.matcher_steps=40",
                                               "stage1.log_every=10", "stage1.sample_every=1000"])
    data, _ = load_train_data(tiny_shapes, cfg.data, 64, progress=False)
    real = from_uint8(data.images)  # [N, 3, 64, 64]
    right = data.embeddings[:, 0]  # [N, D]
    wrong = right.roll(1, 0)  # the caption of the previous image

    def gap(steps):
        run = tmp_path / f"run{steps}"
        train(replace(cfg, stage1=replace(cfg.stage1, max_steps=steps)), tiny_shapes, run, 1, progress=False)
        state = load_state(run / "stage1" / "state.pt")
        D = build_discriminator(from_dict(state["config"]).model, 1)
        D.load_state_dict(state["discriminator"])
        with torch.no_grad():
            h = D.eval()(real)
            return (torch.sigmoid(D.cond_logits(h, right)) - torch.sigmoid(D.cond_logits(h, wrong))).mean().item()

    first, after = gap(1), gap(40)
    assert abs(first) < 0.01, first
    assert after > 0.05, after


@pytest.mark.parametrize("stage", [1, 2])
def test_spectral_norm_switch_wraps_every_d_layer(stage):
    from torch import nn
    from torch.nn.utils import parametrize
    from stackgan.models.build import build_discriminator

    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["model.text_dim=12"])
    layers = lambda d: [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # noqa: E731
    plain = build_discriminator(cfg.model, stage)
    assert not any(parametrize.is_parametrized(m) for m in layers(plain))
    sn = build_discriminator(replace(cfg.model, d_spectral_norm=True), stage)
    assert layers(sn) and all(parametrize.is_parametrized(m, "weight") for m in layers(sn))
    torch.manual_seed(0)
    img = torch.randn(2, 3, 64 * 4 ** (stage - 1), 64 * 4 ** (stage - 1))
    for _ in range(20):  # power iteration in train mode: the top singular value goes to 1
        sn(img)
    w = layers(sn)[1].weight  # [out, in, k, k], normalized
    assert abs(torch.linalg.matrix_norm(w.flatten(1), ord=2).item() - 1.0) < 0.05


def test_recon_branch_trains_an_encoder_that_stage2_reuses(tiny_shapes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from stackgan.models.encoder import LatentEncoder

    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + [
        "stage1.recon_weight=10", "stage1.max_steps=3", "stage1.log_every=1",
        "stage2.recon_weight=10", "stage2.max_steps=2", "stage2.log_every=1"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    s1 = load_state(tmp_path / "stage1" / "state.pt")
    torch.manual_seed(cfg.seed * 10 + 1)  # the loop's seed: the encoder is built right after G and D
    fresh = LatentEncoder(s1["config"]["model"]["text_dim"], 8, 8).state_dict()
    assert set(s1["encoder"]) == set(fresh)
    assert not torch.equal(s1["encoder"]["out.weight"], fresh["out.weight"])  # it was trained
    acc = EventAccumulator(str(tmp_path / "stage1" / "tb"))
    acc.Reload()
    assert all(e.value > 0 for e in acc.Scalars("G/recon"))
    train(cfg, tiny_shapes, tmp_path, 2, progress=False)  # Stage II uses it, frozen
    s2 = load_state(tmp_path / "stage2" / "state.pt")
    assert "encoder" in s2 and torch.equal(s2["encoder"]["out.weight"], s1["encoder"]["out.weight"])
    acc = EventAccumulator(str(tmp_path / "stage2" / "tb"))
    acc.Reload()
    assert all(e.value > 0 for e in acc.Scalars("G/recon"))


def test_stage2_recon_needs_a_stage1_encoder(tiny_shapes, tmp_path):
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.max_steps=1", "stage2.recon_weight=1",
                                                            "stage2.max_steps=1"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    with pytest.raises(ValueError, match="stage1.recon_weight"):
        train(cfg, tiny_shapes, tmp_path, 2, progress=False)


def test_recon_loss_falls_in_forty_steps(tiny_shapes, tmp_path):
    """The reconstruction branch learns: G's redraw of real images from their encoded z gets
    closer to them (L1) over 40 steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.recon_weight=100", "stage1.max_steps=40",
                                                            "stage1.log_every=5", "stage1.lr_g=0.001", "stage1.batch_size=16"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    acc = EventAccumulator(str(tmp_path / "stage1" / "tb"))
    acc.Reload()
    recon = [e.value for e in acc.Scalars("G/recon")]
    assert recon[-1] < 0.8 * recon[0], recon


def test_hard_wrong_captions_are_the_nearest_other_caption(tiny_shapes):
    from stackgan.training.data import hardest_other

    text = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.3], [2.0, 0.0, 0.0]])
    # 0 and 4 point the same way (a copy of a caption is never its wrong caption): 0's is 1
    assert hardest_other(text).tolist() == [1, 0, 3, 2, 1]
    cfg = apply_overrides(get_preset("fast"), ["data.wrong_pairs=hard"]).data
    data, _ = load_train_data(tiny_shapes, cfg, 64, progress=False)
    _, text, wrong = data.batch(0, 16)
    unit = torch.nn.functional.normalize(text, dim=1)
    chosen = (unit * torch.nn.functional.normalize(wrong, dim=1)).sum(1)  # cosine to its wrong caption
    rolled = (unit * unit.roll(1, 0)).sum(1)  # cosine to the previous caption (wrong_pairs=shift)
    assert (chosen >= rolled - 1e-6).all() and chosen.mean() > rolled.mean()


def test_matcher_hard_negative_term_and_its_own_cache(tiny_shapes, tmp_path):
    torch.manual_seed(0)
    m = ImageTextMatcher(12, widths=(4, 8)).eval()
    images = torch.randn(1, 3, 64, 64).expand(6, -1, -1, -1)
    same = torch.randn(1, 12).expand(6, -1)  # six copies of one pair: every hardest negative ties
    with torch.no_grad():
        gap = m.loss(images, same, hard_weight=1.0) - m.loss(images, same)
    assert abs(gap.item() - 2 * 0.2) < 1e-5  # margin 0.2, image->text and text->image
    with torch.no_grad():  # distinct pairs: the hinge only adds where a negative comes within the margin
        images, text = torch.randn(6, 3, 64, 64), torch.randn(6, 12)
        assert m.loss(images, text, hard_weight=1.0) >= m.loss(images, text)
    cfg = apply_overrides(get_preset("fast"), ["data.matcher_steps=3", "data.matcher_batch=8"]).data
    assert len(_matchers_made(tiny_shapes, cfg, replace(cfg, matcher_hard=1.0))) == 2  # one cache file each


def test_d_augmentation_shifts_by_whole_pixels_within_bounds_and_keeps_gradients():
    from stackgan.augment import augment_for_d
    torch.manual_seed(0)
    x = torch.randn(16, 3, 64, 64, requires_grad=True)
    y = augment_for_d(x, translate=3)
    shifts = set()
    for b in range(len(x)):  # the middle of each output is the input moved by one (dy, dx) in [-3, 3]^2
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.equal(y[b, :, 8:56, 8:56], x[b, :, 8 + dy:56 + dy, 8 + dx:56 + dx])]
        assert len(found) == 1, (b, found)
        shifts.add(found[0])
    assert len(shifts) > 4  # drawn per image, not one shift for the batch
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    big = torch.arange(256.0).repeat(1, 3, 256, 1)  # [1, 3, 256, 256], value = column index
    moved = augment_for_d(big, translate=2)[0, 0, 128, 128] - 128  # 2 px at 64 -> up to 8 px at 256
    assert abs(moved) <= 8
    noisy = augment_for_d(torch.zeros(4, 3, 64, 64), noise=0.1)
    assert 0.08 < noisy.std().item() < 0.12
    assert torch.equal(augment_for_d(x.detach()), x.detach())  # both off: unchanged


def test_d_augmentation_switch_reaches_every_d_call(tiny_shapes, tmp_path, monkeypatch):
    import stackgan.training.step as step
    calls = []
    real_fn = step.augment_for_d

    def spy(x, translate, noise):
        calls.append((tuple(x.shape), translate, noise))
        return real_fn(x, translate, noise)

    monkeypatch.setattr(step, "augment_for_d", spy)
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.d_translate=2", "stage1.d_noise=0.05",
                                                            "stage1.max_steps=2"])
    train(cfg, tiny_shapes, tmp_path / "on", 1, progress=False)
    assert len(calls) == 6  # per step: D(real), D(fake) for D's update, D(fake) for G's
    assert {c[1:] for c in calls} == {(2, 0.05)}
    calls.clear()
    train(apply_overrides(cfg, ["stage1.d_translate=0", "stage1.d_noise=0"]), tiny_shapes, tmp_path / "off", 1,
          progress=False)
    assert calls == []
    with pytest.raises(ValueError, match="d_translate"):
        apply_overrides(cfg, ["stage2.d_translate=-1"])


def test_matcher_checker_trunk_layout_cache_and_reload(tiny_shapes, tmp_path):
    from stackgan.matching import load_matcher, save_matcher
    m = ImageTextMatcher(12, widths=(4, 8, 8), trunk="checker").eval()
    convs = [x for x in m.trunk if isinstance(x, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 1] and [c.kernel_size[0] for c in convs] == [4, 3, 3]
    assert any(isinstance(x, torch.nn.ReLU) for x in m.trunk)
    assert not any(isinstance(x, torch.nn.LeakyReLU) for x in m.trunk)
    assert m.trunk[0].size == 128  # the checker's input size: the 64 px image enlarged 2x
    emb = m.encode_image(torch.randn(3, 3, 64, 64))
    assert emb.shape == (3, 128) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert "trunk" not in ImageTextMatcher(12).config  # the default keeps the caches made before the switch
    save_matcher(m, tmp_path / "m.safetensors", {})
    back = load_matcher(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(back.encode_image(x), m.encode_image(x))
    with pytest.raises(ValueError, match="matcher_trunk"):
        apply_overrides(get_preset("fast"), ["data.matcher_trunk=resnet"])
    cfg = apply_overrides(get_preset("fast"), ["data.matcher_steps=2", "data.matcher_batch=8"]).data
    assert len(_matchers_made(tiny_shapes, cfg, replace(cfg, matcher_trunk="checker"))) == 2  # one cache file each


def test_matcher_size_128_reads_a_pattern_that_64_px_averages_away_and_keys_its_own_cache(tiny_shapes, tmp_path):
    """data.matcher_size=128: the checker layout reads a 128 px image as it is (no enlargement), so a pattern
    of period 2 px at 128 px, which area-resizing to 64 px flattens to grey, changes what it reads."""
    torch.manual_seed(0)
    m64 = ImageTextMatcher(12, widths=(4, 8, 8), size=64, trunk="checker").eval()
    m128 = ImageTextMatcher(12, widths=(4, 8, 8), size=128, trunk="checker").eval()
    assert isinstance(m128.trunk[0], torch.nn.Conv2d) and m64.trunk[0].size == 128  # same trunk input: 128 px
    grey = torch.zeros(1, 3, 256, 256)
    stripes = grey.clone()
    stripes[..., 0::4, :] = stripes[..., 1::4, :] = 0.8  # period 4 px at 256 px, 2 px at 128 px, flat at 64 px
    stripes[..., 2::4, :] = stripes[..., 3::4, :] = -0.8
    assert torch.allclose(m64.encode_image(stripes), m64.encode_image(grey), atol=1e-6)  # averaged away at 64 px
    assert not torch.allclose(m128.encode_image(stripes), m128.encode_image(grey), atol=1e-3)  # read at 128 px
    with pytest.raises(ValueError, match="matcher_size must be 64 or 128"):
        apply_overrides(get_preset("fast"), ["data.matcher_size=96"])
    cfg = apply_overrides(get_preset("fast"), ["data.matcher_steps=2", "data.matcher_batch=6"]).data  # (a batch no
    made = _matchers_made(tiny_shapes, cfg, replace(cfg, matcher_size=128))  # other test uses: both made here)
    assert sorted(json.loads(p.read_text())["config"]["size"] for p in made) == [64, 128]  # one cache file each


def test_matcher_zoom_draws_from_its_generator_and_keys_its_own_cache(tiny_shapes, tmp_path):
    from stackgan.augment import zoom
    x = torch.zeros(4, 3, 64, 64)
    x[:, :, 24:40, 24:40] = 1.0  # a 16 px square in the middle
    a = zoom(x, 1.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, zoom(x, 1.5, torch.Generator().manual_seed(3)))  # the generator decides, not the global RNG
    side = (a[:, 0] > 0.5).sum((1, 2)).float().sqrt()  # the square's side after zooming
    assert ((side >= 16 / 1.5 - 1.5) & (side <= 16 * 1.5 + 1.5)).all() and side.std() > 0.5
    with pytest.raises(ValueError, match="matcher_zoom"):
        apply_overrides(get_preset("fast"), ["data.matcher_zoom=0.5"])
    cfg = apply_overrides(get_preset("fast"), ["data.matcher_steps=2", "data.matcher_batch=4"]).data
    made = _matchers_made(tiny_shapes, cfg, replace(cfg, matcher_zoom=1.4))
    assert len(made) == 2 and sorted(json.loads(p.read_text()).get("zoom") for p in made
                                     if "zoom" in json.loads(p.read_text())) == [1.4]


def test_matcher_stretch_keeps_area_and_corners_changes_proportions_and_keys_its_own_cache(tiny_shapes, tmp_path):
    from stackgan.augment import stretch
    x = torch.zeros(6, 3, 64, 64)
    x[:, :, 24:40, 24:40] = 1.0  # a 16 px square in the middle
    a = stretch(x, 1.6, torch.Generator().manual_seed(3))
    assert torch.equal(a, stretch(x, 1.6, torch.Generator().manual_seed(3)))  # the generator decides
    assert torch.equal(stretch(x, 1.0), x)  # 1: off
    obj = a[:, 0] > 0.5
    area = obj.sum((1, 2)).float()
    assert ((area - 256).abs() < 256 * 0.12).all()  # the area is kept
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    width = torch.stack([xs[o].max() - xs[o].min() for o in obj])
    height = torch.stack([ys[o].max() - ys[o].min() for o in obj])
    assert (width - height).abs().max() > 3  # ... but not its proportions: a rectangle or a rhombus
    with pytest.raises(ValueError, match="matcher_stretch"):
        apply_overrides(get_preset("fast"), ["data.matcher_stretch=0.5"])
    cfg = apply_overrides(get_preset("fast"), ["data.matcher_steps=2", "data.matcher_batch=5"]).data  # (a new base)
    made = _matchers_made(tiny_shapes, cfg, replace(cfg, matcher_stretch=1.5))
    assert len(made) == 2 and [json.loads(p.read_text()).get("stretch") for p in made].count(1.5) == 1


def test_match_foils_adds_only_the_foils_to_the_matching_loss(tiny_shapes, tmp_path, monkeypatch):
    from stackgan.training.step import foil_rows
    text = torch.arange(12.0).view(4, 3)
    foil = torch.full((1, 3), -1.0)
    wrong = torch.cat([text.roll(1, 0)[:3], foil])  # three of the batch's own captions, one foil
    assert torch.equal(foil_rows(text, wrong), foil)
    assert foil_rows(text, text.roll(1, 0)).shape == (0, 3)  # shifted captions are nobody's foil
    m = ImageTextMatcher(3, widths=(4, 8)).eval()
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():  # a foil is one more wrong text for every image: the image->text term can only grow
        assert m.loss(images, text, foils=foil) > m.loss(images, text)
    with pytest.raises(ValueError, match="match_foils"):
        apply_overrides(get_preset("fast"), ["stage1.match_foils=true"])  # no foils in the data config
    cfg = apply_overrides(get_preset("fast"), TINY + ["data.matcher_steps=2", "data.foil_share=0.5", "data.foils_per_image=1",
                                                      "stage1.match_foils=true", "stage1.max_steps=2", "stage1.log_every=1"])
    seen, read, loss = [], [], ImageTextMatcher.loss

    def spy(self, images, text, hard_weight=0.0, margin=0.2, foils=None, others=None, image_emb=None):
        seen.append(None if foils is None else foils.shape[0])
        read.append((len(images), 0 if others is None else len(others)))
        return loss(self, images, text, hard_weight, margin, foils, others, image_emb)
    monkeypatch.setattr(ImageTextMatcher, "loss", spy)
    train(cfg, tiny_shapes, tmp_path / "a", 1, progress=False)
    assert seen[-2:] and all(n is not None and n > 0 for n in seen[-2:])  # G's two steps passed foils
    b = cfg.stage1.batch_size
    assert read[-1] == (b, 0)
    train(replace(cfg, stage1=replace(cfg.stage1, match_share=0.5)), tiny_shapes, tmp_path / "b", 1, progress=False)
    assert read[-1] == (math.ceil(b / 2), b - math.ceil(b / 2))  # stage1.match_share: half read, half wrong texts
    with torch.no_grad():  # the captions of unread images are more wrong texts: the loss can only grow
        assert m.loss(images[:2], text[:2], others=text[2:]) > m.loss(images[:2], text[:2])
    with pytest.raises(ValueError, match="match_share must be in"):
        apply_overrides(get_preset("fast"), ["stage1.match_share=0"])


def test_matcher_key_follows_precomputed_vectors(tiny_shapes, tmp_path):
    import numpy as np
    from stackgan.data.foils import write_attribute_embeddings
    from stackgan.matching import _key
    oracle = write_attribute_embeddings(tiny_shapes, tmp_path / "oracle", foils_per_image=1)
    cfg = apply_overrides(get_preset("fast"), ["data.text_encoder=precomputed", "data.matcher_foils=true"]).data
    before = _key(oracle, cfg, {}, 10, 0)
    assert _key(oracle, cfg, {}, 10, 0) == before  # stable
    emb = np.load(oracle / "foils-train.npy")
    np.save(oracle / "foils-train.npy", emb[:, :, ::-1].copy())  # the same shape, other vectors
    after_foils = _key(oracle, cfg, {}, 10, 0)
    assert after_foils != before
    assert _key(oracle, replace(cfg, matcher_foils=False), {}, 10, 0) != after_foils
    emb = np.load(oracle / "embeddings-train.npy")
    np.save(oracle / "embeddings-train.npy", emb[:, :, ::-1].copy())
    assert _key(oracle, cfg, {}, 10, 0) != after_foils


def test_foil_attributes_make_caption_foils_of_those_words_only(tiny_shapes):
    from stackgan.data.foils import foil_weights, make_foils
    from stackgan.data.manifest import read_manifest
    from stackgan.data.shapes_text import parse_caption
    records = read_manifest(tiny_shapes, "train")[:20]
    foils = make_foils(records, 3, 0, foil_weights("shape"))
    checked = 0
    for r, fs in zip(records, foils):
        for foil in fs:  # every foil names another shape and keeps every other attribute its captions name
            named = parse_caption(foil)
            assert named["shape"] != r["attributes"]["shape"]
            assert all(v == r["attributes"][k] for k, v in named.items() if k != "shape")
            checked += 1
    assert checked >= 40
    cfg = apply_overrides(get_preset("fast"), ["data.foil_share=0.5", "data.foils_per_image=2",
                                               "data.foil_attributes=shape"]).data
    data, _ = load_train_data(tiny_shapes, cfg, 64, progress=False)
    assert data.foils.shape[:2] == (64, 2)
    assert list((tiny_shapes / ".stackgan-cache").glob("*train-foils2-shape*"))  # a cache of their own
    with pytest.raises(ValueError, match="foil attributes"):
        apply_overrides(get_preset("fast"), ["data.foil_attributes=shape,smell"])
    with pytest.raises(ValueError, match="precomputed"):
        apply_overrides(get_preset("fast"), ["data.foil_attributes=shape", "data.text_encoder=precomputed"])


def test_matcher_foil_attributes_give_the_matcher_its_own_foils_and_d_keeps_its_own(tiny_shapes):
    """data.matcher_foil_attributes: the matcher is the one trained with foils of those words (the same cache
    key as with foil_attributes set to them), while D's foils still change foil_attributes' words."""
    base = ["data.matcher_steps=2", "data.matcher_batch=4", "data.matcher_foils=true", "data.foils_per_image=2",
            "data.foil_share=0.5"]
    split = apply_overrides(get_preset("fast"), base + ["data.foil_attributes=shape",
                                                        "data.matcher_foil_attributes=texture"]).data
    same = apply_overrides(get_preset("fast"), base + ["data.foil_attributes=texture"]).data
    made = _matchers_made(tiny_shapes, split, same)
    assert len(made) == 1  # one matcher serves both: foils of the texture word
    assert json.loads(made.pop().read_text())["data"]["foil_attributes"] == "texture"
    data, _ = load_train_data(tiny_shapes, split, 64, progress=False)
    d_foils = data.foils  # D's: the shape word changed
    shape_only, _ = load_train_data(tiny_shapes, replace(split, matcher_foil_attributes=""), 64, progress=False)
    assert torch.equal(d_foils, shape_only.foils)
    with pytest.raises(ValueError, match="matcher_foils=true"):
        apply_overrides(get_preset("fast"), ["data.matcher_foil_attributes=texture"])
    with pytest.raises(ValueError, match="foil attributes"):
        apply_overrides(get_preset("fast"), ["data.matcher_foils=true", "data.matcher_foil_attributes=smell"])


def test_matcher_foil_sets_give_each_image_one_foil_of_each_set(tiny_shapes, monkeypatch):
    """data.matcher_foil_attributes="shape+texture": every step the matcher tells each image from a shape foil
    AND a texture foil of its caption (not one foil of either, as "shape,texture" does); its own cache key."""
    from stackgan.data.manifest import read_manifest
    from stackgan.matching import ImageTextMatcher
    from stackgan.training.data import foil_embeddings

    base = ["data.matcher_steps=3", "data.matcher_batch=4", "data.matcher_foils=true", "data.foils_per_image=2",
            "data.foil_share=0.5", "data.foil_attributes=shape"]
    sets = apply_overrides(get_preset("fast"), base + ["data.matcher_foil_attributes=shape+texture"]).data
    either = apply_overrides(get_preset("fast"), base + ["data.matcher_foil_attributes=shape,texture"]).data
    seen = []  # (batch size, the foils) of each training step's loss
    real_loss = ImageTextMatcher.loss

    def recording_loss(self, x, text, hard=0.0, foils=None, **kw):
        seen.append((len(x), foils))
        return real_loss(self, x, text, hard, foils=foils, **kw)
    monkeypatch.setattr(ImageTextMatcher, "loss", recording_loss)
    made = _matchers_made(tiny_shapes, sets, either)
    assert len(made) == 2  # two matchers: the sets are not the list
    records = read_manifest(tiny_shapes, "train")
    shape = foil_embeddings(tiny_shapes, records, replace(sets, foil_attributes="shape"), False)[0].flatten(0, 1)
    texture = foil_embeddings(tiny_shapes, records, replace(sets, foil_attributes="texture"), False)[0].flatten(0, 1)
    _, norm = load_train_data(tiny_shapes, sets, 64, progress=False)
    shape, texture = norm(shape), norm(texture)

    def found(rows, table):  # each row is one of the table's foils
        return all(torch.isclose(table, r).all(1).any() for r in rows)
    with_sets, with_list = seen[:3], seen[3:]
    for n, foils in with_sets:  # the first n foils change the shape word, the next n the texture word
        assert len(foils) == 2 * n and found(foils[:n], shape) and found(foils[n:], texture)
    for n, foils in with_list:
        assert len(foils) == n
    with pytest.raises(ValueError, match="matcher's foils only"):
        apply_overrides(get_preset("fast"), ["data.foil_attributes=shape+texture"])
    with pytest.raises(ValueError, match="foil attributes"):
        apply_overrides(get_preset("fast"), ["data.matcher_foils=true", "data.matcher_foil_attributes=shape+smell"])


def test_a_shipped_matcher_with_the_same_key_is_copied_not_trained(tiny_shapes, tmp_path, monkeypatch):
    """stackgan/matchers/ (matching.SHIPPED): a matcher whose key is the one these data and settings
    give is copied into the data's cache and loaded with its weights; another key is not used."""
    import stackgan.matching as matching

    cfg = replace(get_preset("shapes-cpu").data, matcher_steps=7, matcher_batch=6)  # settings no other test uses
    _, norm = load_train_data(tiny_shapes, cfg, 64, progress=False)
    cache = tiny_shapes / ".stackgan-cache"
    before = set(cache.glob("matcher-*.safetensors"))
    trained = load_or_train_matcher(tiny_shapes, cfg, norm, progress=False)
    (made,) = set(cache.glob("matcher-*.safetensors")) - before
    shipped = tmp_path / "matchers"
    shipped.mkdir()
    for f in (made, made.with_suffix(".json")):
        f.rename(shipped / f.name)  # as if shipped with the package, and not in this data's cache
    monkeypatch.setattr(matching, "SHIPPED", shipped)

    def no_training(*args, **kwargs):
        raise AssertionError("trained a matcher although the shipped one has this key")

    monkeypatch.setattr(matching, "train_matcher", no_training)
    loaded = load_or_train_matcher(tiny_shapes, cfg, norm, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    assert made.exists() and made.with_suffix(".json").exists()  # now cached beside the data
    with pytest.raises(AssertionError, match="trained a matcher"):  # other settings: another key
        load_or_train_matcher(tiny_shapes, replace(cfg, matcher_steps=8), norm, progress=False)


@pytest.mark.parametrize("trunk,widths", [("checker", (4, 8, 8)), ("strided", (4, 8))])
def test_a_folded_matcher_reads_and_teaches_as_the_trunk_does_and_saves_the_same(trunk, widths, tmp_path):
    """ImageTextMatcher.fold(): BatchNorm folded into the convs and (checker layout) the 2x bilinear
    enlargement into the first conv, edges included: the same embeddings and the same gradient with respect
    to the image (what G learns from), in either memory format; the saved weights do not change; train()
    goes back to the trunk itself."""
    from stackgan.matching import load_matcher, save_matcher
    from stackgan.models.blocks import FoldedTrunk
    torch.manual_seed(0)
    m = ImageTextMatcher(12, widths=widths, trunk=trunk)
    with torch.no_grad():
        for bn in (x for x in m.trunk if isinstance(x, torch.nn.BatchNorm2d)):  # statistics not at 0 and 1
            bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.normal_(1.0, 0.3), bn.bias.normal_()
    m.eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    x[:, :, 0], x[:, :, :, -1] = 1.0, -1.0  # strong edges: the folded first conv's corrections matter
    text = torch.randn(3, 12)

    def read(matcher, image):  # the trunk's features (a matcher's cosines dilute its edge columns) and their gradient
        image = image.clone().requires_grad_()
        h = (matcher.trunk if matcher.folded is None else matcher.folded)(image)
        return h.detach(), torch.autograd.grad(h.square().sum(), image)[0]

    plain, plain_grad = read(m, x)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert m.fold() is m and isinstance(m.folded, FoldedTrunk) and not m.training
    for image in (x, x.contiguous(memory_format=torch.channels_last)):
        sim, grad = read(m, image)
        assert torch.allclose(sim, plain, atol=1e-5) and torch.allclose(grad, plain_grad, rtol=1e-4, atol=1e-6)
    assert plain_grad[:, :, 0].abs().max() > 0.1 * plain_grad.abs().max()  # the edge row is read
    sim = m.similarity(x, text)
    m.folded = None
    assert torch.allclose(sim, m.similarity(x, text), atol=1e-6)
    after = m.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    save_matcher(m, tmp_path / "m.safetensors", {})
    assert torch.allclose(load_matcher(tmp_path / "m.safetensors").similarity(x, text), sim, atol=1e-6)
    m.train()
    assert m.folded is None
    if trunk == "checker":
        with pytest.raises(ValueError, match="2x enlargement"):
            FoldedTrunk(m.trunk.eval())(torch.randn(1, 3, 48, 48))  # enlarged to 128, not 96


def test_same_rows_matches_every_pair_compared_in_full():
    from stackgan.losses import same_rows
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g)
    b = torch.cat([a[[4, 1]], torch.randn(3, 5, generator=g), a[[1]]])
    b[2, 3] = a[0, 3]  # one equal number is not an equal row
    a[5] = a[2]  # a repeated row of a
    assert torch.equal(same_rows(a, b), (a[:, None] == b[None]).all(-1))
    assert same_rows(a, b).sum() == 3 and same_rows(a, a).sum() == 6 + 2


def test_keep_freed_memory_sets_the_allocator_on_glibc_and_leaves_it_when_asked(monkeypatch):
    import ctypes.util
    import sys

    from stackgan.utils import MALLOC_ENV, keep_freed_memory
    monkeypatch.setenv(MALLOC_ENV, "system")
    assert keep_freed_memory() is False
    monkeypatch.delenv(MALLOC_ENV)
    glibc = sys.platform.startswith("linux") and "libc.so" in str(ctypes.util.find_library("c"))
    assert keep_freed_memory() is glibc
