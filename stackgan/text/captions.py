"""Sentences given to a command: on its command line and in a captions file, read one way
everywhere (``generate``, ``viz``, ``serve --examples``)."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .base import clean_text


def read_captions_file(path: str | Path) -> list[str]:
    """The captions of a UTF-8 text file, one per line: white space collapsed to single spaces
    (:func:`~stackgan.text.base.clean_text`), lines left empty (or blank) skipped.

    Example::

        read_captions_file("captions.txt")  # "a red  circle\\n\\n  a blue star\\n" -> ["a red circle", "a blue star"]
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    return gather_captions(text.splitlines())


def gather_captions(texts: list[str], captions_file: str | Path | None = None) -> list[str]:
    """``texts`` and then the lines of ``captions_file`` (if given), each cleaned as
    :func:`read_captions_file` cleans a line; empty ones skipped."""
    cleaned = [t for t in (clean_text(t) for t in texts) if t]
    return cleaned + (read_captions_file(captions_file) if captions_file else [])
