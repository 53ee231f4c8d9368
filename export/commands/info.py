"""Describe an export bundle (model, template, tokens, preprocessing, files and their checks) or a
checkpoint folder (its layout, template and why, tower, image tokens, dtype, size, and what
`imp export` would write).

A bundle's files are verified against their sha256 unless --no-verify, and so is the manifest
against what each file says about itself (graph shapes, GGUF metadata, token lists); a changed or
missing file is an error. A checkpoint is described without loading its weights.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from impvlm.arguments import add_upstream_parts


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundle", metavar="PATH", help="bundle folder written by `imp export`, or a checkpoint folder"
    )
    parser.add_argument("--no-verify", action="store_true", help="do not hash the files (faster)")
    parser.add_argument("--json", action="store_true", help="print manifest.json as is")
    add_upstream_parts(parser, scope="checkpoint only: ")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from export.manifest import MANIFEST_FILE, load_manifest

    folder = Path(args.bundle)
    if not (folder / MANIFEST_FILE).is_file() and (folder / "config.json").is_file():
        from export.checkpoint_info import describe_checkpoint

        print(describe_checkpoint(folder, args.language_model, args.vision_tower))
        return 0

    manifest = load_manifest(args.bundle, verify=not args.no_verify)
    if args.json:
        print(json.dumps(manifest, indent=2, ensure_ascii=False))
    else:
        print(describe(manifest, verified=not args.no_verify))
    return 0


def describe(m: dict[str, Any], verified: bool = True) -> str:
    """The manifest in human form."""
    from export.commands import artifact_lines, format_size

    model, tokens, image, tpl = m["model"], m["tokens"], m["image"], m["template"]
    src = m["source"]
    lines = [
        f"{m['format']} v{m['format_version']}, created {m.get('created') or '?'}"
        + ("  (all files verified)" if verified else "  (files not verified)"),
        f"model      {model['id']}: {model['language_model']} LM + {model['vision_tower']} + "
        f"{model['projector']} projector",
        f"           embedding width {model['embedding_width']}, vision width {model['vision_width']}, "
        f"{model['image_tokens']} image tokens, vocab {model['vocab_size']}, context {model['context_length']}",
        f"source     {src['checkpoint']} ({src['layout']} layout, sha256 {src['checkpoint_sha256'][:16]}…)",
        f"template   {tpl['name']}: roles {' / '.join(tpl['roles'])}, sep {tpl['sep']!r}, "
        f"sep2 {tpl['sep2']!r}, stop {tpl['stop_str']!r}",
        f"           prompt {tpl['question_prompt']!r}",
        f"tokens     image {_image_id(tokens['image'])}, eos {tokens['eos']}, stop {tokens['stop']}, "
        f"pad {tokens['pad']}, bos {tokens['bos']}",
        f"image      {image['size']}x{image['size']} {image['aspect_ratio']}, {image.get('resample', '?')}, "
        f"mean {_floats(image['mean'])}, std {_floats(image['std'])}",
        f"tokenizer  {m['tokenizer']}/{_tokenizer_text(m.get('tokenizer_info'))}",
        "artifacts",
        *artifact_lines(m),
    ]
    files = m["files"]
    total = sum(f["bytes"] for f in files.values())
    lines.append(f"files      {len(files)}, {format_size(total)}")
    tools = ", ".join(f"{k} {v}" for k, v in m["tools"].items() if v)
    lines.append(f"tools      {tools}")
    return "\n".join(lines)


def _tokenizer_text(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    source = "the checkpoint's own" if info["source"] == "checkpoint" else f"from {info['source']}"
    return (
        f" ({info['tokens']} tokens, sha256 {info['sha256'][:16]}…, {source}; "
        f"checked: {', '.join(info['checked'])})"
    )


def _image_id(token_id: int | None) -> str:
    return "none (spliced where the prompt says <image>)" if token_id is None else str(token_id)


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
