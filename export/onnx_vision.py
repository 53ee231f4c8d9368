"""The vision tower + projector as one ONNX graph: ``pixel_values [B,3,H,W] -> image_features [B,N,D_lm]``.

The graph is what :meth:`ImpForCausalLM.encode_images` computes (SigLIP with Imp's truncation, or
CLIP with LLaVA-Phi's ``hidden_states[-2]`` and the CLS token dropped), so a runtime splices its
output into the LM's input embeddings exactly as PyTorch does. Files follow the onnx-community /
transformers.js layout and I/O names:

==========  ============================  =============================================
precision   file                          how
==========  ============================  =============================================
``fp32``    ``vision_encoder.onnx``       ``torch.onnx.export`` (dynamo), dynamic batch
``fp16``    ``vision_encoder_fp16.onnx``  fp16 weights and compute, float32 I/O
``int8``    ``vision_encoder_q8.onnx``    dynamic U8U8 MatMul (ONNX Runtime), see INT8_SCHEME
==========  ============================  =============================================

Every file is checked against PyTorch on real images (synthetic scenes through the
:class:`~impvlm.image_processing.ImageProcessor`) plus random ones, at a batch of several images and
at batch 1; a file that misses its precision's :data:`PARITY_THRESHOLDS` is deleted and
:class:`~export.errors.ExportError` is raised.

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
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from export.errors import ExportError
from export.quant_types import ONNX_PRECISIONS
from impvlm.config import ImpConfig
from impvlm.modeling import ImpForCausalLM
from impvlm.projector import build_projector
from impvlm.vision import VisionTower

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "image_features"
PRECISIONS: tuple[str, ...] = tuple(ONNX_PRECISIONS)
#: onnx-community names, by precision.
FILENAMES: Mapping[str, str] = {
    "fp32": "vision_encoder.onnx",
    "fp16": "vision_encoder_fp16.onnx",
    "int8": "vision_encoder_q8.onnx",
}
#: Above this many bytes of weights a graph keeps them in an external data file (protobuf: 2 GiB).
SINGLE_FILE_LIMIT = 1_900_000_000
#: The example batch used for tracing: >= 2, or the exporter specialises the batch dimension to 1.
TRACE_BATCH = 2
MAX_BATCH = 256


@dataclass(frozen=True)
class ParityThreshold:
    """Lowest acceptable cosine similarity to PyTorch, per token over the feature dimension."""

    min_cos: float  # over every image and token
    mean_cos: float


#: fp32 must match PyTorch to float rounding. fp16 keeps ~3 significant digits through 26 layers;
#: dynamic int8 MatMul weights lose more (ONNX Runtime reports ~0.9999 on small ViTs). A NaN or an
#: infinity fails at any precision. Max abs error is recorded, not thresholded (it scales with the
#: features' magnitude).
PARITY_THRESHOLDS: dict[str, ParityThreshold] = {
    "fp32": ParityThreshold(min_cos=0.99999, mean_cos=0.999995),
    "fp16": ParityThreshold(min_cos=0.999, mean_cos=0.9995),
    "int8": ParityThreshold(min_cos=0.98, mean_cos=0.995),
}


class VisionEncoder(nn.Module):
    """The part of an :class:`ImpForCausalLM` that turns pixels into LM embeddings.

    ``pixel_values (B, 3, H, W) -> image_features (B, N, D_lm)``. It shares the model's tower and
    projector modules (no copy) and runs :meth:`ImpForCausalLM.encode_images` itself, so the graph
    holds no LM weights and cannot drift from the model's own code.

    Example::

        encoder = VisionEncoder.from_model(model)             # or VisionEncoder.from_config(config)
        features = encoder(torch.zeros(2, 3, 384, 384))       # (2, 729, 2560) for imp-v1-3b
    """

    def __init__(self, config: ImpConfig, vision_tower: VisionTower, mm_projector: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.mm_projector = mm_projector

    @classmethod
    def from_model(cls, model: ImpForCausalLM) -> VisionEncoder:
        return cls(model.config, model.vision_tower, model.mm_projector).eval()

    @classmethod
    def from_config(cls, config: ImpConfig) -> VisionEncoder:
        """A randomly initialised tower + projector (for tests at real size without building the LM)."""
        projector = build_projector(config.mm_projector_type, config.vision_hidden_size, config.hidden_size)
        return cls(config, VisionTower(config), projector).eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # encode_images only reads self.vision_tower and self.mm_projector, which this module has.
        return ImpForCausalLM.encode_images(self, pixel_values)  # type: ignore[arg-type]

    def weight_bytes(self, bytes_per_value: int = 4) -> int:
        return sum(p.numel() for p in self.parameters()) * bytes_per_value


# ---------------------------------------------------------------------------------------- parity


@dataclass
class ParityReport:
    """How an ONNX file's features compare to PyTorch's, per token (cosine over the feature dim)."""

    precision: str
    n_images: int
    batch_sizes: list[int]
    min_cos: float
    mean_cos: float
    max_abs_err: float
    ref_max_abs: float  # the scale max_abs_err is to be read against
    threshold: ParityThreshold
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(
            np.isfinite(self.min_cos)
            and self.min_cos >= self.threshold.min_cos
            and self.mean_cos >= self.threshold.mean_cos
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out

    def describe(self) -> str:
        return (
            f"cos min {self.min_cos:.6f} / mean {self.mean_cos:.6f} (need >= {self.threshold.min_cos} / "
            f"{self.threshold.mean_cos}), max abs err {self.max_abs_err:.3g} (features up to "
            f"{self.ref_max_abs:.3g}) on {self.n_images} images"
        )


#: What :func:`parity_images` returns by default, for the bundle manifest.
PARITY_IMAGES_DESCRIPTION = (
    "4 synthetic scenes (impvlm.data.synthetic, one cropped to 4:3) and 1 uniform-noise image through "
    "the ImageProcessor, plus 1 standard-normal tensor (seed 0); batch of 6, then batch 1"
)


def parity_images(config: ImpConfig, n_synthetic: int = 4, n_random: int = 2, seed: int = 0) -> np.ndarray:
    """``(n_synthetic + n_random, 3, S, S)`` float32 pixel values for parity checks.

    Synthetic scenes (shapes and signs, one cropped to a 4:3 aspect so ``pad`` mode pads it) and a
    uniform-noise image go through the model's :class:`ImageProcessor`; the last random one is a
    standard normal tensor, beyond the range real images reach.
    """
    from PIL import Image

    from impvlm.data.synthetic import Renderer, WorldConfig, sample_scene
    from impvlm.image_processing import ImageProcessor

    processor = ImageProcessor.from_config(config)
    rng = np.random.default_rng(seed)
    world = WorldConfig(seed=seed, ocr_fraction=0.3)
    renderer = Renderer(world, size=max(64, config.image_size))
    images: list[Image.Image] = []
    for i in range(n_synthetic):
        image = renderer(sample_scene(rng, world))
        if i == 1:
            image = image.crop((0, 0, image.width, image.height * 3 // 4))
        images.append(image)
    if n_random > 0:
        noise = rng.integers(0, 256, size=(config.image_size, config.image_size, 3), dtype=np.uint8)
        images.append(Image.fromarray(noise))
    arrays = [processor.batch(images)]  # (0, 3, S, S) when empty
    if n_random > 1:
        shape = (n_random - 1, 3, config.image_size, config.image_size)
        arrays.append(rng.standard_normal(shape).astype(np.float32))
    return np.concatenate(arrays)


def token_cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cosine similarity per token: ``(B, N, D), (B, N, D) -> (B * N,)`` in float64."""
    a = out.reshape(-1, out.shape[-1]).astype(np.float64)
    b = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(denom, 1e-30)


