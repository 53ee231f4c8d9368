"""``imp info CHECKPOINT``: what a checkpoint folder is and what ``imp export`` would make of it.

Nothing heavy is read: the layout reader (:func:`impvlm.checkpoint.read_checkpoint`) reads the configs
and the tokenizer, the weight files are only sized and their headers read for dtypes, and the model
is built on PyTorch's meta device to count parameters and ask the GGUF / mmproj writers whether they
can write it.
"""

from __future__ import annotations

import collections
import json
import struct
from pathlib import Path
from typing import Any

#: safetensors header dtype -> torch name.
SAFETENSORS_DTYPES = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F64": "float64",
    "I64": "int64",
}


def describe_checkpoint(
    path: str | Path, language_model: str | None = None, vision_tower: str | None = None
) -> str:
    """The report ``imp info`` prints for a checkpoint folder."""
    import torch

    from export.commands import format_size
    from impvlm.checkpoint import read_checkpoint
    from impvlm.modeling import ImpForCausalLM
    from impvlm.templates import get_template
    from impvlm.tokenizer import single_token_id
    from impvlm.upstream import Parts

    reading = read_checkpoint(path, Parts.of(language_model, vision_tower))
    config, tokens = reading.config, reading.tokens
    with torch.device("meta"):
        model = ImpForCausalLM(config)
    counts = _parameter_counts(model)
    template = get_template(config.template)
    stop_id = tokens.stop_token_id
    if stop_id is None and tokens.tokenizer_dir is not None:
        stop_id = single_token_id(reading.tokenizer(), template.stop_str)
    files = reading.weight_files
    lines = [
        f"checkpoint {reading.folder}",
        f"layout     {reading.layout.name}: {reading.layout.title}"
        + (f" ({reading.variant})" if reading.variant else ""),
        f"template   {template.name}: {tokens.template_reason}",
        f"           prompt {template.question_prompt('{question}')!r}",
        f"tokens     {tokens.image_note}; stop {template.stop_str!r} = {stop_id}, "
        f"eos {config.eos_token_id}, pad {config.pad_token_id}; tokenizer {tokens.tokenizer_dir or 'none found'}",
        f"tower      {_tower(config)}",
        f"LM         Phi: hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads} heads, ffn {config.intermediate_size}, rotary "
        f"{int(config.partial_rotary_factor * (config.hidden_size // config.num_attention_heads))} dims, "
        f"vocab {config.vocab_size}, context {config.max_position_embeddings}",
        f"projector  {config.mm_projector_type}: {config.vision_hidden_size} -> {config.hidden_size}",
        f"image      {config.image_size}x{config.image_size} {config.image_aspect_ratio}, "
        f"mean {_floats(config.image_mean)}, std {_floats(config.image_std)}",
        f"weights    {_dtypes(files)}, {len(files)} files, {format_size(sum(f.stat().st_size for f in files))}; "
        f"{sum(counts.values()) / 1e6:.2f} M parameters (LM {counts['lm'] / 1e6:.2f} M, tower "
        f"{counts['tower'] / 1e6:.2f} M, projector {counts['projector'] / 1e6:.2f} M)",
        *(f"note       {n}" for n in reading.notes),
        *_export_plan(model, counts),
    ]
    return "\n".join(lines)


def _tower(config: Any) -> str:
    vc = config.vision_config
    select = config.mm_vision_select_layer
    layer = "its last layer" if select == -1 else f"hidden_states[{select}]"
    cls = ", CLS dropped" if config.has_cls_token and config.mm_vision_select_feature == "patch" else ""
    return (
        f"{vc.model_type}: {vc.num_hidden_layers} layers held, features of {layer}{cls}; "
        f"{vc.image_size} px, patch {vc.patch_size} -> {config.num_image_tokens} image tokens"
    )


def _parameter_counts(model: Any) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for name, p in model.named_parameters():
        part = (
            "tower"
            if name.startswith("vision_tower.")
            else "projector"
            if name.startswith("mm_projector.")
            else "lm"
        )
        counts[part] += p.numel()
    return {k: counts[k] for k in ("lm", "tower", "projector")}


def _export_plan(model: Any, counts: dict[str, int]) -> list[str]:
    """What the default ``imp export`` writes, with estimated sizes, and whether --mmproj can."""
    from export.commands import format_size
    from export.errors import ExportError
    from export.gguf_lm import check_exportable
    from export.mmproj import mmproj_facts

    vision = counts["tower"] + counts["projector"]
    lines = ["imp export would write (default --gguf f16 --onnx fp32), before its parity checks:"]
    lines.append(f"  onnx/vision_encoder.onnx   fp32  ~{format_size(4 * vision)}")
    try:
        check_exportable(model)
        lines.append(f"  gguf/model-f16.gguf        f16   ~{format_size(2 * counts['lm'])}")
    except ExportError as exc:
        lines.append(f"  no GGUF: {exc}")
    lines.append("  tokenizer/, manifest.json")
    try:
        facts = mmproj_facts(model.config)
        lines.append(
            f"  --mmproj f16: gguf/mmproj-f16.gguf ~{format_size(2 * vision)} (llama.cpp's clip graph, "
            f"{facts.block_count} layers, feature layer {facts.feature_layer})"
        )
    except ExportError as exc:
        lines.append(f"  no --mmproj: {exc}")
    return lines


def _dtypes(files: list[Path]) -> str:
    """The tensor dtypes of the weight files, from safetensors headers (``.bin``: loaded lazily)."""
    found: collections.Counter[str] = collections.Counter()
    for file in files:
        try:
            found.update(_file_dtypes(file))
        except Exception:  # an unreadable file is reported when loading; here it has no dtype
            found["unreadable"] += 1
    return ", ".join(f"{name}" for name, _ in found.most_common()) or "no tensors"


def _file_dtypes(file: Path) -> collections.Counter[str]:
    if file.suffix == ".safetensors":
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        return collections.Counter(
            SAFETENSORS_DTYPES.get(v["dtype"], v["dtype"]) for k, v in header.items() if k != "__metadata__"
        )
    import torch

    state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    return collections.Counter(str(t.dtype).removeprefix("torch.") for t in state.values())


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
