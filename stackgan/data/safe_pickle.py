"""A restricted unpickler for the authors' release files (``filenames.pickle``, ``class_info.pickle``,
``char-CNN-RNN-embeddings.pickle``).

Those files hold lists, dicts, strings, numbers, numpy arrays and numpy scalars, written by
Python 2. A pickle is a program: the plain unpickler imports and calls whatever it names, so a
file from the internet could run ``os.system``. This one admits the few numpy globals that
arrays and scalars need and refuses everything else before it runs.

Example::

    keys = load_pickle("birds/train/filenames.pickle")   # ['002.Laysan_Albatross/...', ...]
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from .manifest import DataError

try:  # numpy >= 2 moved the implementation to numpy._core; old pickles name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

# (module, name) as a pickle names it -> the object it may get
_ALLOWED = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(_module, "scalar")] = _multiarray.scalar
# Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1"): a pure conversion
_ALLOWED[("_codecs", "encode")] = codecs.encode
for _module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "ndarray")] = np.ndarray
    _ALLOWED[(_module, "dtype")] = np.dtype


class UnsafePickleError(DataError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # Python 2 byte strings -> str, as numpy needs
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafePickleError(
            f"{self.path}: refused to unpickle it: it asks for {module}.{name}, which a data-release pickle "
            "never needs (only lists, dicts, strings, numbers and numpy arrays are allowed); nothing in it was run")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.path}: refused to unpickle it: it uses persistent ids")


def load_pickle(path: str | Path):
    """Unpickle ``path`` admitting only plain containers, numbers, strings and numpy arrays/scalars."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
