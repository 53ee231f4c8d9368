"""Recipes: a training stage's whole configuration as data (``impvlm/recipes/*.yaml``).

A recipe names its stage kind, where the model comes from, the data, LoRA settings and the optimisation
hyper-parameters. ``load_recipe(name_or_path, overrides)`` reads one (a packaged name or a YAML file),
applies ``key=value`` overrides (dotted paths, values parsed as YAML: ``train.lr=1e-4``,
``data.on_error=skip``, ``train.deepspeed=null``) and validates it into typed dataclasses.

The global batch is part of the recipe; the per-device batch and the number of devices decide the
gradient accumulation (:meth:`TrainSpec.accumulation`), so a recipe keeps its global batch on any
number of GPUs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from impvlm.errors import ConfigError
from impvlm.image_processing import DEFAULT_MAX_IMAGE_PIXELS
from impvlm.train.stages import LoraSpec, get_stage_kind

Precision = Literal["auto", "fp32", "fp16", "bf16"]
DEEPSPEED_CONFIGS = ("zero2", "zero3", "zero3_offload")
ATTENTION = ("auto", "flash_attention_2", "sdpa", "eager")


@dataclass(frozen=True)
class ModelSpec:
    """Where the starting weights come from.

    ``base`` (or ``after``: the output of another recipe in the same run folder) is a checkpoint folder
    or a stage output to continue from. Without it the model is built from ``preset`` with the
    tokenizer in ``tokenizer``, optionally filling the LM from a Phi folder (``language_model``), the tower
    from a SigLIP/CLIP folder (``vision_tower``) and the projector from ``projector`` (an
    ``mm_projector.bin`` or a stage-1 output); what is not given starts from random init, with standard
    deviation ``init_std`` (transformers' ``initializer_range``; default: the preset's 0.02).
    """

    preset: str | None = None
    tokenizer: str | None = None
    base: str | None = None
    after: str | None = None
    language_model: str | None = None
    vision_tower: str | None = None
    projector: str | None = None
    train_vision: bool | None = None  # None: the stage's default
    init_std: float | None = None  # std of the random init (fresh start only); None: the preset's
    attn_implementation: str = "auto"


@dataclass(frozen=True)
class DataSpec:
    """The training data: a LLaVA JSON file and its image folder.

    Relative ``path`` and ``image_root`` are read against ``root`` when it is set, else against the
    working folder. Other recipe strings can refer to it as ``${data.root}`` (the synthetic world keeps
    its tokenizer there: ``model.tokenizer: ${data.root}/tokenizer``).
    """

    root: str | None = None
    path: str | list[str] = ""  # one LLaVA JSON file, or several read as one dataset
    image_root: str | None = None  # default: the JSON file's folder
    template: str | None = None  # default: the stage's (pretrain: plain) or the model's
    max_length: int | None = None  # default: the model's tokenizer_model_max_length
    on_error: Literal["raise", "skip"] = "raise"
    group_by_modality_length: bool = False
    num_workers: int = 0
    limit: int | None = None  # use only the first N records (smoke tests)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are refused (or skipped) undecoded

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation. ``global_batch_size`` = per-device x accumulation x devices."""

    global_batch_size: int = 128
    per_device_batch_size: int = 4
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 2e-4
    projector_lr: float | None = None  # default: lr
    vision_lr: float | None = None  # a trained tower's own lr (default: lr)
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # zero2 | zero3 | zero3_offload | a JSON file
    seed: int = 42
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int = 1
    num_threads: int | str | None = None  # CPU threads: a number, "auto" (probe 1..cores), None (torch's)
    progress: bool = True

    def accumulation(self, world_size: int) -> int:
        """Gradient-accumulation steps that keep the global batch on ``world_size`` devices."""
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"global batch {self.global_batch_size} is not a multiple of per-device batch "
                f"{self.per_device_batch_size} x {world_size} devices"
            )
        return self.global_batch_size // per_step