def check_parity(
    onnx_path: Path,
    pixel_values: np.ndarray,
    reference: np.ndarray,
    precision: str,
    threshold: ParityThreshold | None = None,
) -> ParityReport:
    """Run ``onnx_path`` on the whole batch and on its first image alone; compare with ``reference``."""
    started = time.perf_counter()
    session = _session(onnx_path)
    full = session.run([OUTPUT_NAME], {INPUT_NAME: pixel_values})[0]
    single = session.run([OUTPUT_NAME], {INPUT_NAME: pixel_values[:1]})[0]
    if full.shape != reference.shape or single.shape != reference[:1].shape:
        raise ExportError(
            f"{onnx_path.name}: output shape {tuple(full.shape)} (batch 1: {tuple(single.shape)}) "
            f"differs from PyTorch's {tuple(reference.shape)}"
        )
    outs = np.concatenate([full, single])
    refs = np.concatenate([reference, reference[:1]])
    cos = token_cosines(outs, refs)
    finite = bool(np.isfinite(outs).all())
    return ParityReport(
        precision=precision,
        n_images=int(pixel_values.shape[0]),
        batch_sizes=[int(pixel_values.shape[0]), 1],
        min_cos=float(cos.min()) if finite else float("nan"),
        mean_cos=float(cos.mean()) if finite else float("nan"),
        max_abs_err=float(np.abs(outs - refs).max()) if finite else float("inf"),
        ref_max_abs=float(np.abs(refs).max()),
        threshold=threshold or PARITY_THRESHOLDS[precision],
        seconds=round(time.perf_counter() - started, 3),
    )


# ---------------------------------------------------------------------------------------- export


