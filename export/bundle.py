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

:func:`export_bundle` writes into a hidden ``.NAME.partial-*`` folder next to ``out`` and renames it
into place only after every file was written and validated, so a crash or a failed check never
leaves a folder with a ``manifest.json`` that is not the real thing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata, util
from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.manifest import (
    Artifact,
    FileRecord,
    Kind,
    Manifest,
    ModelInfo,
    SourceInfo,
    TemplateInfo,
    TokenIds,
    sha256_file,
)
from export.quant_types import BASE_TYPES, QUANT_TYPES, lm_gate

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
GGUF_DIR = "gguf"
TOKENIZER_DIR = "tokenizer"
#: Precisions ``write_gguf`` produces directly; every other GGUF type is quantized from one of them.
GGUF_BASES = BASE_TYPES
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
#: Default calibration questions (asked about synthetic scenes) and text-only prompts.
CALIBRATION_IMAGE_QUESTIONS = (
    "What colour is the shape on the left?",
    "How many shapes are there?",
    "Describe the image concisely.",
)
CALIBRATION_TEXT_QUESTIONS = ("Write one sentence about the sea.", "What is two plus three?")


#: Greedy tokens compared per calibration prompt.
N_GREEDY = 16


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
    return {
        "passed": not problems,
        "relative_logit_error": rel,
        "logit_scale": logit_scale,
        "mean_kl": kl,
        "gate": asdict(gate),
        "reason": "; ".join(problems) or "ok",
    }


# ------------------------------------------------------------------------------------ writing bundles


@dataclass(frozen=True)
class ExportPlan:
    """What to write, checked before anything is loaded."""

    onnx: tuple[str, ...]
    gguf: tuple[str, ...]
    gguf_base: str | None  # the precision written by write_gguf; the rest is quantized from it
    validate: bool
    mmproj: tuple[str, ...] = ()  # llama.cpp mmproj precisions

    @classmethod
    def make(
        cls, gguf: Sequence[str], onnx: Sequence[str], validate: bool, mmproj: Sequence[str] = ()
    ) -> ExportPlan:
        from export.kinds.vision import OnnxVision

        onnx_list = OnnxVision.plan(onnx)
        gguf_list = tuple(dict.fromkeys(p.strip().lower() for p in gguf if p.strip()))
        if gguf_list:
            known = _gguf_types()
            if unknown := [p for p in gguf_list if p not in known]:
                raise ExportError(f"unknown GGUF type {unknown[0]!r}; choose from {', '.join(known)}")
        if not onnx_list and not gguf_list:
            raise ExportError("nothing to export: ask for at least one ONNX precision or GGUF type")
        base = None
        if gguf_list:
            base = "f32" if "f32" in gguf_list else "f16"
        # --- mmproj: checked here, written by export.mmproj.export_mmproj
        mmproj_list = tuple(dict.fromkeys(p.strip().lower() for p in mmproj if p.strip()))
        if mmproj_list:
            from export.mmproj import mmproj_types

            if unknown := [p for p in mmproj_list if p not in mmproj_types()]:
                raise ExportError(
                    f"unknown mmproj type {unknown[0]!r}; choose from {', '.join(mmproj_types())}"
                )
            if not gguf_list:
                raise ExportError(
                    "--mmproj needs an LM GGUF in the bundle too (--gguf): libmtmd runs them together"
                )
        # --- end mmproj
        plan = cls(onnx_list, gguf_list, base, validate, mmproj_list)
        if plan.needs_llama_cpp and util.find_spec("llama_cpp") is None:
            raise ExportError(
                "llama-cpp-python is not installed (needed to quantize / validate GGUF files): "
                "pip install 'impvlm[export]', or export only --gguf f16/f32 with --no-validate"
            )
        return plan

    @property
    def quantized(self) -> tuple[str, ...]:
        return tuple(p for p in self.gguf if p != self.gguf_base)

    @property
    def needs_llama_cpp(self) -> bool:
        return bool(self.quantized) or (self.validate and bool(self.gguf)) or bool(self.mmproj)

    def n_steps(self, imatrix: bool = False) -> int:
        """Progress-bar steps: load, onnx, gguf base + quants (+ imatrix), reference + checks, tokenizer, hash."""
        gguf_steps = 0
        if self.gguf:
            gguf_steps = 1 + len(self.quantized) + (1 if imatrix and self.quantized else 0)
            gguf_steps += 1 + len(self.gguf) if self.validate else 0
        mmproj_steps = 1 if self.mmproj else 0  # one step for all mmproj files
        return 3 + (1 if self.onnx else 0) + gguf_steps + mmproj_steps


