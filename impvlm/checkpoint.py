"""Checkpoints: this project's format, and the entry point for every layout users bring.

The impvlm format is what ``save_pretrained`` writes: ``config.json`` (``model_type "impvlm"``),
sharded ``model.safetensors`` and the tokenizer files. Published Imp / LLaVA-Phi folders and upstream
stage outputs are read by :mod:`impvlm.upstream` without running any code shipped inside them.
:func:`read_checkpoint` says what a folder is (no weights read); :func:`load_model` loads it.

Weight files are read safely: safetensors, or ``.bin`` pickles with ``torch.load(weights_only=True)``
(a pickle that needs more than tensors is refused, naming the file). A tensor that does not fit the
config is named with both shapes.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from impvlm.config import ImpConfig
from impvlm.errors import CheckpointError, ImpError
from impvlm.modeling import ImpForCausalLM
from impvlm.upstream import Parts, Reading, read_upstream
from impvlm.upstream.layouts import Layout
from impvlm.upstream.tokens import TokenPlan, has_tokenizer

CONFIG_FILE = "config.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


def read_config_dict(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing: not a checkpoint folder")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from None


def is_upstream(config: dict[str, Any]) -> bool:
    return config.get("model_type") != ImpConfig.model_type


@contextmanager
def committed_folder(out_dir: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``out_dir`` that replaces ``out_dir`` whole when the block ends
    without an error (a leftover from a killed run is cleared first); readers never see a half-written one.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    yield tmp
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def save_checkpoint(
    model: ImpForCausalLM, tokenizer: Any, out_dir: Path, max_shard_size: str = "2GB"
) -> Path:
    """Write config, sharded safetensors and tokenizer atomically (a temp folder, then a rename)."""
    with committed_folder(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def load_model(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    parts: Parts | None = None,
) -> ImpForCausalLM:
    """Load an impvlm or upstream checkpoint folder into :class:`ImpForCausalLM` (eval mode).

    ``parts``: local folders for what an upstream folder only names (its base LM, its tower).
    """
    return read_checkpoint(path, parts).model(dtype, device)


def read_checkpoint(path: str | Path, parts: Parts | None = None) -> Reading:
    """What a checkpoint folder is (layout, config, template and why, tokenizer, weight files); no
    weights are read until :meth:`~impvlm.upstream.Reading.load`."""
    path = Path(path)
    raw = read_config_dict(path)
    reading = (
        read_upstream(path, raw, parts) if is_upstream(raw) else IMPVLM.read(path, raw, parts or Parts())
    )
    check_weight_files(path, reading.weight_files)
    return reading


class ImpvlmFormat(Layout):
    """This project's own format (``save_pretrained`` of :class:`ImpForCausalLM`)."""

    name = "impvlm"
    title = "impvlm checkpoint"
    model_types = ("impvlm",)

    def matches(self, folder: Path, raw: dict[str, Any]) -> bool:
        return not is_upstream(raw)

    def read(self, folder: Path, raw: dict[str, Any], parts: Parts) -> Reading:
        data = {
            k: v for k, v in raw.items() if k not in ("model_type", "architectures", "transformers_version")
        }
        try:
            config = ImpConfig(**data)
        except CheckpointError:
            raise
        except Exception as exc:  # a bad value: name the file
            raise CheckpointError(f"{folder / CONFIG_FILE}: {str(exc).splitlines()[0]}") from None
        tokens = TokenPlan(
            config.template,
            f"recorded in config.json (template {config.template!r})",
            config.image_token_index,
            config.eos_token_id,
            config.pad_token_id,
            folder if has_tokenizer(folder) else None,
        )
        return Reading(folder, self, config, tokens, weight_files(folder), parts, [])

    def load(self, reading: Reading, dtype: torch.dtype | None = None) -> ImpForCausalLM:
        path = reading.folder
        try:
            model, info = ImpForCausalLM.from_pretrained(path, output_loading_info=True, dtype=dtype)
        except ImpError:
            raise
        except Exception:  # torch / transformers say it in many ways: find the file or tensor at fault
            _diagnose(path, reading.config)
            raise CheckpointError(f"{path}: weights do not match config.json") from None
        missing = info.get("missing_keys") or []
        mismatched = info.get("mismatched_keys") or []
        if missing or mismatched:
            _diagnose(path, reading.config)
            raise CheckpointError(
                f"{path}: weights do not match config.json ({len(missing)} missing, "
                f"{len(mismatched)} mismatched tensors, e.g. {', '.join(map(str, (missing or mismatched)[:3]))})"
            )
        return model


