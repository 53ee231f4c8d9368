"""The model under test: a real checkpoint, or a random one of a preset's real shape, exported once.

Random weights do not change the cost of a fixed number of tokens, so without a checkpoint a
preset's model is built with random weights: allocated without transformers' initialisation
(``no_init_weights``), in fp16 (as Imp is released), filled with N(0, 0.02) and unit norms, and saved
with :func:`impvlm.checkpoint.save_checkpoint`. Its tokenizer is a small byte-level BPE trained with
:func:`impvlm.tokenizer.train_tokenizer`; the special tokens take ids 0..2 and the LM keeps the
preset's embedding rows (51200 for Phi-2), so the GGUF files have the real sizes.

Checkpoint and bundle are cached under ``CACHE/<preset>-<hash>/``, the hash covering the preset,
seed, precisions and (for a real checkpoint) its path, file sizes and modification times. Both heavy
steps run in isolated processes (``imp-v1-3b`` needs ~12 GB to export), and the cache entry records
how long they took: ``build.json`` next to the checkpoint, the bundle's own manifest timings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.speed.config import SpeedConfig, key_hash
from benchmarks.speed.isolate import run_isolated
from export.manifest import MANIFEST_FILE
from impvlm.errors import ConfigError

log = logging.getLogger(__name__)

INIT_STD = 0.02
BUILD_FILE = "build.json"
KEY_FILE = "key.json"


@dataclass(frozen=True)
class PreparedModel:
    preset: str
    source: str  # "random" or the checkpoint path
    folder: Path  # the cache entry
    checkpoint: Path
    bundle: Path
    built_now: bool
    exported_now: bool
    build: dict[str, Any]  # random build timings ({} for a real checkpoint)

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "source": self.source,
            "cache_entry": str(self.folder),
            "checkpoint": str(self.checkpoint),
            "bundle": str(self.bundle),
            "built_now": self.built_now,
            "exported_now": self.exported_now,
            "build": self.build,
        }


def prepare_model(config: SpeedConfig) -> PreparedModel:
    """The cached checkpoint and bundle for ``config``, building / exporting what is missing."""
    key = config.export_key()
    if config.checkpoint is not None:
        key["checkpoint"] = checkpoint_identity(config.checkpoint)
    folder = Path(config.cache) / f"{config.preset}-{key_hash(key)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / KEY_FILE).write_text(json.dumps(key, indent=2, default=str) + "\n")
    built_now = exported_now = False
    build: dict[str, Any] = {}
    if config.checkpoint is None:
        checkpoint = folder / "checkpoint"
        build_file = folder / BUILD_FILE
        if config.rebuild or not build_file.is_file() or not (checkpoint / "config.json").is_file():
            log.info("building a random %s checkpoint in %s", config.preset, checkpoint)
            build_file.unlink(missing_ok=True)
            shutil.rmtree(folder / "bundle", ignore_errors=True)
            build = run_isolated(
                build_random_checkpoint, config.preset, checkpoint, config.seed, config.tokenizer_vocab
            )
            build_file.write_text(json.dumps(build, indent=2) + "\n")
            built_now = True
        else:
            build = json.loads(build_file.read_text())
            log.info("using the cached random checkpoint %s", checkpoint)
    else:
        checkpoint = Path(config.checkpoint)
    bundle = folder / "bundle"
    if config.rebuild or built_now or not (bundle / MANIFEST_FILE).is_file():
        log.info(
            "exporting %s to %s (gguf %s, onnx %s)", checkpoint, bundle, config.all_quants, config.vision
        )
        run_isolated(
            export_model,
            checkpoint,
            bundle,
            config.all_quants,
            config.vision,
            config.validate_export,
            config.threads,
            config.mmproj,
        )
        exported_now = True
    else:
        log.info("using the cached bundle %s", bundle)
    source = "random" if config.checkpoint is None else str(Path(config.checkpoint).resolve())
    return PreparedModel(config.preset, source, folder, checkpoint, bundle, built_now, exported_now, build)


def checkpoint_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of a checkpoint folder: resolved path, file names, sizes and mtimes."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a checkpoint folder (no config.json)")
    files = sorted(f for f in path.iterdir() if f.is_file())
    return {
        "path": str(path.resolve()),
        "files": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files],
    }


# ------------------------------------------------------------------------ isolated steps
def build_random_checkpoint(preset: str, out: Path, seed: int, tokenizer_vocab: int) -> dict[str, Any]:
    """Build and save a random model of ``preset``'s shape (runs in a child process)."""
    import tempfile

    import torch
    from transformers.modeling_utils import no_init_weights

    from benchmarks.speed.workload import tokenizer_corpus
    from impvlm import ImpForCausalLM, build_config, get_preset
    from impvlm.checkpoint import save_checkpoint
    from impvlm.tokenizer import train_tokenizer

    timings: dict[str, Any] = {}
    started = time.perf_counter()
    lm_rows = get_preset(preset).lm.vocab_size
    with tempfile.TemporaryDirectory(prefix="impvlm-speed-tok-") as tmp:
        tokenizer = train_tokenizer(tokenizer_corpus(), min(tokenizer_vocab, lm_rows), tmp)
    config = build_config(preset, tokenizer=tokenizer)
    if config.vocab_size != lm_rows:  # pragma: no cover - guarded by min() above
        raise ConfigError(f"the tokenizer needs {config.vocab_size} rows, the preset has {lm_rows}")
    timings["tokenizer_seconds"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    with default_dtype(torch.float16), no_init_weights():
        model = ImpForCausalLM(config)
    fill_random_(model, seed)
    model.eval()
    timings["init_seconds"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    save_checkpoint(model, tokenizer, out)
    timings["save_seconds"] = round(time.perf_counter() - started, 3)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        **timings,
        "parameters": n_params,
        "dtype": "float16",
        "init": f"N(0, {INIT_STD}) weights, unit norms, zero biases (seed {seed})",
        "tokenizer_size": len(tokenizer),
        "lm_rows": lm_rows,
        "checkpoint_bytes": sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()),
    }


def export_model(
    checkpoint: Path,
    bundle: Path,
    quants: tuple[str, ...],
    vision: tuple[str, ...],
    validate: bool,
    threads: int,
    mmproj: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``export_bundle`` in a child process (with the mmproj llama.cpp's own multimodal path reads);
    returns the manifest's timings."""
    from export.bundle import export_bundle

    manifest = export_bundle(
        checkpoint,
        bundle,
        gguf=list(quants),
        onnx=list(vision),
        validate=validate,
        threads=threads,
        mmproj=list(mmproj),
    )
    return dict(manifest.timings)


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Create parameters in ``dtype`` inside the block (the previous default is restored)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def fill_random_(model: Any, seed: int, std: float = INIT_STD) -> None:
    """Weights ~ N(0, std), LayerNorm weights 1, biases 0; in place, tensor by tensor."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            norm = isinstance(module, nn.LayerNorm | nn.GroupNorm) or type(module).__name__.endswith("Norm")
            for name, param in module.named_parameters(recurse=False):
                if name == "bias":
                    param.zero_()
                elif norm:
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, std, generator=generator)
