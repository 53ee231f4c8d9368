"""Train one stage, or a chain of stages, from a recipe (``impvlm/recipes/*.yaml``).

A recipe holds the whole configuration of a stage: the stage kind (warmup, pretrain, lora, full,
custom), where the model starts, the data, LoRA and optimisation settings. Override any key on the
command line as key=value (dotted paths, YAML values), e.g. ``train.lr=1e-4 data.on_error=skip``.
Several --recipe options run a chain in one run folder, each stage starting from the previous one's
output (the offline tiny chain: tiny-warmup, tiny-pretrain, tiny-lora).

Examples:

  imp train --list
  imp train --recipe tiny-warmup --recipe tiny-pretrain --recipe tiny-lora --out runs/tiny \\
      data.root=work/synthetic --merge runs/tiny/merged --eval
  imp train --recipe imp-v1-3b-lora --out runs/imp data.root=/data/llava --resume
  torchrun --nproc_per_node 8 -m impvlm.cli train --recipe imp-v1-3b-pretrain --out runs/imp
  deepspeed --no_local_rank --num_gpus 8 --module impvlm.cli train --recipe imp-v1-3b-lora --out runs/imp

Progress bars go to the terminal; every stage writes loss.jsonl, recipe.yaml (resolved), run.json and
stage.json next to its weights in OUT/<recipe>.
"""

from __future__ import annotations

import argparse

from impvlm.arguments import add_max_image_pixels


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--recipe",
        action="append",
        metavar="NAME|FILE",
        help="a packaged recipe name (see --list) or a YAML file; repeat to run a chain of stages in order",
    )
    parser.add_argument(
        "--out",
        default="runs",
        metavar="DIR",
        help="run folder; each stage writes DIR/<recipe name> (default: runs)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="recipe overrides applied to every stage, e.g. train.lr=1e-4 data.root=work/synthetic; "
        "prefix with a recipe name to target one stage: tiny-lora:train.max_steps=100",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue each stage from its last committed checkpoint (finished stages are skipped)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard the checkpoints and finished outputs these stages already have in --out and start over "
        "(without --resume or --overwrite, such saved work is refused, never deleted)",
    )
    add_max_image_pixels(parser, default=None)
    parser.add_argument(
        "--merge",
        metavar="DIR",
        help="after the last stage, merge the chain's output (LoRA and projector folded in) into DIR",
    )
    parser.add_argument(
        "--eval",
        action="store_true",
        help="after --merge, report held-out exact-answer accuracy on the data's eval.json",
    )
    parser.add_argument(
        "--eval-json",
        metavar="FILE",
        help="eval file for --eval (default: eval.json next to the last stage's training data)",
    )
    parser.add_argument("--eval-limit", type=int, metavar="N", help="score only the first N eval questions")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="load and validate the recipes, print them resolved with the batch arithmetic, train nothing",
    )
    parser.add_argument("--list", action="store_true", help="list the packaged recipes and exit")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from impvlm.errors import ConfigError
    from impvlm.train.recipes import load_recipe, read_recipe_dict, recipe_names, split_overrides

    if args.list:
        for name in recipe_names():
            print(f"{name:<24} {read_recipe_dict(name).get('description', '')}")
        return 0
    if not args.recipe:
        raise ConfigError("give at least one --recipe (see imp train --list)")
    if args.eval and not args.merge:
        raise ConfigError("--eval scores the merged model: add --merge DIR")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the saved stages and --overwrite discards them: give one")
    shared = [f"data.max_image_pixels={args.max_image_pixels}"] if args.max_image_pixels else []
    recipes = [
        load_recipe(name, [*overrides, *shared])
        for name, overrides in split_overrides(args.recipe, args.overrides).items()
    ]
    if args.dry_run:
        from impvlm.train.trainer import Device

        device = Device.detect()
        for recipe in recipes:
            print(f"# {recipe.name}: {recipe.description}")
            t = recipe.train
            print(
                f"# global batch {t.global_batch_size} = {t.per_device_batch_size} per device x "
                f"{t.accumulation(device.world_size)} accumulation x {device.world_size} device(s)"
            )
            print(json.dumps(recipe.to_dict(), indent=1))
        return 0

    from impvlm.files import prepare_out_dir
    from impvlm.train import merge_checkpoint, run_training

    out = prepare_out_dir(args.out)
    started = time.perf_counter()
    stage_dir = out
    for recipe in recipes:
        stage_dir = run_training(recipe, out, resume=args.resume, overwrite=args.overwrite)
        print(f"{recipe.name}: {stage_dir} ({time.perf_counter() - started:.0f}s so far)")
    if args.merge:
        merged = merge_checkpoint(stage_dir, args.merge)
        print(f"merged: {merged}")
        if args.eval:
            from impvlm.train.evaluate import exact_accuracy, format_accuracy

            last = recipes[-1]
            data_path = Path(last.data.root or ".") / last.data.paths[0]
            eval_json = Path(args.eval_json) if args.eval_json else data_path.parent / "eval.json"
            result = exact_accuracy(merged, eval_json, limit=args.eval_limit, progress=True)
            print(format_accuracy(result))
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0