def _gguf_types() -> tuple[str, ...]:
    return tuple(QUANT_TYPES)


def default_calibration(config: Any) -> list[str]:
    """A few single-turn prompts of the model's template, with and without ``<image>`` (distinct and
    non-empty: the ``plain`` template of a stage-1 model drops the question, leaving ``<image>``)."""
    from impvlm.templates import get_template

    template = get_template(config.template)
    prompts = [template.question_prompt(q) for q in CALIBRATION_IMAGE_QUESTIONS] + [
        template.question_prompt(q, with_image=False) for q in CALIBRATION_TEXT_QUESTIONS
    ]
    return [p for p in dict.fromkeys(prompts) if p]


def calibration_images(config: Any, prompts: Sequence[str]) -> Any:
    """One synthetic scene per ``<image>`` tag across ``prompts`` (in order), or None without tags."""
    from export.onnx_vision import parity_images
    from impvlm.templates import IMAGE_TOKEN

    n = sum(p.count(IMAGE_TOKEN) for p in prompts)
    return parity_images(config, n_synthetic=n, n_random=0, seed=1) if n else None


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
        calibration_prompts: prompts for the GGUF checks (default :func:`default_calibration`);
            each ``<image>`` gets a synthetic scene.
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

    from export.manifest_check import check_files
    from export.target import check_target, make_work_folder, move_into_place, os_reason, remove_empty
    from impvlm.upstream import Parts

    plan = ExportPlan.make(gguf, onnx, validate, mmproj)
    parts = Parts.of(language_model, vision_tower)
    checkpoint, out = Path(checkpoint), Path(out)
    check_target(out)
    work, created = make_work_folder(out)
    started = time.perf_counter()
    bar = tqdm(total=plan.n_steps(imatrix), desc="export", unit="step", disable=not progress)
    try:
        manifest = _BundleWriter(plan, checkpoint, work, threads, bar, parts).run(
            tokenizer_dir, calibration_prompts, optimize_onnx, imatrix
        )
        manifest.timings["total_seconds"] = round(time.perf_counter() - started, 3)
        manifest.write(work)
        check_files(work, manifest)  # the bundle passes the checks every load makes
        move_into_place(work, out)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        remove_empty(created)
        if isinstance(exc, OSError):
            raise ExportError(f"writing the bundle {out} failed: {os_reason(exc)}") from exc
        raise
    finally:
        bar.close()
    log.info("bundle written to %s in %.1fs", out, manifest.timings["total_seconds"])
    return manifest