@dataclass(frozen=True)
class Recipe:
    name: str
    stage: str
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def __post_init__(self) -> None:
        kind = get_stage_kind(self.stage)
        m, t = self.model, self.train
        if not self.data.path or not all(isinstance(p, str) and p for p in self.data.paths):
            raise ConfigError(f"recipe {self.name}: data.path must be a file or a list of files")
        if m.base and m.after:
            raise ConfigError(f"recipe {self.name}: give model.base or model.after, not both")
        if kind.needs_merged_base and not (m.base or m.after):
            raise ConfigError(
                f"recipe {self.name}: a {self.stage} stage starts from a merged checkpoint (model.base)"
            )
        if not (m.base or m.after) and not m.preset:
            raise ConfigError(
                f"recipe {self.name}: needs model.preset (fresh start) or model.base / model.after"
            )
        if (m.base or m.after) and (m.language_model or m.vision_tower):
            raise ConfigError(
                f"recipe {self.name}: model.language_model / vision_tower only apply to a fresh start from a preset"
            )
        if m.init_std is not None and ((m.base or m.after) or not 0 < m.init_std <= 1):
            raise ConfigError(
                f"recipe {self.name}: model.init_std must be in (0, 1] and only applies to a fresh start"
            )
        if t.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"recipe {self.name}: precision must be auto, fp32, fp16 or bf16")
        if m.attn_implementation not in ATTENTION:
            raise ConfigError(f"recipe {self.name}: attn_implementation must be one of {ATTENTION}")
        if t.deepspeed and t.deepspeed not in DEEPSPEED_CONFIGS and not t.deepspeed.endswith(".json"):
            raise ConfigError(
                f"recipe {self.name}: deepspeed must be {', '.join(DEEPSPEED_CONFIGS)} or a .json file"
            )
        if t.per_device_batch_size < 1 or t.global_batch_size < t.per_device_batch_size:
            raise ConfigError(f"recipe {self.name}: need 1 <= per_device_batch_size <= global_batch_size")
        if t.max_steps is None and not t.epochs > 0:
            raise ConfigError(f"recipe {self.name}: epochs must be > 0 (or set max_steps)")
        if t.max_steps is not None and (not _is_int(t.max_steps) or t.max_steps < 1):
            raise ConfigError(
                f"recipe {self.name}: train.max_steps must be at least 1 (or null: train epochs)"
            )
        if t.num_threads not in ("auto", None) and (not _is_int(t.num_threads) or t.num_threads < 1):
            raise ConfigError(
                f"recipe {self.name}: train.num_threads must be a positive number, auto or null"
            )
        if not _is_int(self.data.max_image_pixels) or self.data.max_image_pixels < 1:
            raise ConfigError(f"recipe {self.name}: data.max_image_pixels must be a positive number")
        if t.scheduler not in ("cosine", "linear", "constant_with_warmup"):
            raise ConfigError(f"recipe {self.name}: scheduler must be cosine, linear or constant_with_warmup")
        if self.data.on_error not in ("raise", "skip"):
            raise ConfigError(f"recipe {self.name}: data.on_error must be raise or skip")
        t.accumulation(1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- loading


def recipe_names() -> list[str]:
    """Names of the recipes shipped in ``impvlm/recipes``."""
    folder = resources.files("impvlm") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe_dict(name_or_path: str | Path) -> dict[str, Any]:
    """The raw mapping of a packaged recipe (by name) or of a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        text = path.read_text(encoding="utf-8")
    else:
        resource = resources.files("impvlm") / "recipes" / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(f"unknown recipe {name_or_path!r}; known: {', '.join(recipe_names())}")
        text = resource.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {name_or_path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {name_or_path}: must be a YAML mapping")
    raw.setdefault("name", path.stem)
    return raw


def parse_overrides(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["train.lr=1e-4", "data.limit=64"]`` -> ``{"train.lr": 1e-4, "data.limit": 64}`` (YAML values)."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def split_overrides(recipes: list[str], items: list[str]) -> dict[str, list[str]]:
    """Per recipe, the overrides that apply to it: ``key=value`` to all, ``NAME:key=value`` to NAME only."""
    out: dict[str, list[str]] = {r: [] for r in recipes}
    names = {Path(r).stem if Path(r).suffix in (".yaml", ".yml") else r: r for r in recipes}
    for item in items:
        target, colon, rest = item.partition(":")
        if colon and "=" not in target:
            if target not in names:
                raise ConfigError(f"override {item!r} names {target!r}, which is not a --recipe of this run")
            out[names[target]].append(rest)
        else:
            for r in recipes:
                out[r].append(item)
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted-path overrides set; unknown keys are errors (typos do not pass)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    sections = {f.name: f.type for f in dataclasses.fields(Recipe)}
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] not in sections:
            raise ConfigError(f"unknown recipe key {key!r}; top-level keys: {', '.join(sections)}")
        if len(parts) == 1:
            out[parts[0]] = value
            continue
        section_cls = _SECTIONS.get(parts[0])
        if section_cls is None or len(parts) != 2:
            raise ConfigError(f"unknown recipe key {key!r}")
        known = {f.name for f in dataclasses.fields(section_cls)}
        if parts[1] not in known:
            raise ConfigError(f"unknown recipe key {key!r}; {parts[0]} has: {', '.join(sorted(known))}")
        out.setdefault(parts[0], {})
        out[parts[0]] = {**(out[parts[0]] or {}), parts[1]: value}
    return out


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    """Validate a mapping into a :class:`Recipe` (unknown keys and wrong types are ConfigErrors)."""
    values: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"recipe {raw.get('name')}: unknown keys {unknown}; known: {sorted(known)}")
    for key, value in raw.items():
        cls = _SECTIONS.get(key)
        if cls is None:
            values[key] = value
            continue
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"recipe {raw.get('name')}: {key} must be a mapping")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        bad = sorted(set(value) - set(fields))
        if bad:
            raise ConfigError(f"recipe {raw.get('name')}: unknown {key} keys {bad}; known: {sorted(fields)}")
        try:
            values[key] = cls(**{k: _coerce(v, fields[k].type) for k, v in value.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"recipe {raw.get('name')}: {key}: {exc}") from None
    if "stage" not in values:
        raise ConfigError(f"recipe {raw.get('name')}: 'stage' is required")
    try:
        return Recipe(**values)
    except TypeError as exc:
        raise ConfigError(f"recipe {raw.get('name')}: {exc}") from None


def load_recipe(
    name_or_path: str | Path | Recipe, overrides: list[str] | dict[str, Any] | None = None
) -> Recipe:
    """A packaged recipe by name, a YAML file, or a :class:`Recipe`, with overrides applied."""
    if isinstance(name_or_path, Recipe):
        raw = name_or_path.to_dict()
    else:
        raw = read_recipe_dict(name_or_path)
    return recipe_from_dict(interpolate(apply_overrides(raw, parse_overrides(overrides))))


_REFERENCE = re.compile(r"\$\{(\w+)\.(\w+)\}")


def interpolate(raw: dict[str, Any]) -> dict[str, Any]:
    """Replace ``${section.key}`` in string values by that key's value (one level, no chains)."""

    def lookup(match: re.Match[str]) -> str:
        section, key = match.groups()
        value = (raw.get(section) or {}).get(key) if isinstance(raw.get(section), dict) else None
        if value is None or _REFERENCE.search(str(value)):
            raise ConfigError(f"recipe {raw.get('name')}: ${{{section}.{key}}} is not set")
        return str(value)

    out: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            out[name] = {k: _REFERENCE.sub(lookup, v) if isinstance(v, str) else v for k, v in value.items()}
        else:
            out[name] = _REFERENCE.sub(lookup, value) if isinstance(value, str) else value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SECTIONS: dict[str, type] = {"model": ModelSpec, "data": DataSpec, "lora": LoraSpec, "train": TrainSpec}


def _coerce(value: Any, annotation: Any) -> Any:
    """YAML reads ``1e-4`` as a string and ``3`` as an int: make numbers what the field says."""
    kinds = {part.strip() for part in str(annotation).split("|")}
    if value is None or isinstance(value, bool) or ("str" in kinds and isinstance(value, str)):
        return value
    if "float" in kinds and isinstance(value, int | str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not a number") from None
    if "int" in kinds and isinstance(value, float) and value.is_integer():
        return int(value)
    if "int" in kinds and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not an integer") from None
    return value
