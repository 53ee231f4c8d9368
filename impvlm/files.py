"""Run folders and the JSON-lines logs the project appends to.

- :func:`prepare_out_dir` creates an output folder up front, or refuses it in one line (a path under
  a regular file, a read-only place) before any work is done.
- :func:`read_jsonl` reads an append-only log back. A process killed while appending leaves at most
  a torn last line (no newline, not valid JSON): it is dropped. A bad line anywhere else is damage,
  not a crash, and is refused naming the line, so nothing after it is ever cut.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from impvlm.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def prepare_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Create ``path`` (and its parents) if missing and check that it is a writable folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{option} {path}: exists and is not a folder") from None
    except NotADirectoryError:
        raise ConfigError(f"{option} {path}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot create the folder: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: the folder is not writable")
    return path


def read_jsonl(path: Path, valid: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one per non-empty line (``[]`` when it does not exist).

    Args:
        path: the file.
        valid: what a row must satisfy besides being a JSON object (e.g. the keys it needs).

    Raises:
        DataError: naming the line, for a line that is not a valid row, unless it is a torn last line.
    """
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")  # the part after the last newline is "" unless the last line is torn
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and (valid is None or valid(row)):
            rows.append(row)
        elif number == len(lines):
            log.warning("%s: dropped its torn last line %d (an interrupted write)", path, number)
        else:
            raise DataError(f"{path}: line {number} is not a valid record; fix or delete that line")
    return rows
