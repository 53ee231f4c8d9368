"""The pieces around transformers' ``Trainer``: device-dependent choices (precision, attention,
DeepSpeed, CPU threads), the ``TrainingArguments`` of a recipe, :class:`ImpTrainer` (the stage's optimizer
groups, modality-grouped batches, record reports, committed checkpoints) and the loss it shows while
training. The loss log file is :mod:`impvlm.train.loss_log`."""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from impvlm.errors import CheckpointError, ConfigError, ImpError
from impvlm.templates import IGNORE_INDEX
from impvlm.train.atomic import write_json_atomic
from impvlm.train.data import BatchReport, ModalityLengthGroupedSampler
from impvlm.train.recipes import DEEPSPEED_CONFIGS, Recipe
from impvlm.train.stages import Stage, unwrap

log = logging.getLogger(__name__)

COMMIT_MARKER = "COMMITTED"
REPORT_FILE = "data_report.json"


# ---------------------------------------------------------------------------- device-dependent choices


@dataclass(frozen=True)
class Device:
    """What the machine offers; :meth:`detect` reads it, tests build one by hand."""

    cuda: bool
    bf16: bool
    flash_attn: bool
    world_size: int = 1

    @classmethod
    def detect(cls) -> Device:
        cuda = torch.cuda.is_available()
        return cls(
            cuda=cuda,
            bf16=cuda and torch.cuda.is_bf16_supported(),
            flash_attn=cuda and importlib.util.find_spec("flash_attn") is not None,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
        )


def resolve_precision(requested: str, device: Device) -> str:
    """``auto``: bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPU."""
    if requested == "auto":
        return ("bf16" if device.bf16 else "fp16") if device.cuda else "fp32"
    if requested == "fp16" and not device.cuda:
        raise ConfigError("fp16 training needs a CUDA GPU; use precision fp32 or bf16 on CPU")
    if requested == "bf16" and device.cuda and not device.bf16:
        raise ConfigError("this GPU has no bf16 support; use precision fp16")
    return requested


def resolve_attention(requested: str, device: Device, precision: str) -> str:
    """``auto``: flash-attention 2 when installed on CUDA with half precision, SDPA otherwise."""
    if requested == "auto":
        return "flash_attention_2" if device.flash_attn and precision in ("fp16", "bf16") else "sdpa"
    if requested == "flash_attention_2" and not device.flash_attn:
        raise ConfigError("flash_attention_2 needs CUDA and the flash-attn package (pip install flash-attn)")
    return requested


def deepspeed_config(name: str | None) -> str | None:
    """Path of a shipped DeepSpeed config (``zero2``, ``zero3``, ``zero3_offload``) or of a JSON file."""
    if not name:
        return None
    if name in DEEPSPEED_CONFIGS:
        return str(resources.files("impvlm") / "deepspeed" / f"{name}.json")
    if not Path(name).is_file():
        raise ConfigError(f"DeepSpeed config not found: {name}")
    return name


def check_device(recipe: Recipe, device: Device) -> None:
    """Options this machine cannot run fail here, before any model is built."""
    if recipe.train.deepspeed:
        if not device.cuda:
            raise ConfigError("DeepSpeed needs CUDA GPUs; set train.deepspeed=null to train on CPU")
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                "train.deepspeed is set but deepspeed is not installed (pip install 'impvlm[gpu]')"
            )
    precision = resolve_precision(recipe.train.precision, device)
    resolve_attention(recipe.model.attn_implementation, device, precision)


def pick_num_threads(setting: int | str | None) -> int:
    """Threads for torch on CPU. ``auto`` times a matmul the size of a tiny model's layer with 1 thread and
    with every core and keeps the faster: on a shared machine more threads than free cores is several
    times slower than one."""
    if setting is None:
        return torch.get_num_threads()
    if setting != "auto":
        return int(setting)
    cores = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if cores == 1:
        return 1
    x, w = torch.randn(512, 256), torch.randn(256, 256) / 16

    def probe(threads: int, give_up: float) -> float:
        """Median time of 20 small ops (each waits for every thread), stopping early when hopeless."""
        torch.set_num_threads(threads)
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            h = x
            for _ in range(20):
                h = torch.nn.functional.layer_norm(torch.nn.functional.gelu(h @ w), (256,))
                if time.perf_counter() - started > give_up:
                    return float("inf")
            timings.append(time.perf_counter() - started)
        return sorted(timings)[1]

    single = probe(1, float("inf"))
    multi = probe(cores, single)
    best = cores if multi * 1.25 < single else 1  # more threads must be clearly faster
    return best


def training_arguments(recipe: Recipe, output_dir: Path, device: Device) -> dict[str, Any]:
    """Keyword arguments of ``transformers.TrainingArguments`` for this recipe on this device."""
    t = recipe.train
    precision = resolve_precision(t.precision, device)
    accumulation = t.accumulation(device.world_size)
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": accumulation,
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps if t.max_steps is not None else -1,
        "learning_rate": t.lr,
        "weight_decay": t.weight_decay,
        "adam_beta2": t.adam_beta2,
        "warmup_ratio": t.warmup_ratio,
        "lr_scheduler_type": t.scheduler,
        "max_grad_norm": t.max_grad_norm,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": t.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if t.gradient_checkpointing else None,
        "deepspeed": deepspeed_config(t.deepspeed),
        "seed": t.seed,
        "data_seed": t.seed,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "dataloader_num_workers": recipe.data.num_workers,
        "dataloader_pin_memory": device.cuda,
        "remove_unused_columns": False,  # the collator's "report" rides along to compute_loss
        "report_to": "none",
        "disable_tqdm": not t.progress,
        "use_cpu": not device.cuda,
        "ddp_find_unused_parameters": False,
    }


