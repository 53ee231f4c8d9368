"""The GGUF language model as a kind: an f32 / f16 base written by :func:`export.gguf_lm.write_gguf`,
the other types quantized by llama.cpp (optionally with an importance matrix), each file run in
llama.cpp on the calibration prompts against PyTorch (:mod:`export.gguf_validate`) and gated by
:func:`judge_lm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.calibration import IMAGES_DESCRIPTION, N_GREEDY, calibration_images, default_calibration
from export.kinds.base import ArtifactFile, BundleJob, GgufKind, Steps, Verdict, judgement
from export.manifest import Kind
from export.quant_types import lm_gate


def judge_lm(result: dict[str, Any], logit_scale: float, qtype: str) -> dict[str, Any]:
    """Pass/fail of one :func:`export.gguf_validate.validate_gguf` result, with the reason."""
    gate = lm_gate(qtype)
    logits = result.get("logits") or {}
    rel = float(logits.get("mean_abs_logit_error", float("nan"))) / max(logit_scale, 1e-12)
    kl = float(logits.get("mean_kl", float("nan")))
    problems = []
    if not result.get("tokenization", {}).get("match", False):
        problems.append("llama.cpp tokenizes the prompts differently from the HF tokenizer")
    if not rel <= gate.max_rel_logit_error:  # also catches NaN
        problems.append(f"relative logit error {rel:.4g} > {gate.max_rel_logit_error}")
    if not kl <= gate.max_mean_kl:
        problems.append(f"mean KL {kl:.4g} > {gate.max_mean_kl}")
    return judgement(gate, problems, relative_logit_error=rel, logit_scale=logit_scale, mean_kl=kl)


class GgufLM(GgufKind):
    """The LM as ``model-<type>.gguf`` files for llama.cpp."""

    section = Kind.LM
    keyword = "gguf"
    noun = "GGUF type"
    label = "gguf"
    calibration_key = "gguf"
    reference_timing_key = "reference_seconds"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str] | None = None,
        *,
        imatrix: bool = False,
        threads: int | None = None,
        steps: Steps | None = None,
    ) -> None:
        super().__init__(threads, steps)
        self.model, self.tokenizer = model, tokenizer
        self.prompts = list(prompts) if prompts else default_calibration(model.config)
        self.images = calibration_images(model.config, self.prompts)
        self.imatrix = imatrix

    @classmethod
    def filename(cls, precision: str) -> str:
        return f"model-{precision}.gguf"

    @staticmethod
    def describe(validation: dict[str, Any]) -> str:
        verdict, logits, greedy = validation["verdict"], validation["logits"], validation["greedy"]
        return (
            f"rel logit err {verdict['relative_logit_error']:.2g}, mean KL {verdict['mean_kl']:.2g}, "
            f"top-1 {logits['top1_agreement']:.3f}, greedy exact {greedy['exact_match']:.2f}"
        )

    def n_steps(self, wanted: Sequence[str], validate: bool) -> int:
        quantized = any(p != self.base_precision(wanted) for p in wanted)
        return super().n_steps(wanted, validate) + (1 if self.imatrix and quantized else 0)

    def write_base(self, precision: str, path: Path) -> ArtifactFile:
        from export.gguf_lm import write_gguf

        write_gguf(self.model, self.tokenizer, path, dtype=precision)
        return ArtifactFile(precision, path, [path], details={"written_by": "write_gguf"})

    def before_quantize(self, base: ArtifactFile, scratch: Path) -> None:
        """With ``imatrix``: the importance matrix of the calibration prompts, for every quantized type."""
        from export.quantize import compute_imatrix

        if self.imatrix:
            with self.steps.step("importance matrix", "imatrix_seconds"):
                self.imatrix_path = compute_imatrix(
                    self.model, self.tokenizer, self.prompts, scratch / "imatrix.gguf", self.images
                )

    def quantize(self, base: ArtifactFile, precision: str, path: Path) -> ArtifactFile:
        file = super().quantize(base, precision, path)
        file.details["imatrix"] = self.imatrix_path is not None
        return file

    def reference(self) -> tuple[Any, float]:
        """PyTorch's logits and greedy answers, and the scale relative logit errors are read against."""
        import numpy as np

        from export.gguf_validate import torch_reference

        reference = torch_reference(self.model, self.tokenizer, self.prompts, self.images, n_greedy=N_GREEDY)
        logit_scale = float(np.mean([lg.astype(np.float64).std(-1).mean() for lg in reference.logits]))
        return reference, logit_scale

    def check(self, file: ArtifactFile, reference: tuple[Any, float]) -> Verdict:
        from export.gguf_validate import validate_gguf

        torch_answers, logit_scale = reference
        result = validate_gguf(
            self.model, self.tokenizer, file.path, self.prompts, self.images, N_GREEDY,
            reference=torch_answers, n_threads=self.threads,
        )  # fmt: skip
        result["verdict"] = verdict = judge_lm(result, logit_scale, file.precision)
        file.validation = result
        return Verdict(verdict["passed"], verdict["reason"])

    @classmethod
    def for_bundle(cls, job: BundleJob) -> GgufLM:
        return cls(
            job.model, job.tokenizer, job.prompts, imatrix=job.imatrix, threads=job.threads, steps=job.steps
        )

    def calibration(self, job: BundleJob) -> dict[str, Any] | None:
        if not job.validate and self.imatrix_path is None:
            return None
        return {"prompts": self.prompts, "images": IMAGES_DESCRIPTION, "n_greedy": N_GREEDY}