class _BundleWriter:
    """The steps of one export into a work folder; :func:`export_bundle` owns the folder's fate."""

    def __init__(
        self, plan: ExportPlan, checkpoint: Path, work: Path, threads: int | None, bar: Any, parts: Any = None
    ) -> None:
        self.plan = plan
        self.checkpoint = checkpoint
        self.parts = parts  # impvlm.upstream.Parts: base folders an upstream stage output only names
        self.work = work
        self.threads = threads
        self.bar = bar
        self.timings: dict[str, float] = {}
        self.calibration: dict[str, Any] = {}

    def run(
        self,
        tokenizer_dir: str | Path | None,
        prompts: Sequence[str] | None,
        optimize_onnx: bool,
        imatrix: bool,
    ) -> Manifest:
        from export.tokenizer_check import check_tokenizer
        from impvlm.checkpoint import IMPVLM, checkpoint_hash, read_checkpoint
        from impvlm.image_processing import ImageProcessor
        from impvlm.tokenizer import load_tokenizer, save_tokenizer

        with self._step("load checkpoint", "load_seconds"):
            reading = read_checkpoint(self.checkpoint, self.parts)
            layout = "impvlm" if reading.layout is IMPVLM else "upstream"
            model = reading.model()
            tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else reading.tokenizer()
            source_dir = tokenizer_dir or reading.tokens.tokenizer_dir  # a stage output uses its base's
            tokenizer_info = check_tokenizer(model, tokenizer, self.checkpoint, source_dir)
            tokens = _token_ids(model.config, tokenizer)
            source = SourceInfo(str(self.checkpoint.resolve()), checkpoint_hash(reading), layout)
        vision = self._vision(model, optimize_onnx) if self.plan.onnx else {}
        lm = self._lm(model, tokenizer, prompts, imatrix) if self.plan.gguf else {}
        mmproj = self._mmproj(model, tokenizer, prompts, lm) if self.plan.mmproj else {}
        with self._step("tokenizer", "tokenizer_seconds"):
            save_tokenizer(tokenizer, self.work / TOKENIZER_DIR)
        with self._step("hash files", "hash_seconds"):
            files = self._file_records(vision, lm, mmproj)
        config = model.config
        return Manifest(
            model=_model_info(config),
            source=source,
            template=TemplateInfo.from_name(config.template),
            tokens=tokens,
            image=ImageProcessor.from_config(config).to_dict(),
            tokenizer=TOKENIZER_DIR,
            vision=vision,
            lm=lm,
            files=files,
            tools=tool_versions(),
            timings=self.timings,
            calibration=self.calibration,
            mmproj=mmproj,
            tokenizer_info=tokenizer_info,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    # -------------------------------------------------------------- steps
    def _vision(self, model: Any, optimize: bool) -> dict[str, Artifact]:
        from export.kinds.vision import export_vision_encoder
        from export.onnx_vision import PARITY_IMAGES_DESCRIPTION

        with self._step(f"onnx {','.join(self.plan.onnx)}", "onnx_seconds"):
            exported = export_vision_encoder(
                model, self.work / ONNX_DIR, self.plan.onnx, validate=self.plan.validate, optimize=optimize
            )
        if self.plan.validate:
            self.calibration["onnx"] = {"images": PARITY_IMAGES_DESCRIPTION}
        out = {}
        for precision, a in exported.items():
            details = {
                **a.details,
                "input": "pixel_values",
                "output": "image_features",
                "opset": a.opset,
                "optimized": a.optimized,
            }
            out[precision] = Artifact(
                file=self._rel(a.path),
                precision=precision,
                export_seconds=a.export_seconds,
                validation=a.parity.to_dict() if a.parity else None,
                validation_seconds=a.parity.seconds if a.parity else None,
                extra_files=[self._rel(f) for f in a.files[1:]],
                details=details,
            )
        return out

    def _lm(
        self, model: Any, tokenizer: Any, prompts: Sequence[str] | None, imatrix: bool
    ) -> dict[str, Artifact]:
        from export.gguf_lm import write_gguf

        plan = self.plan
        assert plan.gguf_base is not None
        prompts = list(prompts) if prompts else default_calibration(model.config)
        images = calibration_images(model.config, prompts)
        if plan.validate or (imatrix and plan.quantized):
            self.calibration["gguf"] = {
                "prompts": prompts,
                "images": "one synthetic scene per <image> (impvlm.data.synthetic, seed 1)",
                "n_greedy": N_GREEDY,
            }
        folder, scratch = self.work / GGUF_DIR, self.work / ".scratch"
        keep_base = plan.gguf_base in plan.gguf
        base_path = (folder if keep_base else scratch) / gguf_filename(plan.gguf_base)
        artifacts: dict[str, Artifact] = {}
        with self._step(f"gguf {plan.gguf_base}") as timer:
            write_gguf(model, tokenizer, base_path, dtype=plan.gguf_base)
        if keep_base:
            artifacts[plan.gguf_base] = self._lm_artifact(
                base_path, plan.gguf_base, timer.seconds, {"written_by": "write_gguf"}
            )
        if plan.quantized:
            from export.quantize import compute_imatrix, quantize_gguf

            imatrix_path = None
            if imatrix:
                with self._step("importance matrix", "imatrix_seconds"):
                    imatrix_path = compute_imatrix(
                        model, tokenizer, prompts, scratch / "imatrix.gguf", images
                    )
            for qtype in plan.quantized:
                dst = folder / gguf_filename(qtype)
                with self._step(f"gguf {qtype}") as timer:
                    quantize_gguf(base_path, dst, qtype, imatrix=imatrix_path, threads=self.threads)
                details = {"quantized_from": plan.gguf_base, "imatrix": imatrix_path is not None}
                artifacts[qtype] = self._lm_artifact(dst, qtype, timer.seconds, details)
        shutil.rmtree(scratch, ignore_errors=True)
        if plan.validate:
            self._validate_lm(model, tokenizer, prompts, images, artifacts)
        return {p: artifacts[p] for p in plan.gguf}

    def _validate_lm(
        self, model: Any, tokenizer: Any, prompts: list[str], images: Any, artifacts: dict[str, Artifact]
    ) -> None:
        """validate_gguf on every file against one PyTorch reference, then :func:`judge_lm`."""
        import numpy as np

        from export.gguf_validate import torch_reference, validate_gguf

        with self._step("pytorch reference", "reference_seconds"):
            reference = torch_reference(model, tokenizer, prompts, images, n_greedy=N_GREEDY)
            logit_scale = float(np.mean([lg.astype(np.float64).std(-1).mean() for lg in reference.logits]))
        for precision, artifact in artifacts.items():
            with self._step(f"validate {precision}") as timer:
                result = validate_gguf(
                    model, tokenizer, self.work / artifact.file, prompts, images, N_GREEDY,
                    reference=reference, n_threads=self.threads,
                )  # fmt: skip
            result["verdict"] = verdict = judge_lm(result, logit_scale, precision)
            if not verdict["passed"]:
                raise ExportError(
                    f"{artifact.file} ({precision}) does not match PyTorch: {verdict['reason']}"
                )
            artifact.validation = result
            artifact.validation_seconds = timer.seconds

    # --- mmproj: everything lives in export.mmproj; this only files the results
    def _mmproj(
        self, model: Any, tokenizer: Any, prompts: Sequence[str] | None, lm: dict[str, Artifact]
    ) -> dict[str, Artifact]:
        from export.mmproj import (
            CHAT_TEMPLATE_FILE,
            VALIDATION_IMAGES_DESCRIPTION,
            export_mmproj,
            llama_cpp_chat_template,
        )
        from impvlm.templates import IMAGE_TOKEN, get_template

        best = next((p for p, q in QUANT_TYPES.items() if q.near_lossless and p in lm), next(iter(lm)))
        image_prompts = [p for p in (prompts or default_calibration(model.config)) if IMAGE_TOKEN in p]
        with self._step(f"mmproj {','.join(self.plan.mmproj)}", "mmproj_seconds"):
            written = export_mmproj(
                model,
                tokenizer,
                self.work / GGUF_DIR,
                self.plan.mmproj,
                lm_path=self.work / lm[best].file,
                prompts=image_prompts,
                validate=self.plan.validate,
                threads=self.threads,
            )
        if self.plan.validate:
            images = {"images": VALIDATION_IMAGES_DESCRIPTION, "lm": lm[best].file}
            self.calibration["mmproj"] = {"prompts": image_prompts, **images}
        # stock llama.cpp tools need the chat template: the LM GGUF carries none (a stage-1 model's
        # plain template is no chat: its prompt is the image alone)
        extra: list[str] = []
        if get_template(model.config.template).style == "two":
            template = self.work / GGUF_DIR / CHAT_TEMPLATE_FILE
            template.write_text(llama_cpp_chat_template(model.config.template), encoding="utf-8")
            extra.append(self._rel(template))
        return {
            p: Artifact(
                self._rel(a.path),
                p,
                a.export_seconds,
                a.validation,
                a.validation_seconds,
                extra_files=list(extra),
                details=a.details or {},
            )
            for p, a in written.items()
        }

    # --- end mmproj

    def _lm_artifact(self, path: Path, precision: str, seconds: float, details: dict[str, Any]) -> Artifact:
        return Artifact(file=self._rel(path), precision=precision, export_seconds=seconds, details=details)

    def _file_records(
        self, vision: dict[str, Artifact], lm: dict[str, Artifact], mmproj: dict[str, Artifact] | None = None
    ) -> dict[str, FileRecord]:
        records: dict[str, FileRecord] = {}
        for kind, artifacts in ((Kind.VISION, vision), (Kind.LM, lm), (Kind.MMPROJ, mmproj or {})):
            for precision, artifact in artifacts.items():
                for rel in (artifact.file, *artifact.extra_files):
                    records[rel] = _record(self.work / rel, kind, precision)
        for file in sorted((self.work / TOKENIZER_DIR).rglob("*")):
            if file.is_file():
                records[self._rel(file)] = _record(file, Kind.TOKENIZER, None)
        return records

    # -------------------------------------------------------------- helpers
    def _rel(self, path: Path) -> str:
        return Path(path).relative_to(self.work).as_posix()

    @contextlib.contextmanager
    def _step(self, desc: str, timing_key: str | None = None) -> Iterator[_Timer]:
        """One export step: shown on the bar, timed (``timer.seconds`` after the block)."""
        self.bar.set_postfix_str(desc)
        log.debug("export: %s", desc)
        timer, started = _Timer(), time.perf_counter()
        yield timer
        timer.seconds = round(time.perf_counter() - started, 3)
        if timing_key:
            self.timings[timing_key] = timer.seconds
        self.bar.update(1)


@dataclass
class _Timer:
    seconds: float = 0.0


def gguf_filename(precision: str) -> str:
    return f"model-{precision}.gguf"


def tool_versions() -> dict[str, str | None]:
    """Installed versions of the packages that produced the files (None when absent)."""
    out: dict[str, str | None] = {}
    for key, dist in TOOL_DISTRIBUTIONS.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def _record(path: Path, kind: Kind, precision: str | None) -> FileRecord:
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
