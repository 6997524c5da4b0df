"""Inference: load a trained StackGAN and turn sentences into images.

Example::

    from stackgan.pipeline import StackGANPipeline
    pipe = StackGANPipeline.load("runs/demo")          # run folder, model folder or state file
    out = pipe.generate(["a large green striped square at the bottom on a white background"], seed=0)
    out["stage2"]                                       # uint8 [1, 3, 256, 256]
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .config import Config, from_dict, to_dict
from .models.build import build_generator
from .models.conditioning import truncated_normal
from .checkpoint import STATE_NAME, load_state, sampling_weights, stage_dir
from .errors import CheckpointError, UsageError
from .text.norm import TextNorm
from .utils import atomic_path, to_uint8

MODEL_DIR_NAME = "model"
PRETRAINED_VERSION = 1


class StackGANPipeline:
    def __init__(self, config: Config, generator: torch.nn.Module, text_norm: TextNorm, stage: int):
        self.config, self.generator, self.text_norm, self.stage = config, generator, text_norm, stage
        if config.channels_last:  # oneDNN / cuDNN convolutions are faster on NHWC tensors
            generator.to(memory_format=torch.channels_last)
        self._encoder = None

    # --- loading and saving -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "StackGANPipeline":
        """A run folder (its ``model/``, else its newest stage state), a model folder, or a state file."""
        path = Path(path)
        if path.is_file():
            return cls.from_state(path)
        if (path / "config.json").exists():
            return cls.from_pretrained(path)
        if (path / MODEL_DIR_NAME / "config.json").exists():
            return cls.from_pretrained(path / MODEL_DIR_NAME)
        for stage in (2, 1):
            if (stage_dir(path, stage) / STATE_NAME).exists():
                return cls.from_state(stage_dir(path, stage) / STATE_NAME)
        raise FileNotFoundError(f"{path}: found no StackGAN model there (expected a run folder with "
                                f"{MODEL_DIR_NAME}/ or stage1/{STATE_NAME}, a model folder with config.json, "
                                "or a state file)")

    @classmethod
    def from_state(cls, path: str | Path) -> "StackGANPipeline":
        state = load_state(path)
        try:
            cfg = from_dict(state["config"])
            stage = _valid_stage(state["stage"], path)
            g = build_generator(cfg.model, stage)
            g.load_state_dict(sampling_weights(state))
            norm = TextNorm(cfg.model.text_dim)
            norm.load_state_dict(state["text_norm"])
        except (KeyError, TypeError, RuntimeError) as e:  # a readable file that is not a whole training state
            raise CheckpointError(f"{path}: not a complete StackGAN training state ({_what(e)})") from e
        return cls(cfg, g, norm, stage)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "StackGANPipeline":
        directory = Path(directory)
        config_file, weights_file = directory / "config.json", directory / "model.safetensors"
        try:
            with open(config_file, encoding="utf-8") as f:
                meta = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{config_file}: not valid JSON ({e})") from e
        if not isinstance(meta, dict) or not {"config", "stage"} <= set(meta) or not isinstance(meta["config"], dict):
            raise CheckpointError(f"{config_file}: not a StackGAN model file (needs the keys \"config\" (a "
                                  "mapping) and \"stage\"; `stackgan export` writes it)")
        cfg = from_dict(meta["config"], where=str(config_file))
        stage = _valid_stage(meta["stage"], config_file)
        g = build_generator(cfg.model, stage)
        try:
            tensors = load_file(str(weights_file))
        except OSError:
            raise
        except Exception as e:  # safetensors' SafetensorError: truncated, empty or not safetensors
            raise CheckpointError(f"{weights_file}: not a readable safetensors file ({_what(e)})") from e
        try:
            norm = TextNorm(cfg.model.text_dim)
            norm.load_state_dict({k[len("text_norm."):]: v for k, v in tensors.items() if k.startswith("text_norm.")})
            g.load_state_dict({k[len("generator."):]: v.float() for k, v in tensors.items()
                               if k.startswith("generator.")})
        except RuntimeError as e:  # missing or mis-shaped tensors
            raise CheckpointError(f"{weights_file}: its weights do not fit {config_file} ({_what(e)})") from e
        return cls(cfg, g, norm, stage)

    def save_pretrained(self, directory: str | Path, half: bool = False) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (generator + text statistics).

        ``half`` stores the generator's floating-point weights as float16 (half the size); they are
        turned back into float32 when loaded. The text statistics stay float32."""
        directory = Path(directory)
        tensors = {f"generator.{k}": (v.half() if half and v.is_floating_point() else v).detach().contiguous()
                   for k, v in self.generator.state_dict().items()}
        tensors.update({f"text_norm.{k}": v.contiguous() for k, v in self.text_norm.state_dict().items()})
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))
        meta = {"format_version": PRETRAINED_VERSION, "stage": self.stage, "config": to_dict(self.config)}
        with atomic_path(directory / "config.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return directory

    def to(self, device: str | torch.device | None) -> "StackGANPipeline":
        """Move the generator to ``device`` (None: leave it); images stay the same up to float rounding."""
        if device is not None:
            self.generator.to(device)
        return self

    # --- generation ---------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            from .text import get_encoder
            self._encoder = get_encoder(self.config.data.text_encoder)
        return self._encoder

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self.text_norm(self.encoder.encode(texts))  # [N, D]

    def noise(self, seeds: list[int], truncation: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z, Stage-I eps and Stage-II eps, each image from its own generator seeded by its seed.
        ``truncation``: z from N(0, I) restricted to [-t, t] per dimension (the truncation trick:
        typical-looking images, less variety; DF-GAN samples at 0.88)."""
        m = self.config.model
        zs, e1s, e2s = [], [], []
        ca1 = self.generator.stage1.ca if self.stage == 2 else self.generator.ca
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            zs.append(torch.randn(m.z_dim, generator=g) if truncation is None
                      else truncated_normal((m.z_dim,), "cpu", g, truncation))
            e1s.append(ca1.sample_eps((m.cond_dim,), "cpu", g))
            e2s.append(ca1.sample_eps((m.cond_dim,), "cpu", g))
        return torch.stack(zs), torch.stack(e1s), torch.stack(e2s)  # [N, z], [N, cond], [N, cond]

    @torch.no_grad()
    def generate(self, texts: list[str], seed: int = 0, stage: int | None = None, batch_size: int = 16,
                 seeds: list[int] | None = None, embeddings: torch.Tensor | None = None,
                 progress: bool = False, truncation: float | None = None) -> dict[str, torch.Tensor]:
        """Images for ``texts``; image i uses seed ``seed + i`` (or ``seeds[i]``), so it does not
        depend on the other texts or the batch size. Returns uint8 ``stage1`` [N, 3, 64, 64] and,
        for a Stage-II model with ``stage`` 2 (default), ``stage2`` [N, 3, 256, 256]."""
        stage = self.stage if stage is None else stage
        if stage not in (1, 2) or stage > self.stage:
            raise UsageError(f"stage {stage}: this model has stage{'s 1 and 2' if self.stage == 2 else ' 1 only'}")
        emb = self.embed(texts) if embeddings is None else embeddings
        seeds = list(range(seed, seed + len(emb))) if seeds is None else seeds
        if truncation is not None and not truncation > 0:
            raise UsageError(f"truncation must be > 0 (a bound on |z| per dimension), got {truncation}")
        z, eps1, eps2 = self.noise(seeds, truncation)
        return self.draw(emb, z, eps1, eps2, stage, batch_size, progress)

    @torch.inference_mode()
    def draw(self, emb: torch.Tensor, z: torch.Tensor, eps1: torch.Tensor, eps2: torch.Tensor, stage: int,
             batch_size: int = 16, progress: bool = False) -> dict[str, torch.Tensor]:
        """Images from given normalized embeddings ``[N, D]``, noise ``[N, z]`` and CA samples
        ``[N, cond]`` (Stage I's and Stage II's), in eval mode; returns what ``generate`` returns."""
        was_training = self.generator.training
        self.generator.eval()  # BN running statistics: an image does not depend on its batch
        try:
            return self._draw(emb, z, eps1, eps2, stage, batch_size, progress)
        finally:
            self.generator.train(was_training)

    def _draw(self, emb, z, eps1, eps2, stage, batch_size, progress):
        device = next(self.generator.parameters()).device
        low_all, high_all = [], []
        for i in tqdm(range(0, len(emb), batch_size), disable=not progress, desc="generating", unit="batch"):
            sl = slice(i, i + batch_size)
            args = (z[sl].to(device), emb[sl].to(device), eps1[sl].to(device))
            if self.stage == 2 and stage == 2:
                low, high, _, _ = self.generator(*args, eps2[sl].to(device))
                high_all.append(to_uint8(high))
            else:
                g1 = self.generator.stage1 if self.stage == 2 else self.generator
                low, _, _ = g1(*args)
            low_all.append(to_uint8(low))
        out = {"stage1": torch.cat(low_all)}
        if high_all:
            out["stage2"] = torch.cat(high_all)
        return out


def _valid_stage(stage, where) -> int:
    if stage not in (1, 2) or isinstance(stage, bool):
        raise CheckpointError(f"{where}: \"stage\" is {stage!r}; a StackGAN model has stage 1 or 2")
    return stage


def _what(e: Exception, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."