# ---------------------------------------------------------------------------- the Trainer


class ImpTrainer(Trainer):
    """``Trainer`` with the stage's optimizer groups, modality-grouped batches, record reports and
    atomic (committed) checkpoints."""

    def __init__(self, *args: Any, stage: Stage, lengths: list[int] | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.lengths = lengths
        self.data_report = BatchReport()
        self._deferring_rotation = False
        # the loss goes to the bar's postfix (or to the log without a bar), not a dict printed per log step
        if self.args.disable_tqdm:
            self.remove_callback(PrinterCallback)
            self.add_callback(LossLines())
        else:
            self.remove_callback(ProgressCallback)
            self.add_callback(LossProgress())

    # optimizer: the four groups of the stage, AdamW with the TrainingArguments' betas / eps
    def create_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(self.stage.param_groups(self.model), **kwargs)
        return self.optimizer

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.lengths is None:
            return super()._get_train_sampler(train_dataset)
        return ModalityLengthGroupedSampler(
            self.lengths, self.args.per_device_train_batch_size, self.args.world_size, self.args.seed
        )

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        report = inputs.pop("report", None)
        if report is not None:
            for name in ("mismatch", "truncated", "skipped"):
                getattr(self.data_report, name).extend(getattr(report, name))
        pixel_values = inputs.get("pixel_values")
        text_only = pixel_values is not None and pixel_values.shape[0] == 0
        if text_only:
            inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
        has_targets = bool((inputs["labels"] != IGNORE_INDEX).any())
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if not has_targets:  # every label masked (mismatch / truncation): no NaN, no update
            loss = outputs.logits.float().sum() * 0.0
        if text_only:
            # Run the tower and projector on a blank image so every rank uses the same parameters
            # each step (DDP's gradient buckets, ZeRO-3's parameter gathers); it adds exactly 0.
            core = unwrap(model)
            size = core.config.image_size
            blank = torch.zeros(1, 3, size, size, device=inputs["input_ids"].device)
            loss = loss + core.encode_images(blank).float().sum() * 0.0
        return (loss, outputs) if return_outputs else loss

    # checkpoints are committed by a marker written after everything else; only committed ones resume
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        self._deferring_rotation = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._deferring_rotation = False
        run_dir = Path(self._get_output_dir(trial=trial))
        folder = run_dir / f"checkpoint-{self.state.global_step}"
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_json_atomic(folder / REPORT_FILE, asdict(self.data_report))
            write_json_atomic(folder / COMMIT_MARKER, {"step": self.state.global_step, "time": time.time()})
            self._rotate_checkpoints(use_mtime=False, output_dir=str(run_dir))

    def _rotate_checkpoints(self, use_mtime: bool = False, output_dir: str | None = None) -> None:
        if not self._deferring_rotation:
            super()._rotate_checkpoints(use_mtime=False, output_dir=output_dir)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """transformers' restore of the saved random states, with a damaged or foreign file
        (``rng_state*.pth`` that is not the plain tensor file a checkpoint holds) named in one line."""
        try:
            super()._load_rng_state(checkpoint)
        except ImpError:
            raise
        except Exception as exc:  # whatever the file holds, it is the file's fault
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{checkpoint}: its random-state file (rng_state*.pth) cannot be restored: {first}"
            ) from None


class LossProgress(ProgressCallback):
    """transformers' progress bar, with the last logged loss and lr as its postfix."""

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(_loss_fields(logs), refresh=False)


class LossLines(TrainerCallback):
    """Without a progress bar: one log line per logged step."""

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and logs and "loss" in logs:
            fields = ", ".join(f"{k} {v}" for k, v in _loss_fields(logs).items())
            log.info("step %d/%d: %s", state.global_step, state.max_steps, fields)


def _loss_fields(logs: dict[str, Any]) -> dict[str, str]:
    fields = {"loss": f"{logs['loss']:.4f}"}
    if logs.get("learning_rate") is not None:
        fields["lr"] = f"{logs['learning_rate']:.2e}"
    return fields


def committed_checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-N`` folders holding the commit marker, oldest first."""
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.glob("checkpoint-*") if (p / COMMIT_MARKER).is_file() and p.name[11:].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[11:]))


def drop_uncommitted(folder: Path) -> list[Path]:
    """Delete checkpoint folders a crash left half-written; returns them."""
    gone = [p for p in folder.glob("checkpoint-*") if p.is_dir() and not (p / COMMIT_MARKER).is_file()]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


@contextmanager
def gathered(model: torch.nn.Module, zero3: bool):
    """Under DeepSpeed ZeRO-3 the parameters are partitioned: gather them to write the stage output."""
    if not zero3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def run_metadata(recipe: Recipe, device: Device, accumulation: int) -> dict[str, Any]:
    import accelerate
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    versions.update({"transformers": transformers.__version__, "accelerate": accelerate.__version__})
    if importlib.util.find_spec("peft") is not None:
        import peft

        versions["peft"] = peft.__version__
    from impvlm import __version__

    versions["impvlm"] = __version__
    return {
        "recipe": recipe.name,
        "stage": recipe.stage,
        "command": sys.argv,
        "host": platform.node(),
        "device": asdict(device),
        "torch_threads": torch.get_num_threads(),
        "global_batch_size": recipe.train.global_batch_size,
        "per_device_batch_size": recipe.train.per_device_batch_size,
        "gradient_accumulation_steps": accumulation,
        "versions": versions,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
