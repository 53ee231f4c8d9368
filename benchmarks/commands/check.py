"""Check a candidate against a reference on as few questions as each verdict needs.

  imp check REFERENCE CANDIDATE --data DIR --out DIR [--benchmarks gqa,pope,mme] [--cap 2000]
  imp check work/ckpt work/bundle --lm q4_k_m --vision fp32 --data DIR --out DIR

REFERENCE and CANDIDATE are runtimes (a checkpoint, a bundle, or a spec such as
exported:BUNDLE?lm=q8_0). Both answer the same questions in a seeded random order, benchmark by
benchmark; after each planned look (--first units, then twice as many, up to --cap) the verdict
(HOLDS / DROPS / NOT DECIDED) is taken with alpha spent over the planned looks, and a benchmark
stops at its first decided look. OUT gets reference/ and candidate/ run folders (resumable, readable
by `imp bench score` and `imp compare`) and check.md / check.json with the questions each verdict
needed. Exit status: 0 holds, 1 drops, 3 not decided at the cap (1 with --strict).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("reference", help="reference runtime (checkpoint, bundle or spec)")
    parser.add_argument("candidate", help="candidate runtime (checkpoint, bundle or spec)")
    parser.add_argument("--data", required=True, help="benchmark data folder")
    parser.add_argument("--out", required=True, help="output folder (run folders + check.md)")
    parser.add_argument("--benchmarks", default="vqav2,gqa,vizwiz,sqa,textvqa,pope,mme,mmbench,mmvet")
    parser.add_argument("--lm", help="candidate bundle's GGUF precision")
    parser.add_argument("--vision", help="candidate bundle's ONNX precision")
    parser.add_argument("--seed", type=int, default=0, help="question order (default 0)")
    parser.add_argument("--first", type=int, default=50, help="units at the first look (default 50)")
    parser.add_argument("--cap", type=int, help="most units per benchmark (default: all)")
    parser.add_argument("--max-new-tokens", type=int, help="cap answer length")
    parser.add_argument("--threads", type=int, help="CPU threads of each runtime")
    parser.add_argument("--strict", action="store_true", help="exit 1 (not 3) when a verdict is not decided")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.base import BenchmarkOptionError, get_benchmark, prepare_out_dir
    from benchmarks.sequential import CheckOptions, check_markdown, run_check
    from benchmarks.verdict import EXIT_CODES, NOT_DECIDED
    from runtimes.loader import load_runtime, parse_spec

    names = [n for n in args.benchmarks.split(",") if n]
    for name in names:
        get_benchmark(name)
    for option in ("first", "cap"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise BenchmarkOptionError(f"--{option} must be at least 1, got {value}")
    if not Path(args.data).is_dir():
        raise BenchmarkOptionError(f"--data {args.data} is not a folder")
    for spec in (args.reference, args.candidate):
        parse_spec(spec)
    opts = CheckOptions(seed=args.seed, first=args.first, cap=args.cap, max_new_tokens=args.max_new_tokens)
    out = prepare_out_dir(Path(args.out))
    with (
        load_runtime(args.reference, threads=args.threads) as reference,
        load_runtime(args.candidate, threads=args.threads, lm=args.lm, vision=args.vision) as candidate,
    ):
        report = run_check(reference, candidate, names, Path(args.data), out, opts)
    print(check_markdown(report))
    print(f"\nreport: {out / 'check.md'}")
    if report["decision"] == NOT_DECIDED and args.strict:
        return 1
    return EXIT_CODES[report["decision"]]
