"""One-word foils: a true caption with exactly one attribute word replaced by a wrong one.

A random wrong caption almost always differs from the right one in color, position or
background, so a matching-aware discriminator can reject it without reading the shape. A foil
differs in one attribute only, so rejecting it needs exactly that attribute.

- Shapes: any of the six attributes the caption names, drawn with :data:`FOIL_WEIGHTS` (shape
  and texture most often: the attributes the generator learns last).
- Other data: a color word replaced by another color word (:data:`COLOR_WORDS`); a caption
  without one has no foil.

Also the oracle condition of the geometry experiments: the six Shapes attributes as one one-hot
vector (31 dims), written as precomputed embeddings (:func:`write_attribute_embeddings`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .shapes import ATTRIBUTES
from .shapes_text import WORDS, parse_caption

FOIL_WEIGHTS = {"shape": 3.0, "texture": 3.0, "color": 1.0, "size": 1.0, "position": 1.0, "background": 1.0}
COLOR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "brown",
               "gray", "grey", "violet", "magenta", "lavender", "maroon", "crimson", "cyan", "beige")
ONE_HOT_DIM = sum(len(v) for v in ATTRIBUTES.values())  # 31


def _span(text: str, attribute: str) -> tuple[int, int, str] | None:
    """(start, end, canonical value) of the words that name ``attribute`` in ``text``, longest first."""
    if attribute == "background":
        m = re.search(r"\b(%s) (?:background|backdrop)\b" % "|".join(WORDS["background"]), text)
        return (m.start(1), m.end(1), m.group(1)) if m else None
    words = sorted(((w, v) for v, ws in WORDS[attribute].items() for w in ws), key=lambda p: -len(p[0]))
    # a background color is not an object color: mask "<color> background" before searching
    masked = re.sub(r"\b\S+ (?:background|backdrop)\b", lambda m: "#" * len(m.group(0)), text)
    for word, value in words:
        m = re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(word), masked)
        if m:
            return m.start(), m.end(), value
    return None


def _same_form(word: str, options: tuple[str, ...]) -> list[str]:
    """Replacement words that fit where ``word`` stood: "with stripes" only by another "with ..."."""
    fit = [o for o in options if o.startswith("with ") == word.startswith("with ")]
    return fit or list(options)


def shapes_foil(caption: str, rng: np.random.Generator, weights: dict[str, float] = FOIL_WEIGHTS
                ) -> tuple[str, str] | None:
    """``(foil, attribute)``: ``caption`` with the words of one attribute it names replaced by a word
    of another value of that attribute; ``None`` if it names none of ``weights``' attributes."""
    text = caption.lower()
    named = parse_caption(text)
    spans = {a: _span(text, a) for a in weights if a in named}
    spans = {a: s for a, s in spans.items() if s is not None}
    if not spans:
        return None
    names = sorted(spans)
    p = np.array([weights[a] for a in names], dtype=float)
    attribute = names[int(rng.choice(len(names), p=p / p.sum()))]
    start, end, value = spans[attribute]
    others = [v for v in WORDS[attribute] if v != value]
    new_value = others[int(rng.integers(len(others)))]
    choices = _same_form(text[start:end], WORDS[attribute][new_value])
    word = choices[int(rng.integers(len(choices)))]
    return text[:start] + word + text[end:], attribute


def color_foil(caption: str, rng: np.random.Generator) -> str | None:
    """``caption`` with one of its color words replaced by another color word, or ``None``."""
    text = caption.lower()
    hits = [m for m in re.finditer(r"\b(%s)\b" % "|".join(COLOR_WORDS), text)]
    if not hits:
        return None
    m = hits[int(rng.integers(len(hits)))]
    others = [c for c in COLOR_WORDS if c not in (m.group(1), {"gray": "grey", "grey": "gray"}.get(m.group(1)))]
    return text[:m.start()] + others[int(rng.integers(len(others)))] + text[m.end():]


def make_foils(records: list[dict], per_image: int, seed: int = 0,
               weights: dict[str, float] = FOIL_WEIGHTS) -> list[list[str]]:
    """Up to ``per_image`` foils per manifest record, from its captions in a random order (cycling
    when it has fewer captions than foils); deterministic in ``seed``. Shapes records (with
    ``attributes``) get :func:`shapes_foil` (the attribute drawn by ``weights``), others :func:`color_foil`."""
    out = []
    for i, r in enumerate(records):
        rng = np.random.default_rng((seed, 7, i))
        captions, foils = r["captions"], []
        order = rng.permutation(len(captions)).tolist()
        barren, k = set(), 0  # barren: captions without a foil (no color word)
        while len(foils) < per_image and len(barren) < len(captions):  # cycle through the captions
            j = order[k % len(captions)]
            k += 1
            if j in barren:
                continue
            if "attributes" in r:
                made = shapes_foil(captions[j], rng, weights)
                foil = made[0] if made else None
            else:
                foil = color_foil(captions[j], rng)
            if foil is None:
                barren.add(j)
            else:
                foils.append(foil)
        out.append(foils)
    return out


# ---------------------------------------------------------------------------------------------
# The oracle condition

