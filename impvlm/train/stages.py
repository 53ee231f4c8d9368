"""Training stages: what is frozen, what is LoRA-adapted, the learning rates, the data and template.

A :class:`Stage` is built from a recipe and owns every decision about the model's parameters:
:meth:`Stage.prepare` freezes modules and wraps the language model with LoRA (peft), :meth:`param_groups`
builds the optimizer groups and :meth:`report` counts trainable parameters per module (logged by the
trainer at the start of every stage).

==========  ============  =========  ==================================  ==========================
stage       vision tower  projector  language model                      template
==========  ============  =========  ==================================  ==========================
warmup      trained       trained    trained                             the model's (tiny, offline)
pretrain    frozen        trained    frozen                              ``plain``
lora        frozen        trained    LoRA on every Linear + ``lm_head``  the model's
full        frozen [1]_   trained    trained                             the model's
custom      frozen        trained    LoRA, from a merged checkpoint      the model's
==========  ============  =========  ==================================  ==========================

.. [1] LLaVA-Phi trains its tower in stage 2 (``model.train_vision: true`` in its recipe).

``warmup`` exists because nothing pretrained is available offline: the tiny towers must learn to see
before the upstream-style projector stage makes sense.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from impvlm.errors import ConfigError

log = logging.getLogger(__name__)

Mode = Literal["frozen", "full", "lora"]
MODULES = ("vision_tower", "mm_projector", "language_model")


@dataclass(frozen=True)
class StageKind:
    """What a kind of stage trains by default."""

    name: str
    vision: Mode
    projector: Mode
    language_model: Mode
    template: str | None  # None: the model's own conversation template
    needs_merged_base: bool
    description: str


STAGE_KINDS: dict[str, StageKind] = {
    k.name: k
    for k in [
        StageKind(
            "warmup", "full", "full", "full", None, False,
            "offline tiny models only: projector + LM (+ the tower unless model.train_vision=false) on QA + captions",
        ),
        StageKind("pretrain", "frozen", "full", "frozen", "plain", False, "stage 1: the projector alone"),
        StageKind(
            "lora", "frozen", "full", "lora", None, False,
            "stage 2: LoRA on every LM Linear (lm_head included) + the projector",
        ),
        StageKind("full", "frozen", "full", "full", None, False, "stage 2: LM + projector fine-tuned"),
        StageKind(
            "custom", "frozen", "full", "lora", None, True,
            "stage 2 LoRA on custom data, starting from a merged checkpoint",
        ),
    ]
}  # fmt: skip


def get_stage_kind(name: str) -> StageKind:
    try:
        return STAGE_KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}; known: {', '.join(STAGE_KINDS)}") from None


@dataclass(frozen=True)
class LoraSpec:
    """LoRA hyper-parameters (Imp v1: r 128, alpha 256, dropout 0.05)."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"bad LoRA settings r={self.r} alpha={self.alpha} dropout={self.dropout}")


