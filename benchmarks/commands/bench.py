"""Run the nine-benchmark suite on a runtime, resumably; re-score or merge saved answers.

  imp bench RUNTIME_SPEC --data DIR --out RUN_DIR [--benchmarks pope,mme,...] [--limit N]
  imp bench RUNTIME_SPEC ... --num-chunks 4 --chunk-idx 0     (one of 4 processes / GPUs / machines)
  imp bench merge RUN_DIR                                     (join the chunks, then score)
  imp bench score RUN_DIR [--data DIR] [--benchmarks mme,...]  (re-score saved answers, no model)
  imp bench import FILE... --data DIR --out RUN_DIR           (answers of LLaVA, lmms-eval, VLMEvalKit)

RUNTIME_SPEC is a checkpoint folder (PyTorch), a bundle folder (ONNX Runtime + llama.cpp) or a spec
such as exported:work/bundle?lm=q4_k_m&vision=int8. DIR is LLaVA's playground/data/eval layout (or
the synthetic suite from `imp pipeline`); `score` uses the DIR the run recorded unless --data is
given. A killed run resumes from its answers files. RUN_DIR's
run.json records what the answers depend on (runtime, questions and images, options); a run with
other inputs into the same RUN_DIR is refused unless --overwrite discards the old answers.
"""

from __future__ import annotations

import argparse

from benchmarks.commands import bench_import
from benchmarks.tasks.mmbench_rules import MMBENCH_RULES
from impvlm.arguments import add_max_image_pixels

ALL = "vqav2,gqa,vizwiz,sqa,textvqa,pope,mme,mmbench,mmvet"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "target", nargs="+", help="RUNTIME_SPEC, or `score RUN_DIR`, `merge RUN_DIR`, `import FILE...`"
    )
    parser.add_argument("--data", help="benchmark data folder (LLaVA playground/data/eval layout)")
    parser.add_argument("--out", help="run folder for this runtime's answers and results")
    parser.add_argument(
        "--benchmarks", help=f"comma-separated (default: all nine: {ALL}; for score: all answered)"
    )
    parser.add_argument("--limit", type=int, help="only the first N questions of each benchmark")
    parser.add_argument(
        "--num-chunks", type=int, default=1, help="split each benchmark into N contiguous chunks"
    )
    parser.add_argument("--chunk-idx", type=int, default=0, help="which chunk this process answers (0-based)")
    parser.add_argument("--max-new-tokens", type=int, help="cap every benchmark's answer length (quick runs)")
    parser.add_argument(
        "--no-reuse", action="store_true", help="recompute everything per question (upstream way)"
    )
    parser.add_argument(
        "--max-batch", type=int, help="most questions on one image decoded together (default: what fits)"
    )
    parser.add_argument("--lm", help="GGUF precision of a bundle (e.g. q4_k_m)")
    parser.add_argument("--vision", help="ONNX precision of a bundle (fp32, fp16, int8)")
    parser.add_argument("--threads", type=int, help="CPU threads")
    add_max_image_pixels(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard RUN_DIR's answers when they came from other inputs (default: refuse)",
    )
    add_scoring_arguments(parser)
    bench_import.add_arguments(parser)


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mmbench-rule",
        choices=MMBENCH_RULES,
        help=f"how a letter is read from MMBench answers (default {MMBENCH_RULES[0]}: LLaVA's published numbers)",
    )
    parser.add_argument(
        "--mmvet-grades",
        metavar="GRADE_JSON",
        help="score MM-Vet from an MM-Vet grader's file (*-grade-*runs.json) instead of asking a judge",
    )


def scoring_options(args: argparse.Namespace) -> dict[str, dict]:
    """Constructor options per benchmark from the scoring arguments."""
    options: dict[str, dict] = {}
    if args.mmbench_rule:
        options["mmbench"] = {"rule": args.mmbench_rule}
    if args.mmvet_grades:
        options["mmvet"] = {"grades": args.mmvet_grades}
    return options


def score_or_merge(args: argparse.Namespace, action: str, names: list[str]) -> dict:
    """`imp bench score RUN_DIR` / `imp bench merge RUN_DIR`: the scored results."""
    from pathlib import Path

    from benchmarks import runner
    from impvlm.errors import ConfigError

    if len(args.target) != 2:
        raise ConfigError(f"usage: imp bench {action} RUN_DIR")
    run_dir = Path(args.target[1])
    if not run_dir.is_dir():
        raise ConfigError(f"run folder not found: {run_dir}")
    if action == "merge":
        present = [p.name for p in run_dir.iterdir() if any(p.glob("answers.chunk*"))]
        for name in present:
            runner.merge_chunks(run_dir, name)
    data = Path(args.data) if args.data else None
    return runner.score_run(run_dir, data, names or None, options=scoring_options(args))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks import runner
    from benchmarks.report import print_results
    from impvlm.errors import ConfigError

    action = args.target[0]
    names = [n.strip() for n in (args.benchmarks or "").split(",") if n.strip()]
    if action == "import":
        return bench_import.run(args)
    if args.format or args.model_id:
        raise ConfigError("--format and --model-id are options of `imp bench import`")
    if action in ("score", "merge"):
        print_results(score_or_merge(args, action, names))
        return 0
    if len(args.target) != 1:
        raise ConfigError("give one RUNTIME_SPEC")
    if not args.data or not args.out:
        raise ConfigError("--data and --out are required to run benchmarks")
    from benchmarks.base import benchmark_class, prepare_out_dir
    from runtimes.loader import load_runtime

    names = names or ALL.split(",")
    for name in names:
        benchmark_class(name)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads} (leave it out for all cores)")
    options = runner.BenchmarkRunOptions(
        limit=args.limit,
        num_chunks=args.num_chunks,
        chunk_idx=args.chunk_idx,
        max_new_tokens=args.max_new_tokens,
        reuse=not args.no_reuse,
        overwrite=args.overwrite,
        max_batch=args.max_batch,
    )
    prepare_out_dir(Path(args.out))
    runtime = load_runtime(action, lm=args.lm, vision=args.vision, threads=args.threads)
    runtime.max_image_pixels = args.max_image_pixels
    results = runner.run_suite(runtime, names, Path(args.data), Path(args.out), options)
    if results is None:
        print(
            f"chunk {args.chunk_idx} of {args.num_chunks} done; run `imp bench merge {args.out}` after all chunks"
        )
    else:
        if scoring_options(args):  # the run scored with the default rules: score again as asked
            results = runner.score_run(Path(args.out), Path(args.data), names, options=scoring_options(args))
        print_results(results)
    return 0
