"""Writing the vision encoder's ONNX files: the fp32 export and the fp16 / int8 files derived from it.

==========  ============================  =============================================
precision   file                          how
==========  ============================  =============================================
``fp32``    ``vision_encoder.onnx``       ``torch.onnx.export`` (dynamo), dynamic batch
``fp16``    ``vision_encoder_fp16.onnx``  fp16 weights and compute, float32 I/O
``int8``    ``vision_encoder_q8.onnx``    dynamic U8U8 MatMul (ONNX Runtime), see INT8_SCHEME
==========  ============================  =============================================

Why ONNX Runtime's ``quantize_dynamic`` and not optimum's ``ORTQuantizer``: optimum's
``ORTQuantizer`` with ``AutoQuantizationConfig.avx2/avx512_vnni/arm64(is_static=False)`` wraps the
same ``quantize_dynamic`` call, and optimum-onnx has no export config for Imp / LLaVA (only the bare
``siglip_vision_model``, without Imp's truncated tower or the projector). The scheme is
:data:`INT8_SCHEME` (uint8 weights, so it holds on every CPU kind).

Size: a graph with more than :data:`SINGLE_FILE_LIMIT` bytes of weights (protobuf's 2 GB limit) is
written with its weights in an external data file next to it (``<name>.onnx.data``, listed in
:attr:`OnnxArtifact.files` and in the bundle manifest); SigLIP-so400m + projector in fp32 is about
1.7 GB and stays one file (torch's ``ONNXProgram.save`` would split anything above 1.5 GiB, so the
graph is written with ``onnx_ir.save`` instead).

Graph optimisation (``optimize=True``, off by default) runs ONNX Runtime's transformer optimizer with
the GELU and bias-GELU fusions disabled: they rewrite the tanh-form GELU of SigLIP into an erf
``BiasGelu``, which is a different function. The optimised graph uses ``com.microsoft`` contrib ops
(``SkipLayerNormalization``), which ties it to ONNX Runtime; it is re-validated like any file.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from export.errors import ExportError
from export.kinds.base import ArtifactFile
from export.onnx_vision import INPUT_NAME, OUTPUT_NAME, ParityReport, VisionEncoder
from impvlm.config import ImpConfig

if TYPE_CHECKING:
    import onnx

#: Above this many bytes of weights a graph keeps them in an external data file (protobuf: 2 GiB).
SINGLE_FILE_LIMIT = 1_900_000_000
#: The example batch used for tracing: >= 2, or the exporter specialises the batch dimension to 1.
TRACE_BATCH = 2
MAX_BATCH = 256


@dataclass
class OnnxArtifact(ArtifactFile):
    """One written ONNX file (``files``: the graph, then its external data file if any) and, once
    checked, its :class:`~export.onnx_vision.ParityReport`."""

    parity: ParityReport | None = None

    @property
    def optimized(self) -> bool:
        return bool(self.details.get("optimized"))

    @property
    def opset(self) -> int | None:
        return self.details.get("opset")


def _artifact(precision: str, path: Path, optimized: bool, opset: int | None, **details: Any) -> OnnxArtifact:
    io = {"input": INPUT_NAME, "output": OUTPUT_NAME, "opset": opset, "optimized": optimized}
    return OnnxArtifact(precision, path, _files_of(path), details={**details, **io})


def export_fp32(
    encoder: VisionEncoder, path: Path, optimize: bool, limit: int = SINGLE_FILE_LIMIT
) -> OnnxArtifact:
    """``torch.onnx.export`` (dynamo) of the encoder with a dynamic batch, optionally optimised."""
    external = encoder.weight_bytes() > limit
    size = encoder.config.image_size
    example = torch.zeros(TRACE_BATCH, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), quiet_library_logs():
            program = torch.onnx.export(
                encoder,
                (example,),
                None,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: batch}},
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export of the vision encoder failed: {first}") from exc
    if external:
        program.save(str(path), external_data=True)
    else:
        # ONNXProgram.save switches to external data above 1.5 GiB on its own; so400m (1.7 GB) fits
        # one protobuf, so write the graph directly.
        from onnxscript import ir

        ir.save(program.model, str(path))
    del program
    if optimize:
        with quiet_library_logs():
            _optimize(path, encoder.config, external)
    return _artifact("fp32", path, optimize, _opset(path), external_data=external)


def convert_fp16(base: OnnxArtifact, path: Path, limit: int = SINGLE_FILE_LIMIT) -> OnnxArtifact:
    """fp16 weights and compute; the graph's input and output stay float32 (``keep_io_types``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    external = _weight_bytes(base.path) // 2 > limit
    model = onnx.load(str(base.path))
    # Shape inference serialises the model, which fails above 2 GB: skip it for external-data graphs.
    half = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=bool(base.details.get("external_data"))
    )
    _save(half, path, external)
    return _artifact(
        "fp16",
        path,
        base.optimized,
        base.opset,
        external_data=external,
        io_dtype="float32",
        derived_from="fp32",
    )


