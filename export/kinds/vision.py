"""The ONNX vision encoder as a kind: fp32 exported, fp16 and int8 derived from it, each checked for
per-token cosine against PyTorch (:mod:`export.onnx_vision`, :mod:`export.onnx_write`).

Example::

    files = export_vision_encoder(model, "out/onnx", ["fp32", "int8"])
    files["int8"].parity.min_cos
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.kinds.base import ArtifactFile, ArtifactKind, BundleJob, Steps, Verdict
from export.manifest import Kind
from export.quant_types import ONNX_PRECISIONS

if TYPE_CHECKING:
    import numpy as np

    from export.onnx_vision import ParityThreshold, VisionEncoder
    from export.onnx_write import OnnxArtifact
    from impvlm.modeling import ImpForCausalLM


class OnnxVision(ArtifactKind):
    """``pixel_values -> image_features`` as ONNX graphs (see :mod:`export.onnx_vision`)."""

    section = Kind.VISION
    keyword = "onnx"
    noun = "ONNX precision"
    folder = "onnx"
    choices = tuple(ONNX_PRECISIONS)
    label = "onnx"
    calibration_key = "onnx"
    timing_key = "onnx_seconds"

    def __init__(
        self,
        source: ImpForCausalLM | VisionEncoder,
        *,
        images: np.ndarray | None = None,
        optimize: bool = False,
        single_file_limit: int | None = None,
        thresholds: Mapping[str, ParityThreshold] | None = None,
        steps: Steps | None = None,
    ) -> None:
        from export.onnx_vision import PARITY_THRESHOLDS, VisionEncoder
        from export.onnx_write import SINGLE_FILE_LIMIT

        super().__init__(steps)
        self.encoder = source if isinstance(source, VisionEncoder) else VisionEncoder.from_model(source)
        self.encoder.eval()
        self.images = images
        self.optimize = optimize
        self.single_file_limit = SINGLE_FILE_LIMIT if single_file_limit is None else single_file_limit
        self.thresholds = {**PARITY_THRESHOLDS, **(thresholds or {})}

    @classmethod
    def base_precision(cls, wanted: Sequence[str]) -> str:
        return "fp32"

    @classmethod
    def filename(cls, precision: str) -> str:
        from export.onnx_vision import FILENAMES

        return FILENAMES[precision]

    @staticmethod
    def describe(validation: dict[str, Any]) -> str:
        return (
            f"cos min {validation['min_cos']:.6f} mean {validation['mean_cos']:.6f}, "
            f"max abs err {validation['max_abs_err']:.2g}"
        )

    def write_base(self, precision: str, path: Path) -> ArtifactFile:
        from export.onnx_write import export_fp32

        return export_fp32(self.encoder, path, self.optimize, self.single_file_limit)

    def quantize(self, base: ArtifactFile, precision: str, path: Path) -> ArtifactFile:
        from export.onnx_write import DERIVE

        return DERIVE[precision](base, path, self.single_file_limit)  # type: ignore[arg-type]

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The parity images (default :func:`~export.onnx_vision.parity_images`) and PyTorch's features."""
        import numpy as np
        import torch

        from export.onnx_vision import parity_images

        images = self.images if self.images is not None else parity_images(self.encoder.config)
        pixels = np.ascontiguousarray(images)
        with torch.no_grad():
            return pixels, self.encoder(torch.from_numpy(pixels)).float().numpy()

    def check(self, file: ArtifactFile, reference: tuple[np.ndarray, np.ndarray]) -> Verdict:
        from export.onnx_vision import check_parity

        pixels, features = reference
        report = check_parity(file.path, pixels, features, file.precision, self.thresholds[file.precision])
        file.parity = report  # type: ignore[attr-defined]
        file.validation = report.to_dict()
        return Verdict(report.passed, report.describe())

    @classmethod
    def for_bundle(cls, job: BundleJob) -> OnnxVision:
        return cls(job.model, optimize=job.optimize_onnx, steps=job.steps)

    def calibration(self, job: BundleJob) -> dict[str, Any] | None:
        from export.onnx_vision import PARITY_IMAGES_DESCRIPTION

        return {"images": PARITY_IMAGES_DESCRIPTION} if job.validate else None


def export_vision_encoder(
    source: ImpForCausalLM | VisionEncoder,
    out_dir: str | Path,
    precisions: Sequence[str] = ("fp32",),
    *,
    validate: bool = True,
    images: np.ndarray | None = None,
    optimize: bool = False,
    single_file_limit: int | None = None,
    thresholds: Mapping[str, ParityThreshold] | None = None,
) -> dict[str, OnnxArtifact]:
    """Export the vision tower + projector to ``out_dir`` in each of ``precisions``.

    fp16 and int8 are derived from the fp32 graph (exported to a scratch folder when fp32 itself is
    not asked for); a graph with more than ``single_file_limit`` bytes of weights (default
    :data:`~export.onnx_write.SINGLE_FILE_LIMIT`) keeps them in an external data file. With
    ``validate`` every file is compared with PyTorch on ``images`` (default:
    :func:`~export.onnx_vision.parity_images`); on a miss the files this call wrote are deleted and
    :class:`~export.errors.ExportError` is raised.

    Returns:
        ``{precision: OnnxArtifact}`` in the order asked.
    """
    wanted = OnnxVision.plan(precisions)
    kind = OnnxVision(
        source, images=images, optimize=optimize, single_file_limit=single_file_limit, thresholds=thresholds
    )
    return kind.export(Path(out_dir), wanted, validate)  # type: ignore[return-value]
