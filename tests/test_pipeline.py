"""The inference pipeline's contract: typed output, texts or embeddings, the model folder's format."""
import json
import shutil

import pytest
import torch

from stackgan.config import apply_overrides, get_preset, to_dict
from stackgan.errors import CheckpointError, UsageError
from stackgan.models.build import generator_args
from stackgan.pipeline import GenerationOutput, StackGANPipeline

from conftest import TINY


def test_generate_takes_texts_or_embeddings_never_both(tiny_model):
    pipe = StackGANPipeline.load(tiny_model)
    emb = torch.randn(2, pipe.generator_args["stage1"]["text_dim"])
    out = pipe.generate(embeddings=emb, seeds=[7, 3])
    assert isinstance(out, GenerationOutput) and out.seeds == [7, 3]
    assert out.stage1.shape == (2, 3, 64, 64) and out.stage2.shape == (2, 3, 256, 256) and out.images is out.stage2
    assert list(out.stages) == ["stage1", "stage2"]
    with pytest.raises(UsageError, match="either texts or embeddings, not both"):
        pipe.generate(["a red circle", "a blue star"], embeddings=emb)
    with pytest.raises(UsageError, match="give texts or embeddings"):
        pipe.generate()
    with pytest.raises(UsageError, match="3 seeds for 2 images"):
        pipe.generate(embeddings=emb, seeds=[1, 2, 3])
    low = pipe.generate(embeddings=emb, seeds=[7, 3], stage=1)
    assert low.stage2 is None and low.images is low.stage1 and torch.equal(low.stage1, out.stage1)


def test_model_folder_records_the_generator_arguments_not_the_training_config(tiny_model):
    meta = json.loads((tiny_model / "config.json").read_text())
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY)
    assert meta == {"format_version": 2, "generator": generator_args(cfg.model, 2), "text_encoder": "minilm",
                    "text_norm": "standardize", "channels_last": True}
    assert set(meta["generator"]["stage2"]) == {"ngf", "res_blocks", "cond_dim", "ca_variant", "image_skip", "fusion"}


def test_a_format_1_model_folder_still_loads_and_exports_to_format_2_bit_identically(tiny_model, tmp_path):
    # format version 1 (models exported before session 6): the whole training configuration and the stage
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY)
    v1 = tmp_path / "v1"
    v1.mkdir()
    shutil.copy(tiny_model / "model.safetensors", v1 / "model.safetensors")
    (v1 / "config.json").write_text(json.dumps({"format_version": 1, "stage": 2, "config": to_dict(cfg)}))
    old = StackGANPipeline.load(v1)
    new_dir = old.save_pretrained(tmp_path / "v2")
    assert (new_dir / "model.safetensors").read_bytes() == (v1 / "model.safetensors").read_bytes()
    assert json.loads((new_dir / "config.json").read_text()) == json.loads((tiny_model / "config.json").read_text())
    new = StackGANPipeline.load(new_dir)
    assert (new.generator_args, new.text_encoder, new.channels_last) == (old.generator_args, "minilm", True)
    emb = torch.randn(3, old.generator_args["stage1"]["text_dim"], generator=torch.Generator().manual_seed(0))
    a, b = old.generate(embeddings=emb, seed=4), new.generate(embeddings=emb, seed=4)
    assert torch.equal(a.stage1, b.stage1) and torch.equal(a.stage2, b.stage2)


def test_a_newer_format_is_refused_by_name(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "m")
    meta = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**meta, "format_version": 9}))
    with pytest.raises(CheckpointError, match="format version 9 is newer than this stackgan reads"):
        StackGANPipeline.load(model)


@pytest.mark.parametrize("switches", [["model.g_coords=true"], ["model.g_layered=true"],
                                      ["model.g_layered=true", "model.g_layer_background=smooth",
                                       "model.g_layer_spin=true", "model.g_layer_taper=true",
                                       "model.g_layer_scale0=0.6"],
                                      ["model.g_layered=true", "model.g_layer_background=vertical", "model.g_layer_normalize=true"],
                                      ["model.g_layered=true", "model.g_layer_templates=3",
                                       "model.g_layer_pose_hidden=8", "model.g_layer_pose_text=true"],
                                      ["model.g_layered=true", "model.g_layer_background=ramp",
                                       "model.g_layer_pattern=2", "model.g_layer_pattern_pairs=true"],
                                      ["model.g_layered=true", "model.g_layer_pattern=2", "model.g_layer_pattern_text=true",
                                       "model.g_layer_pattern_inset=1"],
                                      ["model.g_layered=true", "model.g_layer_pattern=2", "model.g_layer_cells=2",
                                       "model.g_layer_textures=2", "stage1.pose_pick_weight=1",
                                       "stage1.match_weight=1", "model.g_layer_pattern_waves=4@0,4@90"]])
def test_a_model_with_an_optional_generator_switch_loads_and_draws_the_same(switches, tmp_path):
    from stackgan.models.build import build_generator
    from stackgan.text.norm import TextNorm

    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + switches)
    torch.manual_seed(0)
    pipe = StackGANPipeline.from_config(cfg, build_generator(cfg.model, 1), TextNorm(cfg.model.text_dim), 1)
    folder = pipe.save_pretrained(tmp_path / "m")
    loaded = StackGANPipeline.load(folder)
    assert loaded.generator_args == pipe.generator_args == generator_args(cfg.model, 1)
    emb = torch.randn(2, cfg.model.text_dim)
    assert torch.equal(loaded.generate(embeddings=emb, seed=1).stage1, pipe.generate(embeddings=emb, seed=1).stage1)
    meta = json.loads((folder / "config.json").read_text())
    meta["generator"]["stage1"]["sparkle"] = True  # an argument no generator takes
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="every constructor argument"):
        StackGANPipeline.load(folder)


def test_a_stage2_model_with_its_own_pattern_loads_and_draws_the_same(tmp_path):
    """model.stage2_pattern (and stage2_sharp): the Stage-II model file names the switches, and the loaded model
    draws the same."""
    from stackgan.models.build import build_generator
    from stackgan.text.norm import TextNorm

    cfg = apply_overrides(get_preset("shapes-layered"), TINY + ["model.stage2_render=true", "model.stage2_pattern=true",
                                                                "model.stage2_sharp=true"])
    torch.manual_seed(0)
    G = build_generator(cfg.model, 2)
    with torch.no_grad():
        G.own_pattern.head.weight.normal_(0, 0.1)  # not Stage I's any more
    pipe = StackGANPipeline.from_config(cfg, G, TextNorm(cfg.model.text_dim), 2)
    loaded = StackGANPipeline.load(pipe.save_pretrained(tmp_path / "m"))
    assert loaded.generator_args["stage2"]["pattern"] is True and loaded.generator_args["stage2"]["sharp"] is True
    emb = torch.randn(2, cfg.model.text_dim)
    assert torch.equal(loaded.generate(embeddings=emb, seed=1).stage2, pipe.generate(embeddings=emb, seed=1).stage2)