@dataclass(frozen=True)
class Stage:
    """One training stage, resolved: modes per module, learning rates and the data it reads.

    Args:
        kind: the stage kind (see :data:`STAGE_KINDS`).
        vision / projector / language_model: ``frozen``, ``full`` or (LM only) ``lora``.
        template: conversation template used to build the training text.
        lr: learning rate of everything trained but the projector; ``projector_lr`` the projector's;
            ``vision_lr`` (optional) the tower's when it is trained (otherwise it uses ``lr``).
        weight_decay: applied to weights, not to biases and LayerNorm parameters.
        lora: LoRA settings when the language model is LoRA-adapted.
        data_paths / image_root: the LLaVA JSON file(s) and the folder their images are relative to.
    """

    kind: StageKind
    vision: Mode
    projector: Mode
    language_model: Mode
    template: str
    lr: float
    projector_lr: float
    weight_decay: float
    lora: LoraSpec | None
    data_paths: tuple[str, ...]
    image_root: str
    vision_lr: float | None = None

    def __post_init__(self) -> None:
        if self.vision == "lora" or self.projector == "lora":
            raise ConfigError("LoRA is only supported on the language model")
        if self.language_model == "lora" and self.lora is None:
            raise ConfigError(f"stage {self.kind.name!r} adapts the LM with LoRA but has no LoRA settings")
        if all(m == "frozen" for m in (self.vision, self.projector, self.language_model)):
            raise ConfigError(f"stage {self.kind.name!r} trains nothing")
        if min(self.lr, self.projector_lr, self.vision_lr or self.lr) <= 0:
            raise ConfigError(
                f"learning rates must be positive (lr {self.lr}, projector_lr {self.projector_lr}, "
                f"vision_lr {self.vision_lr})"
            )

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def uses_lora(self) -> bool:
        return self.language_model == "lora"

    def modes(self) -> dict[str, Mode]:
        return {
            "vision_tower": self.vision,
            "mm_projector": self.projector,
            "language_model": self.language_model,
        }

    # ------------------------------------------------------------------ model surgery
    def prepare(self, model: nn.Module) -> nn.Module:
        """Freeze what this stage does not train and add LoRA; returns the model to train.

        With LoRA the result is a peft ``PeftModel`` whose base is ``model``; the projector is a
        peft ``modules_to_save`` module so that peft checkpoints carry it.
        """
        model.requires_grad_(False)
        for name, module in module_groups(model).items():
            if self.modes()[name] == "full":
                for m in module:
                    m.requires_grad_(True)
        if not self.uses_lora:
            return model
        from peft import LoraConfig, get_peft_model

        assert self.lora is not None
        config = LoraConfig(
            r=self.lora.r,
            lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout,
            target_modules=lora_target_pattern(model),
            modules_to_save=["mm_projector"] if self.projector == "full" else None,
            bias="none",
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
        if self.vision == "full":  # peft froze everything else; a trained tower stays trained
            model.vision_tower.requires_grad_(True)
        return peft_model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer groups (decay, no decay) x (projector, the rest): Imp's four; with ``vision_lr`` the
        tower gets its own pair. Weight decay skips biases, LayerNorm and embedding parameters; empty
        groups are dropped."""
        core = unwrap(model)
        part = {id(p): "projector" for p in core.mm_projector.parameters()}
        if self.vision_lr is not None:
            part.update({id(p): "vision" for p in core.vision_tower.parameters()})
        lrs = {"projector": self.projector_lr, "vision": self.vision_lr, "rest": self.lr}
        no_decay = {
            id(p)
            for m in core.modules()
            if isinstance(m, nn.LayerNorm | nn.Embedding)
            for p in m.parameters(recurse=False)
        }
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                decay = id(p) not in no_decay and not name.endswith("bias")
                groups.setdefault((part.get(id(p), "rest"), decay), []).append(p)
        return [
            {
                "params": params,
                "lr": lrs[which],
                "weight_decay": self.weight_decay if decay else 0.0,
                "name": f"{which}/{'decay' if decay else 'no_decay'}",
            }
            for (which, decay), params in sorted(groups.items())
        ]

    def report(self, model: nn.Module) -> dict[str, dict[str, Any]]:
        """``{module: {"mode", "trainable", "frozen"}}`` parameter counts for the tower, projector and LM
        (LoRA matrices count as trainable parameters of the LM)."""
        out: dict[str, dict[str, Any]] = {}
        for name, modules in module_groups(model).items():
            params = list({id(p): p for m in modules for p in m.parameters()}.values())
            mode = self.modes()[name]
            out[name] = {
                "mode": f"lora r={self.lora.r}" if mode == "lora" and self.lora else mode,
                "trainable": sum(p.numel() for p in params if p.requires_grad),
                "frozen": sum(p.numel() for p in params if not p.requires_grad),
            }
        return out

    def log_report(self, model: nn.Module) -> dict[str, dict[str, Any]]:
        rows = self.report(model)
        log.info(
            "stage %s: template %s, lr %g, projector lr %g, vision lr %s, weight decay %g",
            self.name, self.template, self.lr, self.projector_lr, self.vision_lr or "=lr", self.weight_decay,
        )  # fmt: skip
        for name, row in rows.items():
            log.info(
                "  %-14s %-11s %13s trainable %13s frozen",
                name, row["mode"], f"{row['trainable']:,}", f"{row['frozen']:,}",
            )  # fmt: skip
        return rows


def module_groups(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The three parts of an (unwrapped) ImpForCausalLM: tower, projector, and the Phi LM."""
    core = unwrap(model)
    return {
        "vision_tower": [core.vision_tower],
        "mm_projector": [core.mm_projector],
        "language_model": [core.model, core.lm_head],
    }


def lora_target_pattern(model: nn.Module) -> str:
    """A regex matching exactly the ``nn.Linear`` modules of the language model (``lm_head`` included),
    by their full names: the tower's and projector's Linears are never adapted."""
    core = unwrap(model)
    names = [f"model.{n}" for n, m in core.model.named_modules() if isinstance(m, nn.Linear)]
    if isinstance(core.lm_head, nn.Linear):
        names.append("lm_head")
    if not names:
        raise ConfigError("the language model has no Linear layers to adapt")
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def unwrap(model: nn.Module) -> nn.Module:
    """The ImpForCausalLM inside a peft / DDP / DeepSpeed wrapper."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model
