"""List the model presets (published Imp / LLaVA-Phi shapes and the tiny offline ones).

With --build NAME, build the preset on the meta device (no memory) and print its parameter count
per module, to check a preset before training or exporting it.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--build", metavar="NAME", help="build this preset on the meta device and report it")


def run(args: argparse.Namespace) -> int:
    import torch

    from impvlm import ImpForCausalLM
    from impvlm.presets import PRESETS, build_config

    if not args.build:
        width = max(map(len, PRESETS))
        for name, preset in PRESETS.items():
            print(f"{name:<{width}}  {preset.description}")
        return 0
    config = build_config(args.build)
    with torch.device("meta"):
        model = ImpForCausalLM(config)
    groups = {
        "language model": sum(
            p.numel() for n, p in model.named_parameters() if n.startswith(("model.", "lm_head"))
        ),
        "vision tower": sum(p.numel() for p in model.vision_tower.parameters()),
        "projector": sum(p.numel() for p in model.mm_projector.parameters()),
    }
    print(f"{args.build}: {config.num_image_tokens} image tokens, template {config.template}")
    for name, count in groups.items():
        print(f"  {name:<15} {count / 1e6:10.2f} M parameters")
    return 0
