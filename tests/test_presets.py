"""The paper's data-set presets and the TF/PT switches they use."""
from dataclasses import replace

import pytest
import torch

from stackgan.config import ConfigError, apply_overrides, get_preset, preset_names
from stackgan.config import DataConfig
from stackgan.models.build import build_generator
from stackgan.models.stage1 import Bottleneck
from stackgan.training.data import TrainData


def test_dataset_presets_hold_the_authors_values():
    assert {"paper", "fast", "birds", "flowers", "coco"} <= set(preset_names())
    birds, flowers, coco = get_preset("birds"), get_preset("flowers"), get_preset("coco")
    for cfg in (birds, flowers):  # TF birds values
        assert (cfg.model.ngf1, cfg.model.ndf1, cfg.model.ngf2, cfg.model.ndf2) == (128, 64, 128, 64)
        assert (cfg.model.ca_variant, cfg.model.g1_variant, cfg.model.d_text_path) == ("tf", "tf", "fc")
        assert (cfg.stage1.batch_size, cfg.stage1.lr_decay_epochs, cfg.stage1.epochs) == (64, 50, 600)
        assert (cfg.stage2.batch_size, cfg.stage2.lr_decay_epochs) == (64, 100)
        assert (cfg.data.caption_mode, cfg.data.wrong_pairs, cfg.data.augment) == ("mean4", "class", "crop_flip")
        assert cfg.stage1.kl_weight == 2.0 and cfg.stage1.lr_g == cfg.stage1.lr_d == 2e-4
    assert (coco.model.ngf1, coco.model.ndf1, coco.model.res_blocks) == (192, 96, 2)
    assert (coco.stage1.batch_size, coco.stage1.epochs, coco.stage1.lr_decay_epochs) == (128, 120, 20)
    assert (coco.stage2.batch_size, coco.stage2.epochs) == (40, 100)
    assert (coco.model.d_text_path, coco.data.caption_mode, coco.data.wrong_pairs) == ("mu", "one", "shift")
    with pytest.raises(ConfigError, match="unknown preset 'bird'.*birds"):
        get_preset("bird")


def test_recompute_blocks_is_checked():
    assert apply_overrides(get_preset("paper"), ["recompute_blocks=4"]).recompute_blocks == 4
    with pytest.raises(ConfigError, match="recompute_blocks must be >= 0"):
        apply_overrides(get_preset("paper"), ["recompute_blocks=-1"])
    with pytest.raises(ConfigError, match="does not work with compile=true"):
        apply_overrides(get_preset("paper"), ["recompute_blocks=2", "compile=true"])


def test_tf_stage1_generator_layout():
    m = replace(get_preset("paper").model, text_dim=32, ngf1=16, z_dim=8, cond_dim=8)
    pt, tf = build_generator(m, 1), build_generator(replace(m, g1_variant="tf"), 1)
    assert sum(isinstance(x, Bottleneck) for x in tf.modules()) == 2 and not any(
        isinstance(x, Bottleneck) for x in pt.modules())
    assert pt.to_rgb[0].in_channels == 8 and tf.to_rgb[0].in_channels == 16  # no ngf/2 layer at 64 in TF
    for g in (pt, tf):
        assert g(torch.randn(3, 8), torch.randn(3, 32)).image.shape == (3, 3, 64, 64)


def test_class_checked_wrong_captions_never_share_the_class():
    n = 40
    labels = torch.arange(n) % 3  # three classes
    emb = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 1, 4).clone()  # row i encodes i
    data = TrainData(torch.zeros(n, 3, 64, 64, dtype=torch.uint8), emb, torch.ones(n, dtype=torch.long), 64,
                     DataConfig(wrong_pairs="class"), labels)
    for step in range(20):
        _, text, wrong = data.batch(step, 16)
        right_ids, wrong_ids = text[:, 0].long(), wrong[:, 0].long()
        assert (labels[right_ids] != labels[wrong_ids]).all()
