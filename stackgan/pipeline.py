"""Inference: load a trained StackGAN and turn sentences into images.

Example::

    from stackgan.pipeline import StackGANPipeline
    pipe = StackGANPipeline.load("runs/demo")          # run folder, model folder or state file
    out = pipe.generate(["a large green striped square at the bottom on a white background"], seed=0)
    out.stage2                                          # uint8 [1, 3, 256, 256]; out.seeds == [0]
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .config import Config, ModelConfig, from_dict
from .models.build import generator_args, generator_from_args
from .models.conditioning import truncated_normal
from .checkpoint import STATE_NAME, load_state, sampling_weights, stage_dir
from .errors import CheckpointError, ConfigError, UsageError
from .text.norm import TextNorm
from .utils import atomic_path, to_uint8

MODEL_DIR_NAME = "model"
# config.json of a model folder: 2 records the generator's constructor arguments; 1 (still read)
# recorded the whole training configuration
PRETRAINED_VERSION = 2


@dataclass
class GenerationOutput:
    """What ``generate`` and ``draw`` return: uint8 images of each stage drawn, and each image's seed."""

    stage1: torch.Tensor  # uint8 [N, 3, 64, 64]
    stage2: torch.Tensor | None = None  # uint8 [N, 3, 256, 256], when Stage II was drawn
    seeds: list[int] | None = None  # image i was drawn with seeds[i] (None: from given noise, ``draw``)

    @property
    def images(self) -> torch.Tensor:
        """The highest stage drawn."""
        return self.stage1 if self.stage2 is None else self.stage2

    @property
    def stages(self) -> dict[str, torch.Tensor]:
        """``{"stage1": ..., "stage2": ...}`` of the stages drawn, lowest first."""
        return {"stage1": self.stage1, **({"stage2": self.stage2} if self.stage2 is not None else {})}

    @classmethod
    def cat(cls, outputs: list["GenerationOutput"]) -> "GenerationOutput":
        """Several outputs (batches) as one, in order."""
        seeds = None if any(o.seeds is None for o in outputs) else [s for o in outputs for s in o.seeds]
        stage2 = None if outputs[0].stage2 is None else torch.cat([o.stage2 for o in outputs])
        return cls(torch.cat([o.stage1 for o in outputs]), stage2, seeds)


