"""Captions of the Shapes set: writing them from attributes and reading attributes back.

Only the words listed in docs/shapes-dataset.md name attributes, so :func:`parse_caption` can
read back exactly what a caption says. The template words around them ("there is", "is shown",
"in the", ...) never coincide with an attribute word.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["CAPTION_TEMPLATES", "NAMED_PROBABILITY", "make_caption", "parse_caption"]

NAMED_PROBABILITY = 0.75  # chance that a caption names each of size, texture, position, background
OPTIONAL = ("size", "texture", "position", "background")

WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {"circle": ("circle", "disc"), "square": ("square",), "triangle": ("triangle",),
              "star": ("star",)},
    "color": {c: (c,) for c in ("red", "orange", "yellow", "green", "cyan", "blue", "purple",
                                "pink")},
    "size": {"small": ("small", "tiny", "little"), "medium": ("medium", "medium-sized"),
             "large": ("large", "big")},
    "texture": {"solid": ("solid", "plain"), "striped": ("striped", "with stripes"),
                "dotted": ("dotted", "spotted", "with dots")},
    "position": {
        "top left": ("top left", "upper left"), "top": ("top", "top center"),
        "top right": ("top right", "upper right"), "left": ("left",),
        "center": ("center", "middle"), "right": ("right",),
        "bottom left": ("bottom left", "lower left"), "bottom": ("bottom", "bottom center"),
        "bottom right": ("bottom right", "lower right"),
    },
    "background": {b: (b,) for b in ("black", "gray", "white", "beige")},
}
BACKDROP_NOUNS = ("background", "backdrop")

# Prepositional frames for a position word, by kind of position.
_POSITION_FRAMES = {
    "corner": ("in the {}", "at the {}", "in the {} corner"),
    "edge": ("at the {}",),  # top / bottom
    "side": ("on the {}", "at the {}", "on the {} side"),  # left / right
    "center": ("in the {}",),
}
_BACKGROUND_FRAMES = ("on a {} {}", "against a {} {}", "in front of a {} {}", "over a {} {}")

# {np}: the noun phrase with its article ("a small striped red disc"); {pos}, {bg}: the
# position and background phrases; {subject} / {pred}: "the disc" / "small, red and striped".
# Any of size, texture, {pos} and {bg} may be empty, and every template still reads as a sentence.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{np} {pos} {bg}",
    "there is {np} {pos}, {bg}",
    "{bg}, {np} is shown {pos}",
    "{pos}, {np} {bg}",
    "{np} can be seen {pos} {bg}",
    "this image shows {np} {pos} {bg}",
    "a picture of {np} {pos}, {bg}",
    "{bg}, there is {np} {pos}",
    "{subject} {pos} is {pred} {bg}",
    "a drawing of {np} {bg} {pos}",
    "you can see {np} {bg}, {pos}",
    "{np}, {pos}, {bg}",
)


def make_caption(attrs: dict[str, str], rng: np.random.Generator, full: bool = False) -> str:
    """One caption of ``attrs``: always color and shape, each other attribute with p = 0.75.

    ``full=True`` names all six (the evaluation caption). Example::

        make_caption({"shape": "circle", "color": "red", "size": "small", "texture": "striped",
                      "position": "top left", "background": "black"}, rng, full=True)
        # e.g. 'on a black background, a tiny striped red disc is shown in the top left corner'
    """
    return compose_caption(attrs, rng, full)[1]


def compose_caption(attrs: dict[str, str], rng: np.random.Generator,
                    full: bool = False) -> tuple[int, str]:
    """Like :func:`make_caption`, also returning the index of the template used."""

    def pick(options):
        return options[int(rng.integers(len(options)))]

    # Draw order, fixed: which optional parts are named, template, then every word choice
    # (drawn whether or not it is used, so the choices do not shift with what is named).
    named = {name: bool(rng.random() < NAMED_PROBABILITY) or full for name in OPTIONAL}
    template = int(rng.integers(len(CAPTION_TEMPLATES)))
    shape = pick(WORDS["shape"][attrs["shape"]])
    color = attrs["color"]
    size = pick(WORDS["size"][attrs["size"]]) if named["size"] else ""
    texture = pick(WORDS["texture"][attrs["texture"]])
    texture_first = bool(rng.integers(2))  # "striped red" rather than "red striped"
    texture_first |= attrs["texture"] == "solid"  # "a solid blue circle" reads better
    position = pick(WORDS["position"][attrs["position"]])
    position_frame = pick(_POSITION_FRAMES[_position_kind(attrs["position"])])
    background = pick(_BACKGROUND_FRAMES).format(attrs["background"], pick(BACKDROP_NOUNS))

    texture_before = texture if named["texture"] and not texture.startswith("with ") else ""
    texture_after = texture if named["texture"] and texture.startswith("with ") else ""
    adjectives = [texture_before, color] if texture_first else [color, texture_before]
    bare = _join_words(size, *adjectives, shape, texture_after)
    predicate = _join_list([w for w in (size, color, texture_before) if w])
    fields = {
        "np": _article(bare) + " " + bare,
        "pos": position_frame.format(position) if named["position"] else "",
        "bg": background if named["background"] else "",
        "subject": "the " + shape,
        "pred": _join_words(predicate, texture_after),
    }
    return template, _tidy(CAPTION_TEMPLATES[template].format(**fields))


def parse_caption(text: str) -> dict[str, str]:
    """Read back the attributes a caption names, as canonical values (``{"shape": "circle", ...}``).

    Raises ``ValueError`` when a caption names two values of one attribute.
    """
    found: dict[str, str] = {}

    def note(name: str, value: str) -> None:
        if found.setdefault(name, value) != value:
            raise ValueError(f"caption names two {name}s ({found[name]}, {value}): {text!r}")

    text = text.lower()
    # The background color is the word before "background"/"backdrop"; take it out first so
    # that no background word is read as anything else.
    backdrop = re.compile(r"\b(\S+) (?:%s)\b" % "|".join(BACKDROP_NOUNS))
    for match in backdrop.finditer(text):
        value = _LOOKUP["background"].get(match.group(1))
        if value is None:
            raise ValueError(f"unknown background color {match.group(1)!r}: {text!r}")
        note("background", value)
    text = backdrop.sub(" ", text)
    for name in ("position", "size", "texture", "shape", "color"):
        for match in _PATTERNS[name].finditer(text):
            note(name, _LOOKUP[name][match.group(1)])
    return found


def _position_kind(position: str) -> str:
    if " " in position:
        return "corner"
    kinds = {"top": "edge", "bottom": "edge", "left": "side", "right": "side"}
    return kinds.get(position, "center")


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def _join_words(*words: str) -> str:
    return " ".join(w for w in words if w)


def _join_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _tidy(text: str) -> str:
    """Remove the gaps and doubled or stray commas that empty fields leave behind."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,(?:\s*,)*\s*", ", ", text)
    return text.strip(" ,")


_LOOKUP = {name: {word: value for value, words in table.items() for word in words}
           for name, table in WORDS.items()}
# Longest phrase first, so "top left" is not read as "top" nor "medium-sized" as "medium".
_PATTERNS = {
    name: re.compile(r"(?<![\w-])(%s)(?![\w-])" % "|".join(
        re.escape(w) for w in sorted(lookup, key=len, reverse=True)))
    for name, lookup in _LOOKUP.items()
}
