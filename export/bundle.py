"""A self-describing export bundle: ONNX vision encoder(s) + GGUF LM(s) + tokenizer + ``manifest.json``.

Layout::

    BUNDLE/
      manifest.json              format, model facts, template, tokens, preprocessing, files, checks
      onnx/vision_encoder.onnx   (+ _fp16 / _q8)   pixel_values -> image_features
      gguf/model-f16.gguf        (+ model-q8_0.gguf, model-q4_k_m.gguf, ...)
      gguf/mmproj-f16.gguf       with --mmproj: vision tower + projector for llama.cpp's libmtmd,
      gguf/chat-template.jinja   and the chat template stock llama.cpp tools need
      tokenizer/                 tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, ...

A runtime picks files by precision name (``manifest["vision"]["fp32"]["file"]``,
``manifest["lm"]["q4_k_m"]["file"]``), builds its prompt from ``manifest["template"]``, preprocesses
images with ``ImageProcessor.from_config(manifest["image"])`` and splices ``model.image_tokens``
embeddings where the prompt text says ``<image>`` (the ``tokens.image`` id, or null when the
tokenizer has no such token). The format and its reader are :mod:`export.manifest`.

Each kind of runnable file (ONNX vision encoder, GGUF LM, mmproj) is an artifact kind of
:mod:`export.kinds`: :func:`export_bundle` plans every kind, loads the model once, and runs the kinds
in registry order (:data:`export.kinds.registry.KINDS`), each writing, quantizing and validating its
own files. It writes into a hidden ``.NAME.partial-*`` folder next to ``out`` and renames it
into place only after every file was written and validated, so a crash or a failed check never
leaves a folder with a ``manifest.json`` that is not the real thing.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata, util
from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.kinds.base import ArtifactFile, ArtifactKind, BundleJob, Steps
from export.kinds.registry import KINDS
from export.manifest import (
    Artifact,
    FileRecord,
    Kind,
    Manifest,
    ModelInfo,
    SourceInfo,
    TemplateInfo,
    TokenIds,
    check_bundle,
    sha256_file,
)

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
#: manifest ``tools`` key -> distribution name.
TOOL_DISTRIBUTIONS = {
    "impvlm": "impvlm",
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "gguf": "gguf",
    "llama_cpp": "llama-cpp-python",
}


@dataclass(frozen=True)
class ExportPlan:
    """What to write, checked before anything is loaded: the precisions of each kind."""

    precisions: dict[str, tuple[str, ...]]  # by kind section, every kind of the registry
    validate: bool

    @classmethod
    def make(
        cls, gguf: Sequence[str], onnx: Sequence[str], validate: bool, mmproj: Sequence[str] = ()
    ) -> ExportPlan:
        asked = {"gguf": gguf, "onnx": onnx, "mmproj": mmproj}  # by kind keyword
        precisions = {kind.section: kind.plan(asked.get(kind.keyword, ())) for kind in KINDS}
        if not any(precisions.values()):
            raise ExportError("nothing to export: ask for at least one ONNX precision or GGUF type")
        for kind in KINDS:
            if precisions[kind.section] and kind.requires and not precisions[kind.requires[0]]:
                raise ExportError(kind.requires[1])
        plan = cls(precisions, validate)
        if plan.needs_llama_cpp and util.find_spec("llama_cpp") is None:
            raise ExportError(
                "llama-cpp-python is not installed (needed to quantize / validate GGUF files): "
                "pip install 'impvlm[export]', or export only --gguf f16/f32 with --no-validate"
            )
        return plan

    def kinds(self) -> Iterator[tuple[type[ArtifactKind], tuple[str, ...]]]:
        """The kinds asked for, in bundle order, with their precisions."""
        for kind in KINDS:
            if self.precisions[kind.section]:
                yield kind, self.precisions[kind.section]

    @property
    def needs_llama_cpp(self) -> bool:
        return any(kind.needs_llama_cpp(wanted, self.validate) for kind, wanted in self.kinds())


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    gguf: Sequence[str] = ("f16",),
    onnx: Sequence[str] = ("fp32",),
    validate: bool = True,
    calibration_prompts: Sequence[str] | None = None,
    threads: int | None = None,
    *,
    tokenizer_dir: str | Path | None = None,
    optimize_onnx: bool = False,
    imatrix: bool = False,
    progress: bool = False,
    mmproj: Sequence[str] = (),
    language_model: str | Path | None = None,
    vision_tower: str | Path | None = None,
) -> Manifest:
    """Export a checkpoint (impvlm or upstream Imp layout) into a bundle folder ``out``.

    Args:
        checkpoint: the merged checkpoint folder (tokenizer files inside unless ``tokenizer_dir``).
        out: the bundle folder; replaced if it holds a bundle, refused if it holds anything else.
        gguf: GGUF types for the LM: ``f32``/``f16`` (written directly) and any of
            :data:`export.quant_types.QUANT_TYPES` (quantized from an f32 base when ``f32`` is asked
            for, else from f16). Empty: no LM.
        onnx: vision encoder precisions (``fp32``, ``fp16``, ``int8``). Empty: no vision encoder.
        validate: compare every file with the PyTorch model (ONNX parity, GGUF ``validate_gguf``);
            a failed check raises :class:`ExportError` and leaves no bundle.
        calibration_prompts: prompts for the GGUF checks (default
            :func:`export.calibration.default_calibration`); each ``<image>`` gets a synthetic scene.
        threads: CPU threads for quantization and llama.cpp validation.
        tokenizer_dir: read the tokenizer from here instead of the checkpoint folder.
        optimize_onnx: run ONNX Runtime's graph optimizer (exact fusions only) on the vision graph.
        imatrix: quantize with an importance matrix measured on the calibration prompts
            (:func:`export.quantize.compute_imatrix`; not stored in the bundle).
        progress: show a tqdm progress bar.
        mmproj: llama.cpp mmproj precisions of the vision tower + projector (``f16``, ``q8_0``, ...;
            :mod:`export.mmproj`), validated through libmtmd against PyTorch. Needs ``gguf``.
        language_model / vision_tower: local folders of what an upstream checkpoint only names (the
            base Phi-2 of a stage output, a tower recorded as a hub id); see :mod:`impvlm.upstream`.
    """
    from tqdm import tqdm

    from export.target import check_target
    from impvlm.upstream import Parts

    plan = ExportPlan.make(gguf, onnx, validate, mmproj)
    parts = Parts.of(language_model, vision_tower)
    out = Path(out)
    check_target(out)
    options = (parts, tokenizer_dir, calibration_prompts, threads, optimize_onnx, imatrix)
    # load, tokenizer and hash; each kind adds its steps
    with tqdm(total=3, desc="export", unit="step", disable=not progress) as bar:
        steps = Steps(bar)
        manifest = _publish(
            out, lambda work: _BundleWriter(plan, Path(checkpoint), work, steps).run(*options)
        )
    log.info("bundle written to %s in %.1fs", out, manifest.timings["total_seconds"])
    return manifest


def _publish(out: Path, write: Callable[[Path], Manifest]) -> Manifest:
    """Run ``write`` into a hidden work folder next to ``out``, then write its manifest and rename the
    folder into place; on any failure nothing is left behind."""
    from export.target import make_work_folder, move_into_place, os_reason, remove_empty

    work, created = make_work_folder(out)
    try:
        with Steps().timed() as total:
            manifest = write(work)
        manifest.timings["total_seconds"] = total.seconds
        manifest.write(work)
        check_bundle(work, manifest)  # the bundle passes the checks every load makes
        move_into_place(work, out)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        remove_empty(created)
        if isinstance(exc, OSError):
            raise ExportError(f"writing the bundle {out} failed: {os_reason(exc)}") from exc
        raise
    return manifest


class _BundleWriter:
    """One export into a work folder: load, every kind asked for, the tokenizer, the file records.
    :func:`export_bundle` owns the folder's fate."""

    def __init__(self, plan: ExportPlan, checkpoint: Path, work: Path, steps: Steps) -> None:
        self.plan = plan
        self.checkpoint = checkpoint
        self.work = work
        self.steps = steps

    def run(
        self,
        parts: Any,
        tokenizer_dir: str | Path | None,
        prompts: Sequence[str] | None,
        threads: int | None,
        optimize_onnx: bool,
        imatrix: bool,
    ) -> Manifest:
        from impvlm.image_processing import ImageProcessor
        from impvlm.tokenizer import save_tokenizer

        with self.steps.step("load checkpoint", "load_seconds"):
            model, tokenizer, source, tokenizer_info = self._load(parts, tokenizer_dir)
            tokens = _token_ids(model.config, tokenizer)
        options = {"threads": threads, "prompts": prompts, "optimize_onnx": optimize_onnx, "imatrix": imatrix}
        job = BundleJob(model, tokenizer, self.work, self.plan.validate, self.steps, **options)
        calibration = self._kinds(job)
        with self.steps.step("tokenizer", "tokenizer_seconds"):
            save_tokenizer(tokenizer, self.work / TOKENIZER_DIR)
        with self.steps.step("hash files", "hash_seconds"):
            files = self._file_records(job.written)
        artifacts = {
            str(kind.section): {p: self._artifact(f) for p, f in job.written.get(kind.section, {}).items()}
            for kind in KINDS
        }
        config = model.config
        return Manifest(
            model=_model_info(config),
            source=source,
            template=TemplateInfo.from_name(config.template),
            tokens=tokens,
            image=ImageProcessor.from_config(config).to_dict(),
            tokenizer=TOKENIZER_DIR,
            files=files,
            tools=tool_versions(),
            timings=self.steps.timings,
            calibration=calibration,
            tokenizer_info=tokenizer_info,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            **artifacts,
        )

    def _kinds(self, job: BundleJob) -> dict[str, Any]:
        """Every kind asked for, in order, into ``job.written``; returns what their checks ran on."""
        calibration: dict[str, Any] = {}
        for kind_class, wanted in self.plan.kinds():
            kind = kind_class.for_bundle(job)
            self.steps.expect(kind.n_steps(wanted, job.validate))
            with self.steps.timed(kind.timing_key):
                job.written[kind.section] = kind.export(self.work / kind.folder, wanted, job.validate)
            if (entry := kind.calibration(job)) is not None:
                calibration[kind.calibration_key] = entry
        return calibration

    def _load(self, parts: Any, tokenizer_dir: str | Path | None) -> tuple[Any, Any, SourceInfo, Any]:
        """The model, its tokenizer (checked against it), where they came from."""
        from export.tokenizer_check import check_tokenizer
        from impvlm.checkpoint import IMPVLM, checkpoint_hash, read_checkpoint
        from impvlm.tokenizer import load_tokenizer

        reading = read_checkpoint(self.checkpoint, parts)
        layout = "impvlm" if reading.layout is IMPVLM else "upstream"
        model = reading.model()
        tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else reading.tokenizer()
        source_dir = tokenizer_dir or reading.tokens.tokenizer_dir  # a stage output uses its base's
        tokenizer_info = check_tokenizer(model, tokenizer, self.checkpoint, source_dir)
        source = SourceInfo(str(self.checkpoint.resolve()), checkpoint_hash(reading), layout)
        return model, tokenizer, source, tokenizer_info

    def _artifact(self, file: ArtifactFile) -> Artifact:
        return Artifact(
            file=self._rel(file.path),
            precision=file.precision,
            export_seconds=file.export_seconds,
            validation=file.validation,
            validation_seconds=file.validation_seconds,
            extra_files=[self._rel(f) for f in file.files[1:]],
            details=file.details,
        )

    def _file_records(self, written: dict[str, dict[str, ArtifactFile]]) -> dict[str, FileRecord]:
        records: dict[str, FileRecord] = {}
        for section, files in written.items():
            for precision, file in files.items():
                for path in file.files:
                    records[self._rel(path)] = _record(path, section, precision)
        for path in sorted((self.work / TOKENIZER_DIR).rglob("*")):
            if path.is_file():
                records[self._rel(path)] = _record(path, Kind.TOKENIZER, None)
        return records

    def _rel(self, path: Path) -> str:
        return Path(path).relative_to(self.work).as_posix()


