"""The ``imp`` console command.

Each subcommand lives in a small module named like it, ``<package>/commands/<command>.py`` (with
``-`` as ``_``: ``imp bench-data`` is ``benchmarks/commands/bench_data.py``), in the package whose
machinery it drives. The module exposes ``configure(parser)`` (argparse only, cheap to import) and
``run(args) -> int`` (which imports the heavy machinery it needs). This module is the one place that
reaches into all four packages (``impvlm``, ``export``, ``runtimes``, ``benchmarks``), and it does so
lazily, so ``imp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# name -> (module with configure/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": (
        "benchmarks.commands.pipeline",
        "the offline end-to-end job: data, train, merge, export, benchmark, report",
    ),
    "presets": ("impvlm.commands.presets", "list the model presets and build one to check it"),
    "chat": (
        "runtimes.commands.chat",
        "ask a checkpoint or an exported bundle about an image (one-shot or interactive)",
    ),
    "bench": (
        "benchmarks.commands.bench",
        "run the nine-benchmark suite on a runtime (resumable); re-score or merge runs",
    ),
    "compare": (
        "benchmarks.commands.compare",
        "compare runs across runtimes and quants: deltas, agreement, verdict",
    ),
    "check": (
        "benchmarks.commands.check",
        "does accuracy hold? answer both runtimes in a seeded order until each verdict is decided",
    ),
    "bench-speed": (
        "benchmarks.commands.bench_speed",
        "speed and memory of PyTorch vs the exported runtime, per quant",
    ),
    "bench-data": (
        "benchmarks.commands.bench_data",
        "write the synthetic nine-benchmark suite in the real file formats",
    ),
    "synth": ("impvlm.commands.synth", "generate the offline synthetic shapes world and its tokenizer"),
    "train-tower": ("impvlm.commands.train_tower", "pretrain the tiny vision tower on the synthetic world"),
    "train": ("impvlm.commands.train", "train a stage (or a chain of stages) from a recipe"),
    "merge": ("impvlm.commands.merge", "fold LoRA and projector stage outputs into one checkpoint"),
    "export": (
        "export.commands.export",
        "export a checkpoint to a bundle: ONNX vision encoder + GGUF LM + manifest",
    ),
    "info": (
        "export.commands.info",
        "describe an export bundle (verifying its files) or a checkpoint folder (layout, template, export plan)",
    ),
    "serve": (
        "runtimes.commands.serve",
        "serve a bundle as an OpenAI-compatible chat API with images (HTTP)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imp",
        description=(
            "impvlm: train Imp / LLaVA-Phi models, export them to ONNX + GGUF, run them on PyTorch, "
            "ONNX Runtime and llama.cpp, and check that accuracy held."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.configure(sp)
        sp.set_defaults(_module=module_name)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """The errors ``imp`` prints as one line: the root of every user error, :class:`impdefs.ImpError`
    (the benchmarks' errors derive from it too)."""
    from impdefs import ImpError

    return (ImpError,)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take an optional positional after options (`imp chat M --image X "question"`):
    # a subcommand that names a trailing positional receives the leftover words there.
    trailing = getattr(args, "_trailing", None)
    if extra and trailing and getattr(args, trailing) is None and not extra[0].startswith("-"):
        setattr(args, trailing, " ".join(extra))
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.command:
        parser.print_help()
        return 0
    from impvlm.errors import os_error_line

    module = importlib.import_module(args._module)
    try:
        status = int(module.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the wrapper, not at interpreter exit
        return status
    except BrokenPipeError:  # `imp info BUNDLE | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141  # 128 + SIGPIPE, as a shell reports a writer stopped by a closed pipe
    except user_errors() as exc:
        print(f"imp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named cannot be read or written
        print(f"imp {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"imp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
