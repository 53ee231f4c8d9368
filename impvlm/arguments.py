"""Command-line option types and options shared by the ``imp`` subcommands.

A value out of range is refused by argparse with its usual one-line ``error: argument --x: ...``
and exit status 2, before any work is done.
"""

from __future__ import annotations

import argparse

from impvlm.image_processing import DEFAULT_MAX_IMAGE_PIXELS


def positive_int(text: str) -> int:
    """An integer >= 1 (``--threads``, ``--max-image-pixels``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def tcp_port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1 to 65535)")
    return value


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=positive_int, metavar="N", help="CPU threads (default: the runtime's choice)"
    )


def add_max_image_pixels(
    parser: argparse.ArgumentParser, default: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> None:
    """``--max-image-pixels``: images with more pixels are refused before they are decoded."""
    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=default,
        metavar="N",
        help="refuse images larger than N pixels (width x height) before decoding them "
        f"(decompression bombs; default {DEFAULT_MAX_IMAGE_PIXELS:,}; Pillow's own hard limit still applies)",
    )


def add_upstream_parts(parser: argparse.ArgumentParser, scope: str = "") -> None:
    """``--vision-tower`` / ``--language-model``: local folders for the parts an upstream checkpoint
    only names (a tower hub id, the Phi-2 base of a stage output). ``scope`` prefixes the help
    (``"checkpoint only: "`` where the command also takes a bundle)."""
    parser.add_argument(
        "--vision-tower",
        metavar="DIR",
        help=f"{scope}local SigLIP / CLIP folder (HF layout), for an upstream checkpoint that only names "
        "its tower (a hub id)",
    )
    parser.add_argument(
        "--language-model",
        metavar="DIR",
        help=f"{scope}local Phi-2 folder (HF layout), the base of an upstream stage output",
    )
