"""Pretrain the tiny vision tower on the synthetic world (the offline stand-in for a pretrained SigLIP).

Nothing pretrained exists offline, and a tiny tower trained only through the LM's answers learns to see
slowly. This trains the preset's tower directly: every patch token is pulled onto a code of the object
under that patch (one-hot slot, colour, shape, and the word of a sign scene, every other feature 0), so
each token says what it shows and where, and nothing about the other objects, on freshly rendered
scenes of the world in DATA/world.json (not the dataset's own images). About 3 minutes on 2 CPU cores.
The tiny-warmup recipe loads the result from DATA/tower (its model.vision_tower) and keeps it frozen.

Example:

  imp synth --out work/synthetic
  imp train-tower --data work/synthetic          # writes work/synthetic/tower
  imp train --recipe tiny-warmup --recipe tiny-pretrain --recipe tiny-lora --out runs/tiny \\
      data.root=work/synthetic
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from impvlm.train.tower import TowerTraining

    d = TowerTraining()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--data", required=True, metavar="DIR", help="a synthetic world folder (imp synth --out)"
    )
    parser.add_argument("--out", metavar="DIR", help="tower folder (default DATA/tower)")
    parser.add_argument(
        "--preset", default=d.preset, help=f"model preset whose tower is trained (default {d.preset})"
    )
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    parser.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"scenes per step (default {d.batch_size})"
    )
    parser.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the weights and scenes (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from impvlm.train.tower import TowerTraining, pretrain_tower

    settings = TowerTraining(
        preset=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    out = Path(args.out) if args.out else Path(args.data) / "tower"
    info = pretrain_tower(args.data, out, settings, progress=not args.no_progress)
    per_head = ", ".join(f"{k} {100 * v:.0f}%" for k, v in info["held_out_accuracy"].items())
    print(
        f"tower -> {out}: held-out mean {100 * info['mean_accuracy']:.1f}% in {info['seconds']} s ({per_head})"
    )
    return 0
