"""Where an export writes: the bundle folder ``out``, refused or prepared before any work is done.

An export builds the bundle in a private ``.NAME.partial-*`` folder next to ``out`` and renames it
into place at the end (:func:`move_into_place`), so a failure at any point leaves neither a half-written
bundle nor the folders made for it; a folder that is not a bundle is never replaced.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from export.errors import ExportError
from export.manifest import MANIFEST_FILE


def check_target(out: Path) -> None:
    """Refuse an ``out`` that holds something other than a bundle, or lies under a regular file."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_FILE).is_file())):
        raise ExportError(f"{out} exists and is not a bundle: refusing to overwrite it")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ExportError(f"cannot write the bundle {out}: {blocker} is a file, not a folder")


def make_work_folder(out: Path) -> tuple[Path, list[Path]]:
    """The private work folder next to ``out`` and the parent folders made for it (deepest first).

    Raises:
        ExportError: the place cannot be written (read-only folder or file system, no permission).
    """
    created = [p for p in out.parents if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent)), created
    except OSError as exc:
        remove_empty(created)
        raise ExportError(f"cannot write the bundle {out}: {os_reason(exc)}") from None


def remove_empty(folders: list[Path]) -> None:
    """Remove folders an export made for itself, deepest first, where they are still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def move_into_place(work: Path, out: Path) -> None:
    """Rename ``work`` to ``out``; a previous bundle there is moved aside first, then deleted (and
    put back if the rename fails).

    The work folder and the GGUF temp files are created private (0700 / 0600); a bundle is meant to
    be copied to devices and shared, so it is published as 0755 folders and 0644 files.
    """
    for path in [work, *work.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
    try:
        work.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def os_reason(exc: OSError) -> str:
    """``Permission denied (/path)``: an OSError in one line."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason} ({exc.filename})" if exc.filename else reason
