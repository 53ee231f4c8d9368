"""The ``imp export`` and ``imp info`` commands, one module each, and what their output shares."""

from __future__ import annotations

from typing import Any


def format_size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KB``, ``3.2 MB``, ``1.70 GB``."""
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"


def artifact_lines(manifest: dict[str, Any], with_seconds: bool = False) -> list[str]:
    """One line per artifact of a manifest: kind, precision, file, size with its companion files,
    optionally the export time, and the recorded check as its kind describes it."""
    from export.kinds.registry import kind_of
    from export.manifest import iter_artifacts

    files = manifest["files"]
    lines = []
    for kind, precision, entry in iter_artifacts(manifest):
        size = sum(files[f]["bytes"] for f in [entry["file"], *entry.get("extra_files", [])])
        seconds = f"{entry['export_seconds']:7.1f}s  " if with_seconds else ""
        validation = entry.get("validation")
        check = kind_of(kind).describe(validation) if validation else "not validated"
        lines.append(f"  {kind:6} {precision:7} {entry['file']:32} {format_size(size):>9}  {seconds}{check}")
    return lines
