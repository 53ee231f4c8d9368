"""Generate the offline synthetic "shapes" world and train its tokenizer.

Writes DIR/images/*.png, DIR/pretrain.json (stage-1 captions), DIR/instruct.json (stage-2 multi-turn
QA, LLaVA format), DIR/eval.json (held-out questions with answers and kinds), DIR/world.json (the world
config and answer distributions) and DIR/tokenizer/ (a byte-level BPE trained on the training texts).
The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse

from impvlm.data.defaults import EVAL_IMAGES, TRAIN_IMAGES


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--train-images",
        type=int,
        default=TRAIN_IMAGES,
        metavar="N",
        help=f"training images (default {TRAIN_IMAGES})",
    )
    parser.add_argument(
        "--eval-images",
        type=int,
        default=EVAL_IMAGES,
        metavar="N",
        help=f"held-out images (default {EVAL_IMAGES})",
    )
    parser.add_argument(
        "--image-size", type=int, default=64, metavar="PX", help="image side in pixels (default 64)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=1024,
        metavar="N",
        help="upper bound on the tokenizer vocabulary (default 1024)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from impvlm.data.synthetic import WorldConfig, generate_dataset
    from impvlm.tokenizer import build_corpus, train_tokenizer

    cfg = WorldConfig(image_size=args.image_size, seed=args.seed)
    paths = generate_dataset(
        args.out, args.train_images, args.eval_images, cfg, progress=not args.no_progress
    )
    tokenizer_dir = Path(args.out) / "tokenizer"
    tokenizer = train_tokenizer(build_corpus(paths.root), args.vocab_size, tokenizer_dir)
    counts = paths.counts
    print(
        f"wrote {counts['train_images']} train + {counts['eval_images']} eval images, "
        f"{counts['pretrain_records']} pretrain / {counts['instruct_records']} instruct / "
        f"{counts['eval_records']} eval records to {paths.root}"
    )
    print(f"tokenizer: {len(tokenizer)} tokens (<= {args.vocab_size}) -> {tokenizer_dir}")
    return 0