class StackGANPipeline:
    """A generator (Stage I, or Stage II around its Stage I), the text statistics it was trained
    with and the name of its text encoder: sentences in, images out.

    ``generator_args`` are the generator's constructor arguments
    (:func:`stackgan.models.build.generator_args`); ``text_encoder`` and ``text_norm_kind`` are
    the training's ``data.text_encoder`` and ``data.text_norm``; ``save_pretrained`` writes all
    three to ``config.json``. ``channels_last`` runs the generator on NHWC tensors (faster
    convolutions with oneDNN / cuDNN)."""

    def __init__(self, generator: torch.nn.Module, text_norm: TextNorm, generator_args: dict[str, dict],
                 text_encoder: str = "minilm", text_norm_kind: str = "standardize", channels_last: bool = True):
        self.generator, self.text_norm, self.generator_args = generator, text_norm, generator_args
        self.text_encoder, self.text_norm_kind, self.channels_last = text_encoder, text_norm_kind, channels_last
        self.stage = 2 if "stage2" in generator_args else 1
        if channels_last:
            generator.to(memory_format=torch.channels_last)
        self._encoder = None

    @classmethod
    def from_config(cls, cfg: Config, generator: torch.nn.Module, text_norm: TextNorm,
                    stage: int) -> "StackGANPipeline":
        """Around a generator built from ``cfg.model`` (``build_generator(cfg.model, stage)``)."""
        return cls(generator, text_norm, generator_args(cfg.model, stage), cfg.data.text_encoder, cfg.data.text_norm,
                   cfg.channels_last)

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
    def from_state(cls, path: str | Path, raw: bool = False) -> "StackGANPipeline":
        """The sampling generator (its moving average, when trained with one) of a training state file;
        ``raw=True``: the generator's raw weights instead of their average."""
        state = load_state(path)
        try:
            cfg = from_dict(state["config"])
            stage = _valid_stage(state["stage"], path)
            g = generator_from_args(generator_args(cfg.model, stage))
            g.load_state_dict(state["generator"] if raw else sampling_weights(state))
            norm = TextNorm(cfg.model.text_dim)
            norm.load_state_dict(state["text_norm"])
        except (KeyError, TypeError, RuntimeError) as e:  # a readable file that is not a whole training state
            raise CheckpointError(f"{path}: not a complete StackGAN training state ({_what(e)})") from e
        return cls.from_config(cfg, g, norm, stage)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "StackGANPipeline":
        """A model folder: ``config.json`` (format version 1 or 2) and ``model.safetensors``."""
        directory = Path(directory)
        config_file, weights_file = directory / "config.json", directory / "model.safetensors"
        try:
            with open(config_file, encoding="utf-8") as f:
                meta = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{config_file}: not valid JSON ({e})") from e
        args, text, channels_last = _read_model_config(meta, config_file)
        try:
            g = generator_from_args(args)
        except (TypeError, ValueError, RuntimeError, ConfigError) as e:  # arguments no generator takes
            raise CheckpointError(f"{config_file}: \"generator\" does not describe a StackGAN generator "
                                  f"({_what(e)})") from e
        try:
            tensors = load_file(str(weights_file))
        except OSError:
            raise
        except Exception as e:  # safetensors' SafetensorError: truncated, empty or not safetensors
            raise CheckpointError(f"{weights_file}: not a readable safetensors file ({_what(e)})") from e
        try:
            norm = TextNorm(args["stage1"]["text_dim"])
            norm.load_state_dict({k[len("text_norm."):]: v for k, v in tensors.items() if k.startswith("text_norm.")})
            g.load_state_dict({k[len("generator."):]: v.float() for k, v in tensors.items()
                               if k.startswith("generator.")})
        except RuntimeError as e:  # missing or mis-shaped tensors
            raise CheckpointError(f"{weights_file}: its weights do not fit {config_file} ({_what(e)})") from e
        return cls(g, norm, args, *text, channels_last)

    def save_pretrained(self, directory: str | Path, half: bool = False) -> Path:
        """Write ``config.json`` (format version, the generator's constructor arguments, the text
        encoder's name) and ``model.safetensors`` (generator + text statistics).

        ``half`` stores the generator's floating-point weights as float16 (half the size); they are
        turned back into float32 when loaded. The text statistics stay float32."""
        directory = Path(directory)
        tensors = {f"generator.{k}": (v.half() if half and v.is_floating_point() else v).detach().contiguous()
                   for k, v in self.generator.state_dict().items()}
        tensors.update({f"text_norm.{k}": v.contiguous() for k, v in self.text_norm.state_dict().items()})
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))
        meta = {"format_version": PRETRAINED_VERSION, "generator": self.generator_args, "text_encoder": self.text_encoder,
                "text_norm": self.text_norm_kind, "channels_last": self.channels_last}
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
    def stage1_generator(self) -> torch.nn.Module:
        return self.generator.stage1 if self.stage == 2 else self.generator

    @property
    def encoder(self):
        if self._encoder is None:
            from .text import get_encoder
            self._encoder = get_encoder(self.text_encoder)
        return self._encoder

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self.text_norm(self.encoder.encode(texts))  # [N, D]

    def noise(self, seeds: list[int], truncation: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z, Stage-I eps and Stage-II eps, each image from its own generator seeded by its seed.
        ``truncation``: z from N(0, I) restricted to [-t, t] per dimension (the truncation trick:
        typical-looking images, less variety; DF-GAN samples at 0.88)."""
        z_dim, cond_dim = self.generator_args["stage1"]["z_dim"], self.generator_args["stage1"]["cond_dim"]
        zs, e1s, e2s = [], [], []
        ca1 = self.stage1_generator.ca
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            zs.append(torch.randn(z_dim, generator=g) if truncation is None
                      else truncated_normal((z_dim,), "cpu", g, truncation))
            e1s.append(ca1.sample_eps((cond_dim,), "cpu", g))
            e2s.append(ca1.sample_eps((cond_dim,), "cpu", g))
        return torch.stack(zs), torch.stack(e1s), torch.stack(e2s)  # [N, z], [N, cond], [N, cond]

    @torch.no_grad()
    def generate(self, texts: list[str] | None = None, *, embeddings: torch.Tensor | None = None, seed: int = 0,
                 seeds: list[int] | None = None, stage: int | None = None, batch_size: int = 16,
                 progress: bool = False, truncation: float | None = None) -> GenerationOutput:
        """Images for ``texts``, or for normalized ``embeddings`` ``[N, D]`` (one of the two); image i
        uses seed ``seed + i`` (or ``seeds[i]``), so it does not depend on the other images or the
        batch size. ``stage`` 1 draws Stage I only (default: the model's highest stage).

        Example::

            out = pipe.generate(["a small red circle", "a big blue star"], seed=3)
            out.stage1, out.stage2, out.seeds   # uint8 [2, 3, 64, 64], uint8 [2, 3, 256, 256], [3, 4]
        """
        stage = self._check_stage(stage)
        if (texts is None) == (embeddings is None):
            raise UsageError("generate: give either texts or embeddings, not both" if texts is not None
                             else "generate: give texts or embeddings")
        emb = self.embed(texts) if embeddings is None else embeddings
        seeds = list(range(seed, seed + len(emb))) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(emb):
            raise UsageError(f"generate: {len(seeds)} seeds for {len(emb)} images")
        if truncation is not None and not truncation > 0:
            raise UsageError(f"truncation must be > 0 (a bound on |z| per dimension), got {truncation}")
        z, eps1, eps2 = self.noise(seeds, truncation)
        out = self.draw(emb, z, eps1, eps2, stage, batch_size, progress)
        out.seeds = seeds
        return out

    @torch.inference_mode()
    def draw(self, emb: torch.Tensor, z: torch.Tensor, eps1: torch.Tensor, eps2: torch.Tensor,
             stage: int | None = None, batch_size: int = 16, progress: bool = False) -> GenerationOutput:
        """Images from given normalized embeddings ``[N, D]``, noise ``[N, z]`` and CA samples
        ``[N, cond]`` (Stage I's and Stage II's), in eval mode (``seeds`` None)."""
        stage = self._check_stage(stage)
        was_training = self.generator.training
        self.generator.eval()  # BN running statistics: an image does not depend on its batch
        try:
            return self._draw(emb, z, eps1, eps2, stage, batch_size, progress)
        finally:
            self.generator.train(was_training)

    def _check_stage(self, stage: int | None) -> int:
        stage = self.stage if stage is None else stage
        if stage not in (1, 2) or stage > self.stage:
            raise UsageError(f"stage {stage}: this model has stage{'s 1 and 2' if self.stage == 2 else ' 1 only'}")
        return stage

    def _draw(self, emb, z, eps1, eps2, stage, batch_size, progress) -> GenerationOutput:
        g = self.generator if stage == self.stage else self.stage1_generator
        device = next(g.parameters()).device
        low, image = [], []
        for i in tqdm(range(0, len(emb), batch_size), disable=not progress, desc="generating", unit="batch"):
            sl = slice(i, i + batch_size)
            eps = (eps1[sl].to(device), eps2[sl].to(device))[:stage]  # Stage II takes both stages' CA samples
            out = g(z[sl].to(device), emb[sl].to(device), *eps)
            low.append(to_uint8(out.low))
            if stage == 2:
                image.append(to_uint8(out.image))
        return GenerationOutput(torch.cat(low), torch.cat(image) if image else None)


def _valid_stage(stage, where) -> int:
    if stage not in (1, 2) or isinstance(stage, bool):
        raise CheckpointError(f"{where}: \"stage\" is {stage!r}; a StackGAN model has stage 1 or 2")
    return stage


def _what(e: Exception, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _read_model_config(meta, config_file: Path) -> tuple[dict[str, dict], tuple[str, str], bool]:
    """The generator's arguments, the text encoder's name and normalization, and the memory format
    of a model folder's ``config.json`` (format version 2, or 1: the whole training configuration)."""
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > PRETRAINED_VERSION:
        raise CheckpointError(f"{config_file}: format version {version} is newer than this stackgan reads "
                              f"(1 to {PRETRAINED_VERSION}); update stackgan")
    if version == 1:
        if not isinstance(meta.get("config"), dict) or "stage" not in meta:
            raise CheckpointError(f"{config_file}: not a StackGAN model file of format version 1 (needs the keys "
                                  "\"config\" (a mapping) and \"stage\")")
        cfg = from_dict(meta["config"], where=str(config_file))
        stage = _valid_stage(meta["stage"], config_file)
        return generator_args(cfg.model, stage), (cfg.data.text_encoder, cfg.data.text_norm), cfg.channels_last
    if version != 2:
        raise CheckpointError(f"{config_file}: not a StackGAN model file (its \"format_version\" is "
                              f"{version!r}, not 1 or 2; `stackgan export` writes one)")
    args, channels_last = meta.get("generator"), meta.get("channels_last")
    text = (meta.get("text_encoder"), meta.get("text_norm"))
    schema = generator_args(ModelConfig(), 2)  # the arguments every model has
    every_switch = ModelConfig(g_coords=True, g_layered=True, g_layer_background="smooth", g_layer_spin=True,
                               g_layer_taper=True, g_layer_scale0=0.5, g_layer_normalize=True, g_layer_templates=2,
                               g_layer_pose_hidden=2, g_layer_pose_text=True, g_layer_anchors=2,
                               g_layer_round=True, g_layer_radial=2, g_layer_pattern=2, g_layer_pattern_pairs=True,
                               g_layer_pattern_text=True, g_layer_pattern_inset=1.0, g_layer_sides=True,
                               g_layer_cells=2, g_layer_sizes=2, g_layer_textures=2, g_layer_pattern_waves="4@0,4@90",
                               g_layer_anchor_sample=True,
                               stage2_render=True, stage2_masked=True, stage2_mask_grow=1, stage2_pattern=True,
                               stage2_sharp=True)
    full = generator_args(every_switch, 2)  # ... and those written only when on
    if not (isinstance(args, dict) and isinstance(args.get("stage1"), dict) and set(args) <= set(schema)
            and all(isinstance(a, dict) and set(schema[k]) <= set(a) <= set(full[k]) for k, a in args.items())
            and all(isinstance(t, str) for t in text) and isinstance(channels_last, bool)):
        raise CheckpointError(f"{config_file}: not a StackGAN model file of format version 2 (needs \"generator\": "
                              "{\"stage1\": {...}, \"stage2\": {...}} with every constructor argument, "
                              "\"text_encoder\" and \"text_norm\" (names) and \"channels_last\" (true or false))")
    wrong = [f"{k}.{n}" for k, a in args.items() for n, v in a.items() if type(v) is not type(full[k][n])]
    if wrong:
        raise CheckpointError(f"{config_file}: generator argument(s) {', '.join(wrong)} of the wrong type")
    return args, text, channels_last
