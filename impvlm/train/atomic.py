"""Small files written whole or not at all: a temporary file, then a rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write JSON to ``path`` through a temporary file and a rename (never a half-written file)."""
    return _write(path, json.dumps(data, indent=1, default=str) + "\n")


def write_yaml_atomic(path: Path, data: Any) -> Path:
    return _write(path, yaml.safe_dump(data, sort_keys=False))


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
