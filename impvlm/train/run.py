"""``run_training``: one stage of a recipe on transformers' ``Trainer``, setup -> build -> fit.

Folders (``out_dir`` is a run folder shared by the stages of a chain)::

    out_dir/<recipe>.work/     while training: checkpoints/checkpoint-N (committed ones hold COMMITTED),
                               recipe.yaml (resolved), run.json, loss.jsonl
    out_dir/<recipe>/          when done: a checkpoint (config.json + safetensors + tokenizer) or a LoRA
                               folder (adapter_config.json + adapter_model.safetensors + config.json +
                               tokenizer), plus recipe.yaml, run.json, loss.jsonl and stage.json (last)

``resume=True`` continues from the last committed checkpoint; a finished stage is not trained again.
Without it, a stage that has committed checkpoints or has finished is refused rather than deleted;
``overwrite=True`` discards them and trains the stage from the beginning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from impvlm.checkpoint import committed_folder, save_checkpoint
from impvlm.errors import ConfigError
from impvlm.files import prepare_out_dir
from impvlm.image_processing import ImageProcessor
from impvlm.templates import get_template
from impvlm.train.atomic import write_json_atomic, write_yaml_atomic
from impvlm.train.data import ConversationDataset, DataCollator, read_records
from impvlm.train.loss_log import LOSS_LOG, LossLog, mean_loss, read_loss_log, truncate_loss_log
from impvlm.train.recipes import Recipe, load_recipe
from impvlm.train.stages import Stage, get_stage_kind, unwrap
from impvlm.train.tokens import load_training_tokenizer
from impvlm.train.trainer import (
    REPORT_FILE,
    Device,
    ImpTrainer,
    check_device,
    committed_checkpoints,
    drop_uncommitted,
    gathered,
    pick_num_threads,
    resolve_attention,
    resolve_precision,
    run_metadata,
    training_arguments,
)
from impvlm.train.weights import STAGE_FILE, build_from_parts, copy_tensors, load_start_model, projector_state

log = logging.getLogger(__name__)


def run_training(
    recipe: str | Path | Recipe,
    out_dir: str | Path,
    overrides: dict[str, Any] | list[str] | None = None,
    resume: bool = False,
    callbacks: list[Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train one stage and return its output folder, ``out_dir/<recipe name>``.

    Args:
        recipe: a packaged recipe name (``imp train --list``), a YAML file or a :class:`Recipe`.
        out_dir: the run folder; stages of a chain share it (``model.after`` finds its base there).
        overrides: ``{"train.lr": 1e-4}`` or ``["train.lr=1e-4"]``.
        resume: continue from the last committed checkpoint (a finished stage is returned as is).
        callbacks: extra ``transformers.TrainerCallback`` objects.
        overwrite: discard the stage's checkpoints and finished output, if any, and start over.
    """
    if resume and overwrite:
        raise ConfigError("resume continues a stage and overwrite discards it: give one of them")
    run = StageRun(load_recipe(recipe, overrides), Path(out_dir), resume, overwrite)
    if run.finished():
        log.info("stage %s is already finished in %s", run.recipe.name, run.stage_dir)
        return run.stage_dir
    run.setup()
    run.build(callbacks or [])
    return run.fit()