def tool_versions() -> dict[str, str | None]:
    """Installed versions of the packages that produced the files (None when absent)."""
    out: dict[str, str | None] = {}
    for key, dist in TOOL_DISTRIBUTIONS.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def _record(path: Path, kind: str, precision: str | None) -> FileRecord:
    return FileRecord(
        sha256=sha256_file(path), bytes=path.stat().st_size, kind=str(kind), precision=precision
    )


def _model_info(config: Any) -> ModelInfo:
    return ModelInfo(
        id=config.model_id,
        language_model="phi",
        vision_tower=config.vision_config.model_type,
        projector=config.mm_projector_type,
        embedding_width=int(config.hidden_size),
        vision_width=int(config.vision_hidden_size),
        image_tokens=int(config.num_image_tokens),
        image_size=int(config.image_size),
        vocab_size=int(config.vocab_size),
        context_length=int(config.max_position_embeddings),
    )


def _token_ids(config: Any, tokenizer: Any) -> TokenIds:
    """Special ids from the config, checked against the tokenizer the bundle ships."""
    from impvlm.templates import IMAGE_SENTINEL, IMAGE_TOKEN, get_template
    from impvlm.tokenizer import image_token_id, single_token_id

    template = get_template(config.template)
    image = image_token_id(tokenizer)  # IMAGE_SENTINEL: no <image> token, spliced where the text says
    stop = single_token_id(tokenizer, template.stop_str)  # Phi-2's unk is its stop token: legal
    if image != config.image_token_index:
        found = (
            f"tokenizer has no {IMAGE_TOKEN} token"
            if image == IMAGE_SENTINEL
            else f"tokenizer's {IMAGE_TOKEN} id is {image}"
        )
        raise ExportError(
            f"the {found}, the model's image_token_index is {config.image_token_index}: "
            "wrong tokenizer for this checkpoint"
        )
    if stop is None:
        raise ExportError(f"the tokenizer has no token for the template's stop string {template.stop_str!r}")
    return TokenIds(
        image=None if image == IMAGE_SENTINEL else int(image),
        eos=int(config.eos_token_id),
        pad=None if config.pad_token_id is None else int(config.pad_token_id),
        bos=None if config.bos_token_id is None else int(config.bos_token_id),
        stop=int(stop),
    )
