"""The errors the project raises on purpose.

Every one derives from :class:`StackGANError`; the command line prints them (and ``OSError``,
e.g. a missing or read-only file) as one line naming the file and the problem, and exits 2. Any
other exception keeps its traceback, because it is a bug (stylegan2-ada's ``UserError``).

Each kind also derives from the built-in exception it replaced (ValueError or RuntimeError), so
code that caught those still works.
"""
from __future__ import annotations


class StackGANError(Exception):
    """Base class: a problem with the user's input, files or machine, not a bug."""


class UsageError(StackGANError, ValueError):
    """A bad command-line value or combination of values."""


class ConfigError(StackGANError, ValueError):
    """A configuration file or override that is not valid."""


class DataError(StackGANError, ValueError):
    """A data set, manifest, image or caption file that cannot be used."""


class CheckpointError(StackGANError, RuntimeError):
    """A training state or model folder that cannot be read or written."""


class MetricError(StackGANError, RuntimeError):
    """FID / KID / IS inputs or Inception weights that cannot be used."""


class TrainingError(StackGANError, RuntimeError):
    """Training cannot go on (diverged, replicas out of step)."""


class RunInUseError(StackGANError, RuntimeError):
    """Another process holds the run folder's lock."""


class DependencyError(StackGANError, RuntimeError):
    """An optional package this feature needs is not installed."""


def describe_os_error(e: OSError) -> str:
    """``PATH: what is wrong`` for an OSError (its own text when it names no file)."""
    if e.filename is None:
        return str(e)
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    return f"{where}: {e.strerror or e}"
