"""User-facing errors.

Every mistake a user can make (a bad option, a missing file, a broken record) raises an
:class:`ImpError` whose message is one line naming the thing at fault. The ``imp`` command prints
that line and exits with status 2 instead of a traceback (as it does for a failed file operation,
an :class:`OSError`, with :func:`os_error_line`). The root, :class:`ImpError`, is defined in
:mod:`impdefs` (below every package, so the benchmark scorers can derive from it without importing
impvlm) and re-exported here.
"""

from __future__ import annotations

from impdefs import ImpError

__all__ = [
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ImageError",
    "ImageTooLargeError",
    "ImpError",
    "os_error_line",
]


class ConfigError(ImpError, ValueError):
    """An unknown preset, template, projector type or an inconsistent configuration."""


class CheckpointError(ImpError):
    """A checkpoint folder that is missing files or does not match its config."""


class ImageError(ImpError):
    """An image that cannot be read or decoded."""


class ImageTooLargeError(ImageError):
    """An image with more pixels than the limit (``--max-image-pixels``): a possible decompression bomb."""


class DataError(ImpError):
    """A malformed dataset record or file."""


class BundleError(ImpError):
    """An exported bundle that is incomplete, tampered with or made for another model."""


def os_error_line(exc: OSError) -> str:
    """One line for a failed file operation: the file and the system's reason."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"