class StageRun:
    """Holds one stage's state between :meth:`setup`, :meth:`build` and :meth:`fit`."""

    def __init__(self, recipe: Recipe, out_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
        self.recipe = recipe
        self.out_dir = out_dir
        self.resume = resume
        self.overwrite = overwrite
        self.stage_dir = out_dir / recipe.name
        self.work_dir = out_dir / f"{recipe.name}.work"
        self.checkpoints = self.work_dir / "checkpoints"
        self.device = Device.detect()
        self.trainer: ImpTrainer | None = None

    def finished(self) -> bool:
        return self.resume and (self.stage_dir / STAGE_FILE).is_file()

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Threads, seed, the distributed state, folders, the resolved recipe and run metadata; picks the
        checkpoint to resume from."""
        from transformers import TrainingArguments, set_seed

        t = self.recipe.train
        check_device(self.recipe, self.device)
        prepare_out_dir(self.out_dir)
        self._check_previous_run()
        if not self.device.cuda:
            torch.set_num_threads(pick_num_threads(t.num_threads))
            log.info("torch uses %d CPU thread(s)", torch.get_num_threads())
        set_seed(t.seed)
        # creating the arguments sets up the process group (torchrun / deepspeed launcher)
        self.args = TrainingArguments(**training_arguments(self.recipe, self.checkpoints, self.device))
        self.accumulation = t.accumulation(self.device.world_size)
        log.info(
            "%s: global batch %d = %d per device x %d accumulation x %d device(s)",
            self.recipe.name, t.global_batch_size, t.per_device_batch_size, self.accumulation,
            self.device.world_size,
        )  # fmt: skip
        self.resume_from: Path | None = None
        main = self.args.should_save  # the main process writes, the others wait at the barrier
        if self.resume:
            if main:
                for gone in drop_uncommitted(self.checkpoints) if self.checkpoints.is_dir() else []:
                    log.warning("removed unfinished checkpoint %s", gone)
            found = committed_checkpoints(self.checkpoints)
            self.resume_from = found[-1] if found else None
            if self.resume_from is None:
                log.info("--resume: no checkpoint of %s yet, starting from the beginning", self.recipe.name)
        if main:
            if self.overwrite and self.stage_dir.exists():
                shutil.rmtree(self.stage_dir)
            if self.resume_from is None and self.work_dir.exists():
                shutil.rmtree(self.work_dir)  # no committed checkpoint in it (else refused above)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            if self.resume_from is not None:
                truncate_loss_log(self.work_dir / LOSS_LOG, int(self.resume_from.name.split("-")[1]))
                log.info("resuming %s from %s", self.recipe.name, self.resume_from)
            write_yaml_atomic(self.work_dir / "recipe.yaml", self.recipe.to_dict())
            write_json_atomic(
                self.work_dir / "run.json", run_metadata(self.recipe, self.device, self.accumulation)
            )
        _barrier()

    def _check_previous_run(self) -> None:
        """Saved work of this stage in the run folder is continued (resume), discarded on request
        (overwrite), or refused with the two options named: never deleted silently."""
        if self.overwrite:
            return
        found = committed_checkpoints(self.checkpoints)
        if found and not self.resume:
            raise ConfigError(
                f"{self.checkpoints} holds committed checkpoints of {self.recipe.name} (last: {found[-1].name}): "
                "continue them with --resume, or discard them with --overwrite"
            )
        if (self.stage_dir / STAGE_FILE).is_file() and not self.resume:
            raise ConfigError(
                f"stage {self.recipe.name} has already finished in {self.stage_dir}: --resume keeps it, "
                "--overwrite trains it again"
            )
        if self.stage_dir.exists() and not found and not (self.stage_dir / STAGE_FILE).is_file():
            raise ConfigError(
                f"{self.stage_dir} exists and is not a finished stage of {self.recipe.name}: move it away "
                "or pass --overwrite"
            )

    # ------------------------------------------------------------------ build
    def build(self, callbacks: list[Any]) -> None:
        """Tokenizer, model, stage (freezing, LoRA), dataset, collator and the Trainer."""
        recipe = self.recipe
        model, tokenizer, self.base = self._starting_model()
        precision = resolve_precision(recipe.train.precision, self.device)
        attention = resolve_attention(recipe.model.attn_implementation, self.device, precision)
        if model.config._attn_implementation != attention:
            model.set_attn_implementation(attention)
        model.config.use_cache = False
        self.stage = self._stage(model)
        model = self.stage.prepare(model)
        self.trainable = self.stage.log_report(model)
        dataset = self._dataset(tokenizer, unwrap(model).config)
        self.dataset, self.tokenizer = dataset, tokenizer
        self.trainer = ImpTrainer(
            model=model,
            args=self.args,
            train_dataset=dataset,
            data_collator=DataCollator(unwrap(model).config.pad_token_id, unwrap(model).config.image_size),
            stage=self.stage,
            lengths=dataset.modality_lengths if recipe.data.group_by_modality_length else None,
            callbacks=[LossLog(self.work_dir / LOSS_LOG), *callbacks],
        )
        if self.resume_from is not None:
            report = self.resume_from / REPORT_FILE
            if report.is_file():
                for name, ids in json.loads(report.read_text()).items():
                    getattr(self.trainer.data_report, name).extend(ids)

    def _starting_model(self) -> tuple[Any, Any, Path | None]:
        spec = self.recipe.model
        base = Path(spec.base) if spec.base else (self.out_dir / spec.after if spec.after else None)
        if base is not None:
            if spec.after and not (base / STAGE_FILE).is_file():
                raise ConfigError(
                    f"recipe {self.recipe.name} starts after {spec.after}, which has not finished in {self.out_dir}"
                )
            model, tokenizer_dir = load_start_model(base)
            tokenizer = load_training_tokenizer(spec.tokenizer or tokenizer_dir, model.config)
            if spec.projector:
                copy_tensors(model, projector_state(spec.projector, model), Path(spec.projector))
            return model, tokenizer, base
        from impvlm.presets import build_config
        from impvlm.tokenizer import load_tokenizer

        tokenizer_dir = spec.tokenizer
        if tokenizer_dir is None:
            raise ConfigError(f"recipe {self.recipe.name}: a fresh start from a preset needs model.tokenizer")
        raw_tokenizer = load_tokenizer(tokenizer_dir)
        overrides: dict[str, Any] = {}
        if not spec.language_model:  # random LM: the vocabulary is the tokenizer's
            overrides["vocab_size"] = len(raw_tokenizer)
        if spec.init_std is not None:  # what starts random (HF's _init_weights) draws with this std
            overrides["initializer_range"] = spec.init_std
        config = build_config(spec.preset, tokenizer=raw_tokenizer, **overrides)
        if spec.vision_tower and not Path(spec.vision_tower).is_dir():
            raise ConfigError(
                f"recipe {self.recipe.name}: model.vision_tower {spec.vision_tower} not found; for a synthetic "
                "world train it with `imp train-tower --data DIR`, or set model.vision_tower=null "
                "model.train_vision=true (a random tower trained end to end)"
            )
        torch.manual_seed(self.recipe.train.seed)
        model = build_from_parts(config, spec.language_model, spec.vision_tower, spec.projector)
        return model, load_training_tokenizer(tokenizer_dir, config), None

    def _stage(self, model: Any) -> Stage:
        recipe, kind = self.recipe, get_stage_kind(self.recipe.stage)
        vision = kind.vision
        if recipe.model.train_vision is not None:
            vision = "full" if recipe.model.train_vision else "frozen"
        template = recipe.data.template or kind.template or model.config.template
        get_template(template)
        t = recipe.train
        return Stage(
            kind=kind,
            vision=vision,
            projector=kind.projector,
            language_model=kind.language_model,
            template=template,
            lr=t.lr,
            projector_lr=t.projector_lr if t.projector_lr is not None else t.lr,
            vision_lr=t.vision_lr,
            weight_decay=t.weight_decay,
            lora=recipe.lora if kind.language_model == "lora" else None,
            data_paths=tuple(str(self._data_path(p)) for p in recipe.data.paths),
            image_root=str(
                self._data_path(recipe.data.image_root)
                if recipe.data.image_root
                else self._data_path(recipe.data.paths[0]).parent
            ),
        )

    def _dataset(self, tokenizer: Any, config: Any) -> ConversationDataset:
        data = self.recipe.data
        records = [r for path in self.stage.data_paths for r in read_records(path)]
        if data.limit:
            records = records[: data.limit]
        max_length = data.max_length or int(getattr(config, "tokenizer_model_max_length", 0) or 0)
        max_length = max_length or config.max_position_embeddings
        dataset = ConversationDataset(
            records,
            self.stage.image_root,
            tokenizer,
            get_template(self.stage.template),
            replace(ImageProcessor.from_config(config), max_pixels=data.max_image_pixels),
            config.num_image_tokens,
            max_length,
            on_error=data.on_error,
            source=" + ".join(self.stage.data_paths),
        )
        n_images = sum(dataset.has_image(i) for i in range(len(dataset)))
        log.info(
            "data %s: %d records (%d with an image, %d text-only), template %s, max length %d",
            " + ".join(self.stage.data_paths), len(dataset), n_images, len(dataset) - n_images, self.stage.template, max_length,
        )  # fmt: skip
        return dataset

    def _data_path(self, value: str) -> Path:
        """Relative data paths are read against ``data.root`` when the recipe sets one."""
        path = Path(value)
        root = self.recipe.data.root
        return Path(root) / path if root and not path.is_absolute() else path

    # ------------------------------------------------------------------ fit
    def fit(self) -> Path:
        """Train, write the stage output atomically, then its metadata (``stage.json`` last)."""
        assert self.trainer is not None
        started = time.perf_counter()
        result = self.trainer.train(
            resume_from_checkpoint=str(self.resume_from) if self.resume_from else None
        )
        seconds = time.perf_counter() - started
        report = _gather_report(self.trainer)
        zero3 = _is_zero3(self.trainer)
        model = self.trainer.model
        with gathered(model, zero3):
            if self.trainer.args.should_save:
                self._write_model(model)
        if self.trainer.args.should_save:
            self._write_metadata(result, seconds, report)
            shutil.rmtree(self.work_dir, ignore_errors=True)
        _barrier()
        return self.stage_dir

    def _write_model(self, model: Any) -> None:
        core = unwrap(model)
        if not self.stage.uses_lora:
            save_checkpoint(core, self.tokenizer, self.stage_dir)
            return
        with committed_folder(self.stage_dir) as tmp:
            model.save_pretrained(str(tmp), save_embedding_layers=False, safe_serialization=True)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model card
            core.config.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))

    def _write_metadata(self, result: Any, seconds: float, report: dict[str, list[str]]) -> None:
        for name in ("recipe.yaml", "run.json", LOSS_LOG):
            if (self.work_dir / name).is_file():
                shutil.copy2(self.work_dir / name, self.stage_dir / name)
        losses = read_loss_log(self.stage_dir / LOSS_LOG)
        base = self.base.resolve() if self.base else None
        info = {
            "recipe": self.recipe.name,
            "stage": self.stage.name,
            "format": "lora" if self.stage.uses_lora else "checkpoint",
            "base": str(base) if base else None,
            "base_relative": _relative(base, self.stage_dir) if base else None,
            "template": self.stage.template,
            "trainable": self.trainable,
            "data": {
                "paths": list(self.stage.data_paths),
                "records": len(self.dataset),
                "malformed_skipped": self.dataset.malformed,
                "mismatch": {"count": len(report["mismatch"]), "ids": report["mismatch"][:1000]},
                "truncated": {"count": len(report["truncated"]), "ids": report["truncated"][:1000]},
                "image_errors_skipped": {"count": len(report["skipped"]), "ids": report["skipped"][:1000]},
            },
            "steps": result.global_step,
            "train_loss": _train_loss(losses, result, resumed=self.resume_from is not None),
            "final_loss": losses[-1]["loss"] if losses else None,
            "seconds": round(seconds, 2),
            "resumed_from": str(self.resume_from) if self.resume_from else None,
        }
        if report["mismatch"]:
            log.warning(
                "%d records did not tokenize consistently and were masked (not trained on): %s",
                len(report["mismatch"]), ", ".join(report["mismatch"][:20]),
            )  # fmt: skip
        write_json_atomic(self.stage_dir / STAGE_FILE, info)
        log.info("stage %s done in %.1fs -> %s", self.recipe.name, seconds, self.stage_dir)


def _train_loss(losses: list[dict[str, Any]], result: Any, resumed: bool) -> float | None:
    """The whole run's mean loss, across resumes, from the loss log. (The Trainer's own figure only
    covers the steps of the last process, divided by every step.) Nothing logged: the Trainer's
    figure when it saw the whole run."""
    if losses:
        return mean_loss(losses)
    return None if resumed else result.training_loss


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _gather_report(trainer: ImpTrainer) -> dict[str, list[str]]:
    report = asdict(trainer.data_report)
    if trainer.args.world_size > 1:
        from accelerate.utils import gather_object

        report = {k: sorted(set(gather_object(v))) for k, v in report.items()}
    return {k: sorted(set(v)) for k, v in report.items()}


def _is_zero3(trainer: ImpTrainer) -> bool:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
