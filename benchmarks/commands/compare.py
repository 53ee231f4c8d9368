"""Compare benchmark runs of the same model across runtimes: does accuracy hold, with confidence?

  imp compare REFERENCE_RUN CANDIDATE_RUN [CANDIDATE_RUN ...] --out REPORT_DIR
  imp compare work/ckpt work/bundle --data DIR --out REPORT_DIR --lm f16,q8_0,q4_k_m --vision fp32,int8

Inputs are run folders of `imp bench` (with results.json), or a checkpoint / bundle / runtime spec,
which is run on the benchmarks first (into REPORT_DIR/runs/). The first input is the reference.
Writes report.md, report.json and PNG charts to REPORT_DIR. Each benchmark x candidate HOLDS, DROPS
or is NOT DECIDED (too few questions; the report says about how many more would decide it).
Exit status: 0 every row holds, 1 a row drops (or could not be paired: a benchmark the runs did not
answer on the same questions), 3 not decided (1 with --strict).
"""

from __future__ import annotations

import argparse

from export.quant_types import NEAR_LOSSLESS_MARGIN, QUANTIZED_MARGIN


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "inputs", nargs="+", help="reference first, then candidates (run folders or runtimes)"
    )
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--data", help="benchmark data folder, when inputs must be run first")
    parser.add_argument("--benchmarks", default="vqav2,gqa,vizwiz,sqa,textvqa,pope,mme,mmbench,mmvet")
    parser.add_argument("--limit", type=int, help="first N questions per benchmark (when running)")
    parser.add_argument("--lm", default="", help="bundle GGUF precisions to run, comma-separated")
    parser.add_argument("--vision", default="", help="bundle ONNX precisions to run, comma-separated")
    parser.add_argument("--max-new-tokens", type=int, help="cap answer length (when running)")
    parser.add_argument(
        "--max-drop-lossless",
        type=float,
        default=NEAR_LOSSLESS_MARGIN.max_drop,
        help="f16 / q8_0: max drop in points",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=NEAR_LOSSLESS_MARGIN.min_agreement,
        help="f16 / q8_0: min per-sample agreement %%",
    )
    parser.add_argument(
        "--max-drop-quantized",
        type=float,
        default=QUANTIZED_MARGIN.max_drop,
        help="4-6 bit / int8: max drop in points",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 (not 3) when a verdict is not decided")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard REPORT_DIR/runs/ answers that came from other inputs (default: refuse)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.base import prepare_out_dir
    from benchmarks.compare import Thresholds, compare_runs, exit_status
    from benchmarks.compare_report import verdict_table, write_report
    from benchmarks.runner import RESULTS_FILE, BenchmarkRunOptions
    from impvlm.errors import ConfigError

    options = BenchmarkRunOptions(
        limit=args.limit, max_new_tokens=args.max_new_tokens, overwrite=args.overwrite
    )
    out = prepare_out_dir(Path(args.out))
    runs: list[Path] = []
    for spec in args.inputs:
        if (Path(spec) / RESULTS_FILE).exists():
            runs.append(Path(spec))
            continue
        if not args.data:
            raise ConfigError(f"{spec} is not a run folder (no {RESULTS_FILE}); pass --data to run it first")
        runs += run_inputs(spec, args, out / "runs", options)
    if len(runs) < 2:
        raise ConfigError("give a reference and at least one candidate")
    thresholds = Thresholds(args.max_drop_lossless, args.min_agreement, args.max_drop_quantized)
    report = compare_runs(runs[0], runs[1:], thresholds)
    paths = write_report(report, out)
    print(verdict_table(report))
    print(f"\nreport: {paths['md']}")
    return exit_status(report, args.strict)


def run_inputs(spec, args, runs_dir, options):
    """Run one checkpoint (one run) or bundle (one run per lm x vision) on the benchmarks."""
    from pathlib import Path

    from benchmarks.runner import run_suite
    from runtimes.loader import load_runtime, parse_spec, run_label

    kind, _, _ = parse_spec(spec)
    names = [n for n in args.benchmarks.split(",") if n]
    combos = [(None, None)]
    if kind != "torch":
        combos = [
            (lm or None, vision or None) for lm in args.lm.split(",") for vision in args.vision.split(",")
        ]
    out = []
    for lm, vision in combos:
        runtime = load_runtime(spec, lm=lm, vision=vision)
        run_dir = Path(runs_dir) / (run_label(runtime.identity()) or kind)
        run_suite(runtime, names, Path(args.data), run_dir, options)
        runtime.close()
        out.append(run_dir)
    return out
