"""Export a checkpoint to a deployable bundle: ONNX vision encoder + GGUF language model + tokenizer.

CHECKPOINT is an impvlm checkpoint, a published Imp / LLaVA-Phi folder or an upstream stage output,
read without running code shipped inside it (`imp info CHECKPOINT` says what it is). Every file is
checked against the PyTorch model unless --no-validate; a failed check leaves no bundle behind. The bundle's manifest.json describes the model, its template,
preprocessing and every file (sha256, size, precision, parity); `imp info BUNDLE` prints it.

Example:
  imp export runs/imp-tiny/merged --out bundles/imp-tiny --gguf f16,q8_0,q4_k_m --onnx fp32,int8
"""

from __future__ import annotations

import argparse
from typing import Any

from impvlm.arguments import add_upstream_parts


def _csv(value: str) -> list[str]:
    value = value.strip().lower()
    return [] if value in ("", "none") else [v.strip() for v in value.split(",") if v.strip()]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="checkpoint folder (impvlm, Imp, LLaVA-Phi or a stage output)",
    )
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to write")
    parser.add_argument(
        "--gguf",
        type=_csv,
        default=["f16"],
        metavar="TYPES",
        help="comma-separated GGUF types for the LM, e.g. f16,q8_0,q4_k_m; 'none' for no LM (default f16)",
    )
    parser.add_argument(
        "--onnx",
        type=_csv,
        default=["fp32"],
        metavar="PRECISIONS",
        help="comma-separated vision encoder precisions: fp32, fp16, int8; 'none' for none (default fp32)",
    )
    parser.add_argument(
        "--mmproj",
        type=_csv,
        default=[],
        metavar="TYPES",
        help="llama.cpp mmproj GGUFs of the vision tower + projector (stock llama-mtmd-cli / llama-server), "
        "e.g. f16,q8_0; needs --gguf (default none)",
    )
    parser.add_argument(
        "--no-validate", action="store_true", help="skip the parity checks against PyTorch (faster)"
    )
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for llama.cpp")
    parser.add_argument(
        "--tokenizer", default=None, metavar="DIR", help="tokenizer folder (default: the checkpoint's)"
    )
    parser.add_argument(
        "--optimize-onnx",
        action="store_true",
        help="run ONNX Runtime's graph optimizer on the vision graph (exact fusions only; ORT-specific ops)",
    )
    parser.add_argument(
        "--imatrix",
        action="store_true",
        help="quantize with an importance matrix measured on the calibration prompts",
    )
    add_upstream_parts(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from export.bundle import export_bundle

    manifest = export_bundle(
        args.checkpoint,
        args.out,
        gguf=args.gguf,
        onnx=args.onnx,
        validate=not args.no_validate,
        threads=args.threads,
        tokenizer_dir=args.tokenizer,
        optimize_onnx=args.optimize_onnx,
        imatrix=args.imatrix,
        progress=not args.no_progress,
        mmproj=args.mmproj,
        language_model=args.language_model,
        vision_tower=args.vision_tower,
    )
    print(summary(manifest.to_dict(), args.out))
    return 0


def summary(manifest: dict[str, Any], bundle: str) -> str:
    """Files, sizes and parity of a freshly written bundle, one line per artifact."""
    from export.commands import artifact_lines, format_size

    files = manifest["files"]
    lines = [f"bundle {bundle} ({manifest['model']['id']}):", *artifact_lines(manifest, with_seconds=True)]
    total = sum(f["bytes"] for f in files.values())
    lines.append(
        f"  total {format_size(total)} in {len(files)} files, {manifest['timings']['total_seconds']:.1f}s"
    )
    return "\n".join(lines)