IMPVLM = ImpvlmFormat()


def _diagnose(path: Path, config: ImpConfig) -> None:
    """Raise the one-line reason weights in ``path`` do not load: an unreadable file, or the first
    tensor missing or of another shape than ``config`` implies."""
    origins: dict[str, Path] = {}
    state = read_state_dict(path, origins)
    with torch.device("meta"):
        model = ImpForCausalLM(config)
    load_checked(model, state, path, {k: str(f) for k, f in origins.items()}, dry_run=True)


def weight_files(path: Path | None) -> list[Path]:
    """The weight files of a checkpoint folder (pickles Trainer writes beside them excluded)."""
    if path is None:
        return []
    return sorted({f for p in WEIGHT_PATTERNS for f in Path(path).glob(p)})


def weight_names(files: list[Path]) -> set[str]:
    """The tensor names in weight files, from safetensors headers (a ``.bin`` is memory-mapped)."""
    from safetensors import safe_open

    names: set[str] = set()
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                names.update(handle.keys())
        else:
            names.update(read_tensor_file(file, mmap=True))
    return names


def check_weight_files(path: Path, files: list[Path] | None = None) -> None:
    """Every shard named by an index file must exist; a folder must hold some weights."""
    for index in list(path.glob("*.index.json")):
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid shard index: {exc}") from None
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise CheckpointError(f"missing shard {path / shard} (listed in {index.name})")
    if not (files if files is not None else weight_files(path)):
        raise CheckpointError(f"{path} holds no weight files (*.safetensors or *.bin)")


def read_tensor_file(file: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """One ``.safetensors`` or ``.bin`` file; a ``.bin`` is unpickled with ``weights_only=True``."""
    from safetensors.torch import load_file

    if file.suffix == ".safetensors":
        try:
            return load_file(str(file))
        except Exception as exc:  # corrupt or truncated file: name it
            raise CheckpointError(f"cannot read weights from {file}: {_first_line(exc)}") from None
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{file} is a pickle that holds more than tensors ({_unpickle_reason(exc)}); it is not loaded, "
            "since unpickling it could run code: re-save its state_dict (or as safetensors)"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"cannot read weights from {file}: {_first_line(exc)}") from None


def read_state_dict(path: Path, origins: dict[str, Path] | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a folder's safetensors (else ``.bin``) files; ``origins`` gets each one's file."""
    state: dict[str, torch.Tensor] = {}
    files = sorted(path.glob("*.safetensors")) or [f for f in weight_files(path) if f.suffix == ".bin"]
    for file in files:
        tensors = read_tensor_file(file)
        state.update(tensors)
        if origins is not None:
            origins.update(dict.fromkeys(tensors, file))
    return state


def checkpoint_hash(source: Path | Reading) -> str:
    """sha256 over config.json and the weight files (names and bytes) a checkpoint is built from
    (an upstream stage output's base folders included), for bundle manifests."""
    reading = source if isinstance(source, Reading) else None
    path = reading.folder if reading else Path(source)  # type: ignore[arg-type]
    digest = hashlib.sha256()
    files = [path / CONFIG_FILE, *(reading.weight_files if reading else weight_files(path))]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_checked(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    folder: Path,
    names: dict[str, str],
    dry_run: bool = False,
) -> None:
    """Load ``state`` into ``model`` after checking that it covers the model exactly, shape by shape.

    ``names``: where each key came from (file and upstream name), for the one-line error.
    """
    own = model.state_dict()
    mismatch = "weights do not match config.json"
    for key, expected in own.items():  # in the model's order: the first layer first
        if key in state and tuple(state[key].shape) != tuple(expected.shape):
            raise CheckpointError(
                f"{names.get(key, folder)}: {mismatch}: {key} has shape {tuple(state[key].shape)}, config.json "
                f"implies {tuple(expected.shape)}"
            )
    missing = [k for k in own if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{folder}: {mismatch}: {missing[0]} is missing{more}")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise CheckpointError(
            f"{names.get(unexpected[0], folder)}: {mismatch}: {unexpected[0]} is not part of the model"
        )
    if not dry_run:
        model.load_state_dict(state, strict=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unpickle_reason(exc: BaseException) -> str:
    """The global the safe unpickler refused (e.g. ``__main__.Thing``), from torch's message."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f"it needs {found.group(1)}" if found else _first_line(exc)
