"""The ``imp export`` and ``imp info`` commands, one module each, and what their output shares."""


def format_size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KB``, ``3.2 MB``, ``1.70 GB``."""
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"
