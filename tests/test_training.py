import pytest
import torch
from dataclasses import replace

from stackgan.pipeline import StackGANPipeline
from stackgan.training import train
from stackgan import checkpoint as ckpt
from stackgan.checkpoint import load_state


def _steps(cfg, stage, n):
    return replace(cfg, **{f"stage{stage}": replace(cfg.stage(stage), max_steps=n)})


@pytest.fixture(scope="module")
def trained_run(tiny_shapes, tmp_path_factory):
    """Stage I for 4 steps and Stage II for 2 steps on the tiny Shapes set."""
    from stackgan.config import apply_overrides, get_preset
    from conftest import TINY

    cfg = apply_overrides(get_preset("shapes-cpu"), TINY)
    run = tmp_path_factory.mktemp("run")
    train(_steps(cfg, 1, 4), tiny_shapes, run, 1, progress=False)
    train(_steps(cfg, 2, 2), tiny_shapes, run, 2, progress=False)
    return run


def test_run_folder_layout(trained_run):
    for stage in (1, 2):
        d = trained_run / f"stage{stage}"
        assert (d / "state.pt").exists() and (d / "config.yaml").exists()
        assert list((d / "tb").glob("events.out.tfevents.*"))
        assert list((d / "samples").glob("step-*.png"))
    assert (trained_run / "model" / "config.json").exists()
    assert load_state(trained_run / "stage2" / "state.pt")["step"] == 2


def test_stage1_is_frozen_during_stage2(trained_run):
    s1 = load_state(trained_run / "stage1" / "state.pt")["generator"]
    s2 = load_state(trained_run / "stage2" / "state.pt")["generator"]
    for k, v in s1.items():
        assert torch.equal(v, s2[f"stage1.{k}"]), k  # weights and BN statistics untouched


def test_cached_captions_start_training_without_the_text_encoder(trained_run, tiny_shapes, tiny_config, tmp_path,
                                                                  monkeypatch):
    def no_encoder(name):
        raise AssertionError(f"the {name} text encoder was loaded although every caption is cached")

    monkeypatch.setattr("stackgan.text.cache.get_encoder", no_encoder)  # trained_run has filled the caches
    train(_steps(tiny_config, 1, 1), tiny_shapes, tmp_path, 1, progress=False)
    assert load_state(tmp_path / "stage1" / "state.pt")["step"] == 1


