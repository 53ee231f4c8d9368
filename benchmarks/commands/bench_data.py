"""Write the synthetic nine-benchmark suite: the shapes world in the benchmarks' real file formats.

  imp bench-data --out DIR [--images N] [--seed S] [--world WORLD_JSON]

DIR gets LLaVA's playground/data/eval layout (question files, images, ground truth) for VQAv2, GQA,
VizWiz, ScienceQA-IMG, TextVQA, POPE, MME, MMBench and MM-Vet, every one scorable offline:

  imp bench RUNTIME_SPEC --data DIR --out RUN_DIR      (IMP_JUDGE=exact grades MM-Vet offline)

--world reuses the world of a training set (the world.json `imp synth` wrote), so the benchmark speaks
the trained model's vocabulary; by default the default world. The same arguments give identical files.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (new, or a previous suite)"
    )
    parser.add_argument(
        "--images", type=int, default=20, metavar="N", help="images per benchmark (default 20)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1234,
        help="random seed of the suite (default 1234; training uses its own)",
    )
    parser.add_argument(
        "--world",
        metavar="WORLD_JSON",
        help="world.json of a synthetic training set (default: the default world)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.base import prepare_out_dir
    from benchmarks.synthetic import suite_summary, write_synthetic_suite
    from impvlm.data.synthetic import read_world

    world = read_world(args.world) if args.world else None
    prepare_out_dir(Path(args.out))
    root = write_synthetic_suite(
        args.out, args.images, seed=args.seed, world=world, progress=not args.no_progress
    )
    summary = suite_summary(root)
    print(f"synthetic benchmark suite (seed {summary['seed']}) -> {root}")
    print(f"  {'benchmark':<10} {'questions':>9} {'images':>7}")
    for name, entry in summary["benchmarks"].items():
        print(f"  {name:<10} {entry['questions']:>9} {entry['images']:>7}")
    print(f"run it: IMP_JUDGE=exact imp bench RUNTIME_SPEC --data {root} --out RUN_DIR")
    return 0
