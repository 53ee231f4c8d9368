"""Fold stage outputs into one checkpoint (config.json + safetensors + tokenizer): the input of export.

STAGE is a stage output folder, or several applied in order:

- this project's LoRA stage output (its base is found through stage.json), or a non-LoRA stage output;
- upstream Imp stage outputs: a stage-1 folder with mm_projector.bin and a stage-2 LoRA folder
  (adapter_config.json, adapter_model.bin/.safetensors, non_lora_trainables.bin). Their base weights
  come from --language-model (Phi-2) and --vision-tower (SigLIP), or from a full --base checkpoint;
- an upstream full fine-tune whose tower is only named: --vision-tower gives it.

The tokenizer is the one the training code ran with: a Phi-2 tokenizer gets </s> as its eos token
(at the model's eos id, as Imp's training code adds it); without an <image> token the image goes
where the prompt says <image>, as upstream.

LoRA is folded into the language model (W += alpha / r * B @ A, lm_head included) and the projector
replaced. .bin files are read with torch.load(weights_only=True); no code from the folders runs.

Examples:

  imp merge runs/tiny/tiny-lora --out runs/tiny/merged
  imp merge imp-v1-3b-pretrain imp-v1-3b-lora --language-model phi-2 \\
      --vision-tower siglip-so400m-patch14-384 --out imp-v1-3b-merged
"""

from __future__ import annotations

import argparse

from impvlm.arguments import add_upstream_parts


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("stages", nargs="+", metavar="STAGE", help="stage output folders, applied in order")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the merged checkpoint")
    parser.add_argument(
        "--base", metavar="DIR", help="full checkpoint the first LoRA / projector stage applies to"
    )
    add_upstream_parts(parser)
    parser.add_argument(
        "--tokenizer", metavar="DIR", help="tokenizer folder (default: the first stage folder that has one)"
    )


def run(args: argparse.Namespace) -> int:
    from impvlm.train.merge import merge_checkpoint

    out = merge_checkpoint(
        list(args.stages),
        args.out,
        base=args.base,
        language_model=args.language_model,
        vision_tower=args.vision_tower,
        tokenizer=args.tokenizer,
    )
    print(f"merged checkpoint: {out}")
    return 0
