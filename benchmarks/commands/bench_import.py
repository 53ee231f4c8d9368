"""Bring answer files of other tools into a run folder that `imp bench score` and `imp compare` use.

  imp bench import FILE... --data DIR --out RUN_DIR [--format F] [--benchmarks NAME] [--model-id M]
  imp bench import mme=llava-v1.5-13b.jsonl textvqa=other.jsonl --data DIR --out RUN_DIR

Reads LLaVA's answers/*.jsonl, lmms-eval's samples_<task>.jsonl and VLMEvalKit's
<model>_<dataset>.xlsx / .tsv (the format is told by the file; --format names it). Each file's
benchmark comes from NAME=, --benchmarks, or the file's name and folders (LLaVA's
playground/data/eval/<benchmark>/answers/, lmms-eval's task, VLMEvalKit's dataset). Answers are
matched to the questions of DIR with each benchmark's ids (MME's and TextVQA's repeated ids, MMBench's
circular rows); the imported files are only read.
"""

from __future__ import annotations

import argparse

FORMATS = ("llava", "lmms-eval", "vlmevalkit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `imp bench import` (added to `imp bench`'s parser)."""
    parser.add_argument(
        "--format", choices=FORMATS, help="import: the answer files' format (default: told by the file)"
    )
    parser.add_argument(
        "--model-id", help="import: the model's name (default: the files' model_id, or the file name)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.foreign import import_answers
    from impvlm.errors import ConfigError

    sources = args.target[1:]
    if not sources:
        raise ConfigError("usage: imp bench import FILE... --data DIR --out RUN_DIR")
    if not args.data or not args.out:
        raise ConfigError("--data and --out are required to import answer files")
    names = [n.strip() for n in (args.benchmarks or "").split(",") if n.strip()]
    if len(names) > 1:
        raise ConfigError("--benchmarks names one benchmark for import; write NAME=FILE for several")
    summary = import_answers(
        sources,
        Path(args.data),
        Path(args.out),
        benchmark=names[0] if names else None,
        fmt=args.format,
        model_id=args.model_id,
        overwrite=args.overwrite,
    )
    for entry in summary:
        unmatched = f", {entry['unmatched']} matched no question" if entry["unmatched"] else ""
        print(
            f"{entry['benchmark']}: {entry['answers']} of {entry['questions']} questions answered "
            f"({entry['format']} {entry['source']}{unmatched})"
        )
    print(f"score it: imp bench score {args.out}")
    return 0
