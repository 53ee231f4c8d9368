"""Training: LLaVA-format data, stages, recipes, the Trainer loop, merging and held-out accuracy.

Python API::

    from impvlm.train import run_training, merge_checkpoint, exact_accuracy

    for name in ("tiny-warmup", "tiny-pretrain", "tiny-lora"):
        stage_dir = run_training(name, "runs/tiny", {"data.root": "work/synthetic"})
    merged = merge_checkpoint(stage_dir, "runs/tiny/merged")
    print(exact_accuracy(merged, "work/synthetic/eval.json", "work/synthetic"))

peft is imported only when a LoRA stage is built.
"""

from impvlm.lazy import lazy_getattr

#: Public names and their modules, imported on first use: the ``imp`` command builds every
#: subcommand's options from light modules (``impvlm.train.tower``'s settings) without loading torch.
_EXPORTS = {
    "Recipe": "impvlm.train.recipes",
    "exact_accuracy": "impvlm.train.evaluate",
    "load_recipe": "impvlm.train.recipes",
    "merge_checkpoint": "impvlm.train.merge",
    "recipe_names": "impvlm.train.recipes",
    "run_training": "impvlm.train.run",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = ["Recipe", "exact_accuracy", "load_recipe", "merge_checkpoint", "recipe_names", "run_training"]
