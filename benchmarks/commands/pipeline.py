"""The main job, offline: the shipped tiny Imp -> export -> nine synthetic benchmarks on PyTorch and
every exported variant -> cross-runtime accuracy report with a verdict per benchmark and candidate.

--train trains the tiny Imp from scratch first (synthetic world -> train -> merge -> held-out
accuracy; about 50 minutes on 2 CPU cores). Every stage is cached in the work folder and skipped when
its inputs did not change; run the same command again after a crash and it resumes. Point it at your
own model and data with --checkpoint (a merged impvlm or upstream Imp checkpoint) and --bench-data
(LLaVA's playground/data/eval folder).
"""

from __future__ import annotations

import argparse

from impvlm.data.defaults import TOWER_STEPS, TRAIN_IMAGES

TRAINING_OPTIONS = ("data", "train_images", "eval_images", "tower_steps", "set")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--work", default="work", help="work folder for every stage's outputs (default: work)"
    )
    parser.add_argument(
        "--train", action="store_true",
        help="train the tiny Imp from scratch (synthetic world, tower, recipes, merge) instead of "
        "starting from the shipped one; about 50 minutes on 2 CPU cores",
    )  # fmt: skip
    parser.add_argument("--checkpoint", help="your own merged checkpoint (instead of the shipped tiny Imp)")
    parser.add_argument(
        "--data", help="with --train: your own training folder (LLaVA JSON + images + tokenizer/)"
    )
    parser.add_argument("--bench-data", help="your own benchmark folder (LLaVA playground/data/eval layout)")
    parser.add_argument(
        "--train-images", type=int,
        help=f"with --train: synthetic training images (default {TRAIN_IMAGES})",
    )  # fmt: skip
    parser.add_argument(
        "--eval-images", type=int, help="with --train: held-out synthetic images (default 200)"
    )
    parser.add_argument(
        "--bench-images", type=int,
        help="images per synthetic benchmark, one count for all nine (default: "
        "100 to 750 per benchmark, about 750 scoring units each; POPE 1,800 questions)",
    )  # fmt: skip
    parser.add_argument(
        "--tower-steps", type=int,
        help=f"with --train: steps of the tiny tower's pretraining (default {TOWER_STEPS}: about 3 minutes)",
    )  # fmt: skip
    parser.add_argument("--gguf", default="f16,q8_0,q4_k_m", help="GGUF precisions to export and benchmark")
    parser.add_argument("--onnx", default="fp32,int8", help="ONNX vision precisions to export and benchmark")
    parser.add_argument(
        "--mmproj", default="f16", help="llama.cpp mmproj precisions (native runtime); empty string for none"
    )
    parser.add_argument("--benchmarks", default="vqav2,gqa,vizwiz,sqa,textvqa,pope,mme,mmbench,mmvet")
    parser.add_argument("--limit", type=int, help="first N questions per benchmark")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length cap (default 32)")
    parser.add_argument(
        "--threads", type=int, help="CPU threads for each runtime (default: 1 when runs share the cores)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2,
        help="benchmark runs at once, each in its own process (default 2, one per core of a 2-core machine; "
        "1 for models that fill the memory)",
    )  # fmt: skip
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --train: override for every recipe, a recipe key with a YAML value (e.g. --set train.max_steps=50)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with the report's verdict: 0 holds, 1 drops or not decided (default: 0 once the report is written)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from benchmarks.pipeline import Pipeline, PipelineConfig
    from impvlm.errors import ConfigError
    from impvlm.train.recipes import parse_overrides

    given = [name for name in TRAINING_OPTIONS if getattr(args, name) not in (None, [])]
    if given and not args.train:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"{options} only apply to training: add --train (or leave them out)")
    os.environ.setdefault("IMP_JUDGE", "exact")  # offline MM-Vet grading unless a judge is configured
    overrides = parse_overrides(args.set)  # YAML values, as `imp train KEY=VALUE` reads them
    sizes = {  # the ones given; PipelineConfig holds the defaults
        "train_images": args.train_images,
        "eval_images": args.eval_images,
        "tower_steps": args.tower_steps,
        "bench_images": args.bench_images,
    }
    config = PipelineConfig(
        work=Path(args.work),
        train=args.train,
        **{name: value for name, value in sizes.items() if value is not None},
        gguf=tuple(x for x in args.gguf.split(",") if x),
        onnx=tuple(x for x in args.onnx.split(",") if x),
        mmproj=tuple(x for x in args.mmproj.split(",") if x),
        benchmarks=tuple(x for x in args.benchmarks.split(",") if x),
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        jobs=args.jobs,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        data=Path(args.data) if args.data else None,
        bench_data=Path(args.bench_data) if args.bench_data else None,
        train_overrides=overrides,
        progress=not args.no_progress,
    )
    summary = Pipeline(config).run()
    report_dir = Path(summary["report"]["report"]).parent
    print()
    print((report_dir / "verdict.md").read_text())
    print(f"report: {summary['report']['report']}")
    print(f"wall time: {summary['wall_seconds'] / 60:.1f} min")
    if not args.strict:
        return 0
    from benchmarks.compare import exit_status

    report = json.loads((report_dir / "report.json").read_text())
    return exit_status(report, strict=True)