def one_hot(attributes: dict[str, str]) -> np.ndarray:
    """The six attributes as one vector of six one-hot blocks, ``[31]`` float32."""
    parts = []
    for name, values in ATTRIBUTES.items():
        block = np.zeros(len(values), np.float32)
        block[values.index(attributes[name])] = 1.0
        parts.append(block)
    return np.concatenate(parts)


def one_hot_foil(attributes: dict[str, str], rng: np.random.Generator,
                 weights: dict[str, float] = FOIL_WEIGHTS) -> np.ndarray:
    """:func:`one_hot` of ``attributes`` with one attribute (drawn by ``weights``) set to another value."""
    names = list(weights)
    p = np.array([weights[a] for a in names], dtype=float)
    name = names[int(rng.choice(len(names), p=p / p.sum()))]
    others = [v for v in ATTRIBUTES[name] if v != attributes[name]]
    return one_hot({**attributes, name: others[int(rng.integers(len(others)))]})


def foil_weights(names: str) -> dict[str, float]:
    """``"shape,size"`` -> ``{"shape": 1.0, "size": 1.0}``: foils that change only these attributes."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in ATTRIBUTES]
    if unknown or not chosen:
        raise ConfigError(f"foil attributes must be among {', '.join(ATTRIBUTES)}; got {names!r}")
    return {n: 1.0 for n in chosen}


ORACLE_MARK = "attribute-embeddings.json"


def write_attribute_embeddings(data_dir: str | Path, out_dir: str | Path, foils_per_image: int = 4,
                               seed: int = 0, weights: dict[str, float] = FOIL_WEIGHTS) -> Path:
    """A copy of the Shapes folder ``data_dir`` whose "embeddings" are the attributes themselves:
    ``OUT/embeddings-<split>.npy`` ``[N, 1, 31]`` one-hot and ``OUT/foils-train.npy``
    ``[N, foils_per_image, 31]`` (one attribute changed each, drawn by ``weights``). Manifests, images and the attribute
    checker are linked, not copied. Train with ``--set data.text_encoder=precomputed``.

    The experiment this serves: with a perfect condition, what the generator/discriminator design
    can draw, whatever the text encoder."""
    from .manifest import DataError, read_manifest
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(data_dir):
        if name.startswith(".") or name.startswith("embeddings-") or name.startswith("foils-"):
            continue  # caches are per folder; own embeddings below
        link = out_dir / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(data_dir / name)
    for split in ("train", "test"):
        records = read_manifest(data_dir, split)
        missing = [i for i, r in enumerate(records) if set(r.get("attributes", {})) != set(ATTRIBUTES)]
        if missing:
            raise DataError(f"{data_dir / (split + '.jsonl')}, line {missing[0] + 1}: no Shapes attributes")
        np.save(out_dir / f"embeddings-{split}.npy", np.stack([one_hot(r["attributes"]) for r in records])[:, None])
        if split == "train":
            foils = [[one_hot_foil(r["attributes"], np.random.default_rng((seed, 11, i, k)), weights)
                      for k in range(foils_per_image)] for i, r in enumerate(records)]
            np.save(out_dir / "foils-train.npy", np.asarray(foils, np.float32))
    (out_dir / ORACLE_MARK).write_text(json.dumps({"source": str(data_dir), "dim": ONE_HOT_DIM, "foil_weights": weights,
                                                   "attributes": {k: list(v) for k, v in ATTRIBUTES.items()}}))
    return out_dir


# ---------------------------------------------------------------------------------------------
# Word swaps: one caption in every value of one attribute

def attribute_swaps(caption: str, attribute: str) -> tuple[list[str], int] | None:
    """``(captions, named)``: ``caption`` with the words of ``attribute`` swapped for each of its values in
    turn (``ATTRIBUTES[attribute]``'s order; the value the caption names is the caption itself, at index
    ``named``), or ``None`` when the caption does not name ``attribute``. A swap keeps the words' form where
    the new value has one ("with stripes" -> "with dots"), else takes the value's first word."""
    text = caption.lower()
    span = _span(text, attribute)
    if span is None:
        return None
    start, end, value = span
    out = []
    for other in ATTRIBUTES[attribute]:
        if other == value:
            out.append(caption)
        else:
            out.append(text[:start] + _same_form(text[start:end], WORDS[attribute][other])[0] + text[end:])
    return out, ATTRIBUTES[attribute].index(value)


def make_swaps(records: list[dict], attribute: str) -> tuple[list[list[str]], list[list[int]]]:
    """For each manifest record, its captions swapped through every value of ``attribute``
    (:func:`attribute_swaps`), flattened caption by caption (``K * V`` strings, ``V`` values), and for each
    caption the value it names (``-1``: none; its ``V`` slots then repeat the caption)."""
    if attribute not in ATTRIBUTES:
        raise ConfigError(f"data.swap_attribute must be one of {', '.join(ATTRIBUTES)}; got {attribute!r}")
    v = len(ATTRIBUTES[attribute])
    swaps, named = [], []
    for r in records:
        flat, which = [], []
        for caption in r["captions"]:
            made = attribute_swaps(caption, attribute)
            flat.extend(made[0] if made else [caption] * v)
            which.append(made[1] if made else -1)
        swaps.append(flat)
        named.append(which)
    return swaps, named
