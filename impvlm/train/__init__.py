"""Training: LLaVA-format data, stages, recipes, the Trainer loop, merging and held-out accuracy.

Python API::

    from impvlm.train import run_training, merge_checkpoint, exact_accuracy

    for name in ("tiny-warmup", "tiny-pretrain", "tiny-lora"):
        stage_dir = run_training(name, "runs/tiny", {"data.root": "work/synthetic"})
    merged = merge_checkpoint(stage_dir, "runs/tiny/merged")
    print(exact_accuracy(merged, "work/synthetic/eval.json", "work/synthetic"))

peft is imported only when a LoRA stage is built.
"""

from impvlm.train.evaluate import exact_accuracy
from impvlm.train.merge import merge_checkpoint
from impvlm.train.recipes import Recipe, load_recipe, recipe_names
from impvlm.train.run import run_training

__all__ = ["Recipe", "exact_accuracy", "load_recipe", "merge_checkpoint", "recipe_names", "run_training"]
