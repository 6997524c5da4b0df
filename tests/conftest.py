import pytest
import torch

from stackgan.config import apply_overrides, get_preset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A small Shapes set (64 train / 16 test images), made once per test session."""
    from stackgan.data.shapes import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("data") / "shapes", n_train=64, n_test=16, seed=0,
                           workers=1, progress=False)


TINY = [
    "model.ngf1=8", "model.ndf1=8", "model.ngf2=8", "model.ndf2=8", "model.res_blocks=1",
    "model.cond_dim=16", "model.z_dim=8",
    "stage1.batch_size=8", "stage1.log_every=2", "stage1.sample_every=100", "stage1.checkpoint_every=100",
    "stage2.batch_size=4", "stage2.log_every=2", "stage2.sample_every=100", "stage2.checkpoint_every=100",
]

TINY_ARGS = [a for item in TINY for a in ("--set", item)]  # the same, as `stackgan train` arguments


@pytest.fixture
def tiny_config():
    return apply_overrides(get_preset("shapes-cpu"), TINY)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """An untrained two-stage model folder (config.json + model.safetensors) from the tiny config:
    for tests of loading, the command line and the server that do not need a trained model."""
    from stackgan.models.build import build_generator
    from stackgan.pipeline import StackGANPipeline
    from stackgan.text.norm import TextNorm

    cfg = apply_overrides(get_preset("shapes-cpu"), TINY)
    torch.manual_seed(0)
    pipe = StackGANPipeline.from_config(cfg, build_generator(cfg.model, 2), TextNorm(cfg.model.text_dim), 2)
    return pipe.save_pretrained(tmp_path_factory.mktemp("models") / "tiny")