#: The int8 scheme: dynamic quantization of every MatMul, uint8 activations (quantized at run time)
#: times uint8 weights (U8U8). ONNX Runtime's default, int8 weights (U8S8), is computed with
#: ``vpmaddubsw`` on AVX2 and AVX-512 CPUs without VNNI, which adds two u8 x s8 products into a
#: saturating int16: large activations clip, so the same file loses accuracy on an AMD Zen 3 that it
#: keeps on a VNNI / AMX Xeon (cos min 0.957 vs PyTorch on the tiny tower). With uint8 weights every
#: kernel (AVX2, AVX-512, VNNI, AMX, ARM NEON / dot-product) accumulates exact int32 sums, so the file
#: gives the same numbers on every CPU kind; ONNX Runtime's quantization guide names U8U8 (with
#: 7-bit ``reduce_range`` weights) as the remedy for that saturation, and U8U8 keeps all 8 bits.
INT8_SCHEME: Mapping[str, Any] = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "activation_type": "QUInt8",
    "weight_type": "QUInt8",
    "per_channel": False,
    "op_types": ["MatMul"],
}


def quantize_int8(base: OnnxArtifact, path: Path, limit: int = SINGLE_FILE_LIMIT) -> OnnxArtifact:
    """Dynamic int8 with the CPU-independent :data:`INT8_SCHEME` (see there why uint8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = _weight_bytes(base.path) // 4 > limit
    with quiet_library_logs():
        quantize_dynamic(
            str(base.path),
            str(path),
            weight_type=QuantType[INT8_SCHEME["weight_type"]],
            per_channel=bool(INT8_SCHEME["per_channel"]),
            op_types_to_quantize=list(INT8_SCHEME["op_types"]),
            use_external_data_format=external,
        )
    return _artifact(
        "int8", path, base.optimized, base.opset, external_data=external, **INT8_SCHEME, derived_from="fp32"
    )


#: How each precision but fp32 is made from the fp32 graph.
DERIVE: Mapping[str, Callable[[OnnxArtifact, Path, int], OnnxArtifact]] = {
    "fp16": convert_fp16,
    "int8": quantize_int8,
}


def _optimize(path: Path, config: ImpConfig, external: bool) -> None:
    """ONNX Runtime's transformer optimizer, in place, with the inexact GELU fusions turned off."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("vit")
    options.enable_gelu = False
    options.enable_bias_gelu = False
    options.enable_gelu_approximation = False
    vision = config.vision_config
    optimized = optimize_model(
        str(path),
        model_type="vit",
        num_heads=int(vision.num_attention_heads),
        hidden_size=int(vision.hidden_size),
        optimization_options=options,
        opt_level=0,
    )
    for stale in _files_of(path):
        stale.unlink()
    optimized.save_model_to_file(str(path), use_external_data_format=external)


def _save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=path.name + ".data",
        )  # fmt: skip
    else:
        onnx.save_model(model, str(path))


def _files_of(path: Path) -> list[Path]:
    """The graph file and the external data files its initializers point to."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    return [path, *(path.parent / loc for loc in sorted(locations))]


def _weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in _files_of(path))


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def quiet_library_logs() -> Iterator[None]:
    """Hide the exporter's, optimizer's and quantizer's INFO chatter while inside (restored on exit).

    The filter sits on the root logger and its handlers, so records propagated from library loggers
    (``onnx_ir`` initializer de-duplication, ``fusion_base``, per-tensor quantization notes) are
    dropped below WARNING; this project's own loggers pass. ``quantize_dynamic``'s advice to run its
    pre-processing does not apply (the graph comes straight from the exporter, shapes inferred).
    """

    def keep(record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Please consider to run pre-processing"):
            return False
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in ("export", "impvlm")

    root = logging.getLogger()
    targets = [root, *root.handlers]
    # torch's exporter logs through its own handlers ("torchvision is not installed. Skipping ...").
    torch_onnx = logging.getLogger("torch.onnx")
    torch_level = torch_onnx.level
    torch_onnx.setLevel(logging.ERROR)
    for target in targets:
        target.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations
            yield
    finally:
        for target in targets:
            target.removeFilter(keep)
        torch_onnx.setLevel(torch_level)
