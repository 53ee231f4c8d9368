"""The llama.cpp mmproj (vision tower + projector for libmtmd) as a kind: an f32 / f16 base written by
:func:`export.mmproj.write_mmproj`, the other types quantized by llama.cpp, each file run in libmtmd
with the bundle's LM GGUF against PyTorch (:mod:`export.mmproj_validate`). Stock llama.cpp tools
also need the chat template, written next to the files (``gguf/chat-template.jinja``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from export.calibration import image_prompts
from export.errors import ExportError
from export.kinds.base import ArtifactFile, BundleJob, GgufKind, Steps, Verdict
from export.manifest import Kind
from export.quant_types import QUANT_TYPES


class Mmproj(GgufKind):
    """The vision tower + projector as ``mmproj-<type>.gguf`` files for llama.cpp's libmtmd."""

    section = Kind.MMPROJ
    keyword = "mmproj"
    noun = "mmproj type"
    label = "mmproj"
    calibration_key = "mmproj"
    timing_key = "mmproj_seconds"
    engine = " in libmtmd"
    requires = (Kind.LM, "--mmproj needs an LM GGUF in the bundle too (--gguf): libmtmd runs them together")

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        lm_path: Path | None = None,
        prompts: Sequence[str] | None = None,
        *,
        threads: int | None = None,
        steps: Steps | None = None,
    ) -> None:
        from export.mmproj import ARCH_NAME, PROJECTOR_TYPE, mmproj_facts

        super().__init__(threads, steps)
        self.model, self.tokenizer = model, tokenizer
        self.lm_path = lm_path  # the LM GGUF the checks run with
        self.prompts = image_prompts(model.config, prompts)
        # refused here, before anything is written, when llama.cpp cannot run the tower exactly
        self.facts = {
            "architecture": ARCH_NAME,
            "projector_type": PROJECTOR_TYPE,
            **asdict(mmproj_facts(model.config)),
        }

    @classmethod
    def filename(cls, precision: str) -> str:
        return f"mmproj-{precision}.gguf"

    @classmethod
    def needs_llama_cpp(cls, wanted: Sequence[str], validate: bool) -> bool:
        return True

    @staticmethod
    def describe(validation: dict[str, Any]) -> str:
        """Same-pixel and end-to-end parity."""
        same = validation["features"]["same_pixels"]
        native = validation["features"]["llama_cpp_preprocessing"]
        answers = validation["answers"]
        status = "" if validation["verdict"]["passed"] else "FAILED "
        return (
            f"{status}cos same pixels {same['mean_cos']:.6f}, letterbox {native['mean_cos']:.4f}; greedy exact "
            f"{answers['same_pixels']['exact_match']:.2f} / {answers['llama_cpp_preprocessing']['exact_match']:.2f}"
        )

    def write_base(self, precision: str, path: Path) -> ArtifactFile:
        from export.mmproj import write_mmproj

        write_mmproj(self.model, path, dtype=precision)
        return ArtifactFile(precision, path, [path], details={"written_by": "write_mmproj", **self.facts})

    def quantize(self, base: ArtifactFile, precision: str, path: Path) -> ArtifactFile:
        file = super().quantize(base, precision, path)
        file.details.update(self.facts)
        return file

    def reference(self) -> Any:
        from export.mmproj_validate import mmproj_reference

        return mmproj_reference(self.model, self.tokenizer, self.prompts)

    def check(self, file: ArtifactFile, reference: Any) -> Verdict:
        from export.mmproj_validate import validate_mmproj

        assert self.lm_path is not None
        result = validate_mmproj(
            self.model, self.tokenizer, file.path, self.lm_path, self.prompts,
            threads=self.threads, reference=reference,
        )  # fmt: skip
        file.validation = result
        return Verdict(result["verdict"]["passed"], result["verdict"]["reason"])

    def export(self, folder: Path, wanted: Sequence[str], validate: bool = True) -> dict[str, ArtifactFile]:
        """The files, each with the chat template stock llama.cpp tools need next to it (a stage-1
        model's plain template is no chat: its prompt is the image alone, and it gets none)."""
        from export.mmproj import CHAT_TEMPLATE_FILE, llama_cpp_chat_template
        from impvlm.templates import get_template

        if validate and self.lm_path is None:
            raise ExportError("validating an mmproj needs the LM GGUF it runs with")
        files = super().export(folder, wanted, validate)
        if get_template(self.model.config.template).style == "two":
            template = Path(folder) / CHAT_TEMPLATE_FILE
            template.write_text(llama_cpp_chat_template(self.model.config.template), encoding="utf-8")
            for file in files.values():
                file.files.append(template)
        return files

    @classmethod
    def for_bundle(cls, job: BundleJob) -> Mmproj:
        lm = job.written[Kind.LM]
        best = next((p for p, q in QUANT_TYPES.items() if q.near_lossless and p in lm), next(iter(lm)))
        return cls(job.model, job.tokenizer, lm[best].path, job.prompts, threads=job.threads, steps=job.steps)

    def calibration(self, job: BundleJob) -> dict[str, Any] | None:
        from export.mmproj_validate import VALIDATION_IMAGES_DESCRIPTION

        if not job.validate:
            return None
        assert self.lm_path is not None
        return {"prompts": self.prompts, "images": VALIDATION_IMAGES_DESCRIPTION, "lm": job.rel(self.lm_path)}