@dataclass
class OnnxArtifact:
    """One written ONNX file: its precision, every file it consists of and how it was checked."""

    precision: str
    path: Path
    files: list[Path]  # the graph first, then its external data file(s) if any
    export_seconds: float
    parity: ParityReport | None = None
    optimized: bool = False
    opset: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def export_vision_encoder(
    source: ImpForCausalLM | VisionEncoder,
    out_dir: str | Path,
    precisions: Sequence[str] = ("fp32",),
    *,
    validate: bool = True,
    images: np.ndarray | None = None,
    optimize: bool = False,
    single_file_limit: int = SINGLE_FILE_LIMIT,
    thresholds: Mapping[str, ParityThreshold] | None = None,
) -> dict[str, OnnxArtifact]:
    """Export the vision tower + projector to ``out_dir`` in each of ``precisions``.

    fp16 and int8 are derived from the fp32 graph (exported to a scratch folder when fp32 itself is
    not asked for). With ``validate`` every file is compared with PyTorch on ``images`` (default:
    :func:`parity_images`); on a miss the files this call wrote are deleted and
    :class:`ExportError` is raised.

    Returns:
        ``{precision: OnnxArtifact}`` in the order asked.
    """
    wanted = check_precisions(precisions)
    if not wanted:
        raise ExportError("no ONNX precision asked for")
    encoder = source if isinstance(source, VisionEncoder) else VisionEncoder.from_model(source)
    encoder.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limits = {**PARITY_THRESHOLDS, **(thresholds or {})}
    pixels = reference = None
    if validate:
        pixels = np.ascontiguousarray(images if images is not None else parity_images(encoder.config))
        with torch.no_grad():
            reference = encoder(torch.from_numpy(pixels)).float().numpy()
    written: list[Path] = []
    artifacts: dict[str, OnnxArtifact] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="impvlm-onnx-") as scratch:
            base_dir = out if "fp32" in wanted else Path(scratch)
            base = _export_fp32(encoder, base_dir / FILENAMES["fp32"], optimize, single_file_limit)
            if "fp32" in wanted:
                written += base.files
            for precision in wanted:
                if precision == "fp32":
                    artifact = base
                else:
                    artifact = _DERIVE[precision](base, out / FILENAMES[precision], single_file_limit)
                    written += artifact.files
                if validate:
                    assert pixels is not None and reference is not None
                    artifact.parity = check_parity(
                        artifact.path, pixels, reference, precision, limits[precision]
                    )
                    _raise_unless_passed(artifact)
                artifacts[precision] = artifact
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return artifacts


def check_precisions(precisions: Sequence[str]) -> list[str]:
    """The precisions without repeats, in order; ExportError names an unknown one."""
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ExportError(f"unknown ONNX precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(precisions))


def _raise_unless_passed(artifact: OnnxArtifact) -> None:
    report = artifact.parity
    if report is not None and not report.passed:
        raise ExportError(
            f"{artifact.path.name} ({artifact.precision}) does not match PyTorch: {report.describe()}"
        )


def _export_fp32(encoder: VisionEncoder, path: Path, optimize: bool, limit: int) -> OnnxArtifact:
    started = time.perf_counter()
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
    return OnnxArtifact(
        precision="fp32",
        path=path,
        files=_files_of(path),
        export_seconds=round(time.perf_counter() - started, 3),
        optimized=optimize,
        opset=_opset(path),
        details={"external_data": external},
    )


def _convert_fp16(base: OnnxArtifact, path: Path, limit: int) -> OnnxArtifact:
    """fp16 weights and compute; the graph's input and output stay float32 (``keep_io_types``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    started = time.perf_counter()
    external = _weight_bytes(base.path) // 2 > limit
    model = onnx.load(str(base.path))
    # Shape inference serialises the model, which fails above 2 GB: skip it for external-data graphs.
    half = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=bool(base.details.get("external_data"))
    )
    _save(half, path, external)
    return OnnxArtifact(
        precision="fp16",
        path=path,
        files=_files_of(path),
        export_seconds=round(time.perf_counter() - started, 3),
        optimized=base.optimized,
        opset=base.opset,
        details={"external_data": external, "io_dtype": "float32", "derived_from": "fp32"},
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


def _quantize_int8(base: OnnxArtifact, path: Path, limit: int) -> OnnxArtifact:
    """Dynamic int8 with the CPU-independent :data:`INT8_SCHEME` (see there why uint8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
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
    return OnnxArtifact(
        precision="int8",
        path=path,
        files=_files_of(path),
        export_seconds=round(time.perf_counter() - started, 3),
        optimized=base.optimized,
        opset=base.opset,
        details={"external_data": external, **INT8_SCHEME, "derived_from": "fp32"},
    )


_DERIVE = {"fp16": _convert_fp16, "int8": _quantize_int8}


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


def _session(path: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ONNX Runtime cannot load {path.name}: {first}") from exc


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