def test_resume_continues_exactly(tiny_shapes, tiny_config, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_steps(tiny_config, 1, 6), tiny_shapes, straight, 1, progress=False)
    train(_steps(tiny_config, 1, 3), tiny_shapes, split, 1, progress=False)
    with pytest.raises(FileExistsError):
        train(_steps(tiny_config, 1, 6), tiny_shapes, split, 1, progress=False)
    train(tiny_config, tiny_shapes, split, 1, resume=True, max_steps=6, progress=False)
    a, b = load_state(straight / "stage1" / "state.pt"), load_state(split / "stage1" / "state.pt")
    assert a["step"] == b["step"] == 6
    for part in ("generator", "discriminator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    assert a["opt_g"]["state"][0]["step"] == b["opt_g"]["state"][0]["step"]


def test_init_generator_starts_g_from_a_state_and_d_fresh(trained_run, tiny_shapes, tiny_config, tmp_path):
    """``--init-generator``: a new run's G starts from another Stage-I state's sampling weights (with learning
    rates 0, its parameters stay those), D as a new run builds it; refused for a resumed run and for a state of the
    other stage."""
    from stackgan.checkpoint import sampling_weights
    from stackgan.errors import ConfigError

    source = trained_run / "stage1" / "state.pt"
    frozen = replace(tiny_config, stage1=replace(tiny_config.stage1, lr_g=0.0, lr_d=0.0, max_steps=1))
    train(frozen, tiny_shapes, tmp_path / "tuned", 1, init_generator=source, progress=False)
    train(frozen, tiny_shapes, tmp_path / "new", 1, progress=False)
    init, tuned, new = (load_state(p) for p in (source, tmp_path / "tuned/stage1/state.pt",
                                                 tmp_path / "new/stage1/state.pt"))
    names = [n for n, v in tuned["generator"].items() if v.is_floating_point() and "running" not in n]
    assert names and all(torch.equal(tuned["generator"][n], sampling_weights(init)[n]) for n in names)
    assert not all(torch.equal(new["generator"][n], tuned["generator"][n]) for n in names)
    D = init["discriminator"]  # D's weights: not the source's, those a new run starts from (BN statistics: its batches)
    weights = [k for k, v in D.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(new["discriminator"][k], tuned["discriminator"][k]) for k in weights)
    assert any(not torch.equal(D[k], tuned["discriminator"][k]) for k in weights)
    with pytest.raises(ConfigError, match="starts a new run"):
        train(frozen, tiny_shapes, tmp_path / "tuned", 1, resume=True, max_steps=2, init_generator=source,
              progress=False)
    with pytest.raises(ConfigError, match="needs one of Stage 1"):
        train(frozen, tiny_shapes, tmp_path / "other", 1, init_generator=trained_run / "stage2" / "state.pt",
              progress=False)


def test_failed_checkpoint_write_keeps_the_previous_one(tiny_shapes, tiny_config, tmp_path, monkeypatch):
    train(_steps(tiny_config, 1, 2), tiny_shapes, tmp_path, 1, progress=False)
    before = (tmp_path / "stage1" / "state.pt").read_bytes()

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save_state(tmp_path / "stage1" / "state.pt", {"step": 99})
    assert (tmp_path / "stage1" / "state.pt").read_bytes() == before
    assert not list((tmp_path / "stage1").glob(".state.pt.*.tmp"))


def test_pretrained_round_trip_and_determinism(trained_run, tmp_path):
    from_state = StackGANPipeline.load(trained_run / "stage2" / "state.pt")
    saved = from_state.save_pretrained(tmp_path / "model")
    loaded = StackGANPipeline.load(saved)
    texts = ["a small red circle in the center on a black background", "a big blue star"]
    a = from_state.generate(texts, seed=5)
    b = loaded.generate(texts, seed=5)
    assert torch.equal(a.stage1, b.stage1) and torch.equal(a.stage2, b.stage2)
    assert a.stage2.shape == (2, 3, 256, 256) and a.stage1.shape == (2, 3, 64, 64)
    # image i depends on its own seed only: not on the other captions, nor on the batch size
    alone = loaded.generate(texts[1:], seed=6, batch_size=1)
    assert torch.equal(alone.stage2[0], a.stage2[1]) and alone.seeds == [6]
    # a new seed, a new image (compared before rounding to uint8: a 4-step model's images are nearly flat)
    emb = loaded.embed(texts[:1]).expand(2, -1)
    z, eps1, _ = loaded.noise([5, 6])
    with torch.no_grad():
        low = loaded.generator.eval().stage1(z, emb, eps1)[0]  # [2, 3, 64, 64]
    assert not torch.equal(low[0], low[1])


def test_state_loads_its_raw_generator_on_request(trained_run, tmp_path):
    """``StackGANPipeline.from_state(path, raw=True)``: the generator's raw weights; by default
    the moving average that sampling uses (here a state given an average that differs)."""
    from stackgan.checkpoint import load_state

    state = load_state(trained_run / "stage1" / "state.pt")
    average = {k: v + 1 if v.is_floating_point() else v for k, v in state["generator"].items()}
    state["ema"] = {f"module.{k}": v for k, v in average.items()} | {"n_averaged": torch.tensor(4)}
    path = tmp_path / "with-average.pt"
    torch.save(state, path)
    for raw, expected in ((False, average), (True, state["generator"])):
        loaded = StackGANPipeline.from_state(path, raw=raw).generator.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in expected.items())
