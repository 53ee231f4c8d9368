"""Open a runtime from a spec string: ``[KIND:]PATH[?key=value&...]``.

- ``work/ckpt`` (a checkpoint folder) -> PyTorch; ``work/bundle`` (has ``manifest.json``) -> the
  exported runtime (ONNX Runtime + llama.cpp).
- ``torch:PATH?dtype=fp16&device=cuda`` (``&vision_tower=DIR&language_model=DIR`` for an upstream
  folder that only names them), ``exported:PATH?lm=q4_k_m&vision=int8&threads=4``,
  ``native:PATH?lm=q4_k_m&mmproj=f16`` (llama.cpp's own multimodal library), and
  ``profile=mobile`` picks a device profile's precisions, threads and context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from export.manifest import MANIFEST_FILE
from export.quant_types import near_lossless
from impvlm.errors import ConfigError
from runtimes.base import Runtime

KINDS = ("torch", "exported", "native")


def run_label(identity: dict[str, Any]) -> str | None:
    """A short name of what ran, from a runtime's :meth:`~runtimes.base.Runtime.identity`.

    ``torch-fp32``, ``q4_k_m+int8`` (exported: LM + vision precision), ``native-q8_0+mmproj-f16``;
    ``None`` for an identity of no known kind.
    """
    kind = identity.get("runtime")
    if kind == "torch":
        return f"torch-{identity.get('dtype', 'fp32')}"
    if kind == "exported":
        return f"{identity.get('lm')}+{identity.get('vision')}"
    if kind == "native":
        return f"native-{identity.get('lm')}+mmproj-{identity.get('mmproj')}"
    return None


def held_near_lossless(identity: dict[str, Any]) -> bool:
    """Whether a runtime of this identity is held to the near-lossless accuracy margin."""
    kind = identity.get("runtime")
    if kind == "torch":
        return True
    if kind == "native":
        return False  # llama.cpp's own preprocessing differs from Imp's: measured, not held to 0.2 pt
    return near_lossless(identity.get("lm"), identity.get("vision"))


def parse_spec(spec: str | Path) -> tuple[str, Path, dict[str, str]]:
    text = str(spec)
    kind = "auto"
    head, _, query = text.partition("?")
    for candidate in KINDS:
        if head.startswith(candidate + ":"):
            kind, head = candidate, head[len(candidate) + 1 :]
    path = Path(head)
    if kind == "auto":
        if (path / MANIFEST_FILE).is_file():
            kind = "exported"
        elif (path / "config.json").is_file():
            kind = "torch"
        else:
            raise ConfigError(f"{path} is neither a checkpoint (config.json) nor a bundle ({MANIFEST_FILE})")
    return kind, path, dict(parse_qsl(query))


def load_runtime(spec: str | Path, **options: Any) -> Runtime:
    """Open the runtime a spec names; keyword options override the spec's query."""
    kind, path, query = parse_spec(spec)
    opts: dict[str, Any] = {**query, **{k: v for k, v in options.items() if v is not None}}
    for key in ("threads", "context_length"):
        if key in opts:
            opts[key] = _positive_int(key, opts[key], spec)
    if kind == "torch":
        from runtimes.torch_runtime import TorchRuntime

        allowed = {"device", "dtype", "threads", "context_length", "language_model", "vision_tower"}
        return TorchRuntime(path, **_only(opts, allowed, kind))
    if kind == "exported":
        from runtimes.exported import ExportedRuntime

        allowed = {"vision", "lm", "threads", "context_length", "profile", "memory_budget_mb", "verify"}
        return ExportedRuntime(path, **_only(opts, allowed, kind))
    from runtimes.native import LlamaCppNativeRuntime

    allowed = {"lm", "mmproj", "threads", "context_length", "verify"}
    return LlamaCppNativeRuntime(path, **_only(opts, allowed, kind))


def _positive_int(key: str, value: Any, spec: str | Path) -> int:
    """An integer option of at least 1 (from the spec's query or a keyword), or a one-line error."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, float) or number < 1:
        raise ConfigError(f"runtime option {key}={value!r} of {spec} must be a whole number of at least 1")
    return number


def _only(opts: dict[str, Any], allowed: set[str], kind: str) -> dict[str, Any]:
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ConfigError(
            f"option(s) {', '.join(unknown)} do not apply to the {kind} runtime; use {sorted(allowed)}"
        )
    return opts
